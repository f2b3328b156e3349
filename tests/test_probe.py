"""grpolab probe: its arithmetic on hand-built reward tables, its verdicts, its errors, and one real run."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from grpolab.cli import main
from grpolab.errors import UserError
from grpolab.evaluation import probe


def group(rewards, solved=None, format_ok=None, label="all"):
    """One prompt's group: rewards, and solved/format flags (solved = reward >= 1 unless given)."""
    solved = [r is not None and r >= 1 for r in rewards] if solved is None else solved
    format_ok = [True] * len(rewards) if format_ok is None else format_ok
    return {"label": label, "rewards": list(rewards), "solved": list(solved), "format_ok": list(format_ok)}


# ------------------------------------------------------------------------------------------ pass@k
@pytest.mark.parametrize("solved, pass_1, pass_k", [
    ([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], (0.25 + 0 + 1) / 3, 2 / 3),
    ([[0, 0, 0, 0]], 0.0, 0.0),
    ([[1, 1, 1, 1], [1, 1, 1, 1]], 1.0, 1.0),
    ([[0, 1], [1, 0], [0, 0], [0, 0]], 0.25, 0.5),
    ([[0, 0, 0, 0, 0, 0, 0, 1]], 1 / 8, 1.0),
])
def test_pass_at_1_and_at_group_size(solved, pass_1, pass_k):
    metrics = probe.summarize([group([float(s) for s in row], [bool(s) for s in row]) for row in solved])
    k = len(solved[0])
    assert metrics["k"] == k
    assert metrics["pass@1"] == pytest.approx(pass_1)
    assert metrics[f"pass@{k}"] == pytest.approx(pass_k)


# ------------------------------------------------------------------------------- zero-spread share
@pytest.mark.parametrize("table, share", [
    ([[0, 0, 0, 0]], 1.0),
    ([[1, 1], [0, 1]], 0.5),
    ([[0.2, 0.2, 0.2], [0.7, 0.2, 0.2], [1.7, 1.7, 1.7]], 2 / 3),
    ([[0.1 + 0.2, 0.3]], 1.0),  # float rounding is not a spread: TRL's isclose(std, 0) agrees
    ([[0.0, 1e-4]], 0.0),
    ([[0, 0.5, 1.0, 1.7]] * 3 + [[1.7] * 4], 0.25),
])
def test_zero_spread_share(table, share):
    assert probe.zero_spread_share(table) == pytest.approx(share)
    assert probe.summarize([group(rewards) for rewards in table])["zero_spread"] == pytest.approx(share)


