"""GSM8K: grade-school word problems whose answer is one number.

Scoring is ``gsm8k_answers`` (how numbers and answer formats are read); this module grades a reply with
it, defines the rewards, and loads the data (``gsm8k_data``: files, the hub, few-shot prompts).

Labels bucket difficulty by the number of reasoning lines in the reference solution (the test split
has 2 to 11; ``gsm8k_data.difficulty``): ``easy`` for at most ``EASY_MAX_STEPS``, ``medium`` up to
``MEDIUM_MAX_STEPS``, ``hard`` beyond; on the test split that is 326 / 668 / 325 problems, a quarter / a
half / a quarter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from grpolab.tasks.base import (
    MAX_GRADED_CHARS,
    ChatInputError,
    ChatSupport,
    Option,
    Task,
    Verdict,
    check_num,
    completion_text,
    parse_bool,
    verdicts,
)
from grpolab.tasks.gsm8k_answers import (
    answer_tag,
    answers_match,
    canonical_or_none,
    gold_answer,
    lenient_value,
    stated_value,
    strict_value,
)
from grpolab.tasks.gsm8k_data import (
    HUB_CONFIG,
    HUB_ID,
    apply_fewshot,
    make_prompt,
    read_hub,
    read_jsonl,
    reference,
)
from grpolab.tasks.gsm8k_harness import CHECKS, FEWSHOT_OPTIONS

logger = logging.getLogger(__name__)

# Soft over-length penalty (DAPO's "overlong reward shaping", in characters rather than tokens so that it
# needs no tokenizer): free up to LENGTH_FREE_CHARS, then falling linearly to -1 at LENGTH_MAX_CHARS.
# A GSM8K reference solution is 100-700 characters, a careful chain of thought 2-4x that, and 2,000
# characters is about the 512 tokens most GSM8K GRPO recipes allow for a completion.
LENGTH_FREE_CHARS = 1500
LENGTH_MAX_CHARS = 2500


def score(text: str, row: Mapping[str, Any]) -> Verdict:
    """Grade one completion against ``row["answer"]`` (see the module docstring for the rules)."""
    text = text[-MAX_GRADED_CHARS:]
    gold = gold_answer(row["answer"])
    strict = canonical_or_none(strict_value(text))
    lenient = canonical_or_none(lenient_value(text))
    tag = answer_tag(text)
    solved = answers_match(strict, gold)
    return Verdict(
        solved=solved,
        parsed=strict if strict is not None else lenient,
        partial=1.0 if solved else 0.0,
        format_ok=tag is not None and stated_value(tag) is not None,
        lenient=answers_match(lenient, gold),
    )


# ---------------------------------------------------------------------------------------------------
# Rewards: pure, batched, named after the metric they log
# ---------------------------------------------------------------------------------------------------


def gsm8k_correct(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the strict answer (answer tag, else boxed, else ``####``) equals the gold number, else 0.0."""
    return [1.0 if verdict.solved else 0.0 for verdict in verdicts(score, completions, kwargs)]


def gsm8k_format(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when a closed ``<answer>`` tag holds a number, right or wrong, else 0.0.

    Weighted well below correctness (0.2 by default) so it teaches the format in the first steps without
    paying a model more for a tidy wrong answer than for being right.
    """
    return [1.0 if verdict.format_ok else 0.0 for verdict in verdicts(score, completions, kwargs)]


def gsm8k_length_penalty(completions: list[Any], **kwargs: Any) -> list[float]:
    """0.0 up to ``LENGTH_FREE_CHARS`` characters, then linearly down to -1.0 at ``LENGTH_MAX_CHARS``.

    A soft penalty (DAPO's overlong shaping) discourages rambling before the completion limit truncates
    it; it does not look at the answer, so it adds to correctness instead of replacing it.
    """
    span = LENGTH_MAX_CHARS - LENGTH_FREE_CHARS
    lengths = [len(completion_text(completion)) for completion in completions]
    return [-min(1.0, max(0, length - LENGTH_FREE_CHARS) / span) for length in lengths]


REWARDS = {reward.__name__: reward for reward in (gsm8k_correct, gsm8k_format, gsm8k_length_penalty)}

# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def load(
    split: str = "train",
    data_file: str | Path | None = None,
    num: int | None = None,
    seed: int = 0,
    **options: Any,
) -> datasets.Dataset:
    """GSM8K rows (prompt, question, answer, label, solution) from ``data_file`` or else the hub.

    ``split`` picks the hub split and is ignored for a local file. ``num`` keeps the first ``num`` rows
    of a shuffle seeded by ``seed``, so the same arguments always give the same rows.
    """
    TASK.check_options(options)
    check_num(num)
    if data_file is not None:
        rows = read_jsonl(Path(data_file), parse_bool("skip_bad_rows", options.get("skip_bad_rows", False)))
    else:
        rows = read_hub(split, str(options.get("hub_id", HUB_ID)))
    apply_fewshot(rows, data_file, options)
    dataset = datasets.Dataset.from_list(rows)
    if num is not None:
        dataset = dataset.shuffle(seed=seed).select(range(min(num, len(dataset))))
    return dataset


OPTIONS = {
    "hub_id": Option(
        f"hub dataset to load when no data_file is given (default {HUB_ID}, config '{HUB_CONFIG}'); "
        "its answer column may hold full '#### N' solutions or bare numbers",
        HUB_ID,
    ),
    "skip_bad_rows": Option(
        "skip (and count in the log) unusable lines of a local data_file instead of stopping",
        False,
        load_only=True,
    ),
    **FEWSHOT_OPTIONS,
}


def read_gold(text: str) -> str:
    """The number ``/answer`` gives in chat, canonical."""
    value = gold_answer(text)
    if value is None:
        raise ChatInputError(f"a GSM8K answer is a number, got '{text}'")
    return value


TASK = Task(
    name="gsm8k", load=load, prompt=make_prompt, score=score, rewards=REWARDS, options=OPTIONS,
    default_rewards=("gsm8k_correct", "gsm8k_format"), default_weights=(1.0, 0.2), reference=reference,
    checks=CHECKS,
    chat=ChatSupport(hint="type a math word problem; tell me its answer with /answer N to have it judged",
                     example="Tom has 3 apples and buys 2 more. How many apples does he have?",
                     read_gold=read_gold),
)
