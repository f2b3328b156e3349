"""Trainer callbacks: metrics.jsonl, sample completions, the training-curve PNG and a progress bar.

Only the main process writes, so multi-process runs log once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from grpolab import plots
from grpolab.training.rewards import SampleRecorder

logger = logging.getLogger(__name__)

# Keys of TRL's GRPO and SFT logs worth a column in the progress line, in display order.
_PROGRESS_KEYS = (("reward", "reward"), ("completions/mean_length", "len"), ("kl", "kl"), ("loss", "loss"),
                  ("mean_token_accuracy", "acc"))


class RunLogger(TrainerCallback):
    """Appends each log to metrics.jsonl and redraws ``curve_file``: GRPO's reward curve, or with
    ``curve=plots.loss_curve`` SFT's loss and token accuracy."""

    def __init__(self, output_dir: str, recorder: SampleRecorder | None = None, samples_per_log: int = 4,
                 plot: bool = True, title: str = "GRPO training", curve=plots.reward_curve,
                 curve_file: str = "reward_curve.png") -> None:
        self.dir = Path(output_dir)
        self.recorder = recorder
        self.samples_per_log = samples_per_log
        self.plot = plot
        self.title = title
        self.curve, self.curve_file = curve, curve_file
        self.last_time: float | None = None
        self.last_step = 0

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_step = time.monotonic(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "train_runtime" in logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, **_clean(logs)}
        now = time.monotonic()
        steps = state.global_step - self.last_step
        if steps > 0 and self.last_time is not None:
            row["seconds_per_step"] = round((now - self.last_time) / steps, 3)
        self.last_time, self.last_step = now, state.global_step
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        self._write_samples(state.global_step)
        if self.plot:
            self.curve(self.metrics_path, self.dir / self.curve_file, self.title)

    def _write_samples(self, step: int) -> None:
        if self.recorder is None or self.samples_per_log <= 0:
            return
        with (self.dir / "samples.jsonl").open("a") as handle:
            for sample in self.recorder.take(self.samples_per_log):
                handle.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")


class SamplingCheck(TrainerCallback):
    """Once, at the first logged step: do generation and training agree on the completions' log-probs?

    GRPO's importance ratio is pi_train(token) / pi_generation(token). With vLLM, TRL scores each
    completion again with the training model and logs the ratio and the absolute log-prob gap
    (``sampling/importance_sampling_ratio/*``, ``sampling/sampling_logp_difference/*``); at the first
    step both models hold the same weights, so a ratio far from 1 means the two disagree (dtype, a stale
    weight sync, a different chat template). With transformers generation and one pass per generation
    TRL keeps no generation log-probs and the ratio is 1 by construction; what it logs then is the share
    of tokens whose ratio was clipped (``clip_ratio/region_mean``), which at the first step can only come
    from a gap between the generation pass and the training pass (with num_iterations > 1, for example,
    dropout differs between them).
    """

    # Mean importance ratio outside 1 +- RATIO_TOLERANCE, a mean gap above LOGP_GAP_NATS (per token, about
    # a 10% probability difference), or more than CLIPPED_SHARE of tokens clipped at the first step is off.
    RATIO_TOLERANCE = 0.1
    LOGP_GAP_NATS = 0.1
    CLIPPED_SHARE = 0.05

    def __init__(self) -> None:
        self.done = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.done or not logs or "reward" not in logs or not state.is_world_process_zero:
            return
        self.done = True
        line, off = self.verdict(logs, state.global_step)
        (logger.warning if off else logger.info)(line)

    @classmethod
    def verdict(cls, logs: dict, step: int) -> tuple[str, bool]:
        """(one line for the log, whether it is off) from the first training log."""
        ratio = logs.get("sampling/importance_sampling_ratio/mean")
        if ratio is not None:
            gap = logs.get("sampling/sampling_logp_difference/mean", 0.0)
            off = abs(ratio - 1) > cls.RATIO_TOLERANCE or gap > cls.LOGP_GAP_NATS
            return (
                f"{'WARNING ' if off else ''}step-{step} sampling check: importance ratio mean {ratio:.3f} "
                f"(min {logs.get('sampling/importance_sampling_ratio/min', math.nan):.3f}, max "
                f"{logs.get('sampling/importance_sampling_ratio/max', math.nan):.3f}), |log-prob gap| "
                f"mean {gap:.4f} max {logs.get('sampling/sampling_logp_difference/max', math.nan):.4f} "
                "between vLLM generation and training"
                + (
                    "; generation and training disagree: check dtype, weight sync and chat template"
                    if off
                    else ""
                ),
                off,
            )
        clipped = logs.get("clip_ratio/region_mean")
        if clipped is None:
            return f"step-{step} sampling check: TRL logged no importance ratio for this loss", False
        off = clipped > cls.CLIPPED_SHARE
        return (
            f"{'WARNING ' if off else ''}step-{step} sampling check: transformers generation, no separate "
            f"generation log-probs (importance ratio 1 by construction); clipped tokens {clipped:.1%}"
            + ("; generation and training passes disagree (dropout with num_iterations > 1?)" if off else ""),
            off,
        )


class ProgressLine(TrainerCallback):
    """A tqdm bar with ETA whose postfix shows the latest reward (GRPO) or loss and token accuracy (SFT),
    instead of printing raw log dicts."""

    def __init__(self, desc: str = "train") -> None:
        self.desc = desc
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc=self.desc,
                unit="step",
                dynamic_ncols=True,
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        shown = {label: logs[key] for key, label in _PROGRESS_KEYS if isinstance(logs.get(key), (int, float))}
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clean(logs: dict) -> dict:
    """JSON-safe copy: floats rounded, NaN kept as null so a gap shows in the curve, not a fake 0."""
    out = {}
    for key, value in logs.items():
        if isinstance(value, float):
            out[key] = None if math.isnan(value) or math.isinf(value) else round(value, 6)
        elif isinstance(value, (int, str, bool)) or value is None:
            out[key] = value
    return out
