"""Tool use (issue 28): guarded tool calls, the chat template check, the episode loop eval shares with TRL's,
and the calculator task."""

from __future__ import annotations

import json
import time

import pytest

from grpolab.errors import UserError
from grpolab.tasks import calc
from grpolab.tools import (
    ToolCallError,
    execute_calls,
    guarded,
    load_tools,
    prepare_tokenizer,
    run_episode,
    tool_suffix_ids,
)

CALL = '<tool_call>\n{{"name": "calculator", "arguments": {{"expression": "{expression}"}}}}\n</tool_call>'


def _call(name: str, **arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def raising(expression: str) -> str:
    """Always fails.

    Args:
        expression: ignored
    """
    raise ZeroDivisionError("division by zero")


def hanging(expression: str) -> str:
    """Never answers in time.

    Args:
        expression: ignored
    """
    time.sleep(5)
    return "late"


def numeric(expression: str) -> str:
    """Returns a number, not text.

    Args:
        expression: ignored
    """
    return 42


@pytest.fixture
def tool_tokenizer(tokenizer):
    import copy

    return prepare_tokenizer(copy.deepcopy(tokenizer), "chatml-tools")


def scripted(tokenizer, replies):
    """A generate() that writes ``replies`` in turn (each ended by the stop token), recording its prompts."""
    replies, prompts = list(replies), []

    def generate(prompt_ids, max_new_tokens):
        prompts.append(list(prompt_ids))
        text = replies.pop(0)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return ids[:max_new_tokens]

    generate.prompts = prompts
    return generate


# ------------------------------------------------------------------------------------------ guarded calls
def test_a_guarded_tool_keeps_its_name_signature_and_docstring_for_trl_schema():
    from transformers.utils import get_json_schema

    assert get_json_schema(guarded(calc.calculator)) == get_json_schema(calc.calculator)
    assert guarded(calc.calculator)(expression="12 * 3") == "36"


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (raising, "{'error': 'division by zero'}"),
        (hanging, "{'error': 'hanging took longer than 0.2 s and was abandoned'}"),
        (numeric, "{'error': 'numeric returned int, not text'}"),
    ],
)
def test_a_tool_that_raises_hangs_or_returns_non_text_tells_the_model_and_counts_as_failed(tool, message):
    start = time.monotonic()
    [(name, content, failed)] = execute_calls([_call(tool.__name__, expression="1")],
                                              {tool.__name__: guarded(tool, timeout=0.2)})
    assert (name, content, failed) == (tool.__name__, message, True)
    assert time.monotonic() - start < 2


def test_a_hung_call_raises_tool_call_error_the_trl_loop_turns_into_a_failed_call():
    with pytest.raises(ToolCallError, match="took longer than 0.1 s"):
        guarded(hanging, timeout=0.1)(expression="1")


def test_unknown_tool_and_bad_arguments_are_failed_calls_with_trl_messages():
    tools = {"calculator": guarded(calc.calculator)}
    results = execute_calls([_call("lookup", q="x"), _call("calculator", expr="1"),
                             _call("calculator", expression="2 +")], tools)
    assert [failed for _, _, failed in results] == [True, True, True]
    assert results[0][1] == "{'error': 'Tool lookup not found.'}"
    assert "unexpected keyword argument 'expr'" in results[1][1]
    assert "cannot read '2 +'" in results[2][1]


# ----------------------------------------------------------------------------------- loading and template
def test_a_user_tool_loads_by_import_path_and_bad_paths_are_one_line_errors():
    assert load_tools(["grpolab.tasks.calc:calculator"]) == [calc.calculator]
    with pytest.raises(UserError, match="write it as package.module:function"):
        load_tools(["calculator"])
    with pytest.raises(UserError, match="cannot import tool 'grpolab.tasks.calc:nothing'"):
        load_tools(["grpolab.tasks.calc:nothing"])
    with pytest.raises(UserError, match="is a str, not a function"):
        load_tools(["grpolab.tasks.calc:SYSTEM"])


