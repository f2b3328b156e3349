"""What ``grpolab eval`` evaluates and how: one dataclass whose fields are the command's flags.

Each field's default and help are written here once; ``grpolab eval`` builds its flags from them and
parses them back with TRL's parser (``grpolab.arguments``). Torch-free, so ``--help`` stays fast.
"""

from __future__ import annotations

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
    batch_size: int = field(
        default=32, metadata=_help("sequences generated at once; prompts per batch = batch_size // k")
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
            from grpolab.generation.openai import validate

            validate(self)
        for flag, value in (
            ("--num", self.num),
            ("--k", self.k),
            ("--max_new_tokens", self.max_new_tokens),
            ("--batch_size", self.batch_size),
        ):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be 1 or more, got {value}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be 0 (greedy) or more, got {self.temperature}")
        try:
            check_settings(self, ("top_p",))
        except ValueError as error:
            raise UserError(str(error)) from None
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
