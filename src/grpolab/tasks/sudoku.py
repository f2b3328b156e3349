"""4x4 Sudoku: puzzles with unique solutions, a lenient grid parser and one strict scorer.

A grid is a 16-character string read row by row; a puzzle (``question``) writes ``_`` for a blank. All
288 valid grids are enumerated once. A puzzle is made by blanking cells of a grid in random order, keeping
a blank only while the puzzle still has exactly one solution.

Splits are by solution grid: a fixed hash of the grid string, independent of any seed, sends about 20% of
the 288 grids to ``test``, so no test solution is ever trained on.

Scoring never compares with the stored answer for correctness: a grid is solved when it is a valid Sudoku
that keeps every clue, so puzzles with several solutions (the reference project's files have some) are
scored right. This module imports no heavy library; ``load`` imports ``datasets`` when it runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grpolab.errors import UserError
from grpolab.tasks import base, jsonl
from grpolab.tasks.base import ChatInputError, ChatSupport, Option, Task, Verdict, verdicts
from grpolab.tasks.sudoku_grids import (
    BLANK,
    CELLS,
    DEFAULT_NUM,
    DIGITS,
    MAX_BLANKS,
    ROWS,
    SPLITS,
    blank_label,
    check_split,
    count_solutions,
    generate_rows,
    is_valid_grid,
    keeps_clues,
    solutions,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ data files


def row_problem(record: Mapping[str, Any]) -> str | None:
    """What is wrong with one data-file record (a JSON object with question and answer), or None."""
    question, answer = record["question"], record["answer"]
    if not isinstance(question, str) or len(question) != CELLS or not set(question) <= set(DIGITS + BLANK):
        return f"question {_short(question)} is not 16 characters of 1-4 and _"
    if not isinstance(answer, str) or not is_valid_grid(answer):
        return f"answer {_short(answer)} is not a valid 4x4 Sudoku grid of 16 digits 1-4"
    if not keeps_clues(question, answer):
        return f"answer {answer} does not agree with the clues of question {question}"
    if record.get("split", "train") not in SPLITS:
        return f"split {_short(record['split'])} is not one of {', '.join(SPLITS)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_rows(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[dict[str, str]], int]:
    """Puzzle rows of a JSONL file and the number of bad rows skipped; bad rows raise unless skipped.

    No uniqueness check: files of other projects may hold puzzles with several solutions, which the
    scorer handles. A missing ``label`` is derived from the blank count.
    """
    records, skipped = jsonl.read_rows(path, problem=row_problem, skip_bad_rows=skip_bad_rows,
                                       missing_hint=f"generate one with 'grpolab data sudoku --out {path}'")
    return [_clean_row(record) for record in records], skipped


def _clean_row(record: Mapping[str, Any]) -> dict[str, str]:
    question = record["question"]
    row = {"question": question, "answer": record["answer"]}
    row["label"] = str(record.get("label") or blank_label(question.count(BLANK)))
    if "split" in record:
        row["split"] = record["split"]
    return row


# -------------------------------------------------------------------------------------------- prompts

SYSTEM_PROMPT = (
    "You solve 4x4 Sudoku puzzles. Fill every blank (_) with a digit from 1 to 4 so that each row, each "
    "column and each of the four 2x2 boxes contains 1, 2, 3 and 4 exactly once. Keep every given digit. "
    "You may reason first. Then write the complete grid, 4 lines of 4 digits, inside <answer></answer>, "
    "for example:\n<answer>\n1234\n3412\n2143\n4321\n</answer>"
)
USER_PROMPT = "Solve this 4x4 Sudoku:\n\n{grid}"


def render_grid(question: str) -> str:
    """The puzzle as 4 lines of space-separated cells, ``_`` for a blank."""
    return "\n".join(" ".join(question[cell] for cell in row) for row in ROWS)


def make_prompt(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT.format(grid=render_grid(question))},
    ]


def reference(row: Mapping[str, Any]) -> str:
    """The stored solution as the prompt asks for it: 4 rows inside answer tags."""
    grid = row["answer"]
    return (
        "<answer>\n"
        + "\n".join(grid[row_start : row_start + 4] for row_start in range(0, CELLS, 4))
        + "\n</answer>"
    )


def load(
    split: str = "train",
    data_file: str | Path | None = None,
    num: int | None = None,
    seed: int = 0,
    **options: Any,
) -> Any:
    """A ``datasets.Dataset`` with columns prompt, question, answer and label.

    With ``data_file``: its rows in file order, keeping only rows whose ``split`` field (if any) is
    ``split``, at most ``num`` of them; ``seed`` and ``blanks`` are unused. Without: ``num`` (default
    DEFAULT_NUM) fresh puzzles of ``split``, fixed by ``seed``. ``options`` are those of TASK.options.
    """
    import datasets

    check_split(split)
    TASK.check_options(options)
    base.check_num(num)
    if data_file is None:
        rows = generate_rows(DEFAULT_NUM if num is None else num, seed, split, options.get("blanks"))
    else:
        rows = _file_rows(
            data_file, split, base.parse_bool("skip_bad_rows", options.get("skip_bad_rows", False))
        )[:num]
    columns = [{**_columns(row), "prompt": make_prompt(row["question"])} for row in rows]
    return datasets.Dataset.from_list(columns)


def _file_rows(data_file: str | Path, split: str, skip_bad_rows: bool) -> list[dict[str, str]]:
    rows, _ = read_rows(data_file, skip_bad_rows)
    rows = [row for row in rows if row.get("split", split) == split]
    if not rows:
        raise UserError(f"data file {data_file} has no usable rows for split '{split}'")
    return rows


def _columns(row: Mapping[str, str]) -> dict[str, str]:
    return {key: row[key] for key in ("question", "answer", "label")}


# ------------------------------------------------------------------------------------- answer parsing

# The answer is the block opened by the LAST "<answer>"; when that block has no "</answer>" the output is
# unparseable (an answer cut off mid-way, or one the model started again, is not a final answer). The tags
# are found with str.rfind/str.find, which are linear, rather than a lazy DOTALL regex, which rescans the
# rest of the text for every "<answer>" and so is quadratic on long outputs.
OPEN_TAG, CLOSE_TAG = "<answer>", "</answer>"

# Cells are ASCII [0-9], never \d: \d also matches full-width and other Unicode digits, which are rejected.
# Digits 0 and 5-9 parse (the format was followed) but can never solve. Each separator pattern is
# unambiguous ([ \t]* then an optional comma, never two adjacent stars over the same characters), so a long
# run of spaces cannot cause catastrophic backtracking.
_CELL = "[0-9]"
_CELL_SEPARATOR = r"[ \t]*(?:,[ \t]*)?"  # nothing, spaces, or a comma with optional spaces
_ROW_SEPARATOR = r"\s*(?:[,;|]\s*)?"  # whitespace incl. newlines, optionally one of , ; |
_TEXT_ROW = rf"{_CELL}(?:{_CELL_SEPARATOR}{_CELL}){{3}}"
_LIST_END = r"\s*(?:,\s*)?\]"  # optional trailing comma, then the closing bracket
_LIST_ROW = rf"\[\s*{_CELL}(?:\s*,\s*{_CELL}){{3}}{_LIST_END}"
# "1234\n3412\n2143\n4321", "1234341221434321", "1 2 3 4 | 3 4 1 2 ...", "1,2,3,4,\n3,4,1,2,..."
_TEXT_GRID = re.compile(rf"{_TEXT_ROW}(?:{_ROW_SEPARATOR}{_TEXT_ROW}){{3}}")
# [[1,2,3,4],[3,4,1,2],[2,1,4,3],[4,3,2,1]] and the flat [1,2,3,4,3,4,...]
_LIST_GRID = re.compile(rf"\[\s*{_LIST_ROW}(?:\s*,\s*{_LIST_ROW}){{3}}{_LIST_END}")
_FLAT_LIST_GRID = re.compile(rf"\[\s*{_CELL}(?:\s*,\s*{_CELL}){{15}}{_LIST_END}")
_GRID_PATTERNS = (_TEXT_GRID, _LIST_GRID, _FLAT_LIST_GRID)
_ASCII_DIGIT = re.compile("[0-9]")


def answer_block(text: str) -> str | None:
    """Text inside the last ``<answer>...</answer>`` block, or None if the last one is missing or open."""
    start = text.rfind(OPEN_TAG)
    if start < 0:
        return None
    end = text.find(CLOSE_TAG, start)
    return None if end < 0 else text[start + len(OPEN_TAG) : end]


def parse_grid(text: str) -> str | None:
    """The 16 cells of the answer grid as a string of ASCII digits, or None when unparseable.

    Accepted inside the last answer block (surrounding whitespace ignored): 4 lines of 4 digits, one
    16-digit string, digits separated by spaces or commas with optional row separators (newline , ; |),
    and a Python list of 4 lists of 4 digits (or a flat list of 16). Anything else, including an unclosed
    last ``<answer>``, 15 or 17 digits and non-ASCII digits, is None, which scores 0.
    """
    block = answer_block(text)
    if block is None:
        return None
    content = block.strip()
    if not any(pattern.fullmatch(content) for pattern in _GRID_PATTERNS):
        return None
    return "".join(_ASCII_DIGIT.findall(content))


# ------------------------------------------------------------------------------------------- scoring


def partial_credit(question: str, answer: str, grid: str) -> float:
    """Fraction of the question's blanks where ``grid`` has the stored answer's digit; 0 if a clue changed.

    For a puzzle with several solutions this compares with the stored one only; ``score`` gives 1.0 to
    any valid solution before this is asked.
    """
    if not keeps_clues(question, grid):
        return 0.0
    blanks = [cell for cell, char in enumerate(question) if char == BLANK]
    if not blanks:
        return 0.0
    return sum(grid[cell] == answer[cell] for cell in blanks) / len(blanks)


def score(completion: str, row: Mapping[str, Any]) -> Verdict:
    """Strict verdict: solved when the parsed grid is a valid Sudoku that keeps every clue of the question."""
    grid = parse_grid(completion)
    if grid is None:
        return Verdict(solved=False, parsed=None)
    question = row["question"]
    solved = is_valid_grid(grid) and keeps_clues(question, grid)
    partial = 1.0 if solved else partial_credit(question, row["answer"], grid)
    return Verdict(solved=solved, parsed=grid, partial=partial, format_ok=True)


def sudoku_solved(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the final grid is a valid Sudoku keeping every clue, else 0.0: the accuracy we report."""
    return [float(verdict.solved) for verdict in verdicts(score, completions, kwargs)]


