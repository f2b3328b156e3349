"""What ``grpolab eval`` and ``grpolab probe`` run and how: one dataclass each, whose fields are the flags.

Each field's default and help are written here once; ``grpolab eval`` builds its flags from them and
parses them back with TRL's parser (``grpolab.commands._flags``). Torch-free, so ``--help`` stays fast.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpolab.errors import UserError
from grpolab.generation.settings import GenerationSettings, check_settings, setting_field

DEFAULT_TASK = "arith"
BACKENDS = ("transformers", "vllm", "openai")


SERVER_FIELDS = ("base_url", "api_key_env", "concurrency", "timeout")  # the --backend openai flags


def _help(text: str, **more: Any) -> Any:
    return {"help": text, **more}


@dataclass
class EvalConfig:
    """What to evaluate and how; ``model``, ``task``, ``max_new_tokens`` left as None come from the run."""

    model: str | None = field(default=None, metadata=_help(
        "model name or path (default: the adapter's base model, else smollm2-135m-instruct); with --backend "
        "openai the served name (default: the server's only model)"))
    adapter: str | None = field(default=None, metadata=_help(
        "a training run directory (or any PEFT LoRA adapter directory)"))
    task: str | None = field(default=None, metadata=_help(
        "task name or package.module:TASK (default: the run's task, else arith)"))
    task_options: dict[str, Any] | str | None = field(default_factory=dict, metadata=_help(
        'task options as a YAML mapping or JSON, e.g. \'{"levels": "add-50"}\''))
    data_file: str | None = field(
        default=None, metadata=_help("JSONL file of items (default: the task's own data)")
    )
    split: str = field(default="test", metadata=_help("data split to evaluate"))
    num: int | None = field(default=None, metadata=_help("number of items (default: the task's default)"))
    seed: int = field(default=0, metadata=_help("seed for generated data and for sampling"))
    k: int = field(
        default=1, metadata=_help("completions per item; k > 1 reports pass@k and needs --temperature > 0")
    )
    temperature: float = setting_field("temperature")
    top_p: float = setting_field("top_p")
    max_new_tokens: int | None = setting_field("max_new_tokens", default=None)
    batch_size: int | None = field(
        default=None, metadata=_help("sequences generated at once (default: 128 on the CPU, 32 on a GPU); "
                                     "prompts per batch = batch_size // k")
    )
    backend: str = field(
        default="transformers",
        metadata=_help(
            "generation engine; vllm needs the 'vllm' extra (a GPU); openai sends the items to an "
            "OpenAI-compatible server at --base_url",
            choices=BACKENDS,
        ),
    )
    max_new_tokens_from: str | None = None  # where max_new_tokens came from, for the record (not a flag)
    # --backend openai only (see grpolab.generation.openai); the key itself is never stored, only its
    # variable.
    base_url: str | None = field(
        default=None, metadata=_help("the server's OpenAI API root, e.g. http://127.0.0.1:8000/v1")
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata=_help(
            "environment variable holding the API key, if the server needs one (only its name is recorded)"
        ),
    )
    concurrency: int = field(default=8, metadata=_help("requests in flight at once"))
    timeout: float = field(default=600.0, metadata=_help("seconds to wait for one reply"))

    def __post_init__(self) -> None:
        from grpolab.tasks.base import parse_task_options

        self.task_options = parse_task_options(self.task_options)
        if self.backend not in BACKENDS:
            raise UserError(f"--backend must be transformers, vllm or openai, got {self.backend!r}")
        if self.backend == "openai" or self.base_url is not None:
            check_server_flags(self)
        _check_counts(("--num", self.num), ("--k", self.k), ("--batch_size", self.batch_size))
        _check_generation_settings(self)
        if self.k > 1 and self.temperature == 0:
            raise UserError(
                f"--k {self.k} needs sampling: add --temperature 0.7 (greedy gives K equal answers)"
            )

    def settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p
        )

    @property
    def name(self) -> str:
        """A short run name for tables and charts: the model, plus the adapter's folder when there is one."""
        model = Path(str(self.model).rstrip("/")).name
        return f"{model} + {Path(str(self.adapter).rstrip('/')).name}" if self.adapter else model


