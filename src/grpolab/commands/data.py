"""``grpolab data TASK``: generate a task's rows and write them as JSONL, one sub-command per task.

Each row is ``{"question": ..., "answer": ..., "label": ..., "split": ...}``, the format ``--data_file``
reads back. Generation is deterministic for a seed, and each task keeps its test items out of train.
Task modules are imported only when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpolab.errors import UserError

EXAMPLE = """examples:
  grpolab data sudoku --num 1000 --num_test 200 --blanks simple,medium,difficult --out data/sudoku.jsonl
  grpolab data sudoku --num 200 --seed 1 --blanks 12 --split test --out data/sudoku-difficult.jsonl
  grpolab data arith --num 2000 --levels add-20,addsub-20 --out data/arith.jsonl
  grpolab data reasoning_gym --dataset leg_counting --num 2000 --num_test 200 --out data/legs.jsonl
"""
SPLITS = ("train", "test")

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class DataTask:
    """One ``grpolab data`` sub-command: its task-specific flags and how it makes one split's rows."""

    summary: str
    add_options: Callable[[argparse.ArgumentParser], None]
    generate: Callable[[argparse.Namespace, str], Rows]  # (args, split) -> rows


def _sudoku_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blanks",
        default="simple,medium,difficult",
        help="blank counts or labels generated in turn: simple (4), medium (8), difficult (12), "
        "or any count from 1 to 12, e.g. 4,6,8",
    )


def _sudoku_rows(args: argparse.Namespace, split: str) -> Rows:
    from grpolab.tasks import sudoku

    return sudoku.generate_rows(_split_num(args, split), args.seed, split, args.blanks)


def _arith_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--levels", default="add-20", help="comma-separated difficulty levels, e.g. add-20,mixed-12"
    )


def _arith_rows(args: argparse.Namespace, split: str) -> Rows:
    from grpolab.tasks import arith

    levels = tuple(level.strip() for level in args.levels.split(",") if level.strip())
    return arith.generate_rows(_split_num(args, split), args.seed, split, levels)


def _gym_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a reasoning-gym dataset name, e.g. leg_counting")
    parser.add_argument("--task_options", default="{}", help='its config as JSON, e.g. \'{"max_animals": 5}\'')


def _gym_rows(args: argparse.Namespace, split: str) -> Rows:
    from grpolab.commands.eval import _json_options
    from grpolab.tasks import gym

    gym.check_name(args.dataset)
    rows = gym.generate_rows(args.dataset, split, _split_num(args, split), args.seed, _json_options(args.task_options))
    return [{key: value for key, value in row.items() if key != "prompt"} for row in rows]


DATA_TASKS: dict[str, DataTask] = {
    "sudoku": DataTask("4x4 Sudoku puzzles with unique solutions.", _sudoku_options, _sudoku_rows),
    "arith": DataTask("Arithmetic questions (a + b, a - b, a * b).", _arith_options, _arith_rows),
    "reasoning_gym": DataTask("Any reasoning-gym dataset (needs grpolab[gym]); train with --task "
                              "reasoning_gym/NAME.", _gym_options, _gym_rows),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", metavar="TASK", title="tasks", required=True)
    for name, spec in DATA_TASKS.items():
        task_parser = tasks.add_parser(
            name,
            help=spec.summary,
            description=spec.summary,
            epilog=_task_examples(name),
            formatter_class=parser.formatter_class,
        )
        _common_options(task_parser, name)
        spec.add_options(task_parser)


def _task_examples(name: str) -> str:
    lines = [line for line in EXAMPLE.splitlines() if line.strip().startswith(f"grpolab data {name} ")]
    return "examples:\n" + "\n".join(lines)


def _common_options(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--num", type=int, default=1000, help="rows per split")
    parser.add_argument("--num_test", type=int, default=None,
                        help="test rows (default: --num, or every distinct test row when the settings hold fewer)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same rows")
    parser.add_argument("--split", choices=(*SPLITS, "both"), default="both", help="which split(s) to write")
    parser.add_argument(
        "--out", type=Path, default=Path("data") / f"{name}.jsonl", help="JSONL file to write"
    )


def _split_num(args: argparse.Namespace, split: str) -> int:
    return args.num_test if split == "test" and args.num_test is not None else args.num


def run(args: argparse.Namespace) -> int:
    _check_counts(args)
    splits = SPLITS if args.split == "both" else (args.split,)
    rows = [row for split in splits for row in _split_rows(args, split)]
    write_jsonl(rows, args.out)
    print(summary(rows, args.out))
    return 0


def _check_counts(args: argparse.Namespace) -> None:
    for flag, value in (("--num", args.num), ("--num_test", args.num_test)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be 1 or more, got {value}")


def _split_rows(args: argparse.Namespace, split: str) -> Rows:
    rows = DATA_TASKS[args.task].generate(args, split)
    asked = _split_num(args, split)
    # Test rows are distinct, and small settings hold few (110 add-20 sums): by default take them all.
    takes_what_exists = split == "test" and args.num_test is None and args.split == "both"
    if len(rows) < asked and not takes_what_exists:
        flag = "--num_test" if split == "test" and args.num_test is not None else "--num"
        raise UserError(
            f"{args.task} has only {len(rows)} distinct {split} rows with these settings, not {asked}: "
            f"pass {flag} {len(rows)} or less, or choose harder settings"
        )
    return [{**row, "split": split} for row in rows]


def write_jsonl(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """Write ``rows`` one JSON object a line, creating the parent folder."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}; choose another --out") from None


def summary(rows: Sequence[dict[str, Any]], out: Path) -> str:
    """``wrote N rows to FILE`` and a table of row counts per split and label, in order of appearance."""
    counts = Counter((row["split"], row["label"]) for row in rows)
    width = max([len("label"), *(len(label) for _, label in counts)])
    lines = [f"wrote {len(rows)} rows to {out}", f"{'split':<6} {'label':<{width}} {'rows':>6}"]
    lines += [f"{split:<6} {label:<{width}} {count:>6}" for (split, label), count in counts.items()]
    return "\n".join(lines)
