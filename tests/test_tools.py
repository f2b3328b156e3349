"""Tools for multi-turn GRPO: a tool that raises, hangs or returns non-text is a failed call the model sees;
tools load by import path; a template that cannot render tool calls is refused with the fix."""

from __future__ import annotations

import sys
import time

import pytest

from grpolab import tools
from grpolab.errors import UserError


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first factor
        b: the second factor
    """
    return a * b


def broken(x: int) -> str:
    """Always fails.

    Args:
        x: anything
    """
    raise ZeroDivisionError("division by zero\nsecond line")


def slow(x: int) -> str:
    """Sleeps too long.

    Args:
        x: anything
    """
    time.sleep(5)
    return "late"


def opaque(x: int) -> dict:
    """Returns a dict.

    Args:
        x: anything
    """
    return {"x": x}


def undocumented(x: int) -> str:
    return str(x)


def test_guarded_tool_returns_text_and_keeps_schema():
    from transformers.utils import get_json_schema

    guarded = tools.guard(multiply, timeout=1.0)
    assert guarded(a=123, b=45) == "5535"
    schema = get_json_schema(guarded)
    assert schema["function"]["name"] == "multiply"
    assert set(schema["function"]["parameters"]["properties"]) == {"a", "b"}
    assert schema["function"]["parameters"]["properties"]["a"]["type"] == "integer"


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (broken, "broken raised ZeroDivisionError: division by zero"),
        (opaque, "opaque returned dict, not text"),
    ],
)
def test_failing_tool_raises_one_line(tool, message):
    with pytest.raises(tools.ToolFailure) as caught:
        tools.guard(tool, timeout=1.0)(x=1)
    assert str(caught.value) == message


def test_hanging_tool_times_out_quickly():
    start = time.monotonic()
    with pytest.raises(tools.ToolFailure, match=r"^slow timed out after 0.2 s$"):
        tools.guard(slow, timeout=0.2)(x=1)
    assert time.monotonic() - start < 2.0


def test_bool_is_not_text():
    def flag(x: int) -> bool:
        """A flag.

        Args:
            x: anything
        """
        return True

    with pytest.raises(tools.ToolFailure, match="returned bool"):
        tools.guard(flag, timeout=0)(x=1)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_colon", "must be 'package.module:function'"),
        ("nosuchmodule_xyz:f", "cannot import nosuchmodule_xyz"),
        ("tests.test_tools:missing", "has no function missing"),
        ("tests.test_tools:undocumented", "needs a docstring"),
    ],
)
def test_load_tool_errors_name_the_fix(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        tools.load_tool(spec)


def test_load_tools_by_import_path_guards_them():
    (loaded,) = tools.load_tools(["tests.test_tools:multiply"], timeout=1.0)
    assert loaded(a=2, b=3) == "6"
    assert loaded.__wrapped__ is multiply


def test_chat_template_errors_and_packaged_name(tmp_path):
    with pytest.raises(UserError, match="neither a packaged template .*chatml-tools"):
        tools.resolve_chat_template(str(tmp_path / "missing.jinja"))
    path = tmp_path / "t.jinja"
    path.write_text("{{ messages }}")
    assert tools.resolve_chat_template(str(path)) == "{{ messages }}"
    assert "<tool_call>" in tools.resolve_chat_template("chatml-tools")


def test_smollm2_template_refused_until_chatml_tools(tokenizer):
    import copy

    own = copy.deepcopy(tokenizer)
    with pytest.raises(UserError, match="cannot render tool calls: set chat_template: chatml-tools"):
        tools.require_tool_template(own, "SmolLM2-135M-Instruct")
    own.chat_template = tools.resolve_chat_template("chatml-tools")
    tools.require_tool_template(own, "SmolLM2-135M-Instruct")


TINY_RUN = ("train --task_options {} --output_dir run --max_steps 1 --per_device_train_batch_size 4 "
            "--num_generations 4 --max_completion_length 8 --num_train 8 --save_steps 1 --logging_steps 1 "
            "--torch_threads 1 --plot false --max_tool_calling_iterations 2 "
            "--tools tests.test_tools:multiply").split()


class Counter:
    """The README's environment: a counter the model can increase; get_reward() is an extra reward column."""

    def reset(self, **row):
        self.value = 0

    def increment(self, by: int) -> str:
        """Add to the counter.

        Args:
            by: how much to add
        """
        self.value += by
        return str(self.value)

    def get_reward(self) -> float:
        return float(self.value == 10)


def _counter_task():
    import dataclasses

    from grpolab.tasks.arith import TASK as ARITH

    return dataclasses.replace(ARITH, name="counter", environment_factory=Counter)


COUNTER_TASK = _counter_task()


