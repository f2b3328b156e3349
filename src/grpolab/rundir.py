"""A run directory's files, named once and read here.

``grpolab train``/``sft`` write ``grpolab_run.json`` (base model, task, its options) and ``config.yaml``
(the resolved recipe) beside the adapter, and ``checkpoint-N`` folders while training; ``grpolab merge``
writes ``grpolab_merge.json`` (the adapter a merged model came from). Eval, chat, probe, merge and resume
read them through this module only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from grpolab.errors import UserError, first_line
from grpolab.generation.settings import DEFAULT_MAX_NEW_TOKENS

MERGE_INFO = "grpolab_merge.json"

RUN_INFO = "grpolab_run.json"


def damaged_weights(directory: Path) -> str | None:
    """Why a ``*.safetensors`` file of ``directory`` cannot be loaded (file and reason), or None.

    Reads each file's header only (``safe_open`` checks that it is whole and that every tensor's bytes lie
    inside the file), so a truncated or overwritten file is caught before a model is built around it.
    """
    from safetensors import safe_open

    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as weights:
                weights.keys()
        except Exception as error:  # safetensors raises its own SafetensorError and OSError subclasses
            return f"{path} is damaged ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    return None


@dataclass
class RunInfo:
    """What a training run directory says about itself (written by ``grpolab train``)."""

    base_model: str
    task: str | None
    task_options: dict


def read_run_info(adapter_dir: str | Path) -> RunInfo:
    """Base model and task of an adapter directory; a plain PEFT adapter gives its base model only."""
    directory = Path(adapter_dir)
    if not directory.is_dir():
        raise UserError(
            f"adapter directory {directory} does not exist: give the output_dir of a training run"
        )
    info_path = directory / RUN_INFO
    if info_path.is_file():
        info = _read_json_object(info_path, "base_model")
        return RunInfo(info["base_model"], info.get("task"), info.get("task_options") or {})
    config_path = directory / "adapter_config.json"
    if not config_path.is_file():
        raise UserError(f"{directory} holds no LoRA adapter (no adapter_config.json): has training finished?")
    base = _read_json_object(config_path).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config_path} names no base model: pass --model")
    return RunInfo(base, None, {})


def _read_json_object(path: Path, required: str | None = None) -> dict:
    """A run's JSON file as a dict; a damaged one is a UserError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is damaged ({first_line(error)}): retrain, or restore the file") from None
    if not isinstance(data, dict) or (required and required not in data):
        raise UserError(f"{path} is damaged (no {required or 'JSON object'}): retrain, or restore the file")
    return data


def check_adapter_weights(adapter_dir: str | Path) -> None:
    """Refuse an adapter whose weights file is damaged (truncated, overwritten) before any model loads."""
    damage = damaged_weights(Path(adapter_dir))
    if damage:
        raise UserError(f"{damage}: retrain, or restore the file")


def run_quantization(adapter_dir: str | Path | None) -> dict | None:
    """The bitsandbytes settings a run trained with (its config.yaml), so that eval, chat and probe load its
    base the same way, not in 16-bit (review F9); None for a run without 4-bit/8-bit or a plain adapter."""
    path = Path(adapter_dir) / "config.yaml" if adapter_dir else None
    if path is None or not path.is_file():
        return None
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    if config.get("load_in_4bit"):
        return {"load_in_4bit": True, "bnb_4bit_quant_type": config.get("bnb_4bit_quant_type") or "nf4",
                "bnb_4bit_use_double_quant": bool(config.get("use_bnb_nested_quant"))}
    if config.get("load_in_8bit"):
        return {"load_in_8bit": True}
    return None


DEFAULT_SOURCE = "the default"


_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")


def run_max_new_tokens(adapter: str | None = None, model: str | None = None) -> tuple[int, str]:
    """(max_new_tokens, where it came from) for eval and chat when no flag gives it.

    A trained run wrote replies up to its ``max_completion_length`` tokens; fewer cut its Sudoku grids and
    GSM8K reasoning off. The run directory's config.yaml holds it (a ``checkpoint-N`` folder's run is its
    parent); a merged model's grpolab_merge.json names the adapter it came from. Otherwise: 256.
    """
    for path in run_configs(adapter, model):
        value = _completion_length(path)
        if value is not None:
            return value, f"max_completion_length in {path}"
    return DEFAULT_MAX_NEW_TOKENS, DEFAULT_SOURCE


def run_configs(adapter: str | None, model: str | None) -> list[Path]:
    merge_info = Path(model or "") / MERGE_INFO
    if not adapter and model and merge_info.is_file():
        adapter = json.loads(merge_info.read_text(encoding="utf-8")).get("adapter")
    if not adapter:
        return []
    run = Path(adapter)
    candidates = [run / "config.yaml"]
    if _CHECKPOINT_DIR.fullmatch(run.name):
        candidates.append(run.parent / "config.yaml")
    return [path for path in candidates if path.is_file()]


def _completion_length(path: Path) -> int | None:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise UserError(f"{path} is not valid YAML: repair it, or pass --max_new_tokens") from None
    value = config.get("max_completion_length") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None
