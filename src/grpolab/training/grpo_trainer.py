"""Per-token log-probs for GRPO on the CPU: TRL's trainer with one method replaced (issue 13).

TRL 1.16 computes the policy's per-token log-probs (and entropies) through a fused LM head
(``trl.trainer.utils.add_fused_lm_head`` -> ``trl/kernels/chunked_logprob.py``) that never materialises
the ``[tokens, vocab]`` logits. On a GPU its tiles run in Triton over the completion tokens only. Without
Triton (every CPU) it folds the tiles in plain torch and, to keep tile shapes fixed for compilers, scores
*every* position, prompt included; its backward recomputes each tile. For the default recipe (16
sequences of ~72 prompt + 20 completion tokens, a 49,152-word vocabulary) that was 38% of a step (issue
13's profile: 1.6 s forward, 2.3 s backward). No GRPOConfig field selects another path.

``PlainLogprobGRPOTrainer`` overrides only ``_get_per_token_logps_and_entropies``: the model's own forward
with ``logits_to_keep`` (so the LM head runs on the completion positions alone, one matmul), then
log-softmax and a gather in plain torch. Same values as TRL's (within float rounding; tested to 1e-5 on
log-probs, 1e-6 on the loss, and on the gradients), through the same ``model(...)`` call, so PEFT and
the accelerate wrapping are unchanged. The cost is memory: ``[batch, completion_length, vocab]`` fp32
logits per chunk (66 MB for the default recipe), which is why it is the CPU default and not the GPU one.
Multimodal inputs and MoE auxiliary losses go to TRL's own method.

``SharedPromptGRPOTrainer`` (``--logprobs shared``, the CPU default) also runs each distinct prompt once:
a GRPO batch holds ``num_generations`` completions of each prompt, and TRL's forward recomputes the
prompt for every one of them (the default recipe: 16 x 45 prompt tokens for 16 x <= 20 completion
tokens). The prompt's key/value cache is indexed out to its completions, which keeps the gradient exact.
It falls back to one forward per sequence under several processes (DDP expects one forward per backward)
and under activation checkpointing (no cache).

Generation (``--generation``, the CPU default ``shared``) keeps TRL's ``_generate_single_turn`` and its
``model.generate`` call, and changes only how the same logits are computed:

- ``merged``: each LoRA layer's ``B @ A * scaling`` is added to a copy of its base weight for the length of
  the call, and the adapter layers are bypassed, so a decoding step runs one matmul per linear layer instead
  of three (the LoRA side is 30 layers x 7 small matmuls per token, overhead-bound on a CPU). The original
  base weights are put back afterwards (never merged in place and subtracted, which would let float
  rounding drift the frozen weights step after step). Only plain LoRA on float weights without dropout
  qualifies (dropout would sample a different model); anything else generates as TRL does.
- ``shared``: as ``merged``, and the prompt of each group (``num_generations`` copies of it in the batch)
  is prefilled once: the distinct prompts but their last token run through the model, the key/value cache
  is indexed out to the rows, and ``generate`` goes on from it (it prefills only what the cache lacks).
  Positions are numbered as ``generate`` numbers them (attention-mask cumsum), so the logits are the same
  up to float rounding, and the random numbers are drawn in the same order: with a fixed seed the sampled
  completions equal TRL's (tested).

One override is about correctness, not speed: ``_generate_and_score_completions`` sets the advantages of
a group whose values are all equal to exactly 0 (``zero_uniform_groups``: TRL's float32 reward sum leaves
them at -1.5e-4 for eight rewards of 0.2, and Adam turns that into a full step).
"""

from __future__ import annotations

import contextlib
import logging

import torch
from trl import GRPOTrainer

from grpolab.generation.hf import cache_name, with_cache

logger = logging.getLogger(__name__)

# TrainArgs.logprobs values: "auto" picks "shared" on the CPU and TRL's "fused" head elsewhere.
LOGPROB_PATHS = ("auto", "shared", "plain", "fused")
# TrainArgs.generation values: "auto" picks "shared" on the CPU and TRL's own generation elsewhere.
GENERATION_PATHS = ("auto", "shared", "merged", "trl")


