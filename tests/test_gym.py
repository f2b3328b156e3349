"""reasoning-gym datasets as grpolab tasks: rows, its scorer as strict/partial, data files, errors, a real
run."""

from __future__ import annotations

import json
import sys

import pytest

from grpolab.cli import main
from grpolab.errors import UserError
from grpolab.tasks import get_task

rg = pytest.importorskip("reasoning_gym", reason="reasoning-gym is not installed: pip install 'grpolab[gym]'")

LEGS = "reasoning_gym/leg_counting"


@pytest.fixture(scope="module")
def legs():
    return get_task(LEGS)


def test_rows_carry_the_item_and_its_answer(legs):
    rows = legs.load("train", num=5, seed=1)
    direct = rg.create_dataset("leg_counting", size=5, seed=1)
    assert len(rows) == 5 and rows["question"] == [direct[i]["question"] for i in range(5)]
    assert rows["answer"] == [str(direct[i]["answer"]) for i in range(5)]
    assert rows[0]["prompt"][0]["role"] == "system" and "<answer>" in rows[0]["prompt"][0]["content"]
    assert rows[0]["prompt"][1] == {"role": "user", "content": rows[0]["question"]}
    assert set(rows["label"]) == {"leg_counting"}
    assert json.loads(rows[0]["rg_config"]) == {"seed": 1, "size": 5}


def test_test_split_is_other_items_and_never_a_train_question(legs):
    train = legs.load("train", seed=0, size=300)
    test = legs.load("test", num=50, seed=0, size=300)
    assert len(train) == 300 and 0 < len(test) <= 50
    assert not set(test["question"]) & set(train["question"])
    assert json.loads(test[0]["rg_config"])["seed"] == 1_000_003


@pytest.mark.parametrize(
    ("reply", "solved", "partial", "format_ok"),
    [
        ("<think>13*8 + ...</think>\n<answer>{gold}</answer>", True, 1.0, True),
        ("<answer> {gold} </answer>", True, 1.0, True),  # extract_answer strips spaces
        ("<answer>1</answer> then <answer>{gold}</answer>", True, 1.0, True),  # the last tag counts
        ("<answer>{gold}</answer> then <answer>1</answer>", False, 0.0, True),
        # reasoning-gym's default scorer gives len(gold) / len(answer) when the gold is inside the answer
        ("<answer>-{gold}</answer>", False, "len(gold) / (len(gold) + 1)", True),
        ("The answer is {gold}.", False, 0.0, False),  # no tag: reasoning-gym reads nothing, scores 0
        ("", False, 0.0, False),
    ],
)
def test_score_is_reasoning_gyms_own(legs, reply, solved, partial, format_ok):
    row = legs.load("test", num=1, seed=0)[0]
    verdict = legs.score(reply.format(gold=row["answer"]), row)
    if isinstance(partial, str):
        partial = eval(partial, {"len": len, "gold": row["answer"]})
    assert (verdict.solved, verdict.partial, verdict.format_ok) == (solved, pytest.approx(partial), format_ok)
    dataset = rg.create_dataset("leg_counting", **json.loads(row["rg_config"]))
    assert verdict.partial == dataset.score_answer(verdict.parsed, dataset[row["rg_index"]])


def test_partial_credit_comes_from_the_scorer():
    task = get_task("reasoning_gym/letter_counting")  # its scorer: 1.0 for the right count, else 0
    row = task.load("test", num=1, seed=0)[0]
    assert task.score(f"<answer>{row['answer']}</answer>", row).partial == 1.0
    spelling = get_task("reasoning_gym/spell_backward")  # gives partial credit for a near miss
    item = spelling.load("test", num=1, seed=0)[0]
    near = spelling.score(f"<answer>{item['answer']}x</answer>", item)
    assert not near.solved and 0.0 <= near.partial < 1.0


