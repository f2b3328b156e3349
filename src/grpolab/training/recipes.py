"""Recipes: one parser over (TrainArgs, GRPOConfig, ModelConfig), YAML files, and user-facing errors.

YAML keys and CLI flags are the dataclass field names, so a TRL user's config works unchanged. Unknown
keys and values of the wrong type are errors naming the key; CLI flags override YAML values.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.resources
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from grpolab.errors import UserError, one_line
from grpolab.training.args import TrainArgs

DEFAULT_RECIPE = "default.yaml"


def recipes_dir() -> Path:
    """The packaged recipes (the repository's ``configs/`` directory)."""
    return Path(str(importlib.resources.files("grpolab.configs")))


def find_recipe(name: str) -> Path:
    """A recipe path as given, or a packaged recipe by file name (with or without ``.yaml``)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for candidate in (recipes_dir() / name, recipes_dir() / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(p.stem for p in recipes_dir().glob("*.yaml")))
    raise UserError(f"config file '{name}' not found: give a YAML path or a packaged recipe ({available})")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping of field: value")
    return data


def _parser(trainer_config=None, command: str = "train"):
    from trl import GRPOConfig, ModelConfig, TrlParser

    class Parser(TrlParser):
        def error(self, message: str):  # argparse would print the whole usage of ~300 flags
            raise UserError(f"{message} (see 'grpolab {command} --help_trl')")

    classes = (TrainArgs, trainer_config or GRPOConfig, ModelConfig)
    return Parser(classes), classes


def all_fields(classes) -> dict[str, Any]:
    """Field name -> resolved type annotation over several dataclasses."""
    known: dict[str, Any] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        known.update({f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init})
    return known


# Keys a TRL or reference-project recipe may hold that grpolab does not take, each with what does the same
# here (checked against trl 1.16 and transformers 5.23). {name} spells a key as the recipe or flag does.
REPLACED_KEYS: dict[str, str] = {
    # gone from TRL / transformers
    "max_prompt_length": "is no longer in TRL's GRPOConfig (prompts are not truncated): delete it; "
                         "with vLLM, {vllm_max_model_length} caps prompt + completion",
    "warmup_ratio": "is no longer in transformers (removed in 5.2): use {warmup_steps} with the same value "
                    "(a value below 1 is a fraction of the training steps)",
    "evaluation_strategy": "was renamed {eval_strategy} in transformers",
    "torch_dtype": "was renamed {dtype} (TRL's ModelConfig)",
    "no_cuda": "is no longer in transformers: use {use_cpu} true",
    "use_mps_device": "is no longer in transformers (an Apple GPU is used when there is one): delete it",
    "per_gpu_train_batch_size": "is no longer in transformers: use {per_device_train_batch_size}",
    "overwrite_output_dir": "is no longer in transformers: delete it ({resume} continues a run from its "
                            "newest checkpoint)",
    "logging_dir": "is no longer in transformers: set TENSORBOARD_LOGGING_DIR in the environment instead",
    "save_safetensors": "is no longer in transformers (checkpoints are always safetensors): delete it",
    "vllm_device": "is no longer in TRL: start 'grpolab serve' on its own GPU and set {vllm_mode} server",
    "vllm_guided_decoding_regex": "was renamed {vllm_structured_outputs_regex} in TRL",
    "use_liger_loss": "was renamed {use_liger_kernel} in TRL",
    # the reference projects' own script arguments (sudoku_trl_grpo, rl-trl)
    "dataset_id_or_path": "is not a grpolab key: give the JSONL file as {data_file} "
                          "(e.g. data/sudoku_4x4_qa.jsonl)",
    "data_files": "is not a grpolab key: use {data_file} (one JSONL path)",
    "dataset_name": "is not a grpolab key: pick the task with {task} (gsm8k reads openai/gsm8k)",
    "model_name": "is not a grpolab key: use {model_name_or_path}",
    "model": "is not a grpolab key: use {model_name_or_path}",
    "target_modules": "is not a grpolab key: use {lora_target_modules}",
    "wandb_project": "is not a grpolab key: set WANDB_PROJECT in the environment (or .env) and "
                     "{report_to} wandb",
    "wandb_name": "is not a grpolab key: use {run_name}",
    "no_wandb": "is not a grpolab key: use {report_to} none",
}


class _Spelled(dict):
    def __init__(self, spell: Callable[[str], str]) -> None:
        super().__init__()
        self.spell = spell

    def __missing__(self, name: str) -> str:
        return self.spell(name)


def replaced_key_message(key: str, spell: Callable[[str], str]) -> str:
    """One line: the key as written, why grpolab does not take it, and what to write instead."""
    return f"{spell(key)} {REPLACED_KEYS[key].format_map(_Spelled(spell))}"


def check_keys(config: dict[str, Any], known: dict[str, Any], source: str) -> None:
    for key, value in config.items():
        if key not in known and key in REPLACED_KEYS:
            raise UserError(f"{source}: {replaced_key_message(key, lambda name: repr(name))}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{source}: unknown key '{key}'{hint}")
        _check_type(key, value, known[key], source)


def _check_type(key: str, value: Any, annotation: Any, source: str) -> None:
    if value is None:
        return
    accepted = accepted_types(annotation)
    if not accepted or isinstance(value, tuple(accepted)):
        return
    if float in accepted and isinstance(value, int) and not isinstance(value, bool):
        return
    names = "/".join(sorted(t.__name__ for t in accepted))
    raise UserError(f"{source}: '{key}' must be {names}, got {type(value).__name__} {value!r}")


def accepted_types(annotation: Any) -> set[type]:
    """Basic Python types a field annotation admits; empty when it cannot tell (then the dataclass checks)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return {type(arg) for arg in typing.get_args(annotation)}
    if origin in (typing.Union, types.UnionType):
        found = [accepted_types(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return set() if any(not part for part in found) else set().union(*found)
    if origin in (list, tuple):
        return {list, tuple, str}  # a single value stands for a one-item list, as on the command line
    if origin is dict:
        return {dict}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {str}
    if annotation in (int, float, str, bool, list, dict):
        return {annotation}
    return set()


def parse_train_args(argv: list[str], trainer_config=None, default_recipe: str = DEFAULT_RECIPE,
                     command: str = "train"):
    """(TrainArgs, trainer config, ModelConfig) from ``--config FILE`` (else the default recipe) and flags.

    The trainer config is TRL's GRPOConfig unless another (SFTConfig for the warm-up) is given.
    """
    argv = _expand_bare_resume(list(argv))
    config_path = _pop_config(argv, default_recipe)
    parser, classes = _parser(trainer_config, command)
    known = all_fields(classes)
    config = read_yaml(config_path)
    apply_env(config.pop("env", None), config_path)
    check_keys(config, known, str(config_path))
    check_flags(argv, known, command)
    _options_follow_task(argv, config)
    parser.set_defaults_with_config(**{**device_defaults(), **config})
    try:
        train_args, grpo_config, model_config = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # dataclass __post_init__ checks: batch arithmetic, loss type, ...
        raise UserError(_with_fix(one_line(error))) from None
    completion = getattr(grpo_config, "max_completion_length", None)
    if train_args.max_seq_length and completion and train_args.max_seq_length <= completion:
        raise UserError(f"max_seq_length ({train_args.max_seq_length}) must exceed max_completion_length "
                        f"({completion}) to leave room for the prompt")
    train_args.recipe, train_args.recipe_init_kwargs = str(config_path), grpo_config.model_init_kwargs
    # `--report_to tensorboard,wandb` on the command line: the flag takes one string, a YAML list is a list.
    grpo_config.report_to = [name.strip() for item in grpo_config.report_to or [] for name in item.split(",")]
    return train_args, grpo_config, model_config


def apply_env(env: Any, source: Path) -> None:
    """A recipe's ``env:`` mapping goes into os.environ, as TRL's TrlParser does."""
    if env is None:
        return
    if not isinstance(env, dict):
        raise UserError(f"{source}: 'env' must be a mapping of NAME: value, got {type(env).__name__}")
    for key, value in env.items():
        os.environ[str(key)] = str(value)


def wants_unsloth(argv: list[str], default_recipe: str = DEFAULT_RECIPE) -> bool:
    """Whether a training run will load through Unsloth, read before TRL is imported (Unsloth must come
    first): ``--use_unsloth`` on the command line, else the recipe's key; never for ``--dry_run``."""
    argv = list(argv)
    config = read_yaml(_pop_config(argv, default_recipe))
    return _flag(argv, "use_unsloth", config) and not _flag(argv, "dry_run", config)


def _options_follow_task(argv: list[str], config: dict[str, Any]) -> None:
    """A recipe's task_options belong to its task: ``--task calc`` on the default (arith) recipe drops them
    unless ``--task_options`` is given too."""
    given = {item.partition("=")[0] for item in argv}
    task = next((item.partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else "")
                 for i, item in enumerate(argv) if item.partition("=")[0] == "--task"), None)
    if task is not None and task != config.get("task") and "--task_options" not in given:
        config.pop("task_options", None)


def _flag(argv: list[str], name: str, config: dict[str, Any]) -> bool:
    value = config.get(name, False)
    for index, item in enumerate(argv):
        key, _, inline = item.partition("=")
        if key == f"--{name}":
            following = argv[index + 1] if index + 1 < len(argv) else "--"
            value = inline or ("true" if following.startswith("--") else following)
    return str(value).lower() in ("true", "1", "yes")


def check_flags(argv: list[str], known: dict[str, Any], command: str = "train") -> None:
    for item in argv:
        if item.startswith("--"):
            key = item[2:].split("=", 1)[0].replace("-", "_")
            if key not in known and key in REPLACED_KEYS:
                raise UserError(replaced_key_message(key, lambda name: f"--{name}"))
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean --{close[0]}?" if close else f"; see 'grpolab {command} --help_trl'"
                raise UserError(f"unknown flag --{key}{hint}")


def device_defaults() -> dict[str, Any]:
    """Defaults that differ from TRL's, each for a measured reason; a recipe or flag still overrides them.

    dtype: auto, so that the weights load in the dtype grpolab.placement picks for this hardware.
    bf16: TRL defaults it to True, which fails on a machine without bf16 hardware; off there.
    use_cpu: on a machine with no accelerator, say so, so that a GPU recipe (bf16: true) still parses
    for --dry_run and validation instead of failing inside TrainingArguments.
    report_to: TensorBoard event files under OUTPUT_DIR/runs/ (written by tensorboardX, a core dependency
    of 90 kB), so every run can be watched offline with `tensorboard --logdir outputs`; wandb and swanlab
    are added by naming them, e.g. report_to: [tensorboard, wandb].
    """
    from grpolab import placement

    hardware = placement.detect()
    # dtype: TRL's is float32; grpolab's auto is grpolab.placement's rule
    defaults: dict[str, Any] = {"dtype": "auto", "report_to": ["tensorboard"]}
    if not hardware.bf16:
        defaults["bf16"] = False
    if hardware.accelerator == "cpu":
        defaults["use_cpu"] = True
    return defaults


def _pop_config(argv: list[str], default_recipe: str) -> Path:
    if "--config" not in argv:
        return find_recipe(default_recipe)
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise UserError("--config needs a YAML file path or a recipe name")
    argv.pop(index)
    return find_recipe(argv.pop(index))


def _expand_bare_resume(argv: list[str]) -> list[str]:
    """``--resume`` alone means ``--resume latest``."""
    out = []
    for index, item in enumerate(argv):
        out.append(item)
        following = argv[index + 1] if index + 1 < len(argv) else None
        if item == "--resume" and (following is None or following.startswith("--")):
            out.append("latest")
    return out


# Fixes for TRL's own checks, whose messages name the problem but not the flags that solve it.
_FIXES = {
    "must be divisible by num_generations": "make per_device_train_batch_size x steps_per_generation "
    "(x processes) a multiple of num_generations",
}


def _with_fix(message: str) -> str:
    fix = next((fix for fragment, fix in _FIXES.items() if fragment in message), None)
    return f"{message.rstrip('.')}: {fix}" if fix else message
