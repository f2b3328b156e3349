"""Seconds per GRPO step on the embedded model with and without the KV cache during generation.

transformers' TrainingArguments defaults ``use_cache`` to False and the Trainer writes that into the model
config, so GRPO's generation recomputes every prefix at each token; grpolab's recipes default it to True.
Runs alternate (off, on, off, on) in one session so background load affects both alike.
Run: python benchmarks/bench_train_step.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 3


def seconds_per_step(use_cache: bool, out: Path) -> list[float]:
    command = [sys.executable, "-m", "grpolab", "train", "--max_steps", str(STEPS), "--output_dir", str(out),
               "--use_cache", str(use_cache).lower(), "--save_steps", "1000", "--plot", "false"]
    subprocess.run(command, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["seconds_per_step"] for row in rows[1:]]  # the first step includes warm-up


def main() -> None:
    results: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(2):
            for use_cache in (False, True):
                results[use_cache] += seconds_per_step(use_cache, Path(tmp) / f"r{round_index}-{use_cache}")
    off, on = statistics.median(results[False]), statistics.median(results[True])
    print(f"use_cache=False: median {off:.1f} s/step  {results[False]}")
    print(f"use_cache=True:  median {on:.1f} s/step  {results[True]}")
    print(f"speed-up from the KV cache: {off / on:.2f}x")


if __name__ == "__main__":
    main()
