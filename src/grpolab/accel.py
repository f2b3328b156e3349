"""Single-GPU memory paths: bitsandbytes quantisation and Unsloth, chosen by the recipe.

Both need CUDA. On a machine without it, or without the package, the user gets one line naming the
extra to install or the recipe to use instead.
"""

from __future__ import annotations

import importlib.util

from grpolab.errors import UserError

CPU_RECIPE_HINT = "on a CPU machine use the default recipe (grpolab train) or a *-cpu.yaml recipe"


def require_cuda(feature: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{feature} needs a CUDA GPU and none was found; {CPU_RECIPE_HINT}")


def require_package(module: str, feature: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{feature} needs the package '{module}': pip install 'grpolab[{extra}]'")


def bitsandbytes_config(model_config):
    """A BitsAndBytesConfig from TRL's ModelConfig fields (load_in_4bit / load_in_8bit, quant type, nesting)."""
    feature = "load_in_4bit" if model_config.load_in_4bit else "load_in_8bit"
    require_package("bitsandbytes", feature, "gpu")
    require_cuda(feature)
    import torch
    from transformers import BitsAndBytesConfig

    if model_config.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_config.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=model_config.use_bnb_nested_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=model_config.bnb_4bit_quant_storage or compute,
    )


def load_unsloth(source: str, model_config, max_seq_length: int = 2048):
    """Model with a LoRA adapter through Unsloth's FastLanguageModel (its own 4-bit and LoRA kernels)."""
    require_package("unsloth", "use_unsloth", "gpu")
    require_cuda("use_unsloth")
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=max_seq_length, load_in_4bit=model_config.load_in_4bit, dtype=None,
    )
    targets = model_config.lora_target_modules
    if targets in (None, "all-linear", ["all-linear"]):
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return FastLanguageModel.get_peft_model(
        model, r=model_config.lora_r, lora_alpha=model_config.lora_alpha, lora_dropout=model_config.lora_dropout,
        target_modules=targets, use_gradient_checkpointing="unsloth", random_state=3407,
    )
