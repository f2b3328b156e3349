"""--dry_run checks everything that needs no weights, for train and sft alike, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpolab.cli import main


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _run_dir(path: Path, **files: str) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


SUDOKU_ROW = '{"question": "1234341221434_21", "answer": "1234341221434321"}\n'
GSM8K_ROW = '{"question": "How many?", "answer": "Two and two.\\n#### 4"}\n'

# (argv after the command, fragment of the one-line error); each must exit 2 before loading any model.
CASES = [
    (["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["--task", "nosuch.module:TASK"], "cannot import task 'nosuch.module:TASK'"),
    (["--reward_funcs", "nosuch.module:fn"], "cannot import reward function 'nosuch.module:fn'"),
    (["--reward_funcs", "arith_nosuch"], "unknown reward 'arith_nosuch' for task arith"),
    (["--reward_funcs", "arith_correct", "--reward_weights", "1", "2"], "reward_weights has 2 values"),
    (["--task", "arith", "--data_file", "missing.jsonl"], "data file missing.jsonl does not exist"),
    (["--task", "arith", "--data_file", "{tmp}/empty.jsonl"], "has no rows"),
    (["--task", "arith", "--data_file", "{tmp}/sudoku.jsonl"], "holds no arithmetic expression"),
    (["--task", "arith", "--data_file", "{tmp}/gsm8k.jsonl"], "is not an integer"),
    (["--task", "sudoku", "--data_file", "{tmp}/gsm8k.jsonl"], "is not 16 characters"),
    (["--task", "gsm8k", "--data_file", "{tmp}/sudoku.jsonl"], "does not end with a final '#### N'"),
    (["--task", "sudoku", "--task_options", "{nosuch: 1}"], "unknown sudoku option(s) nosuch"),
    (["--output_dir", "{tmp}/file/run"], "is a file, not a folder"),
    (["--output_dir", "{tmp}/finished"], "already holds a run: add --resume"),
    (["--output_dir", "{tmp}/fresh", "--resume"], "no complete checkpoint in"),
    (["--init_adapter", "{tmp}/nowhere"], "adapter directory"),
    (["--init_adapter", "{tmp}/other-base"], "was trained on 'some/other-model'"),
    (["--accelerate_config", "nosuch"], "accelerate config 'nosuch' not found"),
    (["--accelerate_config", "{tmp}/bad-accelerate.yaml"], "is not a YAML mapping"),
]


def _inputs(tmp: Path) -> None:
    _write(tmp / "empty.jsonl", "\n")
    _write(tmp / "sudoku.jsonl", SUDOKU_ROW)
    _write(tmp / "gsm8k.jsonl", GSM8K_ROW)
    _write(tmp / "file", "not a folder")
    _write(tmp / "bad-accelerate.yaml", "- just a list\n")
    _run_dir(tmp / "finished", **{"metrics.jsonl": '{"step": 1}\n', "adapter_config.json": "{}"})
    _run_dir(tmp / "other-base", **{"grpolab_run.json": json.dumps({"base_model": "some/other-model"})})


@pytest.mark.parametrize("command", ["train", "sft"])
@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(case[0]) for case in CASES])
def test_dry_run_finds_the_mistake(workdir, capsys, command, argv, message):
    if command == "sft" and "reward" in " ".join(argv):
        pytest.skip("sft has no rewards")
    _inputs(workdir)
    before = sorted(path.name for path in workdir.rglob("*"))
    argv = [item.replace("{tmp}", str(workdir)) for item in argv]
    # both recipes set options of their own task; a case about another task drops them
    recipe = ["--config", "default" if command == "train" else "sft-sudoku-smollm2", "--task_options", "{}"]
    assert main([command, *recipe, "--dry_run", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""
    assert sorted(path.name for path in workdir.rglob("*")) == before


@pytest.mark.parametrize("command", ["train", "sft"])
def test_dry_run_of_a_sound_recipe_says_what_it_checked(workdir, capsys, command):
    config = "default" if command == "train" else "sft-sudoku-smollm2"
    assert main([command, "--config", config, "--dry_run", "--output_dir", "run", "--num_train", "7"]) == 0
    out = capsys.readouterr().out
    assert "data             7 rows from the task's generator" in out
    assert out.rstrip().endswith("no weights were loaded")
    assert ("rewards          arith_correct x1, arith_brevity x0.1" in out) == (command == "train")
    assert not (workdir / "run").exists()
