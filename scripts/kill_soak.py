"""kill -9 at random moments, then run again: does every command recover?

For each scenario the script runs the command once to time it, then ``--runs`` times: start it, SIGKILL
it at a uniformly random moment of that duration (so kills land in start-up, model loading, training,
checkpoint writes and final saves alike), run the recovery command, and check the result:

* train / sft: ``--resume`` (or a fresh start when no checkpoint was complete) reaches ``max_steps``, the
  last checkpoint is complete and the adapter loads; nothing of an earlier run is lost.
* eval: ``--resume`` finishes with every item scored exactly once.
* merge: running the same command again gives a merged model that loads (a kill never leaves ``--out``
  half-written, and no staging folder is silently reused).
* model: ``grpolab model prepare`` (the GGUF -> safetensors conversion of the embedded model, into a
  temporary ``GRPOLAB_HOME``; every other run is ``--force`` over a finished cache), then ``grpolab model
  prepare`` again: the cache holds the same files, byte for byte, as an unbroken conversion, and no
  staging folder is left.

Every other train run is killed during a checkpoint write instead of at a random moment: the script polls
the run folder and kills as soon as a ``checkpoint-N`` folder exists without its ``trainer_state.json``
(written last). Everything but ``model`` runs on a tiny random model (two layers of width 16) with the
embedded model's tokenizer.

    python scripts/kill_soak.py [--runs 10] [--scenarios train,sft,eval,merge,model] [--seed 0]

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


def file_digests(directory: Path) -> dict[str, str]:
    import hashlib

    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def finished_model(home: Path, reference: dict[str, str]) -> str | None:
    """Why a prepared model cache differs from an unbroken conversion (``reference``), or None."""
    from grpolab import models

    target = home / "models" / models.DEFAULT_MODEL
    if not target.is_dir():
        return "no model cache"
    digests = file_digests(target)
    if digests != reference:
        names = set(digests) | set(reference)
        differ = sorted(name for name in names if digests.get(name) != reference.get(name))
        return f"cache differs from an unbroken conversion in {differ}"
    leftovers = [
        path.name
        for path in target.parent.iterdir()
        if path.name.startswith(f".{target.name}.") and path.name != f".{target.name}.lock"
    ]
    return f"leftover staging folders {leftovers}" if leftovers else None


def checkpoint_being_written(out: Path) -> str | None:
    """The name of a checkpoint folder of ``out`` that is being written (no trainer_state.json yet)."""
    for child in out.glob("checkpoint-*"):
        if not (child / "trainer_state.json").exists():
            return child.name
    return None


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
    prepare: Callable[[Path, int], None] = lambda folder, index: None
    env: Callable[[Path], dict[str, str]] = lambda folder: {}  # extra environment of the run's commands
    # For odd-numbered runs: kill when this returns a description of the moment, instead of at random
    kill_when: Callable[[Path], str | None] | None = None


def model_scenario(root: Path) -> Scenario:
    """Model preparation into the run folder's own GRPOLAB_HOME; odd runs ``--force`` over a whole cache."""
    reference_home = root / "model-timing" / "home"

    def prepare(folder: Path, index: int) -> None:
        if index % 2 == 1:  # a finished cache to convert again with --force (hard links: no copy)
            source = reference_home / "models"
            shutil.copytree(
                source, folder / "home" / "models", copy_function=os.link, ignore=shutil.ignore_patterns(".*")
            )

    def run(folder: Path) -> list[str]:
        force = ["--force"] if (folder / "home" / "models").is_dir() else []
        return grpolab("model", "prepare", *force)

    def check(folder: Path) -> str | None:
        from grpolab import models

        reference = file_digests(reference_home / "models" / models.DEFAULT_MODEL)
        return finished_model(folder / "home", reference)

    return Scenario(
        "model",
        run,
        lambda f: grpolab("model", "prepare"),
        check,
        prepare,
        env=lambda folder: {"GRPOLAB_HOME": str(folder / "home")},
    )


