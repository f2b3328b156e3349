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

from grpolab import stats
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
    models.check_adapter_weights(config.adapter)
    task = config.task or info.task or DEFAULT_TASK
    options = {**info.task_options, **config.task_options} if task == info.task else config.task_options
    return replace(config, model=config.model or info.base_model, task=task, task_options=options)


def default_out(config: EvalConfig, task_name: str) -> Path:
    """``<adapter>/eval-<split>``, else ``outputs/eval-<model>-<task>``."""
    if config.adapter:
        return Path(config.adapter) / f"eval-{config.split}"
    return Path("outputs") / f"eval-{Path(str(config.model).rstrip('/')).name}-{task_name.replace('/', '-')}"


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
    """Metrics from scored samples (one record per completion, keyed by item ``index`` and ``sample``).

    Each accuracy gets a 95% interval in ``ci95`` (see ``item_interval``), keyed as the metric itself.
    """
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
    intervals: dict[str, Any] = {"method": interval_method(k)}
    intervals["accuracy"] = item_interval(_item_means(items, lambda r: r["solved"]), k)
    if lenient:
        intervals["lenient_accuracy"] = item_interval(_item_means(items, lambda r: r.get("lenient")), k)
    if k > 1:
        for level in _pass_levels(k):
            per_item = [pass_at_k(k, sum(r["solved"] for r in s[:k]), level) for s in items.values()]
            metrics[f"pass@{level}"], intervals[f"pass@{level}"] = _mean(per_item), item_interval(per_item, k)
    metrics["accuracy_by_label"], metrics["items_by_label"] = _label_accuracy(items)
    intervals["accuracy_by_label"] = {label: item_interval(_item_means(subset, lambda r: r["solved"]), k)
                                      for label, subset in _label_items(items).items()}
    # A check is reported only when every sample has it (samples resumed from an older grpolab may not).
    checks = [name for name in dict.fromkeys(n for r in records for n in r.get("checks", {}))
              if all(name in r.get("checks", {}) for r in records)]
    if checks:
        metrics["checks"] = {name: _mean([float(r["checks"][name]) for r in records]) for name in checks}
        intervals["checks"] = {name: item_interval(_item_means(items, lambda r, n=name: r["checks"][n]), k)
                               for name in checks}
    metrics["ci95"] = intervals
    return metrics


def interval_method(k: int) -> str:
    return "wilson" if k == 1 else f"bootstrap over items ({stats.BOOTSTRAP_RESAMPLES} resamples)"


def item_interval(per_item: Sequence[float], k: int) -> list[float] | None:
    """95% interval of a mean over items: Wilson for one 0/1 value per item (k=1), else bootstrap over items.

    With k > 1 the k completions of an item are correlated (they share its difficulty), so the items, not
    the n*k completions, are the independent draws; see grpolab.stats.
    """
    if not per_item:
        return None
    if k == 1:
        return list(stats.wilson_interval(round(sum(per_item)), len(per_item)))
    return list(stats.bootstrap_interval(per_item))


def _item_means(items: Mapping[int, list[Mapping[str, Any]]], value) -> list[float]:
    """Per item, the mean of ``value(record)`` over its samples; samples where it is None are left out."""
    means = []
    for samples in items.values():
        values = [float(v) for v in map(value, samples) if v is not None]
        if values:
            means.append(sum(values) / len(values))
    return means


def _label_items(items: Mapping[int, list[Mapping[str, Any]]]) -> dict[str, dict[int, list[Mapping[str, Any]]]]:
    """Items grouped by label, labels in order of first appearance."""
    groups: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
    for index, samples in items.items():
        groups.setdefault(str(samples[0]["label"]), {})[index] = samples
    return groups


def _label_accuracy(items: Mapping[int, list[Mapping[str, Any]]]) -> tuple[dict[str, float], dict[str, int]]:
    """Strict accuracy and item count per label, labels in order of first appearance."""
    groups = _label_items(items)
    accuracy = {label: _mean([float(r["solved"]) for s in subset.values() for r in s])
                for label, subset in groups.items()}
    return accuracy, {label: len(subset) for label, subset in groups.items()}


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
            **({"checks": {name: bool(check(completion, row)) for name, check in task.checks.items()}}
               if task.checks else {}),
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
              f"(mean@k, the pass@1 estimate). {interval_note(metrics)}\n\n")
    _write_atomic(out / REPORT, header + result_table({metrics["name"]: metrics})
                  + "\n\n![accuracy by label](accuracy_by_label.png)\n")
    _chart({metrics["name"]: metrics}, out / "accuracy_by_label.png",
           f"{config['task']} {config['split']}: strict accuracy by label")


