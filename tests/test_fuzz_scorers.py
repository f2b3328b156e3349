"""Fuzzed scorers: generated completions never raise, stay in range, and score in linear time.

The generators live in scripts/fuzz_scorers.py, which runs 100,000 per task; here a small count keeps the
suite fast, and time is checked as scaling (10 kB vs 100 kB) rather than as an absolute bound, which a
loaded CI machine would break.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
from pathlib import Path

import pytest

from grpolab.tasks import get_task

SCRIPT = Path(__file__).resolve().parents[1] / "scripts/fuzz_scorers.py"
TASKS = ("arith", "sudoku", "gsm8k")
SHORT_KINDS = ("random", "mutated", "adversarial", "unicode")


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_scorers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task_name", TASKS)
def test_short_fuzzed_completions_never_fail(fuzz, task_name):
    report = fuzz.fuzz_task(task_name, 2000, seed=1, max_seconds=10.0, kinds=SHORT_KINDS)
    assert report.inputs == 2000
    assert report.failures == []


@pytest.mark.parametrize("task_name", TASKS)
def test_long_fuzzed_completions_never_fail(fuzz, task_name):
    report = fuzz.fuzz_task(task_name, 20, seed=1, max_seconds=10.0, kinds=("long",))
    assert report.inputs == 20
    assert report.failures == []


def test_the_fuzzer_reports_what_it_finds(fuzz, monkeypatch):
    def broken(completion, row):
        raise ValueError("boom")

    broken_task = dataclasses.replace(get_task("arith"), score=broken)
    monkeypatch.setattr(fuzz, "get_task", lambda name: broken_task)
    report = fuzz.fuzz_task("arith", 10, kinds=SHORT_KINDS)
    assert report.failure_count == 10 and len(report.failures) == 10
    assert report.failures[0].startswith("random: ValueError: boom on ")


# Inputs that made a scorer quadratic or worse before, and the shapes that would: unclosed tags and
# braces, long digit runs, malformed thousands groups, numbers without end.
UNITS = [
    ",111",
    "1,",
    "<answer>",
    "<answer>1",
    "\\boxed{",
    "\\boxed{1",
    "{",
    "9",
    "answer is 1 ",
    "A: 1\n",
    "#### 1,",
    "\\frac{1",
    "1 / ",
    "[[1,2,3,4],",
    "1 2 3 4 ",
    "</answer><answer>",
    "\u0663\u2212",
]


def _best_time(score, text, row, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()  # CPU time: other jobs on the machine do not count
        score(text, row)
        best = min(best, time.thread_time() - start)
    return best


@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("unit", UNITS, ids=repr)
def test_score_time_grows_linearly(fuzz, task_name, unit):
    task = get_task(task_name)
    row = fuzz.completions(task_name, 1, seed=0).__next__()[1]
    short, long = "1" + fuzz.long_text(unit, 10_000), "1" + fuzz.long_text(unit, 100_000)
    short_time, long_time = _best_time(task.score, short, row), _best_time(task.score, long, row)
    # 10x the text takes about 10x the time when linear (measured 10-30x: caches and a loaded machine)
    # and 100x when quadratic; the 1 ms floor keeps timer resolution out of the ratio, and a quadratic
    # scorer under that floor would still score 100 kB in under 40 ms.
    assert long_time < 40 * max(short_time, 0.001), (short_time, long_time)


# One rule for every grader: numbers are ASCII digits; "-", U+2212 and U+FF0D are all minus signs.
NON_ASCII_ZEROS = {"arabic-indic": 0x0660, "devanagari": 0x0966, "full-width": 0xFF10}


@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("script", NON_ASCII_ZEROS)
def test_every_grader_reads_ascii_digits_only(fuzz, task_name, script):
    task = get_task(task_name)
    row = fuzz.completions(task_name, 1, seed=0).__next__()[1]
    reference = task.reference(row) if task.reference else str(row["answer"])
    translated = reference.translate({ord(str(d)): NON_ASCII_ZEROS[script] + d for d in range(10)})
    assert translated != reference
    assert task.score(reference, row).solved is True
    verdict = task.score(translated, row)
    assert verdict.solved is False and not verdict.lenient  # sudoku has no lenient reading (None)


@pytest.mark.parametrize("task_name", ("arith", "gsm8k"))
@pytest.mark.parametrize("minus", ("-", "\u2212", "\uff0d"))
def test_every_grader_reads_each_minus_sign(task_name, minus):
    task = get_task(task_name)
    row = {"question": "3 - 10", "answer": "-7"}
    assert task.score(f"The answer is {minus}7", row).lenient is True
    assert task.score(f"<answer>{minus}7</answer>", row).solved is True
    assert task.score(f"<answer>{minus}7</answer>", {**row, "answer": "7"}).solved is False
