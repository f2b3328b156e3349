"""The policy as TRL receives it: where it loads (placement), in which dtype and quantization, and the
``model_init_kwargs`` (or, for Unsloth and a warm-up adapter, the loaded model) that GRPOTrainer and
SFTTrainer get."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from typing import Any

from grpolab import models, placement, rundir
from grpolab.training.args import TrainArgs, context_length
from grpolab.training.tool_use import tool_tokenizer

logger = logging.getLogger(__name__)


def placement_for(train_args: TrainArgs, trainer_config, model_config) -> placement.Placement:
    """Where the policy loads: the local rank's device, in the recipe's dtype (auto: see
    grpolab.placement)."""
    quantization = "4bit" if model_config.load_in_4bit else "8bit" if model_config.load_in_8bit else None
    full_finetune = not (model_config.use_peft or train_args.init_adapter or train_args.use_unsloth)
    return placement.decide(
        placement.detect(), "train", model_config.dtype, quantization, full_finetune=full_finetune
    )


def model_arguments(train_args: TrainArgs, trainer_config, model_config) -> dict[str, Any]:
    """``model``, ``processing_class``, ``quantization_config`` and ``peft_config`` for GRPO/SFTTrainer.

    As trl/scripts/grpo.py does, the model goes to TRL as a path, loaded with ``model_init_kwargs``
    (revision, remote code, attention, dtype, device_map; a recipe's own ``model_init_kwargs`` win), and TRL
    builds the 4-bit/8-bit and LoRA configs from ModelConfig. grpolab loads the model itself only to continue
    an adapter (``init_adapter``) or through Unsloth.
    """
    from trl import get_peft_config

    source = models.resolve(model_config.model_name_or_path)
    options = models.load_options(
        {**asdict(model_config), "trust_remote_code": trainer_config.trust_remote_code}
    )
    tokenizer = models.load_tokenizer(
        source, revision=options["revision"], trust_remote_code=options["trust_remote_code"]
    )
    tokenizer = tool_tokenizer(tokenizer, train_args, model_config.model_name_or_path)
    place = placement_for(train_args, trainer_config, model_config)
    logger.info("Loading %s on %s ...", model_config.model_name_or_path, place.describe())
    if train_args.use_unsloth:
        from grpolab.training.gpu_extras import load_unsloth

        model = load_unsloth(source, model_config, trainer_config, context_length(train_args, trainer_config))
        return {"model": model, "processing_class": tokenizer}
    init_kwargs = {
        **options,
        "dtype": place.dtype,
        "device_map": place.device_map,
        **(trainer_config.model_init_kwargs or {}),
    }
    quantization = quantization_config(model_config, place)
    if train_args.init_adapter:
        from peft import PeftModel

        models.check_adapter_base(train_args.init_adapter, model_config.model_name_or_path)
        rundir.check_adapter_weights(train_args.init_adapter)
        base = models.load_causal_lm(source, quantization_config=quantization, **init_kwargs)
        model = PeftModel.from_pretrained(base, train_args.init_adapter, is_trainable=True)
        return {"model": model, "processing_class": tokenizer}
    # The saved config keeps the recipe's own (TrainArgs.recipe_init_kwargs), so that it does not pin this
    # machine's placement on a resume elsewhere.
    trainer_config.model_init_kwargs = init_kwargs
    return {
        "model": source,
        "processing_class": tokenizer,
        "quantization_config": quantization,
        "peft_config": get_peft_config(model_config),
    }


def quantization_config(model_config, place: placement.Placement):
    """TRL's BitsAndBytesConfig (None without 4-bit/8-bit), computing in the placement's dtype. Storing the
    packed 4-bit weights in that dtype too lets DeepSpeed ZeRO-3 and FSDP shard them with the rest."""
    from trl import get_quantization_config

    storage = model_config.bnb_4bit_quant_storage or place.dtype
    return get_quantization_config(replace(model_config, dtype=place.dtype, bnb_4bit_quant_storage=storage))
