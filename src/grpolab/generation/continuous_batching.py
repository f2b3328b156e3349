"""Continuous batching for many prompts: what makes ``grpolab eval`` fast on a CPU as well as on a GPU.

A plain batched ``generate()`` prefills every prompt in full and decodes every row until the longest one
stops. Measured on SmolLM2-135M with arith prompts (``benchmarks/bench_eval.py``), both waste most of the
time: 27 of the 45 prompt tokens are the chat template's system prefix, the same in every prompt, and a
third of the completions ramble to ``max_new_tokens`` while the rest stop after about 10 tokens. So this
decoder runs its own loop over the model's forward pass and

- prefills the prefix that all prompts share once, and copies its key/value cache into each new row;
- drops a row from the batch the step it stops;
- admits waiting prompts once a quarter of the slots are free, left-padding the shorter key/value cache
  so that old and new rows decode together.

Each row carries its own position ids and attention mask, so its logits do not depend on its neighbours
or on padding: greedy output equals one-prompt-at-a-time ``generate()`` up to float rounding. Sampling
uses transformers' own logits processors, in ``generate()``'s order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from grpolab.generation.hf import with_cache
from grpolab.generation.settings import GenerationSettings


@dataclass
class _Batch:
    """Rows decoding together. Tensors are row-aligned; the cache holds ``mask.shape[1]`` positions."""

    rows: list[int]  # sequence ids
    cache: Any  # transformers DynamicCache: (rows, kv_heads, length, head_dim) per layer
    mask: Any  # (rows, length), 1 where the cache holds a real token
    positions: Any  # (rows,) position id of the next token to feed
    logits: Any  # (rows, vocab) scores for the next token
    tokens: Any = None  # (rows,) the tokens chosen from ``logits``, fed by the next forward step


CPU_BATCH_SIZE = 128
ACCELERATOR_BATCH_SIZE = 32


def default_batch_size(device) -> int:
    """Sequences decoded at once when the caller does not say: 128 on the CPU, 32 on an accelerator.

    On the CPU a decode step is bound by reading the weights, so wider batches are nearly free; measured
    with ``benchmarks/bench_eval.py`` (110 arith items, greedy, 64 new tokens, 2 threads, quiet machine):
    7.5x one prompt at a time with 32, 9.7x with 64, 11.5x with 128, the same output for all 110. On a GPU
    the key/value cache of 128 long rows of a large model would not fit beside it, so 32 stays.
    """
    import torch

    return CPU_BATCH_SIZE if torch.device(device).type == "cpu" else ACCELERATOR_BATCH_SIZE


def fitting_batch_size(model, tokens_per_row: int) -> int:
    """At most ``ACCELERATOR_BATCH_SIZE`` rows whose key/value cache fits in half the GPU's free memory,
    counted twice: ``_merge``/``_drop`` copy the whole cache for a moment (review F6). The CPU default
    elsewhere."""
    import torch

    device = model.device
    if torch.device(device).type != "cuda":
        return default_batch_size(device)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 2
    row_bytes = 2 * config.num_hidden_layers * heads * head_dim * element * tokens_per_row
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(ACCELERATOR_BATCH_SIZE, int(free * 0.5 // (2 * row_bytes))))


def generate_stream(model, tokenizer, chats: Sequence[list[dict[str, str]]], settings: GenerationSettings,
                    num_return_sequences: int = 1, batch_size: int | None = None
                    ) -> Iterator[tuple[int, list[str], list[int]]]:
    """(chat index, completions, their lengths in tokens) per chat, as soon as all its completions stop.

    At most ``batch_size`` sequences decode at once (default: ``default_batch_size`` of the model's
    device). A length does not count the stop token; a length of ``settings.max_new_tokens`` means the
    completion was cut off.

    Kept over transformers' own continuous batching, which was measured while planning issue 13 and is no
    replacement here: 48 arith prompts, 64 new tokens, greedy, 2 threads, 2 rounds on this CPU -
    ``generate_batch`` 28.8-29.9 s, plain batched ``generate`` 10.4-11.1 s, this function 7.4-7.5 s.
    """
    texts = [
        tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats
    ]
    prompts = [
        ids
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]
        for _ in range(num_return_sequences)
    ]
    longest = max((len(ids) for ids in prompts), default=0) + settings.max_new_tokens
    batch_size = batch_size or fitting_batch_size(model, longest)
    decoder = _Decoder(model, tokenizer, settings, prompts)
    done: dict[int, list[int]] = {}  # chat -> finished sequence ids
    for sequence in decoder.run(batch_size):
        chat = sequence // num_return_sequences
        done.setdefault(chat, []).append(sequence)
        if len(done[chat]) == num_return_sequences:
            tokens = [decoder.generated[s] for s in sorted(done.pop(chat))]
            yield chat, tokenizer.batch_decode(tokens, skip_special_tokens=True), [len(t) for t in tokens]


def generate_ids(model, tokenizer, prompts: Sequence[list[int]], budgets: Sequence[int],
                 settings: GenerationSettings, batch_size: int | None = None) -> list[list[int]]:
    """New token ids per prompt (token ids, e.g. a tool episode's context), at most ``budgets[i]`` each, the
    stop token kept at the end where the model stopped: what ``trl``'s response parser reads."""
    if not prompts:
        return []
    settings = replace(settings, max_new_tokens=max(budgets))
    longest = max(len(ids) for ids in prompts) + settings.max_new_tokens
    decoder = _Decoder(model, tokenizer, settings, prompts, budgets)
    for _ in decoder.run(batch_size or fitting_batch_size(model, longest)):
        pass
    stopped = decoder.stopped
    return [ids + ([stopped[s]] if s in stopped else []) for s, ids in enumerate(decoder.generated)]


class _Decoder:
    def __init__(self, model, tokenizer, settings: GenerationSettings, prompts: Sequence[list[int]],
                 limits: Sequence[int] | None = None):
        self.model, self.settings, self.prompts = model, settings, prompts
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop = set(stop_token_ids(model, tokenizer))
        self.limits = list(limits) if limits is not None else [settings.max_new_tokens] * len(prompts)
        self.generated: list[list[int]] = [[] for _ in prompts]
        self.stopped: dict[int, int] = {}  # sequence -> the stop token it ended on
        self.processors = _processors(settings)
        shortest = min(len(prompt) for prompt in prompts)
        # Every row keeps at least one token of its own to prefill: its logits give the first new token.
        self.prefix_length = min(len(os.path.commonprefix([list(p) for p in prompts])), shortest - 1)
        self.prefix_cache = self._forward_prefix() if self.prefix_length else None

    def run(self, batch_size: int) -> Iterator[int]:
        """Sequence ids in the order they finish."""
        # Longest prompts first: rows admitted together have similar lengths (less padding to prefill), and
        # running out of memory, if it happens, happens at once.
        waiting = deque(sorted(range(len(self.prompts)), key=lambda sequence: -len(self.prompts[sequence])))
        batch: _Batch | None = None
        while waiting or batch:
            free = batch_size - (len(batch.rows) if batch else 0)
            if waiting and (batch is None or free >= max(1, batch_size // 4)):
                fresh = self._prefill([waiting.popleft() for _ in range(min(free, len(waiting)))])
                batch = fresh if batch is None else _merge(batch, fresh)
            finished = self._choose_tokens(batch)
            yield from (batch.rows[i] for i in finished)
            batch = _drop(batch, finished)
            if batch:
                self._forward_step(batch)

    def _forward(self, input_ids, mask, positions, cache):
        import torch

        with torch.inference_mode():
            output = self.model(**with_cache(cache, input_ids=input_ids, attention_mask=mask,
                                             position_ids=positions, use_cache=True, logits_to_keep=1))
        return output.logits[:, -1].float()

    def _forward_prefix(self):
        import torch
        from transformers import DynamicCache

        ids = torch.tensor([self.prompts[0][: self.prefix_length]], device=self.model.device)
        cache = DynamicCache()
        self._forward(
            ids, torch.ones_like(ids), torch.arange(self.prefix_length, device=ids.device)[None], cache
        )
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _prefill(self, sequences: list[int]) -> _Batch:
        """Prefill the part of each prompt after the shared prefix; rows are left-padded after the prefix."""
        import torch
        from transformers import DynamicCache

        device, rows = self.model.device, len(sequences)
        suffixes = [self.prompts[s][self.prefix_length :] for s in sequences]
        width = max(len(suffix) for suffix in suffixes)
        ids = torch.tensor([[self.pad_id] * (width - len(s)) + list(s) for s in suffixes], device=device)
        mask = torch.tensor(
            [[1] * self.prefix_length + [0] * (width - len(s)) + [1] * len(s) for s in suffixes],
            device=device,
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, self.prefix_length :]  # (rows, width)
        copies = [
            (k.expand(rows, -1, -1, -1).contiguous(), v.expand(rows, -1, -1, -1).contiguous())
            for k, v in self.prefix_cache or []
        ]
        cache = DynamicCache(copies) if copies else DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        return _Batch(list(sequences), cache, mask, mask.sum(-1), logits)

    def _choose_tokens(self, batch: _Batch) -> list[int]:
        """Pick each row's next token, record it, and return the rows that have finished."""
        import torch

        scores = batch.logits
        if len(self.processors):
            scores = self.processors(self._history(batch), scores)
        if self.settings.do_sample:
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)[:, 0]
        else:
            tokens = scores.argmax(dim=-1)
        batch.tokens = tokens
        finished = []
        for row, (sequence, token) in enumerate(zip(batch.rows, tokens.tolist(), strict=True)):
            if token in self.stop:
                self.stopped[sequence] = token
            else:
                self.generated[sequence].append(token)
            if token in self.stop or len(self.generated[sequence]) >= self.limits[sequence]:
                finished.append(row)
        return finished

    def _history(self, batch: _Batch):
        """Prompt and generated ids per row for the repetition penalty, padded with a token the row has."""
        import torch

        seen = [list(self.prompts[s]) + self.generated[s] for s in batch.rows]
        width = max(len(ids) for ids in seen)
        return torch.tensor([[ids[0]] * (width - len(ids)) + ids for ids in seen], device=batch.mask.device)

    def _forward_step(self, batch: _Batch) -> None:
        import torch

        batch.mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        batch.logits = self._forward(batch.tokens[:, None], batch.mask, batch.positions[:, None], batch.cache)
        batch.positions = batch.positions + 1


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end a completion: the generation config's EOS id(s) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def _processors(settings: GenerationSettings):
    """The logits processors ``generate()`` would apply for these settings, in its order."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    chain: list[Any] = []
    if settings.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.do_sample:
        chain.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            chain.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            chain.append(TopPLogitsWarper(settings.top_p))
    return LogitsProcessorList(chain)


def _drop(batch: _Batch, rows: Sequence[int]) -> _Batch | None:
    """The batch without ``rows`` (None when empty), cut to the columns some remaining row still uses."""
    import torch

    if not rows:
        return batch
    keep = [row for row in range(len(batch.rows)) if row not in set(rows)]
    if not keep:
        return None
    index = torch.tensor(keep, device=batch.mask.device)
    mask = batch.mask[index]
    first = int(mask.any(dim=0).int().argmax())  # leading columns that are padding in every row
    # A model split over devices keeps each layer's cache on that layer's device (review F2).
    layers = [(_keep(layer.keys, index, first), _keep(layer.values, index, first))
              for layer in batch.cache.layers]
    return _Batch(
        [batch.rows[row] for row in keep],
        _cache(layers),
        mask[:, first:],
        batch.positions[index],
        batch.logits[index],
        batch.tokens[index],
    )


def _keep(cache, index, first: int):
    """``cache[index, :, first:]`` with ``index`` moved to the cache's device."""
    return cache[index.to(cache.device), :, first:]


def _merge(old: _Batch, new: _Batch) -> _Batch:
    """One batch from two, left-padding the shorter key/value cache and mask."""
    import torch
    from torch.nn.functional import pad

    length = max(old.mask.shape[1], new.mask.shape[1])

    def widen(tensor, dim_from_end: int):
        missing = length - tensor.shape[-dim_from_end]
        return pad(tensor, (0, 0) * (dim_from_end - 1) + (missing, 0)) if missing else tensor

    layers = [
        (torch.cat([widen(a.keys, 2), widen(b.keys, 2)]), torch.cat([widen(a.values, 2), widen(b.values, 2)]))
        for a, b in zip(old.cache.layers, new.cache.layers, strict=True)
    ]
    return _Batch(
        old.rows + new.rows,
        _cache(layers),
        torch.cat([widen(old.mask, 1), widen(new.mask, 1)]),
        torch.cat([old.positions, new.positions]),
        torch.cat([old.logits, new.logits]),
    )


def _cache(layers):
    from transformers import DynamicCache

    return DynamicCache(layers)
