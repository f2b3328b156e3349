"""The GPU checks of ../shared/notes/gpu-first-run-review.md section 6, prepared to run in one go.

    python scripts/gpu_check.py                 # on a CUDA machine (wheels from `make gpu-wheels`)
    python scripts/gpu_check.py --device cpu    # the same checks, tiny, on a CPU (run by the test suite)

Checks: (1) smoke of train / resume / sft / eval / merge / model check on a tiny random Qwen2; (2) the eval
decoder with one layer's cache on another device (CUDA only: layer 1 on the CPU); (3) ZeRO-3 + LoRA in one
process with save/resume (needs deepspeed); (4) QLoRA from a pre-quantized bnb-4bit checkpoint, eval, merge
into its full-precision parent (--model); (5) peak memory of one GRPO step on Qwen3-32B-shaped slices of
2 and 6 layers, extrapolated to 64 (CUDA only). Writes gpu_check.json and gpu_check.md under --out; the
last line printed starts with "gpu check:". A check that cannot run here is "skipped" with the reason,
never "pass".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

FLAGS = ["--task", "arith", "--num_train", "16", "--num_generations", "4",
         "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
         "--max_completion_length", "8", "--report_to", "none",
         "--use_peft", "true", "--lora_target_modules", "all-linear", "--learning_rate", "5e-3",
         "--plot", "false", "--logging_steps", "1"]


class Skipped(Exception):
    pass


def grpolab(*argv: str, env: dict | None = None) -> str:
    """Run one grpolab command; a non-zero exit raises with its last lines."""
    done = subprocess.run([sys.executable, "-m", "grpolab", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"grpolab {argv[0]} exited {done.returncode}: {tail}")
    return done.stdout


def _merge_line(output: str) -> str:
    """merge's verdict: its "max |logit difference| vs base + adapter" line."""
    return next(line for line in output.splitlines() if line.startswith("max |logit difference|"))