def sudoku_partial(completions: list[Any], **kwargs: Any) -> list[float]:
    """Share of blanks filled right, in [0, 1], 0 when a clue was changed, 1.0 when solved.

    Gives a gradient before the first full solve: in a group where nobody solves, the completion with
    more right cells still gets the higher advantage. Changing clues scores 0 so copying cells around
    is never a shortcut.
    """
    return [verdict.partial for verdict in verdicts(score, completions, kwargs)]


def cells_right(answer: str, verdict: Verdict) -> float:
    """Share of the 16 cells equal to the stored answer: clues kept and blanks filled alike; 1.0 when solved,
    0.0 when no grid parsed."""
    if verdict.solved:
        return 1.0
    if verdict.parsed is None:
        return 0.0
    return sum(cell == right for cell, right in zip(verdict.parsed, answer, strict=True)) / CELLS


def sudoku_cells(completions: list[Any], **kwargs: Any) -> list[float]:
    """Share of the grid's 16 cells that are right (clues kept count), in [0, 1], 1.0 when solved.

    Denser than ``sudoku_partial``: a grid that changed one clue still earns for the cells it got right, so
    a short warm-up whose grids rarely keep every clue still gets a spread in most groups, towards copying
    the clues and then filling the blanks. ``make demo-sudoku``'s GRPO recipe uses it in place of
    ``sudoku_partial``: groups without signal 62% -> 4%, +14 / +9 points on held-out simple puzzles
    (docs/benchmarks.md, Sudoku demo).
    """
    rows = base.rows_from_kwargs(len(completions), kwargs)
    return [cells_right(row["answer"], verdict)
            for row, verdict in zip(rows, verdicts(score, completions, kwargs), strict=True)]


