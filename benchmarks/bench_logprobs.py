"""The GRPO loss's forward + backward alone, per log-prob path, on one fixed batch of the default recipe.

No generation: a synthetic batch shaped like a default-recipe step (2 arith prompts of the embedded chat
template, 8 completions each of up to 20 tokens, some ending early) goes through ``_compute_loss`` and
``backward`` on the embedded SmolLM2-135M with LoRA r16, for each path of ``--logprobs``:

- ``fused``: TRL 1.16's fused LM head (every position scored on the CPU, see grpolab.training.grpo_trainer),
- ``plain``: the completion's logits, log-softmax and gather,
- ``shared``: as plain, with each distinct prompt run once.

The paths alternate within each round; medians and min-max over rounds, and the largest difference of
the loss from the fused path's (they compute the same loss).

    python benchmarks/bench_logprobs.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

PATHS = ("fused", "plain", "shared")


def synthetic_batch(trainer, num_prompts: int = 2, group: int = 8, length: int = 20):
    import torch

    from grpolab.tasks.arith import make_prompt

    tokenizer = trainer.processing_class
    chats = [make_prompt(question) for question in ("12 + 7", "3 + 18")[:num_prompts]]
    texts = [
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for chat in chats
    ]
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    width = max(len(ids) for ids in prompts)
    prompt_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in prompts])
    prompt_mask = (torch.arange(width) >= torch.tensor([[width - len(ids)] for ids in prompts])).long()
    generator = torch.Generator().manual_seed(0)
    rows = group * len(prompts)
    completion_ids = torch.randint(0, 1000, (rows, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=generator)
    completion_mask = (torch.arange(length) < lengths[:, None]).long()
    return {
        "prompt_ids": prompt_ids.repeat_interleave(group, 0),
        "prompt_mask": prompt_mask.repeat_interleave(group, 0),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.randn(rows, generator=generator),
        "num_items_in_batch": completion_mask.sum().float(),
    }


def run_path(trainer, path: str, inputs) -> tuple[float, float, float]:
    """(forward seconds, backward seconds, loss) of one loss computation on ``path``."""
    import functools

    from trl import GRPOTrainer

    if path == "fused":
        trainer._get_per_token_logps_and_entropies = functools.partial(
            GRPOTrainer._get_per_token_logps_and_entropies, trainer
        )
    else:
        trainer.__dict__.pop("_get_per_token_logps_and_entropies", None)
        trainer.logprob_mode = path
    trainer.model.zero_grad()
    start = time.perf_counter()
    loss = trainer._compute_loss(trainer.model, inputs)
    middle = time.perf_counter()
    loss.backward()
    return middle - start, time.perf_counter() - middle, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from grpolab.training import recipes
    from grpolab.training.grpo import build_trainer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(
            *recipes.parse_train_args(["--output_dir", output_dir, "--plot", "false", "--logprobs", "shared"])
        )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = synthetic_batch(trainer)
    run_path(trainer, "fused", inputs)  # warm-up
    times: dict[str, list[tuple[float, float, float]]] = {path: [] for path in PATHS}
    for number in range(args.rounds):
        for path in PATHS if number % 2 == 0 else reversed(PATHS):
            times[path].append(run_path(trainer, path, inputs))
        print(
            f"round {number + 1}: " + ", ".join(f"{p} {sum(times[p][-1][:2]):.2f} s" for p in PATHS),
            flush=True,
        )
    fused = statistics.median(f + b for f, b, _ in times["fused"])
    print(
        f"\n{'path':<8} {'forward':>8} {'backward':>9} {'total':>7} {'min-max':>11} {'vs fused':>9} "
        f"{'loss diff':>10}"
    )
    for path in PATHS:
        runs = times[path]
        totals = [f + b for f, b, _ in runs]
        diff = max(abs(loss - ref) for (_, _, loss), (_, _, ref) in zip(runs, times["fused"], strict=True))
        forward, backward = (statistics.median(run[i] for run in runs) for i in (0, 1))
        spread = f"{min(totals):5.2f}-{max(totals):<5.2f}"
        print(
            f"{path:<8} {forward:8.2f} {backward:9.2f} {statistics.median(totals):7.2f} {spread} "
            f"{fused / statistics.median(totals):8.2f}x {diff:10.1e}"
        )


if __name__ == "__main__":
    main()
