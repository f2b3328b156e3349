"""What a GRPO or SFT run with tools needs from TRL: the guarded tools, the tool chat template, and TRL's
own log-prob and generation paths for multi-turn completions."""

from __future__ import annotations

import logging

from grpolab.tasks import Task, get_task
from grpolab.training.args import TrainArgs

logger = logging.getLogger(__name__)


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


def fast_paths_for_tools(logprobs: str, generation: str) -> tuple[str, str]:
    """TRL's own log-prob and generation paths for a tool run: grpolab's shared-prompt paths are tested on
    single-turn completions only, and a multi-turn completion holds tool results (TRL's tool mask)."""
    if (logprobs, generation) != ("fused", "trl"):
        logger.info("tools in use: grpolab's CPU fast paths are off (--logprobs fused, --generation trl); "
                    "multi-turn completions go through TRL's own log-probs and generation")
    return "fused", "trl"
