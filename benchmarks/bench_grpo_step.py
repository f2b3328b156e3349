"""Seconds per GRPO step: stock TRL against grpolab's default recipe, alternating, on the same workload.

"stock" is TRL's ``GRPOTrainer`` as a reference project writes it: TRL's defaults, given only what
defines the workload, the same as grpolab's default recipe (configs/default.yaml): the embedded
SmolLM2-135M-Instruct in fp32, LoRA r16/alpha 32 on all linear layers, arith add-20 train rows, 8
completions per prompt, 16 per step, at most 20 new tokens, lr 5e-4, the task's rewards, the same
torch threads. (On the CPU it must also say ``bf16=False, use_cpu=True``; that is TRL's own error
otherwise.) "grpolab" is ``grpolab.training.grpo.build_trainer`` on the default recipe, plus any flags given
after the name, e.g. ``"grpolab --logprobs fused"``.

Each run of a variant is a fresh process (so its peak RSS is its own) that trains 1 warm-up step, not
counted, then ``--steps`` timed steps. Variants alternate within each round, the order reversed every
other round, so that load from other processes falls on all alike; reported figures are medians over
rounds, with the spread (min-max). The split of a step: generation (``model.generate``), scoring (rewards,
advantages and any no-grad log-prob pass), forward (``compute_loss``), backward, optimiser step, other.

    python benchmarks/bench_grpo_step.py --quick          # 3 rounds x 2 steps, under 5 minutes quiet
    python benchmarks/bench_grpo_step.py --rounds 4 --steps 4
    python benchmarks/bench_grpo_step.py --variants grpolab "grpolab --num_iterations 2"
    python benchmarks/bench_grpo_step.py --variants "stock-tools outputs/demo-tools/sft" \
        "grpolab --config calc-smollm2-cpu --init_adapter outputs/demo-tools/sft"   # the tool row (issue 28)

``stock-tools [ADAPTER]`` is stock TRL on the calc tool task as configs/calc-smollm2-cpu.yaml defines it:
``tools=[calculator]``, TRL's ChatML tool template, at most 2 tool iterations, 96 completion tokens, lr 2e-4;
with ADAPTER (a warm-up, e.g. ``make demo-tools``' sft/) it continues that LoRA adapter, so that completions
are multi-turn (the base model never calls the tool), else it starts a fresh one.

The last line compares the second variant with the first: ``grpo step speed-up vs stock TRL: N.NNx``
when they are stock and grpolab (the default), else ``speed-up of <second> vs <first>: N.NNx``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from collections import defaultdict

import alternating

PARTS = ("generation", "scoring", "forward", "backward", "optimiser", "other")
DEFAULT_VARIANTS = ("stock", "grpolab")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help="'stock', or 'grpolab' followed by grpolab train flags (one quoted string each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run, after 1 warm-up step")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, both variants")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 timed steps")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 3, 2
    return args


# ---------------------------------------------------------------- worker: one variant, one process


def stock_trainer(output_dir: str, max_steps: int, threads: int):
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from grpolab import models
    from grpolab.tasks import get_task

    task = get_task("arith")
    dataset = task.load("train", num=2000, seed=0, levels="add-20")
    config = GRPOConfig(
        output_dir=output_dir, num_generations=8, per_device_train_batch_size=16, max_completion_length=20,
        learning_rate=5e-4, max_steps=max_steps, seed=0, report_to="none", save_strategy="no",
        bf16=False, use_cpu=True, model_init_kwargs={"dtype": "float32"},
    )
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return GRPOTrainer(model=models.resolve(models.DEFAULT_MODEL), args=config, train_dataset=dataset,
                       reward_funcs=[task.rewards[name] for name in task.default_rewards], peft_config=lora)


def stock_tools_trainer(output_dir: str, max_steps: int, threads: int, adapter: str | None = None):
    """Stock TRL on the calc tool task, as a reference project would write it with TRL's tools=."""
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from grpolab import models
    from grpolab.tasks import get_task
    from grpolab.tools import prepare_tokenizer

    task = get_task("calc")
    dataset = task.load("train", num=2000, seed=0, levels="mul-3,sumprod")
    source = models.resolve(models.DEFAULT_MODEL)
    tokenizer = prepare_tokenizer(models.load_tokenizer(source), "chatml-tools")
    config = GRPOConfig(
        output_dir=output_dir, num_generations=8, per_device_train_batch_size=16, max_completion_length=96,
        learning_rate=2e-4, max_steps=max_steps, seed=0, report_to="none", save_strategy="no",
        bf16=False, use_cpu=True, model_init_kwargs={"dtype": "float32"}, max_tool_calling_iterations=2,
    )
    model, lora = source, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    if adapter:
        base = AutoModelForCausalLM.from_pretrained(source, dtype="float32")
        model, lora = PeftModel.from_pretrained(base, adapter, is_trainable=True), None
    return GRPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                       reward_funcs=[task.rewards[name] for name in task.default_rewards], peft_config=lora,
                       tools=list(task.tools))


