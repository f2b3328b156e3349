"""Eval generation: transformers (batched) vs. vLLM offline vs. vLLM's OpenAI server, on the embedded model.

Run in the vLLM environment (``make setup-vllm``):

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/bench_vllm_eval.py --num 64 --rounds 3

The same arith test items, greedy, the same max_new_tokens, in one process, modes alternating round by round
so that load from other jobs falls on all alike. transformers runs ``batching.generate_stream`` (what
``grpolab eval`` runs); vLLM offline one ``LLM.chat`` call on an engine built once (float32, eager, as
``grpolab eval --backend vllm`` on a CPU); the server mode sends every item at once through the ``openai``
backend's client to ``vllm.entrypoints.openai.api_server`` started once on loopback with the same settings.
Start-up is timed apart. Prints items/s per round, the best round per mode, and how many completions of
each vLLM mode equal transformers'.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num", type=int, default=64, help="arith test items")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for transformers")
    return parser.parse_args()


def start_server(model_source: str) -> tuple[subprocess.Popen, str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_source,
               "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--seed", "0"]
    start = time.perf_counter()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    while process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5):
                return process, url, time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the vLLM server exited with {process.returncode}")


def main() -> None:
    args = parse_args()
    import torch
    from vllm import LLM

    from grpolab.generation import openai as openai_backend
    from grpolab.generation import vllm as vllm_backend
    from grpolab.generation.continuous_batching import generate_stream
    from grpolab.generation.settings import GenerationSettings
    from grpolab.models import load_for_inference, resolve
    from grpolab.tasks import get_task

    torch.set_num_threads(args.threads)
    source = resolve(args.model)
    prompts = list(get_task("arith").load("test", num=args.num)["prompt"])
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    model, tokenizer, _ = load_for_inference(source)
    start = time.perf_counter()
    engine = LLM(model=source, seed=0, **vllm_backend.engine_options())
    startup = {"vLLM offline": time.perf_counter() - start}
    server, url, startup["vLLM server"] = start_server(source)
    client = openai_backend.ChatClient(url, timeout=600)

    def run_transformers() -> list[str]:
        texts = [""] * len(prompts)
        for position, (text,), _ in generate_stream(model, tokenizer, prompts, settings, 1, len(prompts)):
            texts[position] = text
        return texts

    def run_offline() -> list[str]:
        outputs = engine.chat(prompts, vllm_backend.sampling_params(settings, 1, 0), use_tqdm=False)
        return [output.outputs[0].text for output in outputs]

    def run_server() -> list[str]:
        texts = [""] * len(prompts)
        for position, choices in openai_backend.generate_stream(client, "bench", prompts, settings, 1, 0,
                                                                len(prompts)):
            texts[position] = choices[0].text
        return texts

    modes = {"transformers": run_transformers, "vLLM offline": run_offline, "vLLM server": run_server}
    try:
        for run in modes.values():  # warm-up: first-call allocations, not counted
            run()
        seconds: dict[str, list[float]] = {mode: [] for mode in modes}
        outputs: dict[str, list[str]] = {}
        for round_number in range(args.rounds):
            for mode, run in modes.items():
                begin = time.perf_counter()
                outputs[mode] = run()
                seconds[mode].append(time.perf_counter() - begin)
                print(f"round {round_number + 1} {mode:<13} {len(prompts) / seconds[mode][-1]:7.2f} items/s "
                      f"({seconds[mode][-1]:.1f} s)", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    report(args, prompts, seconds, outputs, startup)


def report(args, prompts, seconds, outputs, startup) -> None:
    best = {mode: len(prompts) / min(times) for mode, times in seconds.items()}
    print(f"\n{len(prompts)} arith test items, greedy, max_new_tokens {args.max_new_tokens}, best of "
          f"{args.rounds} alternating rounds, torch threads {args.threads} for transformers")
    for mode, rate in best.items():
        same = sum(a == b for a, b in zip(outputs[mode], outputs["transformers"], strict=True))
        print(f"{mode:<13} {rate:7.2f} items/s  {rate / best['transformers']:.2f}x  "
              f"same completion as transformers on {same}/{len(prompts)}"
              + (f"  start-up {startup[mode]:.0f} s" if mode in startup else ""))


if __name__ == "__main__":
    main()
