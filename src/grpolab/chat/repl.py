"""The chat REPL: read a line, run a /command or stream the model's reply, keep the session's history.

``model_backend`` is all it needs from a loaded model (a stream of reply text and a token counter), so
the tests drive it with a fake model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import TextIO

from grpolab.generation.settings import GenerationSettings

Messages = list[dict[str, str]]


Stream = Callable[[Messages, GenerationSettings], Iterator[str]]


CountTokens = Callable[[Messages], int]


def take_ctrl_c() -> None:
    """Make Ctrl-C raise KeyboardInterrupt even when SIGINT was inherited as ignored.

    A shell without job control starts background commands with SIGINT ignored, and Python then leaves it
    ignored: chat would neither stop a reply nor exit on Ctrl-C. Chat is interactive, so it takes Ctrl-C back.
    """
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


def line_reader() -> Callable[[str], str]:
    try:
        import readline  # noqa: F401  (gives input() line editing and arrow-key history)
    except ImportError:
        pass
    return input


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
    call and its result are shown as they happen, then the final reply; ``last_reply`` is what is judged.

    The tools are the task's and the run's recipe's (``tools:``), with its timeout and iteration cap, as eval
    takes them; an environment task gets one game for the whole chat (a row of its test split, ``reset``)
    whose public methods join the tools."""

    def __init__(self, model, tokenizer, task, run=None, seed: int | None = None) -> None:
        import random

        from trl.chat_template_utils import supports_tool_calling

        from grpolab.evaluation.tool_runner import run_settings
        from grpolab.rundir import RunDefaults
        from grpolab.tools import environment_tools, guarded, load_tools, prepare_tokenizer

        self.model, self.task = model, task
        self.max_iterations, timeout, extra = run_settings(run or RunDefaults())
        template = None if supports_tool_calling(tokenizer) else task.chat_template
        self.tokenizer = prepare_tokenizer(tokenizer, template)
        self.tools = [guarded(tool, timeout) for tool in (*task.tools, *load_tools(extra))]
        self.environment = None
        if task.environment_factory is not None:
            row = task.generate(1, random.randrange(10**6) if seed is None else seed, "test")[0]
            self.environment, methods, _ = environment_tools(task.environment_factory, row,
                                                             [{"role": "user", "content": ""}])
            self.tools += [guarded(method, timeout) for method in methods]
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


def tool_backend(model, tokenizer, task, run=None, seed: int | None = None) -> tuple[ToolStream, CountTokens]:
    """(stream, count_tokens) for a tool or environment task: replies are whole tool episodes."""
    stream = ToolStream(model, tokenizer, task, run, seed)

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
    from grpolab.chat.session import PROMPT

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
    from grpolab.chat.session import ChatInputError

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
