"""Single-GPU memory paths: bitsandbytes quantisation (built by TRL from ModelConfig) and Unsloth.

Both need CUDA. On a machine without it, or without the package, the user gets one line naming the
extra to install or the recipe to use instead.
"""

from __future__ import annotations

import importlib.util
import os

from grpolab.errors import UserError
from grpolab.placement import CPU_RECIPE_HINT

UNSLOTH_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def require_cuda(feature: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{feature} needs a CUDA GPU and none was found; {CPU_RECIPE_HINT}")


def require_package(module: str, feature: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        if module == "unsloth":  # its releases pin trl<=1.15, so the extra cannot resolve (review F4)
            raise UserError("use_unsloth needs the package 'unsloth', which does not install beside TRL 1.16 "
                            "yet: pass --use_unsloth false (transformers + bitsandbytes 4-bit)")
        raise UserError(f"{feature} needs the package '{module}': pip install 'grpolab[{extra}]'")


def import_unsloth() -> None:
    """Import Unsloth before TRL, transformers and PEFT, as it asks: it patches them on import.

    ``UNSLOTH_RETURN_LOGITS=1``: Unsloth's fused loss otherwise returns no logits from the forward pass,
    and GRPO computes its token log-probabilities from them.
    """
    require_package("unsloth", "use_unsloth", "unsloth")
    require_cuda("use_unsloth")
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
    import unsloth  # noqa: F401


def load_unsloth(source: str, model_config, trainer_config, max_seq_length: int):
    """Model with a LoRA adapter through Unsloth's FastLanguageModel (its own 4-bit and LoRA kernels).

    The context, seed and activation checkpointing come from the recipe (``max_seq_length``, ``seed``,
    ``activation_checkpointing``).
    """
    import_unsloth()
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=max_seq_length, load_in_4bit=model_config.load_in_4bit, dtype=None,
        revision=model_config.model_revision, trust_remote_code=trainer_config.trust_remote_code,
    )
    targets = model_config.lora_target_modules
    if targets in (None, "all-linear", ["all-linear"]):
        targets = UNSLOTH_LORA_TARGETS
    return FastLanguageModel.get_peft_model(
        model,
        r=model_config.lora_r,
        lora_alpha=model_config.lora_alpha,
        lora_dropout=model_config.lora_dropout,
        target_modules=targets,
        random_state=trainer_config.seed,
        use_gradient_checkpointing="unsloth" if trainer_config.activation_checkpointing else False,
    )