def _grpolab(argv, cwd):
    import os
    import subprocess

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-m", "grpolab", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_train_refuses_plain_chatml_template_in_one_line(tmp_path, tiny_model_dir):
    result = _grpolab([*TINY_RUN, "--model_name_or_path", str(tiny_model_dir)], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot render tool calls: set chat_template: chatml-tools" in last
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_train_one_step_with_a_user_tool(tmp_path, tiny_model_dir):
    import json

    argv = [*TINY_RUN, "--model_name_or_path", str(tiny_model_dir), "--chat_template", "chatml-tools"]
    result = _grpolab(argv, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grpolab's fast paths off" in result.stderr
    state = json.loads(next((tmp_path / "run").rglob("trainer_state.json")).read_text())
    logged = state["log_history"][0]
    assert "tools/call_frequency" in logged and "tools/failure_frequency" in logged


@pytest.mark.parametrize(
    ("reply", "calls"),
    [
        ('<tool_call>\n{"name": "multiply", "arguments": {"a": 123, "b": 45}}\n</tool_call><|im_end|>',
         [{"name": "multiply", "arguments": {"a": 123, "b": 45}}]),
        # Malformed calls parse as plain text: no tool runs and the reply is scored as the model's answer.
        ('<tool_call>\n{"name": "multiply", "arguments": {"a": 123,\n</tool_call><|im_end|>', []),
        ("<tool_call>multiply(123, 45)</tool_call><|im_end|>", []),
        ("The answer is 5535.<|im_end|>", []),
    ],
)
def test_trl_parses_chatml_tool_calls_and_malformed_ones_as_text(tokenizer, reply, calls):
    import copy

    from trl.chat_template_utils import add_response_schema, parse_response

    own = copy.deepcopy(tokenizer)
    own.chat_template = tools.resolve_chat_template("chatml-tools")
    own = add_response_schema(own)
    # TRL's tool loop hands the parser the rendered prompt as prefix (the response_template needs it).
    prefix = own.apply_chat_template([{"role": "user", "content": "What is 123 * 45?"}], tokenize=True,
                                     add_generation_prompt=True, return_dict=True)["input_ids"]
    parsed = parse_response(own, own(reply, add_special_tokens=False)["input_ids"], prefix=list(prefix))
    found = [call["function"] for call in parsed.get("tool_calls") or []]
    assert found == calls
    if not calls:
        assert "5535" in parsed["content"] or "multiply" in parsed["content"]


@pytest.mark.slow
def test_train_one_step_with_the_readme_environment(tmp_path, tiny_model_dir):
    import json

    argv = [*TINY_RUN[:-2], "--task", "tests.test_tools:COUNTER_TASK", "--model_name_or_path",
            str(tiny_model_dir), "--chat_template", "chatml-tools"]
    result = _grpolab(argv, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(next((tmp_path / "run").rglob("trainer_state.json")).read_text())
    logged = state["log_history"][0]
    assert "tools/call_frequency" in logged
    assert any(key.startswith("rewards/Counter") for key in logged), sorted(logged)


@pytest.mark.parametrize(
    ("expression", "value"),
    [("123 * 45", "5535"), ("(1234 * 56) + 7 * 89", "69727"), ("-3 + 2", "-1"), ("7 / 2", "3.5"),
     ("8 / 2", "4"), (" 17 // 5 ", "3"), ("17 % 5", "2")],
)
def test_calculator_values(expression, value):
    assert tools.calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [("2 ** 100000", "unsupported expression"), ("__import__('os')", "unsupported expression"),
     ("1 / 0", "division by zero"), ("9" * 25 + " * " + "9" * 25, "more than 30 digits"),
     ("1+" * 150 + "1", "longer than 200"), ("1 +", "invalid syntax"), ("'a' * 3", "unsupported")],
)
def test_calculator_refusals_reach_the_model_as_failed_calls(expression, fragment):
    with pytest.raises(tools.ToolFailure, match=fragment):
        tools.guard(tools.calculator, timeout=1.0)(expression=expression)


@pytest.mark.parametrize("name", ["gsm8k-calculator-qwen2.5-3b", "gsm8k-calculator-qwen3-4b"])
def test_gpu_calculator_recipes_dry_run_with_their_tool(name, capsys, tmp_path, monkeypatch):
    from grpolab.cli import main
    from tests.conftest import REPO

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["train", "--config", str(REPO / "configs" / f"{name}.yaml"), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "tools            calculator (timeout 5 s a call)" in out
    assert "no weights were loaded" in out


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [(["--tools", "nosuchmodule_xyz:f"], "tool 'nosuchmodule_xyz:f': cannot import nosuchmodule_xyz"),
     (["--chat_template", "nosuch.jinja"], "--chat_template 'nosuch.jinja' is neither"),
     (["--tool_timeout", "-1"], r"--tool_timeout \(-1\) must be 0")],
)
def test_dry_run_refuses_bad_tool_options_in_one_line(flags, fragment, capsys, tmp_path, monkeypatch):
    import re

    from grpolab.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", *flags, "--dry_run"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(fragment, err.splitlines()[-1]), err
    assert "Traceback" not in err


@pytest.mark.slow
def test_build_trainer_hands_guarded_tools_and_the_iteration_cap_to_stock_trl(tmp_path, tiny_model_dir,
                                                                              monkeypatch):
    from trl import GRPOTrainer

    from grpolab.training import recipes
    from grpolab.training.grpo import build_trainer

    monkeypatch.chdir(tmp_path)
    argv = [*TINY_RUN[1:], "--model_name_or_path", str(tiny_model_dir), "--chat_template", "chatml-tools",
            "--tool_timeout", "3"]
    trainer = build_trainer(*recipes.parse_train_args(argv))
    assert type(trainer) is GRPOTrainer and trainer.generation_mode == "trl"
    assert trainer.max_tool_calling_iterations == 2
    (tool,) = trainer.tools
    assert tool.__wrapped__ is multiply and tool(a=12, b=3) == "36"
    assert "<tool_call>" in trainer.processing_class.chat_template
