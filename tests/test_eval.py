"""``grpolab eval``: pass@k, metrics, continuous batching vs. one-at-a-time, resume, compare, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from grpolab import cli
from grpolab.errors import UserError
from grpolab.evaluation import metrics as eval_metrics
from grpolab.evaluation import report as eval_report
from grpolab.evaluation import runner as evaluation
from grpolab.evaluation import samples as eval_samples
from grpolab.evaluation.config import EvalConfig


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def eval_tokenizer():
    """The embedded model's tokenizer (its chat template is what eval applies)."""
    from grpolab import models

    return models.load_tokenizer(models.resolve(models.DEFAULT_MODEL))


@pytest.fixture(scope="session")
def eval_tiny_model_dir(tmp_path_factory, eval_tokenizer) -> Path:
    """A 2-layer random Llama (width 16) with the embedded tokenizer, saved as a plain checkpoint.

    Initialised with a wide spread (0.5, not 0.02) so that its greedy output depends on the prompt and on
    positions: with the default, every prompt gets nearly the same completion and a batching bug that
    mixes up rows or positions would go unseen.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(eval_tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        initializer_range=0.5,
        eos_token_id=eval_tokenizer.eos_token_id,
        pad_token_id=eval_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eval_tokenizer.eos_token_id, pad_token_id=eval_tokenizer.pad_token_id
    )
    directory = tmp_path_factory.mktemp("eval-tiny-model")
    model.save_pretrained(directory)
    eval_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def eval_tiny_model(eval_tiny_model_dir):
    from grpolab.models import load_for_inference

    model, tokenizer, _ = load_for_inference(str(eval_tiny_model_dir))
    return model, tokenizer


def _samples(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "samples.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ pass@k
@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
        (4, 1, 1, 0.25),  # pass@1 is c/n
        (4, 3, 1, 0.75),
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
        (4, 1, 4, 1.0),  # any correct among all n
        (4, 0, 4, 0.0),
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (5, 3, 3, 1.0),  # n - c < k: every 3-subset holds a correct one
        (200, 1, 100, 0.5),
    ],
)
def test_pass_at_k_values(n, c, k, expected):
    assert eval_metrics.pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 1, 5), (4, 1, 0)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        eval_metrics.pass_at_k(n, c, k)


# ----------------------------------------------------------------------------------------------- metrics
def _record(
    index,
    sample,
    label,
    solved,
    parsed="1",
    partial=None,
    format_ok=True,
    lenient=None,
    tokens=5,
    truncated=False,
):
    return {
        "index": index,
        "sample": sample,
        "label": label,
        "answer": "1",
        "solved": solved,
        "parsed": parsed,
        "partial": float(solved) if partial is None else partial,
        "format_ok": format_ok,
        "lenient": lenient,
        "tokens": tokens,
        "truncated": truncated,
    }


def test_summarize_overall_and_per_label():
    records = [
        _record(0, 0, "easy", True, tokens=4),
        _record(1, 0, "easy", True, tokens=6),
        _record(2, 0, "easy", False, parsed=None, format_ok=False, tokens=20, truncated=True),
        _record(3, 0, "hard", False, partial=0.5, tokens=10),
    ]
    metrics = eval_metrics.summarize(records)
    assert metrics["items"] == 4 and metrics["samples_per_item"] == 1
    assert metrics["accuracy"] == 0.5
    assert metrics["accuracy_by_label"] == {"easy": pytest.approx(2 / 3), "hard": 0.0}
    assert metrics["items_by_label"] == {"easy": 3, "hard": 1}
    assert metrics["partial_mean"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert metrics["format_rate"] == 0.75
    assert metrics["unparseable_rate"] == 0.25
    assert metrics["truncated_rate"] == 0.25
    assert metrics["mean_completion_tokens"] == 10.0
    assert metrics["lenient_accuracy"] is None  # no verdict had a lenient check
    assert not any(key.startswith("pass@") for key in metrics)
    # Wilson 2/4: centre .5, half-width 1.96 * sqrt(.0625 + .060024) / 1.9604 = .34996 (see test_stats.py)
    assert metrics["ci95"]["method"] == "wilson"
    assert metrics["ci95"]["accuracy"] == [
        pytest.approx(0.150039, abs=1e-6),
        pytest.approx(0.849961, abs=1e-6),
    ]
    assert metrics["ci95"]["accuracy_by_label"]["hard"] == [0.0, pytest.approx(0.793451, abs=1e-6)]  # 0 of 1
    assert "lenient_accuracy" not in metrics["ci95"] and "checks" not in metrics


def test_summarize_with_k_samples_reports_pass_at_levels_and_lenient():
    # item 0: 1 of 4 solved; item 1: 4 of 4; item 2: 0 of 4. Records arrive out of order, as from batches.
    solved = {0: [True, False, False, False], 1: [True] * 4, 2: [False] * 4}
    records = [
        _record(i, s, "a" if i < 2 else "b", solved[i][s], lenient=solved[i][s] or s == 0)
        for s in reversed(range(4))
        for i in (2, 0, 1)
    ]
    metrics = eval_metrics.summarize(records)
    assert metrics["samples_per_item"] == 4
    assert metrics["accuracy"] == pytest.approx(5 / 12)
    assert metrics["pass@1"] == pytest.approx(5 / 12)  # mean@k is the pass@1 estimate
    assert metrics["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)  # 1 - C(3,2)/C(4,2) = 0.5 for item 0
    assert metrics["pass@4"] == pytest.approx(2 / 3)
    assert "pass@3" not in metrics
    assert metrics["accuracy_by_label"] == {"a": pytest.approx(5 / 8), "b": 0.0}
    assert metrics["lenient_accuracy"] == pytest.approx(
        6 / 12
    )  # 5 solved + the unsolved first sample of item 2
    # k > 1: bootstrap over the 3 items' means (.25, 1, 0): the interval spans what resampling them can give
    assert metrics["ci95"]["method"].startswith("bootstrap over items")
    low, high = metrics["ci95"]["accuracy"]
    assert 0.0 <= low < 5 / 12 < high <= 1.0 and low <= 0.25 / 3 + 1e-9 and high >= 2.25 / 3 - 1e-9
    assert set(metrics["ci95"]) >= {"pass@1", "pass@2", "pass@4", "lenient_accuracy", "accuracy_by_label"}


def test_summarize_reports_each_task_check_with_an_interval():
    records = [{**_record(i, 0, "x", i < 2), "checks": {"lm-eval strict-match": i < 3}} for i in range(4)]
    metrics = eval_metrics.summarize(records)
    assert metrics["checks"] == {"lm-eval strict-match": 0.75}
    # Wilson 3/4: centre (.75 + .48) / 1.9604 = .62742, half-width 1.96 * sqrt(.046875 + .060024) / 1.9604
    assert metrics["ci95"]["checks"]["lm-eval strict-match"] == [
        pytest.approx(0.300642, abs=1e-6),
        pytest.approx(0.954413, abs=1e-6),
    ]
    assert eval_report.table_values(metrics)["lm-eval strict-match"] == (
        0.75,
        "pct",
        metrics["ci95"]["checks"]["lm-eval strict-match"],
    )
    records[0].pop("checks")  # a sample from before the check existed: no partial figure
    assert "checks" not in eval_metrics.summarize(records)


# ------------------------------------------------------------------------- batched vs one at a time
def _one_at_a_time(model, tokenizer, chats, max_new_tokens):
    """Reference: plain ``generate()`` per chat, cut at the first stop token: (texts, token lists)."""
    import torch

    from grpolab.generation.continuous_batching import stop_token_ids
    from grpolab.generation.hf import encode_chats

    stop, texts, completions = set(stop_token_ids(model, tokenizer)), [], []
    for chat in chats:
        batch = encode_chats(tokenizer, [chat])
        with torch.inference_mode():
            output = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        tokens = output[0, batch["input_ids"].shape[1] :].tolist()
        tokens = tokens[: next((i for i, token in enumerate(tokens) if token in stop), len(tokens))]
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
        completions.append(tokens)
    return texts, completions


CHATS = [
    [{"role": "user", "content": text}]
    for text in (
        "What is 3 + 4?",
        "hi",
        "Solve this 4x4 Sudoku:\n1 . . 4\n. . 1 .\n. 1 . .\n4 . . 1",
        "What is 12 - 5?",
        "Name three colours and say which one you like best, with a reason.",
        "2 * 6 = ?",
        "ok",
    )
]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_continuous_batching_matches_one_at_a_time_greedy(eval_tiny_model, batch_size, monkeypatch):
    from grpolab.generation.continuous_batching import generate_stream
    from grpolab.generation.settings import GenerationSettings

    model, tokenizer = eval_tiny_model
    # A random model never says EOS; make a token that some completions have and others lack a stop token
    # too, so rows finish at different steps, leave the batch and let waiting prompts in, next to rows
    # with a longer cache (the paths worth testing).
    _, free_running = _one_at_a_time(model, tokenizer, CHATS, 10)
    stop = next(token for token in free_running[0] if any(token not in other for other in free_running))
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tokenizer.eos_token_id, stop])
    expected_texts, expected_tokens = _one_at_a_time(model, tokenizer, CHATS, 10)
    expected_lengths = [len(tokens) for tokens in expected_tokens]
    assert len(set(expected_lengths)) > 1, "the stop token should end completions at different steps"
    settings = GenerationSettings(max_new_tokens=10)
    results = {
        chat: (texts, lengths)
        for chat, texts, lengths in generate_stream(model, tokenizer, CHATS, settings, batch_size=batch_size)
    }
    assert sorted(results) == list(range(len(CHATS)))
    assert [results[i][0][0] for i in range(len(CHATS))] == expected_texts
    assert [results[i][1][0] for i in range(len(CHATS))] == expected_lengths


def test_generate_ids_keeps_each_budget_and_the_stop_token(eval_tiny_model, monkeypatch):
    """What a batched tool episode needs: token-id contexts, a budget per row, the stop token kept."""
    from grpolab.generation.continuous_batching import generate_ids
    from grpolab.generation.settings import GenerationSettings

    model, tokenizer = eval_tiny_model
    _, free_running = _one_at_a_time(model, tokenizer, CHATS, 10)
    stop = next(token for token in free_running[0] if any(token not in other for other in free_running))
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tokenizer.eos_token_id, stop])
    _, expected = _one_at_a_time(model, tokenizer, CHATS, 10)
    contexts = [tokenizer(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"] for chat in CHATS]
    budgets = [10, 3, 10, 1, 10, 5, 10]
    settings = GenerationSettings(max_new_tokens=2)  # the budgets rule, not this
    got = generate_ids(model, tokenizer, contexts, budgets, settings, batch_size=3)
    for tokens, budget, ids in zip(expected, budgets, got, strict=True):
        if len(tokens) < budget:  # stopped: the stop token is kept at the end
            assert ids[:-1] == tokens and ids[-1] in (stop, tokenizer.eos_token_id)
        else:  # cut at its own budget
            assert ids == tokens[:budget]
    assert any(len(tokens) < budget for tokens, budget in zip(expected, budgets, strict=True))
    assert generate_ids(model, tokenizer, [], [], GenerationSettings()) == []


def test_eager_attention_batching_matches_one_at_a_time_greedy(eval_tiny_model, monkeypatch):
    """The decoder's padding mask and position ids hold with eager attention as well as with SDPA."""
    from grpolab.generation.continuous_batching import generate_stream
    from grpolab.generation.settings import GenerationSettings

    model, tokenizer = eval_tiny_model
    monkeypatch.setattr(model.config, "_attn_implementation_internal", "eager")
    assert model.config._attn_implementation == "eager"
    expected_texts, expected_tokens = _one_at_a_time(model, tokenizer, CHATS, 6)
    results = {chat: (texts[0], lengths[0]) for chat, texts, lengths
               in generate_stream(model, tokenizer, CHATS, GenerationSettings(6), batch_size=3)}
    expected = list(zip(expected_texts, map(len, expected_tokens), strict=True))
    assert [results[i] for i in range(len(CHATS))] == expected