def logprob_path(choice: str, device_type: str) -> str:
    return _path("--logprobs", LOGPROB_PATHS, choice, "shared" if device_type == "cpu" else "fused")


def generation_path(choice: str, device_type: str) -> str:
    return _path("--generation", GENERATION_PATHS, choice, "shared" if device_type == "cpu" else "trl")


def _path(flag: str, choices, choice: str, auto: str) -> str:
    """``choice``, or ``auto``'s pick for this device; ValueError naming ``flag`` for an unknown one."""
    if choice not in choices:
        raise ValueError(f"{flag} must be one of {', '.join(choices)}, not {choice!r}")
    return auto if choice == "auto" else choice


def selective_logprobs(logits: torch.Tensor, targets: torch.Tensor, compute_entropy: bool,
                       entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) and (optionally) the entropy of each row of ``logits`` [..., V], in fp32.

    ``logsumexp`` + ``gather`` instead of a full ``log_softmax``: one ``[..., V]`` temporary fewer, and
    autograd keeps only the logits. The entropy H = logZ - sum_v p_v z_v keeps its graph only when the loss
    uses it (TRL's entropy bonus); otherwise it is a metric and the mask of ``top_entropy_quantile``.
    """
    log_z = torch.logsumexp(logits, dim=-1)
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_z
    if not compute_entropy:
        return logps, None
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        source = logits if entropy_grad else logits.detach()
        entropy = log_z.detach() if not entropy_grad else log_z
        entropy = entropy - (torch.softmax(source, dim=-1) * source).sum(-1)
    return logps, entropy


class FastGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with this module's CPU paths (see the module docstring).

    ``logprob_mode`` ("fused" = TRL's, "plain", "shared") and ``generation_mode`` ("trl", "merged",
    "shared") pick them; a case a path does not cover goes to TRL's method.
    """

    logprob_mode = "fused"
    generation_mode = "trl"

    @property
    def share_prompts(self) -> bool:
        return self.logprob_mode == "shared"

    def _generate_single_turn(
        self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False
    ):
        model = self.accelerator.unwrap_model(self.model_wrapped)
        layers = None
        if (
            self.generation_mode != "trl"
            and images is None
            and not multimodal_fields
            and not self.use_vllm
            and not self.use_transformers_continuous_batching
            and self.accelerator.num_processes == 1
        ):
            layers = mergeable_lora_layers(model)
        if layers is None:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        share = self.generation_mode == "shared" and self.generation_config.cache_implementation is None
        with merged_lora(layers), shared_prefill(model) if share else contextlib.nullcontext():
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        group = self.num_generations if self.model.training else self.num_generations_eval
        output["advantages"] = zero_uniform_groups(output["advantages"], group)
        return output

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **multimodal,
    ):
        if (
            self.logprob_mode == "fused"
            or compute_aux_loss
            or any(value is not None for value in multimodal.values())
        ):
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **multimodal,
            )
        batch_size = batch_size or input_ids.size(0)
        entropy_grad = bool(getattr(self, "_entropy_bonus_enabled", False))
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start : start + batch_size]
            mask = attention_mask[start : start + batch_size]
            with self.accelerator.autocast():
                logits = self._completion_logits(model, ids, mask, logits_to_keep)  # [b, logits_to_keep, V]
            logits = logits.float() / self.temperature
            targets = ids[:, -logits_to_keep:]
            logps, entropy = selective_logprobs(logits, targets, compute_entropy, entropy_grad)
            # TRL's head scores padding after EOS as 0 (label -100); the loss masks it anyway
            padding = mask[:, -logits_to_keep:] == 0
            all_logps.append(logps.masked_fill(padding, 0.0))
            if compute_entropy:
                all_entropies.append(entropy.masked_fill(padding, 0.0))
        entropies = torch.cat(all_entropies) if compute_entropy else None
        return torch.cat(all_logps), entropies, None

    def _completion_logits(self, model, ids, mask, logits_to_keep):
        """Logits at the positions that predict the last ``logits_to_keep`` tokens: [b, logits_to_keep, V]."""
        prompt_length = ids.size(1) - logits_to_keep
        if self._can_share_prompts():
            prompts, rows = torch.unique(
                torch.cat([ids[:, :prompt_length], mask[:, :prompt_length]], 1), dim=0, return_inverse=True
            )
            if len(prompts) < len(ids):
                prompt_ids, prompt_mask = prompts[:, :prompt_length], prompts[:, prompt_length:]
                completion_ids = ids[:, prompt_length:]
                return shared_prompt_logits(model, prompt_ids, prompt_mask, rows, completion_ids, mask)
        # The last position predicts nothing: keep one more and drop it
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1, use_cache=False)
        return logits.logits[:, :-1]

    def _can_share_prompts(self) -> bool:
        # One forward per backward under DDP, and no KV cache under activation checkpointing
        return (
            self.share_prompts
            and self.accelerator.num_processes == 1
            and not activation_checkpointing(self.model)
        )


