"""A run directory's files, named once and read here.

``grpolab train``/``sft`` write ``grpolab_run.json`` (base model, task, its options) and ``config.yaml``
(the resolved recipe) beside the adapter, and ``checkpoint-N`` folders while training; ``grpolab merge``
writes ``grpolab_merge.json`` (the adapter a merged model came from). Eval, chat, probe, merge and resume
read them through this module only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from grpolab.errors import UserError, first_line
from grpolab.generation.settings import DEFAULT_MAX_NEW_TOKENS

MERGE_INFO = "grpolab_merge.json"

RUN_INFO = "grpolab_run.json"

DEFAULT_SOURCE = "the default"  # where max_new_tokens came from when no run says

_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")


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


@dataclass(frozen=True)
class RunDefaults:
    """What a run directory says a later eval, probe or chat should default to, read once (``read_run``).

    ``load_for_inference`` loads the adapter's base from it; eval, probe and chat take their model, task,
    options, ``max_new_tokens`` and tool settings from it. A base model's record is empty; a merged model's
    holds its run's recipe and task (from grpolab_merge.json), but no adapter and so no way of loading.
    """

    adapter: str | None = None
    base_model: str | None = None
    task: str | None = None  # the adapter's run's task: what eval and probe default to
    task_options: dict = field(default_factory=dict)
    merged_task: str | None = None  # the task of the run a merged model came from
    recipe: dict = field(default_factory=dict)  # the run's config.yaml
    recipe_path: Path | None = None

    @property
    def trained_task(self) -> str | None:
        return self.task or self.merged_task

    @property
    def max_new_tokens(self) -> int:
        """The run's ``max_completion_length``: it trained on replies up to that length, and fewer tokens cut
        its Sudoku grids and GSM8K reasoning off. Otherwise 256."""
        return self._completion_length() or DEFAULT_MAX_NEW_TOKENS

    @property
    def max_new_tokens_from(self) -> str:
        return f"max_completion_length in {self.recipe_path}" if self._completion_length() else DEFAULT_SOURCE

    def _completion_length(self) -> int | None:
        value = self.recipe.get("max_completion_length")
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None

    @property
    def base_recipe(self) -> dict:
        """The recipe keys that say how the adapter's base loads (revision, attention, 4-bit); none for a
        merged model, whose weights already hold the adapter."""
        return self.recipe if self.adapter else {}


def read_run(adapter: str | Path | None = None, model: str | None = None) -> RunDefaults:
    """The record of ``adapter``'s run (base, task, options, recipe), or of the run a merged ``model`` came
    from; empty for a base model."""
    if adapter:
        info = read_run_info(adapter)
        recipe, path = read_recipe(adapter)
        return RunDefaults(str(adapter), info.base_model, info.task, info.task_options, recipe=recipe,
                           recipe_path=path)
    merge_info = Path(model or "") / MERGE_INFO
    if not (model and merge_info.is_file()):
        return RunDefaults()
    merged = _read_json_object(merge_info)
    recipe, path = read_recipe(merged.get("adapter"))
    return RunDefaults(merged_task=merged.get("task"), recipe=recipe, recipe_path=path)


def quantization(recipe: dict) -> dict | None:
    """The bitsandbytes settings a recipe trained with, so that eval, chat and probe load its base the same
    way, not in 16-bit (review F9); None without 4-bit/8-bit."""
    if recipe.get("load_in_4bit"):
        return {"load_in_4bit": True, "bnb_4bit_quant_type": recipe.get("bnb_4bit_quant_type") or "nf4",
                "bnb_4bit_use_double_quant": bool(recipe.get("use_bnb_nested_quant"))}
    if recipe.get("load_in_8bit"):
        return {"load_in_8bit": True}
    return None


def read_recipe(adapter: str | Path | None) -> tuple[dict, Path | None]:
    """(the resolved recipe, its path) of the run behind ``adapter``: its config.yaml, or its parent's for a
    ``checkpoint-N`` folder; ({}, None) for a plain PEFT adapter."""
    if not adapter:
        return {}, None
    run = Path(adapter)
    candidates = [run / "config.yaml"]
    if _CHECKPOINT_DIR.fullmatch(run.name):
        candidates.append(run.parent / "config.yaml")
    for path in candidates:
        if path.is_file():
            return _read_yaml(path), path
    return {}, None


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise UserError(f"{path} is not valid YAML: repair it, or restore the file") from None
    return config if isinstance(config, dict) else {}
