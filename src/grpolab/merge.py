"""Merge a LoRA adapter into its base model and prove, by logits, that the merge changed nothing.

The base is loaded in float32, the adapter attached, and the logits on a fixed probe batch recorded. PEFT's
``merge_and_unload`` then folds ``B @ A * scale`` into the base weights; the result is saved as a plain
transformers checkpoint (safetensors, tokenizer, chat template, generation config) in a temporary directory
beside the target, **reloaded from disk** without PEFT, and run on the same probe batch. Only a checkpoint
whose logits match within ``atol`` is renamed into place; a mismatch leaves the target untouched.

Saving in bfloat16 or float16 rounds every weight, which moves logits far more than the merge does, so
those dtypes get a looser default tolerance (``DEFAULT_ATOL``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grpolab.errors import UserError

logger = logging.getLogger(__name__)

# Fixed chats covering the shapes of prompt the tasks use: a short question, a system message with a grid,
# free text. Different lengths make the batch padded, so masking is exercised too.
PROBE_CHATS = (
    [{"role": "user", "content": "What is 7 + 12? Answer with just the number."}],
    [{"role": "system", "content": "You solve 4x4 Sudoku puzzles."},
     {"role": "user", "content": "Solve this 4x4 Sudoku:\n\n1 _ 3 _\n4 _ _ 2\n_ _ _ 1\n2 _ 4 3"}],
    [{"role": "user", "content": "Write one sentence about the sea, then count from one to five."}],
)
# Measured on SmolLM2-135M-Instruct (logits up to ~40) with LoRA r8 on every linear layer, B ~ N(0, 0.01):
# the adapter moves logits by up to 1.7; a float32 merge differs from base + adapter by 1.3e-4 (float sums
# taken in another order, across 30 layers), so 1e-3 leaves an 8x margin over that noise and still flags
# any real change. Saving in half precision rounds every weight: 0.43 (bfloat16), 0.075 (float16).
DEFAULT_ATOL = {"float32": 1e-3, "bfloat16": 1.0, "float16": 0.25}
INFO_FILE = "grpolab_merge.json"


@dataclass(frozen=True)
class MergeReport:
    max_abs_diff: float  # largest |logit difference| between base + adapter and the saved merged model
    ok: bool  # max_abs_diff <= atol; only then is ``out`` written
    out: Path
    atol: float
    adapter_effect: float = float("nan")  # largest |logit difference| the adapter makes to the base model


def merge(adapter: str | Path, out: str | Path, model: str | None = None, force: bool = False,
          atol: float | None = None, dtype: str = "float32") -> MergeReport:
    """Merge ``adapter`` into its base (or ``model``), verify the saved checkpoint, install it at ``out``."""
    from grpolab.models import read_run_info, resolve

    atol = _check_atol(atol, dtype)
    out = Path(out).expanduser()
    base_name = model or read_run_info(adapter).base_model
    check_target(out, force, protected=[Path(adapter), Path(resolve(base_name))])
    peft_model, tokenizer, base_name = _load(adapter, model)
    batch = probe_batch(tokenizer)
    reference = probe_logits(peft_model, batch)
    with peft_model.disable_adapter():
        effect = max_abs_diff(reference, probe_logits(peft_model, batch), batch["attention_mask"])
    logger.info("Merging the adapter into %s ...", base_name)
    merged = peft_model.merge_and_unload(safe_merge=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    try:
        save_checkpoint(merged, tokenizer, staging, dtype)
        del merged, peft_model  # the reload below needs the memory on big models
        difference, ok = verify(load_plain(staging), batch, reference, atol)
        if ok:
            _write_info(staging, adapter, base_name, dtype, difference, atol)
            install(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return MergeReport(max_abs_diff=difference, ok=ok, out=out, atol=atol, adapter_effect=effect)


def _check_atol(atol: float | None, dtype: str) -> float:
    if dtype not in DEFAULT_ATOL:
        raise UserError(f"--dtype {dtype} is not one of {', '.join(DEFAULT_ATOL)}")
    atol = DEFAULT_ATOL[dtype] if atol is None else atol
    if not atol >= 0:
        raise UserError(f"--atol must be a number >= 0, got {atol}")
    return atol


def check_target(out: Path, force: bool, protected: list[Path]) -> None:
    """Refuse an output that is a file, a non-empty directory (without force), or holds the inputs."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a directory for the merged model")
    target = out.resolve()
    for path in protected:
        if path.exists() and (target == path.resolve() or target in path.resolve().parents):
            raise UserError(f"--out {out} would replace {path}, an input of the merge: choose another directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty: add --force to replace it, or choose another directory")


def _load(adapter: str | Path, model: str | None):
    from grpolab.models import load_for_inference

    logger.info("Loading the base model and the adapter %s ...", adapter)
    return load_for_inference(model, str(adapter), dtype="float32")


def probe_batch(tokenizer):
    """The probe chats, left-padded, through the chat template (plain text for a tokenizer without one)."""
    from grpolab.generation import encode_chats

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


def save_checkpoint(model, tokenizer, directory: Path, dtype: str) -> None:
    """A plain transformers checkpoint: safetensors weights, config, generation config, tokenizer."""
    import torch

    model.to(getattr(torch, dtype)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    directory.chmod(0o755)  # mkdtemp makes it private; a merged model is meant to be shared


def load_plain(directory: Path):
    """The saved checkpoint, loaded by transformers alone in float32, as any user of it would."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def _write_info(directory: Path, adapter, base_name: str, dtype: str, difference: float, atol: float) -> None:
    from grpolab.models import read_run_info

    info = {"base_model": base_name, "adapter": str(adapter), "task": read_run_info(adapter).task,
            "dtype": dtype, "max_abs_diff": difference, "atol": atol, "probe_chats": PROBE_CHATS}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


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
