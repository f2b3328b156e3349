"""vLLM's CPU build, live (``make test-vllm``): offline and served generation on the embedded model, with and
without a LoRA adapter, against the transformers backend's greedy output on the same items.

Runs only where vLLM is installed (``make setup-vllm`` builds .venv-vllm with it); elsewhere it is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from grpolab.evaluation import runner as evaluation
from grpolab.evaluation.config import EvalConfig

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed here: 'make test-vllm' runs these in .venv-vllm"),
]

NUM, MAX_NEW_TOKENS = 8, 48
# Greedy completions equal to transformers' out of NUM. Both run float32, but with other kernels: where the
# two best next tokens are nearly tied, the last bits can pick the other one and the replies part from there.
MIN_EQUAL = 6
START_TIMEOUT_S = 600


def _env() -> dict[str, str]:
    # vLLM checks one NUMA node's memory, which a small VM under-reports: it refuses its default KV cache.
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


def _completions(directory: Path) -> dict[int, str]:
    samples = (json.loads(line) for line in (directory / "samples.jsonl").read_text().splitlines())
    return {sample["index"]: sample["completion"] for sample in samples}


def _equal(got: dict[int, str], expected: dict[int, str]) -> int:
    assert sorted(got) == sorted(expected) == list(range(NUM))
    return sum(got[index] == expected[index] for index in range(NUM))


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, embedded_model_dir) -> Path:
    """A run directory with a LoRA adapter (r=8 on q/v) of small random weights: it changes some replies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)  # PEFT starts B at zero, which would leave the model unchanged
    run = tmp_path_factory.mktemp("lora-run")
    model.save_pretrained(run)
    info = {"base_model": str(embedded_model_dir), "task": "arith"}
    (run / "grpolab_run.json").write_text(json.dumps(info))
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory, embedded_model_dir, adapter_run) -> dict[str, dict[int, str]]:
    """transformers' greedy completions on the items every test evaluates: base model and adapter."""
    out = tmp_path_factory.mktemp("reference")
    common = {"num": NUM, "max_new_tokens": MAX_NEW_TOKENS}
    base, _ = evaluation.evaluate(EvalConfig(model=str(embedded_model_dir), **common), out / "base",
                                  progress=False)
    tuned, _ = evaluation.evaluate(EvalConfig(adapter=str(adapter_run), **common), out / "tuned",
                                   progress=False)
    completions = {"base": _completions(base), "adapter": _completions(tuned)}
    assert _equal(completions["adapter"], completions["base"]) < NUM  # or the adapter tests prove nothing
    return completions


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vLLM server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"vLLM server not up in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, embedded_model_dir, adapter_run):
    """vLLM's OpenAI server on loopback: the embedded model as 'smollm2', the adapter as 'random-lora'."""
    port, log = _free_port(), tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(embedded_model_dir),
               "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--seed", "0",
               "--enable-lora", "--max-lora-rank", "8", "--lora-modules", f"random-lora={adapter_run}"]
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=_env())
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("served", "expected"), [("smollm2", "base"), ("random-lora", "adapter")])
def test_openai_backend_through_a_live_vllm_server(vllm_server, reference, served, expected, tmp_path):
    config = EvalConfig(backend="openai", base_url=vllm_server, model=served, num=NUM,
                        max_new_tokens=MAX_NEW_TOKENS, concurrency=4, timeout=300)
    out, metrics = evaluation.evaluate(config, tmp_path / "eval", progress=False)
    equal = _equal(_completions(out), reference[expected])
    print(f"{served} served by vLLM: {equal} of {NUM} greedy completions equal to transformers'")
    assert metrics["items"] == NUM and metrics["config"]["model"] == served
    assert equal >= MIN_EQUAL


@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "adapter"])
def test_vllm_backend_offline_through_the_cli(embedded_model_dir, adapter_run, reference, with_adapter,
                                              tmp_path):
    out = tmp_path / "eval"
    model = ["--adapter", str(adapter_run)] if with_adapter else ["--model", str(embedded_model_dir)]
    result = subprocess.run(
        [sys.executable, "-m", "grpolab", "eval", "--backend", "vllm", *model, "--num", str(NUM),
         "--max_new_tokens", str(MAX_NEW_TOKENS), "--out", str(out), "--no_progress"],
        capture_output=True, text=True, env=_env(), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    equal = _equal(_completions(out), reference["adapter" if with_adapter else "base"])
    print(f"vLLM offline{' + adapter' if with_adapter else ''}: {equal} of {NUM} equal to transformers'")
    assert json.loads((out / "metrics.json").read_text())["items"] == NUM
    assert equal >= MIN_EQUAL
