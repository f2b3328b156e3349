"""A real two-host run on one machine (issue 30): two `grpolab train`, machine rank 0 and 1, one process
each over gloo, head on the loopback address 127.0.0.2, separate run folders as on nodes without a shared
filesystem (--save_on_each_node). Both end with identical LoRA weights, only rank 0 writes the metrics, and
a resume on both continues to step 3."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_training import tiny_flags

REPO = Path(__file__).resolve().parents[1]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _two_hosts(tmp_path: Path, model: Path, steps: int, port: int, resume: bool) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in (0, 1):
        argv = [sys.executable, "-m", "grpolab", "train", "--accelerate_config", "cpu2",
                "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
                "--main_process_ip", "127.0.0.2",
                "--main_process_port", str(port), "--save_on_each_node", "true",
                *tiny_flags(model, tmp_path / f"host{rank}", steps),
                *(["--resume", "latest"] if resume else [])]
        log = (tmp_path / f"host{rank}-{steps}.log").open("w")
        procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
    return procs


def _wait(procs, tmp_path: Path, steps: int) -> None:
    try:
        codes = [proc.wait(timeout=400) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = [(tmp_path / f"host{rank}-{steps}.log").read_text()[-2000:] for rank in (0, 1)]
    assert codes == [0, 0], logs


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_hosts_train_resume_and_agree(tmp_path, tiny_model_dir):
    _wait(_two_hosts(tmp_path, tiny_model_dir, 2, _free_port("127.0.0.2"), False), tmp_path, 2)
    host0, host1 = tmp_path / "host0", tmp_path / "host1"
    first, second = _weights(host0), _weights(host1)
    assert first.keys() == second.keys() and first
    assert all((first[key] == second[key]).all() for key in first)
    steps = [json.loads(line)["step"] for line in (host0 / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert not (host1 / "metrics.jsonl").exists()  # only global rank 0 writes the run's metrics
    assert (host1 / "checkpoint-2").is_dir()  # save_on_each_node: rank 1 keeps checkpoints to resume from
    _wait(_two_hosts(tmp_path, tiny_model_dir, 3, _free_port("127.0.0.2"), True), tmp_path, 3)
    for host in (host0, host1):
        state = json.loads((host / "checkpoint-3" / "trainer_state.json").read_text())
        assert state["global_step"] == 3
    rows = (host0 / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in rows] == [1, 2, 3]
