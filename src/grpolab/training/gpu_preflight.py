"""Refusals for GPU runs that would otherwise fail only after the model has loaded (one line each).

- Several visible GPUs in one process: TRL's trainers refuse ``nn.DataParallel`` (``n_gpu > 1``) once the
  model is on the GPU; grpolab places the whole model on one device, so ``Trainer.is_model_parallel`` stays
  False (review F1).
- ``wandb`` in ``report_to`` without the package or a key: ``wandb.init`` raises in ``on_train_begin``,
  minutes after a 4-bit load on a headless box (review F14).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from grpolab.errors import UserError


def refuse_data_parallel(torch, launched: bool) -> None:
    """One process that sees several CUDA GPUs would end in TRL's DataParallel ValueError."""
    if launched or not torch.cuda.is_available():
        return
    count = torch.cuda.device_count()
    if count > 1:
        raise UserError(
            f"{count} GPUs are visible to one process, and TRL refuses DataParallel: use "
            f"--accelerate_config ddp --num_processes {count} (or zero3), "
            "or CUDA_VISIBLE_DEVICES=0 for one GPU"
        )


def require_wandb(report_to) -> None:
    """``report_to`` names wandb: the package must import and a key (or a login) must be there."""
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "wandb" not in targets:  # "all" means the installed integrations only
        return
    if importlib.util.find_spec("wandb") is None:
        raise UserError("report_to includes wandb but the package is missing: pip install 'grpolab[track]', "
                        "or pass --report_to tensorboard")
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled") or os.environ.get("WANDB_API_KEY"):
        return
    if not (Path.home() / ".netrc").is_file():
        raise UserError("report_to includes wandb but no WANDB_API_KEY is set (nor wandb login): set it, "
                        "or WANDB_MODE=offline, or pass --report_to tensorboard")
