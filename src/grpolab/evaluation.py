"""Evaluation with the task's own scorer: batched generation, strict metrics, resumable samples, comparison.

Every item gets K completions (K=1, greedy, by default). Strict accuracy is the mean of the scorer's
``solved`` over all completions: with K=1 the fraction of items solved; with K>1 it is mean@K, which is
also the unbiased estimate of pass@1. pass@j for j <= K uses the unbiased estimator of Chen et al. 2021
(arXiv:2107.03374, eq. 1) with n=K samples per item. Completion length is counted in generated tokens,
without the stop token; a completion that reaches ``max_new_tokens`` is counted as truncated.

An output directory holds ``eval_config.json``, ``samples.jsonl`` (one line per completion, appended as
each batch finishes, so ``resume`` can skip the items already there), ``metrics.json``, ``report.md`` and
``accuracy_by_label.png``; ``compare`` adds ``comparison.md`` and ``comparison.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from grpolab.batching import generate_stream
from grpolab.errors import UserError
from grpolab.generation import GenerationSettings, run_max_new_tokens

logger = logging.getLogger(__name__)

SAMPLES, METRICS, CONFIG, REPORT = "samples.jsonl", "metrics.json", "eval_config.json", "report.md"
DEFAULT_TASK = "arith"
# Fields that may change between a run and its --resume: they do not change what a sample is.
_RESUMABLE = ("num", "batch_size", "backend", "max_new_tokens_from", "base_url", "api_key_env", "concurrency",
              "timeout")


@dataclass
class EvalConfig:
    """What to evaluate and how; ``model``, ``task``, ``max_new_tokens`` left as None come from the run."""

    model: str | None = None
    adapter: str | None = None
    task: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    data_file: str | None = None
    split: str = "test"
    num: int | None = None
    seed: int = 0
    k: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: the run's max_completion_length, else 256
    batch_size: int = 32
    backend: str = "transformers"
    max_new_tokens_from: str | None = None  # where max_new_tokens came from, for the record
    # --backend openai only (see grpolab.openai_backend); the key itself is never stored, only its variable.
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.backend not in ("transformers", "vllm", "openai"):
            raise UserError(f"--backend must be transformers, vllm or openai, got {self.backend!r}")
        if self.backend == "openai" or self.base_url is not None:
            from grpolab.openai_backend import validate

            validate(self)
        for flag, value in (("--num", self.num), ("--k", self.k), ("--max_new_tokens", self.max_new_tokens),
                            ("--batch_size", self.batch_size)):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be 1 or more, got {value}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.k > 1 and self.temperature == 0:
            raise UserError(f"--k {self.k} needs sampling: add --temperature 0.7 (greedy gives K equal answers)")

    def settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                  top_p=self.top_p)

    @property
    def name(self) -> str:
        """A short run name for tables and charts: the model, plus the adapter's folder when there is one."""
        model = Path(str(self.model).rstrip("/")).name
        return f"{model} + {Path(str(self.adapter).rstrip('/')).name}" if self.adapter else model


def resolve_run(config: EvalConfig) -> EvalConfig:
    """Fill in model, task, task options and max_new_tokens from the adapter's run (or the defaults)."""
    from grpolab import models

    if config.max_new_tokens is None:
        length, source = run_max_new_tokens(config.adapter, config.model)
        config = replace(config, max_new_tokens=length, max_new_tokens_from=source)
    elif config.max_new_tokens_from is None:
        config = replace(config, max_new_tokens_from="--max_new_tokens")
    if config.backend == "openai":
        from grpolab.openai_backend import resolve_served_model

        return replace(config, model=resolve_served_model(config), task=config.task or DEFAULT_TASK)
    if not config.adapter:
        return replace(config, model=config.model or models.DEFAULT_MODEL, task=config.task or DEFAULT_TASK)
    info = models.read_run_info(config.adapter)
    if config.model:
        models.check_adapter_base(config.adapter, config.model)
    task = config.task or info.task or DEFAULT_TASK
    options = {**info.task_options, **config.task_options} if task == info.task else config.task_options
    return replace(config, model=config.model or info.base_model, task=task, task_options=options)


