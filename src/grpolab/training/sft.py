"""Supervised warm-up with TRL's SFTTrainer: teach the answer format before GRPO.

GRPO learns from differences between a prompt's completions; when a small model never produces the
answer format (SmolLM2-135M on Sudoku), every reward is 0 and there is nothing to learn from. A short
warm-up on the task's reference replies gives GRPO a starting point. The loss is on the reply tokens
only (prompt-completion data). The run directory, resume, metrics.jsonl, progress line and saving are
``grpolab.training.grpo``'s, as for GRPO; the curve is the loss (and TRL's mean token accuracy).

On the CPU the LM head runs on the reply tokens only (``PlainHeadSFTTrainer``, issue 13). TRL 1.16's
SFT loss goes through its fused LM head (``trl.trainer.utils.add_fused_lm_head``), which without Triton
scores *every* position, prompt and padding included, in plain-torch tiles whose backward recomputes
each tile. A Sudoku warm-up row is ~170 prompt tokens for ~40 reply tokens, so most of that work is
thrown away. The override replaces only the patched forward: the backbone as TRL calls it, then one
matmul on the positions whose label is not -100, log-softmax and gather in fp32 (``selective_logprobs``,
shared with the GRPO override); the same loss, entropy and token accuracy (tested to 1e-6 on the loss).

``SharedPrefixSFTTrainer`` (``--logprobs shared``, the CPU default) also runs the tokens every row of a
batch begins with once. Rows are right-padded, so they agree position for position up to the first token
where one differs: for Sudoku the chat template, the 120-token system prompt and "Solve this 4x4
Sudoku:", 137 of a row's ~200 tokens. That prefix runs as one row; its key/value cache is repeated to
the batch, and the rest of every row runs on top of it. Indexing the cache keeps the autograd graph, so
the prefix's gradient is the sum over the rows, as in the per-row forward, and the positions are the
same (transformers numbers them from the cache length). The prefix stops before the first labelled
position, so every hidden state the loss needs comes from the second pass. One difference: LoRA dropout
draws one mask for the prefix instead of one per row (the expected gradient is unchanged). It falls back
to one forward per row under activation checkpointing (no cache) and for inputs other than ids and mask.
"""

from __future__ import annotations

import functools
import logging
import types
from pathlib import Path

from trl import SFTTrainer
from trl.trainer.utils import FusedCausalLMOutput

from grpolab import plots
from grpolab.errors import UserError
from grpolab.generation.hf import with_cache
from grpolab.tasks import get_task
from grpolab.training import checks, run
from grpolab.training.grpo_trainer import selective_logprobs
from grpolab.training.model import model_arguments

logger = logging.getLogger(__name__)

# Config fields that scale or cap the logits; the plain head handles none of them, so such models keep TRL's.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling", "output_router_logits")


def reference_dataset(train_args, seed: int):
    task = get_task(train_args.task)
    if task.reference is None:
        raise UserError(f"task {task.name} has no reference replies, so it cannot be used for a supervised "
                        "warm-up")
    dataset = checks.load_task_data(task, train_args, seed)
    if task.reference_episode is not None:
        return tool_episodes(task, train_args, dataset)
    return dataset.map(lambda row: {"completion": [{"role": "assistant", "content": task.reference(row)}]})


def tool_episodes(task, train_args, dataset):
    """Conversations of prompt + reference episode with the tools' schema, for TRL's ``assistant_only_loss``
    (the tool results are context, not targets, as in GRPO's tool mask)."""
    import json

    from transformers.utils import get_json_schema

    from grpolab.training.tool_use import run_tools

    schema = json.dumps([get_json_schema(tool) for tool in run_tools(task, train_args)])
    return dataset.map(
        lambda row: {"messages": row["prompt"] + task.reference_episode(row), "tools": schema},
        remove_columns=["prompt"],
    )


def lm_head_path(choice: str, device_type: str) -> str:
    """'shared' (plain, the batch's common prefix run once), 'plain' (reply tokens only) or 'fused'
    (TRL's) for ``--logprobs``; auto is shared on the CPU."""
    return ("shared" if device_type == "cpu" else "fused") if choice == "auto" else choice


def trainer_class(choice: str, device_type: str) -> type[SFTTrainer]:
    path = lm_head_path(choice, device_type)
    logger.info("SFT LM head: %s", path)
    return {"shared": SharedPrefixSFTTrainer, "plain": PlainHeadSFTTrainer, "fused": SFTTrainer}[path]


def build_trainer(train_args, sft_config, model_config, callbacks=()):
    from grpolab.training.callbacks import ProgressLine, RunLogger

    checks.preflight(train_args, sft_config, model_config)
    reentrant_checkpointing_under_zero3(sft_config, model_config)
    dataset = reference_dataset(train_args, sft_config.seed)
    model_kwargs = model_arguments(train_args, sft_config, model_config)
    run_logger = RunLogger(sft_config.output_dir, plot=train_args.plot, curve=plots.loss_curve,
                           curve_file="loss_curve.png",
                           title=f"SFT on {train_args.task}: {model_config.model_name_or_path}")
    if "messages" in dataset.column_names:
        sft_config.assistant_only_loss = True
    trainer_type = trainer_class(train_args.logprobs, sft_config.device.type)
    trainer = trainer_type(**model_kwargs, args=sft_config, train_dataset=dataset,
                           callbacks=[run_logger, *callbacks])
    run.use_progress_line(trainer, ProgressLine("sft"))
    return trainer


