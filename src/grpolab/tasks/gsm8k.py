"""GSM8K: grade-school word problems whose answer is one number.

Scoring (one grader for rewards, eval and chat):

* Every answer is read as an exact ``Fraction``: ``1,000``, ``$18.00``, ``18 dollars``, ``-5``, ``3/4``,
  ``\\frac{3}{4}``, ``\\boxed{18}``, ``75%`` (read as 75: GSM8K golds carry no percent sign) all parse.
  Two answers match when they differ by at most ``RELATIVE_TOLERANCE`` of the gold, so ``3/4`` equals
  ``0.75`` and ``0.3333333`` does not equal ``1/3``.
* Inside a marked span (answer tags, ``\\boxed{}``, ``####``, ``A:``, "the answer is") the stated value is
  the first number after the last ``=`` if the span has one, else the first number: ``<answer>5 + 3 = 8
  </answer>`` gives 8 and ``<answer>18 dollars for 3 days</answer>`` gives 18.
* **strict** (``Verdict.solved``, the reported accuracy) reads only an explicit final-answer format: the
  last closed ``<answer>...</answer>``; if there is none, the last ``\\boxed{...}``; if none, the last
  ``#### N`` line (``#### Step 2``, a markdown heading, is not one). An answer tag is authoritative: if its content holds no number, strict is wrong
  even when a boxed answer follows.
* **lenient** (``Verdict.lenient``) takes the strongest marker found, in the order answer tag, boxed,
  ``####``, an unclosed ``<answer>`` running to the end of the text, an ``A:`` / ``Answer:`` line or
  "the answer is", and finally the last number anywhere; a marker with no number falls through.
* ``parsed`` is the strict answer, or the lenient one when no strict answer could be read.
* ``format_ok``: a closed answer tag whose content holds a number. ``partial`` is 1.0 when solved, else
  0.0: a wrong final number earns nothing, because GSM8K gives no checkable intermediate steps.
* Unparseable text (no number where one is looked for) scores 0 by design, never by a caught error.
* Numbers are written in ASCII digits (``١٨`` or full-width ``１８`` are not numbers, as in arith and
  sudoku); the minus may be ``-``, ``−`` (U+2212) or ``－`` (U+FF0D). Only the last
  ``MAX_GRADED_CHARS`` (10,000) characters of a completion are read, as in arith.
* Beside these, eval reports lm-evaluation-harness's two GSM8K filters (``CHECKS``: "strict-match" and
  "flexible-extract", its regexes and exact-match rules copied) so a grpolab number can sit next to a
  published one; the task option ``fewshot`` builds the harness's 5-shot or 8-shot chain-of-thought prompt.

Labels bucket difficulty by the number of reasoning lines in the reference solution (the test split
has 2 to 11): ``easy`` for at most ``EASY_MAX_STEPS``, ``medium`` up to ``MEDIUM_MAX_STEPS``, ``hard``
beyond; on the test split that is 326 / 668 / 325 problems, a quarter / a half / a quarter.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import datasets

from grpolab.errors import UserError
from grpolab.tasks.base import MAX_GRADED_CHARS, Task, Verdict, completion_text

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "Solve the math word problem. Reason step by step inside <think> ... </think>, then write only the "
    "final number inside <answer> ... </answer>, for example <answer>42</answer>."
)
HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"  # the hub dataset's config name; "socratic" adds sub-questions to the solutions
EASY_MAX_STEPS = 2
MEDIUM_MAX_STEPS = 4
# Relative tolerance for numeric equality. GSM8K golds are integers or short decimals, so anything a
# model writes to 7 significant digits is either exact or a different number; 1e-9 only absorbs the
# float rounding of values that reach us as floats (e.g. a hub column typed float64).
RELATIVE_TOLERANCE = Fraction(1, 10**9)
# Soft over-length penalty (DAPO's "overlong reward shaping", in characters rather than tokens so that it
# needs no tokenizer): free up to LENGTH_FREE_CHARS, then falling linearly to -1 at LENGTH_MAX_CHARS.
# A GSM8K reference solution is 100-700 characters, a careful chain of thought 2-4x that, and 2,000
# characters is about the 512 tokens most GSM8K GRPO recipes allow for a completion.
LENGTH_FREE_CHARS = 1500
LENGTH_MAX_CHARS = 2500
# Digit limits keep every number small enough to convert (Python refuses int strings over 4,300 digits)
# and canonical text short. No GSM8K answer has more than 8 integer digits, so a longer run of digits is
# not an answer (None); decimals are cut after MAX_DECIMAL_PLACES, far below RELATIVE_TOLERANCE, so
# "0.3333..." written to 500 places still equals 1/3 within tolerance.
MAX_INTEGER_DIGITS = 30
MAX_DECIMAL_PLACES = 30

# ---------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------

# LaTeX and unicode spellings rewritten to plain text before numbers are read. Each pattern is linear:
# no nested quantifiers over overlapping alternatives.
_LATEX_FRACTION_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?[0-9.,]+)\s*\}\s*\{\s*(-?[0-9.,]+)\s*\}")
_LATEX_FRACTION_SHORT_RE = re.compile(r"\\[dt]?frac([0-9])([0-9])")  # \frac34
_LATEX_THOUSANDS_RE = re.compile(r"(?<=[0-9])(?:\{,\}|\\,)(?=[0-9]{3}(?![0-9]))")  # 1{,}000 and 1\,000
_LATEX_NOISE_RE = re.compile(r"\\[$%!,;: ]")  # escaped dollar and percent, LaTeX spaces
_UNICODE_SPELLINGS = str.maketrans(
    {"\u2212": "-", "\uff0d": "-", "\uff04": "$", "\u00a0": " ", "\u202f": " "}
)
# A number: an optional minus glued to the digits and not to a preceding word or digit (so "5-3" is 5
# and 3, and a "- 5" bullet is 5), an optional currency sign, digits with well-formed thousands groups
# or plain digits, an optional decimal part, an optional "/denominator". A leading "." is allowed
# (".5"); a trailing "." is a full stop. Percent signs and unit words after the number are ignored.
# Thousands groups must end the digit run: "1,2345" is 1 and 2345, never 1,234. Grouping is tried only
# from a run's first digit (not after "digit,") and its groups are atomic (a lookahead then a
# backreference: possessive "++" needs Python 3.11), so a malformed run of n groups is scanned once, not
# once per group (which was quadratic: 100 kB of "1,111,...,11" took 20 s). Digits are ASCII [0-9]
# only, never \d (which also matches Arabic-Indic, full-width and other scripts' digits): the rule of
# every task's grader. The minus may be "-", U+2212 or U+FF0D (``_clean`` rewrites the last two).
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)\]}])(?P<sign>-))?(?:[$€£]\s?)?(?<![0-9.])(?=\.?[0-9])"
    r"(?P<int>(?<![0-9],)[0-9]{1,3}(?=(?P<groups>(?:,[0-9]{3})+))(?P=groups)(?![0-9]|,[0-9])|[0-9]+)?"
    r"(?P<dec>\.[0-9]+)?"
    r"(?:\s?/\s?(?P<den>[0-9]+(?:\.[0-9]+)?))?"
)


def _clean(text: str) -> str:
    """Plain-text spelling of ``text``: LaTeX fractions as ``a/b``, escapes and unicode minus removed."""
    text = text.translate(_UNICODE_SPELLINGS)
    text = _LATEX_FRACTION_RE.sub(r" \1/\2 ", text)
    text = _LATEX_FRACTION_SHORT_RE.sub(r" \1/\2 ", text)
    text = _LATEX_THOUSANDS_RE.sub(",", text)
    return _LATEX_NOISE_RE.sub(" ", text).replace("\\", " ")


def _to_fraction(match: re.Match[str]) -> Fraction | None:
    """The exact value of one ``_NUMBER_RE`` match; None for an empty match or a zero denominator."""
    integer = (match["int"] or "0").replace(",", "")
    decimal = (match["dec"] or "")[: MAX_DECIMAL_PLACES + 1]
    denominator = match["den"] or "1"
    if len(integer) > MAX_INTEGER_DIGITS or len(denominator) > MAX_INTEGER_DIGITS + MAX_DECIMAL_PLACES:
        return None
    if Fraction(denominator) == 0:
        return None
    value = Fraction(integer + decimal) / Fraction(denominator)
    return -value if match["sign"] else value


def _numbers(text: str) -> Iterable[Fraction]:
    """Every number in already-cleaned ``text``, in order."""
    for match in _NUMBER_RE.finditer(text):
        value = _to_fraction(match)
        if value is not None:
            yield value


def canonical(value: Fraction) -> str:
    """Canonical text of a number: ``18``, ``-0.75``, or ``1/3`` when no finite decimal exists."""
    if value.denominator == 1:
        return str(value.numerator)
    places = 0
    while places <= MAX_DECIMAL_PLACES and (value * 10**places).denominator != 1:
        places += 1
    if places > MAX_DECIMAL_PLACES:
        return f"{value.numerator}/{value.denominator}"
    sign, digits = ("-" if value < 0 else ""), str(abs(value * 10**places).numerator).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def stated_value(span: str) -> Fraction | None:
    """The number a marked answer span states: the first number after its last ``=``, else its first."""
    span = _clean(span)
    value = next(iter(_numbers(span.rpartition("=")[2])), None)
    return value if value is not None else next(iter(_numbers(span)), None)


def normalize_answer(span: str | float | int | None) -> str | None:
    """Canonical number stated by ``span`` (``"$1,000.00"`` -> ``"1000"``), or None if it has none."""
    if span is None:
        return None
    if isinstance(span, (int, float)):
        span = repr(span)
    value = stated_value(span)
    return None if value is None else canonical(value)


def answers_match(parsed: str | None, gold: str | None) -> bool:
    """True when two canonical answers are the same number, within ``RELATIVE_TOLERANCE`` of the gold."""
    if parsed is None or gold is None:
        return False
    parsed_value, gold_value = Fraction(parsed), Fraction(gold)
    return abs(parsed_value - gold_value) <= RELATIVE_TOLERANCE * max(1, abs(gold_value))


# ---------------------------------------------------------------------------------------------------
# Answer markers
# ---------------------------------------------------------------------------------------------------

# Tempered tokens ("any character that does not start another tag") keep every pattern linear: a failed
# attempt stops at the next tag instead of rescanning the rest of a 100 kB completion.
_ANSWER_TAG_RE = re.compile(r"<answer>((?:(?!</?answer>).)*)</answer>", re.IGNORECASE | re.DOTALL)
_OPEN_ANSWER_TAG_RE = re.compile(r"<answer>((?:(?!</?answer>).)*)\Z", re.IGNORECASE | re.DOTALL)
# Two levels of nested braces cover \boxed{\frac{3}{4}} and \boxed{\text{\$18}}.
_BOXED_RE = re.compile(r"\\boxed\s*\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
# "#### 18" as in the GSM8K references; "#### Step 2" (a markdown heading) is not an answer.
_HASH_RE = re.compile(r"####[ \t]*([-\u2212\uff0d$€£\uff04\\.0-9][^\n]*)")  # any minus _clean reads
# "A: 18" or "Answer: 18" or "Final answer: 18" at the start of a line, or "the answer is 18" anywhere.
_ANSWER_PHRASE_RE = re.compile(
    r"(?:^[ \t*#>]*(?:final\s+)?(?:a|answer)[ \t*]*[:\uff1a]|\banswer\s+is\b[ \t*:]*)([^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)


def _last_group(pattern: re.Pattern[str], text: str) -> str | None:
    """Group 1 of the last match of ``pattern`` in ``text``, or None."""
    span = None
    for match in pattern.finditer(text):
        span = match.group(1)
    return span


def _last_stated(pattern: re.Pattern[str], text: str) -> Fraction | None:
    """The value stated by the last match of ``pattern`` that states one (earlier ones are fallbacks)."""
    for match in reversed(list(pattern.finditer(text))):
        value = stated_value(match.group(1))
        if value is not None:
            return value
    return None


# A character that no number and no ``_clean`` rewrite can contain (letters other than those of \\frac,
# \\dfrac and \\tfrac, and symbols outside $ € £ { } , . - / % ! ; : \\), or a space between two digits
# (a number spans a space only after a currency sign or around "/"). Reading a text from one gives the
# same numbers after it as reading the whole text does, so the last number can be looked for in a
# growing tail instead of converting all of a 100 kB text's 50,000 numbers.
_BARRIER_RE = re.compile(r"[^\W0-9dtfrac_]|[<>=#*()\[\]|&@?\"'+^~`]|(?<=[0-9])\s(?=[0-9])")
_TAIL_CHARS = 2048


def _last_number(text: str) -> Fraction | None:
    """The last number anywhere in ``text``, read from the shortest tail that starts at a barrier."""
    tail = _TAIL_CHARS
    while tail < len(text):
        barrier = _BARRIER_RE.search(text, len(text) - tail)
        if barrier is not None:
            value = _last_number_in(text[barrier.start() :])
            if value is not None:
                return value
        tail *= 4
    return _last_number_in(text)


def _last_number_in(text: str) -> Fraction | None:
    for match in reversed(list(_NUMBER_RE.finditer(_clean(text)))):  # convert from the end: only the
        value = _to_fraction(match)  # last number is wanted
        if value is not None:
            return value
    return None


def strict_value(text: str) -> Fraction | None:
    """The answer given in an explicit final-answer format: answer tag, else boxed, else ``####``."""
    for pattern in (_ANSWER_TAG_RE, _BOXED_RE, _HASH_RE):
        span = _last_group(pattern, text)
        if span is not None:
            return stated_value(span)
    return None


