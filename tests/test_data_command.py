"""``grpolab data``: run in-process through ``grpolab.cli.main``; files, summaries and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpolab import cli
from grpolab.commands import data
from grpolab.tasks import arith, sudoku, sudoku_grids
from grpolab.tasks.base import Task

# A task whose generator runs out after two rows (a user task, by import path).
FEW = Task(name="few", load=arith.load, prompt=arith.make_prompt, score=arith.score, rewards={},
           default_rewards=(), default_weights=(), generate=lambda num, seed, split: [{"label": "x"}] * 2)


@pytest.fixture
def main():
    """``grpolab data ARGV...`` run in-process; returns the exit code (argparse errors raise SystemExit)."""
    return lambda *argv: cli.main(["data", *map(str, argv)])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_sudoku_both_splits(main, tmp_path, capsys):
    out = tmp_path / "sub" / "sudoku.jsonl"
    assert main("sudoku", "--num", 9, "--num_test", 3, "--seed", 4, "--out", out) == 0
    rows = _rows(out)
    assert [row["split"] for row in rows] == ["train"] * 9 + ["test"] * 3
    assert all(set(row) == {"question", "answer", "label", "split"} for row in rows)
    assert [row["label"] for row in rows[:3]] == ["simple", "medium", "difficult"]
    assert all(sudoku.count_solutions(row["question"]) == 1 for row in rows)
    assert all(sudoku_grids.grid_split(row["answer"]) == row["split"] for row in rows)
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0] == f"wrote 12 rows to {out}"
    assert stdout[1].split() == ["split", "label", "rows"]
    assert [line.split() for line in stdout[2:]] == [
        ["train", "simple", "3"],
        ["train", "medium", "3"],
        ["train", "difficult", "3"],
        ["test", "simple", "1"],
        ["test", "medium", "1"],
        ["test", "difficult", "1"],
    ]


def test_sudoku_rows_match_the_library_and_the_reference_format(main, tmp_path):
    out = tmp_path / "s.jsonl"
    assert main("sudoku", "--num", 5, "--seed", 2, "--split", "test", "--blanks", "12,6", "--out", out) == 0
    assert _rows(out) == sudoku.generate_rows(5, seed=2, split="test", blanks=(12, 6))
    first = out.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith('{"question": "') and '"label": "difficult", "split": "test"}' in first
    assert [row["label"] for row in _rows(out)] == [
        "difficult",
        "blanks-6",
        "difficult",
        "blanks-6",
        "difficult",
    ]


def test_same_seed_same_file_other_seed_other_file(main, tmp_path):
    paths = [tmp_path / f"{name}.jsonl" for name in "abc"]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        assert main("sudoku", "--num", 20, "--seed", seed, "--out", path) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()


def test_written_file_loads_back_by_split(main, tmp_path):
    out = tmp_path / "s.jsonl"
    assert main("sudoku", "--num", 6, "--num_test", 2, "--out", out) == 0
    train, test = sudoku.load("train", data_file=out), sudoku.load("test", data_file=out)
    assert (len(train), len(test)) == (6, 2)
    assert set(train["answer"]).isdisjoint(test["answer"])


def test_default_out_is_data_task_jsonl(main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main("sudoku", "--num", 1, "--split", "train") == 0
    assert len(_rows(tmp_path / "data" / "sudoku.jsonl")) == 1


def test_arith(main, tmp_path):
    out = tmp_path / "a.jsonl"
    assert main("arith", "--num", 4, "--levels", "add-20,mixed-12", "--out", out) == 0
    rows = _rows(out)
    assert [row["split"] for row in rows] == ["train"] * 4 + ["test"] * 4
    assert {row["label"] for row in rows} <= {"add-20", "mixed-12"}


def test_a_task_that_runs_out_of_distinct_rows_is_an_error(main, tmp_path, capsys, monkeypatch):
    assert main("tests.test_data_command:FEW", "--num", 3, "--out", tmp_path / "few.jsonl") == 2
    assert "few has only 2 distinct train rows with these settings, not 3: pass --num 2 or less" in (
        capsys.readouterr().err)


def test_arith_defaults_write_every_distinct_test_row(main, tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    assert main("arith", "--out", out) == 0  # 1,000 asked; add-20 holds 110 distinct test sums
    rows = _rows(out)
    assert [row["split"] for row in rows] == ["train"] * 1000 + ["test"] * 110
    assert len({row["question"] for row in rows if row["split"] == "test"}) == 110
    assert capsys.readouterr().out.splitlines()[0] == f"wrote 1110 rows to {out}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num_test", "500"], "arith has only 110 distinct test rows with these settings, not 500: "
                                "pass --num_test 110 or less, or choose harder settings"),
        (["--split", "test"], "arith has only 110 distinct test rows with these settings, not 1000: "
                              "pass --num 110 or less, or choose harder settings"),
    ],
)
def test_arith_impossible_test_count_is_one_line(main, tmp_path, capsys, argv, message):
    out = tmp_path / "a.jsonl"
    assert main("arith", *argv, "--out", out) == 2
    assert capsys.readouterr().err == f"grpolab data: error: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sudoku", "--blanks", "13"], "bad blanks value '13'"),
        (["sudoku", "--blanks", "hard"], "bad blanks value 'hard'"),
        (["sudoku", "--num", "0"], "--num must be 1 or more, got 0"),
        (["sudoku", "--num_test", "-3"], "--num_test must be 1 or more, got -3"),
        (["arith", "--levels", "add-7"], "unknown arith level(s) add-7"),
    ],
)
def test_bad_values_exit_2_with_one_line(main, tmp_path, capsys, argv, message):
    out = tmp_path / "x.jsonl"
    assert main(*argv, "--out", out) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("grpolab data: error: ") and message in stderr
    assert stderr.count("\n") == 1
    assert not out.exists()


def test_unwritable_out_exits_2_with_one_line(main, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main("sudoku", "--num", 1, "--out", blocker / "x.jsonl") == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"grpolab data: error: cannot write {blocker / 'x.jsonl'}")
    assert stderr.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sudoku", "--split", "dev"], "--split: invalid choice: 'dev'"),
        (["sudoku", "--num", "many"], "--num: invalid int value: 'many'"),
        (["sudoku", "--colour", "red"], "unrecognized arguments: --colour red"),
        (["gsm8k"], "invalid choice: 'gsm8k'"),
        ([], "the following arguments are required: TASK"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(main, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("argv", [[], ["sudoku"], ["arith"]])
def test_help_shows_examples(main, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(*argv, "--help")
    assert exit_info.value.code == 0
    task = argv[0] if argv else "sudoku"
    assert f"grpolab data {task} --num" in capsys.readouterr().out


def test_every_data_task_has_an_example():
    from grpolab.tasks import TASKS, get_task

    generating = {name for name in [*TASKS, "reasoning_gym"] if get_task(name).generate is not None}
    assert generating == {"sudoku", "arith", "reasoning_gym", "calc", "guess"}
    for name in generating:
        assert f"grpolab data {name} " in data.EXAMPLE


def test_summary_table():
    rows = [
        {"split": "train", "label": "simple"},
        {"split": "train", "label": "blanks-10"},
        {"split": "train", "label": "simple"},
        {"split": "test", "label": "simple"},
    ]
    assert data.summary(rows, Path("out.jsonl")) == (
        "wrote 4 rows to out.jsonl\n"
        "split  label       rows\n"
        "train  simple         2\n"
        "train  blanks-10      1\n"
        "test   simple         1"
    )
