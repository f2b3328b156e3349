"""Supervised warm-up with TRL's SFTTrainer: teach the answer format before GRPO.

GRPO learns from differences between a prompt's completions; when a small model never produces the
answer format (SmolLM2-135M on Sudoku), every reward is 0 and there is nothing to learn from. A short
warm-up on the task's reference replies gives GRPO a starting point. The loss is on the reply tokens
only (prompt-completion data).
"""

from __future__ import annotations

from pathlib import Path

from grpolab.errors import UserError
from grpolab.tasks import get_task
from grpolab.training import checkpoints, grpo


def reference_dataset(train_args, seed: int):
    task = get_task(train_args.task)
    if task.reference is None:
        raise UserError(f"task {task.name} has no reference replies, so it cannot be used for a supervised warm-up")
    dataset = grpo.load_task_data(task, train_args, seed)
    return dataset.map(lambda row: {"completion": [{"role": "assistant", "content": task.reference(row)}]})


def sft(train_args, sft_config, model_config) -> Path:
    from trl import SFTTrainer

    output_dir = Path(sft_config.output_dir)
    resume_from = grpo.prepare_output_dir(output_dir, train_args, model_config)
    with checkpoints.fresh_run(output_dir, resume_from):
        dataset = reference_dataset(train_args, sft_config.seed)
        grpo.preflight(train_args, sft_config, model_config)
        model_kwargs = grpo.model_arguments(train_args, sft_config, model_config)
        trainer = SFTTrainer(**model_kwargs, args=sft_config, train_dataset=dataset)
        if trainer.is_world_process_zero():
            grpo.save_run_info(output_dir, train_args, sft_config, model_config)
        trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model(str(output_dir))
    return output_dir
