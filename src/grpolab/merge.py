"""Merge a LoRA adapter into its base model and prove, by logits, that the merge changed nothing.

The base is loaded in its own dtype (``--dtype`` overrides it) on the GPU when there is one, the adapter
attached, and the logits on a fixed probe batch recorded. PEFT's ``merge_and_unload`` then folds
``B @ A * scale`` into the base weights; the result is saved as a plain transformers checkpoint (safetensors
in 5 GB shards, tokenizer, chat template, generation config) in a temporary directory beside the target,
**reloaded from disk** without PEFT, and run on the same probe batch. Only a checkpoint whose logits match
within ``atol`` is renamed into place; a mismatch leaves the target untouched.

In bfloat16 or float16 the merged weights are rounded to the dtype's grid, which moves logits far more than
the merge does, so those dtypes get a looser default tolerance (``DEFAULT_ATOL``). Before loading, the
memory the merge needs is estimated from the checkpoint's size on disk, and a device with too little free
memory is refused in one line instead of failing (or swapping) half-way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from grpolab.errors import UserError
from grpolab.rundir import MERGE_INFO

logger = logging.getLogger(__name__)

# Fixed chats covering the shapes of prompt the tasks use: a short question, a system message with a grid,
# free text. Different lengths make the batch padded, so masking is exercised too.
PROBE_CHATS = (
    [{"role": "user", "content": "What is 7 + 12? Answer with just the number."}],
    [{"role": "system", "content": "You solve 4x4 Sudoku puzzles."},
     {"role": "user", "content": "Solve this 4x4 Sudoku:\n\n1 _ 3 _\n4 _ _ 2\n_ _ _ 1\n2 _ 4 3"}],
    [{"role": "user", "content": "Write one sentence about the sea, then count from one to five."}],
)
# Measured on SmolLM2-135M-Instruct (logits up to ~40) with LoRA r8 on every linear layer, B ~ N(0, 0.01),
# which moves logits by up to 2.0-2.5: a float32 merge differs from base + adapter by 1.0e-4 (float sums
# taken in another order, across 30 layers), so 1e-3 leaves a 10x margin over that noise and still flags any
# real change. In half precision both the reference (base + adapter) and the merged model compute in that
# dtype and the merged weights are rounded to its grid: 1.44 (bfloat16, whether the base was stored in
# bfloat16 or float32) and 0.19 (float16). Their tolerances leave a margin over that and do not exceed the
# adapter's own effect here, so a merge that lost the adapter still fails; for a tight check on a bfloat16
# base,
# merge with --dtype float32 where memory allows (1.1e-4 measured).
DEFAULT_ATOL = {"float32": 1e-3, "bfloat16": 2.0, "float16": 0.5}
BYTES_PER_WEIGHT = {"float32": 4, "bfloat16": 2, "float16": 2}
# The merge holds one copy of the weights at a time (the merged model is freed before the saved one is
# reloaded; safe_merge copies one layer at a time); 20% covers the adapter, the allocator's slack and the
# probe batch. transformers 5 loads weights straight onto their device, so no CPU copy is made on a GPU.
MEMORY_FACTOR = 1.2


@dataclass(frozen=True)
class MergeReport:
    max_abs_diff: float  # largest |logit difference| between base + adapter and the saved merged model
    ok: bool  # max_abs_diff <= atol; only then is ``out`` written
    out: Path
    atol: float
    adapter_effect: float = float("nan")  # largest |logit difference| the adapter makes to the base model
    dtype: str = "float32"  # of the merge and of the saved weights


def merge(
    adapter: str | Path,
    out: str | Path,
    model: str | None = None,
    force: bool = False,
    atol: float | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> MergeReport:
    """Merge ``adapter`` into its base (or ``model``), verify the saved checkpoint, install it at ``out``.

    ``dtype`` auto is the base checkpoint's own; ``device`` auto is the GPU when there is one.
    """
    from grpolab import placement
    from grpolab.models import check_adapter_base, load_for_inference, resolve
    from grpolab.rundir import check_adapter_weights, read_run_info

    out = Path(out).expanduser()
    trained_on = read_run_info(adapter).base_model
    base_name = model or trained_on
    # A run on a pre-quantized 4-bit base merges into that base's full-precision parent (review F7).
    parent = bool(model) and is_prequantized(trained_on) and not is_prequantized(model)
    if model and not parent:  # a refusal comes before any model is fetched or converted
        check_adapter_base(adapter, model)
    if is_prequantized(base_name):
        raise UserError(
            f"'{base_name}' is a pre-quantized (bitsandbytes) checkpoint: merging would re-quantize the "
            "weights and lose most of the adapter; pass --model with its full-precision parent "
            "(e.g. Qwen/Qwen3-32B for unsloth/Qwen3-32B-unsloth-bnb-4bit)"
        )
    check_adapter_weights(adapter)
    check_target(out, force, protected=[Path(adapter)])
    source = resolve(base_name)
    check_target(out, force, protected=[Path(adapter), Path(source)])
    place = placement.decide(
        placement.detect(), "merge", dtype, device=device, checkpoint_dtype=checkpoint_dtype(source)
    )
    atol = _check_atol(atol, place.dtype)
    check_memory(base_name, source, place)
    logger.info("Loading the base model and the adapter %s ...", adapter)
    peft_model, tokenizer, base_name = load_for_inference(model, str(adapter), place=place,
                                                           check_base=not parent)
    batch = probe_batch(tokenizer)
    reference = probe_logits(peft_model, batch)
    with peft_model.disable_adapter():
        effect = max_abs_diff(reference, probe_logits(peft_model, batch), batch["attention_mask"])
    logger.info("Merging the adapter into %s ...", base_name)
    merged = peft_model.merge_and_unload(safe_merge=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    try:
        save_checkpoint(merged, tokenizer, staging)
        del merged, peft_model  # the reload below needs the memory on big models
        difference, ok = verify(load_plain(staging, place), batch, reference, atol)
        if ok:
            _write_info(staging, adapter, base_name, place.dtype, difference, atol)
            install(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return MergeReport(
        max_abs_diff=difference, ok=ok, out=out, atol=atol, adapter_effect=effect, dtype=place.dtype
    )


def _check_atol(atol: float | None, dtype: str) -> float:
    atol = DEFAULT_ATOL[dtype] if atol is None else atol
    if not atol >= 0:
        raise UserError(f"--atol must be a number >= 0, got {atol}")
    return atol


def is_prequantized(name: str) -> bool:
    """A checkpoint saved with bitsandbytes weights: its config.json has a quantization_config (a local
    directory), or its hub name says bnb-4bit/8bit (read offline, before anything is fetched)."""
    config = Path(name).expanduser() / "config.json"
    if config.is_file():
        return "quantization_config" in json.loads(config.read_text())
    lowered = name.lower()
    return "bnb-4bit" in lowered or "bnb-8bit" in lowered


def checkpoint_dtype(source: str) -> str | None:
    """The dtype the base's config declares (``dtype``, formerly ``torch_dtype``), when it is one we merge
    in."""
    from grpolab.placement import DTYPE_ALIASES

    directory = _checkpoint_dir(source)
    if directory:
        config = json.loads((directory / "config.json").read_text())
        declared = config.get("dtype") or config.get("torch_dtype")
    else:  # a hub id not downloaded yet: its config alone
        from transformers import AutoConfig

        try:
            declared = AutoConfig.from_pretrained(source).dtype
        except OSError as error:
            raise UserError(f"cannot read the config of '{source}': {error}") from None
    return DTYPE_ALIASES.get(str(declared or "").removeprefix("torch."))


def check_memory(base_name: str, source: str, place) -> None:
    """Log the merge's memory need; refuse, naming the way out, when the device has too little free."""
    weights = weights_bytes(base_name, source, place.dtype)
    if weights is None:
        logger.info(
            "Memory estimate unknown for %s (no local checkpoint or config); merging on %s",
            base_name,
            place.describe(),
        )
        return
    need = weights * MEMORY_FACTOR
    free, where = free_memory(place)
    logger.info(
        "Merging on %s needs about %s (weights %s); %s free on %s",
        place.describe(),
        _gib(need),
        _gib(weights),
        _gib(free),
        where,
    )
    if need <= free:
        return
    if where == "RAM":
        fix = "free memory or use a machine with more RAM"
    else:
        fix = f"use --device cpu ({_gib(free_memory(replace(place, device='cpu'))[0])} of RAM available)"
    if place.dtype == "float32":
        fix += ", or --dtype bfloat16 to halve it"
    raise UserError(
        f"merging {base_name} in {place.dtype} needs about {_gib(need)} but {where} has "
        f"{_gib(free)} free: {fix}"
    )