def test_default_batch_size_is_wide_on_the_cpu_and_32_on_an_accelerator():
    import torch

    from grpolab.generation.continuous_batching import default_batch_size

    assert default_batch_size(torch.device("cpu")) == default_batch_size("cpu") == 128
    assert default_batch_size(torch.device("cuda", 0)) == default_batch_size("cuda") == 32
    assert default_batch_size("mps") == 32


def test_no_batch_size_decodes_with_the_device_default(eval_tiny_model, monkeypatch):
    """batch_size None (eval's and probe's default) takes the model's device default, not 1 or all."""
    from grpolab.generation import continuous_batching
    from grpolab.generation.settings import GenerationSettings

    model, tokenizer = eval_tiny_model
    widths = []
    original = continuous_batching._Decoder.run
    monkeypatch.setattr(continuous_batching._Decoder, "run",
                        lambda self, batch_size: widths.append(batch_size) or original(self, batch_size))
    monkeypatch.setattr(continuous_batching, "CPU_BATCH_SIZE", 2)
    results = list(continuous_batching.generate_stream(model, tokenizer, CHATS, GenerationSettings(3)))
    assert widths == [2] and sorted(chat for chat, _, _ in results) == list(range(len(CHATS)))
    assert EvalConfig(model="m").batch_size is None


