"""`make demo-sudoku`: the per-label table and verdict on fixed eval results, and the commands it wires up."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from grpolab.cli import main
from grpolab.evaluation import metrics, report, samples

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PLAN_MARKER = "no weights were loaded"


@pytest.fixture
def demo(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # demo_sudoku imports scripts/demo.py's helpers
    return importlib.import_module("demo_sudoku")


def write_eval(directory: Path, solved: dict[str, list[bool]]) -> None:
    """An eval directory as 'grpolab eval' leaves it: one greedy sample per puzzle, label by label."""
    records, index = [], 0
    for label, flags in solved.items():
        for number, flag in enumerate(flags):
            records.append({"index": index, "sample": 0, "label": label, "question": f"{label}-{number}",
                            "answer": "x", "completion": "", "solved": flag, "parsed": None, "partial": 0.0,
                            "format_ok": flag, "lenient": None, "tokens": 28, "truncated": False})
            index += 1
    directory.mkdir(parents=True)
    (directory / samples.SAMPLES).write_text("".join(json.dumps(r) + "\n" for r in records))
    (directory / report.METRICS).write_text(json.dumps(metrics.summarize(records)))


def solved(count: int, first: int = 0, total: int = 10) -> list[bool]:
    return [first <= number < first + count for number in range(total)]


def write_stages(out: Path, grpo_medium: list[bool]) -> None:
    write_eval(out / "eval-base", {"simple": solved(0), "medium": solved(0), "difficult": solved(0)})
    write_eval(out / "eval-sft", {"simple": solved(5), "medium": solved(2), "difficult": solved(0)})
    # SFT+GRPO keeps simple puzzles 0-4 and adds 5-8; the medium pattern is the test's
    write_eval(out / "eval-grpo", {"simple": solved(9), "medium": grpo_medium, "difficult": solved(0)})


def test_report_gives_each_label_its_intervals_and_the_paired_test(demo, tmp_path):
    write_stages(tmp_path, grpo_medium=solved(2, first=1))  # medium: puzzle 0 lost, puzzle 2 gained
    text = demo.report(tmp_path, {"sft": 120.0, "grpo": 600.0})
    rows = text.splitlines()
    assert rows[0] == "| label | items | base | SFT | SFT+GRPO | GRPO - SFT | McNemar, SFT+GRPO vs SFT |"
    # Wilson 95% intervals: 0/10 -> [0.0, 27.8], 5/10 -> [23.7, 76.3], 9/10 -> [59.6, 98.2]
    assert rows[2] == ("| simple | 10 | 0.0% [0.0, 27.8] | 50.0% [23.7, 76.3] | 90.0% [59.6, 98.2] "
                       "| +40.0 pp | 4 gained, 0 lost, p = 0.125 |")
    assert rows[3].endswith("| +0.0 pp | 1 gained, 1 lost, p = 1.000 |")
    assert rows[4].startswith("| difficult | 10 | 0.0% [0.0, 27.8] |")
    assert "goal reached: +10 pp or more at simple; a significant loss (McNemar p < 0.05) at no label" in text
    assert "minutes per stage: {'sft': 2.0, 'grpo': 10.0}, total 12.0" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["label"] for row in summary["rows"]] == ["simple", "medium", "difficult"]
    assert summary["rows"][0]["paired"]["only_b"] == 4
    assert (tmp_path / "summary.md").read_text().startswith(rows[0])
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


def test_a_significant_loss_fails_the_goal(demo, tmp_path):
    write_stages(tmp_path, grpo_medium=solved(0))
    # medium: SFT solves 2 of 10 and GRPO none, p = 0.5, not a significant loss; as if it were:
    rows = demo.label_rows({"base": tmp_path / "eval-base", "SFT": tmp_path / "eval-sft",
                            "SFT+GRPO": tmp_path / "eval-grpo"})
    assert demo.verdict(rows).startswith("goal reached")
    rows[1]["paired"] = {**rows[1]["paired"], "difference": -1.0, "p_value": 0.002}
    assert demo.verdict(rows) == ("goal not reached: +10 pp or more at simple; a significant loss "
                                  "(McNemar p < 0.05) at medium")
    rows[0]["paired"] = {**rows[0]["paired"], "difference": 0.09}
    assert demo.verdict(rows).startswith("goal not reached: +10 pp or more at no label")


def test_pipeline_runs_the_recipes_on_held_out_puzzles(demo, tmp_path, monkeypatch, capsys):
    commands = []

    def step(title, args):  # the data command runs for real (seconds); the others are only recorded
        commands.append(args)
        assert args[0] != "data" or main(args) == 0
        return 60.0

    monkeypatch.setattr(demo, "step", step)
    out = tmp_path / "demo"
    timings = demo.run_pipeline(out, seed=3, num_test=5, sft_steps=2, grpo_steps=None)
    assert list(timings) == ["data", "eval base", "sft", "eval sft", "grpo", "eval grpo"]
    assert [args[0] for args in commands] == ["data", "eval", "sft", "eval", "train", "eval"]
    data = str(out / "data" / "sudoku.jsonl")
    evals = [args for args in commands if args[0] == "eval"]
    # every evaluation is the same: the 15 held-out puzzles (5 per label), the test split, 64 new tokens
    settings = ["--task", "sudoku", "--split", "test", "--max_new_tokens", "64",
                "--data_file", data, "--num", "15"]
    assert [args[3:] for args in evals] == [[*settings, "--out", str(out / name)]
                                            for name in ("eval-base", "eval-sft", "eval-grpo")]
    assert evals[0][1:3] == ["--model", "smollm2-135m-instruct"]
    assert evals[1][evals[1].index("--adapter") + 1] == str(out / "sft")
    assert evals[2][evals[2].index("--adapter") + 1] == str(out / "grpo")
    # the data, warm-up and GRPO commands as they would run: data for real, the two trainings dry
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    test_rows = [row for row in rows if row["split"] == "test"]
    assert sorted(row["label"] for row in test_rows) == ["difficult"] * 5 + ["medium"] * 5 + ["simple"] * 5
    train_grids = {row["answer"] for row in rows if row["split"] == "train"}
    assert len(train_grids) > 100 and not train_grids & {row["answer"] for row in test_rows}
    assert main([*commands[2], "--dry_run"]) == 0
    plan = capsys.readouterr().out
    assert PLAN_MARKER in plan and "steps            2, lr 0.0005" in plan
    assert f"output           {out / 'sft'}" in plan
    (out / "sft").mkdir()
    (out / "sft" / "adapter_config.json").write_text("{}")
    (out / "sft" / "grpolab_run.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct",
                                                               "task": "sudoku"}))
    assert main([*commands[4], "--dry_run"]) == 0
    plan = capsys.readouterr().out
    assert PLAN_MARKER in plan and "steps            60" in plan and "sudoku_cells x0.5" in plan
    assert commands[2][commands[2].index("--seed") + 1] == commands[4][commands[4].index("--seed") + 1] == "3"
    assert commands[4][commands[4].index("--init_adapter") + 1] == str(out / "sft")
    # GRPO trains on the warm-up's own simple and medium puzzles, and on nothing else
    grpo_data = commands[4][commands[4].index("--data_file") + 1]
    assert grpo_data == str(out / "data" / "sudoku-grpo.jsonl")
    grpo_rows = [json.loads(line) for line in Path(grpo_data).read_text().splitlines()]
    expected = [row for row in rows if row["split"] == "train" and row["label"] in ("simple", "medium")]
    assert grpo_rows == expected and len(expected) > 500
    assert "--torch_threads" not in commands[2] + commands[4]  # the recipes' threads unless --threads


def test_threads_reach_both_trainings(demo, tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(demo, "step", lambda title, args: commands.append(args) or 1.0)
    monkeypatch.setattr(demo, "select_labels", lambda source, target, labels: target)
    demo.run_pipeline(tmp_path, seed=0, num_test=5, sft_steps=None, grpo_steps=None, threads=1)
    assert [args[args.index("--torch_threads") + 1] for args in commands if args[0] in ("sft", "train")] == [
        "1", "1"]
