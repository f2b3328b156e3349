"""The eval pipeline: resolve the run, generate K completions per item, score them with the task's scorer.

Every item gets K completions (K=1, greedy, by default); ``metrics`` turns them into accuracy, pass@k and
intervals. Completion length is counted in generated tokens, without the stop token; a completion that
reaches ``max_new_tokens`` is counted as truncated.

An output directory holds ``eval_config.json``, ``samples.jsonl`` (one line per completion, appended as
each batch finishes, so ``resume`` can skip the items already there: see ``samples``), ``metrics.json``,
``report.md`` and ``accuracy_by_label.png`` (see ``report``); ``report.compare`` adds ``comparison.md``
and ``comparison.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from grpolab import rundir
from grpolab.errors import UserError
from grpolab.evaluation.config import DEFAULT_TASK, EvalConfig
from grpolab.evaluation.metrics import summarize
from grpolab.evaluation.report import write_results
from grpolab.evaluation.samples import SAMPLES, append_samples, open_output, read_samples
from grpolab.generation.continuous_batching import generate_stream
from grpolab.rundir import run_max_new_tokens

logger = logging.getLogger(__name__)



def resolve_run(config: EvalConfig) -> EvalConfig:
    """Fill in model, task, task options and max_new_tokens from the adapter's run (or the defaults)."""
    from grpolab import models

    if config.max_new_tokens is None:
        length, source = run_max_new_tokens(config.adapter, config.model)
        config = replace(config, max_new_tokens=length, max_new_tokens_from=source)
    elif config.max_new_tokens_from is None:
        config = replace(config, max_new_tokens_from="--max_new_tokens")
    if config.backend == "openai":
        from grpolab.generation.openai import resolve_served_model

        model = resolve_served_model(server_client(config), config.model)
        return replace(config, model=model, task=config.task or DEFAULT_TASK)
    if not config.adapter:
        return replace(config, model=config.model or models.DEFAULT_MODEL, task=config.task or DEFAULT_TASK)
    info = rundir.read_run_info(config.adapter)
    if config.model:
        models.check_adapter_base(config.adapter, config.model)
    rundir.check_adapter_weights(config.adapter)
    task = config.task or info.task or DEFAULT_TASK
    options = {**info.task_options, **config.task_options} if task == info.task else config.task_options
    return replace(config, model=config.model or info.base_model, task=task, task_options=options)


def default_out(config: EvalConfig, task_name: str) -> Path:
    """``<adapter>/eval-<split>``, else ``outputs/eval-<model>-<task>``."""
    if config.adapter:
        return Path(config.adapter) / f"eval-{config.split}"
    return Path("outputs") / f"eval-{Path(str(config.model).rstrip('/')).name}-{task_name.replace('/', '-')}"


# ------------------------------------------------------------------------------- generation + scoring
def score_item(task, row: Mapping[str, Any], index: int, completions: Sequence[str], lengths: Sequence[int],
               max_new_tokens: int, truncated: Sequence[bool] | None = None) -> list[dict[str, Any]]:
    """One sample record per completion of item ``index``, scored by the task's scorer.

    ``truncated`` says which completions hit the token limit when the generator knows (a server's
    ``finish_reason``); without it, a completion of ``max_new_tokens`` tokens counts as truncated.
    """
    if truncated is None:
        truncated = [int(tokens) >= max_new_tokens for tokens in lengths]
    records = []
    for sample, (completion, tokens, cut) in enumerate(zip(completions, lengths, truncated, strict=True)):
        verdict = task.score(completion, row)
        records.append({
            "index": index, "sample": sample, "label": str(row.get("label", "all")),
            "question": row.get("question"), "answer": row.get("answer"), "completion": completion,
            "solved": bool(verdict.solved), "parsed": verdict.parsed, "partial": float(verdict.partial),
            "format_ok": bool(verdict.format_ok), "lenient": verdict.lenient,
            "tokens": int(tokens), "truncated": bool(cut),
            **({"checks": {name: bool(check(completion, row)) for name, check in task.checks.items()}}
               if task.checks else {}),
        })
    return records


