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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from grpolab import models, placement
from grpolab.tasks import Task, get_task
from grpolab.training import checkpoints
from grpolab.training.args import TrainArgs, context_length
from grpolab.training.rewards import SampleRecorder, select_rewards

logger = logging.getLogger(__name__)


def run_identity(train_args: TrainArgs, model_config) -> dict[str, Any]:
    """What must not change between a run and its resume."""
    return {"model": model_config.model_name_or_path, "task": train_args.task}


def load_task_data(task: Task, train_args: TrainArgs, seed: int):
    return task.load_dataset(
        "train", train_args.data_file, train_args.num_train, seed, train_args.task_options
    )


def placement_for(train_args: TrainArgs, trainer_config, model_config) -> placement.Placement:
    """Where the policy loads: the local rank's device, in the recipe's dtype (auto: see
    grpolab.placement)."""
    quantization = "4bit" if model_config.load_in_4bit else "8bit" if model_config.load_in_8bit else None
    full_finetune = not (model_config.use_peft or train_args.init_adapter or train_args.use_unsloth)
    return placement.decide(
        placement.detect(), "train", model_config.dtype, quantization, full_finetune=full_finetune
    )


def model_arguments(train_args: TrainArgs, trainer_config, model_config) -> dict[str, Any]:
    """``model``, ``processing_class``, ``quantization_config`` and ``peft_config`` for GRPO/SFTTrainer.

    As trl/scripts/grpo.py does, the model goes to TRL as a path, loaded with ``model_init_kwargs``
    (revision, remote code, attention, dtype, device_map; a recipe's own ``model_init_kwargs`` win), and TRL
    builds the 4-bit/8-bit and LoRA configs from ModelConfig. grpolab loads the model itself only to continue
    an adapter (``init_adapter``) or through Unsloth.
    """
    from trl import get_peft_config

    source = models.resolve(model_config.model_name_or_path)
    options = models.load_options(
        {**asdict(model_config), "trust_remote_code": trainer_config.trust_remote_code}
    )
    tokenizer = models.load_tokenizer(
        source, revision=options["revision"], trust_remote_code=options["trust_remote_code"]
    )
    tokenizer = tool_tokenizer(tokenizer, train_args, model_config.model_name_or_path)
    place = placement_for(train_args, trainer_config, model_config)
    logger.info("Loading %s on %s ...", model_config.model_name_or_path, place.describe())
    if train_args.use_unsloth:
        from grpolab.training.quantization import load_unsloth

        model = load_unsloth(source, model_config, trainer_config, context_length(train_args, trainer_config))
        return {"model": model, "processing_class": tokenizer}
    init_kwargs = {
        **options,
        "dtype": place.dtype,
        "device_map": place.device_map,
        **(trainer_config.model_init_kwargs or {}),
    }
    quantization = quantization_config(model_config, place)
    if train_args.init_adapter:
        from peft import PeftModel

        models.check_adapter_base(train_args.init_adapter, model_config.model_name_or_path)
        models.check_adapter_weights(train_args.init_adapter)
        base = models.load_causal_lm(source, quantization_config=quantization, **init_kwargs)
        model = PeftModel.from_pretrained(base, train_args.init_adapter, is_trainable=True)
        return {"model": model, "processing_class": tokenizer}
    # The recipe's own model_init_kwargs are kept apart, so that the saved config does not pin this machine's
    # placement on a resume elsewhere.
    trainer_config.grpolab_recipe_init_kwargs = trainer_config.model_init_kwargs
    trainer_config.model_init_kwargs = init_kwargs
    return {
        "model": source,
        "processing_class": tokenizer,
        "quantization_config": quantization,
        "peft_config": get_peft_config(model_config),
    }


# ------------------------------------------------------------------------------------- tools (issue 28)
def uses_tools(task: Task, train_args: TrainArgs) -> bool:
    return bool(task.tools or task.environment_factory or train_args.tools)


def run_tools(task: Task, train_args: TrainArgs) -> list:
    """The task's tools and the recipe's, each with the per-call timeout and text check (grpolab.tools)."""
    from grpolab.tools import guarded, load_tools

    return [guarded(tool, train_args.tool_timeout) for tool in (*task.tools, *load_tools(train_args.tools))]


def tool_tokenizer(tokenizer, train_args: TrainArgs, model_name: str):
    """The tokenizer with the tool chat template and TRL's response parser, for a run that uses tools."""
    from grpolab.tools import prepare_tokenizer

    task = get_task(train_args.task)
    if not uses_tools(task, train_args):
        return tokenizer
    return prepare_tokenizer(tokenizer, train_args.chat_template or task.chat_template, model_name)


def quantization_config(model_config, place: placement.Placement):
    """TRL's BitsAndBytesConfig (None without 4-bit/8-bit), computing in the placement's dtype. Storing the
    packed 4-bit weights in that dtype too lets DeepSpeed ZeRO-3 and FSDP shard them with the rest."""
    from trl import get_quantization_config

    storage = model_config.bnb_4bit_quant_storage or place.dtype
    return get_quantization_config(replace(model_config, dtype=place.dtype, bnb_4bit_quant_storage=storage))


