"""Tools for multi-turn GRPO: loading them, guarding each call, the chat template, and one episode loop.

Training hands tools to TRL's ``GRPOTrainer(tools=...)`` and its own tool loop runs them; eval and chat run
``run_episode`` here, which follows that loop step for step: the same response parser
(``trl.chat_template_utils.parse_response``), the same tool execution and error messages (a tool that raises
gives the model ``{'error': '...'}`` and counts as a failed call), the same iteration cap
(``max_tool_calling_iterations``). So a transcript is judged the same way in training and in eval.

Each tool is wrapped by ``guarded``: a call past ``timeout`` seconds or a result that is not text raises
``ToolCallError``, which both loops turn into an error message for the model and a failed call. A malformed
call (text that does not parse as a tool call) is not run at all: it stays the model's reply, and is scored
as that reply.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpolab.errors import UserError

logger = logging.getLogger(__name__)

# Packaged chat templates, by name. "chatml-tools" is TRL's own Qwen2.5 template: the same ChatML markers as
# SmolLM2's, plus tool calls in <tool_call> tags. TRL recognises it by identity, so it also picks its response
# parser and training template; a copy edited by one character would lose both.
PACKAGED_TEMPLATES = {"chatml-tools": "qwen2_5.jinja"}

DEFAULT_TOOL_TIMEOUT = 10.0


class ToolCallError(RuntimeError):
    """A tool call that timed out or returned something other than text: the model is told, the call fails."""


def load_tools(specs: Sequence[str] | None) -> list[Callable]:
    """The functions named ``package.module:function`` (recipe key ``tools``)."""
    from grpolab.tasks import import_object

    loaded = []
    for spec in specs or ():
        if ":" not in spec:
            raise UserError(f"tool '{spec}' is not an import path: write it as package.module:function")
        tool = import_object(spec, "tool")
        if not callable(tool):
            raise UserError(f"tool '{spec}' is a {type(tool).__name__}, not a function")
        loaded.append(tool)
    return loaded


def guarded(tool: Callable, timeout: float = DEFAULT_TOOL_TIMEOUT) -> Callable:
    """``tool`` with a time limit per call and a check that it returned text; name, signature and docstring
    are kept (TRL builds the tool's schema from them). ``timeout`` 0 means no limit.

    A hung call cannot be killed from Python: it is left running in a daemon thread, and the episode goes on.
    """

    @functools.wraps(tool)
    def call(*args, **kwargs):
        outcome: dict[str, Any] = {}

        def target():
            try:
                outcome["value"] = tool(*args, **kwargs)
            except BaseException as error:  # handed to the caller's thread, raised there
                outcome["error"] = error

        thread = threading.Thread(target=target, daemon=True, name=f"tool-{tool.__name__}")
        thread.start()
        thread.join(timeout or None)
        if thread.is_alive():
            raise ToolCallError(f"{tool.__name__} took longer than {timeout:g} s and was abandoned")
        if "error" in outcome:
            raise outcome["error"]
        value = outcome["value"]
        if not isinstance(value, str):
            raise ToolCallError(f"{tool.__name__} returned {type(value).__name__}, not text")
        return value

    return call


def template_text(name_or_path: str) -> str:
    """A packaged template by name, or a Jinja file's text."""
    if name_or_path in PACKAGED_TEMPLATES:
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / PACKAGED_TEMPLATES[name_or_path]).read_text()
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise UserError(
            f"chat_template '{name_or_path}' is neither a packaged template "
            f"({', '.join(PACKAGED_TEMPLATES)}) nor a file"
        )
    return path.read_text()


def prepare_tokenizer(tokenizer, chat_template: str | None, model_name: str = "the model"):
    """Set ``chat_template`` (when given), check that it renders tool calls, and add TRL's response parser.

    A template that cannot render a tool call gets one line naming the fix, before any weight is trained.
    """
    from trl.chat_template_utils import add_response_schema, supports_tool_calling

    if chat_template:
        tokenizer.chat_template = template_text(chat_template)
    if not supports_tool_calling(tokenizer):
        where = f"the chat template '{chat_template}'" if chat_template else f"{model_name}'s chat template"
        raise UserError(
            f"{where} cannot render tool calls: set chat_template: chatml-tools (for ChatML models such as "
            "SmolLM2) or a path to a Jinja template that renders tool_calls and tool messages"
        )
    try:
        return add_response_schema(tokenizer)
    except ValueError as error:
        raise UserError(
            f"TRL has no response parser for this chat template ({str(error).splitlines()[0]}): use "
            "chat_template: chatml-tools, or a model whose template TRL knows (Qwen2.5, Qwen3, Llama 3.1)"
        ) from None


def environment_tools(factory: Callable[[], Any], row: Mapping[str, Any], messages: list[dict[str, Any]]):
    """(instance, its tools, the prompt) for one rollout, as TRL sets an environment up: a new instance,
    ``reset(**row)``, its public methods but reset/get_reward as tools, a text observation appended to the
    last message."""
    instance = factory()
    observation = instance.reset(**row)
    tools = [getattr(instance, name) for name, _ in inspect.getmembers(type(instance), inspect.isfunction)
             if name not in ("reset", "get_reward") and not name.startswith("_")]
    if isinstance(observation, str):
        messages = messages[:-1] + [{**messages[-1], "content": messages[-1]["content"] + observation}]
    return instance, tools, messages