def run_items(model, tokenizer, task, dataset, indices: Sequence[int], config: EvalConfig, samples_path: Path,
              progress: bool = True) -> None:
    """Generate and score ``indices`` of ``dataset``, appending each finished item to ``samples_path``."""
    from tqdm.auto import tqdm

    prompts = [dataset[index]["prompt"] for index in indices]
    with tqdm(total=len(indices), unit="item", desc=f"eval {config.name}", disable=not progress) as bar:
        for position, texts, lengths in generate_stream(
            model, tokenizer, prompts, config.settings(), config.k, config.batch_size
        ):
            index = indices[position]
            append_samples(
                samples_path, score_item(task, dataset[index], index, texts, lengths, config.max_new_tokens)
            )
            bar.update(1)


def run_items_vllm(task, dataset, indices: Sequence[int], config: EvalConfig, samples_path: Path) -> None:
    """As run_items, with vLLM generating (and the adapter served through vLLM's LoRA support)."""
    from grpolab.generation import vllm
    from grpolab.models import resolve

    vllm.require_vllm()
    prompts = [dataset[index]["prompt"] for index in indices]
    for position, texts, lengths in vllm.generate_stream(
        resolve(config.model), config.adapter, prompts, config.settings(), config.k, config.seed
    ):
        index = indices[position]
        append_samples(
            samples_path, score_item(task, dataset[index], index, texts, lengths, config.max_new_tokens)
        )


# ------------------------------------------------------------------------------------------ pipeline
def evaluate(
    config: EvalConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Run one evaluation end to end; returns the output directory and its metrics."""
    from grpolab.models import load_for_inference
    from grpolab.tasks import get_task

    config = resolve_run(config)
    logger.debug("max_new_tokens %d (%s)", config.max_new_tokens, config.max_new_tokens_from)
    task = get_task(config.task)
    dataset = task.load_dataset(config.split, config.data_file, config.num, config.seed, config.task_options)
    if len(dataset) == 0:
        raise UserError(
            f"task {task.name} gave no items for split '{config.split}': check --split and --data_file"
        )
    out = Path(out) if out else default_out(config, task.name)
    todo = open_output(out, config, dataset, resume)
    if todo and config.backend == "openai":
        run_items_openai(task, dataset, todo, config, out / SAMPLES, progress)
    elif todo and config.backend == "vllm":
        run_items_vllm(task, dataset, todo, config, out / SAMPLES)
    elif todo:
        model, tokenizer, _ = load_for_inference(config.model, config.adapter)
        from transformers import set_seed

        set_seed(config.seed)
        if task.tools or task.environment_factory:
            from grpolab.evaluation.tool_runner import run_items_tools

            run_items_tools(model, tokenizer, task, dataset, todo, config, out / SAMPLES, progress)
        else:
            run_items(model, tokenizer, task, dataset, todo, config, out / SAMPLES, progress)
    records = [r for r in read_samples(out / SAMPLES) if r["index"] < len(dataset)]
    metrics = {"name": config.name, **summarize(records), "config": asdict(config)}
    write_results(out, metrics)
    return out, metrics


def server_client(config: EvalConfig):
    """The OpenAI-compatible client for ``--backend openai``, built from the flags' plain values."""
    from grpolab.generation.openai import ChatClient

    return ChatClient(config.base_url.rstrip("/"), config.api_key_env, config.timeout)


def run_items_openai(task, dataset, indices: Sequence[int], config: EvalConfig, samples_path: Path,
                     progress: bool = True) -> None:
    """As ``runner.run_items``, with the server generating; each item is appended when its reply is in."""
    from tqdm.auto import tqdm

    from grpolab.generation.openai import check_model, generate_stream

    client = server_client(config)
    check_model(client, config.model)
    chats = [dataset[index]["prompt"] for index in indices]
    stream = generate_stream(
        client, config.model, chats, config.settings(), config.k, config.seed, config.concurrency
    )
    with tqdm(total=len(indices), unit="item", desc=f"eval {config.name}", disable=not progress) as bar:
        for position, choices in stream:
            index = indices[position]
            append_samples(
                samples_path,
                score_item(
                    task,
                    dataset[index],
                    index,
                    [c.text for c in choices],
                    [c.tokens for c in choices],
                    config.max_new_tokens,
                    [c.truncated for c in choices],
                ),
            )
            bar.update(1)
