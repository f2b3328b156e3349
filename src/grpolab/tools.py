"""Tools for multi-turn GRPO: loading them by import path, guarding each call, and the chat template.

Tools reach TRL's ``GRPOTrainer`` through its public ``tools=`` argument; TRL runs the tool loop
(parse the reply, call, append the result, generate again up to ``max_tool_calling_iterations``).
grpolab adds what a user's tool needs around that loop:

* ``guard(fn, timeout)`` wraps a tool so that a call that raises, hangs past ``timeout`` seconds or
  returns something that is not text raises ``ToolFailure`` with one line. TRL catches any exception of
  a tool, counts it in ``tools/failure_frequency`` and hands ``{"error": message}`` to the model as the
  tool's result, so a broken tool is a failed call the model sees, never a crash or a silent 0.
* ``load_tool("package.module:function")`` admits user code, one line when the path is wrong.
* ``resolve_chat_template`` / ``require_tool_template``: a model whose template cannot render tool calls
  (SmolLM2's plain ChatML one prints only ``content``) gets one line naming the ``chat_template`` fix.
"""

from __future__ import annotations

import ast
import functools
import importlib
import logging
import operator
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpolab.errors import UserError, first_line

logger = logging.getLogger(__name__)

# Packaged templates by name. "chatml-tools" is TRL's Qwen2.5 template: the same <|im_start|>/<|im_end|>
# markers SmolLM2 was trained on, plus <tool_call>{json}</tool_call> and <tool_response> blocks; TRL
# recognises it by identity and so finds its response parser and training template.
PACKAGED_TEMPLATES = {"chatml-tools": "qwen2_5.jinja"}

# Numbers are text a model can read as well; anything else (None, dicts, objects) is a tool's mistake.
TEXT_TYPES = (str, int, float)


class ToolFailure(RuntimeError):
    """A tool call that failed; its message is what the model is shown as the tool's result."""


def guard(tool: Callable[..., Any], timeout: float) -> Callable[..., str]:
    """``tool`` with a per-call time limit (0 = none), exceptions and non-text results as ``ToolFailure``.

    functools.wraps keeps the signature, type hints and docstring, from which TRL (via transformers'
    ``get_json_schema``) builds the schema the model sees. A call that times out leaves its daemon
    thread running: Python cannot stop a thread, and the rollout must not wait for it.
    """
    name = tool.__name__

    @functools.wraps(tool)
    def guarded(*args, **kwargs) -> str:
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["value"] = tool(*args, **kwargs)
            except Exception as error:  # the tool's fault, reported to the model as its result
                outcome["error"] = error

        worker = threading.Thread(target=call, name=f"tool-{name}", daemon=True)
        worker.start()
        worker.join(timeout or None)
        if worker.is_alive():
            raise ToolFailure(f"{name} timed out after {timeout:g} s")
        if "error" in outcome:
            error = outcome["error"]
            raise ToolFailure(f"{name} raised {type(error).__name__}: {first_line(error)}")
        value = outcome["value"]
        if isinstance(value, bool) or not isinstance(value, TEXT_TYPES):
            raise ToolFailure(f"{name} returned {type(value).__name__}, not text")
        return str(value)

    return guarded


def load_tool(spec: str) -> Callable[..., Any]:
    """The function named by ``package.module:function``; a UserError saying what to fix otherwise."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"tool '{spec}' must be 'package.module:function', e.g. 'mytools:add'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(
            f"tool '{spec}': cannot import {module_name} ({first_line(error)}); put it on PYTHONPATH"
        ) from error
    tool = getattr(module, attribute, None)
    if not callable(tool):
        raise UserError(f"tool '{spec}': {module_name} has no function {attribute}")
    if not tool.__doc__:
        raise UserError(f"tool '{spec}' needs a docstring: it is the description the model sees")
    return tool


def load_tools(specs: list[str] | None, timeout: float) -> list[Callable[..., str]]:
    """Every tool a recipe names, each guarded with the per-call ``timeout``."""
    return [guard(load_tool(spec), timeout) for spec in specs or []]


def resolve_chat_template(value: str) -> str:
    """The template text for a ``chat_template`` value: a packaged name or a path to a .jinja file."""
    if value in PACKAGED_TEMPLATES:
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / PACKAGED_TEMPLATES[value]).read_text()
    path = Path(value).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(PACKAGED_TEMPLATES))
        raise UserError(f"--chat_template '{value}' is neither a packaged template ({names}) nor a file")
    return path.read_text()


def require_tool_template(tokenizer, model_name: str) -> None:
    """Refuse, in one line with the fix, a tokenizer whose chat template cannot render tool calls."""
    from trl.chat_template_utils import supports_tool_calling

    if not supports_tool_calling(tokenizer):
        raise UserError(
            f"the chat template of {model_name} cannot render tool calls: set chat_template: chatml-tools "
            "(ChatML models such as SmolLM2) or chat_template: path/to/template.jinja"
        )


def trainer_tool_arguments(task, train_args, tokenizer, model_name: str) -> dict[str, Any]:
    """``tools`` / ``environment_factory`` for TRL's GRPOTrainer: the task's own plus the recipe's.

    Sets the recipe's ``chat_template`` on the tokenizer first, then refuses a template that cannot render
    tool calls (TRL would raise a ValueError deep in its constructor). Empty when the run has no tools.
    """
    if train_args.chat_template:
        tokenizer.chat_template = resolve_chat_template(train_args.chat_template)
    timeout = train_args.tool_timeout
    run_tools = [guard(tool, timeout) for tool in task.tools] + load_tools(train_args.tools, timeout)
    arguments: dict[str, Any] = {}
    if run_tools:
        arguments["tools"] = run_tools
    if task.environment_factory is not None:
        arguments["environment_factory"] = task.environment_factory
    if arguments:
        require_tool_template(tokenizer, model_name)
    return arguments


_OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.USub: operator.neg, ast.UAdd: operator.pos,
}
# Bounds a call whatever the model writes: no powers, at most this many characters and digits per number.
MAX_EXPRESSION_CHARS = 200
MAX_NUMBER_DIGITS = 30


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / // % and parentheses, e.g. "(123 * 45) + 6".

    Args:
        expression: the arithmetic expression to evaluate
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    value = _evaluate(ast.parse(expression.strip(), mode="eval").body)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _evaluate(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        value = _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        value = _OPERATORS[type(node.op)](_evaluate(node.operand))
    else:
        raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")
    if isinstance(value, int) and len(str(abs(value))) > MAX_NUMBER_DIGITS:
        raise ValueError(f"result has more than {MAX_NUMBER_DIGITS} digits")
    return value


def check_tool_options(train_args) -> list[str]:
    """The recipe's tool names, imported, and its chat template read, without a model (``--dry_run``)."""
    names = [tool.__name__ for tool in load_tools(train_args.tools, train_args.tool_timeout)]
    if train_args.chat_template:
        resolve_chat_template(train_args.chat_template)
    return names