def test_sampling_gives_k_completions_per_chat(eval_tiny_model):
    from grpolab.generation.continuous_batching import generate_stream
    from grpolab.generation.settings import GenerationSettings

    model, tokenizer = eval_tiny_model
    settings = GenerationSettings(
        max_new_tokens=6, temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.2
    )
    results = list(
        generate_stream(model, tokenizer, CHATS[:3], settings, num_return_sequences=4, batch_size=5)
    )
    assert sorted(chat for chat, _, _ in results) == [0, 1, 2]
    assert all(len(texts) == 4 and len(lengths) == 4 for _, texts, lengths in results)
    assert any(len(set(texts)) > 1 for _, texts, _ in results)  # sampled, not four greedy copies


# ------------------------------------------------------------------------------------- end to end + resume
def _config(model_dir, **overrides) -> EvalConfig:
    return EvalConfig(
        **{"model": str(model_dir), "num": 6, "max_new_tokens": 4, "batch_size": 4, **overrides}
    )


def test_eval_writes_files_and_metrics_agree_with_samples(eval_tiny_model_dir, tmp_path):
    out, metrics = evaluation.evaluate(_config(eval_tiny_model_dir), tmp_path / "eval", progress=False)
    samples = _samples(out)
    assert sorted(s["index"] for s in samples) == list(range(6))
    assert metrics["items"] == 6
    assert metrics["accuracy"] == sum(s["solved"] for s in samples) / 6
    assert metrics["mean_completion_tokens"] == sum(s["tokens"] for s in samples) / 6
    assert all(s["tokens"] <= 4 and s["truncated"] == (s["tokens"] == 4) for s in samples)
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert (out / "accuracy_by_label.png").stat().st_size > 0
    assert "| strict accuracy" in (out / "report.md").read_text()


