"""4x4 Sudoku on the embedded model, start to finish: does GRPO add anything after the supervised warm-up?

make data -> evaluate the base model -> SFT warm-up -> evaluate -> GRPO from the warm-up (on its simple and
medium puzzles) -> evaluate ->
one table and one chart over the three labels (simple / medium / difficult = 4 / 8 / 12 blanks): strict
accuracy with 95% Wilson intervals, and per label the exact McNemar test of SFT+GRPO against SFT on the same
puzzles. Held-out puzzles come from the test split, whose solution grids never occur in training.
Recipes: configs/sft-sudoku-demo.yaml, then configs/grpo-sudoku-demo.yaml. Every step but the choice of
GRPO's puzzles is a grpolab command, printed before it runs, as in scripts/demo.py.
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

LABELS = ("simple", "medium", "difficult")
STAGES = {"eval-base": "base", "eval-sft": "SFT", "eval-grpo": "SFT+GRPO"}  # eval directory -> column
# The same settings for every evaluation. A solved reply is 28 tokens (4 rows in answer tags); 64 leave
# room to spare. The base model never writes a parseable grid, at 96 or 256 tokens either
# (docs/benchmarks.md), so the cut costs it nothing.
EVAL_FLAGS = ["--task", "sudoku", "--split", "test", "--max_new_tokens", "64"]
# GRPO trains on the warm-up's simple and medium puzzles only. After the warm-up the probe finds no solve
# in difficult groups (pass@8 = 0: they teach copying at most), and on the full mix seed 1 stayed at +9
# points; without the difficult third of each batch it reached +13 (docs/benchmarks.md, Sudoku demo).
GRPO_LABELS = ("simple", "medium")
SUMMARY = "summary.md"


def label_samples(records: Sequence[Mapping[str, Any]], label: str) -> list[Mapping[str, Any]]:
    return [record for record in records if record.get("label") == label]


def label_rows(evals: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Per label: each stage's accuracy and 95% interval, and SFT+GRPO vs SFT paired on the same puzzles."""
    from grpolab.evaluation import metrics as metric_fns
    from grpolab.evaluation import report
    from grpolab.evaluation import samples as sample_files

    metrics = {name: report.load_metrics(path) for name, path in evals.items()}
    samples = {name: sample_files.read_samples(path / sample_files.SAMPLES) for name, path in evals.items()}
    rows = []
    for label in LABELS:
        row: dict[str, Any] = {"label": label, "items": metrics["SFT"]["items_by_label"].get(label, 0)}
        for name, m in metrics.items():
            row[name] = (m["accuracy_by_label"].get(label), m["ci95"]["accuracy_by_label"].get(label))
        row["paired"] = metric_fns.paired_test(label_samples(samples["SFT"], label),
                                               label_samples(samples["SFT+GRPO"], label))
        rows.append(row)
    return rows


def _accuracy(cell: tuple[float | None, Sequence[float] | None]) -> str:
    value, interval = cell
    if value is None:
        return "-"
    text = f"{100 * value:.1f}%"
    return f"{text} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else text


