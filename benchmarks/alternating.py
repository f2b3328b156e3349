"""The harness the step benchmarks share: variants run as fresh worker processes, alternating per round.

Each benchmark script (``bench_grpo_step.py``, ``bench_sft_step.py``) defines its workers and calls
``main``; the order of the variants is reversed every other round, so that load from other processes
falls on all alike. Every worker prints one JSON line with ``seconds`` (per step), ``peak_rss_gb``,
``trainer``, a token count and the seconds of each part of a step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence


def run_round(script: str, variants: Sequence[str], worker_flags: list[str], parts: Sequence[str],
              reverse: bool) -> dict[str, dict]:
    results = {}
    for variant in reversed(variants) if reverse else variants:
        command = [sys.executable, script, "--worker", variant, *worker_flags]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            sys.exit(f"{variant}: worker failed\n{completed.stderr[-3000:]}")
        results[variant] = step = json.loads(completed.stdout.strip().splitlines()[-1])
        split = ", ".join(f"{part} {step[part]:.2f}" for part in parts)
        print(f"  {variant:<40} {step['seconds']:6.2f} s/step  ({step['trainer']}; {split}; "
              f"RSS {step['peak_rss_gb']:.2f} GB)", flush=True)
    return results


def report(variants: Sequence[str], rounds: list[dict[str, dict]], parts: Sequence[str], tokens_key: str,
           default_label: str, default_variants: Sequence[str]) -> None:
    """A table of medians over rounds, the per-round ratios, and the speed-up as the last line."""
    print(f"\n{'variant':<40} {'s/step':>7} {'min-max':>11} {'tok/s':>6} {'RSS GB':>6}  "
          + " ".join(f"{part:>10}" for part in parts))
    for variant in variants:
        runs = [results[variant] for results in rounds]
        keys = (*parts, "seconds", "peak_rss_gb")
        median = {key: statistics.median(run[key] for run in runs) for key in keys}
        rate = statistics.median(run[tokens_key] / run["seconds"] for run in runs)
        spread = f"{min(r['seconds'] for r in runs):.2f}-{max(r['seconds'] for r in runs):.2f}"
        print(f"{variant:<40} {median['seconds']:7.2f} {spread:>11} {rate:6.1f} "
              f"{median['peak_rss_gb']:6.2f}  " + " ".join(f"{median[part]:10.2f}" for part in parts))
    base = variants[0]
    for other in variants[1:]:
        ratios = [results[base]["seconds"] / results[other]["seconds"] for results in rounds]
        print(f"\nper-round ratio {other} vs {base}: " + ", ".join(f"{ratio:.2f}" for ratio in ratios))
    other = variants[1]
    ratio = statistics.median(results[base]["seconds"] / results[other]["seconds"] for results in rounds)
    is_default = tuple(variants[:2]) == tuple(default_variants)
    label = default_label if is_default else f"speed-up of {other} vs {base}"
    print(f"{label}: {ratio:.2f}x")


def run_rounds(args: argparse.Namespace, script: str, worker_flags: list[str], parts: Sequence[str],
               header: str) -> list[dict[str, dict]]:
    """Every round in turn; the figures go to ``--json`` after each, so a run cut short leaves them."""
    if len(args.variants) < 2:
        sys.exit("--variants needs at least two to compare")
    print(f"{args.rounds} rounds x ({header}) of: {', '.join(args.variants)}; {args.threads} threads",
          flush=True)
    rounds = []
    for number in range(args.rounds):
        print(f"round {number + 1}/{args.rounds}", flush=True)
        rounds.append(run_round(script, args.variants, worker_flags, parts, reverse=number % 2 == 1))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"args": vars(args), "rounds": rounds}, handle, indent=1)
    return rounds