def test_a_template_that_cannot_render_tool_calls_names_the_fix(tokenizer):
    import copy

    with pytest.raises(UserError, match="cannot render tool calls: set chat_template: chatml-tools") as error:
        prepare_tokenizer(copy.deepcopy(tokenizer), None, "smollm2-135m-instruct")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="neither a packaged template"):
        prepare_tokenizer(copy.deepcopy(tokenizer), "no-such-template.jinja")


def test_the_chatml_tool_template_gets_trl_parser(tool_tokenizer):
    from trl.chat_template_utils import parse_response

    prompt = tool_tokenizer.apply_chat_template(calc.make_prompt("123 * 456"), tools=[calc.calculator],
                                                add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = tool_tokenizer(CALL.format(expression="123 * 456") + "<|im_end|>")["input_ids"]
    reply = parse_response(tool_tokenizer, ids, prefix=list(prompt), tools=[calc.calculator])
    assert reply["tool_calls"] == [_call("calculator", expression="123 * 456")]


# ------------------------------------------------------------------------------------------- the episode
def test_an_episode_calls_the_tool_feeds_the_result_back_and_ends_on_the_answer(tool_tokenizer):
    generate = scripted(tool_tokenizer, [CALL.format(expression="123 * 456"), "56088"])
    messages = calc.make_prompt("123 * 456")
    episode = run_episode(generate, tool_tokenizer, messages, [guarded(calc.calculator)], 4, 200)
    assert [m["role"] for m in episode.messages] == ["assistant", "tool", "assistant"]
    assert episode.messages[1] == {"role": "tool", "name": "calculator", "content": "56088"}
    assert (episode.tool_calls, episode.failed_calls, episode.turns, episode.truncated) == (1, 0, 2, False)
    # the second turn's context is the first prompt, the model's call and TRL's tool suffix, token for token
    first_reply = tool_tokenizer(CALL.format(expression="123 * 456"), add_special_tokens=False)["input_ids"]
    suffix = tool_suffix_ids(tool_tokenizer, [episode.messages[1]])
    assert generate.prompts[1] == generate.prompts[0] + first_reply + [tool_tokenizer.eos_token_id] + suffix
    assert "<tool_response>\n56088\n</tool_response>" in tool_tokenizer.decode(suffix)


def test_episodes_run_side_by_side_end_as_they_do_one_at_a_time(tool_tokenizer):
    """run_episodes batches each turn of every unfinished episode; each ends as run_episode ends it alone."""
    from grpolab.tools import run_episodes

    scripts = [  # per conversation: its replies in turn
        [CALL.format(expression="123 * 456"), "56088"],
        ["56000"],
        [CALL.format(expression="1 +"), CALL.format(expression="2 * 3"), "6"],
        [CALL.format(expression="9 * 9")] * 5,
    ]
    tools = [guarded(calc.calculator)]
    conversations = [calc.make_prompt(q) for q in ("123 * 456", "7 * 8", "2 * 3", "9 * 9")]
    alone = [run_episode(scripted(tool_tokenizer, replies), tool_tokenizer, messages, tools, 2, 400)
             for replies, messages in zip(scripts, conversations, strict=True)]
    generators, calls = [scripted(tool_tokenizer, replies) for replies in scripts], []

    def batched(contexts, budgets):
        calls.append(len(contexts))
        rows = [next(i for i, prompt in enumerate(own_prompts) if c[: len(prompt)] == prompt)
                for c in contexts]
        return [generators[row](c, budget) for row, c, budget in zip(rows, contexts, budgets, strict=True)]

    own_prompts = [list(tool_tokenizer.apply_chat_template(m, tools=tools, add_generation_prompt=True,
                                                           tokenize=True, return_dict=True)["input_ids"])
                   for m in conversations]
    together = run_episodes(batched, tool_tokenizer, conversations, [tools] * 4, 2, 400)
    assert together == alone
    assert calls == [4, 3, 2]  # 2 ends at once, 1 after its result, 3 on its answer, 4 at the cap
    assert [e.tool_calls for e in together] == [1, 0, 2, 2] and together[2].failed_calls == 1
    assert [e.turns for e in together] == [2, 1, 3, 3]


def test_a_malformed_call_is_the_model_reply_not_a_tool_call(tool_tokenizer):
    malformed = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1 *'
    generate = scripted(tool_tokenizer, [malformed + "</tool_call>"])
    episode = run_episode(generate, tool_tokenizer, calc.make_prompt("1 * 2"), [calc.calculator], 4, 200)
    assert (episode.tool_calls, episode.turns, len(episode.messages)) == (0, 1, 1)
    assert calc.calc_correct([episode.messages], answer=["2"]) == [0.0]


def test_the_iteration_cap_stops_a_model_that_never_stops_calling(tool_tokenizer):
    generate = scripted(tool_tokenizer, [CALL.format(expression="1 * 2")] * 5)
    episode = run_episode(generate, tool_tokenizer, calc.make_prompt("1 * 2"), [calc.calculator], 2, 500)
    assert (episode.tool_calls, episode.turns) == (2, 3)
    assert episode.messages[-1]["tool_calls"]  # the last turn's call is not run
    assert calc.calc_correct([episode.messages], answer=["2"]) == [0.0]  # no answer given


def test_a_tool_result_past_the_token_budget_ends_the_episode(tool_tokenizer):
    call = CALL.format(expression="123 * 456")
    # room for the call and its stop token, not for the result
    budget = len(tool_tokenizer(call, add_special_tokens=False)["input_ids"]) + 1 + 5
    generate = scripted(tool_tokenizer, [call, "56088"])
    prompt = calc.make_prompt("123 * 456")
    episode = run_episode(generate, tool_tokenizer, prompt, [calc.calculator], 4, budget)
    assert episode.truncated and episode.tool_calls == 1 and [m["role"] for m in episode.messages] == [
        "assistant"]


# ------------------------------------------------------------------------- eval and training agree
@pytest.mark.parametrize(
    ("replies", "solved"),
    [
        ([CALL.format(expression="123 * 456"), "56088"], True),
        ([CALL.format(expression="123 * 456"), "The calculator says 56088, so about 56000"], False),
        (["56088"], True),
        ([CALL.format(expression="123 + 456"), "579"], False),
    ],
)
def test_eval_and_training_give_the_same_verdict_on_the_same_transcript(tool_tokenizer, replies, solved):
    from grpolab.evaluation.tool_runner import episode_record

    row = {"question": "123 * 456", "answer": "56088", "label": "mul-3"}
    prompt = calc.make_prompt(row["question"])
    generate = scripted(tool_tokenizer, replies)
    episode = run_episode(generate, tool_tokenizer, prompt, [guarded(calc.calculator)], 4, 200)
    record = episode_record(calc.TASK, row, 0, episode)
    # TRL hands the reward the completion as this list of messages (assistant, tool, assistant)
    reward = calc.calc_correct([episode.messages], answer=[row["answer"]], label=[row["label"]])
    assert record["solved"] is solved and reward == [float(solved)]
    assert record["messages"] == episode.messages and record["turns"] == len(replies)


def test_a_completion_ending_on_a_tool_result_is_judged_on_the_model_words():
    """TRL ends a completion with the tool message when the reply after it did not fit: the tool's 56088
    must not count as the model's answer."""
    completion = [{"role": "assistant", "content": "", "tool_calls": [_call("calculator", expression="x")]},
                  {"role": "tool", "name": "calculator", "content": "56088"}]
    assert calc.calc_correct([completion], answer=["56088"]) == [0.0]


def test_tool_metrics_are_reported_per_item():
    from grpolab.evaluation.metrics import summarize

    base = {"label": "mul-3", "parsed": "1", "partial": 0.0, "format_ok": True, "lenient": False,
            "tokens": 10, "truncated": False}
    records = [{**base, "index": 0, "sample": 0, "solved": True, "tool_calls": 1, "failed_calls": 0,
                "turns": 2},
               {**base, "index": 1, "sample": 0, "solved": False, "tool_calls": 3, "failed_calls": 1,
                "turns": 4}]
    metrics = summarize(records)
    assert (metrics["tool_calls_per_item"], metrics["failed_calls_per_item"], metrics["turns_per_item"],
            metrics["tool_use_rate"]) == (2.0, 0.5, 3.0, 1.0)


# ----------------------------------------------------------------------------------- the calc task
@pytest.mark.parametrize(
    ("expression", "result"),
    [("123 * 456", "56088"), ("12 * 345 + 67 * 890", "63770"), ("(2 + 3) * -4", "-20"), (" 7 ", "7"),
     ("12 × 3", "36")],
)
def test_calculator_table(expression, result):
    assert calc.calculator(expression) == result


@pytest.mark.parametrize(
    ("expression", "message"),
    [("2 ** 1000", "only integers"), ("1 / 2", "only integers"), ("__import__('os')", "only integers"),
     ("1.5 * 2", "only integers"), ("2 +", "cannot read"), ("9" * 50, "result longer than 40 digits"),
     ("1+" * 150 + "1", "longer than 200 characters")],
)
def test_calculator_refuses_what_it_does_not_do(expression, message):
    with pytest.raises(ValueError, match=message):
        calc.calculator(expression)


def test_calc_splits_never_share_an_expression_in_any_order():
    train = calc.generate_rows(3000, seed=0, split="train", levels="mul-3,sumprod")
    test = calc.generate_rows(300, seed=1, split="test", levels="mul-3,sumprod")
    assert len(test) == 300 and {row["label"] for row in test} == {"mul-3", "sumprod"}
    key = calc.split_of
    assert all(key(row["question"]) == "test" for row in test)
    assert key("123 * 456") == key("456 * 123")
    assert key("12 * 345 + 67 * 890") == key("890 * 67 + 345 * 12")
    assert not {row["question"] for row in train} & {row["question"] for row in test}
    assert all(calc.calculator(row["question"]) == row["answer"] for row in train[:50] + test[:50])


def test_calc_reference_episode_is_a_call_its_result_and_the_bare_answer():
    episode = calc.reference_messages({"question": "123 * 456", "answer": "56088"})
    assert episode[0]["tool_calls"] == [_call("calculator", expression="123 * 456")]
    assert episode[1:] == [{"role": "tool", "name": "calculator", "content": "56088"},
                           {"role": "assistant", "content": "56088"}]


def test_calc_bad_level_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown calc level.*mul-9.*choose from mul-3, mul-4, sumprod"):
        calc.generate_rows(3, levels="mul-9")


# --------------------------------------------------------------------------------------- training wiring
def test_a_tool_task_reaches_trl_with_its_tools_and_the_cpu_fast_paths(tiny_model_dir, tmp_path):
    from grpolab.training import recipes
    from grpolab.training.grpo import build_trainer

    train_args, grpo_config, model_config = recipes.parse_train_args([
        "--task", "calc", "--task_options", '{"levels": "mul-3"}', "--num_train", "8",
        "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--num_generations", "2",
        "--per_device_train_batch_size", "2", "--max_completion_length", "128", "--report_to", "none",
        "--tools", "tests.test_tools:raising", "--max_tool_calling_iterations", "2",
    ])
    trainer = build_trainer(train_args, grpo_config, model_config)
    assert [tool.__name__ for tool in trainer.tools] == ["calculator", "raising"]
    assert (trainer.logprob_mode, trainer.generation_mode, trainer.max_tool_calling_iterations) == (
        "shared", "shared", 2)
    assert trainer.tools[1].__wrapped__ is raising  # guarded


def test_a_completion_budget_that_cannot_hold_an_episode_is_refused_before_training(tiny_model_dir, tmp_path):
    """TRL drops a tool result that does not fit, so every episode would end on its call and score 0."""
    from grpolab.training import recipes
    from grpolab.training.grpo import build_trainer

    args = recipes.parse_train_args([
        "--task", "calc", "--num_train", "8", "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(tmp_path / "run"), "--num_generations", "2", "--per_device_train_batch_size", "2",
        "--max_completion_length", "64", "--report_to", "none",
    ])
    with pytest.raises(UserError, match=r"max_completion_length 64 cannot hold a calc episode \(\d+ tokens.*"
                                        r"set --max_completion_length \d+ or more"):
        build_trainer(*args)


# ------------------------------------------------------------------------------------------------- chat
def test_chat_shows_each_call_and_result_and_judges_the_final_reply(tokenizer, monkeypatch):
    import copy
    import io

    from grpolab.chat import repl
    from grpolab.chat import session as chat
    from grpolab.evaluation import tool_runner

    replies = [CALL.format(expression="123 * 456"), "56088"]
    monkeypatch.setattr(tool_runner, "hf_generate",
                        lambda model, tok, settings: scripted(tok, replies))
    task = chat.get_chat_task("calc")
    stream, count_tokens = repl.tool_backend(None, copy.deepcopy(tokenizer), task.task)
    session = chat.ChatSession(task=task)
    out = io.StringIO()
    lines = iter(["/tools", "123 * 456", "/exit"])
    repl.run_repl(session, stream, count_tokens, read_line=lambda prompt: next(lines), out=out)
    shown = out.getvalue()
    assert "  calculator: Evaluate an arithmetic expression with integers" in shown
    assert "[call calculator(expression='123 * 456')]\n[calculator -> 56088]\n56088\n" in shown
    assert "solved: yes (answer 56088)" in shown
    assert session.turns[0].reply == "56088"


def test_chat_tools_command_without_a_tool_task_says_how_to_get_one():
    from grpolab.chat import session as chat

    assert chat.ChatSession().handle_command("/tools") == (
        "no tools: start the chat with a tool task, e.g. --task calc")


# ----------------------------------------------------------------------------- a stateful environment
def test_the_number_game_answers_higher_lower_correct_and_owns_a_reward():
    from grpolab.tasks.guess import MAX_GUESSES, NumberGame

    game = NumberGame()
    assert game.reset(answer="37", question="q") is None
    assert [game.guess(50), game.guess(25), game.guess(37)] == ["lower", "higher", "correct"]
    assert game.get_reward() == 1.0 and game.guesses == 3
    game.reset(answer="5")
    assert game.get_reward() == 0.0
    for _ in range(MAX_GUESSES):
        game.guess(1)
    assert game.guess(5) == f"no guesses left ({MAX_GUESSES} made)" and game.get_reward() == 0.0


def test_an_environment_episode_gets_a_fresh_game_per_row_and_its_methods_as_tools(tool_tokenizer):
    from grpolab.tasks import guess
    from grpolab.tools import environment_tools

    row = {"question": guess.USER, "answer": "37", "label": "1-100"}
    game, tools, prompt = environment_tools(guess.NumberGame, row, guess.make_prompt(row["question"]))
    assert [tool.__name__ for tool in tools] == ["guess"] and prompt == guess.make_prompt(guess.USER)
    other, _, _ = environment_tools(guess.NumberGame, {**row, "answer": "3"}, prompt)
    assert other is not game and (game.target, other.target) == (37, 3)
    call = '<tool_call>\n{{"name": "guess", "arguments": {{"number": {n}}}}}\n</tool_call>'
    generate = scripted(tool_tokenizer, [call.format(n=50), call.format(n=37), "37"])
    episode = run_episode(generate, tool_tokenizer, prompt, [guarded(tool) for tool in tools], 8, 400)
    assert [m["content"] for m in episode.messages if m["role"] == "tool"] == ["lower", "correct"]
    assert game.get_reward() == 1.0 and guess.guess_correct([episode.messages], answer=["37"]) == [1.0]


def test_guess_splits_hold_out_a_quarter_of_the_numbers():
    from grpolab.tasks import guess

    train = {row["answer"] for row in guess.generate_rows(500, split="train")}
    test = {row["answer"] for row in guess.generate_rows(200, split="test")}
    assert not train & test and 10 < len(test) < 40


def test_an_environment_task_reaches_trl_through_environment_factory(tiny_model_dir, tmp_path):
    from grpolab.tasks.guess import NumberGame
    from grpolab.training import recipes
    from grpolab.training.grpo import build_trainer

    train_args, grpo_config, model_config = recipes.parse_train_args([
        "--task", "guess", "--task_options", "{}", "--num_train", "8", "--model_name_or_path",
        str(tiny_model_dir), "--output_dir", str(tmp_path / "run"), "--max_steps", "1",
        "--num_generations", "2", "--per_device_train_batch_size", "2", "--max_completion_length", "16",
        "--report_to", "none",
    ])
    trainer = build_trainer(train_args, grpo_config, model_config)
    assert [tool.__name__ for tool in trainer.tools] == ["guess"]
    assert isinstance(trainer.tools[0].__self__, NumberGame)
    assert (trainer.logprob_mode, trainer.generation_mode) == ("shared", "shared")


def test_probe_and_eval_run_the_same_episodes_and_verdicts(tokenizer, monkeypatch, tmp_path):
    import copy

    from grpolab.evaluation import tool_runner
    from grpolab.evaluation.config import ProbeConfig
    from grpolab.evaluation.probe import sample_groups
    from grpolab.training.rewards import select_rewards

    # both episodes take their first turn in one batch: a call and a guess; then the called one answers
    replies = [CALL.format(expression="123 * 456"), "56000", "56088"]

    def batched(model, tok, settings, batch_size=None):
        generate = scripted(tok, replies)
        return lambda contexts, budgets: [generate(c, b) for c, b in zip(contexts, budgets, strict=True)]

    monkeypatch.setattr(tool_runner, "batched_generate", batched)
    dataset = calc.TASK.load_dataset("test", num=1)
    dataset = dataset.map(lambda row: {"answer": "56088", "prompt": calc.make_prompt("123 * 456")})
    config = ProbeConfig(model="m", task="calc", k=2, max_new_tokens=200)
    rewards = select_rewards(calc.TASK, None, None)
    [group] = sample_groups(None, copy.deepcopy(tokenizer), calc.TASK, dataset, config, rewards,
                            tmp_path / "samples.jsonl", progress=False)
    # the first episode calls the tool and answers 56088; the second answers 56000 without a call
    assert group["solved"] == [True, False] and group["rewards"] == [1.0, 0.0]


def test_sft_on_tool_episodes_trains_on_the_assistant_tokens_only(tiny_model_dir, tmp_path):
    from trl import SFTConfig

    from grpolab.training import recipes
    from grpolab.training.sft import build_trainer

    train_args, sft_config, model_config = recipes.parse_train_args(
        ["--task", "calc", "--task_options", '{"levels": "mul-3"}', "--num_train", "4",
         "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "sft"),
         "--max_steps", "1", "--report_to", "none", "--max_length", "512"],
        SFTConfig, "sft-sudoku-smollm2.yaml", "sft",
    )
    trainer = build_trainer(train_args, sft_config, model_config)
    assert trainer.args.assistant_only_loss
    row = trainer.train_dataset[0]
    tokenizer = trainer.processing_class
    mask = row["assistant_masks"] if "assistant_masks" in row else [label != -100 for label in row["labels"]]
    trained = tokenizer.decode([t for t, m in zip(row["input_ids"], mask, strict=True) if m])
    question = calc.TASK.load_dataset("train", num=4, options={"levels": "mul-3"})[0]["question"]
    answer = calc.calculator(question)
    # the call and the bare answer are targets; the prompt, the tool schema and the tool result are not
    assert f'"expression": "{question}"' in trained and trained.rstrip().endswith(f"{answer}<|im_end|>")
    assert "<tool_response>" not in trained and "system" not in trained and "What is" not in trained


def test_chat_through_a_pty_lists_tools_and_judges_a_tool_task_reply(tiny_model_dir):
    import os
    import sys

    import pexpect

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "grpolab", "chat", "--model", str(tiny_model_dir), "--task", "calc", "--max_new_tokens", "8"],
        env=env, encoding="utf-8", timeout=120, dimensions=(50, 400),
    )
    child.expect_exact("type a product such as 123 * 456")
    child.expect_exact(">>> ")
    child.sendline("/tools")
    child.expect_exact("calculator: Evaluate an arithmetic expression")
    child.expect_exact(">>> ")
    child.sendline("123 * 456")
    child.expect_exact("[calc] parsed: ")  # a random model's reply, judged by the task's scorer
    child.expect_exact("(answer 56088)")
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_with_an_environment_task_plays_one_game_through_its_methods(tokenizer, monkeypatch):
    import copy
    import io

    from grpolab.chat import repl
    from grpolab.chat import session as chat
    from grpolab.evaluation import tool_runner
    from grpolab.tasks import guess

    task = chat.get_chat_task("guess")
    target = int(guess.generate_rows(1, 7, "test")[0]["answer"])  # the game seed 7 hides
    guess_call = '<tool_call>\n{{"name": "guess", "arguments": {{"number": {}}}}}\n</tool_call>'
    replies = [guess_call.format(target - 1), guess_call.format(target), str(target)]
    monkeypatch.setattr(tool_runner, "hf_generate", lambda model, tok, settings: scripted(tok, replies))
    stream, count_tokens = repl.tool_backend(None, copy.deepcopy(tokenizer), task.task, seed=7)
    session = chat.ChatSession(task=task, tools=stream.tools)
    out = io.StringIO()
    lines = iter(["/tools", "Find the hidden number.", f"/answer {target}", "/exit"])
    repl.run_repl(session, stream, count_tokens, read_line=lambda prompt: next(lines), out=out)
    shown = out.getvalue()
    assert "  guess: Guess the hidden number." in shown
    assert f"[call guess(number={target - 1})]\n[guess -> higher]\n[call guess(number={target})]\n" \
           f"[guess -> correct]\n{target}\n" in shown
    assert "solved: yes" in shown
    assert stream.environment.guesses == 2 and stream.environment.get_reward() == 1.0