def _chart(runs: Mapping[str, Mapping[str, Any]], out: Path, title: str) -> None:
    """Accuracy by label for each run, with an 'all' group when there is more than one label, 95% error bars."""
    from grpolab.plots import accuracy_bars

    labels = list(dict.fromkeys(label for m in runs.values() for label in m["accuracy_by_label"]))
    overall = ["all"] if len(labels) > 1 else []
    values = {name: {**m["accuracy_by_label"], "all": m["accuracy"]} for name, m in runs.items()}
    intervals = {name: {**m.get("ci95", {}).get("accuracy_by_label", {}), "all": m.get("ci95", {}).get("accuracy")}
                 for name, m in runs.items()}
    accuracy_bars(values, out, title, order=[*labels, *overall], intervals=intervals)


def interval_note(metrics: Mapping[str, Any]) -> str:
    """One sentence on how the bracketed intervals were computed."""
    method = metrics.get("ci95", {}).get("method")
    if method is None:
        return "No intervals: these metrics were written before grpolab reported them."
    if method == "wilson":
        return "Brackets: 95% Wilson score interval over items."
    return f"Brackets: 95% percentile {method} (the k completions of an item are not independent)."


def _compare_note(metrics: Mapping[str, Any], paired: Mapping[str, Any] | None) -> str:
    if paired is None:
        return interval_note(metrics) + " No paired test: the two runs did not evaluate the same items."
    how = ("exact McNemar test on the items only one run solved" if paired["method"] == "exact McNemar"
           else "paired bootstrap of the per-item differences in mean@k")
    return (f"{interval_note(metrics)} Paired test on the same {paired['items']} items ({how}): "
            f"p = {p_text(paired['p_value'])} for a difference of {100 * paired['difference']:+.1f} pp.")


# ---------------------------------------------------------------------------------- tables + compare
_ROWS = (  # (row title, metrics key, format)
    ("items", "items", "int"), ("strict accuracy", "accuracy", "pct"),
    ("lenient accuracy", "lenient_accuracy", "pct"), ("partial credit (mean)", "partial_mean", "num"),
    ("answer format", "format_rate", "pct"), ("unparseable", "unparseable_rate", "pct"),
    ("truncated", "truncated_rate", "pct"), ("completion tokens (mean)", "mean_completion_tokens", "num"),
)


Cell = tuple[float | None, str, Sequence[float] | None]  # (value, format, 95% interval or None)


def table_values(metrics: Mapping[str, Any]) -> dict[str, Cell]:
    """Row title -> cell for one run: overall metrics, pass@j, other checks, then accuracy per label."""
    intervals = metrics.get("ci95", {})  # absent in metrics written before intervals were reported
    rows = {title: (metrics.get(key), kind, intervals.get(key)) for title, key, kind in _ROWS}
    rows.update({key: (value, "pct", intervals.get(key)) for key, value in metrics.items() if key.startswith("pass@")})
    rows.update({name: (value, "pct", intervals.get("checks", {}).get(name))
                 for name, value in metrics.get("checks", {}).items()})
    rows.update({f"accuracy: {label}": (value, "pct", intervals.get("accuracy_by_label", {}).get(label))
                 for label, value in metrics["accuracy_by_label"].items()})
    return rows


def _row_titles(values: Sequence[Mapping[str, Any]]) -> list[str]:
    """All runs' row titles: the fixed rows, pass@j by j, then labels in order of first appearance."""
    titles = list(dict.fromkeys(title for per_run in values for title in per_run))
    passes = sorted((t for t in titles if t.startswith("pass@")), key=lambda t: int(t.split("@")[1]))
    fixed = [title for title, _, _ in _ROWS]
    return [*fixed, *passes, *(t for t in titles if t not in fixed and t not in passes)]


def _cell(value: float | None, kind: str, interval: Sequence[float] | None = None) -> str:
    if value is None:
        return "-"
    text = {"int": f"{value:.0f}", "pct": f"{100 * value:.1f}%", "num": f"{value:.2f}"}[kind]
    if interval is not None and kind == "pct":
        text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return text


def _delta(a: float | None, b: float | None, kind: str) -> str:
    if a is None or b is None:
        return "-"
    if kind == "pct":
        return f"{100 * (b - a):+.1f} pp"
    return f"{b - a:+.0f}" if kind == "int" else f"{b - a:+.2f}"


