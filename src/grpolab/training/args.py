"""grpolab's own training arguments; everything else is TRL's ``GRPOConfig`` and ``ModelConfig``.

This module imports nothing heavy, so ``grpolab train --help`` stays fast. The full parser over
``(TrainArgs, GRPOConfig, ModelConfig)`` lives in ``grpolab.training.recipes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from grpolab.generation.settings import PROMPT_BUDGET


@dataclass
class TrainArgs:
    """Arguments of grpolab itself; YAML keys and flags use these names."""

    task: str = field(
        default="arith", metadata={"help": "task name (arith, sudoku, gsm8k) or 'package.module:TASK'"}
    )
    data_file: str | None = field(
        default=None, metadata={"help": "JSONL training data; default: the task's generator or hub data"}
    )
    num_train: int | None = field(
        default=None, metadata={"help": "number of training items (default: the task's own)"}
    )
    task_options: dict | str | None = field(
        default=None,
        metadata={
            "help": 'task-specific options as a YAML mapping or JSON string, e.g. \'{"levels": "add-20"}\''
        },
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "reward functions: the task's by name, or 'package.module:function'; default: the task's"
        },
    )
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "start from this LoRA adapter (e.g. the output_dir of 'grpolab sft') instead of a new one"
        },
    )
    resume: str | None = field(
        default=None,
        metadata={
            "help": "resume from 'latest' (the newest complete checkpoint in output_dir) or a checkpoint path"
        },
    )
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "print the resolved plan (batch arithmetic, memory estimate) and exit without loading "
                    "weights"
        },
    )
    use_unsloth: bool = field(
        default=False,
        metadata={"help": "load the model and LoRA through Unsloth (needs the 'unsloth' extra and CUDA)"},
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={
            "help": f"Unsloth's context in tokens, prompt + completion (default: max_completion_length "
            f"+ {PROMPT_BUDGET}, a prompt budget that holds every built-in task's prompt)"
        },
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={
            "help": "run under 'accelerate launch' with this config: ddp, zero2, zero3, cpu2, "
            "npu-ddp, npu-zero2 or a YAML path"
        },
    )
    num_processes: int | None = field(
        default=None, metadata={"help": "processes for accelerate launch (default: the config's)"}
    )
    # Several machines (issue 30): passed to 'accelerate launch'; checked by grpolab.training.multinode.
    num_machines: int | None = field(
        default=None, metadata={"help": "machines in the run (accelerate's --num_machines; default: 1)"}
    )
    machine_rank: int | None = field(
        default=None, metadata={"help": "this machine's rank, 0 .. num_machines-1 (0 is the head node)"}
    )
    main_process_ip: str | None = field(
        default=None,
        metadata={"help": "the head node's (machine rank 0) address, needed with several machines"},
    )
    main_process_port: int | None = field(
        default=None, metadata={"help": "the head node's rendezvous port (default: 29500)"}
    )
    torch_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (default: torch's choice)"}
    )
    logprobs: str = field(
        default="auto",
        metadata={
            "help": "per-token log-probs: 'shared' (as plain, each group's prompt run once; in sft the "
            "tokens all rows of a batch begin with), 'plain' "
            "(logits of the completion only, fast on CPU), 'fused' (TRL's fused LM head, lean on "
            "memory) or 'auto' (shared on CPU, fused elsewhere)"
        },
    )
    generation: str = field(
        default="auto",
        metadata={
            "help": "how TRL's generate runs: 'merged' (LoRA folded into a copy of the weights while "
            "generating), 'shared' (as merged, each group's prompt prefilled once), 'trl' "
            "(unchanged) or 'auto' (shared on CPU, trl elsewhere)"
        },
    )
    plot: bool = field(
        default=True, metadata={"help": "write reward_curve.png in output_dir as training goes"}
    )
    num_samples_logged: int = field(
        default=4, metadata={"help": "completions saved to samples.jsonl per logging step"}
    )
    reward_timeout: float = field(
        default=60.0,
        metadata={
            "help": "seconds one call of a reward function may take before training stops with its name "
            "(0 = no limit); default 60, far above the milliseconds the task rewards take"
        },
    )

    tools: list[str] | None = field(
        default=None,
        metadata={"help": "extra tools the model may call, as 'package.module:function' (typed, with a "
                          "docstring); the task's own tools come first"},
    )
    tool_timeout: float = field(
        default=10.0,
        metadata={"help": "seconds one tool call may take; a slower call is abandoned and the model is told "
                          "(0 = no limit)"},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "chat template for tool use: 'chatml-tools' (TRL's ChatML tool template, for "
                          "SmolLM2) or a .jinja path; default: the task's, else the model's own"},
    )
    # Not flags or YAML keys (init=False: TRL's parser skips them): what the recipe itself said, set by
    # recipes.parse_train_args and written to the run's files, since model_init_kwargs gets this machine's
    # placement before training.
    recipe: str | None = field(default=None, init=False)
    recipe_init_kwargs: dict | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        from grpolab.tasks.base import parse_task_options

        self.task_options = parse_task_options(self.task_options)
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        if self.reward_timeout < 0:
            raise ValueError(
                f"--reward_timeout ({self.reward_timeout:g}) must be 0 (no limit) or more seconds"
            )
        if self.logprobs not in ("auto", "shared", "plain", "fused"):
            raise ValueError(f"--logprobs ({self.logprobs}) must be auto, shared, plain or fused")
        if self.generation not in ("auto", "shared", "merged", "trl"):
            raise ValueError(f"--generation ({self.generation}) must be auto, shared, merged or trl")
        if isinstance(self.tools, str):
            self.tools = [self.tools]
        if self.tool_timeout < 0:
            raise ValueError(f"--tool_timeout ({self.tool_timeout:g}) must be 0 (no limit) or more seconds")
        if self.num_train is not None and self.num_train < 1:
            raise ValueError(f"--num_train ({self.num_train}) must be at least 1")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ValueError(f"--max_seq_length ({self.max_seq_length}) must be at least 1")


def context_length(train_args: TrainArgs, trainer_config) -> int:
    """Prompt + completion tokens: ``max_seq_length``, else the prompt budget plus the completion length
    (GRPO's max_completion_length, SFT's max_length)."""
    if train_args.max_seq_length:
        return train_args.max_seq_length
    completion = getattr(trainer_config, "max_completion_length", None)
    return PROMPT_BUDGET + completion if completion else getattr(trainer_config, "max_length", None) or 2048


def field_names(cls) -> list[str]:
    """The fields that are flags (``init=False`` ones are set by grpolab, not by the user)."""
    return [f.name for f in fields(cls) if f.init]
