"""Resume picks the newest complete checkpoint and refuses to mix runs."""

from __future__ import annotations

import json

import pytest

from grpolab import rundir
from grpolab.errors import UserError
from grpolab.training import checkpoints


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
    (tmp_path / rundir.RUN_INFO).write_text(json.dumps({"identity": {"model": "a", "task": "arith"}}))
    checkpoints.check_same_run(tmp_path, {"model": "a", "task": "arith"})
    with pytest.raises(UserError, match="the config changes task: 'arith' -> 'sudoku'"):
        checkpoints.check_same_run(tmp_path, {"model": "a", "task": "sudoku"})


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_over(tmp_path):
    for name in ("metrics.jsonl", "samples.jsonl", "config.yaml", rundir.RUN_INFO):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "checkpoint-1").mkdir()  # killed while writing it: no trainer_state.json
    (tmp_path / "notes.txt").write_text("mine")
    assert checkpoints.holds_run(tmp_path)
    assert checkpoints.resolve_resume("latest", tmp_path) is None
    removed = checkpoints.clear_unsaved_run(tmp_path)
    assert sorted(removed) == sorted(["metrics.jsonl", "samples.jsonl", "config.yaml", rundir.RUN_INFO,
                                      "checkpoint-1"])
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    assert not checkpoints.holds_run(tmp_path)


def test_a_fresh_run_that_fails_leaves_only_what_was_there(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError), checkpoints.fresh_run(out, None):
        (out / "metrics.jsonl").write_text("{}\n")
        (out / "checkpoint-1").mkdir()
        raise RuntimeError("reward bug")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    with pytest.raises(RuntimeError), checkpoints.fresh_run(tmp_path / "new", None):
        (tmp_path / "new").mkdir()
        raise RuntimeError("reward bug")
    assert not (tmp_path / "new").exists()


def test_a_failed_run_keeps_its_checkpoints_and_a_full_disk_is_one_line(tmp_path):
    import errno

    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text("{}")
    with pytest.raises(UserError, match=r"cannot write to .* \(No space left on device\); free some space"), \
            checkpoints.fresh_run(tmp_path, None):
        (tmp_path / "metrics.jsonl").write_text("{}\n")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (tmp_path / "metrics.jsonl").exists()  # a checkpoint exists: the run can be resumed, keep its logs
