"""What a GRPO or SFT run with tools needs from TRL: the guarded tools and the tool chat template.

grpolab's CPU fast paths (training/grpo_trainer.py) stay on: a multi-turn completion is token ids after a
shared prompt like any other, TRL's tool_mask keeps the tool results out of the loss after the log-probs,
and the turn after a result is a plain generate call (tests/test_tool_fast_paths.py checks log-probs, loss,
gradients and samples against TRL's own methods on a batch from TRL's tool loop)."""

from __future__ import annotations

from grpolab.errors import UserError
from grpolab.tasks import Task, get_task
from grpolab.training.args import TrainArgs


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


def check_episode_budget(task: Task, tokenizer, row, max_completion_length: int) -> None:
    """A UserError when ``max_completion_length`` cannot hold the task's reference episode (call, result,
    answer) for ``row``: TRL drops a tool result that would not fit, so every episode would end on the call
    and score 0 without a word of warning."""
    if task.reference_episode is None or not max_completion_length:
        return
    prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                           return_dict=False)
    whole = tokenizer.apply_chat_template([*row["prompt"], *task.reference_episode(row)], tokenize=True,
                                          return_dict=False)
    needed = len(whole) - len(prompt)
    if needed > max_completion_length:
        raise UserError(
            f"max_completion_length {max_completion_length} cannot hold a {task.name} episode ({needed} "
            f"tokens for the call, its result and the answer): set --max_completion_length "
            f"{needed * 3 // 2} or more")
