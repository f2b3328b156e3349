"""Evaluation through vLLM (``grpolab eval --backend vllm``), with a LoRA adapter served by vLLM's LoRA
support.

Not exercised in CI: vLLM is not installed there (its CPU build pins an older transformers); the path up to
the vLLM call is tested, and the package check gives one line naming the extra.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from grpolab.errors import UserError
from grpolab.generation.settings import GenerationSettings


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "--backend vllm needs vLLM: pip install 'grpolab[vllm]', or use --backend transformers"
        )


def lora_rank(adapter: str) -> int:
    return int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 16))


def engine_options() -> dict[str, object]:
    """What vLLM needs on a CPU, where its defaults are measured wrong (docs/benchmarks.md); none on a GPU.

    float32: vLLM's "auto" turns an fp32 model into bf16, 3x slower on CPUs without native bf16 and no longer
    the model transformers runs. Eager mode: compiling took 105-160 s at every start on 2 cores, eager 24 s,
    at the same generation speed.
    """
    import torch

    return {} if torch.cuda.is_available() else {"dtype": "float32", "enforce_eager": True}


def max_model_len(settings: GenerationSettings) -> int:
    """Prompt budget plus the completion: the context a row of eval needs (training's context too)."""
    from grpolab.generation.settings import PROMPT_BUDGET

    return PROMPT_BUDGET + settings.max_new_tokens


def sampling_params(settings: GenerationSettings, k: int, seed: int):
    from vllm import SamplingParams

    greedy = not settings.do_sample
    return SamplingParams(
        n=k,
        temperature=0.0 if greedy else settings.temperature,
        top_p=1.0 if greedy else settings.top_p,
        max_tokens=settings.max_new_tokens,
        seed=seed,
    )


def generate_stream(
    model_source: str,
    adapter: str | None,
    chats: Sequence[list[dict[str, str]]],
    settings: GenerationSettings,
    k: int,
    seed: int,
) -> Iterator[tuple[int, list[str], list[int]]]:
    """(chat index, completions, lengths in tokens), as ``continuous_batching.generate_stream`` has it."""
    require_vllm()
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    engine = LLM(
        model=model_source,
        seed=seed,
        enable_lora=adapter is not None,
        max_lora_rank=lora_rank(adapter) if adapter else 16,
        # Without it vLLM sizes its cache for the model's whole context (Qwen3: 40,960) and, next to a
        # 32B model's weights on 24 GB, refuses to start (review F6).
        max_model_len=max_model_len(settings),
        **engine_options(),
    )
    request = LoRARequest("adapter", 1, str(adapter)) if adapter else None
    outputs = engine.chat(
        list(chats), sampling_params(settings, k, seed), lora_request=request, use_tqdm=True
    )
    for index, output in enumerate(outputs):
        yield index, [o.text for o in output.outputs], [len(o.token_ids) for o in output.outputs]