def test_a_completion_without_any_reward_is_left_out_of_its_group():
    metrics = probe.summarize([group([None, 1.0, 1.0], [False, True, True]), group([None, 0.0, 1.0])])
    assert metrics["zero_spread"] == 0.5
    assert metrics["reward_mean"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("rewards", [[0, 1], [1, 1, 1], [0.2, 0.7, 1.7, 1.7], [0.0, 0.25, 0.5, 0.75, 1.0]])
def test_group_std_is_bessel_corrected_like_trl(rewards):
    assert probe.group_std(rewards) == pytest.approx(statistics.stdev(rewards))


def test_reward_mean_and_spread():
    metrics = probe.summarize([group([0, 1]), group([1, 1])])
    assert metrics["reward_mean"] == pytest.approx(0.75)
    assert metrics["reward_std"] == pytest.approx(math.sqrt(0.5) / 2)  # (0.7071 + 0) / 2


# ----------------------------------------------------------------------- predicted for other sizes
@pytest.mark.parametrize("rewards, size, expected", [
    ([1, 0, 0, 0], 2, 0.25 ** 2 + 0.75 ** 2),  # 0.625
    ([1, 0, 0, 0], 4, 0.00390625 + 0.31640625),
    ([1, 0, 0, 0], 8, 0.25 ** 8 + 0.75 ** 8),
    ([1, 0, 0, 0], 16, 0.25 ** 16 + 0.75 ** 16),
    ([0, 0.5, 0.5, 1.0], 2, 0.0625 + 0.25 + 0.0625),  # three values: q = 1/4, 1/2, 1/4
    ([0, 0.5, 0.5, 1.0], 4, 2 * 0.25 ** 4 + 0.5 ** 4),
    ([0.7] * 8, 16, 1.0),
    ([0.1 + 0.2, 0.3, 1.0, 1.0], 2, 0.5),
])
def test_predicted_all_equal_for_one_prompt(rewards, size, expected):
    assert probe.predicted_all_equal(rewards, size) == pytest.approx(expected)


@pytest.mark.parametrize("p", [0.0, 0.125, 0.5, 0.875])
@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_predicted_for_a_binary_reward_is_p_to_the_g_plus_its_complement(p, size):
    rewards = [1.0] * int(8 * p) + [0.0] * (8 - int(8 * p))
    assert probe.predicted_all_equal(rewards, size) == pytest.approx(p ** size + (1 - p) ** size)


def test_predicted_share_is_the_mean_over_prompts():
    table = [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert probe.predicted_zero_spread(table, 2) == pytest.approx((0.625 + 1.0) / 2)
    metrics = probe.summarize([group(rewards) for rewards in table])
    assert metrics["predicted_zero_spread"] == pytest.approx(
        {"2": 0.8125, "4": (0.3203125 + 1) / 2, "8": (0.25 ** 8 + 0.75 ** 8 + 1) / 2,
         "16": (0.25 ** 16 + 0.75 ** 16 + 1) / 2})


# -------------------------------------------------------------------------------------------- verdict
def metrics_of(groups):
    return probe.summarize(groups)


NOTHING = [group([0.0] * 8, format_ok=[False] * 8) for _ in range(10)]
IN_FORMAT_UNSOLVED = [group([0.2, 0.3, 0.2, 0.45, 0.2, 0.2, 0.3, 0.2]) for _ in range(10)]
ALL_SOLVED = [group([1.7] * 8) for _ in range(9)] + [group([1.7] * 7 + [0.2])]
HALF_SOLVED = [group([1.0, 0.0] * 4) for _ in range(10)]
MOSTLY_SOLVED = [group([1.0] * 4) for _ in range(7)] + [group([1.0, 1.0, 0.0, 0.0]) for _ in range(3)]
MOSTLY_STUCK = [group([0.0] * 4) for _ in range(7)] + [group([1.0, 0.0, 0.0, 0.0]) for _ in range(3)]


@pytest.mark.parametrize("groups, can_warm_up, advice, numbers", [
    (NOTHING, True, probe.WARM_UP,
     "pass@8 = 0.00, answer format 0%, and 100% of groups carry no signal at G=8"),
    (NOTHING, False, probe.EASIER, "pass@8 = 0.00"),
    (IN_FORMAT_UNSOLVED, True, probe.EASIER, "although 100% of answers are in format"),
    (ALL_SOLVED, True, probe.HARDER, "pass@1 = 0.99, 90% of groups all solved"),
    (HALF_SOLVED, True, probe.TRAIN, "0% of groups carry no signal at G=8 (pass@1 = 0.50, pass@8 = 1.00)"),
    (MOSTLY_SOLVED, True, probe.HARDER, "70% of groups carry no signal at G=4, 70% of groups all solved"),
    (MOSTLY_STUCK, True, probe.EASIER, "70% of groups carry no signal at G=4, 70% of groups with no solve"),
])
def test_verdict(groups, can_warm_up, advice, numbers):
    got_advice, reason = probe.verdict(metrics_of(groups), can_warm_up)
    assert got_advice == advice
    assert numbers in reason


def test_the_thresholds_sit_where_the_docs_say():
    # 1 solved prompt of 20 (pass@G = 0.05) is no longer "no solve"; 1 of 21 still is.
    solved_one = [group([1.0, 0.0, 0.0, 0.0])]
    assert probe.verdict(metrics_of(solved_one + [group([0.0] * 4)] * 19))[0] == probe.EASIER
    unformatted = [group([0.0] * 4, format_ok=[False] * 4)] * 20
    assert probe.verdict(metrics_of(solved_one + unformatted))[0] == probe.WARM_UP
    # 60% of groups without signal still trains; 70% does not
    assert probe.verdict(metrics_of([group([1.0, 0.0])] * 4 + [group([0.0, 0.0])] * 6))[0] == probe.TRAIN
    assert probe.verdict(metrics_of([group([1.0, 0.0])] * 3 + [group([0.0, 0.0])] * 7))[0] == probe.EASIER


def test_verdict_line_names_the_labels_worth_training_on():
    groups = ([group([0.0] * 4, format_ok=[False] * 4, label="difficult") for _ in range(8)]
              + [group([1.0, 0.0, 1.0, 0.0], label="simple") for _ in range(2)])
    results = probe.by_label(groups)
    assert list(results) == ["difficult", "simple", "all"]
    line = probe.verdict_line(results)
    assert line.startswith("verdict: make it easier: 80% of groups carry no signal at G=4")
    assert line.endswith("; label(s) worth training on: simple")
    advice = probe.label_advice(results)
    assert advice[0].startswith("difficult: warm up with grpolab sft first (pass@4 = 0.00")
    assert advice[1].startswith("simple: train (0% of groups carry no signal")


def test_a_single_label_gives_no_per_label_advice():
    results = probe.by_label([group([1.0, 0.0], label="add-20")] * 3)
    assert list(results) == ["all"]
    assert probe.label_advice(results) == []
    assert probe.verdict_line(results).startswith("verdict: train: 0% of groups")


def test_table_has_one_row_per_label_and_the_predicted_columns():
    text = probe.table(probe.by_label([group([1.0, 0.0], label="a"), group([0.0, 0.0], label="b")]))
    lines = text.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:4] == ["label", "prompts", "pass@1", "pass@2"]
    assert "predicted @16" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["a", "b", "all"]
    assert lines[-1].split("|")[8].strip() == "50%"  # no signal: group b


# ----------------------------------------------------------------------------------------- rewards
def test_combined_rewards_weight_and_sum_the_tasks_rewards_as_trl_does():
    from grpolab.tasks import get_task
    from grpolab.training.rewards import select_rewards

    task = get_task("arith")
    functions, weights = select_rewards(task, None, None)
    row = {"prompt": [{"role": "user", "content": "What is 12 + 7?"}], "question": "12 + 7", "answer": "19",
           "label": "add-20"}
    texts = ["19", "Adding twelve and seven step by step gives us 19", "18"]
    totals, per_function = probe.combined_rewards(functions, weights, row, texts)
    assert per_function == {"arith_correct": [1.0, 1.0, 0.0], "arith_brevity": [1.0, 0.0, 0.0]}
    assert totals == pytest.approx([1.1, 1.0, 0.0])


def test_combined_rewards_pass_chat_completions_and_skip_none():
    seen = {}

    def half_credit(prompts, completions, answer, **kwargs):
        seen.update(completions=completions, answer=answer, keys=sorted(kwargs))
        return [None, 0.5, None]

    def only_first(prompts, completions, **kwargs):
        return [1.0, None, None]

    row = {"prompt": [{"role": "user", "content": "q"}], "answer": "a", "label": "x"}
    totals, _ = probe.combined_rewards([half_credit, only_first], [2.0, 1.0], row, ["one", "two", "three"])
    assert totals == [1.0, 1.0, None]
    assert seen["completions"][1] == [{"role": "assistant", "content": "two"}]
    assert seen["answer"] == ["a", "a", "a"]
    assert seen["keys"] == ["label"]


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("changes, message", [
    ({"k": 1}, "--k 1 is a group of one"),
    ({"temperature": 0.0}, "--temperature 0.0 makes the 8 completions of a prompt equal"),
    ({"num": 0}, "--num must be 1 or more"),
    ({"top_p": 0.0}, "--top_p must be a number above 0 and at most 1"),
    ({"max_new_tokens": 0}, "--max_new_tokens must be a whole number of at least 1"),
])
def test_bad_settings_are_user_errors(changes, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        probe.ProbeConfig(**changes)


@pytest.mark.parametrize("argv, message", [
    (["--k", "1"], "--k 1 is a group of one"),
    (["--temperature", "0"], "--temperature 0.0 makes"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--reward_weights", "1,x"], "--reward_weights must be numbers"),
    (["--reward_weights", "1,0.1,3"], "reward_weights has 3 values but there are 2 reward functions"),
    (["--reward_funcs", "arith_nope"], "unknown reward 'arith_nope'"),
    (["--task_options", "[1]"], "--task_options must be a mapping"),
])
def test_command_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(["probe", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grpolab probe: error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_default_out_names_the_model_and_task_or_sits_in_the_run():
    config = probe.ProbeConfig(model="~/models/smollm2-135m-instruct/", task="mypkg.tasks:TASK")
    assert str(probe.default_out(config, "mytask")) == "outputs/probe-smollm2-135m-instruct-mytask"
    config = probe.ProbeConfig(model="m", adapter="outputs/run/", task="arith")
    assert str(probe.default_out(config, "arith")) == "outputs/run/probe"


# ---------------------------------------------------------------------------------------- real run
@pytest.mark.slow
def test_probe_on_the_embedded_model_end_to_end(tmp_path, capsys):
    out = tmp_path / "probe"
    code = main(["probe", "--task", "sudoku", "--num", "2", "--k", "2", "--max_new_tokens", "8",
                 "--out", str(out), "--no_progress"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("verdict: ")
    assert lines[0].startswith("| label") and "pass@2" in lines[0]

    result = json.loads((out / "probe.json").read_text())
    assert result["verdict"] == lines[-1]
    assert result["reward_funcs"] == ["sudoku_solved", "sudoku_partial", "sudoku_format"]
    assert result["reward_weights"] == [1.0, 0.5, 0.2]
    assert result["config"]["model"] == "smollm2-135m-instruct" and result["config"]["split"] == "train"
    overall = result["results"]["all"]
    assert overall["prompts"] == 2 and overall["k"] == 2
    assert set(overall["predicted_zero_spread"]) == {"2", "4", "8", "16"}
    assert list(result["results"]) == ["simple", "medium", "all"]  # sudoku labels puzzles by blanks, in turn

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(sample["tokens"] <= 8 for sample in samples)
    groups = {}
    for sample in samples:
        pairs = zip(result["reward_funcs"], [1.0, 0.5, 0.2], strict=True)
        weighted = sum(weight * sample["rewards"][name] for name, weight in pairs)
        assert sample["reward"] == pytest.approx(weighted)
        groups.setdefault(sample["index"], []).append(sample["reward"])
    assert overall["zero_spread"] == probe.zero_spread_share(list(groups.values()))
    assert (out / "probe.md").read_text().rstrip().endswith(result["verdict"])
