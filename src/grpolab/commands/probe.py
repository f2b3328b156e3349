"""grpolab probe: sample GRPO-sized groups before training and say whether they will carry any signal."""

from __future__ import annotations

import argparse

from grpolab.errors import UserError

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
    parser.add_argument("--model", help="model name or path (default: the adapter's base model, else "
                        "smollm2-135m-instruct)")
    parser.add_argument("--adapter", help="a training run directory (or any PEFT LoRA adapter directory)")
    parser.add_argument("--task", help="task name or package.module:TASK "
                        "(default: the run's task, else arith)")
    parser.add_argument("--task_options", default="{}",
                        help='task options as JSON, e.g. \'{"blanks": "4,8"}\'')
    parser.add_argument("--data_file", help="JSONL file of items (default: the task's own data)")
    parser.add_argument("--split", default="train", help="data split to sample prompts from")
    parser.add_argument("--num", type=int, default=16, help="number of prompts")
    parser.add_argument("--k", type=int, default=8, help="completions per prompt: the GRPO group size G")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature, as in training (TRL's default is 1.0)")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling threshold")
    parser.add_argument("--max_new_tokens", type=int, default=256,
                        help="longest completion, in tokens: use the recipe's max_completion_length")
    parser.add_argument("--reward_funcs", help="comma-separated reward functions (default: the task's)")
    parser.add_argument("--reward_weights", help="comma-separated weights, one per reward function "
                        "(default: the task's, or 1 each)")
    parser.add_argument("--batch_size", type=int, default=32, help="sequences generated at once")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated data and for sampling")
    parser.add_argument("--out", help="output directory (default: ADAPTER/probe or outputs/probe-MODEL-TASK)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from grpolab.commands.eval import _json_options
    from grpolab.evaluation import probe

    config = probe.ProbeConfig(
        model=args.model, adapter=args.adapter, task=args.task, task_options=_json_options(args.task_options),
        data_file=args.data_file, split=args.split, num=args.num, k=args.k, temperature=args.temperature,
        top_p=args.top_p, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
        reward_funcs=_names(args.reward_funcs), reward_weights=_weights(args.reward_weights),
    )
    out, result = probe.probe(config, args.out, progress=not args.no_progress)
    print(probe.table(result["results"]))
    if result["label_advice"]:
        print("\nper label:\n" + "\n".join(f"  {line}" for line in result["label_advice"]))
    print(f"\n{result['results']['all']['prompts']} prompts x "
          f"{config.k} completions in {result['seconds']} s; wrote {out}/probe.json, probe.md, samples.jsonl")
    print(result["verdict"])
    return 0


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def _weights(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise UserError(f"--reward_weights must be numbers separated by commas, like 1,0.2; got {text!r}"
                        ) from None