def test_resume_generates_only_missing_items(eval_tiny_model_dir, tmp_path, monkeypatch):
    out, first = evaluation.evaluate(_config(eval_tiny_model_dir), tmp_path / "eval", progress=False)
    lines = (out / "samples.jsonl").read_text().splitlines()
    kept = [json.loads(line)["index"] for line in lines[:2]]
    # Two items survive; a third was being written when the run was killed.
    (out / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    generated: list[int] = []
    real_stream = evaluation.generate_stream

    def counting_stream(model, tokenizer, chats, *args, **kwargs):
        generated.append(len(chats))
        yield from real_stream(model, tokenizer, chats, *args, **kwargs)

    monkeypatch.setattr(evaluation, "generate_stream", counting_stream)
    _, resumed = evaluation.evaluate(_config(eval_tiny_model_dir), out, resume=True, progress=False)
    assert generated == [4]
    samples = _samples(out)
    assert sorted(s["index"] for s in samples) == list(range(6))
    assert [s["index"] for s in samples[:2]] == kept
    assert resumed["items"] == 6 and resumed["accuracy"] == first["accuracy"]
    # Nothing left to do: no model call at all.
    evaluation.evaluate(_config(eval_tiny_model_dir), out, resume=True, progress=False)
    assert generated == [4]


def test_resume_refuses_other_settings(eval_tiny_model_dir, tmp_path):
    out, _ = evaluation.evaluate(_config(eval_tiny_model_dir, num=2), tmp_path / "eval", progress=False)
    with pytest.raises(UserError, match=r"cannot --resume .* \(max_new_tokens 4 -> 5\)"):
        evaluation.evaluate(
            _config(eval_tiny_model_dir, num=2, max_new_tokens=5), out, resume=True, progress=False
        )


def test_run_directory_gives_base_model_task_and_options(eval_tiny_model_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(eval_tiny_model_dir),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    model.save_pretrained(run)
    (run / "grpolab_run.json").write_text(
        json.dumps(
            {"base_model": str(eval_tiny_model_dir), "task": "arith", "task_options": {"levels": "add-10"}}
        )
    )
    code = cli.main(["eval", "--adapter", str(run), "--num", "3", "--max_new_tokens", "3", "--no_progress"])
    assert code == 0
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["name"] == f"{eval_tiny_model_dir.name} + run"
    assert (metrics["config"]["model"], metrics["config"]["task"]) == (str(eval_tiny_model_dir), "arith")
    assert metrics["items_by_label"] == {"add-10": 3}
    assert "| strict accuracy" in capsys.readouterr().out


def test_run_directory_gives_its_completion_length_and_a_flag_wins(
    eval_tiny_model_dir, tmp_path, caplog, trained_run
):
    import logging

    run = trained_run(tmp_path / "run", eval_tiny_model_dir, max_completion_length=5)
    caplog.set_level(logging.DEBUG, logger="grpolab.evaluation.runner")
    assert cli.main(["eval", "--adapter", str(run), "--num", "2", "--no_progress"]) == 0
    recorded = json.loads((run / "eval-test" / "eval_config.json").read_text())
    source = f"max_completion_length in {run / 'config.yaml'}"
    assert (recorded["max_new_tokens"], recorded["max_new_tokens_from"]) == (5, source)
    assert json.loads((run / "eval-test" / "metrics.json").read_text())["config"]["max_new_tokens"] == 5
    assert f"max_new_tokens 5 ({source})" in caplog.text
    assert f"max_new_tokens 5 ({source})" in (run / "eval-test" / "report.md").read_text()
    assert max(sample["tokens"] for sample in _samples(run / "eval-test")) <= 5

    out = tmp_path / "flag"
    assert (
        cli.main(
            [
                "eval",
                "--adapter",
                str(run),
                "--num",
                "2",
                "--max_new_tokens",
                "2",
                "--no_progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    recorded = json.loads((out / "eval_config.json").read_text())
    assert (recorded["max_new_tokens"], recorded["max_new_tokens_from"]) == (2, "--max_new_tokens")
    assert all(sample["tokens"] <= 2 for sample in _samples(out))


def test_an_eval_of_a_run_reads_and_checks_it_once(eval_tiny_model_dir, tmp_path, trained_run, monkeypatch):
    from grpolab import models, rundir

    run = trained_run(tmp_path / "run", eval_tiny_model_dir, max_completion_length=3)
    calls = {"run info": 0, "recipe": 0, "weights": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    for module in (rundir, models):
        monkeypatch.setattr(module, "read_run_info", counting("run info", rundir.read_run_info))
    monkeypatch.setattr(rundir, "read_recipe", counting("recipe", rundir.read_recipe))
    monkeypatch.setattr(rundir, "damaged_weights", counting("weights", rundir.damaged_weights))
    config = EvalConfig(model=str(eval_tiny_model_dir), adapter=str(run), num=2)
    _, metrics = evaluation.evaluate(config, tmp_path / "eval", progress=False)
    assert calls == {"run info": 1, "recipe": 1, "weights": 1}
    recorded = metrics["config"]
    assert (recorded["max_new_tokens"], recorded["task_options"]) == (3, {"levels": "add-10"})


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("run", 1648),  # the run directory itself
        ("checkpoint", 1648),  # run/checkpoint-20: the run's config.yaml is one level up
        ("merged", 1648),  # a merged model names its adapter in grpolab_merge.json
        ("plain_adapter", 256),  # a PEFT adapter with no config.yaml
        ("sft_run", 256),  # an SFT run: SFTConfig has no max_completion_length
        ("base_model", 256),  # no adapter at all
    ],
)
def test_run_max_new_tokens_table(tmp_path, layout, expected):
    import yaml

    from grpolab.rundir import read_run

    adapter_config = json.dumps({"base_model_name_or_path": "x"})
    run = tmp_path / "run"
    (run / "checkpoint-20").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"max_completion_length": 1648}))
    (run / "grpolab_run.json").write_text(json.dumps({"base_model": "x", "task": "arith"}))
    (run / "checkpoint-20" / "adapter_config.json").write_text(adapter_config)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "grpolab_merge.json").write_text(json.dumps({"adapter": str(run), "base_model": "x"}))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "adapter_config.json").write_text(adapter_config)
    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "config.yaml").write_text(yaml.safe_dump({"max_length": 1024}))
    (sft / "grpolab_run.json").write_text(json.dumps({"base_model": "x", "task": "arith"}))
    arguments = {
        "run": (str(run), None),
        "checkpoint": (str(run / "checkpoint-20"), None),
        "merged": (None, str(merged)),
        "plain_adapter": (str(plain), None),
        "sft_run": (str(sft), None),
        "base_model": (None, "smollm2-135m-instruct"),
    }[layout]
    defaults = read_run(*arguments)
    assert defaults.max_new_tokens == expected
    from_run = f"max_completion_length in {run / 'config.yaml'}"
    assert defaults.max_new_tokens_from == (from_run if expected == 1648 else "the default")