# ------------------------------------------------------------------------------------------ one episode
@dataclass
class Episode:
    """One multi-turn rollout: the messages the model wrote and the tools answered, and what it cost."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: int = 0
    failed_calls: int = 0
    turns: int = 0
    tokens: int = 0
    truncated: bool = False


def execute_calls(tool_calls: Sequence[Mapping[str, Any]], tools: Mapping[str, Callable]):
    """(name, content, failed) per call, as TRL's tool loop makes them; an error is ``{'error': ...}``."""
    results = []
    for tool_call in tool_calls:
        if tool_call.get("type") != "function":
            results.append((tool_call.get("name", "unknown"),
                            str({"error": f"Unsupported tool call type: {tool_call.get('type')}"}), True))
            continue
        name = tool_call["function"]["name"]
        try:
            if name not in tools:
                raise ValueError(f"Tool {name} not found.")
            results.append((name, str(tools[name](**tool_call["function"]["arguments"])), False))
        except Exception as error:
            results.append((name, str({"error": str(error)}), True))
    return results


def run_episode(generate: Callable[[list[int], int], list[int]], tokenizer, messages: list[dict[str, Any]],
                tools: Sequence[Callable], max_iterations: int | None, max_completion_length: int) -> Episode:
    """One episode of ``run_episodes``, with ``generate(prompt_ids, max_new_tokens) -> new ids``."""
    def each(contexts: list[list[int]], budgets: list[int]) -> list[list[int]]:
        return [generate(context, budget) for context, budget in zip(contexts, budgets, strict=True)]

    return run_episodes(each, tokenizer, [messages], [tools], max_iterations, max_completion_length)[0]


@dataclass
class _Rollout:
    prompt_ids: list[int]
    tools: list[Callable]
    context: list[int]
    episode: Episode = field(default_factory=Episode)
    iteration: int = 0
    done: bool = False


def run_episodes(generate: Callable[[list[list[int]], list[int]], list[list[int]]], tokenizer,
                 conversations: Sequence[list[dict[str, Any]]], tools: Sequence[Sequence[Callable]],
                 max_iterations: int | None, max_completion_length: int) -> list[Episode]:
    """Generate, run the tool calls, append their results, generate again, until a reply without calls, the
    iteration cap or the token budget, for each conversation (with its own tools). Every unfinished
    episode's next turn goes to one ``generate(contexts, budgets) -> new ids per context`` call (stop token
    included when the model stopped), as TRL's loop regenerates every row that called a tool at once.

    Token accounting follows TRL's: the completion is everything after the prompt, tool results included,
    at most ``max_completion_length`` tokens; a tool result that would not fit ends the episode.
    """
    rollouts = []
    for messages, item_tools in zip(conversations, tools, strict=True):
        prompt_ids = list(tokenizer.apply_chat_template(messages, tools=list(item_tools) or None,
                                                        add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"])
        rollouts.append(_Rollout(prompt_ids, list(item_tools), list(prompt_ids)))
    active = rollouts
    while active:
        budgets = [max_completion_length - (len(r.context) - len(r.prompt_ids)) for r in active]
        asked = [i for i, budget in enumerate(budgets) if budget > 0]
        outputs = dict(zip(asked, generate([active[i].context for i in asked], [budgets[i] for i in asked]),
                           strict=True))
        for i, rollout in enumerate(active):
            _advance(rollout, outputs.get(i, []), tokenizer, max_iterations, max_completion_length)
        active = [rollout for rollout in active if not rollout.done]
    for rollout in rollouts:
        rollout.episode.tokens = len(rollout.context) - len(rollout.prompt_ids)
    return [rollout.episode for rollout in rollouts]


def _advance(rollout: _Rollout, new_ids: list[int], tokenizer, max_iterations: int | None,
             max_completion_length: int) -> None:
    """One turn of an episode: parse the reply, then end it or run its calls and append their results."""
    from trl.chat_template_utils import parse_response

    episode = rollout.episode
    episode.turns += 1
    reply = parse_response(tokenizer, new_ids, prefix=rollout.context, tools=rollout.tools) if new_ids else {}
    rollout.context += new_ids
    used = len(rollout.context) - len(rollout.prompt_ids)
    rollout.done = True
    if not reply:
        episode.truncated = True
        return
    episode.messages.append(reply)
    calls = reply.get("tool_calls")
    if not calls or (max_iterations is not None and rollout.iteration >= max_iterations):
        episode.truncated = tokenizer.eos_token_id not in new_ids[-1:] and used >= max_completion_length
        return
    results = execute_calls(calls, {tool.__name__: tool for tool in rollout.tools})
    episode.tool_calls += len(results)
    episode.failed_calls += sum(failed for _, _, failed in results)
    tool_messages = [{"role": "tool", "name": name, "content": content} for name, content, _ in results]
    suffix = tool_suffix_ids(tokenizer, tool_messages)
    if used + len(suffix) > max_completion_length:
        episode.truncated = True
        return
    episode.messages += tool_messages
    rollout.context += suffix
    rollout.iteration += 1
    rollout.done = False


def tool_suffix_ids(tokenizer, tool_messages: list[dict[str, Any]]) -> list[int]:
    """The tokens of tool results and the next assistant header, built as TRL's ``_get_tool_suffix_ids``
    does: a dummy conversation rendered with and without the results (cut after its last EOS), the rest
    kept."""
    dummy = [
        {"role": "user", "content": "dummy"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": tool_messages[0]["name"], "arguments": {}}}
        ]},
    ]
    prefix = list(tokenizer.apply_chat_template(dummy, tokenize=True, return_dict=True)["input_ids"])
    full = list(tokenizer.apply_chat_template(
        dummy + tool_messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"])
    ends = [i for i, token in enumerate(prefix) if token == tokenizer.eos_token_id]
    prefix = prefix[: ends[-1] + 1] if ends else prefix
    return full[len(prefix):]
