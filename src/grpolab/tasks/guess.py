"""Guess the number: a stateful environment through TRL's ``environment_factory``.

Each rollout gets its own ``NumberGame``: ``reset(**row)`` hides the row's number (1-100), and its one public
method, ``guess``, answers "higher", "lower" or "correct" and counts the guesses. The model is solved when its
final reply names the number (the arith grader: the last integer); ``get_reward`` also pays 1.0 when a guess
hit it within ``MAX_GUESSES``, so the environment owns part of the reward, as TRL allows. Binary search needs
at most 7 guesses for 1-100, so the cap leaves room for one mistake.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from typing import Any

from grpolab.tasks import arith, base
from grpolab.tasks.base import ChatSupport, Task, Verdict, verdicts

SYSTEM = ("You are playing a guessing game. Call guess with a number from 1 to 100; you are told whether the "
          "hidden number is higher or lower. When a guess is correct, answer with just that number.")
USER = "Find the hidden number."
MAX_GUESSES = 8


class NumberGame:
    """One game: a hidden number, the guesses made so far."""

    def reset(self, **row: Any) -> str | None:
        self.target, self.guesses, self.found = int(row["answer"]), 0, False
        return None

    def guess(self, number: int) -> str:
        """Guess the hidden number.

        Args:
            number: a whole number from 1 to 100
        """
        self.guesses += 1
        if self.guesses > MAX_GUESSES:
            return f"no guesses left ({MAX_GUESSES} made)"
        if number == self.target:
            self.found = True
            return "correct"
        return "higher" if number < self.target else "lower"

    def get_reward(self) -> float:
        """1.0 when a guess found the number within MAX_GUESSES, else 0.0."""
        return 1.0 if self.found else 0.0


def split_of(number: int) -> str:
    return "test" if zlib.crc32(str(number).encode()) % 4 == 0 else "train"


def generate_rows(num: int, seed: int = 0, split: str = "train") -> list[dict[str, str]]:
    """``num`` games of ``split`` (hidden numbers repeat: there are only 100)."""
    pool = [number for number in range(1, 101) if split_of(number) == split]
    rng = random.Random(f"guess-{seed}-{split}")
    return [{"question": USER, "answer": str(rng.choice(pool)), "label": "1-100"} for _ in range(num)]


def make_prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def score(completion: str, row: Mapping[str, Any]) -> Verdict:
    return arith.score(completion, row)


def guess_correct(completions: list, **kwargs) -> list[float]:
    """1.0 when the final reply's last integer is the hidden number, else 0.0 (the strict metric)."""
    return [1.0 if verdict.solved else 0.0 for verdict in verdicts(score, completions, kwargs)]


def load(split: str = "train", data_file: str | None = None, num: int | None = None, seed: int = 0,
         **options: Any):
    TASK.check_options(options)
    base.check_num(num)
    return base.prompted_dataset(generate_rows(num or (100 if split == "test" else 1000), seed, split),
                                 make_prompt)


TASK = Task(
    name="guess",
    # a stateful game: one NumberGame per rollout, its public methods the tools (TRL's environment_factory)
    environment_factory=NumberGame,
    chat_template="chatml-tools",
    load=load,
    generate=generate_rows,
    score=score,
    rewards={"guess_correct": guess_correct},
    default_rewards=("guess_correct",),
    default_weights=(1.0,),
    prompt=make_prompt,
    chat=ChatSupport(hint="type anything to start a game; give the hidden number with /answer N",
                     example=USER, stand_in="0"),
)
