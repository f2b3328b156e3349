"""Resume picks the newest complete checkpoint and refuses to mix runs."""

from __future__ import annotations

import json

import pytest

from grpolab import checkpoints
from grpolab.errors import UserError


def make_checkpoint(root, step, complete=True, state_text=None):
    directory = root / f"checkpoint-{step}"
    directory.mkdir()
    if complete:
        (directory / "trainer_state.json").write_text(state_text or json.dumps({"global_step": step}))
    return directory


def test_latest_complete_skips_half_written_checkpoints(tmp_path):
    make_checkpoint(tmp_path, 2)
    good = make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 12, complete=False)  # killed before trainer_state.json
    make_checkpoint(tmp_path, 14, state_text='{"global_st')  # killed while writing it
    (tmp_path / "checkpoint-99.tmp").mkdir()
    assert checkpoints.latest_complete(tmp_path) == good
    assert checkpoints.resolve_resume("latest", tmp_path) == str(good)


def test_numeric_not_lexical_order(tmp_path):
    make_checkpoint(tmp_path, 9)
    newest = make_checkpoint(tmp_path, 10)
    assert checkpoints.latest_complete(tmp_path) == newest


@pytest.mark.parametrize(
    ("resume", "message"),
    [("latest", "no complete checkpoint"), ("missing-dir", "is not a checkpoint directory")],
)
def test_resume_errors(tmp_path, resume, message):
    with pytest.raises(UserError, match=message):
        checkpoints.resolve_resume(resume if resume == "latest" else str(tmp_path / resume), tmp_path)


def test_resume_from_an_incomplete_path_is_refused(tmp_path):
    partial = make_checkpoint(tmp_path, 3, complete=False)
    with pytest.raises(UserError, match="incomplete"):
        checkpoints.resolve_resume(str(partial), tmp_path)


def test_no_resume_means_fresh(tmp_path):
    assert checkpoints.resolve_resume(None, tmp_path) is None


def test_changing_model_or_task_on_resume_is_refused(tmp_path):
    (tmp_path / checkpoints.RUN_INFO).write_text(json.dumps({"identity": {"model": "a", "task": "arith"}}))
    checkpoints.check_same_run(tmp_path, {"model": "a", "task": "arith"})
    with pytest.raises(UserError, match="the config changes task: 'arith' -> 'sudoku'"):
        checkpoints.check_same_run(tmp_path, {"model": "a", "task": "sudoku"})
