"""Reading task rows from JSONL files, one reader for every task, with errors that name the file and line."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grpolab.errors import UserError

logger = logging.getLogger(__name__)

CHECK_PATH = "check the path given with --data_file"


def read_rows(
    path: str | Path,
    required: Sequence[str] = ("question", "answer"),
    problem: Callable[[dict[str, Any]], str | None] | None = None,
    skip_bad_rows: bool | None = None,
    missing_hint: str = CHECK_PATH,
) -> tuple[list[dict[str, Any]], int]:
    """The rows of a JSONL file and how many bad rows were skipped (UTF-8, a byte-order mark allowed; blank
    lines ignored).

    A line that is not a JSON object, lacks a ``required`` key or has a ``problem`` (a task's check, which
    returns why a row is unusable, or None) is a UserError naming ``path:line``; with ``skip_bad_rows``
    it is skipped and the count logged. ``skip_bad_rows=None``: the task offers no skipping, so the error
    does not suggest it. A missing file or one without rows is a UserError too.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: {missing_hint}")
    rows, skipped = [], 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record, why = _decode(line, required, problem)
            if why is None:
                rows.append(record)
            elif skip_bad_rows:
                skipped += 1
            else:
                hint = ", or load with skip_bad_rows=true" if skip_bad_rows is False else ""
                raise UserError(f"{path}:{number}: {why}; fix or delete the line{hint}")
    if skipped:
        logger.warning("skipped %d bad rows of %s (skip_bad_rows=true)", skipped, path)
    if not rows:
        left = f" left after skipping {skipped} bad ones" if skipped else ""
        raise UserError(f"data file {path} has no rows{left}")
    return rows, skipped


def _decode(
    line: bytes, required: Sequence[str], problem: Callable[[dict[str, Any]], str | None] | None
) -> tuple[Any, str | None]:
    """(record, None) for a usable line, else (None, why not)."""
    try:
        record = json.loads(line.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as error:
        return None, f"not valid JSON ({error.msg} at column {error.colno})"
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    missing = [key for key in required if key not in record]
    if missing:
        return (
            None,
            f"missing key {', '.join(repr(key) for key in missing)} (each row needs {', '.join(required)})",
        )
    why = problem(record) if problem else None
    return (None, why) if why else (record, None)
