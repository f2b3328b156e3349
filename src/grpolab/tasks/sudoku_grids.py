"""4x4 Sudoku grids and puzzles: validity, solving, the train/test split of solution grids, and generation.

A grid is a 16-character string read row by row; a puzzle writes ``_`` for a blank. All 288 valid grids
are enumerated once. A puzzle is made by blanking cells of a grid in random order, keeping a blank only
while the puzzle still has exactly one solution. Splits are by solution grid: a fixed hash of the grid
string, independent of any seed, sends about 20% of the 288 grids to ``test``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from grpolab.errors import UserError

logger = logging.getLogger(__name__)


DIGITS = "1234"


BLANK = "_"


CELLS = 16


SPLITS = ("train", "test")


# Blank counts of the named difficulties. 12 blanks leave 4 clues, the fewest a 4x4 puzzle with a unique
# solution can have, so MAX_BLANKS is also the most any puzzle here can have.
LABEL_BLANKS = {"simple": 4, "medium": 8, "difficult": 12}


MAX_BLANKS = 12


DEFAULT_BLANKS = (4, 8, 12)


DEFAULT_NUM = 1000


# Percentage of the 288 solution grids that the hash aims to put in the test split (it puts 63 there).
TEST_PERCENT = 20


# Greedy blanking reaches 12 blanks from a random cell order about 60% of the time (4-8 blanks: always),
# so 100 orders make a failure on a grid that has a 12-blank unique puzzle practically impossible.
MAX_ATTEMPTS = 100


# Draws in a row that only repeat earlier puzzles before a blank count counts as used up: past that point
# under 1 draw in MAX_DUPLICATE_DRAWS would still find a new puzzle, so going on costs more than it adds.
MAX_DUPLICATE_DRAWS = 200


ROWS = tuple(tuple(range(row * 4, row * 4 + 4)) for row in range(4))


_COLUMNS = tuple(tuple(range(column, CELLS, 4)) for column in range(4))


_BOXES = tuple(
    tuple((top + row) * 4 + left + column for row in range(2) for column in range(2))
    for top in (0, 2)
    for left in (0, 2)
)


UNITS = ROWS + _COLUMNS + _BOXES


PEERS = tuple(
    frozenset(other for unit in UNITS if cell in unit for other in unit) - {cell} for cell in range(CELLS)
)


def is_valid_grid(grid: str) -> bool:
    """True when ``grid`` is 16 digits 1-4 and every row, column and 2x2 box holds each digit once."""
    if len(grid) != CELLS or not set(grid) <= set(DIGITS):
        return False
    return all(len({grid[cell] for cell in unit}) == 4 for unit in UNITS)


def keeps_clues(question: str, grid: str) -> bool:
    """True when ``grid`` has the same digit as ``question`` in every cell that is not blank."""
    return len(grid) == len(question) and all(q in (BLANK, g) for q, g in zip(question, grid, strict=True))


def solutions(puzzle: str) -> Iterator[str]:
    """Every valid grid that fills the blanks of ``puzzle`` (backtracking, first blank first)."""
    blank = puzzle.find(BLANK)
    if blank < 0:
        if is_valid_grid(puzzle):
            yield puzzle
        return
    used = {puzzle[peer] for peer in PEERS[blank]}
    for digit in DIGITS:
        if digit not in used:
            yield from solutions(puzzle[:blank] + digit + puzzle[blank + 1 :])


def count_solutions(puzzle: str, limit: int = 2) -> int:
    """Number of solutions of ``puzzle``, counting no further than ``limit`` (2 decides uniqueness)."""
    return sum(1 for _ in itertools.islice(solutions(puzzle), limit))


@functools.cache
def all_grids() -> tuple[str, ...]:
    """The 288 valid 4x4 Sudoku grids, in lexicographic order."""
    return tuple(solutions(BLANK * CELLS))


def grid_split(grid: str) -> str:
    """``test`` for about TEST_PERCENT% of solution grids, fixed by a hash of the grid, else ``train``."""
    digest = hashlib.sha256(f"grpolab-sudoku:{grid}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT else "train"


def split_grids(split: str) -> tuple[str, ...]:
    return tuple(grid for grid in all_grids() if grid_split(grid) == split)


def blank_label(blanks: int) -> str:
    """``simple``/``medium``/``difficult`` for 4/8/12 blanks, ``blanks-N`` for any other count."""
    names = {count: name for name, count in LABEL_BLANKS.items()}
    return names.get(blanks, f"blanks-{blanks}")


def parse_blanks(spec: str | int | Iterable[str | int] | None) -> tuple[int, ...]:
    """Blank counts from ``"4,8,12"``, ``"simple,medium"``, ``"blanks-6"``, an int or a list of these."""
    if spec is None:
        return DEFAULT_BLANKS
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, int) else list(spec)
    counts = tuple(_blank_count(str(item).strip()) for item in items)
    if not counts:
        raise UserError(
            "blanks is empty: give blank counts like 4,8,12 or labels like simple,medium,difficult"
        )
    return counts


def _blank_count(item: str) -> int:
    text = item.removeprefix("blanks-")
    count = LABEL_BLANKS.get(item, int(text) if text.isascii() and text.isdigit() else None)
    if count is None or not 1 <= count <= MAX_BLANKS:
        raise UserError(
            f"bad blanks value '{item}': use a count from 1 to {MAX_BLANKS} "
            f"(a unique 4x4 puzzle keeps at least 4 clues) or one of {', '.join(LABEL_BLANKS)}"
        )
    return count


def make_puzzle(grid: str, blanks: int, rng: random.Random) -> str | None:
    """``grid`` with ``blanks`` cells blanked and one solution, or None if no cell order got there."""
    for _ in range(MAX_ATTEMPTS):
        puzzle = _blank_greedily(grid, blanks, rng.sample(range(CELLS), CELLS))
        if puzzle is not None:
            return puzzle
    return None


def _blank_greedily(grid: str, blanks: int, order: Sequence[int]) -> str | None:
    puzzle, blanked = grid, 0
    for cell in order:
        candidate = puzzle[:cell] + BLANK + puzzle[cell + 1 :]
        if count_solutions(candidate) == 1:
            puzzle, blanked = candidate, blanked + 1
            if blanked == blanks:
                return puzzle
    return None


def generate_rows(num: int, seed: int = 0, split: str = "train", blanks: Any = None) -> list[dict[str, str]]:
    """``num`` distinct unique-solution puzzles of ``split``'s grids, blank counts taken in turn.

    The same (num, seed, split, blanks) always gives the same rows; train and test draw from different
    random streams and from disjoint solution grids. A blank count whose puzzles run out (the test split
    has about 1,000 one-blank puzzles) is dropped from the turn; when all have run out the rows are fewer
    than ``num`` and a warning says so.
    """
    check_split(split)
    counts, grids = parse_blanks(blanks), split_grids(split)
    rng = random.Random(f"grpolab-sudoku:{split}:{seed}")
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    active, misses, turn = list(counts), dict.fromkeys(counts, 0), 0
    while len(rows) < num and active:
        count = active[turn % len(active)]
        row = _puzzle_row(grids, count, rng, split)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
            misses[count], turn = 0, turn + 1
            continue
        misses[count] += 1
        if misses[count] == MAX_DUPLICATE_DRAWS:
            active = [other for other in active if other != count]
    if len(rows) < num:
        logger.warning(
            "only %d distinct %s puzzles exist with blanks %s (asked for %d); using those",
            len(rows), split, ",".join(map(str, counts)), num,
        )
    return rows


def _puzzle_row(grids: Sequence[str], blanks: int, rng: random.Random, split: str) -> dict[str, str]:
    for _ in range(MAX_ATTEMPTS):  # tests check that every grid has puzzles of 1 to MAX_BLANKS blanks
        grid = rng.choice(grids)
        puzzle = make_puzzle(grid, blanks, rng)
        if puzzle is not None:
            return {"question": puzzle, "answer": grid, "label": blank_label(blanks), "split": split}
    raise RuntimeError(f"found no {blanks}-blank puzzle with a unique solution in {MAX_ATTEMPTS} grids")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
