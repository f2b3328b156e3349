"""Finding checkpoints to resume from, and refusing resumes that would mix runs.

transformers writes ``trainer_state.json`` last when it saves a checkpoint, so a checkpoint directory
without a readable one was interrupted mid-save and is never picked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from grpolab.errors import UserError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
RUN_INFO = "grpolab_run.json"


def is_complete(checkpoint: Path) -> bool:
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return True


def latest_complete(output_dir: Path) -> Path | None:
    candidates = []
    for child in output_dir.glob("checkpoint-*"):
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and is_complete(child):
            candidates.append((int(match.group(1)), child))
    return max(candidates)[1] if candidates else None


def resolve_resume(resume: str | None, output_dir: Path) -> str | None:
    """The checkpoint path to resume from, or None for a fresh start."""
    if not resume:
        return None
    if resume == "latest":
        found = latest_complete(output_dir)
        if found is None:
            raise UserError(f"--resume: no complete checkpoint in {output_dir}; train without --resume to start fresh")
        return str(found)
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume: {resume} is not a checkpoint directory")
    if not is_complete(path):
        raise UserError(f"--resume: {resume} is incomplete (no readable trainer_state.json); pick an earlier checkpoint")
    return str(path)


def check_same_run(output_dir: Path, identity: dict) -> None:
    """Refuse to resume into a run directory trained with another model or task."""
    info_path = output_dir / RUN_INFO
    if not info_path.is_file():
        return
    previous = json.loads(info_path.read_text()).get("identity", {})
    changed = [key for key in identity if key in previous and previous[key] != identity[key]]
    if changed:
        details = ", ".join(f"{key}: {previous[key]!r} -> {identity[key]!r}" for key in changed)
        raise UserError(f"cannot resume {output_dir}: the config changes {details}; use a new --output_dir")
