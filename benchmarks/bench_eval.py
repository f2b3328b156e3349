"""Batched eval generation vs. one prompt at a time, on the embedded SmolLM2-135M and arith test items.

Both modes run greedy with the same max_new_tokens on the same items, in one process, alternating
(batched, one-at-a-time, batched, ...) so that load from other processes falls on both alike. Prints
items/s of each mode (the best round, the least disturbed), how often the two modes produce the same
completion, and as its last line their ratio. Batched is what ``grpolab eval`` runs
(``batching.generate_stream``: continuous batching with a shared-prefix cache, see that module);
one-at-a-time calls ``generate()`` with one unpadded prompt (``generation.generate_batch`` with a single
chat).

    python benchmarks/bench_eval.py --num 32 --max_new_tokens 64 --rounds 2 --threads 1
    python benchmarks/bench_eval.py --num 128 --batch_size 64 32 128 --threads 2   # several batch sizes
"""

from __future__ import annotations

import argparse
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num", type=int, default=32, help="arith test items")
    parser.add_argument("--batch_size", type=int, nargs="+", default=[128],
                        help="sequences decoded at once; several values are timed side by side, the first "
                        "one (grpolab eval's default on the CPU is 128) gives the last line")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each mode, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args()


def batched(model, tokenizer, prompts, settings, batch_size) -> list[str]:
    from grpolab.generation.continuous_batching import generate_stream

    texts: list[str] = [""] * len(prompts)
    for position, (text,), _ in generate_stream(model, tokenizer, prompts, settings, 1, batch_size):
        texts[position] = text
    return texts


def one_at_a_time(model, tokenizer, prompts, settings) -> list[str]:
    from grpolab.generation.hf import generate_batch

    return [generate_batch(model, tokenizer, [prompt], settings)[0][0] for prompt in prompts]


def timed(function, *args) -> tuple[float, list[str]]:
    start = time.perf_counter()
    texts = function(*args)
    return time.perf_counter() - start, texts


def main() -> None:
    args = parse_args()
    import torch

    from grpolab.generation.settings import GenerationSettings
    from grpolab.models import load_for_inference
    from grpolab.tasks import get_task

    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_for_inference(args.model)
    prompts = list(get_task("arith").load("test", num=args.num)["prompt"])
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    batched(model, tokenizer, prompts[:2], settings, 2)  # warm-up: first-call allocations
    modes = [f"batched {size}" for size in args.batch_size] + ["one-at-a-time"]
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    outputs: dict[str, list[str]] = {}
    for round_number in range(args.rounds):
        for mode in modes if round_number % 2 == 0 else modes[::-1]:
            if mode.startswith("batched"):
                size = int(mode.split()[1])
                elapsed, outputs[mode] = timed(batched, model, tokenizer, prompts, settings, size)
            else:
                elapsed, outputs[mode] = timed(one_at_a_time, model, tokenizer, prompts, settings)
            seconds[mode].append(elapsed)
            print(
                f"round {round_number + 1} {mode:<14} {len(prompts) / elapsed:7.2f} items/s ({elapsed:.1f} s)"
            )
    report(args, prompts, seconds, outputs)


def report(args, prompts, seconds, outputs) -> None:
    rate = {mode: len(prompts) / min(times) for mode, times in seconds.items()}
    print(
        f"\n{len(prompts)} arith test items, greedy, max_new_tokens {args.max_new_tokens}, "
        f"{args.threads} thread(s), best of {args.rounds} rounds"
    )
    single = rate["one-at-a-time"]
    for mode, value in rate.items():
        line = f"{mode:<14} {value:7.2f} items/s"
        if mode != "one-at-a-time":
            same = sum(a == b for a, b in zip(outputs[mode], outputs["one-at-a-time"], strict=True))
            line += f"  {value / single:5.2f}x, same output {same}/{len(prompts)}"
        print(line)
    first = f"batched {args.batch_size[0]}"
    print(f"batched eval speed-up vs one at a time: {rate[first] / single:.2f}x")


if __name__ == "__main__":
    main()
