"""Held-out accuracy of the demo task every N steps, for the stock or the fast GRPO path (issue 13).

The demo's own pieces: its data command and its evaluation flags (scripts/demo.py), the default recipe,
one seed. Training saves a checkpoint every ``--every`` steps; each is evaluated afterwards (the final
adapter first, so a run cut short still answers "equal learning at the last step"). ``curve.json`` gets
strict accuracy per step, the training's wall time and its peak RSS (``/usr/bin/time -v`` when present).

    python benchmarks/learning_curve.py --path fast --seed 1 --out outputs/curve-fast-1
    python benchmarks/learning_curve.py --path stock --seed 1 --out outputs/curve-stock-1

"stock" is grpolab's recipe with TRL's own log-probs and generation (``--logprobs fused --generation trl``);
"fast" is the default (``auto``: ``shared`` for both on the CPU).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from demo import EVAL_FLAGS  # noqa: E402

PATHS = {"stock": ["--logprobs", "fused", "--generation", "trl"], "fast": []}


def grpolab(args: list[str], measure: bool = False) -> tuple[float, float | None]:
    """Run one grpolab command; its wall seconds and (with measure) peak RSS in GB."""
    command = [sys.executable, "-m", "grpolab", *args]
    timer = shutil.which("time") or "/usr/bin/time"
    if measure and Path(timer).exists():
        command = [timer, "-v", *command]
    print("$ grpolab " + " ".join(args), flush=True)
    start = time.monotonic()
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"grpolab {args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return seconds, int(rss.group(1)) / 1e6 if rss else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", choices=sorted(PATHS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="checkpoint and evaluate every N steps")
    parser.add_argument("--num_test", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    data, run = out / "data" / "arith.jsonl", out / "run"
    result_path = out / "curve.json"
    result = {"path": args.path, "seed": args.seed, "accuracy": {}}
    seed = ["--seed", str(args.seed)]
    grpolab(["data", "arith", "--num", "2000", "--num_test", str(args.num_test), *seed, "--out", str(data)])
    seconds, rss = grpolab(
        [
            "train",
            "--output_dir",
            str(run),
            "--data_file",
            str(data),
            *seed,
            *PATHS[args.path],
            "--max_steps",
            str(args.max_steps),
            "--save_steps",
            str(args.every),
            "--save_total_limit",
            str(args.max_steps // args.every + 1),
            "--torch_threads",
            str(args.threads),
        ],
        measure=True,
    )
    result.update(train_seconds=seconds, train_peak_rss_gb=rss)
    steps = [args.max_steps, *range(args.every, args.max_steps, args.every)]
    for step in steps:
        adapter = run if step == args.max_steps else run / f"checkpoint-{step}"
        _, eval_rss = grpolab(
            [
                "eval",
                "--adapter",
                str(adapter),
                "--data_file",
                str(data),
                *EVAL_FLAGS,
                "--num",
                str(args.num_test),
                "--out",
                str(out / f"eval-{step}"),
            ],
            measure=True,
        )
        metrics = json.loads((out / f"eval-{step}" / "metrics.json").read_text())
        result["accuracy"][step] = metrics["accuracy"]
        result.setdefault("eval_peak_rss_gb", eval_rss)
        result_path.write_text(json.dumps(result, indent=1))
        print(f"step {step}: strict accuracy {100 * metrics['accuracy']:.0f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
