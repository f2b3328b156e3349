"""Eval metrics from scored samples: strict accuracy, pass@k, per-label accuracy, 95% intervals, paired tests.

Strict accuracy is the mean of the scorer's ``solved`` over all completions: with K=1 the fraction of items
solved; with K>1 it is mean@K, which is also the unbiased estimate of pass@1. pass@j for j <= K uses the
unbiased estimator of Chen et al. 2021 (arXiv:2107.03374, eq. 1) with n=K samples per item.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from grpolab.evaluation import stats


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def by_item(records: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
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
    items = by_item(records)
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
    if records and all("tool_calls" in r for r in records):  # tool tasks (evaluation.tool_runner)
        metrics["tool_calls_per_item"] = _mean([float(r["tool_calls"]) for r in records])
        metrics["failed_calls_per_item"] = _mean([float(r["failed_calls"]) for r in records])
        metrics["tool_use_rate"] = _mean([float(r["tool_calls"] > 0) for r in records])
        metrics["turns_per_item"] = _mean([float(r["turns"]) for r in records])
    metrics["ci95"] = intervals
    return metrics


def interval_method(k: int) -> str:
    return "wilson" if k == 1 else f"bootstrap over items ({stats.BOOTSTRAP_RESAMPLES} resamples)"


def item_interval(per_item: Sequence[float], k: int) -> list[float] | None:
    """95% interval of a mean over items: Wilson for one 0/1 value per item (k=1), else bootstrap over items.

    With k > 1 the k completions of an item are correlated (they share its difficulty), so the items, not
    the n*k completions, are the independent draws; see grpolab.evaluation.stats.
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


def _label_items(
    items: Mapping[int, list[Mapping[str, Any]]],
) -> dict[str, dict[int, list[Mapping[str, Any]]]]:
    """Items grouped by label, labels in order of first appearance."""
    groups: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
    for index, samples in items.items():
        groups.setdefault(str(samples[0]["label"]), {})[index] = samples
    return groups


def _label_accuracy(items: Mapping[int, list[Mapping[str, Any]]]) -> tuple[dict[str, float], dict[str, int]]:
    """Strict accuracy and item count per label, labels in order of first appearance."""
    groups = _label_items(items)
    accuracy = {
        label: _mean([float(r["solved"]) for s in subset.values() for r in s])
        for label, subset in groups.items()
    }
    return accuracy, {label: len(subset) for label, subset in groups.items()}


def paired_test(
    records_a: Sequence[Mapping[str, Any]], records_b: Sequence[Mapping[str, Any]]
) -> dict | None:
    """Paired test of strict accuracy, B vs A, on the same items; None when the runs hold other items.

    One completion per item: the exact McNemar test on the discordant items. More: a paired bootstrap of
    the per-item differences in mean@k (see grpolab.evaluation.stats).
    """
    items_a, items_b = by_item(records_a), by_item(records_b)
    if (
        not items_a
        or items_a.keys() != items_b.keys()
        or any(_item_key(items_a[index][0]) != _item_key(items_b[index][0]) for index in items_a)
    ):
        return None
    solved_a = [_mean([float(r["solved"]) for r in items_a[index]]) for index in items_a]
    solved_b = [_mean([float(r["solved"]) for r in items_b[index]]) for index in items_a]
    result: dict[str, Any] = {"items": len(items_a), "difference": _mean(solved_b) - _mean(solved_a)}
    if all(len(samples) == 1 for samples in [*items_a.values(), *items_b.values()]):
        only_a = sum(a > b for a, b in zip(solved_a, solved_b, strict=True))
        only_b = sum(b > a for a, b in zip(solved_a, solved_b, strict=True))
        return {
            **result,
            "method": "exact McNemar",
            "only_a": only_a,
            "only_b": only_b,
            "p_value": stats.mcnemar_exact(only_a, only_b),
        }
    differences = [b - a for a, b in zip(solved_a, solved_b, strict=True)]
    return {**result, "method": "paired bootstrap", "p_value": stats.paired_bootstrap_p(differences)}


def _item_key(record: Mapping[str, Any]) -> tuple[str, str]:
    return str(record.get("question")), str(record.get("answer"))