def tiny_model(scratch: Path, device: str) -> Path:
    """A 4-layer random Qwen2 with the embedded tokenizer (its chat template), saved in the device's dtype."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from grpolab import models

    directory = scratch / "tiny-qwen2"
    if (directory / "config.json").is_file():
        return directory
    tokenizer = models.load_tokenizer(models.resolve(models.DEFAULT_MODEL))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64 if device == "cpu" else 256,
                         intermediate_size=128 if device == "cpu" else 512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).to(torch.float32 if device == "cpu" else torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def check_smoke(scratch: Path, device: str) -> str:
    model = tiny_model(scratch, device)
    run = scratch / "r1"
    grpolab("train", "--model_name_or_path", str(model), *FLAGS, "--max_steps", "2", "--save_steps", "1",
            "--output_dir", str(run))
    grpolab("train", "--model_name_or_path", str(model), *FLAGS, "--max_steps", "3", "--output_dir", str(run),
            "--resume")
    grpolab("sft", "--model_name_or_path", str(model), "--task", "sudoku", "--max_steps", "2", "--report_to",
            "none", "--plot", "false", "--output_dir", str(scratch / "s1"))
    grpolab("eval", "--adapter", str(run), "--num", "8", "--max_new_tokens", "8")
    merged = grpolab("merge", "--adapter", str(run), "--out", str(scratch / "m1"), "--force")
    grpolab("model", "check", "--model", str(scratch / "m1"))
    return _merge_line(merged)


def check_split_eval(scratch: Path, device: str) -> str:
    if device == "cpu":
        raise Skipped("needs a GPU: layer 1 goes to the CPU, the rest to cuda:0")
    import torch
    from accelerate import dispatch_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpolab.generation.continuous_batching import generate_stream
    from grpolab.generation.settings import GenerationSettings

    path = tiny_model(scratch, device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(path)
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0,
                  "model.layers.1": "cpu", "model.layers.2": 0, "model.layers.3": 0, "model.norm": 0,
                  "lm_head": 0}
    model = dispatch_model(model, device_map=device_map, main_device="cpu")
    model.generation_config.eos_token_id = list(range(0, len(tokenizer), 3))  # rows stop at different steps
    chats = [[{"role": "user", "content": f"{i} + {i}?"}] for i in range(12)]
    settings = GenerationSettings(max_new_tokens=24, temperature=1.0)
    finished = list(generate_stream(model, tokenizer, chats, settings, 1, 8))
    return f"{len(finished)} chats decoded with layer 1's cache on the CPU"


def check_zero3(scratch: Path, device: str) -> str:
    if importlib.util.find_spec("deepspeed") is None:
        raise Skipped("deepspeed is not installed (make gpu-wheels carries its sdist)")
    if device == "cpu":
        raise Skipped("ZeRO-3 is a GPU path here (NCCL)")
    model = tiny_model(scratch, device)
    run = scratch / "z1"
    launch = ["--accelerate_config", "zero3", "--num_processes", "1"]
    grpolab("train", "--model_name_or_path", str(model), *FLAGS, *launch, "--max_steps", "2", "--save_steps",
            "1", "--output_dir", str(run))
    grpolab("train", "--model_name_or_path", str(model), *FLAGS, *launch, "--max_steps", "3", "--output_dir",
            str(run), "--resume")
    from safetensors import safe_open

    with safe_open(str(run / "adapter_model.safetensors"), "pt") as weights:
        empty = [name for name in weights.keys() if 0 in weights.get_slice(name).get_shape()]
    if empty:
        raise RuntimeError(f"{len(empty)} empty LoRA tensors saved under ZeRO-3, e.g. {empty[0]}")
    return "train, resume, non-empty LoRA tensors"


def check_qlora(scratch: Path, device: str) -> str:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise Skipped("bitsandbytes is not installed")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    source = tiny_model(scratch, device)
    prequantized = scratch / "tiny-qwen2-bnb4"
    compute = torch.float32 if device == "cpu" else torch.bfloat16
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute,
                                      bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization,
                                                 device_map={"": 0} if device == "cuda" else None)
    model.save_pretrained(prequantized)
    AutoTokenizer.from_pretrained(source).save_pretrained(prequantized)
    del model
    run = scratch / "q1"
    grpolab("train", "--model_name_or_path", str(prequantized), *FLAGS, "--load_in_4bit", "true",
            "--max_steps", "2", "--output_dir", str(run))
    grpolab("eval", "--adapter", str(run), "--num", "8", "--max_new_tokens", "8")
    merged = grpolab("merge", "--adapter", str(run), "--model", str(source), "--out", str(scratch / "qm1"),
                     "--force")
    return _merge_line(merged)


def check_memory(scratch: Path, device: str) -> str:
    if device == "cpu":
        raise Skipped("measures CUDA peak memory")
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from grpolab.training import recipes
    from grpolab.training.grpo import build_trainer

    peaks = {}
    for layers in (2, 6):
        directory = scratch / f"qwen3-32b-slice-{layers}"
        config = Qwen3Config(vocab_size=151936, hidden_size=5120, intermediate_size=25600,
                             num_attention_heads=64, num_key_value_heads=8, head_dim=128,
                             tie_word_embeddings=False, num_hidden_layers=layers)
        with torch.device("cuda"):
            Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        parsed = recipes.parse_train_args(["--config", "gsm8k-qwen3-32b-unsloth", "--use_unsloth", "false",
                                           "--model_name_or_path", str(directory), "--task", "arith",
                                           "--num_train", "16", "--max_steps", "1", "--report_to", "none",
                                           "--output_dir", str(scratch / f"mem-{layers}")])
        build_trainer(*parsed).train()
        peaks[layers] = torch.cuda.max_memory_allocated()
        torch.cuda.empty_cache()
    per_layer = (peaks[6] - peaks[2]) / 4
    extrapolated = peaks[2] + 62 * per_layer
    return f"peak 2 layers {peaks[2] / 2**30:.1f} GiB, 6 layers {peaks[6] / 2**30:.1f} GiB, 64 layers ~" \
           f"{extrapolated / 2**30:.1f} GiB"


CHECKS = [("1 smoke: train/resume/sft/eval/merge/check", check_smoke),
          ("2 eval decoder across devices", check_split_eval),
          ("3 ZeRO-3 + LoRA save/resume", check_zero3),
          ("4 QLoRA from a pre-quantized checkpoint", check_qlora),
          ("5 24 GB recipe memory on 32B slices", check_memory)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", default="gpu-check", help="directory for scratch models and the report")
    parser.add_argument("--only", nargs="*", type=int, help="check numbers to run (default: all)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    (out / "scratch").mkdir(parents=True, exist_ok=True)
    results = []
    for name, check in CHECKS:
        if args.only and int(name.split()[0]) not in args.only:
            continue
        start = time.monotonic()
        try:
            status, detail = "pass", check(out / "scratch", args.device)
        except Skipped as reason:
            status, detail = "skipped", str(reason)
        except Exception as error:  # a check's failure is its result; the others still run
            status, detail = "fail", f"{type(error).__name__}: {error}"
            traceback.print_exc()
        results.append({"check": name, "status": status, "seconds": round(time.monotonic() - start, 1),
                        "detail": detail})
    (out / "gpu_check.json").write_text(json.dumps({"device": args.device, "results": results}, indent=2))
    table = ["| check | status | seconds | detail |", "|---|---|---|---|"]
    table += [f"| {r['check']} | {r['status']} | {r['seconds']} | {r['detail'].replace('|', '/')} |"
              for r in results]
    (out / "gpu_check.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    counts = {status: sum(r["status"] == status for r in results) for status in ("pass", "skipped", "fail")}
    print(f"gpu check: {counts['pass']} passed, {counts['skipped']} skipped, {counts['fail']} failed "
          f"on {args.device} ({out / 'gpu_check.json'})")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
