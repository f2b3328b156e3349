"""Reading task rows from JSONL files with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpolab.errors import UserError


def read_rows(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a missing file, bad JSON or a missing key is a UserError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist: check the path given with --data_file")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                rows.append(_parse_line(path, number, line, required))
    if not rows:
        raise UserError(f"data file {path} has no rows")
    return rows


def _parse_line(path: Path, number: int, line: str, required: Sequence[str]) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{number}: not valid JSON ({error.msg}); fix or remove that line") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    missing = [key for key in required if key not in row]
    if missing:
        raise UserError(f"{path}:{number}: missing key(s) {', '.join(missing)}; each row needs {', '.join(required)}")
    return row
