"""``grpolab data TASK``: generate a task's rows and write them as JSONL.

Each row is ``{"question": ..., "answer": ..., "label": ..., "split": ...}``, the format ``--data_file``
reads back. Any task with a generator works, a user's ``package.module:TASK`` too: its options become
flags (``--levels``, ``--blanks``), read from the task itself. Generation is deterministic for a seed, and
each task keeps its test items out of train.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpolab.errors import UserError

EXAMPLE = """examples:
  grpolab data sudoku --num 1000 --num_test 200 --blanks simple,medium,difficult --out data/sudoku.jsonl
  grpolab data sudoku --num 200 --seed 1 --blanks 12 --split test --out data/sudoku-difficult.jsonl
  grpolab data arith --num 2000 --levels add-20,addsub-20 --out data/arith.jsonl
  grpolab data reasoning_gym --dataset leg_counting --num 2000 --num_test 200 --out data/legs.jsonl
  grpolab data calc --num 1000 --levels mul-3,sumprod --out data/calc.jsonl      # for the calculator tool
  grpolab data guess --num 500 --out data/guess.jsonl                            # the number game
  grpolab data mypackage.tasks:TASK --num 100 --out data/mine.jsonl
"""
SPLITS = ("train", "test")
TAKES_ARGV = True  # the task named in argv adds its own options to the parser

Rows = list[dict[str, Any]]


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    from grpolab.tasks import TASK_HELP

    parser.add_argument("task", metavar="TASK", type=generating_task,
                        help=f"a task with a generator: {TASK_HELP} (reasoning_gym takes --dataset NAME)")
    parser.add_argument("--num", type=int, default=1000, help="rows per split")
    parser.add_argument(
        "--num_test",
        type=int,
        default=None,
        help="test rows (default: --num, or every distinct test row when the settings hold fewer)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same rows")
    parser.add_argument("--split", choices=(*SPLITS, "both"), default="both", help="which split(s) to write")
    parser.add_argument("--out", type=Path, help="JSONL file to write (default: data/TASK.jsonl)")
    parser.add_argument(
        "--task_options",
        default="{}",
        help="more task options as a YAML mapping or JSON, e.g. '{\"max_animals\": 5}'",
    )
    name = next(iter(argv), "")
    if name and not name.startswith("-"):
        try:
            task = generating_task(name)
        except argparse.ArgumentTypeError:
            return  # parsing TASK reports it
        options = parser.add_argument_group(f"options of {task.name}")
        for option_name, option in task.options.items():
            if not option.load_only:
                options.add_argument(
                    f"--{option_name}", default=option.default, required=option.required, help=option.help
                )


def generating_task(name: str):
    """The Task called ``name``, if it can generate its data (argparse reports anything else)."""
    from grpolab.tasks import get_task

    try:
        task = get_task(name)
    except UserError as error:
        raise argparse.ArgumentTypeError(f"invalid choice: '{name}' ({error})") from None
    if task.generate is None:
        raise argparse.ArgumentTypeError(f"invalid choice: '{name}' (it reads its data, it has no generator)")
    return task


def run(args: argparse.Namespace) -> int:
    from grpolab.tasks.base import parse_task_options

    _check_counts(args)
    task = args.task
    options = {
        **parse_task_options(args.task_options),
        **{name: getattr(args, name) for name, option in task.options.items() if not option.load_only},
    }
    task.check_options(options)
    splits = SPLITS if args.split == "both" else (args.split,)
    rows = [row for split in splits for row in _split_rows(task, options, args, split)]
    out = args.out or Path("data") / f"{task.name.replace('/', '-').replace(':', '-')}.jsonl"
    write_jsonl(rows, out)
    print(summary(rows, out))
    return 0


def _split_num(args: argparse.Namespace, split: str) -> int:
    return args.num_test if split == "test" and args.num_test is not None else args.num


def _check_counts(args: argparse.Namespace) -> None:
    for flag, value in (("--num", args.num), ("--num_test", args.num_test)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be 1 or more, got {value}")


def _split_rows(task, options: dict[str, Any], args: argparse.Namespace, split: str) -> Rows:
    asked = _split_num(args, split)
    takes_train_num = "train_num" in inspect.signature(task.generate).parameters
    if split == "test" and args.split == "both" and takes_train_num:
        options = {**options, "train_num": args.num}  # held-out rows are checked against every train row
    rows = task.generate(asked, args.seed, split, **options)
    # Test rows are distinct, and small settings hold few (110 add-20 sums): by default take them all.
    takes_what_exists = split == "test" and args.num_test is None and args.split == "both"
    if len(rows) < asked and not takes_what_exists:
        flag = "--num_test" if split == "test" and args.num_test is not None else "--num"
        raise UserError(
            f"{task.name} has only {len(rows)} distinct {split} rows with these settings, not {asked}: "
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
