"""GSM8K as lm-evaluation-harness scores and prompts it, so a grpolab number can sit next to a published one.

Two correctness checks beside grpolab's strict and lenient ones (``CHECKS``, reported by eval), and the
harness's few-shot prompts (the gsm8k task's opt-in ``fewshot`` option). Copied from EleutherAI/lm-
evaluation-harness ``lm_eval/tasks/gsm8k/gsm8k.yaml`` and ``gsm8k-cot.yaml`` (version 3.0).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from grpolab.errors import UserError
from grpolab.tasks.base import Option

# Copied from EleutherAI/lm-evaluation-harness lm_eval/tasks/gsm8k/gsm8k.yaml and gsm8k-cot.yaml (version
# 3.0): the "strict-match" regex of each prompt style, the shared "flexible-extract" regex (its last
# match is taken), the exact_match settings (ignore_case, regexes_to_ignore) and the generation stop
# strings. The harness cuts a generation at its first stop string, so its filters never see the extra
# question a few-shot model may invent after its answer; we cut the same way before filtering.
HARNESS_STRICT_RE = {
    "gsm8k": re.compile(r"#### (\-?[0-9\.\,]+)"),
    "gsm8k-cot": re.compile(r"The answer is (\-?[0-9\.\,]+)."),
}


HARNESS_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


HARNESS_IGNORE_RES = tuple(re.compile(pattern) for pattern in (",", r"\$", "(?s).*#### ", r"\.$"))
_UP_TO_LAST_HASH = HARNESS_IGNORE_RES[2].pattern  # quadratic in re.sub when no "#### " follows: cut by rfind


HARNESS_STOP = {"gsm8k": "Question:", "gsm8k-cot": "Q:"}


HARNESS_INVALID = "[invalid]"  # the harness's fallback when a regex finds nothing: never equals a gold


def harness_extract(pattern: re.Pattern[str], text: str, group_select: int = 0) -> str:
    """The harness's RegexFilter: match ``group_select`` of findall, its first non-empty group, stripped."""
    matches = pattern.findall(text)
    if not matches:
        return HARNESS_INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), HARNESS_INVALID)
    return match.strip()


def harness_normalize(text: str) -> str:
    """The harness's exact_match preprocessing: each of ``regexes_to_ignore`` removed in turn, lower case."""
    for pattern in HARNESS_IGNORE_RES:
        if pattern.pattern == _UP_TO_LAST_HASH:
            # re.sub of "(?s).*#### " removes everything up to the last "#### " and then finds no other:
            # the same cut in linear time (the regex retries .* from every position: 5 s on 100 kB).
            last = text.rfind("#### ")
            text = text[last + len("#### ") :] if last >= 0 else text
        else:
            text = pattern.sub("", text)
    return text.lower()


def _harness_style(row: Mapping[str, Any]) -> str:
    return "gsm8k-cot" if row.get("prompt_style") == "gsm8k-cot" else "gsm8k"


def _harness_gold(row: Mapping[str, Any]) -> str:
    """The reference as the harness holds it: the full solution (its ``#### `` prefix is ignored later)."""
    solution = row.get("solution")
    return solution if isinstance(solution, str) and "####" in solution else str(row["answer"])


def _harness_match(extracted: str, row: Mapping[str, Any]) -> bool:
    return harness_normalize(extracted) == harness_normalize(_harness_gold(row))


def harness_strict_match(text: str, row: Mapping[str, Any]) -> bool:
    """lm-eval's "strict-match": the first ``#### N`` (``The answer is N.`` for gsm8k-cot) equals the gold."""
    style = _harness_style(row)
    text = text.split(HARNESS_STOP[style])[0]
    return _harness_match(harness_extract(HARNESS_STRICT_RE[style], text), row)


def harness_flexible_extract(text: str, row: Mapping[str, Any]) -> bool:
    """lm-eval's "flexible-extract": the last number-like run of characters equals the gold."""
    text = text.split(HARNESS_STOP[_harness_style(row)])[0]
    return _harness_match(harness_extract(HARNESS_FLEXIBLE_RE, text, group_select=-1), row)