def sudoku_format(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the last ``<answer>`` block holds a parseable 16-cell grid, else 0.0."""
    return [float(verdict.format_ok) for verdict in verdicts(score, completions, kwargs)]


REWARDS = {
    function.__name__: function
    for function in (sudoku_solved, sudoku_partial, sudoku_cells, sudoku_format)
}
# Solving is what we want (1.0). Partial credit is worth half (0.5): an unsolved grid has at most
# (blanks-1)/blanks right cells, so any solve (1.0 + 0.5 + 0.2) beats every near miss (< 0.5 + 0.2).
# Format is a small nudge (0.2): a signal before any grid parses, and far enough below solving (1.0) that a
# well-formed wrong grid is never worth settling for.
DEFAULT_REWARDS = ("sudoku_solved", "sudoku_partial", "sudoku_format")
DEFAULT_WEIGHTS = (1.0, 0.5, 0.2)


def read_question(text: str) -> str:
    """A puzzle typed in chat: 16 cells row by row, blanks as _, . or 0; ChatInputError when unusable."""
    puzzle = re.sub(r"\s+", "", text).replace(".", BLANK).replace("0", BLANK)
    if len(puzzle) != CELLS or not set(puzzle) <= set(DIGITS + BLANK):
        raise ChatInputError(
            "type the puzzle as 16 cells read row by row, digits 1-4 and _ (or . or 0) "
            "for blanks, e.g. 1_3_4__2___12_43"
        )
    if count_solutions(puzzle, limit=1) == 0:
        raise ChatInputError(f"puzzle {puzzle} has no solution: check the digits")
    return puzzle


def _no_gold(text: str) -> str:
    raise ChatInputError(
        "no answer needed: a sudoku reply is right when its grid is valid and keeps every clue"
    )


def grid_details(question: str, grid: str) -> str:
    yes = {True: "yes", False: "no"}
    return f"valid grid: {yes[is_valid_grid(grid)]} | keeps clues: {yes[keeps_clues(question, grid)]}"


TASK = Task(
    name="sudoku",
    load=load,
    prompt=make_prompt,
    score=score,
    rewards=REWARDS,
    default_rewards=DEFAULT_REWARDS,
    default_weights=DEFAULT_WEIGHTS,
    options={
        "blanks": Option(
            "blank counts or labels to generate in turn, e.g. 4,8,12 or simple,medium,difficult "
            f"(1 to {MAX_BLANKS})",
            "simple,medium,difficult",
        ),
        "skip_bad_rows": Option(
            "skip bad rows of a data file (their count is logged) instead of stopping", False, load_only=True
        ),
    },
    generate=generate_rows,
    reference=reference,
    chat=ChatSupport(
        hint="type a puzzle as 16 cells row by row, _ for a blank, e.g. 1_3_4__2___12_43",
        example="1_3_4__2___12_43",
        read=read_question,
        gold=lambda puzzle: next(solutions(puzzle)),
        read_gold=_no_gold,
        details=grid_details,
        show_gold=False,
    ),
)
