"""Generation settings: one definition for eval, chat, probe and ``/set``, each with its help and its rule.

Torch-free, so that command parsers and chat's session import it without loading a model library. A
field's metadata holds its help, the rule a value must meet and the words that say so; the command-line
flags, chat's ``/set`` and its help all read them from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

# Tokens reserved for the prompt when the context is derived from max_completion_length. TRL 1.16 has no
# max_prompt_length (prompts are never cut); the longest built-in prompts are ~210 tokens (GSM8K) and
# ~170 (Sudoku 4x4) with the SmolLM2 tokenizer, so 512 leaves room for longer system prompts.
PROMPT_BUDGET = 512
DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class GenerationSettings:
    """How completions are sampled; ValueError (naming the flag) for a value its rule (``RULES``) refuses."""

    max_new_tokens: int = field(default=DEFAULT_MAX_NEW_TOKENS, metadata={"help": (
        "most new tokens per completion (default: the run's max_completion_length for a training run or a "
        f"model merged from one, else {DEFAULT_MAX_NEW_TOKENS})")})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 = greedy"})
    top_p: float = field(default=1.0, metadata={
        "help": "nucleus sampling: keep the smallest token set with this much probability"})
    top_k: int = field(default=0, metadata={"help": "sample from the k most likely tokens; 0 = off"})
    repetition_penalty: float = field(default=1.0, metadata={"help": "penalty for repeating tokens; 1 = off"})

    def __post_init__(self) -> None:
        check_settings(self, RULES)

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def to_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                  "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


SETTINGS = {spec.name: spec for spec in fields(GenerationSettings)}
# name: (what a value must be, in words; the rule). The one place a setting's limits are written: flags,
# /set and every config that takes a setting (eval's, probe's) check them here.
RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "max_new_tokens": ("a whole number of at least 1", lambda value: value >= 1),
    "temperature": ("a number >= 0 (0 = greedy)", lambda value: value >= 0),
    "top_p": ("a number above 0 and at most 1", lambda value: 0 < value <= 1),
    "top_k": ("a whole number >= 0 (0 = off)", lambda value: value >= 0),
    "repetition_penalty": ("a number above 0 (1 = off)", lambda value: value > 0),
}


def _allowed(name: str, value: Any) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return RULES[name][1](value)


def parse_setting(name: str, text: str) -> Any:
    """The value of generation setting ``name`` written as ``text``; ValueError says what is allowed."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting '{name}': use one of {', '.join(SETTINGS)}")
    kind = int if SETTINGS[name].type in ("int", int) else float
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {RULES[name][0]}, got '{text}'") from None
    if not _allowed(name, value):
        raise ValueError(f"{name} must be {RULES[name][0]}, got '{text}'")
    return value


def setting_field(name: str, **changes: Any) -> Any:
    """A field for another config (eval's, probe's) that takes setting ``name``: its default and help, unless
    ``changes`` give a default or help of its own; its rule (``RULES``) stays the setting's."""
    spec = SETTINGS[name]
    return field(
        default=changes.get("default", spec.default),
        metadata={"help": changes.get("help", spec.metadata["help"])},
    )


def check_settings(config: Any, names: Sequence[str]) -> None:
    """ValueError naming the flag when a generation setting of ``config`` breaks its rule (None: unset)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not _allowed(name, value):
            raise ValueError(f"--{name} must be {RULES[name][0]}, got {value!r}")


