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
start = time.perf_counter()
from grpolab import models
source = models.resolve("smollm2-135m-instruct")
models.load_causal_lm(source)
models.load_tokenizer(source)
print(time.perf_counter() - start)
"""


def timed_load(env: dict) -> float:
    """Seconds from resolve() to a loaded model and tokenizer, in a fresh process (imports excluded)."""
    result = subprocess.run([sys.executable, "-c", "import torch, transformers\n" + LOAD], env=env,
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "GRPOLAB_HOME": home}
        first = timed_load(env)
        cached = [timed_load(env) for _ in range(3)]
    print(f"first use (GGUF -> safetensors conversion + load): {first:.1f} s")
    print(f"later loads from the cache: median {statistics.median(cached):.2f} s (runs: "
          + ", ".join(f"{value:.2f}" for value in cached) + ")")
    print(f"ratio first/cached: {first / statistics.median(cached):.1f}x")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - start:.0f} s")