def shared_prompt_logits(model, prompt_ids, prompt_mask, rows, completion_ids, attention_mask):
    """Completion logits with each distinct prompt run once (exact up to float rounding).

    prompt_ids/prompt_mask [u, P] are the distinct prompts, ``rows`` [b] the prompt of each sequence,
    completion_ids [b, C], attention_mask [b, P + C]. Indexing the cache keeps the autograd graph, so the
    gradient of a shared prompt is the sum over its completions, as in the per-sequence forward. Positions
    are the same (transformers numbers them from the cache length).
    """
    prompt = model(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, logits_to_keep=1)
    cache = getattr(prompt, cache_name())
    cache.batch_select_indices(rows)
    completion = model(**with_cache(
        cache,
        input_ids=completion_ids,
        attention_mask=attention_mask,
        use_cache=True,
        logits_to_keep=completion_ids.size(1),
    ))
    # the prompt's last position predicts the first completion token; the completion's last predicts nothing
    return torch.cat([prompt.logits[rows], completion.logits[:, :-1]], dim=1)


class PlainLogprobGRPOTrainer(FastGRPOTrainer):
    """Log-probs of the completion positions only (``--logprobs plain``)."""

    logprob_mode = "plain"


class SharedPromptGRPOTrainer(FastGRPOTrainer):
    """Plain log-probs with each group's prompt run once (``--logprobs shared``)."""

    logprob_mode = "shared"


def mergeable_lora_layers(model) -> list | None:
    """The model's LoRA layers when generation may fold them into the base weights, else None.

    Plain LoRA on ``nn.Linear`` float weights, no dropout (it would sample another model; p = 0 counts as
    none), no DoRA or other variant, no bias, nothing merged or disabled already: then ``W x + s B A x``
    is ``(W + s B A) x``.
    """
    from peft.tuners.lora import Linear, LoraLayer

    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    for layer in layers:
        if (
            type(layer) is not Linear
            or layer.merged
            or layer.disable_adapters
            or not isinstance(layer.get_base_layer(), torch.nn.Linear)
            or not layer.get_base_layer().weight.is_floating_point()
        ):
            return None
        for name in layer.active_adapters:
            if name in layer.lora_A and (
                name in layer.lora_variant
                or layer.lora_bias.get(name)
                or not _no_dropout(layer.lora_dropout[name])
            ):
                return None
    return layers or None


def activation_checkpointing(model) -> bool:
    """Whether the model recomputes activations (``is_activation_checkpointing`` since transformers 5.24,
    ``is_gradient_checkpointing`` before, deprecated there)."""
    flag = getattr(model, "is_activation_checkpointing", None)
    return bool(getattr(model, "is_gradient_checkpointing", False) if flag is None else flag)


