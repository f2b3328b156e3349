"""Calculator tool use on the embedded model, start to finish: does GRPO teach more than the warm-up?

make data -> evaluate the base model without the tool -> with the tool -> SFT warm-up on a few reference
episodes (call, result, answer) -> evaluate -> multi-turn GRPO from the warm-up (TRL's tools=) -> evaluate ->
one table and one chart: held-out strict accuracy with 95% Wilson intervals per stage and level, tool calls,
failed calls and minutes per stage, and the exact McNemar test of SFT+GRPO against SFT on the same items.
The problems (3-digit products, sums of two products) are beyond the model's head; held-out expressions
never occur in training in any order (tasks/calc.py). "Without the tool" is the same items through the arith
task: its prompt names no tool and its grader is calc's. Recipes: configs/sft-calc-demo.yaml, then
configs/calc-smollm2-cpu.yaml. Every step is a grpolab command, printed before it runs, as in scripts/demo.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from demo import keep_previous, step
from demo_sudoku import _accuracy, _paired

LEVELS = ("mul-3", "sumprod")
# eval directory -> column; "without the tool" is the arith task on the same held-out rows
STAGES = {"eval-base-notool": "base, no tool", "eval-base": "base + tool", "eval-sft": "SFT",
          "eval-grpo": "SFT+GRPO"}
# A solved episode is 73-78 tokens (call, result, answer): the GRPO recipe's completion budget, for all.
EVAL_FLAGS = ["--split", "test", "--max_new_tokens", "96"]
TIMED = {"eval-base-notool": "eval base, no tool", "eval-base": "eval base + tool", "eval-sft": "eval sft",
         "eval-grpo": "eval grpo"}
SUMMARY = "summary.md"


def stage_rows(evals: Mapping[str, Path], timings: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Per stage: strict accuracy overall and per level with 95% intervals, and its tool counts."""
    from grpolab.evaluation import report

    rows = []
    for directory, name in STAGES.items():
        m = report.load_metrics(evals[directory])
        row = {"stage": name, "items": m["items"], "all": (m["accuracy"], m["ci95"]["accuracy"]),
               "tool_calls": m.get("tool_calls_per_item", 0.0), "failed": m.get("failed_calls_per_item", 0.0),
               "tool_use": m.get("tool_use_rate", 0.0),
               "minutes": round((timings or {}).get(TIMED[directory], 0.0) / 60, 1)}
        for level in LEVELS:
            row[level] = (m["accuracy_by_label"].get(level), m["ci95"]["accuracy_by_label"].get(level))
        rows.append(row)
    return rows


