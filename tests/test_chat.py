"""``grpolab chat``: the session logic without a model, the REPL with a fake model, and real terminal runs.

The terminal tests spawn ``python -m grpolab chat`` in a pseudo-terminal (pexpect) on the embedded model.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys

import pexpect
import pytest

from grpolab.chat import repl
from grpolab.chat.session import ChatInputError, ChatSession, Turn, get_chat_task, parse_setting
from grpolab.commands import chat as chat_command
from grpolab.generation.settings import GenerationSettings

# ------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(("name", "text", "value"), [
    ("temperature", "0.3", 0.3),
    ("temperature", "0", 0.0),
    ("temperature", "2", 2.0),
    ("top_p", "1", 1.0),
    ("top_p", "0.05", 0.05),
    ("top_k", "0", 0),
    ("top_k", "50", 50),
    ("max_new_tokens", "1", 1),
    ("repetition_penalty", "1.1", 1.1),
])
def test_parse_setting_accepts(name, text, value):
    assert parse_setting(name, text) == value


@pytest.mark.parametrize(("name", "text", "message"), [
    ("temperature", "-0.1", "temperature must be a number >= 0"),
    ("temperature", "hot", "temperature must be a number >= 0"),
    ("temperature", "nan", "temperature must be"),
    ("temperature", "inf", "temperature must be"),
    ("top_p", "0", "top_p must be a number above 0 and at most 1"),
    ("top_p", "1.5", "top_p must be"),
    ("top_k", "2.5", "top_k must be a whole number"),
    ("top_k", "-1", "top_k must be"),
    ("max_new_tokens", "0", "max_new_tokens must be a whole number of at least 1"),
    ("max_new_tokens", "", "max_new_tokens must be"),
    ("repetition_penalty", "0", "repetition_penalty must be a number above 0"),
    ("temprature", "0.3", "unknown setting 'temprature': use one of max_new_tokens, temperature"),
])
def test_parse_setting_rejects_with_one_line(name, text, message):
    with pytest.raises(ValueError) as error:
        parse_setting(name, text)
    assert message in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------ commands


@pytest.fixture
def session() -> ChatSession:
    return ChatSession(settings=GenerationSettings(max_new_tokens=16), context_tokens=100)


@pytest.mark.parametrize("line", ["hello", "what is 1/2?", " hi /set", "//set temperature 1", "", "  "])
def test_non_commands_go_to_the_model(session, line):
    assert session.handle_command(line) is None


@pytest.mark.parametrize(("line", "expected"), [
    ("/set temperature 0.3", "temperature = 0.3"),
    ("/SET top_k 5", "top_k = 5"),
    ("/set   top_p   0.9 ", "top_p = 0.9"),
    ("/set temperature -1", "temperature must be a number >= 0 (0 = greedy), got '-1'"),
    ("/set temperature", "usage: /set NAME VALUE"),
    ("/set colour blue", "unknown setting 'colour'"),
    ("/set max_new_tokens 100", "max_new_tokens must be below the context window of 100 tokens"),
    ("/set", "settings: max_new_tokens=16 temperature=0.0 top_p=1.0 top_k=0 repetition_penalty=1.0"),
    ("/settings", "settings: max_new_tokens=16"),
    ("/frobnicate", "unknown command /frobnicate: /help lists the commands"),
    ("/", "unknown command /:"),
    ("/save", "usage: /save FILE"),
    ("/answer 42", "/answer needs a task: start the chat with --task TASK (arith, sudoku, gsm8k"),
    ("/system", "system: none (the chat template default)"),
    ("/reset", "cleared 0 turns"),
    ("/history", "(no turns yet)"),
])
def test_command_table(session, line, expected):
    answer = session.handle_command(line)
    assert expected in answer
    assert not session.done


def test_set_changes_only_the_named_setting_and_bad_values_change_nothing(session):
    session.handle_command("/set temperature 0.3")
    session.handle_command("/set temperature -5")
    session.handle_command("/set top_p 7")
    assert session.settings == GenerationSettings(max_new_tokens=16, temperature=0.3)
    assert "temperature=0.3" in session.handle_command("/history")


def test_help_lists_every_command(session):
    text = session.handle_command("/help")
    for name in ("/help", "/set", "/system", "/reset", "/history", "/save", "/answer", "/exit"):
        assert name in text


@pytest.mark.parametrize("line", ["/exit", "/quit", "/EXIT"])
def test_exit_commands_end_the_session(session, line):
    assert session.handle_command(line) == "bye" and session.done


def test_system_message_set_shown_and_restored():
    session = ChatSession(system="Be brief.")
    assert session.handle_command("/system Talk like a pirate.") == "system: Talk like a pirate."
    assert session.messages_for_model() == [{"role": "system", "content": "Talk like a pirate."}]
    assert session.handle_command("/system default") == "system: Be brief."


def test_reset_clears_turns_but_keeps_system_and_settings(session):
    session.handle_command("/system Be brief.")
    session.handle_command("/set temperature 0.5")
    _exchange(session, "hi", "hello")
    _exchange(session, "bye", "goodbye")
    assert session.handle_command("/reset") == "cleared 2 turns; settings and system message kept"
    assert session.turns == [] and session.settings.temperature == 0.5
    assert session.messages_for_model() == [{"role": "system", "content": "Be brief."}]


def test_save_writes_turns_settings_and_model_messages(session, tmp_path):
    session.info = {"model": "m", "adapter": None}
    session.handle_command("/set temperature 0.3")
    _exchange(session, "My name is Ada.", "Hello Ada")
    _exchange(session, "What is my name?", "Ada")
    path = tmp_path / "sub" / "chat.json"
    assert session.handle_command(f"/save {path}") == f"saved 2 turn(s) and the settings to {path}"
    saved = json.loads(path.read_text())
    assert saved["model"] == "m" and saved["settings"]["temperature"] == 0.3
    assert [turn["user"] for turn in saved["turns"]] == ["My name is Ada.", "What is my name?"]
    assert [turn["reply"] for turn in saved["turns"]] == ["Hello Ada", "Ada"]
    assert [message["content"] for message in saved["messages"]] == [
        "My name is Ada.", "Hello Ada", "What is my name?", "Ada"]


def test_save_to_an_unwritable_place_is_one_line(session, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    answer = session.handle_command(f"/save {blocker}/chat.json")
    assert answer.startswith(f"cannot write {blocker}/chat.json") and "\n" not in answer


def test_double_slash_sends_a_message_starting_with_a_slash(session):
    session.add_user("//etc/hosts is a file")
    assert session.messages_for_model() == [{"role": "user", "content": "/etc/hosts is a file"}]


# ------------------------------------------------------------------------------------ history


def _exchange(session: ChatSession, user: str, reply: str) -> None:
    session.add_user(user)
    session.finish_reply(reply)


def test_messages_for_model_alternate_and_end_with_the_pending_user_message():
    session = ChatSession(system="S")
    _exchange(session, "a", "b")
    session.add_user("c")
    assert session.messages_for_model() == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]


def _count_characters(messages) -> int:
    """A fake token counter: one token per character of content, plus 1 per message."""
    return sum(len(message["content"]) + 1 for message in messages)


def test_trim_drops_oldest_turns_keeps_system_and_says_how_many():
    session = ChatSession(settings=GenerationSettings(max_new_tokens=10), system="sys", context_tokens=40)
    _exchange(session, "aaaa", "bbbb")  # 10 tokens a turn, the system message 4; the budget is 40 - 10 = 30
    _exchange(session, "cccc", "dddd")
    assert session.trim_history(_count_characters) == 0  # 24 tokens
    _exchange(session, "eeee", "ffff")
    session.add_user("g" * 9)  # 44 tokens: 10 + 10 over
    assert session.trim_history(_count_characters) == 2
    assert [m["content"] for m in session.messages_for_model()] == ["sys", "eeee", "ffff", "g" * 9]
    assert len(session.turns) == 4  # still in /history and /save
    assert "(2 earlier turn(s) are out of the model's context)" in session.handle_command("/history")
    assert [turn["in_context"] for turn in session.to_json()["turns"]] == [False, False, True, True]


def test_trim_refuses_a_message_that_cannot_fit_and_changes_nothing():
    session = ChatSession(settings=GenerationSettings(max_new_tokens=10), system="sys", context_tokens=40)
    _exchange(session, "aaaa", "bbbb")
    session.add_user("x" * 30)
    with pytest.raises(ChatInputError, match=r"needs 35 prompt tokens but only 30 fit \(40 context - 10"):
        session.trim_history(_count_characters)
    assert session.first_in_context == 0
    session.cancel_pending()
    assert [turn.user for turn in session.turns] == ["aaaa"]


def test_no_trimming_without_a_known_context():
    session = ChatSession(context_tokens=None)
    _exchange(session, "a" * 1000, "b")
    assert session.trim_history(_count_characters) == 0


def test_reset_brings_trimmed_turns_back_into_context():
    session = ChatSession(settings=GenerationSettings(max_new_tokens=1), context_tokens=12)
    _exchange(session, "aaaa", "bbbb")
    session.add_user("cccc")
    assert session.trim_history(_count_characters) == 1
    session.handle_command("/reset")
    assert session.first_in_context == 0 and session.messages_for_model() == []


# ------------------------------------------------------------------------------------ tasks

SUDOKU_PUZZLE, SUDOKU_SOLUTION = "1_3_4__2___12_43", "1234431234212143"


def _sudoku_reply(grid: str) -> str:
    return "Thinking.\n<answer>\n" + "\n".join(grid[i:i + 4] for i in range(0, 16, 4)) + "\n</answer>"


def test_sudoku_session_prompts_like_training_and_judges_with_the_scorer():
    from grpolab.tasks import sudoku

    session = ChatSession(task=get_chat_task("sudoku"))
    session.add_user(" 1_3_ 4__2 ___1 2_43 ")
    assert session.messages_for_model() == sudoku.make_prompt(SUDOKU_PUZZLE)
    line = session.finish_reply(_sudoku_reply(SUDOKU_SOLUTION))
    assert line == "[sudoku] parsed: 1234431234212143 | valid grid: yes | keeps clues: yes | solved: yes"


@pytest.mark.parametrize(("grid", "expected"), [
    ("2134341212434321", "valid grid: yes | keeps clues: no | solved: no"),  # the first clue changed
    ("1434431234212143", "valid grid: no | keeps clues: yes | solved: no"),  # a blank filled wrong
])
def test_sudoku_verdict_says_what_is_wrong(grid, expected):
    session = ChatSession(task=get_chat_task("sudoku"))
    session.add_user(SUDOKU_PUZZLE)
    assert session.finish_reply(_sudoku_reply(grid)).endswith(expected)


def test_sudoku_unparseable_reply():
    session = ChatSession(task=get_chat_task("sudoku"))
    session.add_user(SUDOKU_PUZZLE)
    assert session.finish_reply("I think it is 1234").startswith("[sudoku] parsed: nothing | solved: no")


@pytest.mark.parametrize(("typed", "message"), [
    ("1234", "type the puzzle as 16 cells"),
    ("1_3_4__2___12_435", "type the puzzle as 16 cells"),
    ("1_3_4__2___12_4x", "type the puzzle as 16 cells"),
    ("11__" + "_" * 12, "has no solution"),
])
def test_sudoku_rejects_bad_puzzles_and_sends_nothing(typed, message):
    session = ChatSession(task=get_chat_task("sudoku"))
    with pytest.raises(ChatInputError, match=message):
        session.add_user(typed)
    assert session.turns == []


def test_sudoku_accepts_dots_and_zeros_for_blanks():
    session = ChatSession(task=get_chat_task("sudoku"))
    assert session.add_user("1.3.4002...12.43").question == SUDOKU_PUZZLE


def test_arith_gold_is_worked_out_from_the_expression():
    from grpolab.tasks import arith

    session = ChatSession(task=get_chat_task("arith"))
    session.add_user("7+12")
    assert session.messages_for_model() == arith.make_prompt("7 + 12")
    assert session.finish_reply("7 + 12 = 19.") == "[arith] parsed: 19 | solved: yes (answer 19)"
    session.add_user("6 x 3")
    assert session.finish_reply("It is 19") == "[arith] parsed: 19 | solved: no (answer 18)"


def test_arith_free_text_is_unknown_until_answer_is_given():
    session = ChatSession(task=get_chat_task("arith"))
    session.add_user("seven plus twelve")
    unknown = "[arith] parsed: 19 | solved: unknown (give the right answer with /answer GOLD)"
    assert session.finish_reply("19") == unknown
    assert session.handle_command("/answer 19") == "[arith] parsed: 19 | solved: yes (answer 19)"
    assert session.handle_command("/answer nineteen") == "an arith answer is a whole number, got 'nineteen'"
    assert session.turns[-1].verdict["solved"] is True


def test_gsm8k_uses_its_system_prompt_and_answer():
    from grpolab.tasks import gsm8k_data as gsm8k

    session = ChatSession(task=get_chat_task("gsm8k"))
    assert session.system == gsm8k.SYSTEM_PROMPT
    assert session.handle_command("/answer 5") == "no reply to judge yet: ask a question first"
    session.add_user("Tom has 3 apples and buys 2. How many?")
    assert session.messages_for_model() == gsm8k.make_prompt("Tom has 3 apples and buys 2. How many?")
    assert session.finish_reply("<answer>1,000</answer>").startswith("[gsm8k] parsed: 1000 | solved: unknown")
    assert session.handle_command("/answer $1,000.00") == "[gsm8k] parsed: 1000 | solved: yes (answer 1000)"
    assert session.handle_command("/answer 999") == "[gsm8k] parsed: 1000 | solved: no (answer 999)"


def test_sudoku_needs_no_answer():
    session = ChatSession(task=get_chat_task("sudoku"))
    session.add_user(SUDOKU_PUZZLE)
    session.finish_reply("no idea")
    assert session.handle_command("/answer 1234").startswith("no answer needed")


def test_unknown_chat_task_is_a_user_error():
    from grpolab.errors import UserError

    with pytest.raises(UserError, match="unknown task 'chess'"):
        get_chat_task("chess")


# ------------------------------------------------------------------------------------ REPL, fake model


def _fake_stream(pieces, interrupt_after=None, seen=None):
    def stream(messages, settings):
        if seen is not None:
            seen.append(list(messages))
        for index, piece in enumerate(pieces):
            if index == interrupt_after:
                raise KeyboardInterrupt
            yield piece

    return stream


def _lines(*lines):
    """A read_line that types ``lines`` and then Ctrl-D."""
    queue = list(lines)

    def read_line(prompt):
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return read_line


def test_repl_streams_replies_and_the_second_turn_sees_the_first():
    session, out, seen = ChatSession(), io.StringIO(), []
    code = repl.run_repl(
        session,
        _fake_stream(["Hi ", "Ada"], seen=seen),
        _count_characters,
        read_line=_lines("My name is Ada.", "", "What is my name?"),
        out=out,
    )
    assert code == 0
    assert out.getvalue() == "Hi Ada\nHi Ada\n\n"
    assert seen[1] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hi Ada"},
        {"role": "user", "content": "What is my name?"},
    ]


def test_ctrl_c_while_generating_keeps_the_partial_reply_and_the_session():
    session, out = ChatSession(), io.StringIO()
    repl.run_repl(
        session,
        _fake_stream(["Once ", "upon ", "a time"], interrupt_after=2),
        _count_characters,
        read_line=_lines("Tell a story.", "/history"),
        out=out,
    )
    assert session.turns == [
        Turn(user="Tell a story.", prompt="Tell a story.", reply="Once upon ", stopped=True)
    ]
    assert "[stopped: the partial reply is kept in the history; /reset clears it]" in out.getvalue()
    assert "assistant: Once upon  [stopped]" in out.getvalue()


@pytest.mark.parametrize("leave", [EOFError(), KeyboardInterrupt(), "/exit"])
def test_eof_ctrl_c_at_the_prompt_and_exit_leave_with_0(leave):
    session = ChatSession()
    code = repl.run_repl(
        session,
        _fake_stream(["x"]),
        _count_characters,
        read_line=_lines("hi", leave, "never read"),
        out=io.StringIO(),
    )
    assert code == 0 and len(session.turns) == 1


def test_repl_reports_bad_input_and_trimming_in_one_line_each():
    session = ChatSession(
        settings=GenerationSettings(max_new_tokens=2), task=get_chat_task("sudoku"), context_tokens=1000
    )
    session.system = None  # keep the fake token counts small
    out = io.StringIO()
    repl.run_repl(
        session,
        _fake_stream(["no"]),
        lambda messages: 400 * len(messages),
        read_line=_lines("12", SUDOKU_PUZZLE, SUDOKU_PUZZLE, SUDOKU_PUZZLE),
        out=out,
    )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("type the puzzle as 16 cells")
    notice = "[context: the 1 oldest turn(s) no longer fit the 1000-token window"
    assert [line.startswith(notice) for line in lines].count(True) == 2  # 3 messages (1200 tokens) > 998
    assert len(session.turns) == 3 and session.first_in_context == 2


def test_flags_are_checked_by_the_set_rules():
    from grpolab.cli import command_parser
    from grpolab.errors import UserError

    _, parser = command_parser("chat")
    with pytest.raises(UserError, match=r"^--top_p must be a number above 0 and at most 1, got '0'$"):
        chat_command._settings(parser.parse_args(["--top_p", "0"]))
    settings = chat_command._settings(parser.parse_args(["--temperature", "0.7", "--max_new_tokens", "16"]))
    assert settings == GenerationSettings(max_new_tokens=16, temperature=0.7)


def test_settings_take_typed_values_and_read_only_the_flags_given(monkeypatch):
    from grpolab.cli import command_parser
    from grpolab.generation import settings as generation_settings

    _, parser = command_parser("chat")
    read = []
    real = generation_settings.parse_setting
    monkeypatch.setattr(generation_settings, "parse_setting", lambda name, text: read.append(text) or real(
        name, text))
    assert chat_command._settings(parser.parse_args([]), 7) == GenerationSettings(max_new_tokens=7)
    assert read == []  # defaults and the run's length go in as they are, never through text
    flags = parser.parse_args(["--max_new_tokens", "3", "--top_k", "5"])
    assert chat_command._settings(flags, 7) == GenerationSettings(max_new_tokens=3, top_k=5)
    assert read == ["3", "5"]


@pytest.mark.parametrize(
    ("flags", "settings", "note"),
    [
        ((), "settings: max_new_tokens=7 ", "(max_new_tokens: max_completion_length in {run}/config.yaml)"),
        (("--max_new_tokens", "3"), "settings: max_new_tokens=3 ", None),
    ],
)
def test_chat_with_a_run_takes_its_completion_length_unless_the_flag_is_given(
    tiny_model_dir, trained_run, tmp_path, monkeypatch, capsys, flags, settings, note
):
    from grpolab.cli import main

    def leave(prompt: str) -> str:
        raise EOFError

    run = trained_run(tmp_path / "run", tiny_model_dir, max_completion_length=7)
    monkeypatch.setattr(repl, "line_reader", lambda: leave)
    monkeypatch.setattr(repl, "take_ctrl_c", lambda: None)
    assert main(["chat", "--adapter", str(run), *flags]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("settings:")]
    assert line.startswith(settings)
    assert (note.format(run=run) in line) if note else "(max_new_tokens:" not in line


# ------------------------------------------------------------------------------------ streaming, tiny model


def test_stream_chat_matches_batched_generation(tiny_model_dir, tokenizer):
    from grpolab.generation.hf import generate_batch, stream_chat
    from grpolab.models import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir), dtype="float32")
    chat = [{"role": "user", "content": "Hello there"}]
    settings = GenerationSettings(max_new_tokens=12)
    assert (
        "".join(stream_chat(model, tokenizer, chat, settings))
        == generate_batch(model, tokenizer, [chat], settings)[0][0]
    )


def test_stream_chat_stops_on_the_event_and_reraises_worker_errors(tiny_model_dir, tokenizer):
    import threading

    from grpolab.generation.hf import stream_chat
    from grpolab.models import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir), dtype="float32")
    stop = threading.Event()
    stop.set()
    chat = [{"role": "user", "content": "Hello"}]
    pieces = list(stream_chat(model, tokenizer, chat, GenerationSettings(max_new_tokens=50), stop=stop))
    assert len(tokenizer("".join(pieces), add_special_tokens=False)["input_ids"]) <= 2
    with pytest.raises(ValueError):  # transformers refuses a negative top_k once generation starts
        list(stream_chat(model, tokenizer, chat, GenerationSettings(temperature=1.0, top_k=-3)))


# ------------------------------------------------------------------------------------ terminal, embedded
# model


@pytest.fixture(scope="module")
def spawn_chat(embedded_model_dir):
    """``grpolab chat ARGS`` in a pseudo-terminal, with the test's grpolab cache and one CPU thread."""
    from grpolab import paths

    env = {
        **os.environ,
        "GRPOLAB_HOME": str(paths.home()),
        "OMP_NUM_THREADS": "1",
        "TERM": "dumb",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }

    def spawn(*args, sigint=signal.SIG_DFL):
        child = pexpect.spawn(
            sys.executable,
            ["-m", "grpolab", "chat", *args],
            env=env,
            encoding="utf-8",
            timeout=120,
            dimensions=(50, 400),
            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
        )
        child.expect_exact("Ctrl-D or /exit leaves")
        child.expect_exact(">>> ")
        return child

    return spawn


