"""Choosing reward functions and guarding them.

Reward functions come from the task (by name) or from user code (``package.module:function``). Each is
wrapped so that a reward which raises, returns the wrong number of values, or returns NaN stops training
with an error naming the function: a crashing reward must never look like a model that scores 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

from grpolab.errors import RewardFunctionError, UserError
from grpolab.tasks import import_object
from grpolab.tasks.base import Task


def resolve_reward(name: str, task: Task) -> Callable[..., list[float]]:
    if name in task.rewards:
        return task.rewards[name]
    if ":" in name:
        function = import_object(name, "reward function")
        if not callable(function):
            raise UserError(f"reward '{name}' is not callable")
        return function
    raise UserError(
        f"unknown reward '{name}' for task {task.name}: choose from {', '.join(task.rewards)} "
        f"or give 'package.module:function'"
    )


def select_rewards(task: Task, names: Sequence[str] | None, weights: Sequence[float] | None,
                   recorder: SampleRecorder | None = None):
    """(guarded functions, weights) for the recipe; the task's defaults where the recipe says nothing."""
    names = list(names or task.default_rewards)
    if weights is None and not names_given(names, task):
        weights = list(task.default_weights)
    if weights is not None and len(weights) != len(names):
        raise UserError(f"reward_weights has {len(weights)} values but there are {len(names)} reward functions ({', '.join(names)})")
    return [guard(resolve_reward(name, task), recorder) for name in names], (list(weights) if weights is not None else None)


def names_given(names: Sequence[str], task: Task) -> bool:
    return list(names) != list(task.default_rewards)


class SampleRecorder:
    """Keeps the latest batch of completions and their rewards, for samples.jsonl."""

    def __init__(self) -> None:
        self.completions: list = []
        self.rewards: dict[str, list] = {}
        self.answers: list = []

    def record(self, name: str, completions: list, values: list, kwargs: dict) -> None:
        if completions is not self.completions:
            self.completions, self.rewards = completions, {}
            self.answers = list(kwargs.get("answer") or [])
        self.rewards[name] = list(values)

    def take(self, limit: int) -> list[dict]:
        from grpolab.tasks.base import completion_text

        rows = []
        for index, completion in enumerate(self.completions[:limit]):
            row = {"completion": completion_text(completion),
                   "rewards": {name: values[index] for name, values in self.rewards.items()}}
            if index < len(self.answers):
                row["answer"] = self.answers[index]
            rows.append(row)
        self.completions, self.rewards = [], {}
        return rows


def guard(function: Callable[..., list[float]], recorder: SampleRecorder | None = None) -> Callable[..., list[float]]:
    """Wrap a reward function so bad output fails loudly with its name; keeps ``__name__`` for logging."""

    @functools.wraps(function)
    def guarded(prompts=None, completions=None, **kwargs):
        name = getattr(function, "__name__", repr(function))
        try:
            values = function(prompts=prompts, completions=completions, **kwargs)
        except Exception as error:
            raise RewardFunctionError(f"reward function '{name}' raised {type(error).__name__}: {error}") from error
        check_values(name, values, len(completions))
        if recorder is not None:
            recorder.record(name, completions, values, kwargs)
        return values

    return guarded


def check_values(name: str, values, expected: int) -> None:
    if not isinstance(values, (list, tuple)):
        raise RewardFunctionError(f"reward function '{name}' returned {type(values).__name__}, expected a list of floats")
    if len(values) != expected:
        raise RewardFunctionError(f"reward function '{name}' returned {len(values)} values for {expected} completions")
    for value in values:
        if value is None:
            continue  # TRL's convention: None means "not applicable to this sample"
        if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
            raise RewardFunctionError(f"reward function '{name}' returned {value!r}; rewards must be finite numbers or None")
