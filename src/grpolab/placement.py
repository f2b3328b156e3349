"""Where and in which dtype a model loads: one decision for train, sft, eval, chat, model and merge.

``decide`` is a pure function of the hardware (``Hardware``, read once by ``detect``) and the request, so
every rule below is tested without a GPU.

dtype ``auto``:
- bfloat16 on a GPU or NPU that computes in it natively (CUDA compute capability 8.0, i.e. Ampere, or newer;
  ROCm; Ascend 910B). Older GPUs only emulate bf16, several times slower.
- float16 on a GPU without native bf16, for inference and for training a frozen (LoRA) base. Full
  fine-tuning stays in float32 there: AdamW on float16 weights loses small updates, and the float16 grad
  scaler refuses float16 gradients. MPS trains in float32 for the same reason.
- float32 on the CPU: CPUs without bf16 units run bf16 about 3x slower than float32.
- merge: the base checkpoint's own dtype, so that merging neither rounds the base nor doubles its memory.

device_map:
- inference and merge on one process: ``"auto"`` (a model too big for one GPU spreads over all of them);
  under ``accelerate launch`` the local rank's device, so that every process holds its own copy.
- training: the whole model on the local rank's device (``{"": LOCAL_RANK}``), which is also where 4-bit
  and 8-bit weights must live. Under DeepSpeed ``None``: DeepSpeed places the weights itself (ZeRO-3
  partitions them), as TRL also does for MULTI_GPU and DEEPSPEED when it loads the model.
- CPU: ``None``; MPS training ``None`` too (the Trainer moves the model; TRL avoids ``"auto"`` there).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, replace

from grpolab.errors import UserError

logger = logging.getLogger(__name__)

PURPOSES = ("train", "inference", "merge")
DEVICES = ("auto", "cpu", "cuda", "npu", "mps")
DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                 "float16": "float16", "fp16": "float16"}
CPU_RECIPE_HINT = "on a CPU machine use the default recipe (grpolab train) or a *-cpu.yaml recipe"


@dataclass(frozen=True)
class Hardware:
    accelerator: str = "cpu"  # "cuda", "npu", "mps" or "cpu"
    bf16: bool = False  # the accelerator computes in bfloat16 natively
    local_rank: int = 0  # this process's device index under accelerate launch / torchrun
    world_size: int = 1
    deepspeed: bool = False


@dataclass(frozen=True)
class Placement:
    device: str  # where the (first) weights live: "cuda:0", "npu:1", "mps" or "cpu"
    device_map: str | dict | None  # for from_pretrained
    dtype: str  # "bfloat16", "float16" or "float32"
    quantization: str | None = None  # "4bit", "8bit" or None

    def describe(self) -> str:
        where = self.device if self.device_map != "auto" else f"{self.device.split(':')[0]} (device_map auto)"
        return f"{where}, {self.dtype}" + (f", {self.quantization}" if self.quantization else "")


def decide(
    hardware: Hardware,
    purpose: str,
    dtype: str | None = "auto",
    quantization: str | None = None,
    device: str = "auto",
    full_finetune: bool = False,
    checkpoint_dtype: str | None = None,
) -> Placement:
    """Device, device_map and dtype for loading a model for ``purpose`` (train, inference or merge)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r} is not one of {PURPOSES}")
    hardware = _override(hardware, device)
    if quantization == "4bit" and hardware.accelerator == "cpu":
        # bitsandbytes >= 0.48 runs NF4 on the CPU (several times slower than float32 there)
        logger.warning("load_in_4bit on the CPU: bitsandbytes' NF4 runs, slowly; for tests and small models")
    elif quantization and hardware.accelerator != "cuda":
        raise UserError(
            f"load_in_{quantization} needs a CUDA GPU (bitsandbytes) and none is used here; {CPU_RECIPE_HINT}"
        )
    if dtype in ("auto", None) and purpose == "merge":
        dtype = checkpoint_dtype or "float32"
    return Placement(
        device=_device(hardware),
        device_map=_device_map(hardware, purpose, quantization),
        dtype=_dtype(hardware, purpose, dtype, full_finetune),
        quantization=quantization,
    )


