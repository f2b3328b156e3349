"""Eval results for people: metrics.json, report.md, the accuracy-by-label chart, and side-by-side comparison.

Tables are markdown padded to align in a terminal too; percentages carry their 95% interval in brackets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grpolab.errors import UserError
from grpolab.evaluation.metrics import paired_test
from grpolab.evaluation.samples import SAMPLES, read_samples, write_atomic

METRICS, REPORT = "metrics.json", "report.md"


def load_metrics(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METRICS
    if not path.is_file():
        raise UserError(
            f"{directory} is not an eval output directory (no {METRICS}): run 'grpolab eval' first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def write_results(out: Path, metrics: Mapping[str, Any]) -> None:
    """metrics.json, report.md and the accuracy-by-label chart."""
    write_atomic(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    config = metrics["config"]
    adapter = f" + adapter `{config['adapter']}`" if config["adapter"] else ""
    header = (
        f"# Evaluation: {metrics['name']}\n\nmodel `{config['model']}`{adapter}, task `{config['task']}`, "
        f"split `{config['split']}`: {metrics['items']} items x {metrics['samples_per_item']} "
        f"completion(s), temperature {config['temperature']}, "
        f"max_new_tokens {config['max_new_tokens']} ({config.get('max_new_tokens_from')}). "
        "Accuracy is strict (the task's scorer); with several completions per item it is their mean "
        f"(mean@k, the pass@1 estimate). {interval_note(metrics)}\n\n"
    )
    write_atomic(
        out / REPORT,
        header
        + result_table({metrics["name"]: metrics})
        + "\n\n![accuracy by label](accuracy_by_label.png)\n",
    )
    _chart(
        {metrics["name"]: metrics},
        out / "accuracy_by_label.png",
        f"{config['task']} {config['split']}: strict accuracy by label",
    )


def _chart(runs: Mapping[str, Mapping[str, Any]], out: Path, title: str) -> None:
    """Accuracy by label for each run, with an 'all' group when there is more than one label, 95% error
    bars."""
    from grpolab.plots import accuracy_bars

    labels = list(dict.fromkeys(label for m in runs.values() for label in m["accuracy_by_label"]))
    overall = ["all"] if len(labels) > 1 else []
    values = {name: {**m["accuracy_by_label"], "all": m["accuracy"]} for name, m in runs.items()}
    intervals = {
        name: {**m.get("ci95", {}).get("accuracy_by_label", {}), "all": m.get("ci95", {}).get("accuracy")}
        for name, m in runs.items()
    }
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
    how = (
        "exact McNemar test on the items only one run solved"
        if paired["method"] == "exact McNemar"
        else "paired bootstrap of the per-item differences in mean@k"
    )
    return (
        f"{interval_note(metrics)} Paired test on the same {paired['items']} items ({how}): "
        f"p = {p_text(paired['p_value'])} for a difference of {100 * paired['difference']:+.1f} pp."
    )


_ROWS = (  # (row title, metrics key, format)
    ("items", "items", "int"),
    ("strict accuracy", "accuracy", "pct"),
    ("lenient accuracy", "lenient_accuracy", "pct"),
    ("partial credit (mean)", "partial_mean", "num"),
    ("answer format", "format_rate", "pct"),
    ("unparseable", "unparseable_rate", "pct"),
    ("truncated", "truncated_rate", "pct"),
    ("completion tokens (mean)", "mean_completion_tokens", "num"),
)


Cell = tuple[float | None, str, Sequence[float] | None]  # (value, format, 95% interval or None)


def table_values(metrics: Mapping[str, Any]) -> dict[str, Cell]:
    """Row title -> cell for one run: overall metrics, pass@j, other checks, then accuracy per label."""
    intervals = metrics.get("ci95", {})  # absent in metrics written before intervals were reported
    rows = {title: (metrics.get(key), kind, intervals.get(key)) for title, key, kind in _ROWS}
    rows.update(
        {key: (value, "pct", intervals.get(key)) for key, value in metrics.items() if key.startswith("pass@")}
    )
    rows.update(
        {
            name: (value, "pct", intervals.get("checks", {}).get(name))
            for name, value in metrics.get("checks", {}).items()
        }
    )
    rows.update(
        {
            f"accuracy: {label}": (value, "pct", intervals.get("accuracy_by_label", {}).get(label))
            for label, value in metrics["accuracy_by_label"].items()
        }
    )
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
    return markdown_table(header, rows)


def _paired_row(paired: Mapping[str, Any]) -> list[str]:
    """k=1: the items only each run solved and McNemar's p; k>1: the paired bootstrap's p."""
    if paired["method"] == "exact McNemar":
        return [
            "solved by this run only",
            str(paired["only_a"]),
            str(paired["only_b"]),
            f"McNemar p = {p_text(paired['p_value'])}",
        ]
    return ["paired bootstrap over items", "-", "-", f"p = {p_text(paired['p_value'])}"]


def p_text(p_value: float) -> str:
    """A p-value to read: three decimals, or scientific notation below 0.001."""
    return f"{p_value:.1e}" if p_value < 0.001 else f"{p_value:.3f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table padded to align in a terminal too: first column left, the others right."""
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
    rule = [":" + "-" * (widths[0] + 1), *("-" * (width + 1) + ":" for width in widths[1:])]
    return "\n".join(
        [
            _markdown_line(header, widths),
            "|" + "|".join(rule) + "|",
            *(_markdown_line(row, widths) for row in rows),
        ]
    )


def _markdown_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [
        cells[0].ljust(widths[0]),
        *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)),
    ]
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
    write_atomic(
        out / "comparison.md",
        f"# {name_a} vs {name_b}\n\n{table}\n\n{_compare_note(a, paired)}\n\n![comparison](comparison.png)\n",
    )
    _chart(
        runs,
        out / "comparison.png",
        f"{a['config']['task']} {a['config']['split']}: strict accuracy by label",
    )
    return table
