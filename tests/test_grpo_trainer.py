"""The plain log-prob path (grpolab.training.grpo_trainer) against TRL's fused LM head, on the same batch."""

from __future__ import annotations

import functools

import pytest
import torch
from trl.trainer.utils import disable_dropout_in_model

from grpolab.errors import UserError
from grpolab.training import recipes
from grpolab.training.grpo_trainer import (
    FastGRPOTrainer,
    PlainLogprobGRPOTrainer,
    SharedPromptGRPOTrainer,
    generation_path,
    mergeable_lora_layers,
    selective_logprobs,
    trainer_class,
    zero_uniform_groups,
)


@pytest.mark.parametrize("entropy_grad", [False, True])
def test_selective_logprobs_match_log_softmax(entropy_grad):
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 97) * 4).requires_grad_()
    targets = torch.randint(0, 97, (3, 5))
    logps, entropy = selective_logprobs(logits, targets, True, entropy_grad)
    reference = logits.log_softmax(-1)
    torch.testing.assert_close(logps, reference.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(entropy, -(reference.exp() * reference).sum(-1))
    assert entropy.requires_grad is entropy_grad
    assert selective_logprobs(logits, targets, False, False)[1] is None


@pytest.mark.parametrize(
    ("choice", "device", "expected", "mode"),
    [
        ("auto", "cpu", SharedPromptGRPOTrainer, "shared"),
        ("auto", "cuda", FastGRPOTrainer, "fused"),
        ("plain", "cuda", PlainLogprobGRPOTrainer, "plain"),
        ("shared", "cuda", SharedPromptGRPOTrainer, "shared"),
        ("fused", "cpu", FastGRPOTrainer, "fused"),
    ],
)
def test_trainer_class_follows_the_recipe_key(choice, device, expected, mode):
    chosen = trainer_class(choice, device)
    assert chosen is expected and chosen.logprob_mode == mode


@pytest.mark.parametrize(
    ("choice", "device", "expected"),
    [
        ("auto", "cpu", "shared"),
        ("auto", "cuda", "trl"),
        ("merged", "cuda", "merged"),
        ("trl", "cpu", "trl"),
    ],
)
def test_generation_path_follows_the_recipe_key(choice, device, expected):
    assert generation_path(choice, device) == expected


@pytest.mark.parametrize("flag", ["--logprobs", "--generation"])
def test_an_unknown_path_value_is_refused(flag):
    with pytest.raises(UserError, match=flag):
        recipes.parse_train_args([flag, "fast"])


@pytest.fixture(scope="module", params=["shared", "plain"])
def trainer(request, tiny_model_dir, tmp_path_factory):
    from grpolab.training.grpo import build_trainer

    out = tmp_path_factory.mktemp("fast-grpo")
    argv = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--num_train",
        "8",
        "--per_device_train_batch_size",
        "4",
        "--num_generations",
        "4",
        "--max_completion_length",
        "6",
        "--temperature",
        "0.7",
        "--plot",
        "false",
        "--logprobs",
        request.param,
    ]
    built = build_trainer(*recipes.parse_train_args(argv))
    assert isinstance(built, FastGRPOTrainer) and built.logprob_mode == request.param
    assert built.share_prompts is (request.param == "shared")
    assert built.generation_mode == "shared"  # the CPU default
    built.generation_mode = "trl"  # each test picks its own
    # The tiny model's LoRA B starts at zero; a random adapter makes the gradients depend on it.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in built.model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    built.model.train()
    built.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the loss divides by it
    return built


def batch(tokenizer_pad: int, vocab: int) -> dict[str, torch.Tensor]:
    """4 sequences: left-padded prompts of 3-7 tokens (rows 0 and 2 share one, as a GRPO group does),
    completions of 2-6 tokens padded on the right."""
    torch.manual_seed(2)
    prompt_ids = torch.randint(0, vocab, (4, 7))
    prompt_mask = torch.ones(4, 7, dtype=torch.long)
    for row, length in enumerate((5, 7, 5, 3)):
        prompt_mask[row, : 7 - length] = 0
        prompt_ids[row, : 7 - length] = tokenizer_pad
    prompt_ids[2] = prompt_ids[0]
    completion_ids = torch.randint(0, vocab, (4, 6))
    completion_mask = torch.ones(4, 6, dtype=torch.long)
    for row, length in enumerate((6, 2, 4, 5)):
        completion_mask[row, length:] = 0
        completion_ids[row, length:] = tokenizer_pad
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([1.0, -0.5, 0.25, -0.75]),
        "num_items_in_batch": completion_mask.sum().float(),
    }


def trl_logprobs(trainer):
    from trl import GRPOTrainer

    return functools.partial(GRPOTrainer._get_per_token_logps_and_entropies, trainer)


