"""kill -9 at random moments, then run again: does every command recover?

For each scenario the script runs the command once to time it, then ``--runs`` times: start it, SIGKILL
it at a uniformly random moment of that duration (so kills land in start-up, model loading, training,
checkpoint writes and final saves alike), run the recovery command, and check the result:

* train / sft: ``--resume`` (or a fresh start when no checkpoint was complete) reaches ``max_steps``, the
  last checkpoint is complete and the adapter loads; nothing of an earlier run is lost.
* eval: ``--resume`` finishes with every item scored exactly once.
* merge: running the same command again gives a merged model that loads (a kill never leaves ``--out``
  half-written, and no staging folder is silently reused).

Everything runs on a tiny random model (two layers of width 16) with the embedded model's tokenizer.

    python scripts/kill_soak.py [--runs 10] [--scenarios train,sft,eval,merge] [--seed 0]

It prints one line per run and ``N/N runs recovered`` at the end; the exit code is 1 if any run did not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STEPS = 4


def tiny_model(directory: Path) -> Path:
    """A 2-layer random Llama with the embedded model's tokenizer (as tests/conftest.py builds it)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from grpolab import models

    tokenizer = models.load_tokenizer(models.resolve(models.DEFAULT_MODEL))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def train_flags(model: Path, out: Path) -> list[str]:
    return ["--model_name_or_path", str(model), "--output_dir", str(out), "--max_steps", str(STEPS),
            "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "8",
            "--num_train", "32", "--save_steps", "1", "--logging_steps", "1", "--torch_threads", "1",
            "--plot", "false", "--save_total_limit", "2"]


def sft_flags(model: Path, out: Path) -> list[str]:
    return ["--task", "arith", "--task_options", "{}", "--model_name_or_path", str(model), "--output_dir",
            str(out), "--max_steps", str(STEPS), "--per_device_train_batch_size", "4", "--num_train", "32",
            "--save_steps", "1", "--logging_steps", "1", "--torch_threads", "1", "--save_total_limit", "2"]


def grpolab(*args: str) -> list[str]:
    return [sys.executable, "-m", "grpolab", *args]


def finished_training(out: Path) -> str | None:
    """Why a train/sft run directory is not a finished run of STEPS steps, or None when it is."""
    from grpolab.training import checkpoints

    last = checkpoints.latest_complete(out)
    if last is None or json.loads((last / "trainer_state.json").read_text())["global_step"] != STEPS:
        return f"last complete checkpoint is {last}"
    if not (out / "adapter_model.safetensors").is_file():
        return "no final adapter"
    from safetensors.torch import load_file

    load_file(str(out / "adapter_model.safetensors"))
    return None


def finished_eval(out: Path, items: int) -> str | None:
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    indices = sorted(row["index"] for row in samples)
    if indices != list(range(items)):
        return f"items scored {indices}, expected each of 0..{items - 1} once"
    return None if (out / "metrics.json").is_file() else "no metrics.json"


def finished_merge(out: Path) -> str | None:
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    leftovers = [path.name for path in out.parent.iterdir() if path.name.startswith(f".{out.name}")]
    return f"leftover staging folders {leftovers}" if leftovers else None


@dataclass
class Scenario:
    name: str
    run: Callable[[Path], list[str]]  # the command, given the run's folder
    again: Callable[[Path], list[str]]  # the recovery command
    check: Callable[[Path], str | None]  # why the recovered result is wrong, or None
    prepare: Callable[[Path], None] = lambda folder: None


def scenarios(model: Path, adapter: Path) -> dict[str, Scenario]:
    def again(command: str, flags: Callable[[Path, Path], list[str]]) -> Callable[[Path], list[str]]:
        """The same command, with --resume when the folder holds a run (as the refusal to start says)."""

        def command_line(folder: Path) -> list[str]:
            from grpolab.training import checkpoints

            resume = ["--resume"] if checkpoints.holds_run(folder / "run") else []
            return grpolab(command, *flags(model, folder / "run"), *resume)

        return command_line

    train_again, sft_again = again("train", train_flags), again("sft", sft_flags)

    evaluation = ["eval", "--adapter", str(adapter), "--task", "arith", "--num", "24", "--batch_size", "4",
                  "--max_new_tokens", "8", "--no_progress"]
    return {
        "train": Scenario("train", lambda f: grpolab("train", *train_flags(model, f / "run")), train_again,
                          lambda f: finished_training(f / "run")),
        "sft": Scenario("sft", lambda f: grpolab("sft", *sft_flags(model, f / "run")), sft_again,
                        lambda f: finished_training(f / "run")),
        "eval": Scenario("eval", lambda f: grpolab(*evaluation, "--out", str(f / "eval")),
                         lambda f: grpolab(*evaluation, "--out", str(f / "eval"), "--resume"),
                         lambda f: finished_eval(f / "eval", 24)),
        "merge": Scenario("merge", lambda f: grpolab("merge", "--adapter", str(adapter), "--out", str(f / "m")),
                          lambda f: grpolab("merge", "--adapter", str(adapter), "--out", str(f / "m"), "--force"),
                          lambda f: finished_merge(f / "m")),
    }


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"kill_soak: {' '.join(command[2:])} failed unbroken:\n{result.stderr[-2000:]}")
    return time.monotonic() - start


def soak_once(scenario: Scenario, folder: Path, duration: float, rng: random.Random, env: dict) -> str | None:
    """Kill one run at a random moment, recover, and say what is wrong (None when it recovered)."""
    process = subprocess.Popen(scenario.run(folder), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delay = rng.uniform(0.5, duration)
    try:
        process.wait(delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    result = subprocess.run(scenario.again(folder), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return f"killed at {delay:.1f} s; recovery exited {result.returncode}: {lines[-1] if lines else ''}"
    problem = scenario.check(folder)
    return f"killed at {delay:.1f} s; {problem}" if problem else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="kills per scenario")
    parser.add_argument("--scenarios", default="train,sft,eval,merge")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    root = Path(tempfile.mkdtemp(prefix="grpolab-soak-"))
    model = tiny_model(root / "tiny-model")
    timed(grpolab("train", *train_flags(model, root / "adapter")), env)
    recovered = total = 0
    for name in args.scenarios.split(","):
        scenario = scenarios(model, root / "adapter")[name]
        duration = timed(scenario.run(root / f"{name}-timing"), env)
        for index in range(args.runs):
            folder = root / f"{name}-{index}"
            folder.mkdir()
            problem = soak_once(scenario, folder, duration, rng, env)
            total, recovered = total + 1, recovered + (problem is None)
            print(f"{name} {index + 1}/{args.runs}: {'recovered' if problem is None else 'FAILED: ' + problem}",
                  flush=True)
            if problem is None:
                shutil.rmtree(folder, ignore_errors=True)
    print(f"{recovered}/{total} runs recovered")
    if recovered == total:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"failed runs kept in {root}")
    return 0 if recovered == total else 1


if __name__ == "__main__":
    sys.exit(main())
