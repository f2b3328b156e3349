"""Evaluation through an OpenAI-compatible chat endpoint (``grpolab eval --backend openai``).

Any server with ``POST /v1/chat/completions`` works: vLLM (``vllm serve``, ``grpolab serve``), SGLang, TGI.
A LoRA adapter is evaluated by the name the server gives it (``vllm serve BASE --enable-lora --lora-modules
NAME=ADAPTER_DIR``, then ``--model NAME``). Each item's chat messages go out as they are, the server applies
the chat template, and the replies are scored by the task's scorer like a local backend's.

- Up to ``--concurrency`` requests are in flight; items are written as they finish (``--resume`` goes by
  item index, not order).
- 429, 5xx and dropped connections are retried, ``MAX_ATTEMPTS`` in all, after the server's Retry-After or
  0.5 s doubling. A request with no reply within ``--timeout`` seconds is not retried (the next attempt
  would wait as long again): the run stops with one line and the finished items stay for ``--resume``.
- Tokens come from ``usage.completion_tokens``, truncation from ``finish_reason == "length"``. With k > 1
  the usage is the total of one request's k completions: truncated ones count ``max_new_tokens`` and the
  others share the rest, so the mean is exact but one completion's count is not.
- k > 1 asks for ``n`` completions per request; a server that ignores ``n`` is asked again until k are in.
- The API key is read from the variable named by ``--api_key_env`` and sent as a bearer token; only the
  variable's name is recorded, and no error message repeats the key.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from grpolab.errors import UserError
from grpolab.generation.settings import GenerationSettings

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # one request and up to four retries
BACKOFF_S = 0.5  # wait before the first retry, doubling after each: 0.5, 1, 2, 4 s
MAX_WAIT_S = 60.0  # a longer Retry-After is cut to this
_SNIPPET_CHARS = 200  # of a server's error text quoted in a message


class ServerError(UserError):
    """The server answered with an HTTP error that retrying does not fix."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Retry(Exception):
    """A failure worth another attempt; ``wait`` is the server's Retry-After when it gave one."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.wait = reason, wait


@dataclass(frozen=True)
class Choice:
    text: str
    tokens: int
    truncated: bool


# -------------------------------------------------------------------------------------------- client
@dataclass(frozen=True)
class ChatClient:
    """JSON over HTTP to one OpenAI-compatible server, with retries; errors come out as UserError."""

    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 600.0

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def redact(self, text: str) -> str:
        """``text`` with the API key blanked out, for anything quoted from the server."""
        key = self._key()
        return text.replace(key, "***") if key else text

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        url, attempt = self.base_url + path, 1
        while True:
            try:
                return self._once(method, url, body)
            except _Retry as retry:
                if attempt == MAX_ATTEMPTS:
                    raise UserError(f"{url}: {retry.reason}, {MAX_ATTEMPTS} attempts: the server is failing "
                                    "or overloaded; check its log or lower --concurrency, then add --resume"
                                    ) from None
                wait = min(BACKOFF_S * 2 ** (attempt - 1) if retry.wait is None else retry.wait, MAX_WAIT_S)
                attempt += 1
                logger.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", url, retry.reason, wait,
                               attempt, MAX_ATTEMPTS)
                time.sleep(wait)

    def _once(self, method: str, url: str, body: Mapping[str, Any] | None) -> Any:
        headers, key = {"Content-Type": "application/json", "Accept": "application/json"}, self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise self._status_error(url, error) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise self._connection_error(url, error) from None
        return self._json(url, raw)

    def _status_error(self, url: str, error: urllib.error.HTTPError) -> Exception:
        status, message = error.code, self.redact(_error_message(error.read()))
        if status == 429 or status >= 500:
            return _Retry(f"HTTP {status} ({message})", _retry_after(error.headers.get("Retry-After")))
        if status in (401, 403):
            return UserError(self._auth_message(url, status))
        return ServerError(f"{url} answered HTTP {status}: {message}", status)

    def _auth_message(self, url: str, status: int) -> str:
        if self._key() is None:
            return (f"{url} refused the request (HTTP {status}): it needs an API key; set "
                    f"${self.api_key_env} to it, or name the variable that holds it with --api_key_env")
        return (f"{url} rejected the API key in ${self.api_key_env} (HTTP {status}): check that variable, "
                "or name the right one with --api_key_env")

    def _connection_error(self, url: str, error: Exception) -> Exception:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError):
            return UserError(f"no reply from {url} within --timeout {self.timeout:g} s: raise --timeout "
                             "(long generations, a busy server) or lower --concurrency, then add --resume")
        if isinstance(reason, ConnectionRefusedError):
            return UserError(f"cannot reach {url} (connection refused): start the server (e.g. "
                             "'vllm serve MODEL') or fix --base_url")
        if isinstance(reason, (ConnectionError, http.client.HTTPException)):
            return _Retry(f"connection dropped ({type(reason).__name__})")
        return UserError(f"cannot reach {url} ({self.redact(str(reason))}): check --base_url")

    def _json(self, url: str, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            snippet = self.redact(raw[:_SNIPPET_CHARS].decode("utf-8", "replace"))
            raise UserError(f"{url} sent a reply that is not JSON ({snippet!r}): is it an OpenAI-compatible "
                            "server? --base_url should be its API root, e.g. http://127.0.0.1:8000/v1"
                            ) from None


def _error_message(raw: bytes) -> str:
    """The human part of an error body: OpenAI's error.message, FastAPI's detail, or the text itself."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        text = str((error.get("message") if isinstance(error, dict) else error)
                   or body.get("detail") or body.get("message") or text)
    return " ".join(text.split())[:_SNIPPET_CHARS] or "no message"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None for a date or nothing."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------- the model
