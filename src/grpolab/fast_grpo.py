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
log-probs, 1e-6 on the loss), through the same ``model(...)`` call, so PEFT and DDP wrapping are
unchanged. The cost is memory: ``[batch, completion_length, vocab]`` fp32 logits per chunk (66 MB for
the default recipe), which is why it is the CPU default and not the GPU one. Multimodal inputs and MoE
auxiliary losses go to TRL's own method.
"""

from __future__ import annotations

import logging

import torch
from trl import GRPOTrainer

logger = logging.getLogger(__name__)

# TrainArgs.logprobs values: "auto" picks "plain" on the CPU and TRL's "fused" head elsewhere.
LOGPROB_PATHS = ("auto", "plain", "fused")


def use_plain_logprobs(choice: str, device_type: str) -> bool:
    if choice not in LOGPROB_PATHS:
        raise ValueError(f"--logprobs must be one of {', '.join(LOGPROB_PATHS)}, not {choice!r}")
    return choice == "plain" or (choice == "auto" and device_type == "cpu")


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


class PlainLogprobGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer whose per-token log-probs skip the fused LM head (see the module docstring)."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **multimodal):
        if compute_aux_loss or any(value is not None for value in multimodal.values()):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        batch_size = batch_size or input_ids.size(0)
        entropy_grad = bool(getattr(self, "_entropy_bonus_enabled", False))
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start:start + batch_size]
            mask = attention_mask[start:start + batch_size]
            with self.accelerator.autocast():
                # [b, logits_to_keep + 1, V]: the last position predicts nothing and is dropped below
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1,
                               use_cache=False).logits
            logits = logits[:, :-1].float() / self.temperature
            logps, entropy = selective_logprobs(logits, ids[:, -logits_to_keep:], compute_entropy, entropy_grad)
            # TRL's head scores padding after EOS as 0 (label -100); the loss masks it anyway
            padding = mask[:, -logits_to_keep:] == 0
            all_logps.append(logps.masked_fill(padding, 0.0))
            if compute_entropy:
                all_entropies.append(entropy.masked_fill(padding, 0.0))
        entropies = torch.cat(all_entropies) if compute_entropy else None
        return torch.cat(all_logps), entropies, None


def trainer_class(choice: str, device_type: str) -> type[GRPOTrainer]:
    """The trainer for ``TrainArgs.logprobs`` on this device."""
    plain = use_plain_logprobs(choice, device_type)
    logger.info("per-token log-probs: %s", "plain (grpolab.fast_grpo)" if plain else "TRL's fused LM head")
    return PlainLogprobGRPOTrainer if plain else GRPOTrainer