def test_plain_logprobs_and_entropies_match_trl(trainer, monkeypatch):
    from grpolab.training import grpo_trainer as fast_grpo

    shared_calls = []
    original = fast_grpo.shared_prompt_logits

    def spy(model, prompts, *rest):
        shared_calls.append(len(prompts))
        return original(model, prompts, *rest)

    monkeypatch.setattr(fast_grpo, "shared_prompt_logits", spy)
    inputs = batch(trainer.processing_class.pad_token_id, trainer.model.config.vocab_size)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    ours = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 6, compute_entropy=True)
    # the shared path runs the 3 distinct prompts of the 4 rows once each
    assert shared_calls == ([3] if trainer.share_prompts else [])
    theirs = trl_logprobs(trainer)(trainer.model, ids, mask, 6, compute_entropy=True)
    assert ours[0].shape == theirs[0].shape == (4, 6)
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-5, rtol=0)
    # Padding after EOS scores 0 on both paths; real tokens get real log-probs.
    logps = ours[0].detach()
    assert float(logps[1, 2:].abs().max()) == 0.0 and float(logps[1, :2].max()) < -1.0
    # Chunked (batch_size=1, as in TRL's no-grad forwards) gives the same values.
    chunked = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 6, batch_size=1)
    torch.testing.assert_close(chunked[0], ours[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("entropy_coef", [0.0, 0.1])
def test_plain_loss_and_gradients_match_trl(trainer, entropy_coef, monkeypatch):
    inputs = batch(trainer.processing_class.pad_token_id, trainer.model.config.vocab_size)
    # On-policy, GRPO's loss value is -A * exp(logp - logp.detach()) = -A whatever the log-probs; old
    # log-probs from an earlier policy (as with num_iterations > 1) make the value depend on them, and
    # some ratios leave TRL's clipping range (epsilon 0.2).
    old = torch.randn(inputs["completion_ids"].shape, generator=torch.Generator().manual_seed(3)) * 0.3
    inputs["old_per_token_logps"] = (
        trl_logprobs(trainer)(
            trainer.model,
            torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            6,
        )[0].detach()
        + old
    )
    if entropy_coef:
        # TRL's entropy bonus: the entropies then carry gradient into the loss
        monkeypatch.setattr(trainer, "_entropy_bonus_enabled", True, raising=False)
        monkeypatch.setattr(trainer, "entropy_coef", entropy_coef, raising=False)
    results = []
    for logprobs in (None, trl_logprobs(trainer)):
        if logprobs is not None:
            monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", logprobs)
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss, grads), (trl_loss, trl_grads) = results
    assert float(loss.abs()) > 1e-3
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    assert grads.keys() == trl_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], trl_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def _prompts(trainer) -> list[list[int]]:
    """A GRPO generation batch: 2 prompts of different lengths (so one is left-padded), 4 copies each."""
    vocab = trainer.model.config.vocab_size
    generator = torch.Generator().manual_seed(4)
    first, second = (torch.randint(0, vocab, (n,), generator=generator).tolist() for n in (9, 6))
    return [first] * 4 + [second] * 4


def _generate(trainer, mode, prompts, seed=5):
    trainer.generation_mode = mode
    torch.manual_seed(seed)
    try:
        completions, _ = trainer._generate_single_turn(prompts, None, {}, 4)
    finally:
        trainer.generation_mode = "trl"
    return completions


@pytest.mark.parametrize("do_sample", [True, False])
def test_fast_generation_samples_what_trl_samples(trainer, monkeypatch, do_sample):
    """Same seed, same completions: the logits agree and the random draws come in the same order."""
    from grpolab.training import grpo_trainer as fast_grpo

    monkeypatch.setattr(trainer.generation_config, "do_sample", do_sample)
    monkeypatch.setattr(trainer.generation_config, "min_new_tokens", 6)  # the tiny model ends at random
    prefills = []
    original = fast_grpo.distinct_prompt_cache

    def spy(model, input_ids, attention_mask):
        cache = original(model, input_ids, attention_mask)
        prefills.append((input_ids.shape, cache.get_seq_length()))
        return cache

    monkeypatch.setattr(fast_grpo, "distinct_prompt_cache", spy)
    base = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    grad_flags = {name: param.requires_grad for name, param in trainer.model.named_parameters()}
    prompts = _prompts(trainer)
    stock = _generate(trainer, "trl", prompts)
    assert len(stock) == 8 and all(len(ids) == 6 for ids in stock)
    assert stock[0] != stock[1] if do_sample else stock[0] == stock[1]
    assert _generate(trainer, "merged", prompts) == stock
    assert prefills == []
    assert _generate(trainer, "shared", prompts) == stock
    # 8 rows of 9 prompt tokens (the 6-token prompt left-padded); the cache holds all but the last
    assert prefills == [(torch.Size([8, 9]), 8)]
    # the frozen base weights are bit for bit what they were, the adapters trainable and active again
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, base[name]), name
        assert param.requires_grad is grad_flags[name], name
    layers = mergeable_lora_layers(trainer.model)
    assert layers and not any(layer.disable_adapters for layer in layers)
    assert "generate" not in vars(trainer.model)


