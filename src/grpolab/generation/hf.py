"""Generation with transformers' ``generate``: a batch of chats (``generate_batch``) or one streamed reply
(``stream_chat``, what chat uses).

Prompts are left-padded so every row's last prompt token sits at the same position, and the attention
mask hides the padding; that is what makes batched greedy output identical to one-at-a-time output.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

from grpolab.generation.settings import GenerationSettings


@functools.cache
def cache_name() -> str:
    """What transformers calls the key/value cache in ``forward``/``generate`` arguments and in outputs:
    ``cache`` since 5.24, where ``past_key_values`` is deprecated (gone from ``forward`` in 5.40, and
    then silently swallowed by ``**kwargs``: a forward would run without its prompt's cache);
    ``past_key_values`` before 5.24."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    fields = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
    return "cache" if "cache" in fields else "past_key_values"


def with_cache(cache, **kwargs: Any) -> dict[str, Any]:
    """``kwargs`` plus the cache under this transformers' name for it (``cache_name``)."""
    return {**kwargs, cache_name(): cache}


def encode_chats(tokenizer, chats: Sequence[list[dict[str, str]]]):
    """Left-padded input ids and attention mask for a batch of chats, ending in the assistant turn."""
    texts = [
        tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats
    ]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def generate_batch(
    model,
    tokenizer,
    chats: Sequence[list[dict[str, str]]],
    settings: GenerationSettings,
    num_return_sequences: int = 1,
) -> list[list[str]]:
    """Completions for each chat: a list of ``num_return_sequences`` strings per chat."""
    import torch

    batch = encode_chats(tokenizer, chats).to(model.device)
    with torch.inference_mode():
        output = model.generate(
            **batch,
            **settings.to_kwargs(),
            num_return_sequences=num_return_sequences,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[:, batch["input_ids"].shape[1] :]  # (batch * num_return_sequences, new)
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]


def stream_chat(
    model, tokenizer, messages: list[dict[str, str]], settings: GenerationSettings, stop=None
) -> Iterator[str]:
    """Yield the reply to one chat as text pieces, while the model generates them.

    Generation runs in a worker thread so that the caller's thread stays free to print and to take
    Ctrl-C. Setting the ``threading.Event`` ``stop`` (or closing this generator, which a KeyboardInterrupt
    in the caller does) ends generation after the current token. An error in the worker is re-raised here.
    """
    import threading

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop = stop or threading.Event()

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    batch = encode_chats(tokenizer, [messages]).to(model.device)
    kwargs = {
        **batch,
        **settings.to_kwargs(),
        "streamer": streamer,
        "pad_token_id": tokenizer.pad_token_id,
        "stopping_criteria": StoppingCriteriaList([_StopOnEvent()]),
    }
    errors: list[BaseException] = []
    worker = threading.Thread(target=_generate_into, args=(model, kwargs, streamer, errors), daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:
        stop.set()
        worker.join()
    if errors:
        raise errors[0]


def _generate_into(model, kwargs: dict[str, Any], streamer, errors: list[BaseException]) -> None:
    import torch

    try:
        with torch.inference_mode():
            model.generate(**kwargs)
    except BaseException as error:  # handed to the caller's thread, which re-raises it
        errors.append(error)
        streamer.end()  # unblocks the caller, which would otherwise wait for text forever
