"""Trainer callbacks: metrics.jsonl, sample completions, the reward-curve PNG and a progress bar.

Only the main process writes, so multi-process runs log once.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from grpolab import plots
from grpolab.rewards import SampleRecorder

# Keys of TRL's GRPO logs worth a column in the progress line, in display order.
_PROGRESS_KEYS = (("reward", "reward"), ("completions/mean_length", "len"), ("kl", "kl"), ("loss", "loss"))


class RunLogger(TrainerCallback):
    def __init__(self, output_dir: str, recorder: SampleRecorder | None = None, samples_per_log: int = 4,
                 plot: bool = True, title: str = "GRPO training") -> None:
        self.dir = Path(output_dir)
        self.recorder = recorder
        self.samples_per_log = samples_per_log
        self.plot = plot
        self.title = title
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
            plots.reward_curve(self.metrics_path, self.dir / "reward_curve.png", self.title)

    def _write_samples(self, step: int) -> None:
        if self.recorder is None or self.samples_per_log <= 0:
            return
        with (self.dir / "samples.jsonl").open("a") as handle:
            for sample in self.recorder.take(self.samples_per_log):
                handle.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")


class ProgressLine(TrainerCallback):
    """A tqdm bar with ETA whose postfix shows the latest reward, instead of printing raw log dicts."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                            dynamic_ncols=True)

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