def served_models(client: ChatClient) -> list[str] | None:
    """The model names the server lists at /models, or None when it has no such route."""
    try:
        reply = client.get("/models")
    except ServerError as error:
        if error.status in (404, 405):
            return None
        raise
    try:
        return [str(entry["id"]) for entry in reply["data"]]
    except (KeyError, TypeError) as error:
        raise UserError(f"{client.base_url}/models sent a malformed model list (no {error}): is it an "
                        "OpenAI-compatible server? --base_url should be its API root") from None


def resolve_served_model(client: ChatClient, model: str | None) -> str:
    """``model`` as given, else the server's only model (asked at /models)."""
    if model:
        return model
    names = served_models(client)
    if names is None:
        raise UserError(f"--model is needed: {client.base_url} does not list its models at /models")
    if len(names) != 1:
        served = ", ".join(names) or "none"
        raise UserError(f"{client.base_url} serves {len(names)} models ({served}): choose one with --model")
    return names[0]


def check_model(client: ChatClient, model: str) -> None:
    """One line when the server is unreachable, refuses the key, or does not serve ``model``."""
    names = served_models(client)
    if names is not None and model not in names:
        served = ", ".join(names) or "none"
        raise UserError(f"model {model!r} is not served at {client.base_url}; it serves: {served}: "
                        "pass one of them with --model")


def _not_found(client: ChatClient, model: str, error: ServerError) -> UserError:
    names = served_models(client)
    if names is None:
        return UserError(f"{error} (the server has no /chat/completions here): --base_url should be its "
                         "OpenAI API root, e.g. http://127.0.0.1:8000/v1")
    check_model(client, model)
    return error


# ------------------------------------------------------------------------------------------ requests
def request_body(model: str, chat: Sequence[Mapping[str, str]], settings: GenerationSettings, n: int,
                 seed: int) -> dict[str, Any]:
    """A chat-completions request; sampling fields only when sampling, so greedy asks servers the least."""
    body: dict[str, Any] = {"model": model, "messages": list(chat), "max_tokens": settings.max_new_tokens,
                            "temperature": settings.temperature if settings.do_sample else 0.0}
    if settings.do_sample:
        body.update(top_p=settings.top_p, seed=seed)
    if n > 1:
        body["n"] = n
    return body


def split_tokens(total: int, truncated: Sequence[bool], max_new_tokens: int) -> list[int]:
    """Per-completion token counts from one request's total: truncated ones hold ``max_new_tokens``, the
    others share the rest as evenly as integers allow, so the counts add up to ``total``."""
    if len(truncated) == 1:
        return [total]
    free = [index for index, cut in enumerate(truncated) if not cut]
    counts = [max_new_tokens if cut else 0 for cut in truncated]
    if free:
        share, extra = divmod(max(total - max_new_tokens * (len(truncated) - len(free)), 0), len(free))
        for rank, index in enumerate(free):
            counts[index] = share + (1 if rank < extra else 0)
    return counts


def parse_choices(reply: Any, url: str, max_new_tokens: int) -> list[Choice]:
    """Completions of one chat-completions reply, in ``index`` order; a malformed reply is a UserError."""
    try:
        choices = sorted(reply["choices"], key=lambda choice: choice.get("index", 0))
        texts = [choice["message"]["content"] or "" for choice in choices]
        truncated = [choice.get("finish_reason") == "length" for choice in choices]
        total = int(reply["usage"]["completion_tokens"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{url} sent a malformed chat completion (bad or missing {error}): is it an "
                        "OpenAI-compatible server? --base_url should be its API root") from None
    if not choices or not all(isinstance(text, str) for text in texts):
        raise UserError(f"{url} sent a chat completion with no text choices: is it an OpenAI-compatible "
                        "server?")
    counts = split_tokens(total, truncated, max_new_tokens)
    return [Choice(text, count, cut) for text, count, cut in zip(texts, counts, truncated, strict=True)]


def complete(client: ChatClient, model: str, chat: Sequence[Mapping[str, str]], settings: GenerationSettings,
             k: int, seed: int) -> list[Choice]:
    """k completions of one chat: ``n=k`` in one request, and more requests if the server sends fewer."""
    choices: list[Choice] = []
    while len(choices) < k:
        # A server that ignores n is asked again; a new seed each time, or a seeded sampler repeats itself.
        body = request_body(model, chat, settings, k - len(choices), seed + len(choices))
        try:
            reply = client.post("/chat/completions", body)
        except ServerError as error:
            raise (_not_found(client, model, error) if error.status == 404 else error) from None
        choices += parse_choices(reply, client.base_url + "/chat/completions", settings.max_new_tokens)
    return choices[:k]


def generate_stream(client: ChatClient, model: str, chats: Sequence[Sequence[Mapping[str, str]]],
                    settings: GenerationSettings, k: int, seed: int, concurrency: int
                    ) -> Iterator[tuple[int, list[Choice]]]:
    """(chat position, its k completions) as each chat finishes, ``concurrency`` requests at a time.

    The first error stops the stream: requests not yet sent are cancelled, those in flight run out.
    """
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="grpolab-openai")
    try:
        futures = {pool.submit(complete, client, model, chat, settings, k, seed): position
                   for position, chat in enumerate(chats)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