def test_a_broken_run_config_is_one_line(tmp_path):
    from grpolab.rundir import read_recipe

    (tmp_path / "config.yaml").write_text("max_completion_length: [1648\n")
    with pytest.raises(UserError, match=r"config.yaml is not valid YAML: repair it, or restore the file"):
        read_recipe(str(tmp_path))


def test_k_samples_end_to_end(eval_tiny_model_dir, tmp_path):
    config = _config(eval_tiny_model_dir, num=3, k=3, temperature=1.0)
    out, metrics = evaluation.evaluate(config, tmp_path / "eval", progress=False)
    samples = _samples(out)
    assert sorted((s["index"], s["sample"]) for s in samples) == [(i, s) for i in range(3) for s in range(3)]
    assert metrics["samples_per_item"] == 3 and {"pass@1", "pass@2", "pass@3"} <= set(metrics)


# ---------------------------------------------------------------------------------------------- compare
def _write_eval(directory: Path, name: str, by_label: dict[str, float], accuracy: float) -> Path:
    directory.mkdir()
    metrics = {
        "name": name,
        "items": 4,
        "samples_per_item": 1,
        "accuracy": accuracy,
        "lenient_accuracy": None,
        "partial_mean": accuracy,
        "format_rate": 1.0,
        "unparseable_rate": 0.0,
        "truncated_rate": 0.0,
        "mean_completion_tokens": 7.0,
        "accuracy_by_label": by_label,
        "items_by_label": {},
        "config": {"task": "sudoku", "split": "test"},
    }
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_compare_table_values_and_files(tmp_path):
    base = _write_eval(tmp_path / "base", "base", {"simple": 0.5, "hard": 0.0}, 0.25)
    trained = _write_eval(tmp_path / "trained", "trained", {"simple": 1.0, "hard": 0.5}, 0.75)
    table = eval_report.compare(base, trained, tmp_path / "out")
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in table.splitlines()[2:]
    }
    assert [cell.strip() for cell in table.splitlines()[0].split("|")[1:-1]] == [
        "metric",
        "base",
        "trained",
        "difference",
    ]
    assert rows["strict accuracy"] == ["25.0%", "75.0%", "+50.0 pp"]
    assert rows["accuracy: simple"] == ["50.0%", "100.0%", "+50.0 pp"]
    assert rows["accuracy: hard"] == ["0.0%", "50.0%", "+50.0 pp"]
    assert rows["completion tokens (mean)"] == ["7.00", "7.00", "+0.00"]
    assert rows["lenient accuracy"] == ["-", "-", "-"]
    assert "solved by this run only" not in rows  # no samples: no paired test
    assert table in (tmp_path / "out" / "comparison.md").read_text()
    assert "No paired test" in (tmp_path / "out" / "comparison.md").read_text()
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 0