def test_rewards_are_the_score_and_the_answer_tag(legs):
    rows = legs.load("train", num=2, seed=0)
    columns = {key: list(rows[key]) for key in ("rg_dataset", "rg_config", "rg_index", "answer")}
    completions = [f"<answer>{rows[0]['answer']}</answer>", "no tag here"]
    assert legs.rewards["gym_score"](completions, **columns) == [1.0, 0.0]
    assert legs.rewards["gym_format"](completions, **columns) == [1.0, 0.0]
    assert legs.reference(rows[0]) == f"<answer>{rows[0]['answer']}</answer>"


def test_data_command_writes_rows_the_task_reads_back(tmp_path, legs):
    out = tmp_path / "legs.jsonl"
    assert (
        main(
            [
                "data",
                "reasoning_gym",
                "--dataset",
                "leg_counting",
                "--num",
                "6",
                "--num_test",
                "3",
                "--task_options",
                '{"max_animals": 4}',
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["split"] for row in lines] == ["train"] * 6 + ["test"] * 3
    test = legs.load("test", data_file=str(out))
    assert test["question"] == [row["question"] for row in lines[6:]]
    assert legs.score(f"<answer>{test[2]['answer']}</answer>", test[2]).solved
    assert json.loads(test[0]["rg_config"])["max_animals"] == 4


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("reasoning_gym/leg_count", {}, "no dataset 'leg_count': did you mean reasoning_gym/leg_counting"),
        ("reasoning_gym/leg_counting", {"sizes": 3}, "its fields are: .*max_animals"),
        ("reasoning_gym/leg_counting", {"min_animals": 5, "max_animals": 2}, "bad task_options"),
    ],
)
def test_mistakes_are_one_line_user_errors(name, options, message):
    with pytest.raises(UserError, match=message):
        get_task(name).load("train", num=2, **options)


def test_missing_package_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'grpolab\[gym\]'"):
        get_task("reasoning_gym/leg_counting")


def test_chat_judges_a_typed_question_by_exact_match():
    from grpolab.chat import session as chat

    task = chat.get_chat_task(LEGS)
    assert "<answer>" in task.system
    assert task.verdict("<answer>8</answer>", "how many legs have 2 dogs?", "8")["solved"] is True
    assert task.verdict("<answer>6</answer>", "how many legs have 2 dogs?", "8")["solved"] is False


