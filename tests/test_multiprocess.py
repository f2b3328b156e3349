"""Two processes over gloo on CPU: the same code path as multi-GPU DDP, on a laptop or in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grpolab.errors import UserError
from grpolab.training import distributed as launch
from tests.test_training import tiny_flags

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_lora_weights(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(launch.accelerate_config_path("cpu2")), str(REPO / "tests" / "ddp_probe.py"),
               *tiny_flags(tiny_model_dir, out, 2)]
    env = {**launch.launch_env("cpu2"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "probe" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 2
    assert ranks[0]["count"] == ranks[1]["count"] > 0
    assert ranks[0]["abs"] > 0
    assert ranks[0]["sum"] == ranks[1]["sum"] and ranks[0]["abs"] == ranks[1]["abs"]
    # Logs are written once: one metrics row per step, not one per process.
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_launch_command_strips_its_own_flags():
    argv = ["--accelerate_config", "zero3", "--num_processes=8", "--max_steps", "3"]
    command = launch.launch_command(argv, "ddp", 8)
    assert command[-5:] == ["-m", "grpolab", "train", "--max_steps", "3"]
    assert "--accelerate_config" not in command and "--num_processes=8" not in command
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[command.index("--config_file") + 1].endswith("accelerate/ddp.yaml")


def test_zero3_without_deepspeed_or_cuda_is_one_line(capsys):
    from grpolab.cli import main

    assert main(["train", "--accelerate_config", "zero3", "--num_processes", "2", "--max_steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "uses DeepSpeed" in err and ("pip install 'grpolab[deepspeed]'" in err or "needs CUDA" in err)


def test_unknown_accelerate_config_is_refused():
    with pytest.raises(UserError, match="accelerate config 'nope' not found"):
        launch.accelerate_config_path("nope")


def test_cpu_config_sets_gloo_on_cpu(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert launch.launch_env("cpu2")["ACCELERATE_USE_CPU"] == "true"
    assert "ACCELERATE_USE_CPU" not in launch.launch_env("ddp")
