"""grpolab eval: score a model or a trained adapter with the task's strict scorer; compare with another
eval."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  grpolab eval --num 100                               # the default model on 100 arith test items
  grpolab eval --adapter outputs/arith-smollm2         # a training run: its base model and task
  grpolab eval --adapter outputs/arith-smollm2 --compare outputs/eval-smollm2-135m-instruct-arith
  grpolab eval --task sudoku --data_file data/sudoku.jsonl --k 8 --temperature 0.7   # pass@1..pass@8
  grpolab eval --adapter outputs/run --resume          # continue an interrupted eval
  grpolab eval --backend openai --base_url http://127.0.0.1:8000/v1 --model NAME   # a served model

Writes metrics.json, samples.jsonl (every completion with its verdict), report.md and
accuracy_by_label.png to --out (default: ADAPTER/eval-SPLIT or outputs/eval-MODEL-TASK)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grpolab.commands._flags import add_fields
    from grpolab.evaluation.config import SERVER_FIELDS, EvalConfig

    add_fields(parser, EvalConfig, groups={"--backend openai": SERVER_FIELDS})
    parser.add_argument(
        "--out", help="output directory (default: ADAPTER/eval-SPLIT or outputs/eval-MODEL-TASK)"
    )
    parser.add_argument("--resume", action="store_true", help="skip items already in OUT/samples.jsonl")
    parser.add_argument(
        "--compare",
        metavar="OTHER_EVAL_DIR",
        help="an earlier eval output directory to put side by side with this one",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from grpolab.commands._flags import parse_fields
    from grpolab.evaluation import report, runner
    from grpolab.evaluation.config import EvalConfig

    config = parse_fields(EvalConfig, args.argv, "eval")
    if args.compare:
        report.load_metrics(args.compare)  # fail before any generation, not after
    out, metrics = runner.evaluate(config, args.out, resume=args.resume, progress=not args.no_progress)
    print(report.result_table({metrics["name"]: metrics}))
    settings = metrics["config"]
    print(f"\nmax_new_tokens {settings['max_new_tokens']} ({settings['max_new_tokens_from']})")
    print(f"\nwrote {out}/metrics.json, samples.jsonl, report.md, accuracy_by_label.png")
    if args.compare:
        print("\n" + report.compare(args.compare, out, out))
        print(f"\nwrote {out}/comparison.md, comparison.png")
    return 0