@pytest.mark.slow
def test_train_one_step_and_evaluate_four_items_on_the_embedded_model(tmp_path, embedded_model_dir):
    run = tmp_path / "run"
    # One prompt x 4 completions: reasoning-gym's system prompt is long, and 16 sequences of it need ~7 GB.
    assert (
        main(
            [
                "train",
                "--task",
                LEGS,
                "--task_options",
                '{"max_animals": 3}',
                "--num_train",
                "16",
                "--max_steps",
                "1",
                "--max_completion_length",
                "16",
                "--num_generations",
                "4",
                "--per_device_train_batch_size",
                "4",
                "--output_dir",
                str(run),
            ]
        )
        == 0
    )
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"rewards/gym_score/mean", "rewards/gym_format/mean"} <= set(row)
    assert 0.0 <= row["rewards/gym_score/mean"] <= 1.0
    assert (
        main(
            [
                "eval",
                "--adapter",
                str(run),
                "--num",
                "4",
                "--max_new_tokens",
                "32",
                "--out",
                str(tmp_path / "eval"),
                "--no_progress",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["items"] == 4 and metrics["config"]["task"] == LEGS
    assert metrics["config"]["task_options"] == {"max_animals": 3}  # taken from the run
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    task = get_task(LEGS)
    rows = task.load("test", num=4, seed=0, max_animals=3)
    for sample in samples:  # the report's verdicts are the scorer's, recomputed here
        assert sample["partial"] == task.score(sample["completion"], rows[sample["index"]]).partial


# ---- third pass: hash-seed regeneration, answerless items, full disjointness, long text ----------------

# The datasets the README names, and the four whose generators depend on Python's hash seed.
README_DATASETS = ("leg_counting", "mini_sudoku")
HASH_SEEDED = ("polynomial_multiplication", "isomorphic_strings", "list_functions", "ransom_note")

_VERDICTS = """
import json, sys
from grpolab.cli import main
from grpolab.tasks import get_task
path, names, write = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "write"
out = {}
for name in names:
    file = f"{path}/{name}.jsonl"
    if write:
        assert main(["data", "reasoning_gym", "--dataset", name, "--num", "12", "--num_test", "4",
                     "--out", file]) == 0
    task = get_task("reasoning_gym/" + name)
    rows = [json.loads(line) for line in open(file)]
    for split in ("train", "test"):
        for row in task.load(split, data_file=file):
            gold = next(r for r in rows if r["question"] == row["question"])["answer"]
            for reply in (f"<answer>{gold}</answer>", "<answer>0</answer>", "no tag"):
                verdict = task.score(reply, row)
                out.setdefault(name, []).append([verdict.solved, verdict.partial, verdict.format_ok])
print(json.dumps(out))
"""


def _verdicts(tmp_path, names, hash_seed: str, write: bool) -> dict:
    import os
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _VERDICTS, str(tmp_path), ",".join(names), "write" if write else "read"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": hash_seed},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_a_data_file_scores_the_same_in_a_process_with_another_hash_seed(tmp_path):
    names = (*README_DATASETS, *HASH_SEEDED)
    written = _verdicts(tmp_path, names, "1", write=True)
    read = _verdicts(tmp_path, names, "2", write=False)
    assert read == written
    for name in names:  # the gold reply solves every item in both processes: nothing scored against another
        assert [verdict[0] for verdict in written[name][::3]] == [True] * 16, name


def test_a_row_whose_item_regenerates_differently_is_refused_unless_it_stored_its_item():
    task = get_task("reasoning_gym/polynomial_multiplication")
    [row] = task.load("train", num=1, seed=0)
    item = json.loads(row["rg_entry"])
    assert task.score(f"<answer>{item['answer']}</answer>", row).solved
    other = {**row, "question": row["question"] + " (as another hash seed wrote it)"}
    assert task.score(f"<answer>{item['answer']}</answer>", other).solved  # from the stored item
    with pytest.raises(UserError, match=r"polynomial_multiplication item 0: the question .* differs"):
        task.score("<answer>1</answer>", {**other, "rg_entry": None})


@pytest.mark.parametrize("name", ["propositional_logic", "graph_color"])
def test_sft_is_refused_for_datasets_whose_items_carry_no_answer(name, tmp_path, capsys):
    task = get_task(f"reasoning_gym/{name}")
    [row] = task.load("train", num=1, seed=0)
    with pytest.raises(UserError, match="carry no answer"):
        task.reference(row)
    code = main(["sft", "--task", f"reasoning_gym/{name}", "--task_options", "{}", "--num_train", "4",
                 "--output_dir", str(tmp_path / "run"), "--dry_run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "carry no answer" in err and len(err.splitlines()) == 1


def test_answered_datasets_keep_their_reference(legs):
    [row] = legs.load("train", num=1, seed=0)
    assert legs.reference(row) == f"<answer>{row['answer']}</answer>"


@pytest.mark.parametrize("name", ["spell_backward", "chain_sum"])
def test_held_out_rows_are_checked_against_every_train_row(name, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert main(["data", "reasoning_gym", "--dataset", name, "--num", "2000", "--num_test", "200",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    train = {row["question"] for row in rows if row["split"] == "train"}
    test = [row["question"] for row in rows if row["split"] == "test"]
    assert len(train) > 1000 and len(test) == 200 and not train & set(test)


def test_only_the_last_graded_characters_are_read(legs):
    [row] = legs.load("train", num=1, seed=0)
    early = f"<answer>{row['answer']}</answer>" + " word" * 2_000  # the tag ends 10,000 characters back
    assert legs.score(early, row).format_ok is False
    assert legs.rewards["gym_format"]([early], **{k: [v] for k, v in row.items()}) == [0.0]
    late = "<answer>" * 12_500 + f"<answer>{row['answer']}</answer>"  # 100 kB of unclosed openings
    assert legs.score(late, row) == legs.score(late[-10_000:], row)
