"""grpolab train: parse the recipe, then train (or print the plan with --dry_run)."""

from __future__ import annotations

import argparse

from grpolab.training.args import TrainArgs, field_names
from grpolab.training.distributed import inside_launch

ACCEPTS_EXTRA = True
EXAMPLE = """examples:
  grpolab train                                   # default recipe: SmolLM2-135M learns addition on CPU
  grpolab train --config configs/sudoku-qwen2.5-3b.yaml --dry_run
  grpolab train --max_steps 10 --output_dir outputs/try
  grpolab train --output_dir outputs/try --resume  # continue from the newest complete checkpoint

Any field of TRL's GRPOConfig and ModelConfig is a flag and a YAML key (learning_rate, num_generations,
beta, loss_type, max_completion_length, lora_r, load_in_4bit, use_vllm, report_to, ...);
'grpolab train --help_trl' lists them all (imports torch, slower)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "default.yaml", "GRPOConfig", field_names(TrainArgs))


def add_run_arguments(parser: argparse.ArgumentParser, default_recipe: str, trainer_config: str,
                      names: list[str], helps: dict[str, str] | None = None) -> None:
    """--config, --help_trl and grpolab's own TrainArgs ``names`` (shared with sft); TRL's fields pass
    through to the recipe parser."""
    parser.add_argument("--config",
                        help=f"YAML recipe (path or name of a packaged recipe); default: {default_recipe}")
    parser.add_argument("--help_trl", action="store_true",
                        help=f"list every TRL {trainer_config}/ModelConfig flag")
    for name in names:
        spec = TrainArgs.__dataclass_fields__[name]
        optional_value = name == "resume" or spec.type in ("bool", bool)  # '--dry_run' alone means true
        parser.add_argument(f"--{name}", help=(helps or {}).get(name, spec.metadata.get("help")),
                            default=argparse.SUPPRESS, nargs="?" if optional_value else None)


def run(args: argparse.Namespace) -> int:
    from grpolab.training import recipes

    if args.help_trl:
        parser, _ = recipes._parser()
        parser.print_help()
        return 0
    if recipes.wants_unsloth(args.argv):
        from grpolab.training.gpu_extras import import_unsloth

        import_unsloth()  # before the parser imports TRL: Unsloth patches it on import
    train_args, grpo_config, model_config = recipes.parse_train_args(args.argv)
    if train_args.dry_run:
        from grpolab.training.plan import print_plan

        print_plan(train_args, grpo_config, model_config)
        return 0
    if train_args.accelerate_config and not inside_launch():
        return relaunch(args.argv, train_args, "train", grpo_config)
    from grpolab.training.grpo import train

    output_dir = train(train_args, grpo_config, model_config)
    print(f"adapter saved to {output_dir}; next: grpolab eval --adapter {output_dir}")
    return 0


def relaunch(argv: list[str], train_args, command: str, trainer_config=None) -> int:
    """Run this same command again under ``accelerate launch`` (one process per device)."""
    import subprocess

    from grpolab.training import distributed, multinode

    distributed.check_backend(train_args.accelerate_config)
    if trainer_config is not None:  # one line before launch: rank, head address, port, world vs batch
        multinode.check_world(train_args, trainer_config, command)
    command = distributed.launch_command(argv, train_args.accelerate_config, train_args.num_processes,
                                         command, multinode.launch_flags(train_args))
    print("launching:", " ".join(command[2:]))
    return subprocess.call(command, env=distributed.launch_env(train_args.accelerate_config))
