"""grpolab sft: a short supervised warm-up on the task's reference replies, before GRPO."""

from __future__ import annotations

import argparse

from grpolab.commands.train import add_run_arguments, relaunch
from grpolab.errors import UserError
from grpolab.training.args import TrainArgs, field_names
from grpolab.training.distributed import inside_launch

ACCEPTS_EXTRA = True
DEFAULT_RECIPE = "sft-sudoku-smollm2.yaml"
# grpolab's arguments that only GRPO reads: an SFT run refuses them rather than ignore them.
GRPO_ONLY = ("reward_funcs", "num_samples_logged", "reward_timeout")
HELPS = {"logprobs": "the LM head of the loss: 'plain' (one matmul on the reply tokens only, fast on CPU), "
                     "'fused' (TRL's fused head over every position, lean on memory) or 'auto' (plain on "
                     "CPU, fused elsewhere)",
         "plot": "write loss_curve.png (loss and token accuracy) in output_dir as training goes",
         "init_adapter": "continue this LoRA adapter instead of a new one"}
EXAMPLE = f"""examples:
  grpolab sft                                     # {DEFAULT_RECIPE}: Sudoku answer format on SmolLM2-135M
  grpolab sft --dry_run                           # the plan, checked; no weights loaded
  grpolab sft --max_steps 20 --output_dir outputs/sft-try
  grpolab sft --output_dir outputs/sft-try --resume   # continue from the newest complete checkpoint
  grpolab train --config sudoku-smollm2-cpu --init_adapter outputs/sudoku-sft

Any field of TRL's SFTConfig and ModelConfig is a flag and a YAML key (learning_rate, max_length,
padding_free, completion_only_loss, lora_r, ...); 'grpolab sft --help_trl' lists them all (imports torch,
slower). Each run writes metrics.jsonl and loss_curve.png in output_dir."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = [name for name in field_names(TrainArgs) if name not in GRPO_ONLY]
    add_run_arguments(parser, DEFAULT_RECIPE, "SFTConfig", names, HELPS)


def run(args: argparse.Namespace) -> int:
    from grpolab.training import recipes

    if not args.help_trl and recipes.wants_unsloth(args.argv, DEFAULT_RECIPE):
        from grpolab.training.gpu_extras import import_unsloth

        import_unsloth()  # before TRL: Unsloth patches it on import
    from trl import SFTConfig

    if args.help_trl:
        recipes._parser(SFTConfig, "sft")[0].print_help()
        return 0
    train_args, sft_config, model_config = recipes.parse_train_args(args.argv, SFTConfig, DEFAULT_RECIPE,
                                                                     "sft")
    refuse_grpo_settings(train_args)
    if train_args.dry_run:
        from grpolab.training.plan import print_plan

        print_plan(train_args, sft_config, model_config, "sft")
    elif train_args.accelerate_config and not inside_launch():
        return relaunch(args.argv, train_args, "sft", sft_config)
    else:
        from grpolab.training.sft import sft

        output_dir = sft(train_args, sft_config, model_config)
        print(f"warm-up adapter saved to {output_dir}; next: grpolab train --init_adapter {output_dir} ...")
    return 0


def refuse_grpo_settings(train_args: TrainArgs) -> None:
    defaults = TrainArgs()
    for name in GRPO_ONLY:
        if getattr(train_args, name) != getattr(defaults, name):
            raise UserError(f"--{name} is a GRPO setting (grpolab train); grpolab sft trains on the task's "
                            "reference replies: remove it")
