"""grpolab probe: sample GRPO-sized groups before training and say whether they will carry any signal."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  grpolab probe --task sudoku --num 16 --k 8           # the default model: 16 puzzles x 8 samples
  grpolab probe --adapter outputs/sudoku-sft           # after the warm-up: its base model and task
  grpolab probe --task sudoku --task_options '{"blanks": "simple,medium"}' --max_new_tokens 40
  grpolab probe --task sudoku --reward_funcs sudoku_solved,sudoku_format --reward_weights 1,0.2

Prints per label pass@1, pass@G, the answer-format rate, the mean reward and its spread within groups,
the share of groups whose G rewards are all equal ("no signal": TRL's frac_reward_zero_std), that share
predicted for G = 2, 4, 8, 16, and last one line 'verdict: train | warm up with grpolab sft first |
make it harder | make it easier: the numbers'. Writes probe.json, probe.md and samples.jsonl to --out
(default: ADAPTER/probe or outputs/probe-MODEL-TASK)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grpolab.commands._flags import add_fields
    from grpolab.evaluation.config import ProbeConfig

    add_fields(parser, ProbeConfig)
    parser.add_argument("--out", help="output directory (default: ADAPTER/probe or outputs/probe-MODEL-TASK)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from grpolab.commands._flags import parse_fields
    from grpolab.evaluation import probe
    from grpolab.evaluation.config import ProbeConfig

    config = parse_fields(ProbeConfig, args.argv, "probe")
    out, result = probe.probe(config, args.out, progress=not args.no_progress)
    print(probe.table(result["results"]))
    if result["label_advice"]:
        print("\nper label:\n" + "\n".join(f"  {line}" for line in result["label_advice"]))
    print(f"\n{result['results']['all']['prompts']} prompts x "
          f"{config.k} completions in {result['seconds']} s; wrote {out}/probe.json, probe.md, samples.jsonl")
    print(result["verdict"])
    return 0
