"""How long the embedded model takes to become usable: first conversion vs. loads from the cache.

Prints the figures recorded in docs/benchmarks.md. Run: python benchmarks/bench_model_load.py
The first conversion runs in a fresh temporary GRPOLAB_HOME, so the user's cache is not touched.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

LOAD = """
import time, torch
def load():
    start = time.perf_counter()
    source = models.resolve("smollm2-135m-instruct")
    models.load_causal_lm(source)
    models.load_tokenizer(source)
    return time.perf_counter() - start
from grpolab import models
first = load()   # includes transformers' lazy import of the modelling code (once per process)
second = load()  # the cache read alone
print(first, second)
"""


def timed_load(env: dict) -> tuple[float, float]:
    """Seconds from resolve() to a loaded model and tokenizer: first in a fresh process, then again in it."""
    result = subprocess.run([sys.executable, "-c", "import torch, transformers\n" + LOAD], env=env,
                            capture_output=True, text=True, check=True)
    first, second = result.stdout.strip().splitlines()[-1].split()
    return float(first), float(second)


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "GRPOLAB_HOME": home}
        first, _ = timed_load(env)
        runs = [timed_load(env) for _ in range(3)]
    cold = statistics.median(run[0] for run in runs)
    warm = statistics.median(run[1] for run in runs)
    print(f"first use (GGUF -> safetensors conversion + load): {first:.1f} s")
    print(f"load from the cache in a new process (incl. transformers' lazy imports): median {cold:.2f} s")
    print(f"load from the cache again in the same process: median {warm:.2f} s")
    print(f"ratio first use / cached load in a new process: {first / cold:.1f}x")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - start:.0f} s")
