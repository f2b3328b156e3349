"""Batched generation shared by eval and chat: one place for generation settings.

Prompts are left-padded so every row's last prompt token sits at the same position, and the attention
mask hides the padding; that is what makes batched greedy output identical to one-at-a-time output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grpolab.errors import UserError

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_SOURCE = "the default"
_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")


@dataclass
class GenerationSettings:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
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


def run_max_new_tokens(adapter: str | None = None, model: str | None = None) -> tuple[int, str]:
    """(max_new_tokens, where it came from) for eval and chat when no flag gives it.

    A trained run wrote replies up to its ``max_completion_length`` tokens; fewer cut its Sudoku grids and
    GSM8K reasoning off. The run directory's config.yaml holds it (a ``checkpoint-N`` folder's run is its
    parent); a merged model's grpolab_merge.json names the adapter it came from. Otherwise: 256.
    """
    for path in _run_configs(adapter, model):
        value = _completion_length(path)
        if value is not None:
            return value, f"max_completion_length in {path}"
    return DEFAULT_MAX_NEW_TOKENS, DEFAULT_SOURCE


def _run_configs(adapter: str | None, model: str | None) -> list[Path]:
    merge_info = Path(model or "") / "grpolab_merge.json"
    if not adapter and model and merge_info.is_file():
        adapter = json.loads(merge_info.read_text(encoding="utf-8")).get("adapter")
    if not adapter:
        return []
    run = Path(adapter)
    candidates = [run / "config.yaml"]
    if _CHECKPOINT_DIR.fullmatch(run.name):
        candidates.append(run.parent / "config.yaml")
    return [path for path in candidates if path.is_file()]


def _completion_length(path: Path) -> int | None:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise UserError(f"{path} is not valid YAML: repair it, or pass --max_new_tokens") from None
    value = config.get("max_completion_length") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


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
