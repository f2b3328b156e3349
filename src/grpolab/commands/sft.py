"""grpolab sft: a short supervised warm-up on the task's reference replies, before GRPO."""

from __future__ import annotations

import argparse

from grpolab.commands.train import add_arguments as add_train_arguments

ACCEPTS_EXTRA = True
DEFAULT_RECIPE = "sft-sudoku-smollm2.yaml"
EXAMPLE = f"""examples:
  grpolab sft                                     # {DEFAULT_RECIPE}: Sudoku answer format on SmolLM2-135M
  grpolab train --config sudoku-smollm2-cpu --init_adapter outputs/sudoku-sft
Flags and YAML keys are grpolab's train arguments plus TRL's SFTConfig and ModelConfig fields."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from grpolab.training import recipes

    if not args.help_trl and recipes.wants_unsloth(args.argv, DEFAULT_RECIPE):
        from grpolab.training.quantization import import_unsloth

        import_unsloth()  # before TRL: Unsloth patches it on import
    from trl import SFTConfig

    if args.help_trl:
        recipes._parser(SFTConfig, "sft")[0].print_help()
        return 0
    train_args, sft_config, model_config = recipes.parse_train_args(args.argv, SFTConfig, DEFAULT_RECIPE, "sft")
    if train_args.dry_run:
        from grpolab.training.plan import print_plan

        print_plan(train_args, sft_config, model_config, "sft")
        return 0
    from grpolab.training.sft import sft

    output_dir = sft(train_args, sft_config, model_config)
    print(f"warm-up adapter saved to {output_dir}; next: grpolab train --init_adapter {output_dir} ...")
    return 0