CHECKS = {"lm-eval strict-match": harness_strict_match, "lm-eval flexible-extract": harness_flexible_extract}


PROMPT_STYLES = ("gsm8k", "gsm8k-cot")


DEFAULT_FEWSHOT = {"gsm8k": 5, "gsm8k-cot": 8}


# The harness's default fewshot_seed. Unlike the harness, which draws exemplars per item, every item gets
# the same ones: the shared prompt prefix is then prefilled once (see grpolab.generation.continuous_batching).
FEWSHOT_SEED = 1234


# The 8 chain-of-thought exemplars of gsm8k-cot.yaml (Wei et al. 2022, arXiv:2201.11903), in its order.
COT_EXEMPLARS = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
        "done, "
        "there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must "
        "have "
        "been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking "
        "lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in "
        "total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After "
        "eating 35, "
        "they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many "
        "lollipops did "
        "Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - "
        "12 = 8. "
        "The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does "
        "he have "
        "now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
        "5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from "
        "monday to "
        "thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
        "computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How "
        "many golf "
        "balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 "
        "more, "
        "he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
        "dollars left. 23 - 15 is 8. The answer is 8.",
    ),
)


def harness_question(question: str, style: str) -> str:
    """The harness's doc_to_text: ``Question: ...\\nAnswer:`` (gsm8k) or ``Q: ...\\nA:`` (gsm8k-cot)."""
    return f"Q: {question}\nA:" if style == "gsm8k-cot" else f"Question: {question}\nAnswer:"


def fewshot_prompt(question: str, exemplars: Sequence[tuple[str, str]], style: str) -> list[dict[str, str]]:
    """Exemplars as earlier chat turns (the harness's fewshot_as_multiturn), then the question; no system
    prompt."""
    messages = []
    for exemplar_question, exemplar_answer in exemplars:
        messages += [
            {"role": "user", "content": harness_question(exemplar_question, style)},
            {"role": "assistant", "content": exemplar_answer},
        ]
    return [*messages, {"role": "user", "content": harness_question(question.strip(), style)}]


def fewshot_exemplars(
    style: str, count: int, train_rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """gsm8k-cot: the first ``count`` fixed exemplars; gsm8k: ``count`` train items, full solutions as
    answers."""
    if style == "gsm8k-cot":
        return list(COT_EXEMPLARS[:count])
    chosen = random.Random(FEWSHOT_SEED).sample(range(len(train_rows)), count)
    return [(train_rows[index]["question"], train_rows[index]["solution"]) for index in chosen]


def fewshot_settings(options: Mapping[str, Any]) -> tuple[str, int]:
    """(style, number of exemplars) from the task options; 0 exemplars means grpolab's own prompt."""
    style = str(options.get("fewshot_style", "gsm8k"))
    if style not in PROMPT_STYLES:
        raise UserError(f"fewshot_style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")
    count = options.get("fewshot", DEFAULT_FEWSHOT[style] if "fewshot_style" in options else 0)
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise UserError(f"fewshot must be a whole number of exemplars, got {count!r}") from None
    limit = len(COT_EXEMPLARS) if style == "gsm8k-cot" else 20
    if not 0 <= count <= limit:
        raise UserError(f"fewshot must be between 0 and {limit} for style {style}, got {count}")
    return style, count


FEWSHOT_OPTIONS = {
    "fewshot": Option(
        "number of exemplars in an lm-evaluation-harness style few-shot prompt (default 0: "
        "grpolab's <answer> prompt; 5 is the harness's gsm8k, 8 its gsm8k-cot)",
        0,
    ),
    "fewshot_style": Option(
        "gsm8k ('Question: ... Answer:' with train solutions ending '#### N') or gsm8k-cot "
        "('Q: ... A:' with the 8 fixed chain-of-thought exemplars ending 'The answer is N.')",
        "gsm8k",
    ),
    "fewshot_file": Option(
        "train JSONL for gsm8k-style exemplars (default: train.jsonl beside data_file, else the hub)"
    ),
}
