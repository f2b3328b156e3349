"""What GRPO and SFT runs share: the run directory (check, resume, run info), threads, train, save, close.

``grpo.train`` and ``sft.sft`` each hand ``run_trainer`` their own ``build_trainer``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from grpolab import rundir
from grpolab.training import checkpoints
from grpolab.training.args import TrainArgs

logger = logging.getLogger(__name__)


def run_identity(train_args: TrainArgs, model_config) -> dict[str, Any]:
    """What must not change between a run and its resume."""
    return {"model": model_config.model_name_or_path, "task": train_args.task}


def use_progress_line(trainer, progress) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress)


def save_run_info(output_dir: Path, train_args: TrainArgs, grpo_config, model_config) -> None:
    """The resolved config (YAML, re-usable as --config) and what identifies the run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = {**asdict(train_args), **_public(grpo_config.to_dict()), **asdict(model_config)}
    resolved["model_init_kwargs"] = resolved.pop("recipe_init_kwargs")
    for name in ("resume", "dry_run", "recipe"):
        resolved.pop(name)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(_yaml_safe(resolved), sort_keys=True))
    info = {
        "identity": run_identity(train_args, model_config),
        "task": train_args.task,
        "base_model": model_config.model_name_or_path,
        "task_options": train_args.task_options,
        "recipe": train_args.recipe,
    }
    (output_dir / rundir.RUN_INFO).write_text(json.dumps(info, indent=2))


# Fields the trainer config derives from others; writing them back would make the saved recipe contradict
# itself (TRL refuses generation_batch_size together with steps_per_generation).
_DERIVED = (
    "generation_batch_size",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
)


def _public(config: dict) -> dict:
    return {key: value for key, value in config.items() if not key.startswith("_") and key not in _DERIVED}


def _yaml_safe(value):
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def run_trainer(train_args: TrainArgs, trainer_config, model_config, build) -> Path:
    """What GRPO and SFT runs share: check the run directory (refuse a run without --resume), threads, build
    the trainer with ``build(train_args, trainer_config, model_config)``, train (resuming), save."""
    output_dir = Path(trainer_config.output_dir)
    resume_from = prepare_output_dir(output_dir, train_args, model_config)
    if train_args.torch_threads:
        import torch

        torch.set_num_threads(train_args.torch_threads)
    with checkpoints.fresh_run(output_dir, resume_from):
        trainer = build(train_args, trainer_config, model_config)
        checkpoints.agree_on_resume(resume_from)  # several nodes: the same step everywhere, or one line
        # run info and tokenizer: global rank 0, or each node's first process with save_on_each_node (what
        # Trainer's should_save says); metrics, samples and plots stay with global rank 0 (RunLogger)
        if trainer.args.should_save:
            save_run_info(output_dir, train_args, trainer_config, model_config)
        trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model(str(output_dir))
        if trainer.args.should_save:
            trainer.processing_class.save_pretrained(str(output_dir))
    close_process_group()
    return output_dir


def prepare_output_dir(output_dir: Path, train_args: TrainArgs, model_config) -> str | None:
    """The checkpoint to resume from (None for a fresh run), once the output directory is known usable."""
    from grpolab.training.checks import check_output_dir

    check_output_dir(output_dir, train_args.resume)
    resume_from = checkpoints.resolve_resume(train_args.resume, output_dir)
    if resume_from or train_args.resume:
        checkpoints.check_same_run(output_dir, run_identity(train_args, model_config))
    if train_args.resume and not resume_from:
        removed = checkpoints.clear_unsaved_run(output_dir)
        logger.warning(
            "--resume: %s stopped before its first checkpoint; starting from step 0 (removed %s)",
            output_dir,
            ", ".join(removed),
        )
    return resume_from


def close_process_group() -> None:
    """End a multi-process run cleanly: without it gloo aborts at exit now and then ("terminate called
    without an active exception", about 1 run in 6 here), failing a run that trained fine."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
