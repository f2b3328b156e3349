"""What a run needs besides weights, checked before any model loads: by ``--dry_run`` and by every run.

Task name, reward functions, the data file read through the task's own reader, the output directory and
the accelerate config are all cheap to check, so a mistake in any of them is one line naming the flag
and the fix instead of a traceback after minutes of model loading.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from grpolab.errors import UserError
from grpolab.tasks import Task, get_task
from grpolab.training.args import TrainArgs


def check_run(train_args, trainer_config, model_config, command: str = "train") -> list[str]:
    """Validate everything but the weights; returns plan lines saying what was checked."""
    task = get_task(train_args.task)
    lines = [check_rewards(task, train_args, trainer_config) if command == "train" else check_reference(task)]
    lines.append(check_data(task, train_args, trainer_config.seed, reference=command != "train"))
    if task.tools or task.environment_factory or train_args.tools:
        lines.append(check_tools(task, train_args))
    check_output_dir(Path(trainer_config.output_dir), train_args.resume)
    if train_args.init_adapter:
        from grpolab import models

        models.check_adapter_base(train_args.init_adapter, model_config.model_name_or_path)
        from grpolab import rundir

        rundir.check_adapter_weights(train_args.init_adapter)
        check_init_adapter(Path(train_args.init_adapter))
        lines.append(f"init adapter     {train_args.init_adapter} (trained on this base model)")
    if train_args.accelerate_config:
        lines.append(check_accelerate(train_args.accelerate_config))
    if train_args.accelerate_config or train_args.num_machines is not None:
        from grpolab.training import multinode
        from grpolab.training.distributed import inside_launch

        # the head node's port is bound by the rendezvous itself once launched: check it only before
        lines += multinode.check_world(train_args, trainer_config, command, bind=not inside_launch())
    return lines


def check_init_adapter(directory: Path) -> None:
    """``--init_adapter`` must hold a LoRA adapter: a full model (a run without use_peft) is a base model."""
    if directory.is_dir() and not (directory / "adapter_config.json").is_file():
        full_model = (directory / "config.json").is_file()
        hint = ("it holds a full model (trained without use_peft): pass it as --model_name_or_path, or train "
                "the warm-up with use_peft: true") if full_model else "point it at a grpolab sft or train run"
        raise UserError(f"--init_adapter {directory} holds no LoRA adapter (no adapter_config.json): {hint}")


def check_tools(task: Task, train_args) -> str:
    """The recipe's tools import, and the chat template named (if any) can be read; the model's own template
    is checked when the tokenizer loads (no download in a dry run)."""
    from grpolab.tools import load_tools, template_text

    tools = [*task.tools, *load_tools(train_args.tools)]
    template = train_args.chat_template or task.chat_template
    if template:
        template_text(template)
    names = ", ".join(tool.__name__ for tool in tools) or "none"
    environment = f"; environment {task.environment_factory.__name__}" if task.environment_factory else ""
    shown = template or "the model's own"
    return f"tools            {names}{environment}; chat template {shown}"


def check_rewards(task: Task, train_args, grpo_config) -> str:
    """Every reward function resolves (task names, user imports) and the weights match them."""
    from grpolab.training.rewards import select_rewards

    functions, weights = select_rewards(task, train_args.reward_funcs, grpo_config.reward_weights)
    names = [function.__name__ for function in functions]
    shown = ", ".join(f"{name} x{weight:g}" for name, weight in zip(names, weights, strict=True)) if weights \
        else ", ".join(names)
    return f"rewards          {shown}"


def check_reference(task: Task) -> str:
    if task.reference is None:
        raise UserError(
            f"task {task.name} has no reference replies, so it cannot be used for a supervised warm-up"
        )
    return f"targets          the {task.name} task's reference replies"


def check_data(task: Task, train_args, seed: int, reference: bool = False) -> str:
    """Reads the training rows through the task's own loader (hub data is named, not fetched); with
    ``reference``, the first row's reference reply is built too (a task may have none for its rows)."""
    if train_args.data_file is None and "hub_id" in task.options:
        hub_id = train_args.task_options.get("hub_id", "the task's default")
        return f"data             {hub_id} from the Hugging Face hub (not fetched by a dry run)"
    dataset = load_task_data(task, train_args, seed)
    source = train_args.data_file or "the task's generator"
    if len(dataset) == 0:
        raise UserError(
            f"no training rows for task {task.name} in {source}: check --data_file and --num_train"
        )
    missing = [column for column in ("prompt", "answer") if column not in dataset.column_names]
    if missing:
        raise UserError(
            f"task {task.name} gave rows without a '{missing[0]}' column: its load() is incomplete"
        )
    if reference:
        task.reference(dataset[0])
    return f"data             {len(dataset)} rows from {source}"


def check_output_dir(output_dir: Path, resume: str | None) -> None:
    """The output directory can be written, and is not a finished or started run unless resuming."""
    from grpolab.training import checkpoints

    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"--output_dir {output_dir}: {existing} is a file, not a folder; choose another --output_dir"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--output_dir {output_dir}: {existing} is not writable; choose another --output_dir")
    if resume:
        checkpoints.resolve_resume(resume, output_dir)
    elif checkpoints.holds_run(output_dir):
        raise UserError(
            f"{output_dir} already holds a run: add --resume to continue it, or choose another --output_dir"
        )


def check_accelerate(name: str) -> str:
    """The accelerate config exists and is a YAML mapping; a missing backend is a note, not an error."""
    from grpolab.training import distributed

    path = distributed.accelerate_config_path(name)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"--accelerate_config {name}: cannot read {path} ({error})") from None
    if not isinstance(config, dict):
        raise UserError(f"--accelerate_config {name}: {path} is not a YAML mapping of accelerate settings")
    try:
        distributed.check_backend(name)
    except UserError as error:
        return f"accelerate       {path} (note: {error})"
    return f"accelerate       {path}"


def load_task_data(task: Task, train_args: TrainArgs, seed: int):
    return task.load_dataset(
        "train", train_args.data_file, train_args.num_train, seed, train_args.task_options
    )


def preflight(train_args: TrainArgs, grpo_config, model_config) -> None:
    """Fail in one line, before any data or weights load, when a GPU-only path cannot run here."""
    import torch

    from grpolab.training import gpu_extras, gpu_preflight
    from grpolab.training.distributed import inside_launch

    gpu_preflight.refuse_data_parallel(torch, inside_launch())
    gpu_preflight.require_wandb(getattr(grpo_config, "report_to", None))
    if getattr(grpo_config, "use_vllm", False):
        gpu_extras.require_package("vllm", "use_vllm", "vllm")
    if train_args.use_unsloth:
        gpu_extras.require_package("unsloth", "use_unsloth", "unsloth")
        gpu_extras.require_cuda("use_unsloth")
    if model_config.load_in_4bit or model_config.load_in_8bit:
        feature = "load_in_4bit" if model_config.load_in_4bit else "load_in_8bit"
        gpu_extras.require_package("bitsandbytes", feature, "gpu")
    from grpolab.training.model import placement_for

    placement_for(train_args, grpo_config, model_config)  # refuses 4-bit/8-bit off CUDA, a bad dtype