def lenient_value(text: str) -> Fraction | None:
    """The strongest answer found: a marker in ``_LENIENT_MARKERS`` order, else the last number."""
    for pattern in _LENIENT_MARKERS:
        value = _last_stated(pattern, text)
        if value is not None:
            return value
    return _last_number(text)


_LENIENT_MARKERS = (_ANSWER_TAG_RE, _BOXED_RE, _HASH_RE, _OPEN_ANSWER_TAG_RE, _ANSWER_PHRASE_RE)


def _canonical_or_none(value: Fraction | None) -> str | None:
    return None if value is None else canonical(value)


def score(text: str, row: Mapping[str, Any]) -> Verdict:
    """Grade one completion against ``row["answer"]`` (see the module docstring for the rules)."""
    text = text[-MAX_GRADED_CHARS:]
    gold = gold_answer(row["answer"])
    strict = _canonical_or_none(strict_value(text))
    lenient = _canonical_or_none(lenient_value(text))
    tag = _last_group(_ANSWER_TAG_RE, text)
    solved = answers_match(strict, gold)
    return Verdict(
        solved=solved,
        parsed=strict if strict is not None else lenient,
        partial=1.0 if solved else 0.0,
        format_ok=tag is not None and stated_value(tag) is not None,
        lenient=answers_match(lenient, gold),
    )


