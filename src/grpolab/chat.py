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
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grpolab.generation.hf import GenerationSettings

Messages = list[dict[str, str]]
PROMPT = ">>> "

# name: (type, rule, what the rule allows). One table for the flags and for /set.
SETTING_RULES: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "max_new_tokens": (int, lambda value: value >= 1, "a whole number of at least 1"),
    "temperature": (float, lambda value: value >= 0, "a number >= 0 (0 = greedy)"),
    "top_p": (float, lambda value: 0 < value <= 1, "a number above 0 and at most 1"),
    "top_k": (int, lambda value: value >= 0, "a whole number >= 0 (0 = off)"),
    "repetition_penalty": (float, lambda value: value > 0, "a number above 0 (1 = off)"),
}

COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("", "show this help"),
    "/set": ("[NAME VALUE]", "change a generation setting, e.g. /set temperature 0.3; alone: show them"),
    "/system": ("[TEXT]", "set the system message; alone: show it; '/system default' restores the first one"),
    "/reset": ("", "clear the conversation (settings and system message stay)"),
    "/history": ("", "show the settings, the system message and the conversation"),
    "/save": ("FILE", "write the conversation and the settings to FILE as JSON"),
    "/answer": ("GOLD", "with --task: judge the last reply against this answer, e.g. /answer 42"),
    "/exit": ("", "leave (so do /quit, Ctrl-D, and Ctrl-C at the prompt)"),
}
_ALIASES = {"/quit": "/exit", "/settings": "/set"}


def parse_setting(name: str, text: str) -> Any:
    """The value of generation setting ``name`` written as ``text``; ValueError says what is allowed."""
    if name not in SETTING_RULES:
        raise ValueError(f"unknown setting '{name}': use one of {', '.join(SETTING_RULES)}")
    kind, rule, allowed = SETTING_RULES[name]
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {allowed}, got '{text}'") from None
    if (kind is float and not math.isfinite(value)) or not rule(value):
        raise ValueError(f"{name} must be {allowed}, got '{text}'")
    return value


# ------------------------------------------------------------------------------------------ tasks


class ChatInputError(ValueError):
    """What the user typed cannot be sent (a malformed puzzle, a message too long): one line to show."""


@dataclass(frozen=True)
class ChatTask:
    """How chat uses a task: read what was typed, prompt as training did, judge with the task's scorer."""

    name: str
    hint: str  # what to type
    example: str  # a question ``read`` accepts
    prompt: Callable[[str], Messages]  # question -> the task's chat messages (system message, user message)
    read: Callable[[str], str] = str.strip  # typed text -> question; ChatInputError when unusable
    gold: Callable[[str], str | None] = lambda question: None  # the answer, where chat can work it out
    check_gold: Callable[[str], str] = str.strip  # /answer text -> gold; ChatInputError when unusable
    stand_in: Any = None  # gold handed to the scorer when the real one is unknown; only `parsed` is shown then
    details: Callable[[str, str], str] = lambda question, parsed: ""  # more facts about a parsed answer
    show_gold: bool = True  # False where the gold is one right answer of several (sudoku)

    @property
    def system(self) -> str | None:
        return next((m["content"] for m in self.prompt(self.example) if m["role"] == "system"), None)

    def user_prompt(self, question: str) -> str:
        return self.prompt(question)[-1]["content"]

    def verdict(self, reply: str, question: str, gold: str | None) -> dict[str, Any]:
        """The scorer's judgement of ``reply``, with the line that shows it."""
        from grpolab.tasks import get_task

        row = {"question": question, "answer": self.stand_in if gold is None else gold}
        result = get_task(self.name).score(reply, row)
        solved = None if gold is None else result.solved
        parts = [f"[{self.name}] parsed: {result.parsed if result.parsed is not None else 'nothing'}"]
        if result.parsed is not None:
            parts.append(self.details(question, result.parsed))
        if solved is None:
            parts.append("solved: unknown (give the right answer with /answer GOLD)")
        else:
            parts.append(f"solved: {'yes' if solved else 'no'}" + (f" (answer {gold})" if self.show_gold else ""))
        line = " | ".join(part for part in parts if part)
        return {"parsed": result.parsed, "solved": solved, "gold": gold, "line": line}


def _sudoku() -> ChatTask:
    from grpolab.tasks import sudoku

    def read(text: str) -> str:
        puzzle = re.sub(r"\s+", "", text).replace(".", sudoku.BLANK).replace("0", sudoku.BLANK)
        if len(puzzle) != sudoku.CELLS or not set(puzzle) <= set(sudoku.DIGITS + sudoku.BLANK):
            raise ChatInputError("type the puzzle as 16 cells read row by row, digits 1-4 and _ (or . or 0) "
                                 "for blanks, e.g. 1_3_4__2___12_43")
        if sudoku.count_solutions(puzzle, limit=1) == 0:
            raise ChatInputError(f"puzzle {puzzle} has no solution: check the digits")
        return puzzle

    def reject_gold(text: str) -> str:
        raise ChatInputError("no answer needed: a sudoku reply is right when its grid is valid and keeps every clue")

    def details(question: str, grid: str) -> str:
        yes = {True: "yes", False: "no"}
        return (f"valid grid: {yes[sudoku.is_valid_grid(grid)]} | "
                f"keeps clues: {yes[sudoku.keeps_clues(question, grid)]}")

    return ChatTask("sudoku", "type a puzzle as 16 cells row by row, _ for a blank, e.g. 1_3_4__2___12_43",
                    "1_3_4__2___12_43", sudoku.prompt_messages, read=read,
                    gold=lambda puzzle: next(sudoku.solutions(puzzle)), check_gold=reject_gold, details=details,
                    show_gold=False)


