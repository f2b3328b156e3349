"""Every accelerate config parses, validates with accelerate itself, and says what its name says."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import ComputeEnvironment, DistributedType, PrecisionType

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
EXPECTED = {
    # name: (distributed type, processes, mixed precision, use_cpu)
    "ddp": (DistributedType.MULTI_GPU, 8, "bf16", False),
    "zero2": (DistributedType.DEEPSPEED, 8, "bf16", False),
    "zero3": (DistributedType.DEEPSPEED, 8, "bf16", False),
    "cpu2": (DistributedType.MULTI_GPU, 2, "no", True),
    "npu-ddp": (DistributedType.MULTI_NPU, 8, "bf16", False),
    "npu-zero2": (DistributedType.DEEPSPEED, 8, "bf16", False),
}
# accelerate launches every multi-device type (GPU, NPU, ...) through its "multi_gpu" path.
MULTI_DEVICE = (DistributedType.MULTI_GPU, DistributedType.MULTI_NPU)
OFFLOAD_DEVICES = {"none", "cpu", "nvme"}


def launch_args(path: Path):
    """What `accelerate launch --config_file PATH train.py` resolves, without launching anything."""
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)
    return args


def test_the_expected_configs_exist():
    assert {path.stem for path in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_validates_with_accelerate(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict)
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown keys and unknown enum values
    distributed_type, num_processes, precision, use_cpu = EXPECTED[path.stem]
    assert config.compute_environment == ComputeEnvironment.LOCAL_MACHINE
    assert config.distributed_type == distributed_type
    assert config.num_processes == num_processes and config.num_machines == 1
    assert config.mixed_precision == precision and precision in {p.value for p in PrecisionType}
    assert config.use_cpu is use_cpu


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_launcher_accepts_config(path):
    args = launch_args(path)
    distributed_type, num_processes, precision, _ = EXPECTED[path.stem]
    assert args.num_processes == num_processes
    assert args.mixed_precision == precision
    assert args.use_deepspeed is (distributed_type == DistributedType.DEEPSPEED)
    assert args.multi_gpu is (distributed_type in MULTI_DEVICE)


@pytest.mark.parametrize("name", ["zero2", "zero3", "npu-zero2"])
def test_deepspeed_config_matches_its_name(name):
    path = CONFIG_DIR / f"{name}.yaml"
    deepspeed = ClusterConfig.from_yaml_file(str(path)).deepspeed_config
    launch_options = {action.dest for action in launch_command_parser()._actions}
    assert set(deepspeed) <= launch_options, (
        "every deepspeed_config key must be an `accelerate launch` option"
    )
    stage = int(name[-1])
    assert deepspeed["zero_stage"] == stage
    assert launch_args(path).zero_stage == stage
    assert {deepspeed["offload_optimizer_device"], deepspeed["offload_param_device"]} <= OFFLOAD_DEVICES
    # ZeRO-3 options only mean something at stage 3; there, 16-bit saving keeps checkpoints loadable.
    assert deepspeed["zero3_init_flag"] is (stage == 3)
    assert deepspeed.get("zero3_save_16bit_model", False) is (stage == 3)


def test_npu_configs_are_the_gpu_ones_on_npus():
    """The NPU files differ from their GPU twins only where the device matters (what the reference has)."""
    def load(name):
        return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())

    assert load("npu-zero2") == load("zero2")
    npu_ddp, ddp = load("npu-ddp"), load("ddp")
    assert npu_ddp.pop("distributed_type") == "MULTI_NPU" and ddp.pop("distributed_type") == "MULTI_GPU"
    assert npu_ddp == ddp


# Each rank writes its own file: two processes printing to one pipe can interleave their lines.
PROBE = """
import sys
from pathlib import Path
import torch, torch.distributed as dist
from accelerate import Accelerator
state = Accelerator().state
total = torch.tensor([state.process_index + 1.0])
dist.all_reduce(total)
result = f"of={state.num_processes} backend={state.backend} sum={total.item():g}"
Path(sys.argv[1], f"rank{state.process_index}.txt").write_text(result)
dist.destroy_process_group()  # without it gloo aborts at exit now and then
"""


@pytest.mark.slow
def test_cpu2_starts_two_gloo_processes(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    command = [*launcher, "--config_file", str(CONFIG_DIR / "cpu2.yaml"), str(script), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    results = {path.name: path.read_text() for path in tmp_path.glob("rank*.txt")}
    assert results == {f"rank{index}.txt": "of=2 backend=gloo sum=3" for index in (0, 1)}
