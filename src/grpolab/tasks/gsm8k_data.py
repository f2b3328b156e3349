"""GSM8K rows, labelled by difficulty: a local JSONL file (the shared reader, with GSM8K's own row check) or
a hub dataset, and the
few-shot exemplars the harness-style prompts need. ``grpolab.tasks.gsm8k.load`` puts them together."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from grpolab.errors import UserError, first_line
from grpolab.tasks.gsm8k_answers import gold_answer
from grpolab.tasks.gsm8k_harness import fewshot_exemplars, fewshot_prompt, fewshot_settings
from grpolab.tasks.jsonl import read_rows

logger = logging.getLogger(__name__)

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"  # the hub dataset's config name; "socratic" adds sub-questions to the solutions
EASY_MAX_STEPS = 2
MEDIUM_MAX_STEPS = 4


_QUESTION_KEYS = ("question", "problem")


_ANSWER_KEYS = ("answer", "solution", "final_answer", "ground_truth")


def _row_problem(record: Mapping[str, Any]) -> str | None:
    """Why a local GSM8K record is unusable, or None when it is fine."""

    answer = record["answer"]
    if not isinstance(record["question"], str) or not isinstance(answer, (str, int, float)):
        return "'question' must be a string and 'answer' a string or a number"
    if isinstance(answer, str) and ("####" not in answer or gold_answer(answer) is None):
        return "'answer' does not end with a final '#### N'"
    return None


def read_jsonl(path: Path, skip_bad_rows: bool = False) -> list[dict[str, Any]]:
    """Rows of a local GSM8K JSONL file; a bad line is a UserError naming file and line, or is skipped."""
    records, _ = read_rows(path, problem=_row_problem, skip_bad_rows=skip_bad_rows)
    return [make_row(record["question"], record["answer"]) for record in records]


def _hub_question(record: Mapping[str, Any]) -> str | None:
    """The problem text of a hub record: a question column, or the last user turn of a chat prompt."""
    for key in _QUESTION_KEYS:
        if isinstance(record.get(key), str):
            return record[key]
    prompt = record.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], Mapping):
        return str(prompt[-1].get("content") or "")
    return prompt if isinstance(prompt, str) else None


def _hub_row(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A dataset row from a hub record whose answer may be a full solution or already a number."""
    question = _hub_question(record)
    answer = next((record[key] for key in _ANSWER_KEYS if record.get(key) is not None), None)
    return None if question is None or answer is None else make_row(question, answer)


def read_hub(split: str, hub_id: str) -> list[dict[str, Any]]:
    """Rows of a hub dataset; a UserError telling the user to pass a local file if it cannot be loaded."""
    config = HUB_CONFIG if hub_id == HUB_ID else None
    try:
        records = datasets.load_dataset(hub_id, config, split=split)
    except (OSError, ConnectionError, ValueError, datasets.exceptions.DatasetsError) as error:
        reason = first_line(error)
        raise UserError(
            f"cannot load {hub_id} split '{split}' from the Hugging Face hub ({reason}); "
            f"pass a local file instead: --data_file path/to/{split}.jsonl"
        ) from None
    rows = [_hub_row(record) for record in records]
    if None in rows:
        logger.warning("skipped %d rows of %s without a question or numeric answer", rows.count(None), hub_id)
    return [row for row in rows if row is not None]


def _fewshot_train_rows(data_file: str | Path | None, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where gsm8k-style exemplars come from: fewshot_file, else train.jsonl beside data_file, else the
    hub."""
    if options.get("fewshot_file"):
        return read_jsonl(Path(str(options["fewshot_file"])).expanduser())
    beside = Path(data_file).expanduser().parent / "train.jsonl" if data_file else None
    if beside is not None and beside.is_file():
        return read_jsonl(beside)
    return read_hub("train", str(options.get("hub_id", HUB_ID)))


def apply_fewshot(
    rows: list[dict[str, Any]], data_file: str | Path | None, options: Mapping[str, Any]
) -> None:
    """Rewrite each row's prompt as the harness's few-shot prompt when the options ask for one."""
    style, count = fewshot_settings(options)
    if count == 0:
        return
    train_rows = _fewshot_train_rows(data_file, options) if style == "gsm8k" else []
    exemplars = fewshot_exemplars(style, count, train_rows)
    for row in rows:
        row["prompt"], row["prompt_style"] = fewshot_prompt(row["question"], exemplars, style), style


def difficulty(solution: str) -> str:
    """``easy`` / ``medium`` / ``hard`` by the number of reasoning lines before ``####``; ``unknown`` if
    none."""
    steps = len([line for line in solution.partition("####")[0].splitlines() if line.strip()])
    if "####" not in solution or steps == 0:
        return "unknown"
    if steps <= EASY_MAX_STEPS:
        return "easy"
    return "medium" if steps <= MEDIUM_MAX_STEPS else "hard"


def make_row(question: str, answer: Any) -> dict[str, Any] | None:
    """One dataset row from a question and its reference answer; None when the answer has no number."""

    gold = gold_answer(answer)
    if gold is None:
        return None
    solution = answer if isinstance(answer, str) else ""
    return {
        "prompt": make_prompt(question),
        "question": question,
        "answer": gold,
        "label": difficulty(solution),
        "solution": solution,
        "prompt_style": "grpolab",
    }


def reference(row: Mapping[str, Any]) -> str:
    """The reference solution's reasoning (GSM8K's <<calculator>> notes removed), then the answer tag."""
    solution = str(row.get("solution") or "")
    reasoning = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
    return (
        f"{reasoning}\n<answer>{row['answer']}</answer>" if reasoning else f"<answer>{row['answer']}</answer>"
    )


SYSTEM_PROMPT = (
    "Solve the math word problem. Reason step by step inside <think> ... </think>, then write only the "
    "final number inside <answer> ... </answer>, for example <answer>42</answer>."
)


def make_prompt(question: str) -> list[dict[str, str]]:
    """The chat prompt: the format instructions as the system message, the problem as the user message."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question.strip()}]