def _say(child, line: str, expect: str | None = None) -> str:
    """Type ``line``, wait for the next prompt; return what was printed in between (without the echo)."""
    child.sendline(line)
    child.expect_exact(line)  # the terminal's echo
    child.expect_exact(">>> ")
    printed = child.before
    if expect is not None:
        assert expect in printed
    return printed


@pytest.mark.slow
def test_terminal_conversation_settings_save_trim_reset_and_eof(spawn_chat, tmp_path):
    child = spawn_chat("--max_new_tokens", "16", "--context", "128")
    assert _say(child, "My name is Ada.").strip()  # the model answered something
    _say(child, "What is my name?")
    _say(child, "/set temperature 0.3", "temperature = 0.3")
    history = _say(child, "/history", "temperature=0.3")
    assert "[1] user: My name is Ada." in history and "[2] user: What is my name?" in history
    saved = tmp_path / "chat.json"
    _say(child, f"/save {saved}", f"saved 2 turn(s) and the settings to {saved}")
    conversation = json.loads(saved.read_text())
    assert conversation["settings"]["temperature"] == 0.3
    roles = [(m["role"], m["content"]) for m in conversation["messages"]]
    assert roles[0] == ("user", "My name is Ada.") and roles[2] == ("user", "What is my name?")
    assert roles[1][0] == "assistant" and roles[1][1] == conversation["turns"][0]["reply"]
    printed = "".join(_say(child, f"Tell me fact number {n} about the sea.") for n in range(1, 5))
    assert "oldest turn(s) no longer fit the 128-token window" in printed  # trimmed, never silently
    _say(child, "/nonsense", "unknown command /nonsense")
    _say(child, "/reset", "cleared 6 turns")
    _say(child, "/history", "(no turns yet)")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.slow
@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_terminal_ctrl_c_stops_a_reply_then_ctrl_c_at_the_prompt_leaves(spawn_chat, inherited):
    # "ignored": as when started in the background by a shell without job control (a CI script, nohup &).
    child = spawn_chat(
        "--max_new_tokens", "400", sigint=signal.SIG_IGN if inherited == "ignored" else signal.SIG_DFL
    )
    child.sendline("Write a very long story about a dragon and a knight.")
    child.expect_exact("knight.")
    child.expect(r"\w+ \w+ \w+")  # the reply has started streaming
    child.sendintr()
    child.expect_exact("[stopped: the partial reply is kept in the history; /reset clears it]")
    child.expect_exact(">>> ")
    history = _say(child, "/history", "[stopped]")
    assert "[1] user: Write a very long story" in history
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.slow
def test_terminal_sudoku_task_shows_the_verdict(spawn_chat):
    child = spawn_chat("--task", "sudoku", "--max_new_tokens", "16")
    _say(child, "1234", "type the puzzle as 16 cells")
    printed = _say(child, SUDOKU_PUZZLE)
    assert "[sudoku] parsed: " in printed and "| solved: " in printed
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
