"""Seconds per SFT step: stock TRL's SFTTrainer against ``grpolab sft``'s path, alternating, same workload.

"stock" is TRL's ``SFTTrainer`` as a plain script writes it: TRL's defaults, given only what defines the
workload, the same as grpolab's Sudoku warm-up recipe (configs/sft-sudoku-smollm2.yaml): the embedded
SmolLM2-135M-Instruct in fp32, LoRA r16/alpha 32 on all linear layers, the same Sudoku reference replies
(prompt-completion rows, so TRL's loss is on the reply only), 8 sequences per step, max_length 256, lr
5e-4 constant, the same torch threads (and on the CPU ``bf16=False, use_cpu=True``, TRL's own error
otherwise). "grpolab" is ``grpolab.training.sft.build_trainer`` on that recipe, plus any flags given after the
name, e.g. ``"grpolab --logprobs fused"``.

Each run of a variant is a fresh process (its peak RSS is its own) that trains 1 warm-up step, not
counted, then ``--steps`` timed steps. Variants alternate within each round, the order reversed every
other round, so that load from other processes falls on all alike; figures are medians over rounds. The
split of a step: forward (``compute_loss``), backward, optimiser step, other (data, logging).

    python benchmarks/bench_sft_step.py --quick          # 3 rounds x 1 timed step
    python benchmarks/bench_sft_step.py --variants grpolab "grpolab --padding_free true"

The last line compares the second variant with the first: ``sft step speed-up vs stock TRL: N.NNx`` when
they are stock and grpolab (the default), else ``speed-up of <second> vs <first>: N.NNx``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from collections import defaultdict

import alternating

PARTS = ("forward", "backward", "optimiser", "other")
DEFAULT_VARIANTS = ("stock", "grpolab")
RECIPE = "sft-sudoku-smollm2"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help="'stock', or 'grpolab' followed by grpolab sft flags (one quoted string each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run, after the warm-up steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (caches, allocators)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, all variants")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 timed step")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 3, 1
    return args


# ---------------------------------------------------------------- worker: one variant, one process


def recipe_args(output_dir: str, max_steps: int, threads: int, flags: list[str]):
    from trl import SFTConfig

    from grpolab.training import recipes

    argv = ["--config", RECIPE, "--output_dir", output_dir, "--max_steps", str(max_steps),
            "--save_steps", "100000", "--torch_threads", str(threads), "--plot", "false",
            "--report_to", "none", "--logging_steps", "1", *flags]
    return recipes.parse_train_args(argv, SFTConfig, RECIPE, "sft")


def stock_trainer(output_dir: str, max_steps: int, threads: int):
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from grpolab import models
    from grpolab.training.sft import reference_dataset

    train_args, _, _ = recipe_args(output_dir, max_steps, threads, [])
    dataset = reference_dataset(train_args, seed=0)  # the same rows: the recipe's Sudoku replies
    config = SFTConfig(
        output_dir=output_dir, per_device_train_batch_size=8, max_length=256, learning_rate=5e-4,
        lr_scheduler_type="constant", max_steps=max_steps, seed=0, report_to="none", save_strategy="no",
        logging_steps=1, bf16=False, use_cpu=True, model_init_kwargs={"dtype": "float32"},
    )
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return SFTTrainer(model=models.resolve(models.DEFAULT_MODEL), args=config, train_dataset=dataset,
                      peft_config=lora)


def grpolab_trainer(output_dir: str, max_steps: int, threads: int, flags: list[str]):
    from grpolab.training.sft import build_trainer

    return build_trainer(*recipe_args(output_dir, max_steps, threads, flags))


class StepTimer:
    """Per-step seconds of each part and the tokens trained on (TRL's ``num_tokens``: non-padding)."""

    def __init__(self, trainer) -> None:
        from transformers import TrainerCallback

        self.totals: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self.tokens: list[float] = []
        self._wrap(trainer, "compute_loss", "forward")
        self._wrap(trainer.accelerator, "backward", "backward")
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._begin = (time.perf_counter(), dict(timer.totals))

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                timer._optimiser_start = time.perf_counter()

            def on_optimizer_step(self, args, state, control, **kwargs):
                timer.totals["optimiser"] += time.perf_counter() - timer._optimiser_start

            def on_step_end(self, args, state, control, **kwargs):
                timer._end_step()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "num_tokens" in logs:
                    timer.tokens.append(logs["num_tokens"])

        trainer.add_callback(Callback())

    def _wrap(self, owner, name: str, key: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.totals[key] += time.perf_counter() - start

        setattr(owner, name, timed)

    def _end_step(self) -> None:
        start, totals = self._begin
        step = {"seconds": time.perf_counter() - start}
        for part in PARTS[:-1]:
            step[part] = self.totals[part] - totals.get(part, 0.0)
        step["other"] = step["seconds"] - sum(step[part] for part in PARTS[:-1])
        self.steps.append(step)


def run_worker(variant: str, steps: int, warmup: int, threads: int) -> dict:
    import resource

    import torch

    torch.set_num_threads(threads)
    name, *flags = shlex.split(variant)
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as output_dir:
        if name == "stock":
            trainer = stock_trainer(output_dir, warmup + steps, threads)
        else:
            trainer = grpolab_trainer(output_dir, warmup + steps, threads, flags)
        timer = StepTimer(trainer)
        trainer.train()
    timed = timer.steps[warmup:]
    result = {key: sum(step[key] for step in timed) / len(timed) for key in timed[0]}
    result["tokens_per_step"] = (timer.tokens[-1] - (timer.tokens[warmup - 1] if warmup else 0)) / len(timed)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    result["trainer"] = type(trainer).__name__
    return result


# ---------------------------------------------------------------- driver: alternate variants, report


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.steps, args.warmup, args.threads)))
        return
    worker_flags = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    header = f"{args.steps} timed steps + {args.warmup} warm-up"
    rounds = alternating.run_rounds(args, __file__, worker_flags, PARTS, header)
    alternating.report(args.variants, rounds, PARTS,
                       "tokens_per_step", "sft step speed-up vs stock TRL", DEFAULT_VARIANTS)


if __name__ == "__main__":
    main()
