"""Fuzz every task scorer: generated completions must never raise, stay in range and score in linear time.

For each task (arith, sudoku, gsm8k) the script scores ``--count`` completions drawn in turn from five
generators: random text, mutated reference replies, adversarial answer formats, 100 kB inputs and
references rewritten in unicode digits and minus signs. Each completion goes through the task's
``score`` (timed) and through every reward function of the task (as TRL calls them, plain text and chat
messages in turn). A failure is an exception, a verdict or reward out of range, or a ``score`` call
that takes more than ``--max_ms`` of CPU time (CPU rather than wall time, so that other jobs on a shared
machine do not count).

    python scripts/fuzz_scorers.py [--count 100000] [--seed 0] [--max_ms 50] [--tasks arith,sudoku,gsm8k]

The CI test (tests/test_fuzz_scorers.py) runs the same generators with a small count.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpolab.tasks import get_task

LONG_CHARS = 100_000
# Digit zero of scripts whose digits Python's \d and int() accept (Arabic-Indic, Devanagari, Bengali,
# Thai, full-width, mathematical bold): a grader must neither crash on them nor take them for ASCII.
UNICODE_ZEROS = (0x0660, 0x0966, 0x09E6, 0x0E50, 0xFF10, 0x1D7CE)
MINUS_SIGNS = ("-", "\u2212", "\uff0d", "\u2010", "\u2012", "\u2013", "\u2014", "\ufe63")
FORMAT_PIECES = (
    "<answer>", "</answer>", "<ANSWER>", "<think>", "</think>", "\\boxed{", "}", "{", "####", "#### ", "A: ",
    "Answer:", "the answer is ", "=", "\n", " ", "$", "€", "%", ".", ",", "/", "\\frac{", "\\frac", "{,}",
    "\\,", "1,000", "1,2345", ",111", "18", "-5", "0.5", ".5", "3/4", "1/0", "9" * 40, "0." + "3" * 40,
    "[[1,2,3,4],", "[1, 2, 3, 4]", "1234\n3412\n2143\n4321", "1 2 3 4 |", "_", "\u2212", "\uff10",
    "\u0661\u0662", "NaN", "inf", "1e308", "\x00", "\ud7ff", "\U0001f600",
)
ALPHABET = "0123456789 ,.-+*/=$%\n\t<>#{}[]()|:;_abcxyzAEIOU\u2212\u00a0\u202f\u0663\uff15\U0001d7d7"


@dataclass
class Report:
    """Counts for one task: inputs scored, failures (first few kept), slowest score() call."""

    task: str
    inputs: int = 0
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    max_seconds: float = 0.0
    slowest: str = ""

    def summary(self) -> str:
        return (f"{self.inputs:,} inputs, {self.failure_count} failures, "
                f"max score() {self.max_seconds * 1000:.1f} ms CPU ({self.slowest})")

    def fail(self, kind: str, text: str, problem: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 10:
            self.failures.append(f"{kind}: {problem} on {text[:60]!r}")


def _reference_rows(task_name: str, rng: random.Random, count: int = 50) -> list[dict[str, Any]]:
    """Rows with gold answers and, where the task has one, a reference reply to mutate."""
    if task_name == "arith":
        from grpolab.tasks import arith

        return arith.generate_rows(count, rng.randrange(1000), "train", tuple(arith.LEVELS))
    if task_name == "sudoku":
        from grpolab.tasks import sudoku

        return sudoku.generate_rows(count, rng.randrange(1000), "train", "1,4,8,12")
    from grpolab.tasks import gsm8k_data

    rows = []
    for _ in range(count):
        gold = rng.choice([str(rng.randint(-10**6, 10**6)), f"{rng.randint(0, 999)}.{rng.randint(1, 99)}",
                           f"{rng.randint(1000, 10**7):,}"])
        rows.append(gsm8k_data.make_row("How many?", f"She had {rng.randint(1, 9)} apples.\n#### {gold}"))
    return rows


def _random_text(rng: random.Random, row: Mapping[str, Any], reference: str) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 200)))


def _mutated_reference(rng: random.Random, row: Mapping[str, Any], reference: str) -> str:
    text = list(reference)
    for _ in range(rng.randint(1, 6)):
        position = rng.randint(0, len(text))
        action = rng.randrange(4)
        if action == 0 and text:
            del text[min(position, len(text) - 1)]
        elif action == 1:
            text.insert(position, rng.choice(ALPHABET))
        elif action == 2:
            text[position:position] = list(rng.choice(FORMAT_PIECES))
        else:
            text[position:position] = text[position : position + rng.randint(1, 20)]
    return "".join(text)


def _adversarial_format(rng: random.Random, row: Mapping[str, Any], reference: str) -> str:
    pieces = [rng.choice(FORMAT_PIECES) for _ in range(rng.randint(1, 40))]
    if rng.random() < 0.5:
        pieces.insert(rng.randint(0, len(pieces)), str(row["answer"]))
    return "".join(pieces)


def long_text(unit: str, chars: int = LONG_CHARS) -> str:
    """``unit`` repeated to exactly ``chars`` characters."""
    return (unit * (chars // len(unit) + 1))[:chars]


def _long_input(rng: random.Random, row: Mapping[str, Any], reference: str) -> str:
    unit = rng.choice((_random_text, _mutated_reference, _adversarial_format))(rng, row, reference) or "1,"
    text = long_text(unit)
    return text + reference if rng.random() < 0.5 else text


def _unicode_digits(rng: random.Random, row: Mapping[str, Any], reference: str) -> str:
    zero = rng.choice(UNICODE_ZEROS)
    minus = rng.choice(MINUS_SIGNS)
    digits = {str(digit): chr(zero + digit) for digit in range(10)} if rng.random() < 0.7 else {}
    tail = f" {minus}{row['answer']}" * rng.randint(0, 1)
    return reference.translate(str.maketrans({**digits, "-": minus})) + tail


GENERATORS: dict[str, Callable[[random.Random, Mapping[str, Any], str], str]] = {
    "random": _random_text,
    "mutated": _mutated_reference,
    "adversarial": _adversarial_format,
    "long": _long_input,
    "unicode": _unicode_digits,
}


def completions(
    task_name: str, count: int, seed: int, kinds: Sequence[str] = tuple(GENERATORS)
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """``count`` (generator name, row, completion) triples, the generators ``kinds`` taken in turn."""
    rng = random.Random(f"fuzz:{task_name}:{seed}")
    task = get_task(task_name)
    rows = _reference_rows(task_name, rng)
    names = list(kinds)
    for index in range(count):
        row = rng.choice(rows)
        reference = task.reference(row) if task.reference else str(row["answer"])
        name = names[index % len(names)]
        yield name, row, GENERATORS[name](rng, row, reference)


def _reward_columns(row: Mapping[str, Any]) -> dict[str, list[Any]]:
    return {key: [value] for key, value in row.items()}


def _check_rewards(task: Any, text: str, row: Mapping[str, Any], chat: bool) -> str | None:
    """Why the task's rewards misbehave on ``text``, or None when every value is finite and in [-1, 1]."""
    completion: Any = [{"role": "assistant", "content": text}] if chat else text
    for name, reward in task.rewards.items():
        values = reward([completion], **_reward_columns(row))
        if len(values) != 1 or not all(isinstance(v, float) and math.isfinite(v) for v in values):
            return f"{name} returned {values!r}"
        if not -1.0 <= values[0] <= 1.0:
            return f"{name} returned {values[0]} outside [-1, 1]"
    return None


