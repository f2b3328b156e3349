"""Eval of a tool task: every item is one multi-turn episode (``grpolab.tools.run_episodes``), run with the
same parser, tool execution and iteration cap as training, and judged on its final reply by the task's scorer.

Each sample record keeps every turn (``messages``) and adds ``tool_calls``, ``failed_calls`` and ``turns``;
``metrics.summarize`` reports them per item beside strict accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from grpolab.evaluation.samples import Completions, score_item
from grpolab.rundir import RunDefaults
from grpolab.tasks.base import completion_text

# The cap when the run does not say (a base model): enough for a sum of products done one call at a time.
DEFAULT_MAX_ITERATIONS = 4
# Items whose episodes run side by side (each turn one batched decoder call); samples.jsonl is appended
# after each round, so an interrupted eval resumes from there.
EPISODES_PER_ROUND = 32


def run_settings(run: RunDefaults) -> tuple[int | None, float, list[str]]:
    """(max_tool_calling_iterations, tool_timeout, extra tools) of the run's recipe, else the defaults."""
    recipe = run.recipe
    if "tool_timeout" in recipe or "max_tool_calling_iterations" in recipe:
        return recipe.get("max_tool_calling_iterations"), float(recipe.get("tool_timeout") or 0), recipe.get(
            "tools") or []
    return DEFAULT_MAX_ITERATIONS, 10.0, []


def episode_sample(episode) -> tuple[str, int, bool, dict[str, Any]]:
    """What eval scores of one episode: the final reply, its tokens, whether it was cut, and its counts."""
    counts = {"tool_calls": episode.tool_calls, "failed_calls": episode.failed_calls, "turns": episode.turns,
              "messages": episode.messages}
    return completion_text(episode.messages), episode.tokens, episode.truncated, counts


def episode_record(task, row: Mapping[str, Any], index: int, episode) -> dict[str, Any]:
    """One episode's sample record, as eval writes it: the training reward's verdict on the final reply,
    and the episode's counts."""
    text, tokens, truncated, counts = episode_sample(episode)
    [record] = score_item(task, row, index, [text], [tokens], truncated=[truncated], extras=[counts])
    return record


def hf_generate(model, tokenizer, settings):
    """``generate(prompt_ids, max_new_tokens) -> new ids`` on a transformers model (one sequence)."""
    import torch

    kwargs = settings.to_kwargs()
    kwargs.pop("max_new_tokens", None)

    def generate(prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        ids = torch.tensor([prompt_ids], device=model.device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs)
        return out[0, len(prompt_ids):].tolist()

    return generate


def batched_generate(model, tokenizer, settings, batch_size: int | None = None):
    """``generate(contexts, budgets) -> new ids`` for ``run_episodes``: grpolab's continuous-batching decoder
    (the tool schema in the system prompt is a prefix every context shares, prefilled once)."""
    from grpolab.generation.continuous_batching import generate_ids

    def generate(contexts: list[list[int]], budgets: list[int]) -> list[list[int]]:
        return generate_ids(model, tokenizer, contexts, budgets, settings, batch_size)

    return generate


def episodes(model, tokenizer, task, dataset, indices: Sequence[int], settings, k: int, config,
             run: RunDefaults) -> Iterator[Completions]:
    """``k`` episodes per item of ``indices``, as eval and probe run them, with the tool settings of the
    model's run: each item's ``Completions``; the episodes of up to ``EPISODES_PER_ROUND`` items run side by
    side, one batched call per turn."""
    from trl.chat_template_utils import supports_tool_calling

    from grpolab.tools import guarded, load_tools, prepare_tokenizer, run_episodes

    max_iterations, timeout, extra = run_settings(run)
    template = None if supports_tool_calling(tokenizer) else task.chat_template
    tokenizer = prepare_tokenizer(tokenizer, template, str(config.model))
    tools = [guarded(tool, timeout) for tool in (*task.tools, *load_tools(extra))]
    generate = batched_generate(model, tokenizer, settings, getattr(config, "batch_size", None))
    indices = list(indices)
    for start in range(0, len(indices), EPISODES_PER_ROUND):
        chunk = indices[start : start + EPISODES_PER_ROUND]
        rollouts = [_rollout(task, dataset[index], tools, timeout) for index in chunk for _ in range(k)]
        done = run_episodes(generate, tokenizer, [r[1] for r in rollouts], [r[2] for r in rollouts],
                            max_iterations, settings.max_new_tokens)
        for offset in range(len(chunk)):
            samples = []
            for sample in range(offset * k, (offset + 1) * k):
                text, tokens, truncated, counts = episode_sample(done[sample])
                environment = rollouts[sample][0]
                if hasattr(environment, "get_reward"):
                    counts["environment_reward"] = float(environment.get_reward())
                samples.append((text, tokens, truncated, counts))
            yield Completions(start + offset, *(list(column) for column in zip(*samples, strict=True)))


def _rollout(task, row, tools, timeout):
    """(environment or None, prompt, tools) for one episode of ``row``: a fresh environment per episode."""
    from grpolab.tools import environment_tools, guarded

    if task.environment_factory is None:
        return None, row["prompt"], tools
    environment, methods, prompt = environment_tools(task.environment_factory, row, row["prompt"])
    return environment, prompt, tools + [guarded(method, timeout) for method in methods]
