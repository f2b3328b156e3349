"""Finding checkpoints to resume from, and refusing resumes that would mix runs.

transformers writes ``trainer_state.json`` last when it saves a checkpoint, so a checkpoint directory
without a readable one was interrupted mid-save and is never picked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from grpolab.errors import UserError
from grpolab.rundir import RUN_INFO, damaged_weights

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


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
        if found is None and holds_run(output_dir):
            return None  # stopped before its first checkpoint: nothing to continue, so start from step 0
        if found is None:
            raise UserError(
                f"--resume: no complete checkpoint in {output_dir}; train without --resume to start fresh"
            )
        return _whole(found)
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume: {resume} is not a checkpoint directory")
    if not is_complete(path):
        raise UserError(
            f"--resume: {resume} is incomplete (no readable trainer_state.json); pick an earlier checkpoint"
        )
    return _whole(path)


def _whole(checkpoint: Path) -> str:
    """``checkpoint`` as a path, after checking that its weights load."""
    damage = damaged_weights(checkpoint)
    if damage:
        raise UserError(
            f"--resume: {damage}: resume from an earlier checkpoint with --resume "
            f"{checkpoint.parent}/checkpoint-N, or train again in a new --output_dir"
        )
    return str(checkpoint)


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


# What a run writes into its folder before its first checkpoint, and nothing else.
_RUN_FILES = ("metrics.jsonl", "samples.jsonl", "reward_curve.png", "loss_curve.png", "config.yaml", RUN_INFO)


def clear_unsaved_run(output_dir: Path) -> list[str]:
    """Remove what a run that stopped before its first checkpoint left (its logs, incomplete checkpoints).

    Only called when resuming finds no complete checkpoint and no adapter: no weights are lost, and the
    logs would otherwise gain a second step 1. Returns the names removed.
    """
    if int(os.environ.get("RANK", 0)) != 0:  # every rank resumes; one deletes (review F16)
        return []
    removed = [name for name in _RUN_FILES if (output_dir / name).is_file()]
    for name in removed:
        (output_dir / name).unlink(missing_ok=True)
    for child in output_dir.glob("checkpoint-*"):
        if child.is_dir() and _CHECKPOINT.match(child.name) and not is_complete(child):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def holds_run(output_dir: Path) -> bool:
    """True when ``output_dir`` holds a run's metrics, a saved adapter or a complete checkpoint."""
    if (output_dir / "metrics.jsonl").exists() or (output_dir / "adapter_config.json").exists():
        return True
    return output_dir.is_dir() and latest_complete(output_dir) is not None


# Write failures that are the machine's state, not a bug: a full disk or quota, a file-size limit, a
# read-only or forbidden folder.
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def fresh_run(output_dir: Path, resume_from: str | None) -> Iterator[None]:
    """Leave nothing behind when a fresh run fails before its first checkpoint; a full disk is one line.

    Without this, a run stopped by a failing reward at step 1 leaves metrics.jsonl behind, and the same
    command then refuses to start ("already holds a run") while --resume finds no checkpoint.
    """
    before = set(output_dir.iterdir()) if output_dir.is_dir() else None
    try:
        yield
    except BaseException as error:
        if resume_from is None and int(os.environ.get("RANK", "0")) == 0 and not _saved_anything(output_dir):
            _remove_new_entries(output_dir, before)
        if isinstance(error, OSError) and error.errno in _WRITE_ERRORS:
            raise UserError(
                f"cannot write to {output_dir} ({error.strerror}); free some space or choose "
                "another --output_dir"
            ) from error
        raise


def _saved_anything(output_dir: Path) -> bool:
    return output_dir.is_dir() and (
        latest_complete(output_dir) is not None or (output_dir / "adapter_config.json").exists()
    )


def _remove_new_entries(output_dir: Path, before: set[Path] | None) -> None:
    if before is None:
        shutil.rmtree(output_dir, ignore_errors=True)
        return
    for entry in set(output_dir.iterdir()) - before if output_dir.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def agree_on_resume(resume_from: str | None, gather=None) -> None:
    """Every process of a multi-node run resumes from the same checkpoint step (issue 30): nodes without a
    shared filesystem each find their own newest one, and a node whose disk lacks rank 0's refuses in one
    line (on every rank, so none waits). ``gather(value) -> list`` defaults to torch's all_gather_object."""
    if gather is None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return

        def gather(value):
            out = [None] * dist.get_world_size()
            dist.all_gather_object(out, value)
            return out

    steps = gather(Path(resume_from).name if resume_from else "a fresh start")
    odd = [rank for rank, step in enumerate(steps) if step != steps[0]]
    if odd:
        raise UserError(f"--resume: rank 0 resumes from {steps[0]} but rank {odd[0]} from {steps[odd[0]]}: "
                        "copy rank 0's checkpoint to every node (or use a shared filesystem; without one "
                        "train with --save_on_each_node true)")