def _write_samples_eval(directory: Path, name: str, solved: list[bool]) -> Path:
    """An eval directory with real samples and the metrics summarize computes from them."""
    directory.mkdir()
    records = [{**_record(i, 0, "x", ok), "question": f"q{i}"} for i, ok in enumerate(solved)]
    eval_samples.append_samples(directory / "samples.jsonl", records)
    metrics = {"name": name, **eval_metrics.summarize(records), "config": {"task": "arith", "split": "test"}}
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_compare_shows_intervals_and_the_paired_test(tmp_path):
    # 20 items: both right on 3, only base on 1, only trained on 5, both wrong on 11.
    base = [True] * 3 + [True] + [False] * 5 + [False] * 11
    trained = [True] * 3 + [False] + [True] * 5 + [False] * 11
    a = _write_samples_eval(tmp_path / "base", "base", base)
    b = _write_samples_eval(tmp_path / "trained", "trained", trained)
    table = eval_report.compare(a, b, tmp_path / "out")
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in table.splitlines()[2:]
    }
    # Wilson 4/20 = [8.1, 41.6] and 8/20 = [21.9, 61.3]; McNemar on 1 vs 5 discordant: 2 * 7 / 64 = .219
    assert rows["strict accuracy"] == ["20.0% [8.1, 41.6]", "40.0% [21.9, 61.3]", "+20.0 pp"]
    assert rows["solved by this run only"] == ["1", "5", "McNemar p = 0.219"]
    note = (tmp_path / "out" / "comparison.md").read_text()
    assert "Paired test on the same 20 items" in note and "p = 0.219" in note


