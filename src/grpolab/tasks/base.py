"""What a task is: data, prompt, answer parsing, one scorer, the rewards built on it, and what chat needs.

A task module builds one ``Task``. Its ``score`` function is the single source of truth: training
rewards call it, evaluation reports it, and chat shows it, so the number you train on and the number you
report cannot drift apart. Every command (data, train, sft, eval, chat, probe) reads a task only through
this interface, so a user task given as ``package.module:TASK`` works in all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpolab.errors import UserError

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Verdict:
    """The scorer's judgement of one completion.

    solved:   strict correctness, the number reported as accuracy.
    parsed:   canonical text of the extracted answer, or None when nothing could be parsed.
    partial:  partial credit in [0, 1] (1.0 when solved).
    format_ok: the answer was given where the prompt asks for it (e.g. inside <answer> tags).
    lenient:  a looser correctness check where the task has one (e.g. last number in the text).
    """

    solved: bool
    parsed: str | None
    partial: float = 0.0
    format_ok: bool = False
    lenient: bool | None = None


# A reward function: (completions, **columns) -> one float per completion, where columns are the dataset's
# columns as TRL passes them (one list per column, as long as completions). One signature for every task.
RewardFunction = Callable[..., list[float]]

# Graders of numbers (arith, gsm8k) read only a completion's last MAX_GRADED_CHARS characters. They look
# for the *last* answer marker or number, so this changes nothing for a reply that ends with its answer,
# and it bounds a score() call to a few ms whatever the input (100 kB of "A: x" lines took 190 ms in the
# GSM8K grader, each line a marker to try). 10,000 characters are about 2,500 tokens.
MAX_GRADED_CHARS = 10_000


class ChatInputError(ValueError):
    """What the user typed cannot be sent (a malformed puzzle, a message too long): one line to show."""


@dataclass(frozen=True)
class Option:
    """One task option (``--task_options`` key, and a ``grpolab data TASK --NAME`` flag when it generates)."""

    help: str
    default: Any = None
    required: bool = False  # for generation (``grpolab data``) only
    load_only: bool = False  # an option of reading data (e.g. skip_bad_rows), not of generating it


@dataclass(frozen=True)
class ChatSupport:
    """How ``grpolab chat`` reads a typed question and judges a reply; the defaults suit any task.

    read(text) -> question, or ChatInputError when unusable; gold(question) -> the answer where the task can
    work it out, else None (then ``/answer GOLD`` gives it, read by read_gold); stand_in is the gold handed
    to the scorer while the real one is unknown (only ``parsed`` is shown then); details(question, parsed)
    adds facts about a parsed answer; show_gold is False where a gold is one right answer of several.
    """

    hint: str = "type a question; give its answer with /answer TEXT to have the reply judged"
    example: str = "What is 2 + 2?"
    read: Callable[[str], str] = str.strip
    gold: Callable[[str], str | None] = lambda question: None
    read_gold: Callable[[str], str] = str.strip
    stand_in: Any = None
    details: Callable[[str, str], str] = lambda question, parsed: ""
    show_gold: bool = True


@dataclass(frozen=True)
class Task:
    """A task: how to make and load rows, how to prompt, how to score, and which rewards train it.

    load(split, data_file, num, seed, **options) -> datasets.Dataset with at least the columns
        ``prompt`` (list of chat messages), ``answer`` (str) and ``label`` (str, e.g. a difficulty).
    prompt(question) -> the chat messages a question is asked with (training, eval and chat alike).
    score(completion, row) -> Verdict, where row holds the dataset columns of that item.
    rewards: the task's reward functions by name (the name is the logged metric key).
    default_rewards / default_weights: what training uses when the recipe does not say.
    options: the extra ``load``/``generate`` options, checked by name before either runs.
    generate(num, seed, split, **options) -> rows (question, answer, label, ...) for ``grpolab data``;
        None when the task reads its data from elsewhere (a hub dataset).
    reference(row) -> str: an ideal reply, for supervised warm-up; None when the task has none.
    checks: other named correctness checks, (completion, row) -> bool, that eval reports beside strict
        and lenient with an interval each (e.g. lm-evaluation-harness's GSM8K filters).
    chat: how ``grpolab chat`` reads a question and judges a reply.
    tools: functions the model may call (TRL's ``tools=``; see grpolab.tools); a recipe's ``tools`` adds more.
    environment_factory: TRL's ``environment_factory``, one stateful object per rollout whose public methods
        are tools (``reset(**row)`` required, ``get_reward()`` optional).
    chat_template: the template tool tasks need where the model's own cannot render tool calls
        (a packaged name such as ``chatml-tools``, or a path); the recipe's ``chat_template`` wins.
    reference_episode(row) -> the ideal multi-turn reply (assistant tool calls, tool results, the answer),
        what ``sft`` trains a tool task on (loss on the assistant's tokens only); ``reference`` is its
        final text.
    """

    name: str
    load: Callable[..., Any]
    prompt: Callable[[str], Messages]
    score: Callable[[str, Mapping[str, Any]], Verdict]
    rewards: Mapping[str, RewardFunction]
    default_rewards: Sequence[str]
    default_weights: Sequence[float]
    options: Mapping[str, Option] = field(default_factory=dict)
    generate: Callable[..., list[dict[str, Any]]] | None = None
    reference: Callable[[Mapping[str, Any]], str] | None = None
    checks: Mapping[str, Callable[[str, Mapping[str, Any]], bool]] = field(default_factory=dict)
    chat: ChatSupport = field(default_factory=ChatSupport)
    tools: Sequence[Callable[..., str]] = ()
    environment_factory: Callable[[], Any] | None = None
    chat_template: str | None = None
    reference_episode: Callable[[Mapping[str, Any]], list[dict[str, Any]]] | None = None

    def load_dataset(self, split: str, data_file: str | None = None, num: int | None = None, seed: int = 0,
                     options: Mapping[str, Any] | None = None) -> Any:
        """``load`` with the option names checked first: a bad option is the user's, a TypeError ours."""
        self.check_options(options or {})
        return self.load(split, data_file, num, seed, **(options or {}))

    def check_options(self, options: Mapping[str, Any]) -> None:
        """A UserError naming the unknown keys and the valid ones; the task's own code never sees them."""
        unknown = [name for name in options if name not in self.options]
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise UserError(f"unknown {self.name} option(s) {', '.join(unknown)}: the options are {valid}")


def completion_text(completion: Any) -> str:
    """Text of one completion as TRL passes it: a string, or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        # A multi-turn completion is judged on the model's last message, never on a tool's result (TRL ends
        # one with a tool message when the reply after it did not fit).
        replies = [message for message in completion if message.get("role", "assistant") == "assistant"]
        return str(replies[-1].get("content") or "") if replies else ""
    if isinstance(completion, list) and not completion:
        return ""
    raise TypeError(f"unexpected completion type {type(completion).__name__}")


def rows_from_kwargs(count: int, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-item rows from the column lists TRL passes to reward functions (other arguments are left out).

    A list of another length than the completions is a caller's bug: ValueError, not a silent mismatch.
    """
    columns = {key: value for key, value in kwargs.items() if isinstance(value, list)}
    wrong = [key for key, value in columns.items() if len(value) != count]
    if wrong:
        raise ValueError(f"reward column(s) {', '.join(wrong)} do not have one value per completion "
                         f"({count})")
    return [{key: value[index] for key, value in columns.items()} for index in range(count)]


def verdicts(
    score: Callable[[str, Mapping[str, Any]], Verdict], completions: list[Any], kwargs: Mapping[str, Any]
) -> list[Verdict]:
    """The scorer's verdict on each completion, each with its own row: what every reward is a view of."""
    rows = rows_from_kwargs(len(completions), kwargs)
    return [
        score(completion_text(completion), row) for completion, row in zip(completions, rows, strict=True)
    ]


def parse_bool(name: str, value: Any) -> bool:
    """A yes/no option given as a bool or as command-line text (true/false, yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "yes", "no", "1", "0"):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return text in ("true", "yes", "1")


def check_num(num: int | None) -> None:
    """``num`` is a row count: None (the task's default) or at least 1, the same rule for every task."""
    if num is not None and num < 1:
        raise UserError(f"--num must be 1 or more, got {num}")


def parse_task_options(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``--task_options`` as a mapping: a YAML mapping or JSON object (JSON is YAML), the same in every
    command."""
    if value is None or isinstance(value, Mapping):
        return dict(value or {})
    import yaml

    example = 'e.g. \'{"levels": "add-20"}\''
    try:
        options = yaml.safe_load(value)
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise UserError(
            f"--task_options is not valid JSON or YAML ({problem}): --task_options must be a "
            f"mapping, {example}"
        ) from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise UserError(f"--task_options must be a mapping, {example}; got {type(options).__name__}")
    return options


def draw_split(num: int, draw: Callable[[int], dict[str, Any]], split: str, split_of: Callable[[str], str],
               tries: int, repeat_train: bool = False) -> list[dict[str, Any]]:
    """Up to ``num`` items of ``split``: ``draw(attempt)`` makes one, ``split_of(question)`` says which split
    it belongs to. Test items are distinct; train items too, unless ``repeat_train``."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for attempt in range(tries):
        item = draw(attempt)
        question = item["question"]
        if split_of(question) != split or (question in seen and (split == "test" or not repeat_train)):
            continue
        seen.add(question)
        rows.append(item)
        if len(rows) == num:
            break
    return rows


def file_rows(data_file: str, split: str, num: int | None,
              problem: Callable[[dict[str, Any]], str | None] | None = None) -> list[dict[str, Any]]:
    """The rows of ``split`` in a JSONL file (files from ``grpolab data`` hold both splits, each row marked),
    at most ``num``; a file without split marks is all one split."""
    from grpolab.tasks.jsonl import read_rows

    rows, _ = read_rows(data_file, problem=problem)
    if any("split" in row for row in rows):
        rows = [row for row in rows if row.get("split", split) == split]
    rows = rows[:num] if num else rows
    for row in rows:
        row.pop("split", None)
    return rows


def prompted_dataset(rows: list[dict[str, Any]], make_prompt: Callable[[str], list[dict[str, str]]]):
    """A Dataset of ``rows``, each with its chat prompt (and the label "custom" where it has none)."""
    from datasets import Dataset

    for row in rows:
        row.setdefault("label", "custom")
        row["prompt"] = make_prompt(row["question"])
    return Dataset.from_list(rows)