def default_out(config: EvalConfig, task_name: str) -> Path:
    """``<adapter>/eval-<split>``, else ``outputs/eval-<model>-<task>``."""
    if config.adapter:
        return Path(config.adapter) / f"eval-{config.split}"
    return Path("outputs") / f"eval-{Path(str(config.model).rstrip('/')).name}-{task_name}"


# ------------------------------------------------------------------------------------------- metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _by_item(records: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    items: dict[int, list[Mapping[str, Any]]] = {}
    for record in sorted(records, key=lambda r: (r["index"], r["sample"])):
        items.setdefault(record["index"], []).append(record)
    return items


def _pass_levels(k: int) -> list[int]:
    """1, 2, 4, ... up to k, and k itself."""
    return sorted({2 ** power for power in range(k.bit_length()) if 2 ** power <= k} | {k})


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics from scored samples (one record per completion, keyed by item ``index`` and ``sample``)."""
    items = _by_item(records)
    k = min((len(samples) for samples in items.values()), default=1)
    lenient = [float(r["lenient"]) for r in records if r.get("lenient") is not None]
    metrics: dict[str, Any] = {
        "items": len(items),
        "samples_per_item": k,
        "accuracy": _mean([float(r["solved"]) for r in records]),
        "lenient_accuracy": _mean(lenient) if lenient else None,
        "partial_mean": _mean([float(r["partial"]) for r in records]),
        "format_rate": _mean([float(r["format_ok"]) for r in records]),
        "unparseable_rate": _mean([float(r["parsed"] is None) for r in records]),
        "truncated_rate": _mean([float(r["truncated"]) for r in records]),
        "mean_completion_tokens": _mean([float(r["tokens"]) for r in records]),
    }
    if k > 1:
        for level in _pass_levels(k):
            metrics[f"pass@{level}"] = _mean([pass_at_k(k, sum(r["solved"] for r in s[:k]), level)
                                              for s in items.values()])
    metrics["accuracy_by_label"], metrics["items_by_label"] = _label_accuracy(items)
    return metrics


def _label_accuracy(items: Mapping[int, list[Mapping[str, Any]]]) -> tuple[dict[str, float], dict[str, int]]:
    """Strict accuracy and item count per label, labels in order of first appearance."""
    solved: dict[str, list[float]] = {}
    for samples in items.values():
        solved.setdefault(str(samples[0]["label"]), []).extend(float(r["solved"]) for r in samples)
    counts = {label: sum(1 for s in items.values() if str(s[0]["label"]) == label) for label in solved}
    return {label: _mean(values) for label, values in solved.items()}, counts


# ------------------------------------------------------------------------------- generation + scoring
def score_item(task, row: Mapping[str, Any], index: int, completions: Sequence[str], lengths: Sequence[int],
               max_new_tokens: int, truncated: Sequence[bool] | None = None) -> list[dict[str, Any]]:
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
        })
    return records


def run_items(model, tokenizer, task, dataset, indices: Sequence[int], config: EvalConfig, samples_path: Path,
              progress: bool = True) -> None:
    """Generate and score ``indices`` of ``dataset``, appending each finished item to ``samples_path``."""
    from tqdm.auto import tqdm

    prompts = [dataset[index]["prompt"] for index in indices]
    with tqdm(total=len(indices), unit="item", desc=f"eval {config.name}", disable=not progress) as bar:
        for position, texts, lengths in generate_stream(model, tokenizer, prompts, config.settings(), config.k,
                                                        config.batch_size):
            index = indices[position]
            append_samples(samples_path, score_item(task, dataset[index], index, texts, lengths,
                                                    config.max_new_tokens))
            bar.update(1)


def run_items_vllm(task, dataset, indices: Sequence[int], config: EvalConfig, samples_path: Path) -> None:
    """As run_items, with vLLM generating (and the adapter served through vLLM's LoRA support)."""
    from grpolab import vllm_backend
    from grpolab.models import resolve

    vllm_backend.require_vllm()
    prompts = [dataset[index]["prompt"] for index in indices]
    for position, texts, lengths in vllm_backend.generate_stream(resolve(config.model), config.adapter, prompts,
                                                                 config.settings(), config.k, config.seed):
        index = indices[position]
        append_samples(samples_path, score_item(task, dataset[index], index, texts, lengths, config.max_new_tokens))


# --------------------------------------------------------------------------------------- sample files
def append_samples(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Sample records; a cut-off last line (the run was killed mid-write) is dropped, any other bad line is an error."""
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
        done = {index: samples for index, samples in _by_item(read_samples(samples_path)).items()
                if len(samples) == config.k and index < len(dataset)}
        _check_same_items(done, dataset, samples_path)
        logger.info("resuming: %d of %d items already in %s", len(done), len(dataset), samples_path)
    _write_atomic(samples_path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                        for samples in done.values() for r in samples))
    _write_atomic(out / CONFIG, json.dumps(asdict(config), indent=2) + "\n")
    return [index for index in range(len(dataset)) if index not in done]


def _check_same_settings(path: Path, config: EvalConfig) -> None:
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    changed = [key for key, value in asdict(config).items() if key not in _RESUMABLE and saved.get(key) != value]
    if changed:
        details = ", ".join(f"{key} {saved.get(key)!r} -> {getattr(config, key)!r}" for key in changed)
        raise UserError(f"cannot --resume {path.parent} with other settings ({details}): "
                        "use the same flags or another --out")


def _check_same_items(done: Mapping[int, list[Mapping[str, Any]]], dataset, samples_path: Path) -> None:
    for index, samples in done.items():
        if str(samples[0]["answer"]) != str(dataset[index].get("answer")):
            raise UserError(f"{samples_path} holds other items than this data (item {index} differs): "
                            "use the same data and seed, or another --out")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ pipeline
def evaluate(config: EvalConfig, out: str | Path | None = None, resume: bool = False,
             progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Run one evaluation end to end; returns the output directory and its metrics."""
    from grpolab.models import load_for_inference
    from grpolab.tasks import get_task

    config = resolve_run(config)
    logger.debug("max_new_tokens %d (%s)", config.max_new_tokens, config.max_new_tokens_from)
    task = get_task(config.task)
    dataset = task.load(config.split, config.data_file, config.num, config.seed, **config.task_options)
    if len(dataset) == 0:
        raise UserError(f"task {task.name} gave no items for split '{config.split}': check --split and --data_file")
    out = Path(out) if out else default_out(config, task.name)
    todo = open_output(out, config, dataset, resume)
    if todo and config.backend == "openai":
        from grpolab.openai_backend import run_items_openai

        run_items_openai(task, dataset, todo, config, out / SAMPLES, progress)
    elif todo and config.backend == "vllm":
        run_items_vllm(task, dataset, todo, config, out / SAMPLES)
    elif todo:
        model, tokenizer, _ = load_for_inference(config.model, config.adapter)
        _seed(config.seed)
        run_items(model, tokenizer, task, dataset, todo, config, out / SAMPLES, progress)
    records = [r for r in read_samples(out / SAMPLES) if r["index"] < len(dataset)]
    metrics = {"name": config.name, **summarize(records), "config": asdict(config)}
    write_results(out, metrics)
    return out, metrics


def _seed(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def load_metrics(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METRICS
    if not path.is_file():
        raise UserError(f"{directory} is not an eval output directory (no {METRICS}): run 'grpolab eval' first")
    return json.loads(path.read_text(encoding="utf-8"))


def write_results(out: Path, metrics: Mapping[str, Any]) -> None:
    """metrics.json, report.md and the accuracy-by-label chart."""
    _write_atomic(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    config = metrics["config"]
    adapter = f" + adapter `{config['adapter']}`" if config["adapter"] else ""
    header = (f"# Evaluation: {metrics['name']}\n\nmodel `{config['model']}`{adapter}, task `{config['task']}`, "
              f"split `{config['split']}`: {metrics['items']} items x {metrics['samples_per_item']} "
              f"completion(s), temperature {config['temperature']}, "
              f"max_new_tokens {config['max_new_tokens']} ({config.get('max_new_tokens_from')}). "
              "Accuracy is strict (the task's scorer); with several completions per item it is their mean "
              "(mean@k, the pass@1 estimate).\n\n")
    _write_atomic(out / REPORT, header + result_table({metrics["name"]: metrics})
                  + "\n\n![accuracy by label](accuracy_by_label.png)\n")
    _chart({metrics["name"]: metrics}, out / "accuracy_by_label.png",
           f"{config['task']} {config['split']}: strict accuracy by label")


def _chart(runs: Mapping[str, Mapping[str, Any]], out: Path, title: str) -> None:
    """Accuracy by label for each run, with an 'all' group when there is more than one label."""
    from grpolab.plots import accuracy_bars

    labels = list(dict.fromkeys(label for m in runs.values() for label in m["accuracy_by_label"]))
    overall = ["all"] if len(labels) > 1 else []
    values = {name: {**m["accuracy_by_label"], "all": m["accuracy"]} for name, m in runs.items()}
    accuracy_bars(values, out, title, order=[*labels, *overall])


# ---------------------------------------------------------------------------------- tables + compare
_ROWS = (  # (row title, metrics key, format)
    ("items", "items", "int"), ("strict accuracy", "accuracy", "pct"),
    ("lenient accuracy", "lenient_accuracy", "pct"), ("partial credit (mean)", "partial_mean", "num"),
    ("answer format", "format_rate", "pct"), ("unparseable", "unparseable_rate", "pct"),
    ("truncated", "truncated_rate", "pct"), ("completion tokens (mean)", "mean_completion_tokens", "num"),
)


def table_values(metrics: Mapping[str, Any]) -> dict[str, tuple[float | None, str]]:
    """Row title -> (value, format) for one run: overall metrics, pass@j, then accuracy per label."""
    rows = {title: (metrics.get(key), kind) for title, key, kind in _ROWS}
    rows.update({key: (value, "pct") for key, value in metrics.items() if key.startswith("pass@")})
    rows.update({f"accuracy: {label}": (value, "pct") for label, value in metrics["accuracy_by_label"].items()})
    return rows


def _row_titles(values: Sequence[Mapping[str, Any]]) -> list[str]:
    """All runs' row titles: the fixed rows, pass@j by j, then labels in order of first appearance."""
    titles = list(dict.fromkeys(title for per_run in values for title in per_run))
    passes = sorted((t for t in titles if t.startswith("pass@")), key=lambda t: int(t.split("@")[1]))
    fixed = [title for title, _, _ in _ROWS]
    return [*fixed, *passes, *(t for t in titles if t not in fixed and t not in passes)]


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return {"int": f"{value:.0f}", "pct": f"{100 * value:.1f}%", "num": f"{value:.2f}"}[kind]


def _delta(a: float | None, b: float | None, kind: str) -> str:
    if a is None or b is None:
        return "-"
    if kind == "pct":
        return f"{100 * (b - a):+.1f} pp"
    return f"{b - a:+.0f}" if kind == "int" else f"{b - a:+.2f}"


def result_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table with one column per run, and a difference column when there are two."""
    values = {name: table_values(metrics) for name, metrics in runs.items()}
    titles = _row_titles(list(values.values()))
    names = list(runs)
    header = ["metric", *names] + (["difference"] if len(names) == 2 else [])
    rows = []
    for title in titles:
        cells = [values[name].get(title, (None, "num")) for name in names]
        kind = next((k for v, k in cells if v is not None), "num")
        row = [title, *(_cell(value, kind) for value, _ in cells)]
        if len(names) == 2:
            row.append(_delta(cells[0][0], cells[1][0], kind))
        rows.append(row)
    return _markdown(header, rows)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table padded to align in a terminal too: first column left, the others right."""
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
    rule = [":" + "-" * (widths[0] + 1), *("-" * (width + 1) + ":" for width in widths[1:])]
    return "\n".join([_markdown_line(header, widths), "|" + "|".join(rule) + "|",
                      *(_markdown_line(row, widths) for row in rows)])


def _markdown_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [cells[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))]
    return "| " + " | ".join(padded) + " |"


def compare(dir_a: str | Path, dir_b: str | Path, out: str | Path) -> str:
    """Side-by-side table of two eval directories, written to ``out``/comparison.md and comparison.png."""
    a, b = load_metrics(dir_a), load_metrics(dir_b)
    name_a, name_b = a["name"], b["name"]
    if name_a == name_b:
        name_a, name_b = str(dir_a), str(dir_b)
    runs = {name_a: a, name_b: b}
    table = result_table(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "comparison.md", f"# {name_a} vs {name_b}\n\n{table}\n\n![comparison](comparison.png)\n")
    _chart(runs, out / "comparison.png", f"{a['config']['task']} {a['config']['split']}: strict accuracy by label")
    return table
