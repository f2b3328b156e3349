"""``grpolab chat``: load a model (base, base + adapter, or merged), then a REPL that streams its replies.

The session logic (history, /commands, context trimming, task verdicts) is ``grpolab.chat.ChatSession``;
this module loads the model and runs the loop around it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import fields
from pathlib import Path
from typing import TextIO

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

Messages = list[dict[str, str]]
Stream = Callable[[Messages, GenerationSettings], Iterator[str]]
CountTokens = Callable[[Messages], int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grpolab.arguments import add_fields
    from grpolab.chat import ChatArgs

    add_fields(parser, ChatArgs)
    # Taken as text and read by the rules /set uses, so a flag and /set answer a bad value alike.
    for spec in fields(GenerationSettings):
        default = None if spec.name == "max_new_tokens" else spec.default  # None: the run's length
        parser.add_argument(f"--{spec.name}", default=default, help=spec.metadata["help"])


def run(args: argparse.Namespace) -> int:
    from grpolab import chat, models

    length_from = _resolve_max_new_tokens(args)
    settings = _settings(args)
    model, tokenizer, name = models.load_for_inference(_model_name(args), args.adapter, args.dtype)
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
    _print_banner(args, name, session, length_from)
    if task is not None and task.task.tools:
        stream, count_tokens = tool_backend(model, tokenizer, task.task)
    else:
        stream, count_tokens = model_backend(model, tokenizer)
    _take_ctrl_c()
    return run_repl(session, stream, count_tokens, read_line=_line_reader())


def _model_name(args: argparse.Namespace) -> str | None:
    from grpolab.models import DEFAULT_MODEL

    return args.model or (None if args.adapter else DEFAULT_MODEL)


def _resolve_max_new_tokens(args: argparse.Namespace) -> str:
    """Set ``args.max_new_tokens`` from the run when no flag gave it; return the run's file, or ''."""
    if args.max_new_tokens is not None:
        return ""
    from grpolab.generation.settings import DEFAULT_SOURCE, run_max_new_tokens

    args.max_new_tokens, source = run_max_new_tokens(args.adapter, args.model)
    return "" if source == DEFAULT_SOURCE else source


def _settings(args: argparse.Namespace) -> GenerationSettings:
    """Generation settings from the flags (None: the default), checked by the same rules as /set."""
    from grpolab.generation.settings import parse_setting

    values = {}
    for spec in fields(GenerationSettings):
        if getattr(args, spec.name) is None:
            continue
        try:
            values[spec.name] = parse_setting(spec.name, str(getattr(args, spec.name)))
        except ValueError as error:
            raise UserError(f"--{error}") from None
    return GenerationSettings(**values)


def _print_banner(args: argparse.Namespace, name: str, session, length_from: str = "") -> None:
    parts = [f"chatting with {name}"] + ([f"adapter {args.adapter}"] if args.adapter else [])
    parts += [f"task {session.task.name}"] if session.task else []
    print(", ".join(parts) + f"; context {session.context_tokens} tokens")
    print(session.settings_line() + (f" (max_new_tokens: {length_from})" if length_from else ""))
    if session.task:
        print(session.task.hint)
    trained_on = _trained_task(args)
    if trained_on and not args.task:
        print(
            f"note: this model was trained on task '{trained_on}': add --task {trained_on} to use its prompt"
        )
    print("/help lists the commands; Ctrl-D or /exit leaves")


def _trained_task(args: argparse.Namespace) -> str | None:
    """The task a run directory or a merged model was trained on, where it says so."""
    if args.adapter:
        from grpolab.models import read_run_info

        return read_run_info(args.adapter).task
    merge_info = Path(args.model or "") / "grpolab_merge.json"
    if args.model and merge_info.is_file():
        return json.loads(merge_info.read_text()).get("task")
    return None


def _take_ctrl_c() -> None:
    """Make Ctrl-C raise KeyboardInterrupt even when SIGINT was inherited as ignored.

    A shell without job control starts background commands with SIGINT ignored, and Python then leaves it
    ignored: chat would neither stop a reply nor exit on Ctrl-C. Chat is interactive, so it takes Ctrl-C back.
    """
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


def _line_reader() -> Callable[[str], str]:
    try:
        import readline  # noqa: F401  (gives input() line editing and arrow-key history)
    except ImportError:
        pass
    return input


# ------------------------------------------------------------------------------------------- REPL


