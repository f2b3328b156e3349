"""What a task is: data, prompt, answer parsing, one scorer, and the rewards built on that scorer.

A task module builds one ``Task``. Its ``score`` function is the single source of truth: training
rewards call it, evaluation reports it, and chat shows it, so the number you train on and the number you
report cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """The scorer's judgement of one completion.

    solved:   strict correctness, the number reported as accuracy.
    parsed:   canonical text of the extracted answer, or None when nothing could be parsed.
    partial:  partial credit in [0, 1] (1.0 when solved).
    format_ok: the answer was given where the prompt asks for it (e.g. inside <answer> tags).
    lenient:  a looser correctness check where the task has one (e.g. last number in the text).
    """

    solved: bool
    parsed: str | None
    partial: float = 0.0
    format_ok: bool = False
    lenient: bool | None = None


RewardFunction = Callable[..., list[float]]

# Graders of numbers (arith, gsm8k) read only a completion's last MAX_GRADED_CHARS characters. They look
# for the *last* answer marker or number, so this changes nothing for a reply that ends with its answer,
# and it bounds a score() call to a few ms whatever the input (100 kB of "A: x" lines took 190 ms in the
# GSM8K grader, each line a marker to try). 10,000 characters are about 2,500 tokens.
MAX_GRADED_CHARS = 10_000


@dataclass(frozen=True)
class Task:
    """A task: how to load rows, how to prompt, how to score, and which rewards train it.

    load(split, data_file, num, seed, **options) -> datasets.Dataset with at least the columns
        ``prompt`` (list of chat messages), ``answer`` (str) and ``label`` (str, e.g. a difficulty).
    score(completion, row) -> Verdict, where row holds the dataset columns of that item.
    rewards: the task's reward functions by name (the name is the logged metric key).
    default_rewards / default_weights: what training uses when the recipe does not say.
    reference(row) -> str: an ideal reply, for supervised warm-up; None when the task has none.
    """

    name: str
    description: str
    load: Callable[..., Any]
    score: Callable[[str, Mapping[str, Any]], Verdict]
    rewards: Mapping[str, RewardFunction]
    default_rewards: Sequence[str]
    default_weights: Sequence[float]
    options: Mapping[str, str] = field(default_factory=dict)  # extra load() options and their help
    # The reply a perfect model would give for a row: the target of the supervised warm-up (grpolab sft).
    reference: Callable[[Mapping[str, Any]], str] | None = None
    # Other named correctness checks, (completion, row) -> bool, that eval reports beside strict and lenient
    # with an interval each (e.g. lm-evaluation-harness's GSM8K filters, for published numbers).
    checks: Mapping[str, Callable[[str, Mapping[str, Any]], bool]] = field(default_factory=dict)


def completion_text(completion: Any) -> str:
    """Text of one completion as TRL passes it: a string, or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content") or "")
    if isinstance(completion, list) and not completion:
        return ""
    raise TypeError(f"unexpected completion type {type(completion).__name__}")


def rows_from_kwargs(count: int, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rebuild per-item rows from the column lists TRL passes to reward functions."""
    columns = {key: value for key, value in kwargs.items() if isinstance(value, list) and len(value) == count}
    return [{key: value[index] for key, value in columns.items()} for index in range(count)]
