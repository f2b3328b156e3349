"""GRPO training: TRL's GRPOTrainer with a PEFT LoRA adapter, used through its public surface.

The algorithm's choices are TRL's and are set in the recipe, not here: the loss type (TRL's default
``dapo`` normalises the clipped surrogate by the number of tokens in the batch), ``beta`` (KL penalty to
the reference model; 0 by default, so no reference model is kept), ``epsilon`` (PPO-style clipping of
the importance ratio) and ``scale_rewards`` (advantages are rewards minus the group mean, divided by
the group's standard deviation with ``group``). Several rewards are summed with ``reward_weights``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from grpolab.tasks import get_task
from grpolab.training.args import TrainArgs
from grpolab.training.checks import load_task_data, preflight
from grpolab.training.model import model_arguments
from grpolab.training.rewards import SampleRecorder, select_rewards
from grpolab.training.run import run_trainer, use_progress_line
from grpolab.training.tool_use import check_episode_budget, run_tools, uses_tools

logger = logging.getLogger(__name__)


def build_trainer(train_args: TrainArgs, grpo_config, model_config, callbacks=()):
    from grpolab.training.callbacks import ProgressLine, RunLogger, SamplingCheck
    from grpolab.training.grpo_trainer import generation_path, trainer_class

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
    tool_kwargs = {}
    if uses_tools(task, train_args):
        tokenizer = model_kwargs["processing_class"]
        check_episode_budget(task, tokenizer, dataset[0], grpo_config.max_completion_length)
        tool_kwargs = {"tools": run_tools(task, train_args) or None,
                       "environment_factory": task.environment_factory}
    trainer_type = trainer_class(train_args.logprobs, grpo_config.device.type)
    trainer = trainer_type(
        **model_kwargs,
        reward_funcs=reward_funcs,
        args=grpo_config,
        train_dataset=dataset,
        callbacks=[logger_callback, SamplingCheck(), *callbacks],
        **tool_kwargs,
    )
    trainer.generation_mode = generation_path(train_args.generation, grpo_config.device.type)
    use_progress_line(trainer, ProgressLine())
    return trainer


def train(train_args: TrainArgs, grpo_config, model_config) -> Path:
    """Train and save the adapter; returns the run directory."""
    return run_trainer(train_args, grpo_config, model_config, build_trainer)


