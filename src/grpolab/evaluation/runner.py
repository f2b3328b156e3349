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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from grpolab.errors import UserError
from grpolab.evaluation.config import DEFAULT_TASK, EvalConfig, ProbeConfig
from grpolab.evaluation.metrics import summarize
from grpolab.evaluation.report import write_results
from grpolab.evaluation.samples import (
    SAMPLES,
    Completions,
    append_samples,
    open_output,
    read_samples,
    score_item,
)
from grpolab.generation.continuous_batching import generate_stream
from grpolab.rundir import RunDefaults

logger = logging.getLogger(__name__)



def resolve_run(config: EvalConfig) -> tuple[EvalConfig, RunDefaults]:
    """The config with model, task, task options and max_new_tokens filled in from the adapter's run (or
    the defaults), and the run's record, read and checked once (``models.open_run``)."""
    from grpolab import models

    run = models.open_run(config.adapter, config.model)
    if config.max_new_tokens is None:
        length, source = run.max_new_tokens, run.max_new_tokens_from
        config = replace(config, max_new_tokens=length, max_new_tokens_from=source)
    elif config.max_new_tokens_from is None:
        config = replace(config, max_new_tokens_from="--max_new_tokens")
    if config.backend == "openai":
        from grpolab.generation.openai import resolve_served_model

        model = resolve_served_model(server_client(config), config.model)
        return replace(config, model=model, task=config.task or DEFAULT_TASK), run
    model, task, options = fill_from_run(run, config.model, config.task, config.task_options)
    return replace(config, model=model, task=task, task_options=options), run


def fill_from_run(run: RunDefaults, model: str | None, task: str | None, task_options: dict
                  ) -> tuple[str, str, dict]:
    """(model, task, task options) as eval and probe run them: the flags', else the run's, else the defaults;
    the run's options under the flags' when the task is the run's."""
    from grpolab.models import DEFAULT_MODEL

    task = task or run.task or DEFAULT_TASK
    options = {**run.task_options, **task_options} if task == run.task else task_options
    return model or run.base_model or DEFAULT_MODEL, task, options


def load_items(task, config: EvalConfig | ProbeConfig):
    """The items of ``config.split`` that eval or probe runs; a split with none is a UserError."""
    dataset = task.load_dataset(config.split, config.data_file, config.num, config.seed, config.task_options)
    if len(dataset) == 0:
        raise UserError(
            f"task {task.name} gave no items for split '{config.split}': check --split and --data_file"
        )
    return dataset


def default_out(config: EvalConfig, task_name: str) -> Path:
    """``<adapter>/eval-<split>``, else ``outputs/eval-<model>-<task>``."""
    if config.adapter:
        return Path(config.adapter) / f"eval-{config.split}"
    return Path("outputs") / f"eval-{Path(str(config.model).rstrip('/')).name}-{task_name.replace('/', '-')}"


# ------------------------------------------------------------------------------- generation + scoring
def run_items(stream: Iterable[Sequence], task, dataset, indices: Sequence[int], samples_path: Path,
              max_new_tokens: int, desc: str, progress: bool = True, unit: str = "item",
              annotate: Callable[[Mapping[str, Any], list[dict[str, Any]]], None] | None = None,
              ) -> list[list[dict[str, Any]]]:
    """The run-and-score loop of eval (every backend) and probe: each item's records, in the order done.

    ``stream`` is a backend's output: one ``Completions`` per item (a plain ``(position, texts, tokens)``
    is one) as it finishes. Each item is scored by the task's scorer (``score_item``), handed to
    ``annotate(row, records)`` (probe adds training's reward) and appended to ``samples_path`` at once, so
    a killed run keeps what it finished.
    """
    from tqdm.auto import tqdm

    items = []
    with tqdm(total=len(indices), unit=unit, desc=desc, disable=not progress) as bar:
        for item in (Completions(*output) for output in stream):
            index = indices[item.position]
            row = dataset[index]
            records = score_item(task, row, index, item.texts, item.tokens, max_new_tokens, item.truncated,
                                 item.extras)
            if annotate is not None:
                annotate(row, records)
            append_samples(samples_path, records)
            items.append(records)
            bar.update(1)
    return items


def backend_stream(config: EvalConfig, task, dataset, indices: Sequence[int], run: RunDefaults
                   ) -> Iterable[Sequence]:
    """The completions of items ``indices`` from ``config.backend``, for ``run_items``."""
    prompts = [dataset[index]["prompt"] for index in indices]
    if config.backend == "openai":
        return _server_stream(config, prompts)
    if config.backend == "vllm":
        return _vllm_stream(config, prompts)
    from transformers import set_seed

    from grpolab.models import load_for_inference

    model, tokenizer, _ = load_for_inference(config.model, config.adapter, run=run)
    set_seed(config.seed)
    if task.tools or task.environment_factory:
        from grpolab.evaluation.tool_runner import episodes

        if config.k != 1:
            logger.info("tool tasks: one episode per item in eval (k=%d asked)", config.k)
        return episodes(model, tokenizer, task, dataset, indices, config.settings(), 1, config, run)
    return generate_stream(model, tokenizer, prompts, config.settings(), config.k, config.batch_size)


def _vllm_stream(config: EvalConfig, prompts: Sequence) -> Iterable[Sequence]:
    """vLLM generating, the adapter served through vLLM's LoRA support."""
    from grpolab.generation import vllm
    from grpolab.models import resolve

    vllm.require_vllm()
    return vllm.generate_stream(resolve(config.model), config.adapter, prompts, config.settings(), config.k,
                                config.seed)


def _server_stream(config: EvalConfig, prompts: Sequence) -> Iterable[Completions]:
    """The server generating; it says itself which replies hit the token limit."""
    from grpolab.generation import openai

    client = server_client(config)
    openai.check_model(client, config.model)
    stream = openai.generate_stream(
        client, config.model, prompts, config.settings(), config.k, config.seed, config.concurrency
    )
    return (
        Completions(position, [c.text for c in choices], [c.tokens for c in choices],
                    [c.truncated for c in choices])
        for position, choices in stream
    )


# ------------------------------------------------------------------------------------------ pipeline
def evaluate(
    config: EvalConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Run one evaluation end to end; returns the output directory and its metrics."""
    from grpolab.tasks import get_task

    config, run = resolve_run(config)
    logger.debug("max_new_tokens %d (%s)", config.max_new_tokens, config.max_new_tokens_from)
    task = get_task(config.task)
    dataset = load_items(task, config)
    out = Path(out) if out else default_out(config, task.name)
    todo = open_output(out, config, dataset, resume)
    if todo:
        stream = backend_stream(config, task, dataset, todo, run)
        run_items(stream, task, dataset, todo, out / SAMPLES, config.max_new_tokens, f"eval {config.name}",
                  progress)
    records = [r for r in read_samples(out / SAMPLES) if r["index"] < len(dataset)]
    metrics = {"name": config.name, **summarize(records), "config": asdict(config)}
    write_results(out, metrics)
    return out, metrics


def server_client(config: EvalConfig):
    """The OpenAI-compatible client for ``--backend openai``, built from the flags' plain values."""
    from grpolab.generation.openai import ChatClient

    return ChatClient(config.base_url.rstrip("/"), config.api_key_env, config.timeout)
