"""GRPO training end to end: a real run on the embedded model, resume after SIGKILL on a tiny one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpolab.cli import main
from grpolab.errors import RewardFunctionError
from grpolab.training import checkpoints, recipes


def tiny_flags(model_dir: Path, output_dir: Path, steps: int) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--output_dir", str(output_dir), "--max_steps", str(steps),
        "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "8",
        "--num_train", "64", "--save_steps", "1", "--logging_steps", "1", "--torch_threads", "1",
        "--plot", "false", "--save_total_limit", "10",
    ]


def broken_reward(completions, **kwargs):
    raise ZeroDivisionError("our bug")


def adapter_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_grpo_steps_on_the_embedded_model(tmp_path, embedded_model_dir):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from grpolab.training.grpo import train

    out = tmp_path / "run"
    argv = [
        "--max_steps",
        "2",
        "--output_dir",
        str(out),
        "--max_completion_length",
        "12",
        "--save_steps",
        "2",
    ]
    train(*recipes.parse_train_args(argv))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert {
        "reward",
        "rewards/arith_correct/mean",
        "loss",
        "completions/mean_length",
        "seconds_per_step",
    } <= set(rows[0])
    assert (out / "reward_curve.png").stat().st_size > 10_000
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and set(samples[0]["rewards"]) == {"arith_correct", "arith_brevity"}
    # LoRA B matrices start at zero; after two steps of lr 5e-4 they are not.
    trained = adapter_tensors(out)
    lora_b = [tensor for name, tensor in trained.items() if "lora_B" in name]
    assert lora_b and max(float(t.abs().max()) for t in lora_b) > 0
    untrained = get_peft_model(
        AutoModelForCausalLM.from_pretrained(embedded_model_dir), LoraConfig.from_pretrained(str(out))
    )
    assert all(float(p.abs().max()) == 0 for n, p in untrained.named_parameters() if "lora_B" in n)
    # The adapter reloads with plain PEFT, and the resolved config is a re-usable recipe.
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    assert isinstance(PeftModel.from_pretrained(base, str(out)), PeftModel)
    again = recipes.parse_train_args(
        ["--config", str(out / "config.yaml"), "--output_dir", str(tmp_path / "again")]
    )
    assert again[1].max_steps == 2
    assert checkpoints.is_complete(out / "checkpoint-2")


def test_a_crashing_reward_stops_training_with_its_name(tmp_path, tiny_model_dir):
    from grpolab.training.grpo import train

    argv = tiny_flags(tiny_model_dir, tmp_path / "run", 1) + [
        "--reward_funcs",
        "tests.test_training:broken_reward",
    ]
    with pytest.raises(
        RewardFunctionError, match="reward function 'broken_reward' raised ZeroDivisionError: our bug"
    ):
        train(*recipes.parse_train_args(argv))


def test_an_existing_run_is_not_overwritten(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    assert main(["train", *tiny_flags(tiny_model_dir, out, 1)]) == 2
    assert "already holds a run: add --resume" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_resume_with_another_task_is_refused(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags(tiny_model_dir, out, 1)]) == 0
    assert main(["train", *tiny_flags(tiny_model_dir, out, 2), "--task", "sudoku", "--resume"]) == 2
    assert "the config changes task: 'arith' -> 'sudoku'" in capsys.readouterr().err


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_kill_and_resume_reaches_the_planned_steps(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "grpolab", "train", *tiny_flags(tiny_model_dir, out, 6)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reached = wait_for(
        lambda: (
            checkpoints.latest_complete(out) is not None
            and checkpoints.latest_complete(out).name in {"checkpoint-2", "checkpoint-3"}
        ),
        240,
    )
    if process.poll() is not None:
        pytest.fail(f"training ended before it could be killed: {process.stderr.read()[-2000:]}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert reached
    killed_at = int(checkpoints.latest_complete(out).name.split("-")[1])
    assert killed_at < 6
    # A half-written checkpoint beyond the last complete one must be ignored on resume.
    (out / f"checkpoint-{killed_at + 50}").mkdir()
    result = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == 6
    assert set(range(killed_at + 1, 7)) <= set(logged)


@pytest.mark.slow
def test_gsm8k_trains_and_evaluates_on_the_embedded_model(tmp_path, embedded_model_dir):
    """The GSM8K path end to end on real data; accuracy is reported, not asserted (135M solves ~none)."""
    from tests.conftest import SHARED_DATA

    data = SHARED_DATA / "gsm8k" / "test.jsonl"
    if not data.is_file():
        pytest.skip(f"GSM8K data not found at {data}")
    out = tmp_path / "gsm8k"
    assert (
        main(
            [
                "train",
                "--config",
                "gsm8k-smollm2-cpu",
                "--data_file",
                str(data),
                "--num_train",
                "8",
                "--max_steps",
                "1",
                "--max_completion_length",
                "16",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"rewards/gsm8k_correct/mean", "rewards/gsm8k_format/mean"} <= set(row)
    assert (
        main(
            [
                "eval",
                "--adapter",
                str(out),
                "--data_file",
                str(data),
                "--num",
                "4",
                "--max_new_tokens",
                "32",
                "--out",
                str(tmp_path / "eval"),
                "--no_progress",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["items"] == 4
    assert set(metrics["accuracy_by_label"]) <= {"easy", "medium", "hard"}


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of every TensorBoard event file under ``run_dir``: tag -> [(step, value)].

    Reads the TFRecord framing (8-byte length, 4-byte CRC, payload, 4-byte CRC) and tensorboardX's Event
    protobuf directly, so the test needs neither the tensorboard package nor tbparse.
    """
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run_dir.glob("runs/*/events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_every_run_writes_tensorboard_scalars_by_default(tmp_path, tiny_model_dir):
    """No report_to given: the default recipe's TensorBoard events hold the logged reward of each step."""
    out = tmp_path / "run"
    assert main(["train", *tiny_flags(tiny_model_dir, out, steps=2)]) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(out)
    assert [step for step, _ in scalars["train/reward"]] == [1, 2]
    assert [value for _, value in scalars["train/reward"]] == pytest.approx([row["reward"] for row in logged])
    assert "train/rewards/arith_correct/mean" in scalars and "train/loss" in scalars


def test_sft_writes_tensorboard_scalars(tmp_path, tiny_model_dir):
    out = tmp_path / "sft"
    assert (
        main(
            [
                "sft",
                "--model_name_or_path",
                str(tiny_model_dir),
                "--output_dir",
                str(out),
                "--max_steps",
                "1",
                "--per_device_train_batch_size",
                "4",
                "--num_train",
                "16",
                "--logging_steps",
                "1",
                "--torch_threads",
                "1",
            ]
        )
        == 0
    )
    scalars = read_scalars(out)
    assert [step for step, _ in scalars["train/loss"]] == [1] and scalars["train/loss"][0][1] > 0


@pytest.mark.slow
def test_a_resumed_run_equals_an_unbroken_one(tmp_path, tiny_model_dir):
    """kill -9 mid-run, resume: the same data order, RNG streams and LoRA weights as a run never stopped.

    Tolerance: exact (atol 0). Both runs use one CPU thread, so every matmul reduces in the same order, and
    resuming restores the optimizer, scheduler, sampler position and the torch/numpy/python RNG states
    that sampling draws from; any difference at all means some state was not restored.
    """
    steps = 5
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    command = [sys.executable, "-m", "grpolab", "train", "--num_samples_logged", "8"]
    result = subprocess.run(
        [*command, *tiny_flags(tiny_model_dir, straight, steps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step-1 sampling check: transformers generation" in result.stderr
    process = subprocess.Popen(
        [*command, *tiny_flags(tiny_model_dir, broken, steps)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: checkpoints.latest_complete(broken) is not None, 600)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoints.latest_complete(broken)
    assert killed_at is not None and killed_at.name != f"checkpoint-{steps}"
    result = subprocess.run(
        [*command, *tiny_flags(tiny_model_dir, broken, steps), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected, resumed = adapter_tensors(straight), adapter_tensors(broken)
    assert expected.keys() == resumed.keys()
    assert all(bool((expected[name] == resumed[name]).all()) for name in expected), "LoRA weights differ"

    # The same completions were sampled at every step after the resume: data order and sampling RNG.
    def samples(path):
        rows = [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]
        return {(row["step"], row["completion"]) for row in rows}

    resumed_steps = {step for step, _ in samples(broken)} - set(range(int(killed_at.name.split("-")[1]) + 1))
    assert resumed_steps and {s for s in samples(straight) if s[0] in resumed_steps} == {
        s for s in samples(broken) if s[0] in resumed_steps
    }
