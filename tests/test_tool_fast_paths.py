"""grpolab's CPU fast paths on a tool batch (issue 28): TRL's own tool loop builds a multi-turn batch (a
calculator call, its result as context with tool_mask 0, the answer), then the shared-prompt log-probs, the
loss and its gradients, and the shared-prefill generation of the turn after the tool result, each against
TRL's own method on that batch."""

from __future__ import annotations

import functools

import pytest
import torch

from grpolab.training import recipes
from grpolab.training.grpo_trainer import FastGRPOTrainer

CALL = '<tool_call>\n{{"name": "calculator", "arguments": {{"expression": "{}"}}}}\n</tool_call>'


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, tmp_path_factory):
    from grpolab.training.grpo import build_trainer

    argv = [
        "--task", "calc", "--num_train", "8", "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(tmp_path_factory.mktemp("tool-fast") / "run"), "--num_generations", "4",
        "--per_device_train_batch_size", "8", "--max_completion_length", "160", "--report_to", "none",
        "--plot", "false", "--max_tool_calling_iterations", "2",
    ]
    built = build_trainer(*recipes.parse_train_args(argv))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in built.model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    built.model.train()
    built.current_gradient_accumulation_steps = 1
    return built


def test_a_tool_run_keeps_the_cpu_fast_paths(trainer):
    assert isinstance(trainer, FastGRPOTrainer) and trainer.tools
    assert (trainer.logprob_mode, trainer.generation_mode) == ("shared", "shared")


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


@pytest.fixture(scope="module")
def tool_batch(trainer):
    """TRL's _generate_and_score_completions on 2 prompts x 4 rows, with the model's words scripted and
    everything else (parsing, the calculator, the tool suffix, tool_mask, rewards) TRL's own."""
    ids = functools.partial(_ids, trainer.processing_class)
    rows = [dict(row) for row in trainer.train_dataset.select(range(2)) for _ in range(4)]
    # three of four rows call the calculator, one answers from its head; after a result, half of the rows
    # answer and half call again
    first = [ids(CALL.format(row["question"])) if i % 4 < 3 else ids("56088") for i, row in enumerate(rows)]
    seen = []

    def scripted(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        seen.append([list(p) for p in prompt_ids])
        if len(seen) == 1:
            assert len(prompt_ids) == len(first)  # TRL repeats each prompt num_generations times
            return list(first), None
        return [ids("56088") if i % 2 else ids(CALL.format("1 + 1")) for i in range(len(prompt_ids))], None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "_generate_single_turn", scripted)
        output = trainer._generate_and_score_completions(rows)
    return output, seen


def test_trl_tool_loop_builds_a_multi_turn_batch(tool_batch, trainer):
    output, seen = tool_batch
    mask = output["tool_mask"]
    # 6 rows called the tool: their result tokens are context (0); the row that answered at once has none
    assert [bool((m == 0).any()) for m in mask] == [True, True, True, False] * 2
    assert len(seen) == 3  # the first turn, the turn after the first results, the turn after "1 + 1"
    assert len(seen[1]) == 6 and len(seen[2]) == 3
    text = trainer.processing_class.decode(output["completion_ids"][1])  # call, result, answer
    assert "56088" in text and "<tool_response>" in text


def _trl(trainer):
    from trl import GRPOTrainer

    return functools.partial(GRPOTrainer._get_per_token_logps_and_entropies, trainer)


def _ids_and_mask(output):
    return (torch.cat([output["prompt_ids"], output["completion_ids"]], 1),
            torch.cat([output["prompt_mask"], output["completion_mask"]], 1))


def test_shared_logprobs_on_a_tool_batch_match_trl(tool_batch, trainer, monkeypatch):
    from grpolab.training import grpo_trainer

    output, _ = tool_batch
    calls = []
    original = grpo_trainer.shared_prompt_logits

    def spy(model, prompts, *rest):
        calls.append(len(prompts))
        return original(model, prompts, *rest)

    monkeypatch.setattr(grpo_trainer, "shared_prompt_logits", spy)
    ids, mask = _ids_and_mask(output)
    keep = output["completion_ids"].size(1)
    ours = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep, compute_entropy=True)
    theirs = _trl(trainer)(trainer.model, ids, mask, keep, compute_entropy=True)
    assert calls == [2]  # the two prompts, once each, for eight multi-turn rows
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-5, rtol=0)


def test_loss_and_gradients_on_a_tool_batch_match_trl(tool_batch, trainer, monkeypatch):
    output, _ = tool_batch
    inputs = dict(output)
    ids, mask = _ids_and_mask(inputs)
    keep = inputs["completion_ids"].size(1)
    noise = torch.randn(inputs["completion_ids"].shape, generator=torch.Generator().manual_seed(3)) * 0.3
    inputs["old_per_token_logps"] = _trl(trainer)(trainer.model, ids, mask, keep)[0].detach() + noise
    inputs["advantages"] = torch.tensor([1.0, -0.5, 0.25, -0.75, 0.5, -1.0, 0.75, -0.25])
    results = []
    for logprobs in (None, _trl(trainer)):
        if logprobs is not None:
            monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", logprobs)
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                                        if p.grad is not None}))
    (loss, grads), (trl_loss, trl_grads) = results
    assert float(loss.abs()) > 1e-3
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    assert grads.keys() == trl_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], trl_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    # the tool result is not trained on: with tool_mask dropped the loss changes
    unmasked = {k: v for k, v in inputs.items() if k != "tool_mask"}
    assert abs(float(trainer._compute_loss(trainer.model, unmasked)) - float(trl_loss)) > 1e-4


@pytest.mark.parametrize("do_sample", [True, False])
def test_the_turn_after_a_tool_result_samples_what_trl_samples(tool_batch, trainer, monkeypatch, do_sample):
    """The second turn's prompts (prompt + call + result, rows of a group alike) through the shared prefill
    and merged LoRA give TRL's tokens with the same seed."""
    _, seen = tool_batch
    prompts = seen[1]
    assert len({tuple(p) for p in prompts}) == 2  # three identical calls per question: shared prefill applies
    monkeypatch.setattr(trainer.generation_config, "do_sample", do_sample)
    monkeypatch.setattr(trainer.generation_config, "min_new_tokens", 5)
    monkeypatch.setattr(trainer.generation_config, "max_new_tokens", 5)
    samples = {}
    for mode in ("trl", "shared"):
        monkeypatch.setattr(trainer, "generation_mode", mode)
        torch.manual_seed(7)
        samples[mode], _ = trainer._generate_single_turn(prompts, None, {}, 1)
    assert samples["shared"] == samples["trl"] and all(len(s) == 5 for s in samples["trl"])