def test_merged_generation_differs_from_the_base_model(trainer):
    """The adapters do count while merged: with LoRA B zeroed the greedy completions change."""
    prompts = _prompts(trainer)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.generation_config, "do_sample", False)
        patch.setattr(trainer.generation_config, "min_new_tokens", 6)
        merged = _generate(trainer, "shared", prompts)
        saved = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
        with torch.no_grad():
            for name, param in trainer.model.named_parameters():
                if "lora_B" in name:
                    param.zero_()
        try:
            base_only = _generate(trainer, "shared", prompts)
        finally:
            with torch.no_grad():
                for name, param in trainer.model.named_parameters():
                    if name in saved:
                        param.copy_(saved[name])
    assert merged != base_only


def test_lora_dropout_generates_as_trl_does_unless_disabled(trainer):
    layers = mergeable_lora_layers(trainer.model)
    assert layers is not None and len(layers) == 14  # 2 layers x 7 linear modules
    identity = layers[0].lora_dropout["default"]
    layers[0].lora_dropout["default"] = torch.nn.Dropout(0.1)
    try:
        assert mergeable_lora_layers(trainer.model) is None
        disable_dropout_in_model(trainer.model)  # what TRL's disable_dropout: true does: p = 0
        assert layers[0].lora_dropout["default"].p == 0
        assert mergeable_lora_layers(trainer.model) == layers
    finally:
        layers[0].lora_dropout["default"] = identity


def _trl_advantages(rewards_per_func, weights, group):
    """TRL 1.16's arithmetic for group-scaled advantages (grpo_trainer.py, sum_then_normalize)."""
    from trl.trainer.utils import nanstd

    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    mean = rewards.view(-1, group).mean(dim=1).repeat_interleave(group)
    std = nanstd(rewards.view(-1, group), dim=1).repeat_interleave(group)
    return (rewards - mean) / (std + 1e-4)


def test_uniform_groups_get_exactly_zero_advantage():
    # Sudoku: solved 1.0, partial 0.5, format 0.2. Group 1: all 8 in format and nothing else (0.2 each);
    # group 2: two solves among them; group 3: nothing parses (0 each)
    weights = torch.tensor([1.0, 0.5, 0.2])
    uniform = [[0.0, 0.0, 1.0]] * 8
    mixed = [[1.0, 1.0, 1.0]] * 2 + [[0.0, 0.25, 1.0]] * 6
    rewards = torch.tensor(uniform + mixed + [[0.0, 0.0, 0.0]] * 8)
    trl = _trl_advantages(rewards, weights, 8)
    # the float32 quirk: the uniform group's advantages are not 0 but all the same small negative number
    assert torch.all(trl[:8] == trl[0]) and -2e-4 < float(trl[0]) < -1e-4
    fixed = zero_uniform_groups(trl, 8)
    assert torch.equal(fixed[:8], torch.zeros(8))
    assert torch.equal(fixed[8:16], trl[8:16]) and float(fixed[8]) > 1.0 > 0.0 > float(fixed[15])
    assert torch.equal(fixed[16:], torch.zeros(8))


def test_zero_uniform_groups_leaves_what_it_cannot_group():
    per_token = torch.full((4, 3), -1e-4)
    assert zero_uniform_groups(per_token, 2) is per_token
    straddling = torch.full((6,), -1e-4)  # 6 rows, groups of 4: not whole groups
    assert zero_uniform_groups(straddling, 4) is straddling
    assert torch.equal(zero_uniform_groups(torch.full((4,), 0.5), 1), torch.full((4,), 0.5))


def test_trainer_zeroes_uniform_groups_after_trl(trainer, monkeypatch):
    from trl import GRPOTrainer

    trl = torch.tensor([-1.5e-4] * 4 + [1.0, -1.0, 0.5, -0.5])
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", lambda self, _: {"advantages": trl})
    monkeypatch.setattr(trainer, "num_generations", 4)
    trainer.model.train()
    output = trainer._generate_and_score_completions([])
    assert output["advantages"].tolist() == [0.0] * 4 + [1.0, -1.0, 0.5, -0.5]


def test_the_cache_goes_under_the_installed_transformers_name(tiny_model_dir):
    """The shared-prompt paths hand a prompt's cache to the next forward. Under a deprecated name the call
    warns (transformers 5.24+), and once the name is gone it would vanish into **kwargs and the forward
    would run without its prompt: the logits would differ from one forward over the whole sequence."""
    import warnings

    from transformers import AutoModelForCausalLM

    from grpolab.generation.hf import cache_name, with_cache

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 230, 41, 9, 300]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        whole = model(input_ids=ids).logits[:, -2:]
        prompt = model(input_ids=ids[:, :4], use_cache=True)
        rest = model(**with_cache(getattr(prompt, cache_name()), input_ids=ids[:, 4:], use_cache=True)).logits
    torch.testing.assert_close(rest, whole, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(input_ids=ids[:, 4:]).logits, whole, atol=1e-3)  # the cache mattered
