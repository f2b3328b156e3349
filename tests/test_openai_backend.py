"""``grpolab eval --backend openai`` against a real HTTP server on loopback that speaks the OpenAI chat API.

The server (http.server in a thread) answers arith prompts itself: choice j of a request with seed s (0 when
greedy) is right when result + s + j is even, so every expected accuracy can be computed from the items.
Faults are scripted per chat request: HTTP errors, a dropped connection, a slow reply, a malformed body.
The client is not mocked.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from grpolab import cli
from grpolab.errors import UserError
from grpolab.evaluation import runner as evaluation
from grpolab.evaluation.config import EvalConfig
from grpolab.generation import openai as openai_backend
from grpolab.tasks import get_task

_QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")
SECRET = "sk-test-0123456789-do-not-leak"


class FakeOpenAI:
    """A loopback server with /v1/models and /v1/chat/completions; ``faults`` are used one per chat request.

    A fault is ("status", code, headers), ("drop",), ("sleep", seconds), ("body", bytes) or None (answer).
    Model "tuned" is always right; any other served model follows the parity rule in the module docstring.
    """

    def __init__(self, models=("base",), key=None, honour_n=True, list_models=True, faults=()):
        self.models, self.key, self.honour_n, self.list_models = list(models), key, honour_n, list_models
        self.faults = list(faults)
        self.chat_requests: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, body: dict) -> tuple[int, dict]:
        if body.get("model") not in self.models:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                   "type": "NotFoundError", "code": 404}}
        prompt = body["messages"][-1]["content"]
        a, b = map(int, _QUESTION.search(prompt).groups())
        n, seed = (body.get("n", 1) if self.honour_n else 1), body.get("seed", 0)
        choices, total = [], 0
        for j in range(n):
            right = body["model"] == "tuned" or (a + b + seed + j) % 2 == 0
            reply = f"{a} + {b} = {a + b}." if right else f"The sum is {a + b + 1}, I am quite sure."
            words = reply.split()
            cut = len(words) > body["max_tokens"]
            words = words[: body["max_tokens"]]
            total += len(words)
            choices.append({"index": j, "message": {"role": "assistant", "content": " ".join(words)},
                            "finish_reason": "length" if cut else "stop"})
        return 200, {"object": "chat.completion", "model": body["model"], "choices": choices,
                     "usage": {"prompt_tokens": 20, "completion_tokens": total, "total_tokens": 20 + total}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload, headers=()):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def _authorised(self) -> bool:
                if fake.key is None or self.headers.get("Authorization") == f"Bearer {fake.key}":
                    return True
                self._send(401, {"error": "Unauthorized"})
                return False

            def do_GET(self):
                if self.path != "/v1/models" or not fake.list_models:
                    return self._send(404, {"detail": "Not Found"})
                if self._authorised():
                    self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}
                                                                for name in fake.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"detail": "Not Found"})
                if not self._authorised():
                    return None
                with fake.lock:
                    fake.chat_requests.append((time.monotonic(), body))
                    fault = fake.faults.pop(0) if fake.faults else None
                if fault is None:
                    return self._send(*fake.answer(body))
                if fault[0] == "status":
                    return self._send(fault[1], {"error": {"message": f"injected {fault[1]}"}}, fault[2])
                if fault[0] == "body":
                    return self._send(200, fault[1])
                if fault[0] == "sleep":
                    time.sleep(fault[1])
                    return self._send(*fake.answer(body))
                self.close_connection = True  # "drop": close without a reply
                return None

        return Handler


@pytest.fixture
def fake():
    servers: list[FakeOpenAI] = []

    def start(**options) -> FakeOpenAI:
        servers.append(FakeOpenAI(**options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _rows(num: int = 8) -> list[dict]:
    return list(get_task("arith").load("test", None, num, 0))


def _config(server: FakeOpenAI, **overrides) -> EvalConfig:
    return EvalConfig(**{"backend": "openai", "base_url": server.url, "model": "base", "num": 8,
                         "concurrency": 4, "timeout": 10.0, **overrides})


def _samples(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "samples.jsonl").read_text().splitlines()]


def _files_text(directory: Path) -> str:
    return "".join(path.read_bytes().decode("utf-8", "replace")
                   for path in directory.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------------------- happy path
def test_served_models_scored_reported_and_compared(fake, tmp_path, monkeypatch, capsys):
    server = fake(models=("base", "tuned"), key=SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    rows = _rows()
    even = [int(row["answer"]) % 2 == 0 for row in rows]
    assert 0 < sum(even) < len(rows)  # the parity rule gives a mix of right and wrong replies
    common = ["eval", "--backend", "openai", "--base_url", server.url, "--num", "8", "--no_progress"]
    assert cli.main([*common, "--model", "base", "--out", str(tmp_path / "base")]) == 0
    assert cli.main([*common, "--model", "tuned", "--out", str(tmp_path / "tuned"),
                     "--compare", str(tmp_path / "base")]) == 0

    base = json.loads((tmp_path / "base" / "metrics.json").read_text())
    assert base["accuracy"] == sum(even) / 8
    assert base["mean_completion_tokens"] == sum(5 if right else 8 for right in even) / 8
    assert base["truncated_rate"] == 0.0 and base["name"] == "base"
    samples = sorted(_samples(tmp_path / "base"), key=lambda s: s["index"])
    assert [s["solved"] for s in samples] == even
    assert [s["answer"] for s in samples] == [row["answer"] for row in rows]
    assert json.loads((tmp_path / "tuned" / "metrics.json").read_text())["accuracy"] == 1.0
    comparison = (tmp_path / "tuned" / "comparison.md").read_text()
    assert f"+{100 * (1 - sum(even) / 8):.1f} pp" in comparison
    # Every request carried the key; no file and no output repeats it, only the variable's name.
    assert len(server.chat_requests) == 16
    assert SECRET not in _files_text(tmp_path) and SECRET not in "".join(capsys.readouterr())
    saved = json.loads((tmp_path / "base" / "eval_config.json").read_text())
    assert (saved["api_key_env"], saved["base_url"]) == ("OPENAI_API_KEY", server.url)


def test_the_only_served_model_is_used_without_model(fake, tmp_path):
    server = fake(models=("only-one",))
    out, metrics = evaluation.evaluate(_config(server, model=None, num=2), tmp_path / "eval", progress=False)
    assert metrics["config"]["model"] == "only-one"
    assert {body["model"] for _, body in server.chat_requests} == {"only-one"}


def test_several_served_models_need_model(fake, tmp_path):
    server = fake(models=("a", "b"))
    with pytest.raises(UserError, match=r"serves 2 models \(a, b\): choose one with --model"):
        evaluation.evaluate(_config(server, model=None), tmp_path / "eval", progress=False)


def test_k_completions_through_n_with_truncation_from_finish_reason(fake, tmp_path):
    server = fake()
    config = _config(server, k=4, temperature=0.7, max_new_tokens=6)
    out, metrics = evaluation.evaluate(config, tmp_path / "eval", progress=False)
    assert len(server.chat_requests) == 8 and {body["n"] for _, body in server.chat_requests} == {4}
    assert {(body["seed"], body["temperature"]) for _, body in server.chat_requests} == {(0, 0.7)}
    assert metrics["accuracy"] == 0.5 and metrics["pass@2"] == pytest.approx(1 - 1 / 6)
    # Right replies are 5 words; wrong ones 8, cut at 6 with finish_reason "length".
    samples = _samples(out)
    assert len(samples) == 32
    assert all(s["truncated"] == (not s["solved"]) for s in samples)
    assert all(s["tokens"] == (5 if s["solved"] else 6) for s in samples)
    assert metrics["truncated_rate"] == 0.5


def test_server_that_ignores_n_is_asked_again_with_new_seeds(fake, tmp_path):
    server = fake(honour_n=False)
    _, metrics = evaluation.evaluate(_config(server, num=3, k=4, temperature=0.7), tmp_path / "eval",
                                     progress=False)
    assert len(server.chat_requests) == 12 and metrics["samples_per_item"] == 4
    assert metrics["accuracy"] == 0.5
    seeds = Counter((body["messages"][-1]["content"], body["seed"]) for _, body in server.chat_requests)
    assert sorted(seed for _, seed in seeds) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert set(seeds.values()) == {1}


@pytest.mark.parametrize(
    ("total", "truncated", "expected"),
    [
        (7, [False], [7]),
        (4, [True], [4]),  # one completion: the server's count as it is
        (10, [False, False], [5, 5]),
        (11, [False, False, False], [4, 4, 3]),  # the remainder goes to the first ones
        (16, [True, False, True, False], [6, 2, 6, 2]),
        (18, [True, True, True], [6, 6, 6]),
        (3, [True, False], [6, 0]),  # an inconsistent total never goes negative
    ],
)
def test_split_tokens(total, truncated, expected):
    assert openai_backend.split_tokens(total, truncated, 6) == expected


# ------------------------------------------------------------------------------------------------- retries
def test_500_then_success_retries_once_after_backoff(fake, tmp_path):
    server = fake(faults=[("status", 500, ())])
    _, metrics = evaluation.evaluate(_config(server, num=1), tmp_path / "eval", progress=False)
    assert metrics["items"] == 1 and len(server.chat_requests) == 2
    (first, _), (second, _) = server.chat_requests
    assert second - first >= openai_backend.BACKOFF_S * 0.9


def test_429_waits_for_retry_after(fake, tmp_path):
    server = fake(faults=[("status", 429, [("Retry-After", "1")])])
    _, metrics = evaluation.evaluate(_config(server, num=1), tmp_path / "eval", progress=False)
    (first, _), (second, _) = server.chat_requests
    assert metrics["items"] == 1 and second - first >= 0.95


def test_dropped_connection_is_retried(fake, tmp_path):
    server = fake(faults=[("drop",), ("drop",)])
    _, metrics = evaluation.evaluate(_config(server, num=2, concurrency=1), tmp_path / "eval", progress=False)
    assert metrics["items"] == 2 and len(server.chat_requests) == 4


def test_a_failing_server_is_given_up_after_max_attempts(fake, tmp_path):
    server = fake(faults=[("status", 503, [("Retry-After", "0")])] * 10)
    with pytest.raises(UserError, match=r"HTTP 503 \(injected 503\), 5 attempts: the server is failing"):
        evaluation.evaluate(_config(server, num=1), tmp_path / "eval", progress=False)
    assert len(server.chat_requests) == openai_backend.MAX_ATTEMPTS == 5


# -------------------------------------------------------------------------------------------------- errors
def test_no_reply_within_timeout(fake, tmp_path):
    server = fake(faults=[("sleep", 2.0)])
    start = time.monotonic()
    with pytest.raises(UserError, match=r"no reply from .*/chat/completions within --timeout 0.2 s"):
        evaluation.evaluate(_config(server, num=1, timeout=0.2), tmp_path / "eval", progress=False)
    assert time.monotonic() - start < 1.5 and len(server.chat_requests) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>gateway says hi</html>",
         r"sent a reply that is not JSON \('<html>gateway says hi</html>'\)"),
        (b'{"choices": [{"message": {"content": "1"}}]}',
         r"malformed chat completion \(bad or missing 'usage'\)"),
        (b'{"choices": [], "usage": {"completion_tokens": 0}}', "a chat completion with no text choices"),
        (b'{"choices": "x", "usage": {"completion_tokens": 1}}', "malformed chat completion"),
    ],
)
def test_malformed_reply_is_one_line(fake, tmp_path, body, message):
    server = fake(faults=[("body", body)])
    with pytest.raises(UserError, match=message):
        evaluation.evaluate(_config(server, num=1), tmp_path / "eval", progress=False)


def test_auth_failure_through_the_cli_names_the_variable_and_never_the_key(fake, tmp_path):
    server = fake(key="sk-the-right-one")
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "grpolab", "eval", "--backend", "openai", "--base_url", server.url, "--model",
         "base", "--num", "2", "--api_key_env", "GRPOLAB_TEST_KEY", "--out", str(out), "--no_progress"],
        capture_output=True, text=True, env={**_clean_env(), "GRPOLAB_TEST_KEY": SECRET}, timeout=120)
    error = result.stderr.strip()
    assert result.returncode == 2, result.stderr
    assert len(error.splitlines()) == 1
    assert error == (f"grpolab eval: error: {server.url}/models rejected the API key in $GRPOLAB_TEST_KEY "
                     "(HTTP 401): check that variable, or name the right one with --api_key_env")
    assert SECRET not in result.stdout + result.stderr + _files_text(out)
    assert json.loads((out / "eval_config.json").read_text())["api_key_env"] == "GRPOLAB_TEST_KEY"


def _clean_env() -> dict[str, str]:
    import os

    return {name: value for name, value in os.environ.items() if "API_KEY" not in name}


def test_missing_key_says_which_variable_to_set(fake, tmp_path, monkeypatch):
    server = fake(key="sk-the-right-one")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match=r"HTTP 401\): it needs an API key; set \$OPENAI_API_KEY"):
        evaluation.evaluate(_config(server), tmp_path / "eval", progress=False)


def test_wrong_model_lists_the_served_ones(fake, tmp_path):
    server = fake(models=("base", "arith-lora"))
    message = r"model 'smollm2' is not served at .*/v1; it serves: base, arith-lora: pass one of them"
    with pytest.raises(UserError, match=message):
        evaluation.evaluate(_config(server, model="smollm2"), tmp_path / "eval", progress=False)
    assert server.chat_requests == []


def test_wrong_model_found_by_the_chat_route_when_models_are_not_listed(fake, tmp_path):
    server = fake(list_models=False)
    with pytest.raises(UserError, match=r"HTTP 404: The model `nope` does not exist"):
        evaluation.evaluate(_config(server, model="nope"), tmp_path / "eval", progress=False)


def test_base_url_without_v1_gets_a_hint(fake, tmp_path):
    server = fake()
    root = server.url.removesuffix("/v1")
    with pytest.raises(UserError, match=r"--base_url should be its OpenAI API root, e\.g\. http://127"):
        evaluation.evaluate(_config(server, base_url=root), tmp_path / "eval", progress=False)


def test_nothing_listening(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    code = cli.main(["eval", "--backend", "openai", "--base_url", url, "--model", "m", "--num", "2",
                     "--out", str(tmp_path / "eval")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert error == (f"grpolab eval: error: cannot reach {url}/models (connection refused): "
                     "start the server (e.g. 'vllm serve MODEL') or fix --base_url")


_OPENAI = ["--backend", "openai", "--base_url", "http://h/v1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "openai"], "--backend openai needs --base_url, the server's OpenAI API root"),
        (["--base_url", "http://h/v1"], "--base_url is for --backend openai (got --backend transformers)"),
        (["--backend", "openai", "--base_url", "127.0.0.1:8000"], "--base_url must be an http(s) URL"),
        ([*_OPENAI[:3], "http://me:sk-1@h/v1"], "--base_url must not hold credentials"),
        ([*_OPENAI, "--adapter", "runs/x"], "serve the adapter (vllm serve"),
        ([*_OPENAI, "--concurrency", "0"], "--concurrency must be 1 or more"),
        ([*_OPENAI, "--timeout", "0"], "--timeout must be more than 0"),
    ],
)
def test_bad_flags_are_one_line(argv, message, tmp_path, capsys):
    code = cli.main(["eval", *argv, "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and message in error


# -------------------------------------------------------------------------------------------------- resume
def test_resume_sends_only_the_items_not_yet_written(fake, tmp_path):
    rows = _rows()
    server = fake(faults=[None, None, None, ("status", 400, ())])
    with pytest.raises(UserError, match=r"HTTP 400: injected 400"):
        evaluation.evaluate(_config(server, concurrency=1), tmp_path / "eval", progress=False)
    written = {s["index"] for s in _samples(tmp_path / "eval")}
    assert written == {0, 1, 2}
    time.sleep(0.3)  # the pool may have sent item 4 before the error stopped it; let that request land
    before = len(server.chat_requests)
    _, metrics = evaluation.evaluate(_config(server, concurrency=1), tmp_path / "eval", resume=True,
                                     progress=False)
    resent = [body["messages"][-1]["content"] for _, body in server.chat_requests[before:]]
    assert resent == [row["prompt"][-1]["content"] for row in rows[3:]]
    assert metrics["items"] == 8
    assert metrics["accuracy"] == sum(int(row["answer"]) % 2 == 0 for row in rows) / 8