def scenarios(model: Path, adapter: Path, root: Path) -> dict[str, Scenario]:
    def again(command: str, flags: Callable[[Path, Path], list[str]]) -> Callable[[Path], list[str]]:
        """The same command, with --resume when the folder holds a run (as the refusal to start says)."""

        def command_line(folder: Path) -> list[str]:
            from grpolab.training import checkpoints

            resume = ["--resume"] if checkpoints.holds_run(folder / "run") else []
            return grpolab(command, *flags(model, folder / "run"), *resume)

        return command_line

    train_again, sft_again = again("train", train_flags), again("sft", sft_flags)

    evaluation = [
        "eval",
        "--adapter",
        str(adapter),
        "--task",
        "arith",
        "--num",
        "24",
        "--batch_size",
        "4",
        "--max_new_tokens",
        "8",
        "--no_progress",
    ]
    return {
        "train": Scenario(
            "train",
            lambda f: grpolab("train", *train_flags(model, f / "run")),
            train_again,
            lambda f: finished_training(f / "run"),
            kill_when=lambda f: checkpoint_being_written(f / "run"),
        ),
        "sft": Scenario(
            "sft",
            lambda f: grpolab("sft", *sft_flags(model, f / "run")),
            sft_again,
            lambda f: finished_training(f / "run"),
        ),
        "eval": Scenario(
            "eval",
            lambda f: grpolab(*evaluation, "--out", str(f / "eval")),
            lambda f: grpolab(*evaluation, "--out", str(f / "eval"), "--resume"),
            lambda f: finished_eval(f / "eval", 24),
        ),
        "merge": Scenario(
            "merge",
            lambda f: grpolab("merge", "--adapter", str(adapter), "--out", str(f / "m")),
            lambda f: grpolab("merge", "--adapter", str(adapter), "--out", str(f / "m"), "--force"),
            lambda f: finished_merge(f / "m"),
        ),
        "model": model_scenario(root),
    }


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"kill_soak: {' '.join(command[2:])} failed unbroken:\n{result.stderr[-2000:]}")
    return time.monotonic() - start


def kill_at_random(process: subprocess.Popen, duration: float, rng: random.Random) -> str | None:
    """SIGKILL ``process`` at a uniformly random moment of ``duration``; where it landed, or None."""
    delay = rng.uniform(0.5, duration)
    try:
        process.wait(delay)
        return None
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return f"at {delay:.1f} s"


def kill_at_moment(process: subprocess.Popen, moment: Callable[[], str | None]) -> str | None:
    """SIGKILL ``process`` as soon as ``moment()`` names one (polled every millisecond); where, or None."""
    while process.poll() is None:
        landed = moment()
        if landed:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return f"during the write of {landed}"
        time.sleep(0.001)
    return None


def soak_once(
    scenario: Scenario, folder: Path, index: int, duration: float, rng: random.Random, env: dict
) -> tuple[str, str | None]:
    """Kill one run, recover, and say where the kill landed and what is wrong (None when it recovered)."""
    scenario.prepare(folder, index)
    env = {**env, **scenario.env(folder)}
    for _attempt in range(5):  # a run can end before the moment it is to be killed in comes
        start = time.monotonic()
        process = subprocess.Popen(
            scenario.run(folder), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if scenario.kill_when and index % 2 == 1:
            landed = kill_at_moment(process, lambda: scenario.kill_when(folder))
        else:
            landed = kill_at_random(process, duration, rng)
        if landed:
            break
        # the timing run was slower (a busier machine): draw the next moment within this run's length
        duration = min(duration, time.monotonic() - start)
        shutil.rmtree(folder)
        folder.mkdir()
        scenario.prepare(folder, index)
    else:
        return "never killed", "the run always finished before the kill"
    result = subprocess.run(scenario.again(folder), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return landed, f"recovery exited {result.returncode}: {lines[-1] if lines else ''}"
    return landed, scenario.check(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="kills per scenario")
    parser.add_argument("--scenarios", default="train,sft,eval,merge,model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    root = Path(tempfile.mkdtemp(prefix="grpolab-soak-"))
    model = tiny_model(root / "tiny-model")
    timed(grpolab("train", *train_flags(model, root / "adapter")), env)
    recovered = total = 0
    per_command = []
    for name in args.scenarios.split(","):
        scenario = scenarios(model, root / "adapter", root)[name]
        timing = root / f"{name}-timing"
        timing.mkdir()
        duration = timed(scenario.run(timing), {**env, **scenario.env(timing)})
        scenario_recovered = 0
        for index in range(args.runs):
            folder = root / f"{name}-{index}"
            folder.mkdir()
            landed, problem = soak_once(scenario, folder, index, duration, rng, env)
            total, recovered = total + 1, recovered + (problem is None)
            verdict = "recovered" if problem is None else "FAILED: " + problem
            print(f"{name} {index + 1}/{args.runs}: killed {landed}; {verdict}", flush=True)
            if problem is None:
                shutil.rmtree(folder, ignore_errors=True)
            scenario_recovered += problem is None
        per_command.append(f"{name} {scenario_recovered}/{args.runs}")
    print(", ".join(per_command))
    print(f"{recovered}/{total} runs recovered")
    if recovered == total:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"failed runs kept in {root}")
    return 0 if recovered == total else 1


if __name__ == "__main__":
    sys.exit(main())
