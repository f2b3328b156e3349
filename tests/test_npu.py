"""Ascend NPUs, faked at the import boundary: torch_npu in sys.modules and a torch.npu namespace."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType, SimpleNamespace

import pytest

from grpolab import doctor
from grpolab.cli import main
from grpolab.errors import UserError
from grpolab.training import distributed as launch


@pytest.fixture
def machine(monkeypatch):
    """Sets what the machine has: CUDA, NPUs (through a fake torch_npu), DeepSpeed."""
    import torch

    real_find_spec = importlib.util.find_spec

    def set_up(cuda: bool = False, npus: int = 0, deepspeed: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        if npus:
            monkeypatch.setitem(sys.modules, "torch_npu", ModuleType("torch_npu"))
            npu = SimpleNamespace(is_available=lambda: True, device_count=lambda: npus,
                                  get_device_name=lambda index: "Ascend910B2", is_bf16_supported=lambda: True)
            monkeypatch.setattr(torch, "npu", npu, raising=False)
        else:
            monkeypatch.setitem(sys.modules, "torch_npu", None)  # import torch_npu raises ImportError
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
            object() if name == "deepspeed" and deepspeed or name == "torch_npu" and npus
            else None if name in ("deepspeed", "torch_npu") else real_find_spec(name, *args)))

    return set_up


@pytest.mark.parametrize(
    ("config", "cuda", "npus", "deepspeed", "error"),
    [
        ("zero2", False, 8, True, None),                       # DeepSpeed on NPUs: allowed now
        ("npu-zero2", False, 8, True, None),
        ("npu-ddp", False, 8, False, None),
        ("ddp", False, 8, False, None),
        ("zero2", True, 0, True, None),                        # CUDA, as before
        ("zero3", False, 0, True, "needs CUDA GPUs or Ascend NPUs (torch_npu); on CPU use --accelerate_co"),
        ("npu-zero2", False, 8, False, "uses DeepSpeed, which is not installed: pip install 'grpolab[deep"),
        ("npu-ddp", True, 0, False, "is for Ascend NPUs, and torch_npu finds none here"),
        ("npu-zero2", False, 0, True, "needs CUDA GPUs or Ascend NPUs"),
    ],
)
def test_check_backend_table(machine, config, cuda, npus, deepspeed, error):
    machine(cuda=cuda, npus=npus, deepspeed=deepspeed)
    if error is None:
        launch.check_backend(config)
        return
    with pytest.raises(UserError) as raised:
        launch.check_backend(config)
    assert str(raised.value).startswith(f"--accelerate_config {config} ") and error in str(raised.value)


def test_npu_available_needs_torch_npu_and_a_device(machine, monkeypatch):
    import torch

    machine(npus=0)
    assert launch.npu_available() is False
    machine(npus=2)
    assert launch.npu_available() is True
    monkeypatch.setattr(torch.npu, "is_available", lambda: False)  # torch_npu without a driver or device
    assert launch.npu_available() is False


def test_train_on_npus_relaunches_under_accelerate_with_the_npu_config(machine, monkeypatch, capsys):
    import subprocess

    from grpolab.training import recipes

    # Parse once on the real machine first: transformers caches whether torch_npu is there (lru_cache), and
    # must not import the fake one.
    recipes.parse_train_args(["--max_steps", "1"])
    machine(npus=8, deepspeed=True)
    # This torch has no "npu" device type (torch_npu registers it), so the launching process parses its recipe
    # with CPU defaults here; what each rank loads on an NPU is tested in test_placement.py.
    monkeypatch.setattr(recipes, "device_defaults", lambda: {"bf16": False, "use_cpu": True})
    launched = []
    monkeypatch.setattr(subprocess, "call", lambda command, env: launched.append(command) or 0)
    argv = ["train", "--accelerate_config", "npu-zero2", "--num_processes", "8", "--max_steps", "1"]
    assert main(argv) == 0
    [command] = launched
    assert command[command.index("--config_file") + 1].endswith("accelerate/npu-zero2.yaml")
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[-5:] == ["-m", "grpolab", "train", "--max_steps", "1"]
    assert "launching:" in capsys.readouterr().out


def test_doctor_reports_the_npus(machine, monkeypatch):
    machine(npus=2)
    monkeypatch.setattr(doctor, "installed_version", {"torch_npu": "2.13.0"}.get)
    monkeypatch.setattr("torch.__version__", "2.13.0+cpu")
    rows = doctor.check_device()
    assert [(row.name, row.value, row.status) for row in rows] == [
        ("device", "npu (Ascend), 2 devices", "ok"),
        ("torch_npu", "2.13.0 (for torch 2.13.0)", "ok"),
        ("npu 0", "Ascend910B2", "ok"),
        ("npu 1", "Ascend910B2", "ok"),
    ]