def _override(hardware: Hardware, device: str) -> Hardware:
    if device not in DEVICES:
        raise UserError(f"--device {device} is not one of {', '.join(DEVICES)}")
    if device == "auto" or device == hardware.accelerator:
        return hardware
    if device == "cpu":
        return replace(hardware, accelerator="cpu", bf16=False)
    raise UserError(
        f"--device {device}: there is no {device} device here (found: {hardware.accelerator}); "
        f"use --device auto or --device cpu"
    )


def _device(hardware: Hardware) -> str:
    if hardware.accelerator in ("cuda", "npu"):
        return f"{hardware.accelerator}:{hardware.local_rank}"
    return hardware.accelerator


def _device_map(hardware: Hardware, purpose: str, quantization: str | None):
    accelerator = hardware.accelerator
    if accelerator == "cpu":
        return None
    if accelerator == "mps":
        return None if purpose == "train" else {"": "mps"}
    own_device = hardware.local_rank if accelerator == "cuda" else f"npu:{hardware.local_rank}"
    if purpose == "train":
        return None if hardware.deepspeed else {"": own_device}
    if quantization or hardware.world_size > 1:
        return {"": own_device}
    return "auto"


def _dtype(hardware: Hardware, purpose: str, dtype: str | None, full_finetune: bool) -> str:
    if dtype not in ("auto", None):
        return normalize_dtype(dtype)
    if hardware.accelerator == "cpu":
        return "float32"
    if hardware.bf16:
        return "bfloat16"
    if purpose == "train" and (full_finetune or hardware.accelerator == "mps"):
        return "float32"
    return "float16"


def normalize_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16' etc.; an unknown name is a UserError listing the valid ones."""
    text = str(name).removeprefix("torch.")
    if text not in DTYPE_ALIASES:
        raise UserError(f"unknown dtype '{name}': use one of auto, {', '.join(DTYPE_ALIASES)}")
    return DTYPE_ALIASES[text]


def detect() -> Hardware:
    """The hardware of this process: its accelerator, native bf16, and its rank under accelerate launch."""
    import torch

    if torch.cuda.is_available():
        accelerator = "cuda"
    elif npu_available():
        accelerator = "npu"
    elif torch.backends.mps.is_available():
        accelerator = "mps"
    else:
        accelerator = "cpu"
    return Hardware(
        accelerator=accelerator,
        bf16=native_bf16(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        deepspeed=os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true",
    )


def native_bf16() -> bool:
    """Whether this machine's accelerator computes in bfloat16 natively (emulated bf16 does not count)."""
    import torch

    if torch.cuda.is_available():
        # Device properties only: is_bf16_supported() calls current_device(), which in a launched rank
        # (before accelerate's set_device) opens a context on GPU 0 for every rank (review F21).
        return cuda_device_bf16(torch, int(os.environ.get("LOCAL_RANK", 0)))
    if npu_available():
        return bool(torch.npu.is_bf16_supported())
    return False


def cuda_device_bf16(torch, index: int) -> bool:
    """Whether CUDA/ROCm device ``index`` computes in bfloat16 natively: ROCm GPUs and CUDA compute capability
    8.0 (Ampere) or newer; older GPUs emulate it, several times slower (``grpolab doctor`` per GPU)."""
    return bool(torch.version.hip) or torch.cuda.get_device_properties(index).major >= 8


def npu_available() -> bool:
    """torch_npu imports (which registers ``torch.npu``) and sees at least one Ascend NPU."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        import torch_npu  # noqa: F401
    except Exception:  # built for another torch or CANN: no usable NPU here ('grpolab doctor' says why)
        return False
    import torch

    return bool(getattr(torch, "npu", None) and torch.npu.is_available())
