"""``grpolab merge``: fold a LoRA adapter into its base model, verify the logits, save a plain checkpoint."""

from __future__ import annotations

import argparse
import sys

from grpolab.placement import DEVICES

EXAMPLE = """examples:
  grpolab merge --adapter outputs/arith --out merged/arith
  grpolab merge --adapter outputs/sudoku --out merged/sudoku --dtype bfloat16 --force
  grpolab merge --adapter outputs/qwen --out merged/qwen --device cpu   # GPU too small: merge in RAM
  grpolab chat --model merged/arith --task arith      # the merged model loads without PEFT

exit status: 0 when the saved model's logits match base + adapter within --atol, 1 when they do not
(nothing is written then), 2 for a usage error."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", required=True, help="training run directory holding the LoRA adapter")
    parser.add_argument("--model", help="base model (default: the one the adapter was trained on)")
    parser.add_argument("--out", required=True, help="directory for the merged model")
    parser.add_argument("--force", action="store_true", help="replace --out if it is not empty")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="dtype of the merge and the saved weights (default: auto, the base checkpoint's own)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where to merge (default: auto, the GPU when there is one)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        help="largest allowed |logit difference| "
        "(default: 1e-3 for float32, 2.0 for bfloat16, 0.5 for float16)",
    )


def run(args: argparse.Namespace) -> int:
    from grpolab.merge import merge

    report = merge(
        args.adapter,
        args.out,
        model=args.model,
        force=args.force,
        atol=args.atol,
        dtype=args.dtype,
        device=args.device,
    )
    summary = (
        f"max |logit difference| vs base + adapter: {report.max_abs_diff:.3g} "
        f"(atol {report.atol:g}, {report.dtype})"
    )
    print(
        f"the adapter changes the base model's logits by up to {report.adapter_effect:.3g}"
        + (" (it changes nothing: is it trained?)" if report.adapter_effect == 0 else "")
    )
    if not report.ok:
        print(
            f"grpolab merge: error: {summary}: the merged model does not match, nothing was written to "
            f"{report.out}",
            file=sys.stderr,
        )
        return 1
    print(summary)
    print(f"merged model saved to {report.out}; try: grpolab chat --model {report.out}")
    return 0
