"""Learnability probe: before spending compute on GRPO, measure whether its groups will carry any signal.

GRPO learns only from groups whose G rewards differ: a group where every completion gets the same reward
has zero advantage everywhere (TRL logs the share of such groups as ``frac_reward_zero_std``). The probe
samples G completions for each of N prompts, as training would (same prompt, same sampling temperature),
scores each with the task's strict scorer and with the reward training would use (the weighted sum of the
task's reward functions, as TRL sums them), and reports per label and overall:

- pass@1 and pass@G, with the unbiased estimator of ``metrics.pass_at_k`` (n = G samples per prompt);
- the mean reward, and the spread: the mean over groups of the within-group standard deviation (with
  Bessel's correction, as TRL's ``nanstd``);
- the zero-spread share: groups whose G rewards are all equal, and so carry no signal;
- the zero-spread share predicted for other group sizes g from each prompt's observed rewards: the chance
  that g draws with replacement from them are all equal, sum over distinct values v of q_v^g where q_v
  is the share of the prompt's completions with reward v (for a 0/1 reward, p^g + (1-p)^g), averaged
  over prompts. A plug-in estimate: a prompt whose G completions all scored the same is predicted to stay
  uniform at every g, so for g > G it shows only what the prompts with mixed rewards gain (a lower bound
  on the gain); for g < G it shows how much signal a smaller group would lose.

Then one verdict, from the overall numbers (the thresholds below, checked in this order):

1. pass@G < 5%: almost no group holds a solve. If under 20% of completions are in the answer format the
   model has not learned the format yet: warm up with ``grpolab sft`` first (when the task has reference
   answers); otherwise it answers in form but cannot solve: make it easier.
2. pass@1 > 90%: nearly every completion solves, so most groups are all-solved: make it harder.
3. zero-spread share <= 60%: at least two groups in five carry signal: train. Not 50%: the default arith
   recipe, which gains 26-29 points in 40 steps, probes at 56% (16 prompts, G=8; docs/benchmarks.md).
4. otherwise: make it harder if all-solved groups outnumber all-failed ones, else make it easier.

The same rules applied to each label say which labels to train on.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from grpolab.evaluation.config import ProbeConfig
from grpolab.evaluation.metrics import pass_at_k
from grpolab.evaluation.report import markdown_table
from grpolab.evaluation.samples import write_atomic
from grpolab.rundir import RunDefaults

GROUP_SIZES = (2, 4, 8, 16)  # group sizes to predict the zero-spread share for
NO_SOLVE = 0.05  # pass@G below this: almost no group holds a single solve
LOW_FORMAT = 0.2  # answer-format rate below this: the model has not learned the answer format
TOO_EASY = 0.9  # pass@1 above this: most groups are all solved
MAX_ZERO_SPREAD = 0.6  # at most this share of groups without signal: worth training
_DECIMALS = 6  # rewards equal to 6 decimals are equal: float sums of weights (0.1 + 0.2) are no spread

TRAIN, WARM_UP, HARDER, EASIER = "train", "warm up with grpolab sft first", "make it harder", "make it easier"
RESULT, REPORT, SAMPLES = "probe.json", "probe.md", "samples.jsonl"


# ------------------------------------------------------------------------------------------ arithmetic
def _key(value: float) -> float:
    return round(value, _DECIMALS)


def all_equal(rewards: Sequence[float]) -> bool:
    """True when a group's rewards are all equal: its advantages are all zero."""
    return len({_key(value) for value in rewards}) <= 1