@dataclass
class ProbeConfig:
    """What to probe; ``model``/``task`` left as None come from the adapter's run directory."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "model name or path (default: the adapter's base model, else smollm2-135m-instruct)"
        },
    )
    adapter: str | None = field(
        default=None, metadata={"help": "a training run directory (or any PEFT LoRA adapter directory)"}
    )
    task: str | None = field(
        default=None,
        metadata={"help": "task name or package.module:TASK (default: the run's task, else arith)"},
    )
    task_options: dict[str, Any] | str | None = field(
        default_factory=dict,
        metadata={"help": 'task options as a YAML mapping or JSON, e.g. \'{"blanks": "4,8"}\''},
    )
    data_file: str | None = field(
        default=None, metadata={"help": "JSONL file of items (default: the task's own data)"}
    )
    split: str = field(default="train", metadata={"help": "data split to sample prompts from"})
    num: int = field(default=16, metadata={"help": "number of prompts"})
    k: int = field(default=8, metadata={"help": "completions per prompt: the GRPO group size G"})
    temperature: float = setting_field(
        "temperature", default=1.0, help="sampling temperature, as in training (TRL's default is 1.0)"
    )
    top_p: float = setting_field("top_p")
    max_new_tokens: int = setting_field(
        "max_new_tokens",
        default=256,
        help="longest completion, in tokens: use the recipe's max_completion_length",
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "sequences generated at once (default: 128 on the CPU, 32 on a GPU)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for generated data and for sampling"})
    reward_funcs: list[str] | str | None = field(
        default=None, metadata={"help": "comma-separated reward functions (default: the task's)"}
    )
    reward_weights: list[float] | str | None = field(
        default=None,
        metadata={
            "help": "comma-separated weights, one per reward function (default: the task's, or 1 each)"
        },
    )

    def __post_init__(self) -> None:
        from grpolab.tasks.base import parse_task_options

        self.task_options = parse_task_options(self.task_options)
        self.reward_funcs = _names(self.reward_funcs)
        self.reward_weights = _weights(self.reward_weights)
        _check_counts(("--num", self.num), ("--batch_size", self.batch_size))
        _check_generation_settings(self)
        if self.k < 2:
            raise UserError(
                f"--k {self.k} is a group of one, which never has a spread: use GRPO's group "
                "size (num_generations), 2 or more, e.g. --k 8"
            )
        if self.temperature <= 0:
            raise UserError(
                f"--temperature {self.temperature} makes the {self.k} completions of a prompt "
                "equal, so every group would show no signal: sample as training does, e.g. 1.0"
            )


def _check_counts(*flags: tuple[str, int | None]) -> None:
    for flag, value in flags:
        if value is not None and value < 1:
            raise UserError(f"{flag} must be 1 or more, got {value}")


def _check_generation_settings(config: EvalConfig | ProbeConfig) -> None:
    """max_new_tokens, temperature and top_p by their one rule (``generation.settings.RULES``)."""
    try:
        check_settings(config, ("max_new_tokens", "temperature", "top_p"))
    except ValueError as error:
        raise UserError(str(error)) from None


def _names(value: list[str] | str | None) -> list[str] | None:
    if isinstance(value, str):
        value = value.split(",")
    return [name.strip() for name in value if name.strip()] or None if value else None


def _weights(value: list[float] | str | None) -> list[float] | None:
    if not isinstance(value, str):
        return value
    try:
        return [float(weight) for weight in value.split(",")]
    except ValueError:
        raise UserError(
            f"--reward_weights must be numbers separated by commas, like 1,0.2; got {value!r}"
        ) from None


def check_server_flags(config: EvalConfig) -> None:
    """The openai backend's flags, checked when the EvalConfig is built."""
    if config.backend != "openai":
        raise UserError(f"--base_url is for --backend openai (got --backend {config.backend}): add "
                        "--backend openai, or drop --base_url")
    if not config.base_url:
        raise UserError("--backend openai needs --base_url, the server's OpenAI API root, "
                        "e.g. --base_url http://127.0.0.1:8000/v1")
    parts = urllib.parse.urlsplit(config.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--base_url must be an http(s) URL like http://127.0.0.1:8000/v1, "
                        f"got {config.base_url!r}")
    if parts.username or parts.password:
        raise UserError("--base_url must not hold credentials (they would be written to eval_config.json): "
                        "put the key in an environment variable and name it with --api_key_env")
    if config.adapter:
        raise UserError("--adapter is for local backends: serve the adapter (vllm serve BASE --enable-lora "
                        "--lora-modules NAME=ADAPTER_DIR) and pass --model NAME, with --task if not arith")
    if config.concurrency < 1:
        raise UserError(f"--concurrency must be 1 or more, got {config.concurrency}")
    if not config.timeout > 0:
        raise UserError(f"--timeout must be more than 0 seconds, got {config.timeout}")