def test_paired_test_needs_the_same_items_and_uses_the_bootstrap_for_k_samples():
    one = [_record(i, 0, "x", i % 2 == 0) for i in range(6)]
    assert eval_metrics.paired_test(one, one[:5]) is None  # other items: no paired test
    assert eval_metrics.paired_test(one, [{**r, "answer": "2"} for r in one]) is None
    same = eval_metrics.paired_test(one, one)
    assert same["method"] == "exact McNemar" and (same["only_a"], same["only_b"], same["p_value"]) == (
        0,
        0,
        1.0,
    )
    k_a = [_record(i, s, "x", s == 0) for i in range(30) for s in range(2)]  # every item half solved
    k_b = [_record(i, s, "x", True) for i in range(30) for s in range(2)]  # every item solved
    paired = eval_metrics.paired_test(k_a, k_b)
    assert paired["method"] == "paired bootstrap" and paired["difference"] == pytest.approx(0.5)
    assert paired["p_value"] == pytest.approx(
        1 / 2001
    )  # every per-item difference is +.5: none resamples to 0


def test_compare_with_the_same_name_uses_directories(tmp_path):
    a = _write_eval(tmp_path / "a", "smollm2", {"x": 0.0}, 0.0)
    b = _write_eval(tmp_path / "b", "smollm2", {"x": 1.0}, 1.0)
    header = eval_report.compare(a, b, tmp_path / "out").splitlines()[0]
    assert str(a) in header and str(b) in header


