"""Choosing reward functions and guarding them.

Reward functions come from the task (by name) or from user code (``package.module:function``). Each is
wrapped so that a reward which raises, runs past ``reward_timeout`` seconds, returns the wrong number of
values, or returns NaN stops training with an error naming the function: a crashing reward must never
look like a model that scores 0. A user's function failing is a one-line error (exit 2); a task's own
reward failing is a bug of ours, shown with its traceback.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from grpolab.errors import RewardFunctionError, UserError, UserRewardError
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
                   recorder: SampleRecorder | None = None, timeout: float = 0.0):
    """(guarded functions, weights) for the recipe; the task's defaults where the recipe says nothing."""
    names = list(names or task.default_rewards)
    if weights is None and not names_given(names, task):
        weights = list(task.default_weights)
    if weights is not None and len(weights) != len(names):
        raise UserError(
            f"reward_weights has {len(weights)} values but there are {len(names)} reward functions "
            f"({', '.join(names)})"
        )
    functions = [
        guard(resolve_reward(name, task), recorder, timeout, user_code=name not in task.rewards)
        for name in names
    ]
    return functions, (list(weights) if weights is not None else None)


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
            row = {
                "completion": completion_text(completion),
                "rewards": {name: values[index] for name, values in self.rewards.items()},
            }
            if index < len(self.answers):
                row["answer"] = self.answers[index]
            if isinstance(completion, list) and len(completion) > 1:
                row["messages"] = completion  # a multi-turn episode: every call, result and reply
            rows.append(row)
        self.completions, self.rewards = [], {}
        return rows


class RewardTimeout(BaseException):
    """Raised inside a reward function past its time limit; a BaseException so that a broad
    ``except Exception`` in the function cannot swallow it."""


def guard(
    function: Callable[..., list[float]],
    recorder: SampleRecorder | None = None,
    timeout: float = 0.0,
    user_code: bool = False,
) -> Callable[..., list[float]]:
    """Wrap a reward function so bad output fails loudly with its name; keeps ``__name__`` for logging.

    ``timeout`` (seconds, 0 = none) limits each call; ``user_code`` makes failures one-line user errors.
    """
    error_type = UserRewardError if user_code else RewardFunctionError

    @functools.wraps(function)
    def guarded(prompts=None, completions=None, **kwargs):
        name = getattr(function, "__name__", repr(function))
        try:
            values = call_with_timeout(function, timeout, prompts=prompts, completions=completions, **kwargs)
        except RewardTimeout:
            raise error_type(
                f"reward function '{name}' ran longer than reward_timeout ({timeout:g} s) on "
                f"{len(completions)} "
                "completions; make it faster or raise --reward_timeout (0 turns the limit off)"
            ) from None
        except Exception as error:
            fix = "; fix the function (--debug shows its traceback)" if user_code else ""
            message = " ".join(f"reward function '{name}' raised {type(error).__name__}: {error}".split())
            raise error_type(message + fix) from error
        check_values(name, values, len(completions), error_type)
        if recorder is not None:
            recorder.record(name, completions, values, kwargs)
        return values

    return guarded


def call_with_timeout(function: Callable[..., Any], timeout: float, **kwargs: Any) -> Any:
    """``function(**kwargs)``, raising RewardTimeout inside it after ``timeout`` seconds (0 = no limit).

    On the main thread (where TRL calls rewards) a SIGALRM timer interrupts the function itself. Elsewhere
    signals cannot be used, so the call runs in a daemon thread that is abandoned when time is up.
    """
    if timeout <= 0:
        return function(**kwargs)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _call_with_alarm(function, timeout, kwargs)
    return _call_in_thread(function, timeout, kwargs)


def _raise_timeout(signum, frame):
    raise RewardTimeout


def _call_with_alarm(function: Callable[..., Any], timeout: float, kwargs: dict) -> Any:
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return function(**kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_in_thread(function: Callable[..., Any], timeout: float, kwargs: dict) -> Any:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["values"] = function(**kwargs)
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=run, name="reward-function", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise RewardTimeout
    if "error" in outcome:
        raise outcome["error"]
    return outcome["values"]


def check_values(name: str, values, expected: int, error_type: type[Exception] = RewardFunctionError) -> None:
    if not isinstance(values, (list, tuple)):
        raise error_type(
            f"reward function '{name}' returned {type(values).__name__}, expected a list of floats"
        )
    if len(values) != expected:
        raise error_type(f"reward function '{name}' returned {len(values)} values for {expected} completions")
    for value in values:
        if value is None:
            continue  # TRL's convention: None means "not applicable to this sample"
        if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
            raise error_type(
                f"reward function '{name}' returned {value!r}; rewards must be finite numbers or None"
            )