USER_TOOL = '''
def double(number: int) -> str:
    """Double a whole number.

    Args:
        number: the number to double
    """
    return str(2 * number)
'''


@pytest.mark.slow
def test_a_user_tool_by_import_path_through_data_sft_train_eval_and_chat(tiny_model_dir, tmp_path):
    """``tools: [usertools:double]`` from a recipe reaches every command: the run records it, eval and chat
    load it from the run (chat's /tools through a pty), and a bad path is one line before any loading."""
    import os
    import subprocess
    import sys

    import pexpect

    (tmp_path / "usertools.py").write_text(USER_TOOL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: calc\nmodel_name_or_path: {tiny_model_dir}\ntools: [usertools:double]\n"
                      "use_peft: true\nchat_template: chatml-tools\nreport_to: none\nplot: false\nseed: 0\n")

    def grpolab(*args):
        done = subprocess.run([sys.executable, "-m", "grpolab", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    data = tmp_path / "calc.jsonl"
    grpolab("data", "calc", "--num", "16", "--num_test", "2", "--out", str(data))
    sft = grpolab("sft", "--config", str(recipe), "--data_file", str(data), "--max_steps", "1",
                  "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "sft"))
    plan = grpolab("sft", "--config", str(recipe), "--data_file", str(data), "--dry_run",
                   "--output_dir", str(tmp_path / "x"))
    assert "tools            calculator, double" in plan
    assert "warm-up adapter saved" in sft
    grpolab("train", "--config", str(recipe), "--data_file", str(data), "--init_adapter",
            str(tmp_path / "sft"), "--max_steps", "1", "--num_generations", "2",
            "--per_device_train_batch_size", "2", "--max_completion_length", "128",
            "--output_dir", str(tmp_path / "run"))
    assert "usertools:double" in (tmp_path / "run" / "config.yaml").read_text()
    grpolab("eval", "--adapter", str(tmp_path / "run"), "--data_file", str(data), "--split", "test",
            "--max_new_tokens", "16", "--out", str(tmp_path / "eval"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["items"] == 2 and "tool_calls_per_item" in metrics
    child = pexpect.spawn(sys.executable, ["-m", "grpolab", "chat", "--adapter", str(tmp_path / "run"),
                                           "--task", "calc", "--max_new_tokens", "8"],
                          env=env, cwd=str(tmp_path), encoding="utf-8", timeout=120, dimensions=(50, 400))
    child.expect_exact(">>> ")
    child.sendline("/tools")
    child.expect_exact("calculator: Evaluate an arithmetic expression")
    child.expect_exact("double: Double a whole number.")
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    bad = subprocess.run([sys.executable, "-m", "grpolab", "train", "--config", str(recipe), "--tools",
                          "usertools:missing", "--output_dir", str(tmp_path / "bad")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "usertools:missing" in bad.stderr
    assert not (tmp_path / "bad").exists()