def zero_uniform_groups(advantages: torch.Tensor, group: int) -> torch.Tensor:
    """Advantages with every group whose values are all equal set to exactly 0.

    GRPO's advantages are centred on their group's mean, so a group whose values are all equal must be 0.
    TRL's are not when the rewards are: it sums weighted rewards in float32, and eight completions at 0.2
    (format right, nothing solved) give a mean 1 ulp off and a spread of 1.6e-8, so every advantage comes
    out at -1.5e-4 after the division by (std + 1e-4). Tiny, but the same sign for the whole group, and Adam
    scales any gradient to a full learning-rate step: a batch with no signal at all then lowers the
    likelihood of everything the model sampled. On Sudoku most groups are like that, so steps without any
    signal still moved the model (docs/benchmarks.md, Sudoku demo). Groups with any spread are untouched.
    Per-token (2-D) advantages, and local slices that do not hold whole groups, are returned as they are.
    """
    if advantages.dim() != 1 or group < 2 or len(advantages) % group:
        return advantages
    grouped = advantages.view(-1, group)
    uniform = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    return grouped.masked_fill(uniform, 0.0).view(-1)


def _no_dropout(module: torch.nn.Module) -> bool:
    """Identity, or a dropout set to p = 0 (TRL's ``disable_dropout: true`` does that to every nn.Dropout)."""
    return isinstance(module, torch.nn.Identity) or (isinstance(module, torch.nn.Dropout) and module.p == 0)


@contextlib.contextmanager
def merged_lora(layers):
    """Each layer's active adapters added to a copy of its base weight, the adapters bypassed; the original
    base weights (the same tensors, untouched) and the adapters come back on exit."""
    saved = []
    try:
        with torch.no_grad():
            for layer in layers:
                weight = layer.get_base_layer().weight
                merged = weight.data.clone()
                for name in layer.active_adapters:
                    if name in layer.lora_A:
                        merged += layer.get_delta_weight(name)
                saved.append((layer, weight, weight.data))
                weight.data = merged
                layer._disable_adapters = True  # peft's switch; enable_adapters() would reset requires_grad
        yield
    finally:
        for layer, weight, original in saved:
            weight.data = original
            layer._disable_adapters = False


@contextlib.contextmanager
def shared_prefill(model):
    """``model.generate`` that first prefills each distinct prompt once (see the module docstring)."""
    original = model.generate

    def generate(input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        cache = None
        if input_ids is not None and attention_mask is not None and not kwargs:
            cache = distinct_prompt_cache(model, input_ids, attention_mask)
        if cache is not None:
            kwargs[cache_name()] = cache
        return original(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config, **kwargs
        )

    model.generate = generate
    try:
        yield
    finally:
        del model.generate


def distinct_prompt_cache(model, input_ids, attention_mask):
    """The key/value cache of every row's prompt but its last token, computed once per distinct prompt
    and indexed out to the rows [b]; None when no two rows share a prompt.

    input_ids and attention_mask [b, P] are left-padded, as TRL pads them for ``generate``, which then
    prefills only the last token. Positions as ``generate`` numbers them: cumsum of the mask, minus 1.
    """
    from transformers import DynamicCache

    length = input_ids.size(1)
    distinct, rows = torch.unique(torch.cat([input_ids, attention_mask], 1), dim=0, return_inverse=True)
    if len(distinct) == len(input_ids) or length < 2:
        return None
    ids, mask = distinct[:, : length - 1], distinct[:, length : 2 * length - 1]  # [u, P - 1]
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    model(**with_cache(cache, input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                       logits_to_keep=1))
    cache.batch_select_indices(rows)
    return cache


def trainer_class(choice: str, device_type: str) -> type[GRPOTrainer]:
    """The trainer for ``TrainArgs.logprobs`` on this device."""
    path = logprob_path(choice, device_type)
    logger.info("per-token log-probs: %s", path)
    return {"shared": SharedPromptGRPOTrainer, "plain": PlainLogprobGRPOTrainer, "fused": FastGRPOTrainer}[
        path
    ]