def _paired(paired: Mapping[str, Any] | None) -> tuple[str, str]:
    """(GRPO - SFT in points, the McNemar cell) for a label; dashes when there is nothing to pair."""
    from grpolab.evaluation import report

    if paired is None:
        return "-", "-"
    p_value = report.p_text(paired["p_value"])
    test = (f"{paired['only_b']} gained, {paired['only_a']} lost, p = {p_value}"
            if paired["method"] == "exact McNemar" else f"bootstrap p = {p_value}")
    return f"{100 * paired['difference']:+.1f} pp", test


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ["label", "items", *STAGES.values(), "GRPO - SFT", "McNemar, SFT+GRPO vs SFT"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], str(row["items"]), *(_accuracy(row[name]) for name in STAGES.values()),
                 *_paired(row["paired"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: Sequence[Mapping[str, Any]], min_gain: float = 0.10) -> str:
    """The recipe's goal: GRPO adds >= 10 points at one label or more, and no label drops significantly."""
    gains = [row["label"] for row in rows if row["paired"] and row["paired"]["difference"] >= min_gain]
    losses = [row["label"] for row in rows if row["paired"] and row["paired"]["difference"] < 0
              and row["paired"]["p_value"] < 0.05]
    reached = bool(gains) and not losses
    return (f"goal {'reached' if reached else 'not reached'}: +{100 * min_gain:.0f} pp or more at "
            f"{', '.join(gains) or 'no label'}; a significant loss (McNemar p < 0.05) at "
            f"{', '.join(losses) or 'no label'}")


def chart(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    from grpolab.plots import accuracy_bars

    values = {name: {row["label"]: row[name][0] or 0.0 for row in rows} for name in STAGES.values()}
    intervals = {name: {row["label"]: row[name][1] for row in rows} for name in STAGES.values()}
    accuracy_bars(values, out, "sudoku, held-out puzzles: strict accuracy by label", order=list(LABELS),
                  intervals=intervals)


def report(out: Path, timings: Mapping[str, float] | None = None) -> str:
    """Write summary.md, summary.json and comparison.png in ``out`` from its three eval directories."""
    rows = label_rows({name: out / directory for directory, name in STAGES.items()})
    text = f"{summary_table(rows)}\n\n{verdict(rows)}\n"
    minutes = {name: round(seconds / 60, 1) for name, seconds in (timings or {}).items()}
    if minutes:
        text += f"\nminutes per stage: {minutes}, total {sum(minutes.values()):.1f}\n"
    (out / SUMMARY).write_text(text + "\n![accuracy by label](comparison.png)\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"rows": rows, "minutes": minutes}, indent=2) + "\n")
    chart(rows, out / "comparison.png")
    return text


def select_labels(source: Path, target: Path, labels: Sequence[str]) -> Path:
    """The training rows of ``source`` whose label is one of ``labels``, written to ``target``."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in map(json.loads, lines) if row.get("split") == "train" and row["label"] in labels]
    target.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(rows)} training puzzles labelled {', '.join(labels)} -> {target}")
    return target


def run_pipeline(out: Path, seed: int, num_test: int, sft_steps: int | None, grpo_steps: int | None,
                 threads: int | None = None) -> dict:
    data, seed_flags = out / "data" / "sudoku.jsonl", ["--seed", str(seed)]
    train_flags = [*seed_flags, "--torch_threads", str(threads)] if threads else seed_flags
    eval_flags = [*EVAL_FLAGS, "--data_file", str(data), "--num", str(3 * num_test)]
    make_data = ["data", "sudoku", "--num", "800", "--num_test", str(3 * num_test), "--blanks", "4,8,12",
                 *seed_flags, "--out", str(data)]
    timings = {"data": step("make the data: puzzles of 4, 8 and 12 blanks in turn, train and held-out test",
                            make_data)}
    timings["eval base"] = step("evaluate the base model on the held-out puzzles",
                                ["eval", "--model", "smollm2-135m-instruct", *eval_flags,
                                 "--out", str(out / "eval-base")])
    sft = ["sft", "--config", "sft-sudoku-demo", "--data_file", str(data), *train_flags,
           "--output_dir", str(out / "sft")] + (["--max_steps", str(sft_steps)] if sft_steps else [])
    timings["sft"] = step("supervised warm-up on the reference grids (configs/sft-sudoku-demo.yaml)", sft)
    timings["eval sft"] = step("evaluate the warm-up", ["eval", "--adapter", str(out / "sft"), *eval_flags,
                                                        "--out", str(out / "eval-sft")])
    grpo_data = select_labels(data, out / "data" / "sudoku-grpo.jsonl", GRPO_LABELS)
    grpo = ["train", "--config", "grpo-sudoku-demo", "--init_adapter", str(out / "sft"),
            "--data_file", str(grpo_data), *train_flags, "--output_dir", str(out / "grpo")]
    timings["grpo"] = step("GRPO from the warm-up, simple and medium puzzles (configs/grpo-sudoku-demo.yaml)",
                           grpo + (["--max_steps", str(grpo_steps)] if grpo_steps else []))
    timings["eval grpo"] = step("evaluate SFT+GRPO", ["eval", "--adapter", str(out / "grpo"), *eval_flags,
                                                      "--out", str(out / "eval-grpo")])
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo-sudoku")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the warm-up and GRPO")
    parser.add_argument("--num_test", type=int, default=100, help="held-out puzzles per label")
    parser.add_argument("--sft_steps", type=int, default=None, help="override the warm-up recipe's steps")
    parser.add_argument("--grpo_steps", type=int, default=None, help="override the GRPO recipe's steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every stage (default: the recipes' 2); with 1, two seeds can "
                        "run side by side on two cores")
    parser.add_argument("--report_only", action="store_true",
                        help="only rebuild the table and chart from OUT's eval-base, eval-sft and eval-grpo")
    args = parser.parse_args()
    out = Path(args.out)
    timings = None
    if not args.report_only:
        keep_previous(out)
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # eval and probe take torch's default
        timings = run_pipeline(out, args.seed, args.num_test, args.sft_steps, args.grpo_steps, args.threads)
    print("\n" + report(out, timings))
    print(f"results in {out}/: {SUMMARY}, comparison.png, grpo/reward_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
