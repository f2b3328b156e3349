"""Procedural arithmetic: the default task, small enough for a 135M model to learn on a laptop CPU.

Items are generated from a seed (``7 + 12``, ``15 - 4``, ``6 * 3``), so there is fresh data and no
download. A fixed hash of each expression puts it in train or test, for every seed, so nothing held out
is ever trained on.

What counts as the answer: the **last number in the reply**, read whole (``11.0`` is 11, ``14.4`` is
14.4 and matches no integer result). Small instruction models answer
"7 + 12 = 19." or "The answer is 19", so the last number is what a reader takes as the answer; a reply
that adds numbers after the result is judged on the last one, which is the point of the strict check.
``lenient`` is true when the right number appears anywhere in the reply. Only the last 10,000 characters
of a reply are read (``MAX_GRADED_CHARS``, shared with gsm8k); numbers are ASCII digits, and "-", U+2212
and U+FF0D are minus signs, in every task's grader.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from grpolab.errors import UserError
from grpolab.tasks import base
from grpolab.tasks.base import MAX_GRADED_CHARS, ChatInputError, ChatSupport, Option, Task, Verdict, verdicts

# Measured on SmolLM2-135M-Instruct (add-20, 100 test items, greedy): this wording gets 46% strict,
# "What is X?" alone 36%, a system prompt asking for just the number 25% (it then answers "The answer is"
# with a wrong number). The model's own default system prompt is kept.
USER_TEMPLATE = "What is {expression}? Answer with just the number."

# Difficulty levels: operation set and largest operand. The default recipe trains on "add-20".
LEVELS: dict[str, tuple[str, int]] = {
    "add-10": ("+", 10),
    "add-20": ("+", 20),
    "add-50": ("+", 50),
    "addsub-20": ("+-", 20),
    "mixed-12": ("+-*", 12),
    "add-100": ("+", 100),
}
DEFAULT_LEVELS = ("add-20",)

# A number, with thousands separators only in groups of three ("1,000", not "1,2") and an optional
# decimal part, read whole: "11.0" is 11 and "14.4" is 14.4 (never its last digit group, 4 or 0). ASCII
# digits only: \d would also match full-width and other scripts' digits, which a reader would not take as
# the answer. The minus may be "-", U+2212 or U+FF0D (the rule of the gsm8k and sudoku graders) and counts
# only when it is not glued to a word, digit or closing bracket before it: "Result-12" is 12, "5-3" is 5
# and 3, "= -3" is -3.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])[-\u2212\uff0d])?(?<![0-9.])(?=\.?[0-9])"
    r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)?(?:\.[0-9]+)?"
)
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\uff0d": "-"})
# Longest integer read as a number. Arith results have at most 5 digits; a longer run of digits is not
# an answer, and int() refuses strings over 4,300 digits (a 100 kB reply of digits raised ValueError).
_MAX_DIGITS = 30
# A reply longer than this many characters gets no brevity credit (see arith_brevity).
_SHORT_REPLY_CHARS = 40


def make_item(rng: random.Random, level: str) -> dict[str, str]:
    operations, largest = LEVELS[level]
    a, b = rng.randint(0, largest), rng.randint(0, largest)
    op = rng.choice(operations)
    if op == "-" and b > a:
        a, b = b, a  # keep results non-negative at these levels
    return {"question": f"{a} {op} {b}", "answer": str(calculate(a, op, b)), "label": level}


def calculate(left: int, op: str, right: int) -> int:
    return {"+": left + right, "-": left - right, "*": left * right}[op]


def split_of(question: str) -> str:
    """'test' for a fixed quarter of all expressions, else 'train', the same for every seed.

    Commutative expressions are keyed with sorted operands, so "3 + 5" and "5 + 3" share a split:
    a test item is never seen in training in either order.
    """
    left, op, right = question.split()
    if op in "+*":
        left, right = sorted((left, right), key=int)
    return "test" if zlib.crc32(f"{left}{op}{right}".encode()) % 4 == 0 else "train"


def parse_levels(levels: Sequence[str] | str) -> tuple[str, ...]:
    """Difficulty levels from a list or a comma-separated string; a UserError naming unknown ones."""
    if isinstance(levels, str):
        levels = [level.strip() for level in levels.split(",") if level.strip()]
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise UserError(f"unknown arith level(s) {', '.join(unknown)}: choose from {', '.join(LEVELS)}")
    return tuple(levels)


def generate_rows(num: int, seed: int = 0, split: str = "train",
                  levels: Sequence[str] | str = DEFAULT_LEVELS) -> list[dict[str, str]]:
    """``num`` items of ``split``. Test items are distinct; train items repeat once the space is used up.

    Small levels have few expressions (441 for add-20), so test takes at most what its quarter holds.
    """
    levels = parse_levels(levels)
    rng = random.Random(f"{seed}-{split}")
    def draw(attempt: int) -> dict[str, str]:
        return make_item(rng, levels[attempt % len(levels)])

    return base.draw_split(num, draw, split, split_of, num * 200, repeat_train=True)


def make_prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": USER_TEMPLATE.format(expression=question)}]


def _number(token: str) -> Fraction | None:
    """The value of one ``_NUMBER`` match, or None when a part has more than ``_MAX_DIGITS`` digits."""
    digits = token.replace(",", "").translate(_MINUS_SIGNS)
    whole, _, decimal = digits.lstrip("-").partition(".")
    return Fraction(digits) if len(whole) <= _MAX_DIGITS and len(decimal) <= _MAX_DIGITS else None


def _text(value: Fraction | None) -> str | None:
    """``19``, ``-19`` or ``14.4``: an integral value as an integer, else its decimal."""
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    return str(value.numerator / Decimal(value.denominator))


def extract_answer(text: str) -> Fraction | None:
    """The last number in the text (thousands separators and decimals allowed), or None when there is none."""
    matches = _NUMBER.findall(text)
    return _number(matches[-1]) if matches else None


def score(completion: str, row: Mapping[str, Any]) -> Verdict:
    matches = _NUMBER.findall(completion[-MAX_GRADED_CHARS:])  # the last 10,000 characters, as in gsm8k
    value = _number(matches[-1]) if matches else None
    gold = int(row["answer"])
    solved = value == gold
    anywhere = any(_number(match) == gold for match in matches)
    return Verdict(
        solved=solved,
        parsed=_text(value),
        partial=1.0 if solved else 0.0,
        format_ok=value is not None and len(completion.strip()) <= _SHORT_REPLY_CHARS,
        lenient=anywhere,
    )


def arith_correct(completions: list, **kwargs) -> list[float]:
    """1.0 when the last number of the reply is the right result, else 0.0 (the strict metric)."""
    return [1.0 if verdict.solved else 0.0 for verdict in verdicts(score, completions, kwargs)]


def arith_brevity(completions: list, **kwargs) -> list[float]:
    """1.0 for a right reply of at most 40 characters, else 0.0: a bonus for being right briefly.

    40 characters hold "12 + 7 = 19." with room to spare; among right replies the bonus favours those
    that stop at the result, since padding the reply with more numbers is how a last-number check is most
    often lost. It pays nothing for a wrong reply, however short: GRPO scales each group's rewards by their
    spread, so in a group with no right reply even a small bonus for short replies becomes a full-strength
    push towards short wrong answers, and a run with seed 1 collapsed that way (entropy 1.8 -> 0.2 in 6
    steps, every completion the same wrong number, no signal left). Weighted 0.1 in the default recipe.
    """
    found = verdicts(score, completions, kwargs)
    return [1.0 if verdict.solved and verdict.format_ok else 0.0 for verdict in found]


def load(
    split: str = "train", data_file: str | None = None, num: int | None = None, seed: int = 0, **options: Any
):
    """Generated items as a Dataset (or rows from a JSONL with question/answer/label)."""
    TASK.check_options(options)
    base.check_num(num)
    if data_file:
        rows = base.file_rows(data_file, split, num, problem=_row_problem)
    else:
        rows = generate_rows(
            num or (100 if split == "test" else 2000), seed, split, options.get("levels", DEFAULT_LEVELS)
        )
    return base.prompted_dataset(rows, make_prompt)


_EXPRESSION = re.compile(r"[0-9]\s*[-+*/x\u00d7\u2212]\s*-?[0-9]")


def _row_problem(row: Mapping[str, Any]) -> str | None:
    """Why a data-file row is not an arith item (a Sudoku or GSM8K file is not), or None."""
    if not re.fullmatch(r"-?[0-9]+", str(row["answer"]).strip()):
        return (f"answer {str(row['answer'])[:40]!r} is not an integer; arith rows look like those "
                "'grpolab data arith' writes")
    if not _EXPRESSION.search(str(row["question"])):
        return (
            f"question {str(row['question'])[:40]!r} holds no arithmetic expression like 7 + 12; arith rows "
            "look like those 'grpolab data arith' writes"
        )
    return None


# ------------------------------------------------------------------------------------------------ chat
_TYPED_EXPRESSION = re.compile(r"\s*(-?\d+)\s*([-+*x])\s*(-?\d+)\s*")


def read_question(text: str) -> str:
    """A typed expression in the spacing the training data uses ("7+12" -> "7 + 12"); other text as typed."""
    match = _TYPED_EXPRESSION.fullmatch(text)
    if not match:
        return text.strip()
    left, op, right = match.groups()
    return f"{left} {'*' if op == 'x' else op} {right}"


def gold(question: str) -> str | None:
    """The result of a typed expression, or None for free text."""
    match = _TYPED_EXPRESSION.fullmatch(question)
    return str(calculate(int(match[1]), match[2], int(match[3]))) if match else None


def read_gold(text: str) -> str:
    if not re.fullmatch(r"-?\d+", text.strip()):
        raise ChatInputError(f"an arith answer is a whole number, got '{text}'")
    return text.strip()


TASK = Task(
    name="arith",
    load=load,
    prompt=make_prompt,
    score=score,
    rewards={"arith_correct": arith_correct, "arith_brevity": arith_brevity},
    default_rewards=("arith_correct", "arith_brevity"),
    default_weights=(1.0, 0.1),
    options={
        "levels": Option(f"comma-separated difficulty levels: {', '.join(LEVELS)}", ",".join(DEFAULT_LEVELS))
    },
    generate=generate_rows,
    reference=lambda row: str(row["answer"]),
    chat=ChatSupport(
        hint="type an expression such as 7 + 12 (+, - or *)",
        example="7 + 12",
        read=read_question,
        gold=gold,
        read_gold=read_gold,
        stand_in="0",
    ),
)