# -------------------------------------------------------------------------------------------- bad input
def _bad_run(tmp_path: Path, base: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "grpolab_run.json").write_text(json.dumps({"base_model": base, "task": "arith"}))
    return run


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--k", "4"], "--k 4 needs sampling: add --temperature 0.7"),
        (["--num", "0"], "--num must be 1 or more, got 0"),
        (["--batch_size", "0"], "--batch_size must be 1 or more"),
        (["--adapter", "{tmp}/missing-run"], "does not exist"),
        (["--data_file", "{tmp}/bad.jsonl"], "bad.jsonl:2: not valid JSON"),
        (["--compare", "{tmp}"], "is not an eval output directory (no metrics.json)"),
        (["--task_options", "{levels"], "--task_options is not valid JSON"),
        (["--task", "chess"], "unknown task 'chess'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"question": "1 + 1", "answer": "2"}\n{not json\n')
    code = cli.main(
        ["eval", *(arg.replace("{tmp}", str(tmp_path)) for arg in argv), "--out", str(tmp_path / "out")]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith("grpolab eval: error: ") and message in error
    assert len(error.splitlines()) == 1


def test_adapter_of_another_base_model_is_refused(eval_tiny_model_dir, tmp_path, capsys):
    run = _bad_run(tmp_path, "HuggingFaceTB/SmolLM2-360M-Instruct")
    code = cli.main(["eval", "--adapter", str(run), "--model", str(eval_tiny_model_dir)])
    error = capsys.readouterr().err
    assert code == 2 and "was trained on 'HuggingFaceTB/SmolLM2-360M-Instruct'" in error


# ---------------------------------------------------------------------------------------- embedded model
@pytest.mark.slow
def test_embedded_model_on_arith(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "eval"
    code = cli.main(["eval", "--num", "8", "--max_new_tokens", "32", "--out", str(out), "--no_progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {
        "name",
        "items",
        "samples_per_item",
        "accuracy",
        "lenient_accuracy",
        "partial_mean",
        "format_rate",
        "unparseable_rate",
        "truncated_rate",
        "mean_completion_tokens",
        "accuracy_by_label",
        "items_by_label",
        "config",
        "ci95",
    }
    assert set(metrics) == expected
    low, high = metrics["ci95"]["accuracy"]
    assert metrics["ci95"]["method"] == "wilson" and 0 <= low <= metrics["accuracy"] <= high <= 1
    samples = _samples(out)
    assert len(samples) == metrics["items"] == 8
    assert metrics["accuracy"] == sum(s["solved"] for s in samples) / 8
    assert math.isclose(metrics["accuracy_by_label"]["add-20"], metrics["accuracy"])
    assert metrics["accuracy"] > 0  # SmolLM2-135M solves about half of these
    assert "strict accuracy" in capsys.readouterr().out
