"""A user's task, given as ``package.module:TASK``, works in every command: data, train, sft, eval, chat,
probe.

The task module is written here, in the test's own directory, as a user would write one: it knows grpolab
only through ``grpolab.tasks.base``. Runs on the tiny random model, so every command takes seconds.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pexpect
import pytest

from grpolab.cli import main
from tests.test_training import tiny_flags

TASK_MODULE = '''
"""Count the letters of a word: a task written outside grpolab."""
import random
import re

from grpolab.tasks.base import ChatSupport, Option, Task, Verdict, verdicts
from grpolab.tasks.jsonl import read_rows


def generate(num, seed=0, split="train", length="3,4"):
    lengths = [int(n) for n in str(length).split(",")]
    rng = random.Random(f"{seed}-{split}")
    words = ["".join(rng.choice("abcdef") for _ in range(lengths[i % len(lengths)])) for i in range(num)]
    return [{"question": word, "answer": str(len(word)), "label": f"len-{len(word)}"} for word in words]


def prompt(question):
    return [{"role": "user", "content": f"How many letters are in '{question}'?"}]


def load(split="train", data_file=None, num=None, seed=0, **options):
    from datasets import Dataset

    rows = read_rows(data_file)[0] if data_file else generate(num or 8, seed, split, **options)
    rows = [row for row in rows if row.get("split", split) == split][:num]
    return Dataset.from_list([{**row, "prompt": prompt(row["question"])} for row in rows])


def score(completion, row):
    numbers = re.findall(r"[0-9]+", completion)
    parsed = numbers[-1] if numbers else None
    return Verdict(solved=parsed == str(row["answer"]), parsed=parsed, format_ok=parsed is not None)


def count_correct(completions, **kwargs):
    return [float(verdict.solved) for verdict in verdicts(score, completions, kwargs)]


TASK = Task(name="letters", load=load, prompt=prompt, score=score, rewards={"count_correct": count_correct},
            default_rewards=("count_correct",), default_weights=(1.0,), generate=generate,
            options={"length": Option("word lengths, comma-separated", "3,4")},
            reference=lambda row: row["answer"], chat=ChatSupport(hint="type a word", example="abc"))
'''
TASK = "letters_task:TASK"


@pytest.fixture
def user_task(tmp_path, monkeypatch):
    """The task module in tmp_path, importable in this process and in the processes it starts."""
    (tmp_path / "letters_task.py").write_text(textwrap.dedent(TASK_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    yield tmp_path
    sys.modules.pop("letters_task", None)


@pytest.mark.slow
def test_a_user_task_runs_through_every_command(user_task, tiny_model_dir, capsys):
    data = user_task / "letters.jsonl"
    assert main(["data", TASK, "--num", "8", "--num_test", "4", "--length", "5", "--out", str(data)]) == 0
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert [row["split"] for row in rows] == ["train"] * 8 + ["test"] * 4
    assert {row["answer"] for row in rows} == {"5"} and {row["label"] for row in rows} == {"len-5"}

    run = user_task / "run"
    # --task_options {}: the default recipe's task_options are arith's
    flags = [*tiny_flags(tiny_model_dir, run, 1), "--task", TASK, "--task_options", "{}",
             "--data_file", str(data), "--num_train", "8"]
    assert main(["train", *flags]) == 0
    assert json.loads((run / "grpolab_run.json").read_text())["task"] == TASK
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/count_correct/mean" in entry for entry in logged)

    sft_run = user_task / "sft"
    assert (
        main(
            [
                "sft",
                "--model_name_or_path",
                str(tiny_model_dir),
                "--output_dir",
                str(sft_run),
                "--task",
                TASK,
                "--task_options",
                "{}",
                "--data_file",
                str(data),
                "--num_train",
                "8",
                "--max_steps",
                "1",
                "--per_device_train_batch_size",
                "2",
                "--report_to",
                "none",
                "--torch_threads",
                "1",
            ]
        )
        == 0
    )
    assert (sft_run / "adapter_model.safetensors").is_file()

    out = user_task / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_model_dir),
                "--task",
                TASK,
                "--data_file",
                str(data),
                "--num",
                "4",
                "--max_new_tokens",
                "4",
                "--batch_size",
                "4",
                "--no_progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["items"] == 4 and metrics["config"]["task"] == TASK
    assert list(metrics["accuracy_by_label"]) == ["len-5"]

    probed = user_task / "probe"
    assert (
        main(
            [
                "probe",
                "--model",
                str(tiny_model_dir),
                "--task",
                TASK,
                "--data_file",
                str(data),
                "--num",
                "2",
                "--k",
                "2",
                "--max_new_tokens",
                "4",
                "--no_progress",
                "--out",
                str(probed),
            ]
        )
        == 0
    )
    result = json.loads((probed / "probe.json").read_text())
    assert result["results"]["all"]["prompts"] == 2
    assert "verdict:" in capsys.readouterr().out


@pytest.mark.slow
def test_a_user_task_in_chat_through_a_terminal(user_task, tiny_model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb", "HF_HUB_OFFLINE": "1"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "grpolab", "chat", "--model", str(tiny_model_dir), "--task", TASK, "--max_new_tokens", "4"],
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 400),
    )
    child.expect_exact("type a word")  # the task's own hint
    child.expect_exact(">>> ")
    child.sendline("hello")
    child.expect_exact("[letters] parsed: ")
    child.expect_exact("solved: unknown")
    child.expect_exact(">>> ")
    child.sendline("/answer 5")
    child.expect(r"\[letters\] parsed: .* \| solved: (yes|no) \(answer 5\)")
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