def group_std(rewards: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction, as TRL's nanstd; 0 for fewer than two values."""
    if len(rewards) < 2:
        return 0.0
    mean = sum(rewards) / len(rewards)
    return math.sqrt(sum((value - mean) ** 2 for value in rewards) / (len(rewards) - 1))


def zero_spread_share(groups: Sequence[Sequence[float]]) -> float:
    """Share of groups whose rewards are all equal (TRL's frac_reward_zero_std)."""
    return sum(all_equal(rewards) for rewards in groups) / len(groups)


def predicted_all_equal(rewards: Sequence[float], group_size: int) -> float:
    """Chance that ``group_size`` draws with replacement from ``rewards`` are all equal: sum of q_v^g."""
    if not rewards:
        return 1.0
    counts = Counter(_key(value) for value in rewards)
    return sum((count / len(rewards)) ** group_size for count in counts.values())


def predicted_zero_spread(groups: Sequence[Sequence[float]], group_size: int) -> float:
    """The zero-spread share expected at ``group_size``, averaged over the prompts' observed rewards."""
    return sum(predicted_all_equal(rewards, group_size) for rewards in groups) / len(groups)


def summarize(
    groups: Sequence[Mapping[str, Any]], group_sizes: Sequence[int] = GROUP_SIZES
) -> dict[str, Any]:
    """Probe metrics for groups: mappings holding equal-length lists ``rewards``, ``solved``, ``format_ok``.

    A reward of None (every reward function skipped that completion) is left out of its group, as TRL
    leaves it out of the group's mean and spread.
    """
    k = len(groups[0]["solved"])
    rewards = [[value for value in group["rewards"] if value is not None] for group in groups]
    solved = [sum(bool(s) for s in group["solved"]) for group in groups]
    equal = [all_equal(values) for values in rewards]
    return {
        "prompts": len(groups),
        "k": k,
        "pass@1": _mean([pass_at_k(k, count, 1) for count in solved]),
        f"pass@{k}": _mean([pass_at_k(k, count, k) for count in solved]),
        "format_rate": _mean([float(ok) for group in groups for ok in group["format_ok"]]),
        "reward_mean": _mean([value for values in rewards for value in values]),
        "reward_std": _mean([group_std(values) for values in rewards]),
        "zero_spread": zero_spread_share(rewards),
        "zero_spread_all_solved": _mean([float(e and c == k) for e, c in zip(equal, solved, strict=True)]),
        "zero_spread_none_solved": _mean([float(e and c == 0) for e, c in zip(equal, solved, strict=True)]),
        "predicted_zero_spread": {str(size): predicted_zero_spread(rewards, size) for size in group_sizes},
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def by_label(groups: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metrics per label (labels in order of first appearance), then ``all``."""
    labels = list(dict.fromkeys(str(group["label"]) for group in groups))
    per_label = {label: summarize([g for g in groups if str(g["label"]) == label]) for label in labels}
    return {**per_label, "all": summarize(groups)} if len(labels) > 1 else {"all": summarize(groups)}


def verdict(metrics: Mapping[str, Any], can_warm_up: bool = True) -> tuple[str, str]:
    """(advice, the numbers that led to it) from one set of probe metrics; the rules of the module doc."""
    k, zero = metrics["k"], metrics["zero_spread"]
    pass_k, pass_1, form = metrics[f"pass@{k}"], metrics["pass@1"], metrics["format_rate"]
    no_signal = f"{zero:.0%} of groups carry no signal at G={k}"
    if pass_k < NO_SOLVE:
        if form < LOW_FORMAT and can_warm_up:
            return WARM_UP, f"pass@{k} = {pass_k:.2f}, answer format {form:.0%}, and {no_signal}"
        return EASIER, f"pass@{k} = {pass_k:.2f} although {form:.0%} of answers are in format; {no_signal}"
    if pass_1 > TOO_EASY:
        return HARDER, f"pass@1 = {pass_1:.2f}, {metrics['zero_spread_all_solved']:.0%} of groups all solved"
    if zero <= MAX_ZERO_SPREAD:
        return TRAIN, f"{no_signal} (pass@1 = {pass_1:.2f}, pass@{k} = {pass_k:.2f})"
    if metrics["zero_spread_all_solved"] > metrics["zero_spread_none_solved"]:
        return HARDER, f"{no_signal}, {metrics['zero_spread_all_solved']:.0%} of groups all solved"
    return EASIER, (
        f"{no_signal}, {metrics['zero_spread_none_solved']:.0%} of groups with no solve "
        f"(pass@{k} = {pass_k:.2f})"
    )


def verdict_line(results: Mapping[str, Mapping[str, Any]], can_warm_up: bool = True) -> str:
    """The one line ``verdict: ADVICE: NUMBERS``, naming the labels worth training on when some are."""
    advice, reason = verdict(results["all"], can_warm_up)
    trainable = [
        label
        for label, metrics in results.items()
        if label != "all" and verdict(metrics, can_warm_up)[0] == TRAIN
    ]
    if trainable and advice != TRAIN:
        reason += f"; label(s) worth training on: {', '.join(trainable)}"
    elif trainable and len(trainable) < len(results) - 1:
        reason += f"; train on label(s) {', '.join(trainable)}"
    return f"verdict: {advice}: {reason}"


# -------------------------------------------------------------------------------------------- rewards
def combined_rewards(
    functions: Sequence[Callable[..., list]],
    weights: Sequence[float] | None,
    row: Mapping[str, Any],
    texts: Sequence[str],
) -> tuple[list[float | None], dict[str, list]]:
    """Training's reward for each completion of one prompt: the weighted sum of the reward functions.

    Called as TRL calls them: conversational completions for a chat prompt, and every data column but the
    prompt as a keyword argument. A function returning None skips that completion (TRL's nansum); a
    completion every function skips has no reward (None), as TRL leaves it out of the group statistics.
    """
    count = len(texts)
    conversational = isinstance(row["prompt"], list)
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else list(texts)
    columns = {key: [value] * count for key, value in row.items() if key != "prompt"}
    weights = list(weights) if weights is not None else [1.0] * len(functions)
    per_function = {
        function.__name__: function(prompts=[row["prompt"]] * count, completions=completions, **columns)
        for function in functions
    }
    totals: list[float | None] = []
    for index in range(count):
        pairs = zip(weights, per_function.values(), strict=True)
        terms = [weight * float(values[index]) for weight, values in pairs if values[index] is not None]
        totals.append(sum(terms) if terms else None)
    return totals, per_function


# ------------------------------------------------------------------------------------------- pipeline
def resolve(config: ProbeConfig) -> tuple[ProbeConfig, RunDefaults]:
    """Model, task and task options from the adapter's run directory, as ``grpolab eval`` resolves them, and
    the run's record, read and checked once (``models.open_run``)."""
    from grpolab.evaluation.runner import fill_from_run
    from grpolab.models import open_run

    run = open_run(config.adapter, config.model)
    model, task, options = fill_from_run(run, config.model, config.task, config.task_options)
    return replace(config, model=model, task=task, task_options=options), run


def default_out(config: ProbeConfig, task_name: str) -> Path:
    """``<adapter>/probe``, else ``outputs/probe-<model>-<task>``."""
    if config.adapter:
        return Path(config.adapter) / "probe"
    return Path("outputs") / f"probe-{Path(str(config.model).rstrip('/')).name}-{task_name}"


def sample_groups(
    model, tokenizer, task, dataset, config: ProbeConfig, rewards, samples_path: Path, progress: bool = True,
    run: RunDefaults | None = None,
) -> list[dict[str, Any]]:
    """Generate ``k`` completions per prompt, score them, and return one group record per prompt (a tool
    task's episodes take the tool settings of ``run``, the model's run; none: the defaults)."""
    from grpolab.evaluation.runner import run_items
    from grpolab.generation.settings import GenerationSettings

    settings = GenerationSettings(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p
    )
    indices = range(len(dataset))
    if task.tools or task.environment_factory:  # each completion is a tool episode, as in training
        from grpolab.evaluation.tool_runner import episodes

        stream = episodes(model, tokenizer, task, dataset, indices, settings, config.k, config,
                          run or RunDefaults())
    else:
        from grpolab.generation.continuous_batching import generate_stream

        prompts = [dataset[index]["prompt"] for index in indices]
        stream = generate_stream(model, tokenizer, prompts, settings, config.k, config.batch_size)
    items = run_items(stream, task, dataset, indices, samples_path, config.max_new_tokens, "probe", progress,
                      unit="prompt", annotate=lambda row, records: add_rewards(rewards, row, records))
    return sorted((group_of(records) for records in items), key=lambda group: group["index"])


def add_rewards(rewards, row: Mapping[str, Any], records: list[dict[str, Any]]) -> None:
    """Training's reward (``combined_rewards``) and each function's part on every record of one prompt."""
    functions, weights = rewards
    totals, per_function = combined_rewards(functions, weights, row, [r["completion"] for r in records])
    for sample, record in enumerate(records):
        record.update(reward=totals[sample], rewards={n: v[sample] for n, v in per_function.items()})


def group_of(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One prompt's group, as ``summarize`` reads it."""
    return {
        "index": records[0]["index"],
        "label": records[0]["label"],
        "rewards": [r["reward"] for r in records],
        "solved": [r["solved"] for r in records],
        "format_ok": [r["format_ok"] for r in records],
    }


def probe(
    config: ProbeConfig, out: str | Path | None = None, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Run the probe end to end; returns the output directory and its result (as written to probe.json)."""
    import time

    from transformers import set_seed

    from grpolab.evaluation.runner import load_items
    from grpolab.models import load_for_inference
    from grpolab.tasks import get_task
    from grpolab.training.rewards import select_rewards

    config, run = resolve(config)
    task = get_task(config.task)
    rewards = select_rewards(task, config.reward_funcs, config.reward_weights)
    dataset = load_items(task, config)
    out = Path(out) if out else default_out(config, task.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / SAMPLES).unlink(missing_ok=True)
    model, tokenizer, _ = load_for_inference(config.model, config.adapter, run=run)
    set_seed(config.seed)
    start = time.perf_counter()
    groups = sample_groups(model, tokenizer, task, dataset, config, rewards, out / SAMPLES, progress, run)
    results, can_warm_up = by_label(groups), task.reference is not None
    functions, weights = rewards
    result = {
        "config": asdict(config),
        "reward_funcs": [function.__name__ for function in functions],
        "reward_weights": weights or [1.0] * len(functions),
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
        "label_advice": label_advice(results, can_warm_up),
        "verdict": verdict_line(results, can_warm_up),
    }
    write_results(out, result)
    return out, result


# -------------------------------------------------------------------------------------------- output
_COLUMNS = (
    ("prompts", "prompts", "{:.0f}"),
    ("pass@1", "pass@1", "{:.3f}"),
    ("pass@G", None, "{:.3f}"),
    ("format", "format_rate", "{:.0%}"),
    ("reward", "reward_mean", "{:.3f}"),
    ("spread", "reward_std", "{:.3f}"),
    ("no signal", "zero_spread", "{:.0%}"),
)


def table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table, one row per label: the metrics at G, then the predicted no-signal share per G."""
    k = next(iter(results.values()))["k"]
    sizes = list(next(iter(results.values()))["predicted_zero_spread"])
    header = [
        "label",
        *(title.replace("G", str(k)) for title, _, _ in _COLUMNS),
        *(f"predicted @{size}" for size in sizes),
    ]
    rows = [
        [
            label,
            *(form.format(metrics[key or f"pass@{k}"]) for _, key, form in _COLUMNS),
            *(f"{metrics['predicted_zero_spread'][size]:.0%}" for size in sizes),
        ]
        for label, metrics in results.items()
    ]
    return markdown_table(header, rows)


def label_advice(results: Mapping[str, Mapping[str, Any]], can_warm_up: bool = True) -> list[str]:
    """One line per label (none when there is only one label): the verdict's rules applied to that label."""
    return [
        f"{label}: {advice} ({reason})"
        for label, metrics in results.items()
        if label != "all"
        for advice, reason in [verdict(metrics, can_warm_up)]
    ]


def write_results(out: Path, result: Mapping[str, Any]) -> None:
    """probe.json and probe.md."""
    write_atomic(out / RESULT, json.dumps(result, indent=2) + "\n")
    config = result["config"]
    adapter = f" + adapter `{config['adapter']}`" if config["adapter"] else ""
    advice = "".join(f"- {line}\n" for line in result["label_advice"])
    advice = f"Per label:\n\n{advice}\n" if advice else ""
    text = (
        f"# Learnability probe: {config['task']}\n\nmodel `{config['model']}`{adapter}, split "
        f"`{config['split']}`: {config['num']} prompts x {config['k']} completions, temperature "
        f"{config['temperature']}, max_new_tokens {config['max_new_tokens']}; rewards "
        f"{', '.join(result['reward_funcs'])} (weights {result['reward_weights']}); "
        f"{result['seconds']} s.\n\n"
        '"no signal": share of groups whose rewards are all equal (TRL\'s frac_reward_zero_std); '
        '"predicted @g": that share expected with g completions per prompt.\n\n'
        f"{table(result['results'])}\n\n{advice}"
        f"{result['verdict']}\n"
    )
    write_atomic(out / REPORT, text)