def _check_verdict(verdict: Any) -> str | None:
    if not isinstance(verdict.solved, bool) or not 0.0 <= verdict.partial <= 1.0:
        return f"verdict out of range: {verdict}"
    if verdict.solved and verdict.partial != 1.0:
        return f"solved but partial {verdict.partial}"
    return None


def fuzz_task(
    task_name: str,
    count: int,
    seed: int = 0,
    max_seconds: float = 0.05,
    kinds: Sequence[str] = tuple(GENERATORS),
    progress_every: int = 0,
) -> Report:
    """Score ``count`` fuzzed completions of ``task_name``; the report lists every kind of failure."""
    task = get_task(task_name)
    report = Report(task_name)
    for index, (kind, row, text) in enumerate(completions(task_name, count, seed, kinds)):
        if progress_every and index and index % progress_every == 0:
            print(f"  {task_name}: {report.summary()}", flush=True)
        report.inputs += 1
        try:
            start = time.thread_time()  # CPU time: other jobs on a shared machine do not count
            verdict = task.score(text, row)
            elapsed = time.thread_time() - start
            problem = _check_verdict(verdict) or _check_rewards(task, text, row, chat=index % 2 == 1)
        except Exception as error:  # the point of fuzzing: any exception is a finding, reported not raised
            report.fail(kind, text, f"{type(error).__name__}: {error}")
            continue
        if elapsed > report.max_seconds:
            report.max_seconds, report.slowest = elapsed, f"{kind} {len(text):,} chars"
        if problem is None and elapsed > max_seconds:
            problem = f"score took {elapsed * 1000:.1f} ms ({len(text):,} chars)"
        if problem:
            report.fail(kind, text, problem)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="completions per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max_ms", type=float, default=50.0, help="most CPU time one score() call may take, ms"
    )
    parser.add_argument("--tasks", default="arith,sudoku,gsm8k")
    args = parser.parse_args(argv)
    failed = 0
    for task_name in args.tasks.split(","):
        start = time.perf_counter()
        report = fuzz_task(
            task_name, args.count, args.seed, args.max_ms / 1000, progress_every=args.count // 10
        )
        print(f"{task_name}: {report.summary()}, {time.perf_counter() - start:.0f} s", flush=True)
        for failure in report.failures:
            print(f"  {failure}")
        failed += report.failure_count
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
