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
from grpolab.generation.settings import PROMPT_BUDGET
from grpolab.training.args import context_length


@dataclass(frozen=True)
class Shape:
    parameters: float  # total parameters
    hidden: int
    layers: int
    intermediate: int
    kv_heads_dim: int  # num_key_value_heads * head_dim
    vocab: int
    embeddings: float = 0.0  # embed_tokens + lm_head parameters: kept in 16-bit under 4-bit/8-bit loading
    query_dim: int = 0  # num_attention_heads * head_dim when it differs from hidden (Qwen3-32B: 8192)


# Architectures of the reference recipes' models, for planning without network access.
KNOWN_SHAPES: dict[str, Shape] = {
    "qwen/qwen3-32b": Shape(32.8e9, 5120, 64, 25600, 8 * 128, 151936, 2 * 151936 * 5120, 64 * 128),
    "unsloth/qwen3-32b-unsloth-bnb-4bit": Shape(32.8e9, 5120, 64, 25600, 8 * 128, 151936, 2 * 151936 * 5120,
                                                64 * 128),
    "qwen/qwen2.5-3b-instruct": Shape(3.09e9, 2048, 36, 11008, 2 * 128, 151936),
    "qwen/qwen2.5-7b-instruct": Shape(7.62e9, 3584, 28, 18944, 4 * 128, 152064),
    # Qwen3-4B-Instruct-2507 (the tool recipe): 32 query heads x 128 = 4096, tied embeddings
    "qwen/qwen3-4b-instruct-2507": Shape(4.02e9, 2560, 36, 9728, 8 * 128, 151936, 151936 * 2560, 32 * 128),
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
    query = heads * head_dim
    per_layer = hidden * query * 2 + hidden * kv * 2 + 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return Shape(per_layer * layers + embeddings, hidden, layers, intermediate, kv, vocab, embeddings, query)


def lora_parameters(shape: Shape, rank: int, targets) -> float:
    """r * (in + out) for each targeted projection in every layer ('all-linear' = all seven)."""
    h, i, kv, q = shape.hidden, shape.intermediate, shape.kv_heads_dim, shape.query_dim or shape.hidden
    sizes = {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
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


# NF4 with double quantisation: one 8-bit absmax per 64 weights, its fp32 scale per 256 blocks (~3%).
NF4_BYTES, INT8_BYTES = 0.5 * 1.03, 1.0 * 1.02
CUDA_CONTEXT = 0.8 * 2**30  # CUDA context, cuBLAS workspace, allocator slack (0.7-1.5 GiB measured elsewhere)
# Cards the GPU recipes are written for, in GiB as the driver reports them, for the dry run's warning.
RECIPE_CARDS = {"gsm8k-qwen3-32b-unsloth": 24e9 / 2**30, "gsm8k-qwen3-32b-a100": 80e9 / 2**30}


def weight_bytes(shape: Shape, model_config, grpo_config) -> float:
    """Storage of the weights: 4-bit/8-bit linears with their quantisation constants, while bitsandbytes
    keeps the embeddings and the LM head in 16-bit."""
    if not (model_config.load_in_4bit or model_config.load_in_8bit):
        return shape.parameters * bytes_per_weight(model_config, grpo_config)
    linear = shape.parameters - shape.embeddings
    return linear * (NF4_BYTES if model_config.load_in_4bit else INT8_BYTES) + shape.embeddings * 2


def on_accelerator(grpo_config, model_config) -> bool:
    """A recipe for a GPU (bf16 or bitsandbytes): TRL's fused LM head runs there, no full logits exist."""
    return bool(grpo_config.bf16 or model_config.load_in_4bit or model_config.load_in_8bit)


def memory_parts(shape: Shape, train_args, grpo_config, model_config) -> dict[str, float]:
    """Bytes per device, by what holds them, at the peak of one GRPO step."""
    weights = weight_bytes(shape, model_config, grpo_config)
    adapter = continued_adapter(train_args)
    trainable = (
        lora_parameters(shape, model_config.lora_r, model_config.lora_target_modules)
        if model_config.use_peft
        else lora_parameters(shape, adapter.get("r", model_config.lora_r), adapter.get("target_modules"))
        if adapter is not None
        else shape.parameters
    )
    optimizer = trainable * (4 + (2 if "8bit" in str(grpo_config.optim).lower() else 8))  # grads + moments
    # A GRPO row is a prompt (its budget) plus a completion; max_seq_length only caps it.
    context = min(context_length(train_args, grpo_config), PROMPT_BUDGET + grpo_config.max_completion_length)
    act_bytes = 2 if grpo_config.bf16 else 4
    gpu = on_accelerator(grpo_config, model_config)
    tokens = grpo_config.per_device_train_batch_size * context  # one training micro-batch
    # One layer's forward intermediates (attention + MLP), kept by every layer without checkpointing and
    # recomputed for one layer at a time with it, which also keeps each layer's input hidden state.
    layer = tokens * (10 * shape.hidden + 4 * shape.intermediate) * act_bytes
    if grpo_config.activation_checkpointing:
        activations = layer + shape.layers * tokens * shape.hidden * act_bytes
    else:
        activations = layer * shape.layers
    if not gpu:
        activations += tokens * shape.vocab * 4  # fp32 logits of the whole micro-batch
    if model_config.load_in_4bit or model_config.load_in_8bit:
        activations += shape.hidden * shape.intermediate * 2  # one dequantised weight at a time
    # TRL generates per_device x steps_per_generation rows in one generate() call.
    steps_per_generation = getattr(grpo_config, "steps_per_generation", None) or getattr(
        grpo_config, "gradient_accumulation_steps", 1)
    rows = grpo_config.per_device_train_batch_size * steps_per_generation
    kv_cache = 2 * shape.layers * rows * context * shape.kv_heads_dim * act_bytes
    reference = weights if grpo_config.beta > 0 and not model_config.use_peft else 0
    return {"weights": weights, "optimizer": optimizer, "activations": activations, "kv_cache": kv_cache,
            "reference": reference, "cuda_context": CUDA_CONTEXT if gpu else 0.0, "trainable": trainable}


def memory_line(shape: Shape | None, train_args, grpo_config, model_config) -> str:
    if shape is None:
        return "memory           unknown (model shape not known offline; give a local path to estimate)"
    parts = memory_parts(shape, train_args, grpo_config, model_config)
    total = sum(value for key, value in parts.items() if key != "trainable")
    line = (
        f"memory (rough)   {_gib(total)} per device: weights {_gib(parts['weights'])}, "
        f"trainable {parts['trainable'] / 1e6:.1f}M params + optimizer {_gib(parts['optimizer'])}, "
        f"activations {_gib(parts['activations'])}, KV cache {_gib(parts['kv_cache'])}"
        + (f", CUDA context {_gib(parts['cuda_context'])}" if parts["cuda_context"] else "")
    )
    card = card_gib(train_args)
    if card and total > 0.9 * card * 2**30:
        line += (f"\nwarning          the plan is {total / 2**30 / card:.0%} of the {card:.1f} GiB card this "
                 "recipe is for: expect OOM; lower per_device_train_batch_size or max_completion_length")
    return line


def card_gib(train_args) -> float | None:
    """The GPU memory to compare with: this machine's first GPU, else the card the recipe names."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 2**30
    recipe = Path(train_args.recipe or "").stem
    return RECIPE_CARDS.get(recipe)


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