def paired(evals: Mapping[str, Path]) -> dict[str, Any] | None:
    from grpolab.evaluation import metrics, samples

    return metrics.paired_test(samples.read_samples(evals["eval-sft"] / samples.SAMPLES),
                               samples.read_samples(evals["eval-grpo"] / samples.SAMPLES))


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ["stage", "items", "strict accuracy", *LEVELS, "tool calls / item", "failed calls / item",
              "items with a call", "eval minutes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        levels = [_accuracy(row[level]) for level in LEVELS]
        cells = [row["stage"], str(row["items"]), _accuracy(row["all"]), *levels,
                 f"{row['tool_calls']:.2f}", f"{row['failed']:.2f}", f"{100 * row['tool_use']:.0f}%",
                 f"{row['minutes']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: Sequence[Mapping[str, Any]], test: Mapping[str, Any] | None, min_gain: float = 0.10,
            min_accuracy: float = 0.60) -> str:
    """The goal: SFT+GRPO at least ``min_gain`` over SFT on the same items (McNemar p < 0.05) and at least
    ``min_accuracy`` overall."""
    from grpolab.evaluation import report

    accuracy = rows[-1]["all"][0]
    if test is None:
        return "goal not reached: nothing to pair (the evals hold different items)"
    gain, p_value = test["difference"], test["p_value"]
    reached = gain >= min_gain and p_value < 0.05 and accuracy >= min_accuracy
    return (f"goal {'reached' if reached else 'not reached'}: SFT+GRPO - SFT = {100 * gain:+.1f} pp "
            f"(needs +{100 * min_gain:.0f}, McNemar p = {report.p_text(p_value)}, needs < 0.05); SFT+GRPO "
            f"{100 * accuracy:.1f}% (needs {100 * min_accuracy:.0f}%)")


def chart(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    from grpolab.plots import accuracy_bars

    groups = ("all", *LEVELS)
    values = {row["stage"]: {g: row[g][0] or 0.0 for g in groups} for row in rows}
    intervals = {row["stage"]: {g: row[g][1] for g in groups} for row in rows}
    accuracy_bars(values, out, "calc, held-out items: strict accuracy by stage", order=list(groups),
                  intervals=intervals)


def report(out: Path, timings: Mapping[str, float] | None = None) -> str:
    """Write summary.md, summary.json and comparison.png in ``out`` from its four eval directories."""
    evals = {directory: out / directory for directory in STAGES}
    rows, test = stage_rows(evals, timings), paired(evals)
    text = f"{summary_table(rows)}\n\nSFT+GRPO vs SFT: {'; '.join(_paired(test))}\n{verdict(rows, test)}\n"
    minutes = {name: round(seconds / 60, 1) for name, seconds in (timings or {}).items()}
    if minutes:
        text += f"\nminutes per stage: {minutes}, total {sum(minutes.values()):.1f}\n"
    (out / SUMMARY).write_text(text + "\n![accuracy by stage](comparison.png)\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"rows": rows, "paired": test, "minutes": minutes},
                                                 indent=2) + "\n")
    chart(rows, out / "comparison.png")
    return text


def run_pipeline(out: Path, seed: int, num_test: int, sft_steps: int | None, grpo_steps: int | None,
                 threads: int | None = None) -> dict:
    data, seed_flags = out / "data" / "calc.jsonl", ["--seed", str(seed)]
    train_flags = [*seed_flags, "--torch_threads", str(threads)] if threads else seed_flags
    evals = [*EVAL_FLAGS, "--data_file", str(data), "--num", str(num_test)]
    base = ["eval", "--model", "smollm2-135m-instruct", *evals]
    timings = {"data": step("make the data: 3-digit products and sums of products, train and held-out test",
                            ["data", "calc", "--num", "2000", "--num_test", str(num_test), *seed_flags,
                             "--out", str(data)])}
    timings[TIMED["eval-base-notool"]] = step(
        "evaluate the base model without the tool (the arith task: no tool in the prompt, the same grader)",
        [*base, "--task", "arith", "--out", str(out / "eval-base-notool")])
    timings[TIMED["eval-base"]] = step("evaluate the base model with the calculator",
                                       [*base, "--task", "calc", "--out", str(out / "eval-base")])
    sft = ["sft", "--config", "sft-calc-demo", "--data_file", str(data), *train_flags,
           "--output_dir", str(out / "sft")] + (["--max_steps", str(sft_steps)] if sft_steps else [])
    timings["sft"] = step("supervised warm-up on reference episodes (configs/sft-calc-demo.yaml)", sft)
    timings[TIMED["eval-sft"]] = step("evaluate the warm-up", ["eval", "--adapter", str(out / "sft"),
                                                               "--task", "calc", *evals,
                                                               "--out", str(out / "eval-sft")])
    grpo = ["train", "--config", "calc-smollm2-cpu", "--init_adapter", str(out / "sft"), "--data_file",
            str(data), *train_flags, "--output_dir", str(out / "grpo")]
    timings["grpo"] = step("multi-turn GRPO from the warm-up (configs/calc-smollm2-cpu.yaml)",
                           grpo + (["--max_steps", str(grpo_steps)] if grpo_steps else []))
    timings[TIMED["eval-grpo"]] = step("evaluate SFT+GRPO", ["eval", "--adapter", str(out / "grpo"),
                                                             "--task", "calc", *evals,
                                                             "--out", str(out / "eval-grpo")])
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo-tools")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the warm-up and GRPO")
    parser.add_argument("--num_test", type=int, default=100, help="held-out items")
    parser.add_argument("--sft_steps", type=int, default=None, help="override the warm-up recipe's steps")
    parser.add_argument("--grpo_steps", type=int, default=None, help="override the GRPO recipe's steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every stage (default: the recipes' 2)")
    parser.add_argument("--report_only", action="store_true",
                        help="only rebuild the table and chart from OUT's eval directories")
    args = parser.parse_args()
    out = Path(args.out)
    timings = None
    if not args.report_only:
        keep_previous(out)
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)
        timings = run_pipeline(out, args.seed, args.num_test, args.sft_steps, args.grpo_steps, args.threads)
    print("\n" + report(out, timings))
    print(f"results in {out}/: {SUMMARY}, comparison.png, grpo/reward_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
