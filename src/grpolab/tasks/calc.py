"""Arithmetic with a calculator tool: 3- and 4-digit products and sums of products, too hard for the head.

A 135M model cannot multiply 4-digit numbers, but it can learn to ask a calculator and copy the result. The
task's tool is ``calculator``; the answer is the **last integer of the final reply** (the arith grader), so
a model that calls the tool and then writes another number is wrong. A fixed hash of each expression puts it
in train or test for every seed (products keyed by their sorted operands), so nothing held out is trained on.

Levels: ``mul-3`` (3-digit x 3-digit), ``mul-4`` (4-digit x 3- or 4-digit), ``sumprod`` (a*b + c*d with
2- and 3-digit operands: one calculator call with the whole expression, or several).
"""

from __future__ import annotations

import ast
import operator
import random
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from grpolab.errors import UserError
from grpolab.tasks import arith, base
from grpolab.tasks.base import ChatSupport, Option, Task, Verdict, verdicts

SYSTEM = "You are a helpful assistant. Use the calculator for arithmetic, then answer with just the number."
USER_TEMPLATE = "What is {expression}?"
LEVELS = ("mul-3", "mul-4", "sumprod")
DEFAULT_LEVELS = ("mul-3", "sumprod")
# Largest expression the calculator evaluates, in characters, and the largest result in digits: a tool
# must answer in microseconds whatever the model writes (a ** chain or a 10,000-digit number would not).
_MAX_EXPRESSION_CHARS = 200
_MAX_RESULT_DIGITS = 40
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with integers, +, -, * and parentheses.

    Args:
        expression: the expression to evaluate, e.g. "123 * 456 + 7"
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("×", "*").strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot read {expression!r}: use integers, +, -, * and parentheses") from None
    value = _evaluate(tree.body)
    if len(str(abs(value))) > _MAX_RESULT_DIGITS:
        raise ValueError(f"result longer than {_MAX_RESULT_DIGITS} digits")
    return str(value)


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError("only integers, +, -, * and parentheses are allowed")


def make_item(rng: random.Random, level: str) -> dict[str, str]:
    if level == "mul-3":
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        question = f"{a} * {b}"
    elif level == "mul-4":
        a, b = rng.randint(1000, 9999), rng.randint(100, 9999)
        question = f"{a} * {b}"
    else:
        a, b, c, d = rng.randint(10, 99), rng.randint(100, 999), rng.randint(10, 99), rng.randint(100, 999)
        question = f"{a} * {b} + {c} * {d}"
    return {"question": question, "answer": calculator(question), "label": level}


def split_of(question: str) -> str:
    """'test' for a fixed quarter of all expressions, else 'train', the same for every seed; each product's
    operands are sorted, and a sum's terms too, so no reordering of a test item is ever trained on."""
    terms = sorted("*".join(sorted(term.split(" * "), key=int)) for term in question.split(" + "))
    return "test" if zlib.crc32("+".join(terms).encode()) % 4 == 0 else "train"


def parse_levels(levels: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(levels, str):
        levels = [level.strip() for level in levels.split(",") if level.strip()]
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        given = ", ".join(unknown) or "(none)"
        raise UserError(f"unknown calc level(s) {given}: choose from {', '.join(LEVELS)}")
    return tuple(levels)


def generate_rows(num: int, seed: int = 0, split: str = "train",
                  levels: Sequence[str] | str = DEFAULT_LEVELS) -> list[dict[str, str]]:
    """``num`` distinct items of ``split``, levels taken in turn."""
    levels = parse_levels(levels)
    rng = random.Random(f"calc-{seed}-{split}")
    def draw(attempt: int) -> dict[str, str]:
        return make_item(rng, levels[attempt % len(levels)])

    return base.draw_split(num, draw, split, split_of, num * 50)


def make_prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER_TEMPLATE.format(
        expression=question)}]


def score(completion: str, row: Mapping[str, Any]) -> Verdict:
    """The arith grader on the final reply: its last integer must be the result."""
    return arith.score(completion, row)


def calc_correct(completions: list, **kwargs) -> list[float]:
    """1.0 when the last integer of the final reply is the result, else 0.0 (the strict metric)."""
    return [1.0 if verdict.solved else 0.0 for verdict in verdicts(score, completions, kwargs)]


def reference_messages(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ideal episode: one calculator call with the whole expression, its result, the bare answer."""
    arguments = {"expression": row["question"]}
    call = {"type": "function", "function": {"name": "calculator", "arguments": arguments}}
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "calculator", "content": calculator(row["question"])},
        {"role": "assistant", "content": str(row["answer"])},
    ]


def load(split: str = "train", data_file: str | None = None, num: int | None = None, seed: int = 0,
         **options: Any):
    TASK.check_options(options)
    base.check_num(num)
    if data_file:
        rows = base.file_rows(data_file, split, num)
    else:
        rows = generate_rows(num or (100 if split == "test" else 2000), seed, split,
                             options.get("levels", DEFAULT_LEVELS))
    return base.prompted_dataset(rows, make_prompt)


TASK = Task(
    name="calc",
    load=load,
    prompt=make_prompt,
    score=score,
    rewards={"calc_correct": calc_correct},
    default_rewards=("calc_correct",),
    default_weights=(1.0,),
    options={"levels": Option(f"comma-separated levels: {', '.join(LEVELS)}", ",".join(DEFAULT_LEVELS))},
    generate=generate_rows,
    reference=lambda row: str(row["answer"]),
    reference_episode=reference_messages,
    tools=(calculator,),
    chat_template="chatml-tools",
    chat=ChatSupport(
        hint="type a product such as 123 * 456; the model may call the calculator",
        example="123 * 456",
        gold=lambda question: _gold(question),
        stand_in="0",
    ),
)


def _gold(question: str) -> str | None:
    try:
        return calculator(question)
    except ValueError:
        return None
