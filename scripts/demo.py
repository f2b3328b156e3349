"""The main job on the embedded default, start to finish, as a user would type it.

make data -> evaluate the base model -> train (GRPO + LoRA) -> evaluate the adapter -> compare.
Every step is a grpolab command, printed before it runs, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

# Evaluation settings shared by both evaluations, so base and trained are measured alike. 64 new tokens
# leave the base model room for its wordier replies (the trained one answers in about 10).
EVAL_FLAGS = ["--task", "arith", "--split", "test", "--max_new_tokens", "64"]


def step(title: str, args: list[str]) -> float:
    command = ["grpolab", *args]
    print(f"\n==> {title}\n$ {shlex.join(command)}", flush=True)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "grpolab", *args])
    if result.returncode != 0:
        sys.exit(f"demo: step '{title}' failed with exit code {result.returncode}")
    return time.monotonic() - start


def keep_previous(out: Path) -> None:
    """A re-run never overwrites an earlier demo: it moves aside with its time stamp."""
    if out.exists() and any(out.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(out.stat().st_mtime))
        out.rename(out.with_name(f"{out.name}-{stamp}"))
        print(f"previous demo kept in {out.with_name(f'{out.name}-{stamp}')}")


def print_verdict(base: Path, trained: Path) -> None:
    """Base vs trained strict accuracy with 95% intervals, and the paired test on the same items."""
    from grpolab.evaluation import metrics, report, samples

    a, b = report.load_metrics(base), report.load_metrics(trained)
    paired = metrics.paired_test(samples.read_samples(base / samples.SAMPLES),
                                 samples.read_samples(trained / samples.SAMPLES))
    ranges = [f"{100 * m['accuracy']:.1f}% [{100 * m['ci95']['accuracy'][0]:.1f}, "
              f"{100 * m['ci95']['accuracy'][1]:.1f}]" for m in (a, b)]
    print(f"\nstrict accuracy, base -> trained: {ranges[0]} -> {ranges[1]} (95% Wilson intervals)")
    if paired is not None and paired["method"] == "exact McNemar":
        print(f"paired on the same {paired['items']} items: {paired['only_b']} solved only after training, "
              f"{paired['only_a']} only before; exact McNemar p = {report.p_text(paired['p_value'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_steps", type=int, default=None, help="override the default recipe's steps")
    parser.add_argument("--num_test", type=int, default=100, help="held-out items to evaluate")
    args = parser.parse_args()
    out = Path(args.out)
    keep_previous(out)
    data = out / "data" / "arith.jsonl"
    seed = ["--seed", str(args.seed)]
    eval_flags = [*EVAL_FLAGS, "--num", str(args.num_test)]
    timings = {}
    timings["data"] = step(
        "make the data (train and held-out test split)",
        ["data", "arith", "--num", "2000", "--num_test", str(args.num_test), *seed, "--out", str(data)],
    )
    timings["eval base"] = step(
        "evaluate the base model on the held-out split",
        [
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--data_file",
            str(data),
            *eval_flags,
            "--out",
            str(out / "eval-base"),
        ],
    )
    train_flags = ["--output_dir", str(out / "run"), "--data_file", str(data), *seed]
    if args.max_steps:
        train_flags += ["--max_steps", str(args.max_steps)]
    timings["train"] = step("train with GRPO (default recipe: configs/default.yaml)", ["train", *train_flags])
    timings["eval trained"] = step(
        "evaluate the trained adapter and compare with the base model",
        [
            "eval",
            "--adapter",
            str(out / "run"),
            "--data_file",
            str(data),
            *eval_flags,
            "--out",
            str(out / "eval-trained"),
            "--compare",
            str(out / "eval-base"),
        ],
    )
    print_verdict(out / "eval-base", out / "eval-trained")
    minutes = {name: f"{seconds / 60:.1f} min" for name, seconds in timings.items()}
    print(f"\ntimings: {minutes}, total {sum(timings.values()) / 60:.1f} min")
    print(f"results in {out}/: run/reward_curve.png, eval-trained/comparison.png, eval-trained/comparison.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
