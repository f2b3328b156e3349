"""``--dry_run``: the resolved plan of a training run, without loading any weights.

The memory figure is a rough upper-level estimate for one device, so a user can check a GPU recipe on a
laptop: weights at their storage precision, LoRA parameters with AdamW state, activations of the
training forward pass and the KV cache of generation. It is a guide, not a guarantee.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grpolab import models
from grpolab.training.args import context_length


@dataclass(frozen=True)
class Shape:
    parameters: float  # total parameters
    hidden: int
    layers: int
    intermediate: int
    kv_heads_dim: int  # num_key_value_heads * head_dim
    vocab: int


# Architectures of the reference recipes' models, for planning without network access.
KNOWN_SHAPES: dict[str, Shape] = {
    "qwen/qwen3-32b": Shape(32.8e9, 5120, 64, 25600, 8 * 128, 151936),
    "unsloth/qwen3-32b-unsloth-bnb-4bit": Shape(32.8e9, 5120, 64, 25600, 8 * 128, 151936),
    "qwen/qwen2.5-3b-instruct": Shape(3.09e9, 2048, 36, 11008, 2 * 128, 151936),
    "qwen/qwen2.5-7b-instruct": Shape(7.62e9, 3584, 28, 18944, 4 * 128, 152064),
}


def shape_of(model_name: str) -> Shape | None:
    key = model_name.lower()
    if key in KNOWN_SHAPES:
        return KNOWN_SHAPES[key]
    config = _local_config(model_name)
    return _shape_from_config(config) if config else None


def _local_config(model_name: str) -> dict | None:
    if model_name.lower() in models.EMBEDDED:
        directory = models.cache_dir(models.EMBEDDED[model_name.lower()])
        if not (directory / "config.json").is_file():
            return {
                "hidden_size": 576,
                "num_hidden_layers": 30,
                "intermediate_size": 1536,
                "num_attention_heads": 9,
                "num_key_value_heads": 3,
                "vocab_size": 49152,
                "tie_word_embeddings": True,
            }
    else:
        directory = Path(model_name).expanduser()
    path = directory / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _shape_from_config(config: dict) -> Shape:
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    intermediate, vocab = config.get("intermediate_size", 4 * hidden), config["vocab_size"]
    heads = config.get("num_attention_heads", 1)
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    per_layer = hidden * hidden * 2 + hidden * kv * 2 + 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return Shape(per_layer * layers + embeddings, hidden, layers, intermediate, kv, vocab)


def lora_parameters(shape: Shape, rank: int, targets) -> float:
    """r * (in + out) for each targeted projection in every layer ('all-linear' = all seven)."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads_dim
    sizes = {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    names = sizes if targets in (None, "all-linear", ["all-linear"]) else [t for t in targets if t in sizes]
    return shape.layers * sum(rank * (sizes[name][0] + sizes[name][1]) for name in names)


def bytes_per_weight(model_config, grpo_config) -> float:
    if model_config.load_in_4bit:
        return 0.5
    if model_config.load_in_8bit:
        return 1.0
    dtype = str(model_config.dtype or "auto")
    if dtype in ("float32", "fp32") or (dtype == "auto" and not grpo_config.bf16):
        return 4.0
    return 2.0


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def plan_lines(train_args, grpo_config, model_config) -> list[str]:
    name = model_config.model_name_or_path
    shape = shape_of(name)
    generations = grpo_config.num_generations
    per_step = grpo_config.per_device_train_batch_size * grpo_config.gradient_accumulation_steps
    world = max(1, grpo_config.world_size, train_args.num_processes or 1)  # --dry_run: the whole world
    quant = "none"
    if model_config.load_in_4bit or model_config.load_in_8bit:
        quant = "4-bit NF4 (bitsandbytes)" if model_config.load_in_4bit else "8-bit"
    epochs = f"{grpo_config.num_train_epochs:g} epoch(s)"
    steps = grpo_config.max_steps if grpo_config.max_steps > 0 else epochs
    lines = [
        f"model            {name}" + (" (via Unsloth)" if train_args.use_unsloth else ""),
        f"task             {train_args.task}  rewards: "
        f"{', '.join(train_args.reward_funcs or ['task defaults'])}",
        f"quantisation     {quant}",
        f"LoRA             r={model_config.lora_r} alpha={model_config.lora_alpha} on "
        f"{model_config.lora_target_modules or 'default modules'}"
        if model_config.use_peft
        else f"LoRA             continue the adapter in {train_args.init_adapter}"
        if train_args.init_adapter
        else "LoRA             off (full fine-tuning)",
        f"batch            {grpo_config.per_device_train_batch_size}/device x "
        f"{grpo_config.gradient_accumulation_steps} accumulation x {world} process(es)"
        f" = {per_step * world} completions per optimiser step",
        f"groups           {generations} completions per prompt -> {per_step * world // generations} prompts "
        f"per step",
        f"steps            {steps}",
        f"generation       max {grpo_config.max_completion_length} new tokens, temperature "
        f"{grpo_config.temperature}"
        + (f", vLLM {grpo_config.vllm_mode}" if grpo_config.use_vllm else ", transformers generate"),
        f"context          max_seq_length {context_length(train_args, grpo_config)} tokens (prompt + "
        f"completion"
        + ("; Unsloth's limit)" if train_args.use_unsloth else "; sizes the memory estimate)"),
        f"loss             {grpo_config.loss_type}, beta {grpo_config.beta}, "
        f"lr {grpo_config.learning_rate:g}",
        f"output           {grpo_config.output_dir}",
    ]
    lines.append(memory_line(shape, train_args, grpo_config, model_config))
    return lines


def continued_adapter(train_args) -> dict | None:
    """The PEFT config of ``init_adapter`` ({} when unreadable), None when no adapter is continued."""
    import json
    from pathlib import Path

    directory = getattr(train_args, "init_adapter", None)
    if not directory:
        return None
    try:
        return json.loads((Path(directory) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def memory_line(shape: Shape | None, train_args, grpo_config, model_config) -> str:
    if shape is None:
        return "memory           unknown (model shape not known offline; give a local path to estimate)"
    weights = shape.parameters * bytes_per_weight(model_config, grpo_config)
    adapter = continued_adapter(train_args)
    trainable = (
        lora_parameters(shape, model_config.lora_r, model_config.lora_target_modules)
        if model_config.use_peft
        else lora_parameters(shape, adapter.get("r", model_config.lora_r), adapter.get("target_modules"))
        if adapter is not None
        else shape.parameters
    )
    optimizer = trainable * (
        4 + (2 if "8bit" in str(grpo_config.optim) else 8)
    )  # weights' grads + AdamW moments
    tokens = grpo_config.per_device_train_batch_size * context_length(train_args, grpo_config)
    act_bytes = 2 if grpo_config.bf16 else 4
    per_layer = tokens * shape.hidden * act_bytes * (2 if grpo_config.activation_checkpointing else 16)
    activations = (
        per_layer * (1 if grpo_config.activation_checkpointing else shape.layers) + tokens * shape.vocab * 4
    )
    kv_cache = 2 * shape.layers * tokens * shape.kv_heads_dim * act_bytes
    total = weights + optimizer + activations + kv_cache
    reference = weights if grpo_config.beta > 0 and not model_config.use_peft else 0
    return (
        f"memory (rough)   {_gib(total + reference)} per device: weights {_gib(weights)}, "
        f"trainable {trainable / 1e6:.1f}M params + optimizer {_gib(optimizer)}, activations "
        f"{_gib(activations)}, "
        f"KV cache {_gib(kv_cache)}"
    )


def sft_plan_lines(train_args, sft_config, model_config) -> list[str]:
    per_step = sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps
    steps = sft_config.max_steps if sft_config.max_steps > 0 else f"{sft_config.num_train_epochs:g} epoch(s)"
    return [
        f"model            {model_config.model_name_or_path}",
        f"task             {train_args.task} (supervised warm-up on reference replies)",
        f"LoRA             r={model_config.lora_r} alpha={model_config.lora_alpha}"
        if model_config.use_peft
        else "LoRA             off (full fine-tuning)",
        f"batch            {sft_config.per_device_train_batch_size}/device x "
        f"{sft_config.gradient_accumulation_steps} accumulation = {per_step} replies per optimiser step",
        f"steps            {steps}, lr {sft_config.learning_rate:g}",
        f"output           {sft_config.output_dir}",
    ]


def print_plan(train_args, trainer_config, model_config, command: str = "train") -> None:
    """Validate everything that needs no weights (a UserError stops here), then print the plan."""
    from grpolab.training.checks import check_run

    checked = check_run(train_args, trainer_config, model_config, command)
    lines = plan_lines if command == "train" else sft_plan_lines
    print("\n".join([*lines(train_args, trainer_config, model_config), *checked]))
    print("dry run: task, rewards, data, output folder and configs checked; no weights were loaded")