def model_backend(model, tokenizer) -> tuple[Stream, CountTokens]:
    """(stream, count_tokens) for a loaded model: all the REPL needs from it."""
    from grpolab.generation.hf import stream_chat

    def stream(messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        return stream_chat(model, tokenizer, messages, settings)

    def count_tokens(messages: Messages) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return stream, count_tokens


class ToolStream:
    """A stream that runs one tool episode per message (``grpolab.tools.run_episode``, as eval does): each
    call and its result are shown as they happen, then the final reply; ``last_reply`` is what is judged."""

    def __init__(self, model, tokenizer, task) -> None:
        from grpolab.evaluation.tool_runner import DEFAULT_MAX_ITERATIONS
        from grpolab.tools import guarded, prepare_tokenizer

        self.model, self.task = model, task
        self.tokenizer = prepare_tokenizer(tokenizer, task.chat_template)
        self.tools = [guarded(tool) for tool in task.tools]
        self.max_iterations = DEFAULT_MAX_ITERATIONS
        self.last_reply = ""

    def __call__(self, messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        from grpolab.evaluation.tool_runner import hf_generate
        from grpolab.tasks.base import completion_text
        from grpolab.tools import run_episode

        generate = hf_generate(self.model, self.tokenizer, settings)
        episode = run_episode(generate, self.tokenizer, messages, self.tools, self.max_iterations,
                              settings.max_new_tokens)
        self.last_reply = completion_text(episode.messages)
        for message in episode.messages:
            yield from _shown(message)


def _shown(message) -> Iterator[str]:
    if message["role"] == "tool":
        yield f"[{message['name']} -> {message['content']}]\n"
    for call in message.get("tool_calls") or ():
        function = call["function"]
        arguments = ", ".join(f"{key}={value!r}" for key, value in function["arguments"].items())
        yield f"[call {function['name']}({arguments})]\n"
    if message["role"] == "assistant" and message.get("content"):
        yield message["content"]


def tool_backend(model, tokenizer, task) -> tuple[Stream, CountTokens]:
    """(stream, count_tokens) for a tool task: replies are whole tool episodes."""
    stream = ToolStream(model, tokenizer, task)

    def count_tokens(messages: Messages) -> int:
        return len(stream.tokenizer.apply_chat_template(
            messages, tools=stream.tools, add_generation_prompt=True, return_dict=True)["input_ids"])

    return stream, count_tokens


def run_repl(
    session,
    stream: Stream,
    count_tokens: CountTokens,
    read_line: Callable[[str], str] = input,
    out: TextIO | None = None,
) -> int:
    """Read lines until /exit, EOF or Ctrl-C at the prompt; return the exit code (0)."""
    from grpolab.chat import PROMPT

    out = out or sys.stdout
    while not session.done:
        try:
            line = read_line(PROMPT)
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            break
        if not line.strip():
            continue
        answer = session.handle_command(line)
        if answer is None:
            respond(session, line, stream, count_tokens, out)
        else:
            print(answer, file=out)
    return 0


def respond(session, line: str, stream: Stream, count_tokens: CountTokens, out: TextIO) -> None:
    """One model turn: read the message, fit the context, stream the reply, show the task's verdict."""
    from grpolab.chat import ChatInputError

    try:
        session.add_user(line)
        dropped = session.trim_history(count_tokens)
    except ChatInputError as error:
        session.cancel_pending()
        print(error, file=out)
        return
    if dropped:
        print(
            f"[context: the {dropped} oldest turn(s) no longer fit the {session.context_tokens}-token "
            f"window and were left out of the prompt; /history still shows them]",
            file=out,
        )
    reply, stopped = _stream_reply(session, stream, out)
    if isinstance(stream, ToolStream) and not stopped:
        reply = stream.last_reply  # the model's final words, without the calls and results shown
    verdict = session.finish_reply(reply, stopped)
    if stopped:
        print("[stopped: the partial reply is kept in the history; /reset clears it]", file=out)
    if verdict is not None:
        print(verdict, file=out)


def _stream_reply(session, stream: Stream, out: TextIO) -> tuple[str, bool]:
    """The reply, printed piece by piece as it comes, and whether Ctrl-C cut it short."""
    pieces: list[str] = []
    stopped = False
    try:
        with closing(stream(session.messages_for_model(), session.settings)) as reply:
            for piece in reply:
                pieces.append(piece)
                print(piece, end="", file=out, flush=True)
    except KeyboardInterrupt:
        stopped = True
    print(file=out)
    return "".join(pieces), stopped
