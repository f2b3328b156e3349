"""Recipes: one parser over (TrainArgs, GRPOConfig, ModelConfig), YAML files, and user-facing errors.

YAML keys and CLI flags are the dataclass field names, so a TRL user's config works unchanged. Unknown
keys and values of the wrong type are errors naming the key; CLI flags override YAML values.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.resources
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from grpolab.config import TrainArgs
from grpolab.errors import UserError

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


def check_keys(config: dict[str, Any], known: dict[str, Any], source: str) -> None:
    for key, value in config.items():
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
    config.pop("env", None)
    check_keys(config, known, str(config_path))
    check_flags(argv, known, command)
    parser.set_defaults_with_config(**{**device_defaults(), **config})
    try:
        train_args, grpo_config, model_config = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # dataclass __post_init__ checks: batch arithmetic, loss type, ...
        raise UserError(_with_fix(_one_line(error))) from None
    grpo_config.grpolab_recipe = str(config_path)
    return train_args, grpo_config, model_config


def check_flags(argv: list[str], known: dict[str, Any], command: str = "train") -> None:
    for item in argv:
        if item.startswith("--"):
            key = item[2:].split("=", 1)[0].replace("-", "_")
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean --{close[0]}?" if close else f"; see 'grpolab {command} --help_trl'"
                raise UserError(f"unknown flag --{key}{hint}")


def device_defaults() -> dict[str, Any]:
    """Defaults that differ from TRL's, each for a measured reason; a recipe or flag still overrides them.

    bf16: TRL defaults it to True, which fails on a machine without bf16 hardware; off there.
    use_cpu: on a machine with no accelerator, say so, so that a GPU recipe (bf16: true) still parses
    for --dry_run and validation instead of failing inside TrainingArguments.
    """
    import torch

    defaults: dict[str, Any] = {}
    if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        defaults["bf16"] = False
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
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


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