# ---------------------------------------------------------------------------------------------------
# lm-evaluation-harness's GSM8K scoring, reported beside strict and lenient
# ---------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------
# Rewards: pure, batched, named after the metric they log
# ---------------------------------------------------------------------------------------------------


def _verdicts(completions: list[Any], answer: list[Any]) -> list[Verdict]:
    return [
        score(completion_text(completion), {"answer": gold})
        for completion, gold in zip(completions, answer, strict=True)
    ]


def gsm8k_correct(completions: list[Any], answer: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the strict answer (answer tag, else boxed, else ``####``) equals the gold number, else 0.0."""
    return [1.0 if verdict.solved else 0.0 for verdict in _verdicts(completions, answer)]


def gsm8k_format(completions: list[Any], answer: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when a closed ``<answer>`` tag holds a number, right or wrong, else 0.0.

    Weighted well below correctness (0.2 by default) so it teaches the format in the first steps without
    paying a model more for a tidy wrong answer than for being right.
    """
    return [1.0 if verdict.format_ok else 0.0 for verdict in _verdicts(completions, answer)]


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

_QUESTION_KEYS = ("question", "problem")
_ANSWER_KEYS = ("answer", "solution", "final_answer", "ground_truth")
_REQUIRED_KEYS = ("question", "answer")


def difficulty(solution: str) -> str:
    """``easy`` / ``medium`` / ``hard`` by the number of reasoning lines before ``####``; ``unknown`` if none."""
    steps = len([line for line in solution.partition("####")[0].splitlines() if line.strip()])
    if "####" not in solution or steps == 0:
        return "unknown"
    if steps <= EASY_MAX_STEPS:
        return "easy"
    return "medium" if steps <= MEDIUM_MAX_STEPS else "hard"


def gold_answer(answer: Any) -> str | None:
    """Canonical gold number of a reference: the value after ``####`` in a solution, or a bare number."""
    if isinstance(answer, str) and "####" in answer:
        return normalize_answer(_last_group(_HASH_RE, answer))
    return normalize_answer(answer) if isinstance(answer, (str, int, float)) else None


def make_prompt(question: str) -> list[dict[str, str]]:
    """The chat prompt: the format instructions as the system message, the problem as the user message."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question.strip()}]


def make_row(question: str, answer: Any) -> dict[str, Any] | None:
    """One dataset row from a question and its reference answer; None when the answer has no number."""
    gold = gold_answer(answer)
    if gold is None:
        return None
    solution = answer if isinstance(answer, str) else ""
    return {
        "prompt": make_prompt(question),
        "question": question,
        "answer": gold,
        "label": difficulty(solution),
        "solution": solution,
        "prompt_style": "grpolab",
    }


def _bad_row(record: Any) -> str | None:
    """Why a local GSM8K record is unusable, or None when it is fine."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        return f"missing key '{missing[0]}' (each line needs 'question' and 'answer')"
    answer = record["answer"]
    if not isinstance(record["question"], str) or not isinstance(answer, (str, int, float)):
        return "'question' must be a string and 'answer' a string or a number"
    if isinstance(answer, str) and ("####" not in answer or gold_answer(answer) is None):
        return "'answer' does not end with a final '#### N'"
    return None


def _parse_line(line: str) -> tuple[Any, str | None]:
    """(record, None) for a usable JSONL line, else (None, why not)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return None, f"invalid JSON ({error.msg})"
    why = _bad_row(record)
    return (None, why) if why else (record, None)


def read_jsonl(path: Path, skip_bad_rows: bool = False) -> list[dict[str, Any]]:
    """Rows of a local GSM8K JSONL file; a bad line is a UserError naming file and line, or is skipped."""
    if not path.is_file():
        raise UserError(f"GSM8K data file {path} not found; check the path given with --data_file")
    rows, skipped = [], 0
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record, why = _parse_line(line)
            if why and not skip_bad_rows:
                raise UserError(f"{path}:{line_number}: {why}; fix the line or pass skip_bad_rows=True")
            skipped += bool(why)
            if record is not None:
                rows.append(make_row(record["question"], record["answer"]))
    if skipped:
        logger.warning("skipped %d bad rows in %s", skipped, path)
    if not rows:
        raise UserError(f"GSM8K data file {path} has no usable rows")
    return rows


def _hub_question(record: Mapping[str, Any]) -> str | None:
    """The problem text of a hub record: a question column, or the last user turn of a chat prompt."""
    for key in _QUESTION_KEYS:
        if isinstance(record.get(key), str):
            return record[key]
    prompt = record.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], Mapping):
        return str(prompt[-1].get("content") or "")
    return prompt if isinstance(prompt, str) else None


def _hub_row(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A dataset row from a hub record whose answer may be a full solution or already a number."""
    question = _hub_question(record)
    answer = next((record[key] for key in _ANSWER_KEYS if record.get(key) is not None), None)
    return None if question is None or answer is None else make_row(question, answer)


def read_hub(split: str, hub_id: str) -> list[dict[str, Any]]:
    """Rows of a hub dataset; a UserError telling the user to pass a local file if it cannot be loaded."""
    config = HUB_CONFIG if hub_id == HUB_ID else None
    try:
        records = datasets.load_dataset(hub_id, config, split=split)
    except (OSError, ConnectionError, ValueError, datasets.exceptions.DatasetsError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"cannot load {hub_id} split '{split}' from the Hugging Face hub ({reason}); "
            f"pass a local file instead: --data_file path/to/{split}.jsonl"
        ) from None
    rows = [_hub_row(record) for record in records]
    if None in rows:
        logger.warning("skipped %d rows of %s without a question or numeric answer", rows.count(None), hub_id)
    return [row for row in rows if row is not None]


def _flag(value: Any) -> bool:
    """A yes/no option given as a bool or as command-line text (true/false, yes/no, 1/0)."""
    text = str(value).strip().lower()
    if text not in ("true", "false", "yes", "no", "1", "0"):
        raise UserError(f"skip_bad_rows must be true or false, got {value!r}")
    return text in ("true", "yes", "1")


def reference(row: Mapping[str, Any]) -> str:
    """The reference solution's reasoning (GSM8K's <<calculator>> notes removed), then the answer tag."""
    solution = str(row.get("solution") or "")
    reasoning = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
    return f"{reasoning}\n<answer>{row['answer']}</answer>" if reasoning else f"<answer>{row['answer']}</answer>"


# ---------------------------------------------------------------------------------------------------
# Few-shot prompts as lm-evaluation-harness writes them (opt-in: task option "fewshot")
# ---------------------------------------------------------------------------------------------------

PROMPT_STYLES = ("gsm8k", "gsm8k-cot")
DEFAULT_FEWSHOT = {"gsm8k": 5, "gsm8k-cot": 8}
# The harness's default fewshot_seed. Unlike the harness, which draws exemplars per item, every item gets
# the same ones: the shared prompt prefix is then prefilled once (see grpolab.batching).
FEWSHOT_SEED = 1234
# The 8 chain-of-thought exemplars of gsm8k-cot.yaml (Wei et al. 2022, arXiv:2201.11903), in its order.
COT_EXEMPLARS = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
     "been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
     "they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have "
     "now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
     "5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
     "computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
     "he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
     "dollars left. 23 - 15 is 8. The answer is 8."),
)


def harness_question(question: str, style: str) -> str:
    """The harness's doc_to_text: ``Question: ...\\nAnswer:`` (gsm8k) or ``Q: ...\\nA:`` (gsm8k-cot)."""
    return f"Q: {question}\nA:" if style == "gsm8k-cot" else f"Question: {question}\nAnswer:"


def fewshot_prompt(question: str, exemplars: Sequence[tuple[str, str]], style: str) -> list[dict[str, str]]:
    """Exemplars as earlier chat turns (the harness's fewshot_as_multiturn), then the question; no system prompt."""
    messages = []
    for exemplar_question, exemplar_answer in exemplars:
        messages += [{"role": "user", "content": harness_question(exemplar_question, style)},
                     {"role": "assistant", "content": exemplar_answer}]
    return [*messages, {"role": "user", "content": harness_question(question.strip(), style)}]


def fewshot_exemplars(style: str, count: int, train_rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """gsm8k-cot: the first ``count`` fixed exemplars; gsm8k: ``count`` train items, full solutions as answers."""
    if style == "gsm8k-cot":
        return list(COT_EXEMPLARS[:count])
    chosen = random.Random(FEWSHOT_SEED).sample(range(len(train_rows)), count)
    return [(train_rows[index]["question"], train_rows[index]["solution"]) for index in chosen]


def _fewshot_settings(options: Mapping[str, Any]) -> tuple[str, int]:
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


def _fewshot_train_rows(data_file: str | Path | None, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where gsm8k-style exemplars come from: fewshot_file, else train.jsonl beside data_file, else the hub."""
    if options.get("fewshot_file"):
        return read_jsonl(Path(str(options["fewshot_file"])).expanduser())
    beside = Path(data_file).expanduser().parent / "train.jsonl" if data_file else None
    if beside is not None and beside.is_file():
        return read_jsonl(beside)
    return read_hub("train", str(options.get("hub_id", HUB_ID)))


def _apply_fewshot(rows: list[dict[str, Any]], data_file: str | Path | None, options: Mapping[str, Any]) -> None:
    """Rewrite each row's prompt as the harness's few-shot prompt when the options ask for one."""
    style, count = _fewshot_settings(options)
    if count == 0:
        return
    train_rows = _fewshot_train_rows(data_file, options) if style == "gsm8k" else []
    exemplars = fewshot_exemplars(style, count, train_rows)
    for row in rows:
        row["prompt"], row["prompt_style"] = fewshot_prompt(row["question"], exemplars, style), style


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
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown gsm8k option '{unknown[0]}': choose from {', '.join(OPTIONS)}")
    if num is not None and num < 1:
        raise UserError(f"--num ({num}) must be at least 1")
    if data_file is not None:
        rows = read_jsonl(Path(data_file).expanduser(), _flag(options.get("skip_bad_rows", False)))
    else:
        rows = read_hub(split, str(options.get("hub_id", HUB_ID)))
    _apply_fewshot(rows, data_file, options)
    dataset = datasets.Dataset.from_list(rows)
    if num is not None:
        dataset = dataset.shuffle(seed=seed).select(range(min(num, len(dataset))))
    return dataset


OPTIONS = {
    "hub_id": f"hub dataset to load when no data_file is given (default {HUB_ID}, config '{HUB_CONFIG}'); "
    "its answer column may hold full '#### N' solutions or bare numbers",
    "skip_bad_rows": "skip (and count in the log) unusable lines of a local data_file instead of stopping",
    "fewshot": "number of exemplars in an lm-evaluation-harness style few-shot prompt (default 0: grpolab's "
    "<answer> prompt; 5 is the harness's gsm8k, 8 its gsm8k-cot)",
    "fewshot_style": "gsm8k ('Question: ... Answer:' with train solutions ending '#### N') or gsm8k-cot "
    "('Q: ... A:' with the 8 fixed chain-of-thought exemplars ending 'The answer is N.')",
    "fewshot_file": "train JSONL for gsm8k-style exemplars (default: train.jsonl beside data_file, else the hub)",
}

TASK = Task(
    name="gsm8k",
    description="GSM8K grade-school word problems; strict answer in <answer> tags, numeric comparison",
    load=load,
    score=score,
    rewards=REWARDS,
    default_rewards=("gsm8k_correct", "gsm8k_format"),
    default_weights=(1.0, 0.2),
    options=OPTIONS,
    reference=reference,
    checks=CHECKS,
)