def reentrant_checkpointing_under_zero3(sft_config, model_config) -> None:
    """PEFT + ZeRO-3 + activation checkpointing needs reentrant checkpointing (trl#2514: the recomputed
    partition has shape [0]). TRL's SFTTrainer writes it to ``gradient_checkpointing_kwargs``, which
    transformers 5.24's Trainer no longer reads (review F11), so it is set under the name it reads."""
    import os

    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    zero3 = stage == "3" or "zero3" in str(sft_config.deepspeed or "")
    if zero3 and model_config.use_peft and sft_config.activation_checkpointing:
        sft_config.activation_checkpointing_kwargs = {
            **(sft_config.activation_checkpointing_kwargs or {}), "use_reentrant": True}


def sft(train_args, sft_config, model_config) -> Path:
    """Train and save the warm-up adapter; returns the run directory."""
    return run.run_trainer(train_args, sft_config, model_config, build_trainer)


class PlainHeadSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer whose fused LM head scores the reply tokens only (see the module docstring)."""

    share_prefix = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        config = base.config.get_text_config()
        if any(getattr(config, name, None) not in (None, False) for name in _LOGIT_TRANSFORMS):
            logger.info("SFT LM head: TRL's fused head (the model scales or caps its logits)")
            return
        # no key/value cache under activation checkpointing, so no prefix to share
        share = self.share_prefix and not self.args.activation_checkpointing
        plain = functools.partial(_plain_head_forward, trl_forward=base.forward, share_prefix=share)
        base.forward = types.MethodType(plain, base)


class SharedPrefixSFTTrainer(PlainHeadSFTTrainer):
    """The plain head, with the prefix every row of a batch shares run once (see the module docstring)."""

    share_prefix = True


def _plain_head_forward(self, *args, trl_forward, share_prefix=False, fused_lm_head=False, labels=None,
                        shift_labels=None, num_items_in_batch=None, **kwargs):
    """TRL's fused-head forward contract (``FusedCausalLMOutput``, zero where the label is -100), computed
    with one LM-head matmul over the labelled positions; anything else goes to TRL's forward."""
    if not fused_lm_head or shift_labels is not None or labels is None:
        return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                           num_items_in_batch=num_items_in_batch, **kwargs)
    kwargs["use_cache"] = False
    prefix = shared_prefix_length(labels, **kwargs) if share_prefix and not args else 0
    if prefix:
        hidden = shared_prefix_hidden(self.base_model, prefix, kwargs["input_ids"], kwargs["attention_mask"])
    else:
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]  # [B, T-1, H]
    labels = labels[:, 1:]
    mask = labels != -100  # [B, T-1]: the reply tokens
    targets = labels[mask]  # [n]
    # hidden covers positions prefix..T-2, and the prefix holds no labelled position
    logits = self.get_output_embeddings()(hidden[mask[:, prefix:]]).float()  # [n, V], n = reply tokens
    log_probs, entropy = selective_logprobs(logits, targets, compute_entropy=True, entropy_grad=False)
    is_top1 = logits.detach().argmax(-1) == targets
    # masked_scatter keeps an all-masked batch connected to the graph, as TRL's head does
    log_probs, entropy, is_top1 = (x.new_zeros(mask.shape).masked_scatter(mask, x)
                                   for x in (log_probs, entropy, is_top1))
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    loss = -log_probs.sum() / count
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, is_top1=is_top1,
                               label_mask=mask)


def shared_prefix_length(labels, input_ids=None, attention_mask=None, use_cache=None, **others) -> int:
    """How many leading tokens every row of a right-padded batch shares and the loss needs no hidden
    state of (the next position's label is -100 in every row); 0 when sharing would not pay or apply.
    ``others``: further forward inputs (PEFT passes ``inputs_embeds=None`` and the like); any that is
    set (position ids of padding-free batches, embeddings) means one forward per row."""
    if any(value is not None for value in others.values()) or input_ids is None or attention_mask is None:
        return 0
    if input_ids.size(0) < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0) & (attention_mask == 1).all(0)  # [T]
    unlabelled_next = (labels[:, 1:] == -100).all(0)  # [T-1]: position t predicts an ignored token
    shared = (same[:-1] & unlabelled_next).long().cumprod(0).sum()
    prefix = int(shared)
    return prefix if 2 <= prefix < input_ids.size(1) - 1 else 0


def shared_prefix_hidden(body, prefix: int, input_ids, attention_mask):
    """The body's last hidden states at positions prefix..T-2 [B, T-1-prefix, H], the first ``prefix``
    tokens (equal in every row) run once and their cache repeated to the B rows."""
    from transformers import DynamicCache

    cache = DynamicCache(config=body.config)
    body(**with_cache(cache, input_ids=input_ids[:1, :prefix], attention_mask=attention_mask[:1, :prefix],
                      use_cache=True))
    cache.batch_repeat_interleave(input_ids.size(0))
    rest = body(**with_cache(cache, input_ids=input_ids[:, prefix:], attention_mask=attention_mask,
                             use_cache=True))
    return rest.last_hidden_state[:, :-1]