def weights_bytes(base_name: str, source: str, dtype: str) -> float | None:
    """Bytes of the base's weights in ``dtype``: the checkpoint's size on disk (safetensors index or files),
    scaled from its own dtype; else the parameter count of its config. Quantised weights stay as they are."""
    from grpolab.placement import DTYPE_ALIASES

    directory = _checkpoint_dir(source)
    config = json.loads((directory / "config.json").read_text()) if directory else {}
    on_disk = _safetensors_bytes(directory) if directory else None
    if on_disk and "quantization_config" in config:
        return on_disk
    stored = DTYPE_ALIASES.get(str(config.get("dtype") or config.get("torch_dtype") or "float32"), "float32")
    if on_disk:
        return on_disk * BYTES_PER_WEIGHT[dtype] / BYTES_PER_WEIGHT[stored]
    from grpolab.training.plan import shape_of

    shape = shape_of(base_name)
    return shape.parameters * BYTES_PER_WEIGHT[dtype] if shape else None


def _checkpoint_dir(source: str) -> Path | None:
    """The local directory of ``source``: itself, or its snapshot in the Hugging Face cache."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _safetensors_bytes(directory: Path) -> float | None:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return float(json.loads(index.read_text())["metadata"]["total_size"])
    files = list(directory.glob("*.safetensors"))
    return float(sum(path.stat().st_size for path in files)) if files else None


def free_memory(place) -> tuple[float, str]:
    """(free bytes, where) on the placement's device: all GPUs with device_map auto, else its own one."""
    accelerator = place.device.split(":")[0]
    if accelerator not in ("cuda", "npu"):
        import psutil

        return float(psutil.virtual_memory().available), "RAM"
    import torch

    backend = getattr(torch, accelerator)
    indices = (
        range(backend.device_count()) if place.device_map == "auto" else [int(place.device.split(":")[1])]
    )
    return float(
        sum(backend.mem_get_info(index)[0] for index in indices)
    ), f"{accelerator} ({len(indices)} device(s))"


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def check_target(out: Path, force: bool, protected: list[Path]) -> None:
    """Refuse an output that is a file, a non-empty directory (without force), or holds the inputs."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a directory for the merged model")
    target = out.resolve()
    for path in protected:
        if path.exists() and (target == path.resolve() or target in path.resolve().parents):
            raise UserError(
                f"--out {out} would replace {path}, an input of the merge: choose another directory"
            )
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty: add --force to replace it, or choose another directory")


def probe_batch(tokenizer):
    """The probe chats, left-padded, through the chat template (plain text for a tokenizer without one)."""
    from grpolab.generation.hf import encode_chats

    if getattr(tokenizer, "chat_template", None):
        return encode_chats(tokenizer, PROBE_CHATS)
    texts = ["\n".join(message["content"] for message in chat) for chat in PROBE_CHATS]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True)


def probe_logits(model, batch):
    """Float32 logits of ``model`` on ``batch``: (batch, sequence, vocabulary)."""
    import torch

    with torch.inference_mode():
        return model(**batch.to(model.device)).logits.float().cpu()


def max_abs_diff(expected, actual, attention_mask) -> float:
    """Largest |expected - actual| over real tokens; padded positions carry no meaning and are skipped."""
    real = attention_mask.bool().cpu()  # (batch, sequence)
    return float((expected[real] - actual[real]).abs().max())


def verify(model, batch, reference, atol: float) -> tuple[float, bool]:
    """(max |logit difference| against ``reference``, whether it is within ``atol``) for ``model``."""
    difference = max_abs_diff(reference, probe_logits(model, batch), batch["attention_mask"])
    return difference, difference <= atol


def save_checkpoint(model, tokenizer, directory: Path) -> None:
    """A plain transformers checkpoint: safetensors weights in 5 GB shards, config, generation config,
    tokenizer.

    Shards keep a big base loadable shard by shard and uploadable to the Hub (whose limit is 50 GB a file).
    """
    model.save_pretrained(directory, max_shard_size="5GB")
    tokenizer.save_pretrained(directory)
    directory.chmod(0o755)  # mkdtemp makes it private; a merged model is meant to be shared


def load_plain(directory: Path, place):
    """The saved checkpoint, loaded by transformers alone (no PEFT) with the merge's placement."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        directory, dtype=place.dtype, device_map=place.device_map
    ).eval()


def _write_info(directory: Path, adapter, base_name: str, dtype: str, difference: float, atol: float) -> None:
    from grpolab.rundir import read_run_info

    info = {
        "base_model": base_name,
        "adapter": str(adapter),
        "task": read_run_info(adapter).task,
        "dtype": dtype,
        "max_abs_diff": difference,
        "atol": atol,
        "probe_chats": PROBE_CHATS,
    }
    (directory / MERGE_INFO).write_text(json.dumps(info, indent=2) + "\n")


def install(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and removed only after."""
    if not out.exists():
        os.replace(staging, out)
        return
    aside = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    os.replace(out, aside)
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