_EXPRESSION = re.compile(r"\s*(-?\d+)\s*([-+*x])\s*(-?\d+)\s*")


def _arith() -> ChatTask:
    from grpolab.tasks import arith

    def read(text: str) -> str:
        match = _EXPRESSION.fullmatch(text)
        if not match:
            return text.strip()
        left, op, right = match.groups()
        return f"{left} {'*' if op == 'x' else op} {right}"  # the spacing the training data uses

    def gold(question: str) -> str | None:
        match = _EXPRESSION.fullmatch(question)
        if not match:
            return None
        left, op, right = int(match[1]), match[2], int(match[3])
        return str({"+": left + right, "-": left - right, "*": left * right}[op])

    def check_gold(text: str) -> str:
        if not re.fullmatch(r"-?\d+", text.strip()):
            raise ChatInputError(f"an arith answer is a whole number, got '{text}'")
        return text.strip()

    return ChatTask("arith", "type an expression such as 7 + 12 (+, - or *)", "7 + 12", arith.build_prompt,
                    read=read, gold=gold, check_gold=check_gold, stand_in="0")


def _gsm8k() -> ChatTask:
    from grpolab.tasks import gsm8k

    def check_gold(text: str) -> str:
        value = gsm8k.gold_answer(text)
        if value is None:
            raise ChatInputError(f"a GSM8K answer is a number, got '{text}'")
        return value

    return ChatTask("gsm8k", "type a math word problem; tell me its answer with /answer N to have it judged",
                    "Tom has 3 apples and buys 2 more. How many apples does he have?", gsm8k.make_prompt,
                    check_gold=check_gold)


CHAT_TASKS: dict[str, Callable[[], ChatTask]] = {"sudoku": _sudoku, "gsm8k": _gsm8k, "arith": _arith}


def _gym(name: str) -> ChatTask:
    from grpolab.tasks import gym

    gym.check_name(name.removeprefix(gym.PREFIX))
    return ChatTask(name, "type a question; give its answer with /answer TEXT to have the reply judged "
                    "(by exact match: reasoning-gym's scorer needs a generated item)", "What is 2 + 2?",
                    gym.make_prompt)


def get_chat_task(name: str) -> ChatTask:
    if name.startswith("reasoning_gym/"):
        return _gym(name)
    if name not in CHAT_TASKS:
        from grpolab.errors import UserError

        raise UserError(f"chat knows no task '{name}': use one of {', '.join(CHAT_TASKS)}")
    return CHAT_TASKS[name]()


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
        if self.task is not None:
            lines.append(f"task {self.task.name}: {self.task.hint}")
        return "\n".join(lines)

    def _command_set(self, argument: str) -> str:
        if not argument:
            return self.settings_line()
        name, _, text = argument.partition(" ")
        if not text.strip():
            return f"usage: /set NAME VALUE, e.g. /set temperature 0.3 (names: {', '.join(SETTING_RULES)})"
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
            return "/answer needs a task: start the chat with --task " + "|".join(CHAT_TASKS)
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

    def _command_exit(self, argument: str) -> str:
        self.done = True
        return "bye"

    def settings_line(self) -> str:
        return "settings: " + " ".join(f"{key}={value}" for key, value in self.settings.as_dict().items())

    # -------------------------------------------------------------------------------- conversation

    def add_user(self, line: str) -> Turn:
        """Start a turn with what the user typed; ChatInputError when a task cannot read it."""
        text = line.strip()
        text = text[1:] if text.startswith("//") else text
        if self.task is None:
            turn = Turn(user=text, prompt=text)
        else:
            question = self.task.read(text)
            turn = Turn(user=text, prompt=self.task.user_prompt(question), question=question,
                        gold=self.task.gold(question))
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
        for turn in self.turns[self.first_in_context:]:
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
        turns = [{**asdict(turn), "in_context": index >= self.first_in_context}
                 for index, turn in enumerate(self.turns)]
        return {**self.info, "task": self.task.name if self.task else None, "settings": self.settings.as_dict(),
                "system": self.system, "context_tokens": self.context_tokens, "turns": turns,
                "messages": self.messages_for_model()}


def _turn_lines(number: int, turn: Turn) -> list[str]:
    reply = "(no reply)" if turn.reply is None else turn.reply + (" [stopped]" if turn.stopped else "")
    lines = [f"[{number}] user: {turn.user}", f"    assistant: {reply}"]
    if turn.verdict is not None:
        lines.append("    " + turn.verdict["line"])
    return lines
