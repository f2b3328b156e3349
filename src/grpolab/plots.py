"""Pictures people would rather see than read: the reward and loss curves, and accuracy by label."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Write via a temporary file so a viewer never sees a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(handle)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def rolling_mean(values: Sequence[float | None], window: int) -> list[float | None]:
    """Trailing mean over the last ``window`` values, skipping gaps (None); GRPO rewards are noisy per
    step."""
    out: list[float | None] = []
    for index in range(len(values)):
        recent = [v for v in values[max(0, index - window + 1) : index + 1] if v is not None]
        out.append(sum(recent) / len(recent) if recent else None)
    return out


def reward_curve(metrics_path: Path, out: Path, title: str = "GRPO training") -> None:
    """Reward components and completion length against the training step, from metrics.jsonl."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if "reward" in row]
    if not rows:
        return
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(2, 1))
    steps = [row["step"] for row in rows]
    window = max(1, min(10, len(rows) // 5))
    total = [row["reward"] for row in rows]
    top.plot(steps, total, color="black", alpha=0.25, linewidth=1)
    top.plot(
        steps,
        rolling_mean(total, window),
        label=f"total reward (weighted), mean of {window}",
        linewidth=2.2,
        color="black",
    )
    for key in sorted(k for k in rows[-1] if k.startswith("rewards/") and k.endswith("/mean")):
        values = [row.get(key) for row in rows]
        (line,) = top.plot(steps, rolling_mean(values, window), label=key.split("/")[1])
        top.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=1)
    top.set_ylabel("mean reward (faint: each step)")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="best")
    if any("completions/mean_length" in row for row in rows):
        bottom.plot(steps, [row.get("completions/mean_length") for row in rows], color="tab:gray")
    bottom.set_ylabel("completion tokens")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    _save(fig, out)
    plt.close(fig)


def loss_curve(metrics_path: Path, out: Path, title: str = "SFT training") -> None:
    """SFT's loss and, when TRL logs it, mean token accuracy against the training step, from metrics.jsonl."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("loss") is not None]
    if not rows:
        return
    plt = _pyplot()
    has_accuracy = any(row.get("mean_token_accuracy") is not None for row in rows)
    fig, axes = plt.subplots(
        2 if has_accuracy else 1, 1, figsize=(7, 6 if has_accuracy else 4), sharex=True, squeeze=False
    )
    steps = [row["step"] for row in rows]
    top = axes[0][0]
    top.plot(steps, [row["loss"] for row in rows], color="black", marker="." if len(rows) < 20 else None)
    top.set_ylabel("training loss (reply tokens)")
    top.set_title(title)
    top.grid(alpha=0.3)
    if has_accuracy:
        bottom = axes[1][0]
        bottom.plot(
            steps,
            [row.get("mean_token_accuracy") for row in rows],
            color="tab:blue",
            marker="." if len(rows) < 20 else None,
        )
        bottom.set_ylabel("token accuracy")
        bottom.set_ylim(0, 1)
        bottom.grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    axes[-1][0].xaxis.get_major_locator().set_params(integer=True)
    _save(fig, out)
    plt.close(fig)


def accuracy_bars(
    results: Mapping[str, Mapping[str, float]],
    out: Path,
    title: str,
    order: Sequence[str] | None = None,
    intervals: Mapping[str, Mapping[str, Sequence[float] | None]] | None = None,
) -> None:
    """Grouped bars: one group per label, one bar per run (e.g. base vs. trained), with 95% error bars
    where ``intervals`` gives (low, high) for a run's label."""
    plt = _pyplot()
    runs = list(results)
    labels = list(order or sorted({label for per_run in results.values() for label in per_run}))
    width = 0.8 / max(1, len(runs))
    fig, axis = plt.subplots(figsize=(max(5, 1.6 * len(labels) + 2), 4))
    for index, run in enumerate(runs):
        xs = [position + index * width for position in range(len(labels))]
        values = [100 * results[run].get(label, 0.0) for label in labels]
        bounds = [
            (intervals or {}).get(run, {}).get(label) or (value / 100, value / 100)
            for label, value in zip(labels, values, strict=True)
        ]
        errors = [
            [max(0.0, value - 100 * low) for value, (low, _) in zip(values, bounds, strict=True)],
            [max(0.0, 100 * high - value) for value, (_, high) in zip(values, bounds, strict=True)],
        ]
        axis.bar(
            xs,
            values,
            width=width,
            label=run,
            yerr=errors,
            capsize=3,
            error_kw={"elinewidth": 1, "ecolor": "0.25"},
        )
        for x, (_, high), value in zip(xs, bounds, values, strict=True):  # above the error bar, not behind it
            axis.text(x, 100 * high + 1.5, f"{value:.0f}%", ha="center", va="bottom", fontsize=8)
    axis.set_xticks([position + width * (len(runs) - 1) / 2 for position in range(len(labels))], labels)
    axis.set_ylabel("strict accuracy (%), 95% interval")
    axis.set_ylim(0, 112)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    _save(fig, out)
    plt.close(fig)
