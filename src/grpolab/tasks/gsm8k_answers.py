"""GSM8K answers: reading the number a reply states, strictly and leniently, and the gold number.

Scoring (one grader for rewards, eval and chat):

* Every answer is read as an exact ``Fraction``: ``1,000``, ``$18.00``, ``-\\$5``, ``¥300``, ``₹300``,
  ``18 dollars``, ``-5``, ``3/4``, ``2 1/2`` (a mixed number, 5/2), ``\\frac{3}{4}``, ``-\\frac{3}{4}``,
  ``\\frac{36}{-2}``, ``\\boxed{18}``, ``75%`` (read as 75: GSM8K golds carry no percent sign) all parse.
  Two answers match when they differ by at most ``RELATIVE_TOLERANCE`` of the gold, so ``3/4`` equals
  ``0.75`` and ``0.3333333`` does not equal ``1/3``.
* Inside a marked span (answer tags, ``\\boxed{}``, ``####``, ``A:``, "the answer is") the stated value is
  the first number after the last ``=`` if the span has one, else the first number (one that cannot be
  read, ``1/0`` or a 40-digit run, makes the span unreadable: the next number does not stand in):
  ``<answer>5 + 3 = 8</answer>`` gives 8 and ``<answer>18 dollars for 3 days</answer>`` gives 18.
* **strict** (``Verdict.solved``, the reported accuracy) reads only an explicit final-answer format: the
  last closed ``<answer>...</answer>``; if there is none, the last ``\\boxed{...}``; if none, the last
  ``#### N`` line (``#### Step 2``, a markdown heading, is not one). An answer tag is authoritative: if its
  content holds no number, strict is wrong even when a boxed answer follows.
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
* Beside these, eval reports lm-evaluation-harness's two GSM8K filters (``gsm8k_harness.CHECKS``:
  "strict-match" and "flexible-extract", its regexes and exact-match rules copied) so a grpolab number can
  sit next to a published one; the task option ``fewshot`` builds the harness's 5-shot or 8-shot
  chain-of-thought prompt.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

# Relative tolerance for numeric equality. GSM8K golds are integers or short decimals, so anything a
# model writes to 7 significant digits is either exact or a different number; 1e-9 only absorbs the
# float rounding of values that reach us as floats (e.g. a hub column typed float64).
RELATIVE_TOLERANCE = Fraction(1, 10**9)
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
# A LaTeX fraction with the minus before it or inside either brace: -\\frac{3}{4}, \\frac{36}{-2}.
_LATEX_FRACTION_RE = re.compile(
    r"(?P<sign>-\s*)?\\[dt]?frac\s*\{\s*(?P<num>-?[0-9.,]+)\s*\}\s*\{\s*(?P<den>-?[0-9.,]+)\s*\}"
)
_LATEX_FRACTION_SHORT_RE = re.compile(r"\\[dt]?frac([0-9])([0-9])")  # \frac34
_LATEX_THOUSANDS_RE = re.compile(r"(?<=[0-9])(?:\{,\}|\\,)(?=[0-9]{3}(?![0-9]))")  # 1{,}000 and 1\,000
_LATEX_NOISE_RE = re.compile(r"\\[%!,;: ]")  # escaped percent, LaTeX spaces (an escaped $ stays a $)
_UNICODE_SPELLINGS = str.maketrans(
    {"\u2212": "-", "\uff0d": "-", "\uff04": "$", "\uffe5": "¥", "\u00a0": " ", "\u202f": " "}
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
    r"(?:(?<![\w)\]}])(?P<sign>-))?(?:[$€£¥₹]\s?)?(?<![0-9.])(?=\.?[0-9])"
    r"(?:(?P<whole>[0-9]+)[ \t]+(?=[0-9]+\s?/\s?[0-9]))?"  # a mixed number's whole part: 2 1/2
    r"(?P<int>(?<![0-9],)[0-9]{1,3}(?=(?P<groups>(?:,[0-9]{3})+))(?P=groups)(?![0-9]|,[0-9])|[0-9]+)?"
    r"(?P<dec>\.[0-9]+)?"
    r"(?:\s?/\s?(?P<den>[0-9]+(?:\.[0-9]+)?))?"
)


def _clean(text: str) -> str:
    """Plain-text spelling of ``text``: LaTeX fractions as ``a/b``, escapes and unicode minus removed."""
    text = text.translate(_UNICODE_SPELLINGS)
    text = _LATEX_FRACTION_RE.sub(_plain_fraction, text)
    text = text.replace("\\$", "$")
    text = _LATEX_FRACTION_SHORT_RE.sub(r" \1/\2 ", text)
    text = _LATEX_THOUSANDS_RE.sub(",", text)
    return _LATEX_NOISE_RE.sub(" ", text).replace("\\", " ")


def _plain_fraction(match: re.Match[str]) -> str:
    """``a/b`` for a LaTeX fraction, one minus in front when an odd number of its parts carry one."""
    numerator, denominator = match["num"], match["den"]
    negative = (bool(match["sign"]) + numerator.startswith("-") + denominator.startswith("-")) % 2
    return f" {'-' if negative else ''}{numerator.lstrip('-')}/{denominator.lstrip('-')} "


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
    if match["whole"]:  # 2 1/2
        if len(match["whole"]) > MAX_INTEGER_DIGITS:
            return None
        value += int(match["whole"])
    return -value if match["sign"] else value


def _first_number(text: str) -> Fraction | None:
    """The first number in already-cleaned ``text``; None when there is none or it cannot be read (``1/0``,
    a 40-digit run): the number a span states is its first, never the next one after an unreadable one."""
    match = _NUMBER_RE.search(text)
    return None if match is None else _to_fraction(match)


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
    after = span.rpartition("=")[2]
    return _first_number(after) if _NUMBER_RE.search(after) else _first_number(span)


_EXPONENT_RE = re.compile(r"\s*-?[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]{1,3}\s*")  # a float written as 2e-05


def normalize_answer(span: str | float | int | None) -> str | None:
    """Canonical number stated by ``span`` (``"$1,000.00"`` -> ``"1000"``), or None if it has none."""
    if span is None:
        return None
    if isinstance(span, (int, float)) or _EXPONENT_RE.fullmatch(str(span)):
        try:  # 2e-05 is 1/50000 (repr keeps a float's shortest exact decimal), never 2
            return canonical(Fraction(repr(span) if isinstance(span, float) else str(span).strip()))
        except (ValueError, OverflowError):  # nan, inf
            return None
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
_HASH_RE = re.compile(r"####[ \t]*([-\u2212\uff0d$€£¥₹\uff04\uffe5\\.0-9][^\n]*)")  # any minus _clean reads
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
_BARRIER_RE = re.compile(
    r"[^\W0-9dtfrac_]|[<>=#*()\[\]|&@?\"'+^~`]|(?<=[0-9])\s(?=[0-9])(?![0-9]+\s?/\s?[0-9])"
)
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


def answer_tag(text: str) -> str | None:
    """The content of the last closed ``<answer>...</answer>``, or None."""
    return _last_group(_ANSWER_TAG_RE, text)


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


def canonical_or_none(value: Fraction | None) -> str | None:
    return None if value is None else canonical(value)


def gold_answer(answer: Any) -> str | None:
    """Canonical gold number of a reference: the value after ``####`` in a solution, or a bare number."""
    if isinstance(answer, str) and "####" in answer:
        return normalize_answer(_last_group(_HASH_RE, answer))
    return normalize_answer(answer) if isinstance(answer, (str, int, float)) else None