def result_table(runs: Mapping[str, Mapping[str, Any]], paired: Mapping[str, Any] | None = None) -> str:
    """A markdown table with one column per run, and a difference column when there are two.

    Percentages carry their 95% interval in brackets; ``paired`` (from ``paired_test``) adds a last row
    with the paired test's p-value for the difference in strict accuracy.
    """
    values = {name: table_values(metrics) for name, metrics in runs.items()}
    titles = _row_titles(list(values.values()))
    names = list(runs)
    header = ["metric", *names] + (["difference"] if len(names) == 2 else [])
    rows = []
    for title in titles:
        cells = [values[name].get(title, (None, "num", None)) for name in names]
        kind = next((k for v, k, _ in cells if v is not None), "num")
        row = [title, *(_cell(value, kind, interval) for value, _, interval in cells)]
        if len(names) == 2:
            row.append(_delta(cells[0][0], cells[1][0], kind))
        rows.append(row)
    if paired is not None and len(names) == 2:
        rows.append(_paired_row(paired))
    return _markdown(header, rows)


def _paired_row(paired: Mapping[str, Any]) -> list[str]:
    """k=1: the items only each run solved and McNemar's p; k>1: the paired bootstrap's p."""
    if paired["method"] == "exact McNemar":
        return ["solved by this run only", str(paired["only_a"]), str(paired["only_b"]),
                f"McNemar p = {p_text(paired['p_value'])}"]
    return ["paired bootstrap over items", "-", "-", f"p = {p_text(paired['p_value'])}"]


def p_text(p_value: float) -> str:
    """A p-value to read: three decimals, or scientific notation below 0.001."""
    return f"{p_value:.1e}" if p_value < 0.001 else f"{p_value:.3f}"


def paired_test(records_a: Sequence[Mapping[str, Any]], records_b: Sequence[Mapping[str, Any]]) -> dict | None:
    """Paired test of strict accuracy, B vs A, on the same items; None when the runs hold other items.

    One completion per item: the exact McNemar test on the discordant items. More: a paired bootstrap of
    the per-item differences in mean@k (see grpolab.stats).
    """
    items_a, items_b = _by_item(records_a), _by_item(records_b)
    if not items_a or items_a.keys() != items_b.keys() or any(
            _item_key(items_a[index][0]) != _item_key(items_b[index][0]) for index in items_a):
        return None
    solved_a = [_mean([float(r["solved"]) for r in items_a[index]]) for index in items_a]
    solved_b = [_mean([float(r["solved"]) for r in items_b[index]]) for index in items_a]
    result: dict[str, Any] = {"items": len(items_a), "difference": _mean(solved_b) - _mean(solved_a)}
    if all(len(samples) == 1 for samples in [*items_a.values(), *items_b.values()]):
        only_a = sum(a > b for a, b in zip(solved_a, solved_b, strict=True))
        only_b = sum(b > a for a, b in zip(solved_a, solved_b, strict=True))
        return {**result, "method": "exact McNemar", "only_a": only_a, "only_b": only_b,
                "p_value": stats.mcnemar_exact(only_a, only_b)}
    differences = [b - a for a, b in zip(solved_a, solved_b, strict=True)]
    return {**result, "method": "paired bootstrap", "p_value": stats.paired_bootstrap_p(differences)}


def _item_key(record: Mapping[str, Any]) -> tuple[str, str]:
    return str(record.get("question")), str(record.get("answer"))


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
    """Side-by-side table of two eval directories, written to ``out``/comparison.md and comparison.png.

    When both directories hold the same items, the table ends with a paired test of the difference.
    """
    a, b = load_metrics(dir_a), load_metrics(dir_b)
    name_a, name_b = a["name"], b["name"]
    if name_a == name_b:
        name_a, name_b = str(dir_a), str(dir_b)
    runs = {name_a: a, name_b: b}
    paired = paired_test(read_samples(Path(dir_a) / SAMPLES), read_samples(Path(dir_b) / SAMPLES))
    table = result_table(runs, paired)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "comparison.md", f"# {name_a} vs {name_b}\n\n{table}\n\n{_compare_note(a, paired)}\n\n"
                  "![comparison](comparison.png)\n")
    _chart(runs, out / "comparison.png", f"{a['config']['task']} {a['config']['split']}: strict accuracy by label")
    return table
