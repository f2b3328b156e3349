"""`make demo-tools`: the stage table and verdict on fixed eval results, and the commands it wires up."""

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
    monkeypatch.syspath_prepend(str(SCRIPTS))  # imports demo.py's and demo_sudoku's helpers
    return importlib.import_module("demo_tools")


def write_eval(directory: Path, solved: list[bool], calls: list[int], tool_task: bool = True) -> None:
    """An eval directory as 'grpolab eval' leaves it: one greedy episode per item, levels in turn."""
    records = []
    for index, (flag, count) in enumerate(zip(solved, calls, strict=True)):
        record = {"index": index, "sample": 0, "label": ("mul-3", "sumprod")[index % 2],
                  "question": str(index), "answer": "1", "completion": "", "solved": flag, "parsed": None,
                  "partial": float(flag),
                  "format_ok": True, "lenient": None, "tokens": 70, "truncated": False}
        if tool_task:
            record.update(tool_calls=count, failed_calls=int(count > 1), turns=count + 1)
        records.append(record)
    directory.mkdir(parents=True)
    (directory / samples.SAMPLES).write_text("".join(json.dumps(r) + "\n" for r in records))
    (directory / report.METRICS).write_text(json.dumps(metrics.summarize(records)))


def write_stages(out: Path, grpo_solved: int) -> None:
    none = [False] * 20
    write_eval(out / "eval-base-notool", none, [0] * 20, tool_task=False)
    write_eval(out / "eval-base", none, [0] * 20)
    write_eval(out / "eval-sft", [i < 8 for i in range(20)], [1] * 10 + [0] * 10)
    write_eval(out / "eval-grpo", [i < grpo_solved for i in range(20)], [1] * 18 + [2, 0])


def test_report_gives_each_stage_its_interval_tool_counts_and_the_paired_test(demo, tmp_path):
    write_stages(tmp_path, grpo_solved=16)
    text = demo.report(tmp_path, {"sft": 120.0, "grpo": 1500.0, "eval sft": 60.0})
    rows = text.splitlines()
    assert rows[0] == ("| stage | items | strict accuracy | mul-3 | sumprod | tool calls / item | "
                       "failed calls / item | items with a call | eval minutes |")
    # Wilson 95% intervals: 0/20 -> [0.0, 16.1], 8/20 -> [21.9, 61.3], 16/20 -> [58.4, 91.9]
    assert rows[2].startswith("| base, no tool | 20 | 0.0% [0.0, 16.1] |")
    assert rows[4] == ("| SFT | 20 | 40.0% [21.9, 61.3] | 40.0% [16.8, 68.7] | 40.0% [16.8, 68.7] | 0.50 | "
                       "0.00 | 50% | 1.0 |")
    assert rows[5].startswith("| SFT+GRPO | 20 | 80.0% [58.4, 91.9] |")
    assert rows[5].endswith("| 1.00 | 0.05 | 95% | 0.0 |")  # 18 items with one call, one with two
    assert "SFT+GRPO vs SFT: +40.0 pp; 8 gained, 0 lost, p = 0.008" in text
    assert ("goal reached: SFT+GRPO - SFT = +40.0 pp (needs +10, McNemar p = 0.008, needs < 0.05); "
            "SFT+GRPO 80.0% (needs 60%)") in text
    assert "minutes per stage: {'sft': 2.0, 'grpo': 25.0, 'eval sft': 1.0}, total 28.0" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["stage"] for row in summary["rows"]] == ["base, no tool", "base + tool", "SFT", "SFT+GRPO"]
    assert summary["paired"]["only_b"] == 8
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


@pytest.mark.parametrize(("grpo_solved", "reason"), [
    (11, "+15.0 pp (needs +10, McNemar p = 0.25"),  # 3 gained: not significant, and 55% < 60%
    (9, "+5.0 pp"),
])
def test_the_goal_needs_the_gain_its_test_and_the_level(demo, tmp_path, grpo_solved, reason):
    write_stages(tmp_path, grpo_solved=grpo_solved)
    text = demo.report(tmp_path)
    assert "goal not reached" in text and reason in text


def test_pipeline_evaluates_every_stage_on_the_same_held_out_items(demo, tmp_path, monkeypatch, capsys):
    commands = []

    def step(title, args):  # the data command runs for real (seconds); the others are only recorded
        commands.append(args)
        assert args[0] != "data" or main(args) == 0
        return 60.0

    monkeypatch.setattr(demo, "step", step)
    out = tmp_path / "demo"
    timings = demo.run_pipeline(out, seed=3, num_test=6, sft_steps=2, grpo_steps=None)
    assert list(timings) == ["data", "eval base, no tool", "eval base + tool", "sft", "eval sft", "grpo",
                             "eval grpo"]
    assert [args[0] for args in commands] == ["data", "eval", "eval", "sft", "eval", "train", "eval"]
    data = str(out / "data" / "calc.jsonl")
    evals = [args for args in commands if args[0] == "eval"]
    settings = ["--split", "test", "--max_new_tokens", "96", "--data_file", data, "--num", "6"]
    for args, name in zip(evals, demo.STAGES, strict=True):
        assert args[args.index("--split"):args.index("--num") + 2] == settings
        assert args[-2:] == ["--out", str(out / name)]
    assert [args[args.index("--task") + 1] for args in evals] == ["arith", "calc", "calc", "calc"]
    assert evals[2][evals[2].index("--adapter") + 1] == str(out / "sft")
    assert evals[3][evals[3].index("--adapter") + 1] == str(out / "grpo")
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    assert sum(row["split"] == "test" for row in rows) == 6
    assert not {r["question"] for r in rows if r["split"] == "train"} & {r["question"] for r in rows
                                                                         if r["split"] == "test"}
    assert main([*commands[3], "--dry_run"]) == 0
    plan = capsys.readouterr().out
    assert PLAN_MARKER in plan and "steps            2," in plan and f"output           {out / 'sft'}" in plan
    (out / "sft").mkdir()
    (out / "sft" / "adapter_config.json").write_text("{}")
    (out / "sft" / "grpolab_run.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct",
                                                               "task": "calc"}))
    assert main([*commands[5], "--dry_run"]) == 0
    plan = capsys.readouterr().out
    assert PLAN_MARKER in plan and "calculator" in plan
    assert commands[5][commands[5].index("--init_adapter") + 1] == str(out / "sft")
    assert commands[3][commands[3].index("--seed") + 1] == commands[5][commands[5].index("--seed") + 1] == "3"
