"""grpolab model: convert the embedded default once, or check that a model loads and answers."""

from __future__ import annotations

import argparse

from grpolab.placement import DEVICES

EXAMPLE = """examples:
  grpolab model prepare                       # convert the embedded SmolLM2-135M-Instruct (once)
  grpolab model prepare --force               # convert again, e.g. after a damaged cache
  grpolab model check                         # load it and ask an easy question
  grpolab model check --model Qwen/Qwen2.5-0.5B-Instruct"""

CHECK_PROMPT = "What is the capital of France?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("prepare", "check", "path"), help="what to do")
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="embedded name, local directory or hub id"
    )
    parser.add_argument("--force", action="store_true", help="prepare: convert again even if cached")
    parser.add_argument(
        "--dtype", default="auto", help="check: weights dtype: auto, float32, bfloat16, float16"
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="check: where to load the model (default: auto, the GPU when there is one)",
    )


def run(args: argparse.Namespace) -> int:
    from grpolab import models

    if args.action == "prepare":
        spec = models.EMBEDDED.get(args.model.lower())
        if spec is None:
            print(f"{args.model} is not an embedded model; nothing to prepare ({models.resolve(args.model)})")
            return 0
        print(models.convert_embedded(spec, force=args.force))
        return 0
    if args.action == "path":
        print(models.resolve(args.model))
        return 0
    return _check(args.model, args.dtype, args.device)


def _check(model_name: str, dtype: str = "auto", device: str = "auto") -> int:
    import time

    from grpolab import models, placement
    from grpolab.generation import hf

    start = time.perf_counter()
    place = placement.decide(placement.detect(), "inference", dtype, device=device)
    model, tokenizer, _ = models.load_for_inference(model_name, place=place)
    loaded = time.perf_counter() - start
    chat = [{"role": "user", "content": CHECK_PROMPT}]
    reply = hf.generate_batch(model, tokenizer, [chat], hf.GenerationSettings(max_new_tokens=24))[0][0]
    print(
        f"model:  {model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
        f"loaded in {loaded:.1f} s on {place.describe()})\nprompt: {CHECK_PROMPT}\nreply:  {reply.strip()}"
    )
    return 0