def preflight(train_args: TrainArgs, grpo_config, model_config) -> None:
    """Fail in one line, before any data or weights load, when a GPU-only path cannot run here."""
    from grpolab.training import quantization

    if getattr(grpo_config, "use_vllm", False):
        quantization.require_package("vllm", "use_vllm", "vllm")
    if train_args.use_unsloth:
        quantization.require_package("unsloth", "use_unsloth", "unsloth")
        quantization.require_cuda("use_unsloth")
    if model_config.load_in_4bit or model_config.load_in_8bit:
        feature = "load_in_4bit" if model_config.load_in_4bit else "load_in_8bit"
        quantization.require_package("bitsandbytes", feature, "gpu")
    placement_for(train_args, grpo_config, model_config)  # refuses 4-bit/8-bit off CUDA, a bad dtype


def build_trainer(train_args: TrainArgs, grpo_config, model_config, callbacks=()):
    from grpolab.training.callbacks import ProgressLine, RunLogger, SamplingCheck
    from grpolab.training.fast_grpo import generation_path, trainer_class

    preflight(train_args, grpo_config, model_config)
    task = get_task(train_args.task)
    dataset = load_task_data(task, train_args, grpo_config.seed)
    recorder = SampleRecorder()
    reward_funcs, weights = select_rewards(
        task, train_args.reward_funcs, grpo_config.reward_weights, recorder, train_args.reward_timeout
    )
    grpo_config.reward_weights = weights
    model_kwargs = model_arguments(train_args, grpo_config, model_config)
    logger_callback = RunLogger(
        grpo_config.output_dir,
        recorder,
        train_args.num_samples_logged,
        train_args.plot,
        title=f"GRPO on {task.name}: {model_config.model_name_or_path}",
    )
    logprobs, generation = train_args.logprobs, train_args.generation
    tool_kwargs = {}
    if uses_tools(task, train_args):
        tool_kwargs = {"tools": run_tools(task, train_args) or None,
                       "environment_factory": task.environment_factory}
        logprobs, generation = fast_paths_for_tools(logprobs, generation)
    trainer_type = trainer_class(logprobs, grpo_config.device.type)
    trainer = trainer_type(
        **model_kwargs,
        reward_funcs=reward_funcs,
        args=grpo_config,
        train_dataset=dataset,
        callbacks=[logger_callback, SamplingCheck(), *callbacks],
        **tool_kwargs,
    )
    trainer.generation_mode = generation_path(generation, grpo_config.device.type)
    use_progress_line(trainer, ProgressLine())
    return trainer


def fast_paths_for_tools(logprobs: str, generation: str) -> tuple[str, str]:
    """TRL's own log-prob and generation paths for a tool run: grpolab's shared-prompt paths are tested on
    single-turn completions only, and a multi-turn completion holds tool results (TRL's tool mask)."""
    if (logprobs, generation) != ("fused", "trl"):
        logger.info("tools in use: grpolab's CPU fast paths are off (--logprobs fused, --generation trl); "
                    "multi-turn completions go through TRL's own log-probs and generation")
    return "fused", "trl"


def use_progress_line(trainer, progress) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress)


def save_run_info(output_dir: Path, train_args: TrainArgs, grpo_config, model_config) -> None:
    """The resolved config (YAML, re-usable as --config) and what identifies the run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = {**asdict(train_args), **_public(grpo_config.to_dict()), **asdict(model_config)}
    resolved["model_init_kwargs"] = getattr(
        grpo_config, "grpolab_recipe_init_kwargs", grpo_config.model_init_kwargs
    )
    resolved.pop("resume", None)
    resolved.pop("dry_run", None)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(_yaml_safe(resolved), sort_keys=True))
    info = {
        "identity": run_identity(train_args, model_config),
        "task": train_args.task,
        "base_model": model_config.model_name_or_path,
        "task_options": train_args.task_options,
        "recipe": getattr(grpo_config, "grpolab_recipe", None),
    }
    (output_dir / checkpoints.RUN_INFO).write_text(json.dumps(info, indent=2))


# Fields the trainer config derives from others; writing them back would make the saved recipe contradict
# itself (TRL refuses generation_batch_size together with steps_per_generation).
_DERIVED = (
    "generation_batch_size",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "grpolab_recipe",
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


def train(train_args: TrainArgs, grpo_config, model_config) -> Path:
    """Train and save the adapter; returns the run directory."""
    return run_trainer(train_args, grpo_config, model_config, build_trainer)


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
        if trainer.is_world_process_zero():
            save_run_info(output_dir, train_args, trainer_config, model_config)
        trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model(str(output_dir))
        if trainer.is_world_process_zero():
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
