"""Sample records and the eval output directory's samples file: ``score_item`` makes one record per
completion, appended as each item finishes (one JSON line each), so ``--resume`` can skip the items already
there (and refuses other settings or other items)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from grpolab.errors import UserError
from grpolab.evaluation.metrics import by_item

if TYPE_CHECKING:
    from grpolab.evaluation.config import EvalConfig

logger = logging.getLogger(__name__)


SAMPLES, CONFIG = "samples.jsonl", "eval_config.json"


# Fields that may change between a run and its --resume: they do not change what a sample is.
_RESUMABLE = ("num", "batch_size", "backend", "max_new_tokens_from", "base_url", "api_key_env", "concurrency",
              "timeout")


class Completions(NamedTuple):
    """One item's completions as a backend yields them; ``position`` counts in the prompts it was given.

    ``truncated`` None: a completion of ``max_new_tokens`` tokens counts as cut (a server says so itself).
    ``extras`` holds what a backend adds to each sample record (a tool episode's turns, calls and messages).
    """

    position: int
    texts: Sequence[str]
    tokens: Sequence[int]
    truncated: Sequence[bool] | None = None
    extras: Sequence[Mapping[str, Any]] | None = None


def score_item(task, row: Mapping[str, Any], index: int, completions: Sequence[str], lengths: Sequence[int],
               max_new_tokens: int | None = None, truncated: Sequence[bool] | None = None,
               extras: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One sample record per completion of item ``index``, scored by the task's scorer.

    ``truncated`` says which completions hit the token limit when the generator knows (a server's
    ``finish_reason``); without it, a completion of ``max_new_tokens`` tokens counts as truncated.
    """
    if truncated is None:
        truncated = [int(tokens) >= max_new_tokens for tokens in lengths]
    records = []
    for sample, (completion, tokens, cut) in enumerate(zip(completions, lengths, truncated, strict=True)):
        verdict = task.score(completion, row)
        records.append({
            "index": index, "sample": sample, "label": str(row.get("label", "all")),
            "question": row.get("question"), "answer": row.get("answer"), "completion": completion,
            "solved": bool(verdict.solved), "parsed": verdict.parsed, "partial": float(verdict.partial),
            "format_ok": bool(verdict.format_ok), "lenient": verdict.lenient,
            "tokens": int(tokens), "truncated": bool(cut),
            **({"checks": {name: bool(check(completion, row)) for name, check in task.checks.items()}}
               if task.checks else {}),
            **(extras[sample] if extras else {}),
        })
    return records


def append_samples(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Sample records; a cut-off last line (the run was killed mid-write) is dropped, any other bad line is
    an error."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UserError(f"{path}:{number} is not valid JSON: delete the file to start over") from None
    return records


def open_output(out: Path, config: EvalConfig, dataset, resume: bool) -> list[int]:
    """Prepare ``out`` and return the item indices still to evaluate (all of them unless resuming)."""
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / SAMPLES
    done: dict[int, list[dict[str, Any]]] = {}
    if resume and samples_path.is_file():
        _check_same_settings(out / CONFIG, config)
        done = {
            index: samples
            for index, samples in by_item(read_samples(samples_path)).items()
            if len(samples) == config.k and index < len(dataset)
        }
        _check_same_items(done, dataset, samples_path)
        logger.info("resuming: %d of %d items already in %s", len(done), len(dataset), samples_path)
    write_atomic(
        samples_path,
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for samples in done.values() for r in samples),
    )
    write_atomic(out / CONFIG, json.dumps(asdict(config), indent=2) + "\n")
    return [index for index in range(len(dataset)) if index not in done]


def _check_same_settings(path: Path, config: EvalConfig) -> None:
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    changed = [
        key for key, value in asdict(config).items() if key not in _RESUMABLE and saved.get(key) != value
    ]
    if changed:
        details = ", ".join(f"{key} {saved.get(key)!r} -> {getattr(config, key)!r}" for key in changed)
        raise UserError(
            f"cannot --resume {path.parent} with other settings ({details}): "
            "use the same flags or another --out"
        )


def _check_same_items(done: Mapping[int, list[Mapping[str, Any]]], dataset, samples_path: Path) -> None:
    for index, samples in done.items():
        if str(samples[0]["answer"]) != str(dataset[index].get("answer")):
            raise UserError(
                f"{samples_path} holds other items than this data (item {index} differs): "
                "use the same data and seed, or another --out"
            )


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