def grpolab_trainer(output_dir: str, max_steps: int, threads: int, flags: list[str]):
    from grpolab.training import recipes
    from grpolab.training.grpo import build_trainer

    argv = ["--output_dir", output_dir, "--max_steps", str(max_steps), "--save_steps", "100000",
            "--torch_threads", str(threads), "--plot", "false", *flags]
    return build_trainer(*recipes.parse_train_args(argv))


class StepTimer:
    """Per-step seconds of each part, from wrapped trainer methods and step/optimiser callbacks."""

    def __init__(self, trainer) -> None:
        from transformers import TrainerCallback

        self.totals: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self.completion_tokens = 0
        self._wrap(trainer, "_generate_single_turn", "generation")
        self._wrap(trainer, "_generate_and_score_completions", "generate_and_score", count_tokens=True)
        self._wrap(trainer, "compute_loss", "forward")
        self._wrap(trainer.accelerator, "backward", "backward")
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._begin = (time.perf_counter(), dict(timer.totals), timer.completion_tokens)

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                timer._optimiser_start = time.perf_counter()

            def on_optimizer_step(self, args, state, control, **kwargs):
                timer.totals["optimiser"] += time.perf_counter() - timer._optimiser_start

            def on_step_end(self, args, state, control, **kwargs):
                timer._end_step()

        trainer.add_callback(Callback())

    def _wrap(self, owner, name: str, key: str, count_tokens: bool = False) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = original(*args, **kwargs)
            finally:
                self.totals[key] += time.perf_counter() - start
            if count_tokens:
                self.completion_tokens += int(result["completion_mask"].sum())
            return result

        setattr(owner, name, timed)

    def _end_step(self) -> None:
        start, totals, tokens = self._begin
        delta = {key: self.totals[key] - totals.get(key, 0.0) for key in self.totals}
        step = {"seconds": time.perf_counter() - start, "completion_tokens": self.completion_tokens - tokens}
        step["generation"] = delta.get("generation", 0.0)
        step["scoring"] = delta.get("generate_and_score", 0.0) - step["generation"]
        for part in ("forward", "backward", "optimiser"):
            step[part] = delta.get(part, 0.0)
        step["other"] = step["seconds"] - sum(step[part] for part in PARTS[:-1])
        self.steps.append(step)


def run_worker(variant: str, steps: int, threads: int) -> dict:
    import resource

    import torch

    torch.set_num_threads(threads)
    name, *flags = shlex.split(variant)
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as output_dir:
        if name == "stock":
            trainer = stock_trainer(output_dir, 1 + steps, threads)
        elif name == "stock-tools":
            trainer = stock_tools_trainer(output_dir, 1 + steps, threads, *flags[:1])
        else:
            trainer = grpolab_trainer(output_dir, 1 + steps, threads, flags)
        timer = StepTimer(trainer)
        trainer.train()
    timed = timer.steps[1:]  # the first step warms caches and allocators
    result = {key: sum(step[key] for step in timed) / len(timed) for key in timed[0]}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    result["trainer"] = type(trainer).__name__
    return result


# ---------------------------------------------------------------- driver: alternate variants, report


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.steps, args.threads)))
        return
    worker_flags = ["--steps", str(args.steps), "--threads", str(args.threads)]
    header = f"{args.steps} timed steps + 1 warm-up"
    rounds = alternating.run_rounds(args, __file__, worker_flags, PARTS, header)
    alternating.report(args.variants, rounds, PARTS,
                       "completion_tokens", "grpo step speed-up vs stock TRL", DEFAULT_VARIANTS)


if __name__ == "__main__":
    main()
