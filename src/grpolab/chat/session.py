"""Interactive chat: a ``ChatSession`` holds history, settings and slash commands, with no model inside.

The REPL that streams a model's replies into a session is ``grpolab.commands.chat``.

Choices made once, here:

* A reply stopped with Ctrl-C is **kept** in the history, marked ``stopped``: the conversation then reads as
  it happened and user and assistant turns keep alternating. ``/reset`` clears it.
* The prompt must fit the context window: ``context_tokens`` (the model's ``max_position_embeddings``)
  minus ``max_new_tokens``. When it does not, the oldest turns leave the model's view, with a notice; they
  stay in ``/history`` and ``/save``, marked as out of context. The system message is never dropped.
* With a task, each message goes through the task's prompt (its system message and user template) and
  each reply is judged by the task's own scorer, the one training and evaluation use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grpolab.generation.settings import SETTINGS, GenerationSettings, parse_setting
from grpolab.tasks import TASK_HELP, Task, get_task
from grpolab.tasks.base import ChatInputError

Messages = list[dict[str, str]]
PROMPT = ">>> "


@dataclass
class ChatArgs:
    """``grpolab chat``'s own flags (the generation settings are ``GenerationSettings``'s fields)."""

    model: str | None = field(default=None, metadata={"help": (
        "model name, hub id or checkpoint directory (a merged model too); default: the adapter's base model, "
        "else smollm2-135m-instruct")})
    adapter: str | None = field(default=None, metadata={
        "help": "training run directory holding a LoRA adapter"})
    task: str | None = field(default=None, metadata={"help": (
        f"task ({TASK_HELP}): send each message through this task's prompt and show its scorer's verdict")})
    system: str | None = field(default=None, metadata={
        "help": "system message (default: the task's, else the chat template's)"})
    context: int | None = field(default=None, metadata={"help": (
        "context window in tokens (default: the model's max_position_embeddings); older turns beyond it "
        "leave the prompt, with a notice")})
    dtype: str = field(default="auto", metadata={"help": "weights dtype: auto, float32, bfloat16, float16"})
    seed: int | None = field(default=None, metadata={"help": "random seed, for repeatable sampling"})

COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("", "show this help"),
    "/set": ("[NAME VALUE]", "change a generation setting, e.g. /set temperature 0.3; alone: show them"),
    "/system": ("[TEXT]", "set the system message; alone: show it; '/system default' restores the first one"),
    "/reset": ("", "clear the conversation (settings and system message stay)"),
    "/history": ("", "show the settings, the system message and the conversation"),
    "/save": ("FILE", "write the conversation and the settings to FILE as JSON"),
    "/answer": ("GOLD", "with --task: judge the last reply against this answer, e.g. /answer 42"),
    "/tools": ("", "with a tool task: list the tools the model may call"),
    "/exit": ("", "leave (so do /quit, Ctrl-D, and Ctrl-C at the prompt)"),
}
_ALIASES = {"/quit": "/exit", "/settings": "/set"}


# ------------------------------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class ChatTask:
    """How chat uses a task: read what was typed, prompt as training did, judge with the task's scorer.

    All of it comes from the task itself (``Task.prompt``, ``Task.score`` and ``Task.chat``), so any task,
    a user's ``package.module:TASK`` too, works in chat.
    """

    task: Task

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def hint(self) -> str:
        return self.task.chat.hint

    @property
    def system(self) -> str | None:
        messages = self.task.prompt(self.task.chat.example)
        return next((m["content"] for m in messages if m["role"] == "system"), None)

    def read(self, text: str) -> str:
        return self.task.chat.read(text)

    def gold(self, question: str) -> str | None:
        return self.task.chat.gold(question)

    def check_gold(self, text: str) -> str:
        return self.task.chat.read_gold(text)

    def user_prompt(self, question: str) -> str:
        return self.task.prompt(question)[-1]["content"]

    def verdict(self, reply: str, question: str, gold: str | None) -> dict[str, Any]:
        """The scorer's judgement of ``reply``, with the line that shows it."""
        support = self.task.chat
        row = {"question": question, "answer": support.stand_in if gold is None else gold}
        result = self.task.score(reply, row)
        solved = None if gold is None else result.solved
        parts = [f"[{self.name}] parsed: {result.parsed if result.parsed is not None else 'nothing'}"]
        if result.parsed is not None:
            parts.append(support.details(question, result.parsed))
        if solved is None:
            parts.append("solved: unknown (give the right answer with /answer GOLD)")
        else:
            parts.append(
                f"solved: {'yes' if solved else 'no'}" + (f" (answer {gold})" if support.show_gold else "")
            )
        line = " | ".join(part for part in parts if part)
        return {"parsed": result.parsed, "solved": solved, "gold": gold, "line": line}


