"""``grpolab chat``: load a model (base, base + adapter, or merged), then a REPL that streams its replies.

The session logic (history, /commands, context trimming, task verdicts) is ``grpolab.chat.session`` and the
loop ``grpolab.chat.repl``; this module parses the flags, loads the model and starts the loop.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from grpolab.errors import UserError
from grpolab.generation.settings import GenerationSettings

EXAMPLE = """examples:
  grpolab chat                                          # the embedded SmolLM2-135M-Instruct
  grpolab chat --adapter outputs/arith --task arith     # an adapter, with its task's prompt and scorer
  grpolab chat --model merged/sudoku --task sudoku --temperature 0.7 --top_p 0.9
  grpolab chat --model Qwen/Qwen2.5-0.5B-Instruct --system "Answer in one sentence."

in the session: /help, /set temperature 0.3, /system TEXT, /reset, /history, /save FILE, /answer 42, /exit.
Ctrl-C while the model writes stops that reply (the partial reply stays in the history);
Ctrl-C or Ctrl-D at the prompt leaves."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grpolab.chat.session import ChatArgs
    from grpolab.commands._flags import add_fields

    add_fields(parser, ChatArgs)
    # Taken as text and read once by the rules /set uses, so a flag and /set answer a bad value alike. A flag
    # not given is None: the setting's default (max_new_tokens: the run's length).
    for spec in fields(GenerationSettings):
        help_text = spec.metadata["help"]
        if "default" not in help_text:
            help_text += f" (default: {spec.default})"
        parser.add_argument(f"--{spec.name}", help=help_text)


def run(args: argparse.Namespace) -> int:
    from grpolab import models
    from grpolab.chat import repl
    from grpolab.chat import session as chat

    run_defaults = models.open_run(args.adapter, args.model)
    settings = _settings(args, run_defaults.max_new_tokens)
    length_from = "" if args.max_new_tokens is not None else _length_source(run_defaults)
    model, tokenizer, name = models.load_for_inference(_model_name(args), args.adapter, args.dtype,
                                                       run=run_defaults)
    context = args.context or getattr(model.config, "max_position_embeddings", None)
    if context is not None and settings.max_new_tokens >= context:
        raise UserError(
            f"--max_new_tokens ({settings.max_new_tokens}) must be below the context window "
            f"({context} tokens): lower it or raise --context"
        )
    task = chat.get_chat_task(args.task) if args.task else None
    session = chat.ChatSession(
        settings=settings,
        system=args.system,
        task=task,
        context_tokens=context,
        info={"model": name, "adapter": args.adapter},
    )
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    _print_banner(args, name, session, length_from, run_defaults.trained_task)
    uses_tools = task is not None and (task.task.tools or task.task.environment_factory
                                       or run_defaults.recipe.get("tools"))
    if uses_tools:
        stream, count_tokens = repl.tool_backend(model, tokenizer, task.task, run_defaults, args.seed)
        session.tools = stream.tools
    else:
        stream, count_tokens = repl.model_backend(model, tokenizer)
    repl.take_ctrl_c()
    return repl.run_repl(session, stream, count_tokens, read_line=repl.line_reader())


def _model_name(args: argparse.Namespace) -> str | None:
    from grpolab.models import DEFAULT_MODEL

    return args.model or (None if args.adapter else DEFAULT_MODEL)


def _length_source(run_defaults) -> str:
    """Where the run's max_new_tokens came from (its config.yaml), or '' for the default."""
    from grpolab.rundir import DEFAULT_SOURCE

    source = run_defaults.max_new_tokens_from
    return "" if source == DEFAULT_SOURCE else source


def _settings(args: argparse.Namespace, run_length: int | None = None) -> GenerationSettings:
    """Generation settings from the flags given, each read once by the rules /set uses; the others keep their
    defaults, and max_new_tokens the run's length (``run_length``) when there is one."""
    from grpolab.generation.settings import SETTINGS, parse_setting

    values = {} if run_length is None else {"max_new_tokens": run_length}
    for name in SETTINGS:
        text = getattr(args, name)
        if text is None:
            continue
        try:
            values[name] = parse_setting(name, text)
        except ValueError as error:
            raise UserError(f"--{error}") from None
    return GenerationSettings(**values)


def _print_banner(args: argparse.Namespace, name: str, session, length_from: str = "",
                  trained_on: str | None = None) -> None:
    parts = [f"chatting with {name}"] + ([f"adapter {args.adapter}"] if args.adapter else [])
    parts += [f"task {session.task.name}"] if session.task else []
    print(", ".join(parts) + f"; context {session.context_tokens} tokens")
    print(session.settings_line() + (f" (max_new_tokens: {length_from})" if length_from else ""))
    if session.task:
        print(session.task.hint)
    if trained_on and not args.task:
        print(
            f"note: this model was trained on task '{trained_on}': add --task {trained_on} to use its prompt"
        )
    print("/help lists the commands; Ctrl-D or /exit leaves")
