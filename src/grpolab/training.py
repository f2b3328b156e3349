"""GRPO training: TRL's GRPOTrainer with a PEFT LoRA adapter, used through its public surface.

The algorithm's choices are TRL's and are set in the recipe, not here: the loss type (TRL's default
``dapo`` normalises the clipped surrogate by the number of tokens in the batch), ``beta`` (KL penalty to
the reference model; 0 by default, so no reference model is kept), ``epsilon`` (PPO-style clipping of
the importance ratio) and ``scale_rewards`` (advantages are rewards minus the group mean, divided by
the group's standard deviation with ``group``). Several rewards are summed with ``reward_weights``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from grpolab import checkpoints, models
from grpolab.config import TrainArgs
from grpolab.errors import UserError
from grpolab.rewards import SampleRecorder, select_rewards
from grpolab.tasks import Task, get_task

logger = logging.getLogger(__name__)


def run_identity(train_args: TrainArgs, model_config) -> dict[str, Any]:
    """What must not change between a run and its resume."""
    return {"model": model_config.model_name_or_path, "task": train_args.task}


def load_task_data(task: Task, train_args: TrainArgs, seed: int):
    try:
        return task.load("train", data_file=train_args.data_file, num=train_args.num_train, seed=seed,
                         **train_args.task_options)
    except TypeError as error:
        raise UserError(f"task_options for {task.name}: {error}") from None


def peft_config(model_config):
    from trl import get_peft_config

    if not model_config.use_peft:
        return None
    return get_peft_config(model_config)


def load_model(train_args: TrainArgs, model_config):
    source = models.resolve(model_config.model_name_or_path)
    tokenizer = models.load_tokenizer(source)
    if train_args.use_unsloth:
        from grpolab.accel import load_unsloth

        return load_unsloth(source, model_config), tokenizer, None
    kwargs = {}
    quantization = quantization_config(model_config)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": 0}
    model = models.load_causal_lm(source, dtype=model_config.dtype or "auto", **kwargs)
    if train_args.init_adapter:
        from peft import PeftModel

        models.check_adapter_base(train_args.init_adapter, model_config.model_name_or_path)
        return PeftModel.from_pretrained(model, train_args.init_adapter, is_trainable=True), tokenizer, None
    return model, tokenizer, peft_config(model_config)


def quantization_config(model_config):
    if not (model_config.load_in_4bit or model_config.load_in_8bit):
        return None
    from grpolab.accel import bitsandbytes_config

    return bitsandbytes_config(model_config)


def preflight(train_args: TrainArgs, grpo_config, model_config) -> None:
    """Fail in one line, before any data or weights load, when a GPU-only path cannot run here."""
    from grpolab import accel

    if getattr(grpo_config, "use_vllm", False):
        accel.require_package("vllm", "use_vllm", "vllm")
    if train_args.use_unsloth:
        accel.require_package("unsloth", "use_unsloth", "gpu")
        accel.require_cuda("use_unsloth")
    if model_config.load_in_4bit or model_config.load_in_8bit:
        feature = "load_in_4bit" if model_config.load_in_4bit else "load_in_8bit"
        accel.require_package("bitsandbytes", feature, "gpu")
        accel.require_cuda(feature)


def build_trainer(train_args: TrainArgs, grpo_config, model_config, callbacks=()):
    from grpolab.callbacks import ProgressLine, RunLogger
    from grpolab.fast_grpo import trainer_class

    preflight(train_args, grpo_config, model_config)
    task = get_task(train_args.task)
    dataset = load_task_data(task, train_args, grpo_config.seed)
    recorder = SampleRecorder()
    reward_funcs, weights = select_rewards(task, train_args.reward_funcs, grpo_config.reward_weights, recorder)
    grpo_config.reward_weights = weights
    model, tokenizer, lora = load_model(train_args, model_config)
    logger_callback = RunLogger(grpo_config.output_dir, recorder, train_args.num_samples_logged,
                                train_args.plot, title=f"GRPO on {task.name}: {model_config.model_name_or_path}")
    trainer_type = trainer_class(train_args.logprobs, grpo_config.device.type)
    trainer = trainer_type(model=model, reward_funcs=reward_funcs, args=grpo_config, train_dataset=dataset,
                           processing_class=tokenizer, peft_config=lora,
                           callbacks=[logger_callback, *callbacks])
    _use_progress_line(trainer, ProgressLine())
    return trainer


def _use_progress_line(trainer, progress) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress)


def save_run_info(output_dir: Path, train_args: TrainArgs, grpo_config, model_config) -> None:
    """The resolved config (YAML, re-usable as --config) and what identifies the run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = {**asdict(train_args), **_public(grpo_config.to_dict()), **asdict(model_config)}
    resolved.pop("resume", None)
    resolved.pop("dry_run", None)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(_yaml_safe(resolved), sort_keys=True))
    info = {"identity": run_identity(train_args, model_config), "task": train_args.task,
            "base_model": model_config.model_name_or_path, "task_options": train_args.task_options,
            "recipe": getattr(grpo_config, "grpolab_recipe", None)}
    (output_dir / checkpoints.RUN_INFO).write_text(json.dumps(info, indent=2))


# Fields the trainer config derives from others; writing them back would make the saved recipe contradict
# itself (TRL refuses generation_batch_size together with steps_per_generation).
_DERIVED = ("generation_batch_size", "gradient_checkpointing", "gradient_checkpointing_kwargs", "grpolab_recipe")


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


def train(train_args: TrainArgs, grpo_config, model_config) -> Path:
    """Train and save the adapter; returns the run directory."""
    output_dir = Path(grpo_config.output_dir)
    resume_from = checkpoints.resolve_resume(train_args.resume, output_dir)
    if resume_from:
        checkpoints.check_same_run(output_dir, run_identity(train_args, model_config))
    elif (output_dir / "metrics.jsonl").exists():
        raise UserError(f"{output_dir} already holds a run: add --resume to continue it, or choose another --output_dir")
    if train_args.torch_threads:
        import torch

        torch.set_num_threads(train_args.torch_threads)
    trainer = build_trainer(train_args, grpo_config, model_config)
    if trainer.is_world_process_zero():
        save_run_info(output_dir, train_args, grpo_config, model_config)
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(output_dir))
    close_process_group()
    return output_dir


def close_process_group() -> None:
    """End a multi-process run cleanly: without it gloo aborts at exit now and then ("terminate called
    without an active exception", about 1 run in 6 here), failing a run that trained fine."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