def get_chat_task(name: str) -> ChatTask:
    """The chat view of task ``name`` (any name ``--task`` takes); a UserError for an unknown one."""
    return ChatTask(get_task(name))


# ---------------------------------------------------------------------------------------- session


@dataclass
class Turn:
    """One exchange. ``user`` is what was typed, ``prompt`` what the model was shown for it."""

    user: str
    prompt: str
    reply: str | None = None  # None while the model is answering
    stopped: bool = False  # the reply was cut short with Ctrl-C
    question: str | None = None  # with a task: the puzzle or question as the scorer reads it
    gold: str | None = None
    verdict: dict[str, Any] | None = None


@dataclass
class ChatSession:
    """History and settings of one conversation, and the slash commands that change them. No model here."""

    settings: GenerationSettings = field(default_factory=GenerationSettings)
    system: str | None = None
    task: ChatTask | None = None
    context_tokens: int | None = None  # None: no limit known, nothing is trimmed
    info: dict[str, Any] = field(default_factory=dict)  # model and adapter names, written by /save
    tools: Sequence[Callable] = ()  # what the model may call: the task's, the run's and the environment's
    turns: list[Turn] = field(default_factory=list)
    first_in_context: int = 0  # turns before this index were trimmed out of the model's view
    done: bool = False

    def __post_init__(self) -> None:
        if self.system is None and self.task is not None:
            self.system = self.task.system
        self.default_system = self.system

    # ------------------------------------------------------------------------------------ commands

    def handle_command(self, line: str) -> str | None:
        """The answer to a slash command, or None when ``line`` is a message for the model.

        A line starting with ``//`` is a message that starts with ``/``.
        """
        text = line.strip()
        if not text.startswith("/") or text.startswith("//"):
            return None
        name, _, argument = text.partition(" ")
        name = _ALIASES.get(name.lower(), name.lower())
        if name not in COMMANDS:
            return f"unknown command {name}: /help lists the commands (start a message with // to send a '/')"
        return getattr(self, "_command_" + name[1:])(argument.strip())

    def _command_help(self, argument: str) -> str:
        lines = [f"  {name} {usage}".ljust(24) + summary for name, (usage, summary) in COMMANDS.items()]
        lines.append("settings for /set:")
        lines += [f"  {name}".ljust(24) + spec.metadata["help"] for name, spec in SETTINGS.items()]
        if self.task is not None:
            lines.append(f"task {self.task.name}: {self.task.hint}")
        return "\n".join(lines)

    def _command_set(self, argument: str) -> str:
        if not argument:
            return self.settings_line()
        name, _, text = argument.partition(" ")
        if not text.strip():
            return f"usage: /set NAME VALUE, e.g. /set temperature 0.3 (names: {', '.join(SETTINGS)})"
        try:
            value = parse_setting(name, text.strip())
        except ValueError as error:
            return str(error)
        if name == "max_new_tokens" and self.context_tokens is not None and value >= self.context_tokens:
            return f"max_new_tokens must be below the context window of {self.context_tokens} tokens"
        setattr(self.settings, name, value)
        return f"{name} = {value}"

    def _command_system(self, argument: str) -> str:
        if argument:
            self.system = self.default_system if argument == "default" else argument
        return f"system: {self.system or 'none (the chat template default)'}"

    def _command_reset(self, argument: str) -> str:
        count = len(self.turns)
        self.turns.clear()
        self.first_in_context = 0
        return f"cleared {count} turn{'s' * (count != 1)}; settings and system message kept"

    def _command_history(self, argument: str) -> str:
        lines = [self.settings_line(), f"system: {self.system or 'none (the chat template default)'}"]
        if self.task is not None:
            lines.append(f"task: {self.task.name}")
        if self.first_in_context:
            lines.append(f"({self.first_in_context} earlier turn(s) are out of the model's context)")
        for number, turn in enumerate(self.turns, start=1):
            lines.extend(_turn_lines(number, turn))
        if not self.turns:
            lines.append("(no turns yet)")
        return "\n".join(lines)

    def _command_save(self, argument: str) -> str:
        if not argument:
            return "usage: /save FILE"
        path = Path(argument).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as error:
            return f"cannot write {path}: {error.strerror or error}"
        return f"saved {len(self.turns)} turn(s) and the settings to {path}"

    def _command_answer(self, argument: str) -> str:
        if self.task is None:
            return f"/answer needs a task: start the chat with --task TASK ({TASK_HELP})"
        answered = [turn for turn in self.turns if turn.reply is not None]
        if not answered:
            return "no reply to judge yet: ask a question first"
        if not argument:
            return "usage: /answer GOLD, e.g. /answer 42"
        try:
            answered[-1].gold = self.task.check_gold(argument)
        except ChatInputError as error:
            return str(error)
        return self.judge(answered[-1])

    def _command_tools(self, argument: str) -> str:
        tools = self.tools or (self.task.task.tools if self.task is not None else ())
        if not tools:
            return "no tools: start the chat with a tool task, e.g. --task calc"
        return "\n".join(f"  {tool.__name__}: {(tool.__doc__ or '').strip().splitlines()[0]}"
                         for tool in tools)

    def _command_exit(self, argument: str) -> str:
        self.done = True
        return "bye"

    def settings_line(self) -> str:
        return "settings: " + " ".join(f"{key}={value}" for key, value in asdict(self.settings).items())

    # -------------------------------------------------------------------------------- conversation

    def add_user(self, line: str) -> Turn:
        """Start a turn with what the user typed; ChatInputError when a task cannot read it."""
        text = line.strip()
        text = text[1:] if text.startswith("//") else text
        if self.task is None:
            turn = Turn(user=text, prompt=text)
        else:
            question = self.task.read(text)
            turn = Turn(
                user=text,
                prompt=self.task.user_prompt(question),
                question=question,
                gold=self.task.gold(question),
            )
        self.turns.append(turn)
        return turn

    def cancel_pending(self) -> None:
        """Forget the newest turn if the model has not answered it."""
        if self.turns and self.turns[-1].reply is None:
            self.turns.pop()

    def finish_reply(self, reply: str, stopped: bool = False) -> str | None:
        """Record the model's reply; with a task, return the verdict line."""
        turn = self.turns[-1]
        turn.reply, turn.stopped = reply, stopped
        return None if self.task is None else self.judge(turn)

    def judge(self, turn: Turn) -> str:
        turn.verdict = self.task.verdict(turn.reply or "", turn.question, turn.gold)
        return turn.verdict["line"]

    def messages_for_model(self) -> Messages:
        """The chat the model sees: the system message, then the turns still in context."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns[self.first_in_context :]:
            messages.append({"role": "user", "content": turn.prompt})
            if turn.reply is not None:
                messages.append({"role": "assistant", "content": turn.reply})
        return messages

    def trim_history(self, count_tokens: Callable[[Messages], int]) -> int:
        """Move the oldest turns out of the model's view until the prompt fits; return how many moved.

        The budget is ``context_tokens - max_new_tokens``. The system message and the newest turn always
        stay; if they alone do not fit, ChatInputError is raised and nothing changes.
        """
        if self.context_tokens is None or not self.turns:
            return 0
        budget = self.context_tokens - self.settings.max_new_tokens
        kept = self.first_in_context
        self.first_in_context = len(self.turns) - 1
        smallest = count_tokens(self.messages_for_model())
        self.first_in_context = kept
        if smallest > budget:
            raise ChatInputError(
                f"this message needs {smallest} prompt tokens but only {budget} fit "
                f"({self.context_tokens} context - {self.settings.max_new_tokens} max_new_tokens): "
                f"shorten it or lower max_new_tokens with /set"
            )
        while count_tokens(self.messages_for_model()) > budget:
            self.first_in_context += 1
        return self.first_in_context - kept

    def to_json(self) -> dict[str, Any]:
        turns = [
            {**asdict(turn), "in_context": index >= self.first_in_context}
            for index, turn in enumerate(self.turns)
        ]
        return {
            **self.info,
            "task": self.task.name if self.task else None,
            "settings": asdict(self.settings),
            "system": self.system,
            "context_tokens": self.context_tokens,
            "turns": turns,
            "messages": self.messages_for_model(),
        }


def _turn_lines(number: int, turn: Turn) -> list[str]:
    reply = "(no reply)" if turn.reply is None else turn.reply + (" [stopped]" if turn.stopped else "")
    lines = [f"[{number}] user: {turn.user}", f"    assistant: {reply}"]
    if turn.verdict is not None:
        lines.append("    " + turn.verdict["line"])
    return lines
