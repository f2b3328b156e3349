"""Batched generation shared by eval and chat: one place for generation settings.

Prompts are left-padded so every row's last prompt token sits at the same position, and the attention
mask hides the padding; that is what makes batched greedy output identical to one-at-a-time output.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def to_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                  "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_chats(tokenizer, chats: Sequence[list[dict[str, str]]]):
    """Left-padded input ids and attention mask for a batch of chats, ending in the assistant turn."""
    texts = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def generate_batch(model, tokenizer, chats: Sequence[list[dict[str, str]]], settings: GenerationSettings,
                   num_return_sequences: int = 1) -> list[list[str]]:
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
    new_tokens = output[:, batch["input_ids"].shape[1]:]  # (batch * num_return_sequences, new)
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [texts[i:i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]


# ------------------------------------------------------------------------- many prompts: generate_stream
# A plain batched generate() decodes every row until the longest one stops: one rambling completion makes
# all rows run to max_new_tokens. generate_stream decodes in rounds instead; between rounds finished rows
# leave and waiting prompts take their places. Rounds are short (16 tokens) while prompts wait, so a free
# slot is refilled soon; once none wait they double, so a long completion is re-fed (prefilled) only
# log2(max_new_tokens / 16) times.
FIRST_ROUND_TOKENS = 16


@dataclass
class _Row:
    chat: int  # index into the chats given
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)  # generated so far, without the stop token
    done: bool = False


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end a completion: the generation config's EOS id(s) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def generate_stream(model, tokenizer, chats: Sequence[list[dict[str, str]]], settings: GenerationSettings,
                    num_return_sequences: int = 1, batch_size: int = 32
                    ) -> Iterator[tuple[int, list[str], list[int]]]:
    """(chat index, completions, lengths in tokens) per chat, as soon as all its completions have stopped.

    At most ``batch_size`` sequences decode at once. A length does not count the stop token; a length of
    ``settings.max_new_tokens`` means the completion was cut off. Greedy completions are those of
    ``generate_batch`` (up to float rounding, as with any change of batch shape).
    """
    stop = stop_token_ids(model, tokenizer)
    texts = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats]
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    waiting = deque(_Row(chat, prompts[chat]) for chat in range(len(chats)) for _ in range(num_return_sequences))
    running: list[_Row] = []
    finished: dict[int, list[_Row]] = {}
    round_tokens = FIRST_ROUND_TOKENS
    while waiting or running:
        while waiting and len(running) < batch_size:
            running.append(waiting.popleft())
        budget = min(settings.max_new_tokens - len(row.tokens) for row in running)
        single = len(running) == 1 and not waiting  # nothing to gain from rounds
        _extend(model, tokenizer, running, settings, budget if single else min(round_tokens, budget), stop)
        round_tokens = round_tokens if waiting else 2 * round_tokens
        for row in (row for row in running if row.done):
            finished.setdefault(row.chat, []).append(row)
            if len(finished[row.chat]) == num_return_sequences:
                rows = finished.pop(row.chat)
                yield row.chat, tokenizer.batch_decode([r.tokens for r in rows], skip_special_tokens=True), \
                    [len(r.tokens) for r in rows]
        running = [row for row in running if not row.done]


def _extend(model, tokenizer, rows: list[_Row], settings: GenerationSettings, new_tokens: int,
            stop: Sequence[int]) -> None:
    """Generate up to ``new_tokens`` more tokens for each row (left-padded batch), marking rows that stop."""
    import torch

    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": [row.prompt + row.tokens for row in rows]}, return_tensors="pt")
    batch = batch.to(model.device)
    with torch.inference_mode():
        output = model.generate(**batch, **{**settings.to_kwargs(), "max_new_tokens": new_tokens},
                                eos_token_id=list(stop), pad_token_id=tokenizer.pad_token_id)
    for row, tokens in zip(rows, output[:, batch["input_ids"].shape[1]:].tolist(), strict=True):
        cut = next((position for position, token in enumerate(tokens) if token in stop), None)
        row.tokens += tokens if cut is None else tokens[:cut]
        row.done = cut is not None or len(row.tokens) >= settings.max_new_tokens


def stream_chat(model, tokenizer, messages: list[dict[str, str]], settings: GenerationSettings,
                stop=None) -> Iterator[str]:
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
    kwargs = {**batch, **settings.to_kwargs(), "streamer": streamer, "pad_token_id": tokenizer.pad_token_id,
              "stopping_criteria": StoppingCriteriaList([_StopOnEvent()])}
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
