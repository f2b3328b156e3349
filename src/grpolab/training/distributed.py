"""Multi-process training: re-run the same command under ``accelerate launch``.

``grpolab train --accelerate_config zero3 --num_processes 8 ...`` becomes
``accelerate launch --config_file <zero3.yaml> --num_processes 8 -m grpolab train ...``; each process
then trains its shard with DDP or DeepSpeed as the config says, and only the main process writes logs.
"""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

from grpolab.errors import UserError
from grpolab.placement import npu_available

SHIPPED = ("ddp", "zero2", "zero3", "cpu2", "npu-ddp", "npu-zero2")


def accelerate_config_path(name: str) -> Path:
    if name in SHIPPED:
        return Path(str(importlib.resources.files("grpolab.configs") / "accelerate" / f"{name}.yaml"))
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"accelerate config '{name}' not found: use {', '.join(SHIPPED)} or a YAML path")
    return path


def inside_launch() -> bool:
    """True in a process started by accelerate/torchrun (they set LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def check_backend(name: str) -> None:
    """Say in one line, before launching anything, what a config lacks here: DeepSpeed needs the package and
    CUDA GPUs or Ascend NPUs; an NPU config needs NPUs."""
    import importlib.util

    text = accelerate_config_path(name).read_text()
    if "distributed_type: MULTI_NPU" in text and not npu_available():
        raise UserError(f"--accelerate_config {name} is for Ascend NPUs, and torch_npu finds none here: "
                        "run 'grpolab doctor', or use ddp on GPUs")
    if name.startswith("zero") or "deepspeed" in text.lower():
        if importlib.util.find_spec("deepspeed") is None:
            raise UserError(
                f"--accelerate_config {name} uses DeepSpeed, which is not installed: pip install "
                f"'grpolab[deepspeed]'"
            )
        import torch

        if not (torch.cuda.is_available() or npu_available()):
            raise UserError(
                f"--accelerate_config {name} uses DeepSpeed, which needs CUDA GPUs or Ascend "
                "NPUs (torch_npu); on CPU use --accelerate_config cpu2"
            )


def launch_command(
    argv: list[str], config: str, num_processes: int | None, command: str = "train",
    machine_flags: list[str] | None = None,
) -> list[str]:
    """The accelerate command that runs this same training (``grpolab train`` or ``sft``) in several
    processes."""
    rest = strip_launch_flags(argv)
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config_path(config)),
    ]
    if num_processes:
        launch += ["--num_processes", str(num_processes)]
    launch += machine_flags or []  # --num_machines/--machine_rank/--main_process_ip/--main_process_port
    return launch + ["-m", "grpolab", command, *rest]


def strip_launch_flags(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        key = item.split("=", 1)[0]
        if key in ("--accelerate_config", "--num_processes", "--num_machines", "--machine_rank",
                   "--main_process_ip", "--main_process_port"):
            skip = "=" not in item
            continue
        out.append(item)
    return out


def launch_env(config: str) -> dict[str, str]:
    """Environment for the launched processes: CPU configs need accelerate told to use gloo on CPU."""
    env = dict(os.environ)
    if config == "cpu2" or "use_cpu: true" in accelerate_config_path(config).read_text():
        env["ACCELERATE_USE_CPU"] = "true"
    return env
