"""GSM8K task: number normalisation, strict/lenient extraction, rewards, loading, agreement with OpenAI."""

from __future__ import annotations

import importlib.util
import json
import time
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpolab.errors import UserError
from grpolab.tasks import get_task, gsm8k, gsm8k_answers
from grpolab.tasks.base import MAX_GRADED_CHARS
from grpolab.tasks.gsm8k import (
    LENGTH_FREE_CHARS,
    LENGTH_MAX_CHARS,
    TASK,
    gsm8k_correct,
    gsm8k_format,
    gsm8k_length_penalty,
    score,
)
from grpolab.tasks.gsm8k_answers import answers_match, canonical, normalize_answer
from tests.conftest import SHARED_DATA as SHARED_ROOT

SHARED_DATA = SHARED_ROOT / "gsm8k"
TEST_FILE = SHARED_DATA / "test.jsonl"
SOLUTIONS_FILE = SHARED_DATA / "example_model_solutions.jsonl"
AGREEMENT_SCRIPT = Path(__file__).resolve().parents[1] / "scripts/gsm8k_agreement.py"
LONG = 100_000  # characters: far beyond any completion limit, to expose quadratic regexes


# ---------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ("18", "18"),
        ("1,000", "1000"),
        ("1,234,567", "1234567"),
        ("$18.00", "18"),
        ("\\$18", "18"),
        ("$1,000.50", "1000.5"),
        ("18 dollars", "18"),
        ("5 apples.", "5"),
        ("18.", "18"),
        ("18.0", "18"),
        ("-5", "-5"),
        ("\u22125", "-5"),  # unicode minus sign
        ("-$5", "-5"),
        ("$-5", "-5"),
        ("- 5", "5"),  # a bullet, not a sign
        ("10-3", "10"),  # a range or a difference: the first number, unsigned
        ("3/4", "0.75"),
        ("0.75", "0.75"),
        (".75", "0.75"),
        ("1/3", "1/3"),
        ("\\frac{3}{4}", "0.75"),
        ("\\dfrac{1}{3}", "1/3"),
        ("\\frac34", "0.75"),
        ("\\boxed{18}", "18"),
        ("1{,}000", "1000"),
        ("1\\,000", "1000"),
        ("75%", "75"),
        ("x = 5 + 3 = 8", "8"),
        ("18 dollars for 3 days", "18"),
        ("12,5", "12"),  # not a thousands group
        ("1/0", None),
        ("", None),
        ("eighteen", None),
        ("¥ ∞ 答案", None),
        ("答案是18", "18"),
        ("1" * 5000, None),  # longer than any answer, and past Python's int-string limit
        (18, "18"),
        (18.0, "18"),
        (0.1 + 0.2, "0.30000000000000004"),
        (None, None),
    ],
)
def test_normalize_answer(span, expected):
    assert normalize_answer(span) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Fraction(18), "18"), (Fraction(-3, 4), "-0.75"), (Fraction(1, 8), "0.125"), (Fraction(2, 3), "2/3")],
)
def test_canonical(value, expected):
    assert canonical(value) == expected


@pytest.mark.parametrize(
    ("parsed", "gold", "expected"),
    [
        ("0.75", "3/4", True),
        ("18", "18", True),
        ("18.0000000001", "18", True),  # float noise, within 1e-9 relative
        ("18.001", "18", False),
        ("0.3333333", "1/3", False),  # a rounded decimal is a different number
        ("0." + "3" * 30, "1/3", True),
        ("-5", "5", False),
        (None, "5", False),
        ("5", None, False),
    ],
)
def test_answers_match(parsed, gold, expected):
    assert answers_match(parsed, gold) is expected


# ---------------------------------------------------------------------------------------------------
# Extraction: strict (solved), lenient, format, parsed
# ---------------------------------------------------------------------------------------------------

REASONING = "<think>\nShe has 16 - 3 - 4 = 9 eggs.\nShe sells them for 9 * 2 = $18.\n</think>\n"

# (completion, gold, solved, lenient, format_ok, parsed)
SCORE_TABLE = [
    (REASONING + "<answer>18</answer>", "18", True, True, True, "18"),
    (REASONING + "<answer>\n$18.00\n</answer>", "18", True, True, True, "18"),  # multi-line tag: DOTALL
    (REASONING + "<ANSWER>18</ANSWER>", "18", True, True, True, "18"),
    ("<answer>1,000</answer>", "1000", True, True, True, "1000"),
    ("<answer>-7</answer>", "-7", True, True, True, "-7"),
    ("<answer>3/4</answer>", "0.75", True, True, True, "0.75"),
    ("<answer>\\boxed{18}</answer>", "18", True, True, True, "18"),
    ("<answer>18</answer> I hope that helps! It took 3 steps.", "18", True, True, True, "18"),
    ("<answer>5</answer> wait, no: <answer>18</answer>", "18", True, True, True, "18"),  # last tag wins
    ("<answer>18</answer> wait, no: <answer>5</answer>", "18", False, False, True, "5"),
    ("<answer>eighteen</answer> \\boxed{18}", "18", False, True, False, "18"),  # tag is authoritative
    ("<answer>18", "18", False, True, False, "18"),  # unclosed: lenient only
    ("<answer>18</answer", "18", False, True, False, "18"),
    ("The answer is $\\boxed{18}$.", "18", True, True, False, "18"),
    ("so she makes 18 dollars.\n#### 18", "18", True, True, False, "18"),
    ("#### Step 1\nShe makes 18 dollars.", "18", False, True, False, "18"),  # a heading is not ####
    ("She makes 9 * 2 = 18 dollars.\nA: 18", "18", False, True, False, "18"),
    ("**Final Answer:** $18", "18", False, True, False, "18"),
    ("The answer is 18, which is 2 more than 16.", "18", False, True, False, "18"),
    ("She makes 18 dollars a day.", "18", False, True, False, "18"),  # last number
    ("She makes 18 dollars in 2 days.", "18", False, False, False, "2"),
    ("Ответ: 18 долларов", "18", False, True, False, "18"),  # unicode text, last number
    ("", "18", False, False, False, None),
    ("<answer></answer>", "18", False, False, False, None),
    ("I don't know.", "18", False, False, False, None),
    ("<answer>18</answer>", "#### 18", True, True, True, "18"),  # a raw GSM8K reference as gold
    ("<answer>1,2345</answer>", "1234", False, False, True, "1"),  # a 4-digit group is not cut to 1,234
    ("<answer>1,2345</answer>", "12345", False, False, True, "1"),  # nor read as 12,345
    ("<answer>12,345,6789</answer>", "12345", False, False, True, "12"),
    ("#### \u221218", "-18", True, True, False, "-18"),  # unicode minus after ####, as in other markers
    ("#### \uff0d18", "-18", True, True, False, "-18"),  # full-width hyphen-minus
    ("<answer>\u0661\u0668</answer>", "18", False, False, False, None),  # ASCII digits only, as arith
    ("#### \uff11\uff18", "18", False, False, False, None),  # full-width digits are not a number
    ("She had 18 or \u0967\u096f.", "18", False, True, False, "18"),  # Devanagari 19 is text
]


@pytest.mark.parametrize(("completion", "gold", "solved", "lenient", "format_ok", "parsed"), SCORE_TABLE)
def test_score(completion, gold, solved, lenient, format_ok, parsed):
    verdict = score(completion, {"answer": gold})
    assert (verdict.solved, verdict.lenient, verdict.format_ok, verdict.parsed) == (
        solved,
        lenient,
        format_ok,
        parsed,
    )
    assert verdict.partial == (1.0 if solved else 0.0)


@pytest.mark.parametrize(
    "text",
    [
        "<answer>" * (LONG // 8),
        "<answer>" + "x" * LONG,
        "\\boxed{" * (LONG // 7),
        "{" * LONG,
        "#" * LONG,
        "1," * (LONG // 2),
        "1" + ",111" * (LONG // 4) + ",11",  # malformed thousands groups: was quadratic (20 s)
        "$1" + ",111" * (LONG // 4) + "5",
        "-" * LONG,
        "9" * LONG,
        "answer is " * (LONG // 10),
        "A:\n" * (LONG // 3),
        "0." + "3" * LONG,
        "= " * (LONG // 2),
        "reasoning line with 12 apples\n" * (LONG // 30) + "<answer>18</answer>",
    ],
    ids=lambda text: repr(text[:12]),
)
def test_score_is_fast_on_100kb(text):
    start = time.perf_counter()
    score(text, {"answer": "18"})
    assert time.perf_counter() - start < 2.0  # linear scans take ~0.1 s; a quadratic one takes minutes


def test_only_the_last_graded_chars_are_read():
    filler = "x" * MAX_GRADED_CHARS
    assert score("A: x\n" * (LONG // 5) + "<answer>18</answer>", {"answer": "18"}).solved
    assert score("<answer>18</answer>" + filler[:-20], {"answer": "18"}).solved
    assert score("<answer>18</answer>" + filler, {"answer": "18"}).parsed is None


def test_long_reasoning_still_finds_the_answer():
    text = "She counts 12 apples.\n" * (LONG // 22) + "<answer>18</answer>"
    assert score(text, {"answer": "18"}).solved


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_score_never_raises_on_arbitrary_text(text):
    verdict = score(text, {"answer": "18"})
    assert verdict.partial in (0.0, 1.0)
    assert verdict.lenient or not verdict.solved  # strict reads a subset of what lenient reads


ANSWERISH = st.lists(
    st.sampled_from(
        ["<answer>", "</answer>", "\\boxed{", "}", "#### ", "A: ", "-", "$", "1,000", "18", ".5", "/", "\n"]
    )
    | st.text(max_size=5),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(ANSWERISH)
def test_score_never_raises_on_answer_like_text(text):
    verdict = score(text, {"answer": "18"})
    # What is parsed is a canonical number (it round-trips), and a solve means that number is the gold.
    assert verdict.parsed is None or gsm8k_answers.canonical(Fraction(verdict.parsed)) == verdict.parsed
    assert not verdict.solved or verdict.parsed == "18"
    assert verdict.partial == (1.0 if verdict.solved else 0.0)


# ---------------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------------


def test_rewards_are_named_after_their_metric():
    assert all(name == reward.__name__ for name, reward in TASK.rewards.items())
    assert set(TASK.default_rewards) <= set(TASK.rewards)
    assert len(TASK.default_rewards) == len(TASK.default_weights)
    assert get_task("gsm8k") is TASK


def test_correct_and_format_rewards():
    completions = ["<answer>18</answer>", "<answer>17</answer>", "\\boxed{18}", "no idea"]
    answers = ["18"] * 4
    assert gsm8k_correct(completions, answer=answers) == [1.0, 0.0, 1.0, 0.0]
    assert gsm8k_format(completions, answer=answers) == [1.0, 1.0, 0.0, 0.0]


def test_rewards_accept_chat_message_completions():
    completions = [[{"role": "assistant", "content": "<answer>18</answer>"}], []]
    assert gsm8k_correct(completions, answer=["18", "18"], prompt=[[], []]) == [1.0, 0.0]


def test_rewards_raise_on_mismatched_lengths():
    with pytest.raises(ValueError):
        gsm8k_correct(["<answer>18</answer>"], answer=["18", "19"])


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.0),
        (LENGTH_FREE_CHARS, 0.0),
        ((LENGTH_FREE_CHARS + LENGTH_MAX_CHARS) // 2, -0.5),
        (LENGTH_MAX_CHARS, -1.0),
        (10 * LENGTH_MAX_CHARS, -1.0),
    ],
)
def test_length_penalty(length, expected):
    assert gsm8k_length_penalty(["x" * length]) == [pytest.approx(expected)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=3000), min_size=1, max_size=4))
def test_rewards_stay_in_range(completions):
    answers = ["18"] * len(completions)
    for reward in (gsm8k_correct, gsm8k_format):
        assert all(value in (0.0, 1.0) for value in reward(completions, answer=answers))
    assert all(-1.0 <= value <= 0.0 for value in gsm8k_length_penalty(completions))


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------

needs_shared_data = pytest.mark.skipif(
    not TEST_FILE.is_file(), reason=f"GSM8K test split not found at {TEST_FILE}"
)


@needs_shared_data
def test_load_real_test_split():
    dataset = TASK.load(data_file=str(TEST_FILE))
    assert len(dataset) == 1319
    assert {"prompt", "question", "answer", "label"} <= set(dataset.column_names)
    assert all(normalize_answer(answer) == answer for answer in dataset["answer"])
    assert dataset[0]["answer"] == "18"
    assert set(dataset["label"]) == {"easy", "medium", "hard"}
    system, user = dataset[0]["prompt"]
    assert system["role"] == "system" and "<answer>" in system["content"]
    assert user == {"role": "user", "content": dataset[0]["question"]}


@needs_shared_data
def test_reference_solutions_score_as_solved():
    dataset = TASK.load(data_file=str(TEST_FILE))
    assert all(score(row["solution"], row).solved for row in dataset)


@needs_shared_data
def test_num_is_a_deterministic_seeded_sample():
    first = TASK.load(data_file=str(TEST_FILE), num=5, seed=3)["question"]
    assert first == TASK.load(data_file=str(TEST_FILE), num=5, seed=3)["question"]
    assert first != TASK.load(data_file=str(TEST_FILE), num=5, seed=4)["question"]
    assert len(first) == 5


GOOD_LINE = json.dumps({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        (json.dumps({"question": "q"}), "missing key 'answer'"),
        (json.dumps({"answer": "#### 4"}), "missing key 'question'"),
        (json.dumps({"question": "q", "answer": "it is four"}), "#### N"),
        (json.dumps({"question": "q", "answer": "#### four"}), "#### N"),
        (json.dumps({"question": "q", "answer": ["4"]}), "must be a string"),
    ],
)
def test_bad_local_rows_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "data.jsonl"
    path.write_text(f"{GOOD_LINE}\n\n{bad_line}\n{GOOD_LINE}\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"data.jsonl:3: .*{message}"):
        TASK.load(data_file=str(path))
    assert len(TASK.load(data_file=str(path), skip_bad_rows=True)) == 2
    assert len(TASK.load(data_file=str(path), skip_bad_rows="yes")) == 2  # as text from a command line
    with pytest.raises(UserError, match="data.jsonl:3"):
        TASK.load(data_file=str(path), skip_bad_rows="false")


def test_missing_or_empty_local_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        TASK.load(data_file=str(tmp_path / "absent.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="has no rows"):
        TASK.load(data_file=str(tmp_path / "empty.jsonl"))


def test_unknown_option_and_bad_num(tmp_path):
    with pytest.raises(UserError, match="unknown gsm8k option\\(s\\) levels"):
        TASK.load(levels="x")
    with pytest.raises(UserError, match="--num"):
        TASK.load(num=0)
    with pytest.raises(UserError, match="skip_bad_rows must be true or false"):
        TASK.load(data_file=str(tmp_path / "x.jsonl"), skip_bad_rows="maybe")


def test_unreachable_hub_says_to_pass_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(gsm8k.datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="--data_file path/to/test.jsonl") as error:
        TASK.load(split="test")
    assert "\n" not in str(error.value)


def test_hub_variant_with_numeric_answers(monkeypatch):
    records = [
        {"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4"},
        {"question": "What is half of 3?", "answer": 1.5},
        {"question": "No answer here", "answer": "unknown"},
    ]
    calls = []

    def fake_load(hub_id, config, split):
        calls.append((hub_id, config, split))
        return records  # a Dataset iterates the same way; mixed column types do not fit one Arrow table

    monkeypatch.setattr(gsm8k.datasets, "load_dataset", fake_load)
    dataset = TASK.load(split="train", hub_id="trl-lib/gsm8k-grpo")
    assert calls == [("trl-lib/gsm8k-grpo", None, "train")]
    assert dataset["question"] == ["What is 2 + 2?", "What is half of 3?"]
    assert dataset["answer"] == ["4", "1.5"]
    assert dataset["label"] == ["unknown", "unknown"]


# ---------------------------------------------------------------------------------------------------
# Agreement with OpenAI's correctness labels
# ---------------------------------------------------------------------------------------------------


def _agreement_script():
    spec = importlib.util.spec_from_file_location("gsm8k_agreement", AGREEMENT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graded():
    if not SOLUTIONS_FILE.is_file():
        pytest.skip(f"OpenAI's labelled model solutions not found at {SOLUTIONS_FILE}")
    script = _agreement_script()
    return script, list(script.graded_solutions(SOLUTIONS_FILE))


def test_lenient_grader_agrees_with_openai_labels(graded):
    script, records = graded
    agree, total = script.agreement(records)
    assert total == 5276
    assert agree / total >= 0.995, f"agreement {agree}/{total}"


def test_strict_grader_agrees_when_final_lines_are_rewritten(graded):
    script, records = graded
    for name, template in script.REWRITES.items():
        agree, total = script.strict_agreement(records, template)
        assert agree / total >= 0.995, f"{name}: agreement {agree}/{total}"


def test_agreement_script_prints_the_figure(graded, monkeypatch, capsys):
    script, _ = graded
    monkeypatch.setattr("sys.argv", ["gsm8k_agreement.py", "--data", str(SOLUTIONS_FILE), "--show", "1"])
    script.main()
    out = capsys.readouterr().out
    # The figure the README quotes: every one of OpenAI's 5,276 labelled solutions, lenient and strict.
    assert "agreement: 5276/5276 = 100.00%" in out
    assert out.count("5276/5276 = 100.00%") == 1 + len(script.REWRITES)
    assert "disagreements: 0 " in out


NUMBERISH = st.lists(
    st.sampled_from(
        ["1,000", "18", "-5", "$", "\\frac{3}{4}", "3 / 4", ".5", "x", "<", " ", "\n", ",", "\\", "a"]
    )
    | st.text(max_size=3),
    min_size=1,
    max_size=40,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(NUMBERISH, NUMBERISH)
def test_last_number_from_a_tail_equals_the_whole_text(head, tail):
    text = head * (3000 // max(1, len(head)) + 1) + tail  # longer than one tail window
    assert gsm8k_answers._last_number(text) == gsm8k_answers._last_number_in(text)


# ---------------------------------------------------------------------------------------------------
# Third pass: signs lost in LaTeX and currency, unreadable first numbers, mixed numbers, exponent golds
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "parsed"),
    [
        (r"<answer>-\frac{3}{4}</answer>", "-0.75"),  # the minus before \frac was dropped
        (r"<answer>- \dfrac{3}{4}</answer>", "-0.75"),
        (r"<answer>\frac{36}{-2}</answer>", "-18"),  # a signed denominator read 36
        (r"<answer>-\frac{-36}{2}</answer>", "18"),
        (r"\boxed{-\frac{1}{2}}", "-0.5"),
        (r"<answer>-\$5</answer>", "-5"),  # an escaped dollar lost the minus
        (r"<answer>\$1,000</answer>", "1000"),
        ("<answer>-¥300</answer>", "-300"),
        ("<answer>-₹300</answer>", "-300"),
        ("<answer>₹1,200.50</answer>", "1200.5"),
        ("#### -¥300", "-300"),
        ("<answer>\uffe5300</answer>", "300"),  # full-width yen
        ("<answer>2 1/2</answer>", "2.5"),  # a mixed number read 2
        ("<answer>-2 1/2</answer>", "-2.5"),
        ("<answer>It takes 3 1/4 hours</answer>", "3.25"),
        ("<answer>1/0 then 5</answer>", None),  # an unreadable first number let the next one count
        ("<answer>" + "1" * 40 + " or 7</answer>", None),
        ("<answer>x = 1/0</answer>", None),
    ],
)
def test_signs_currency_mixed_numbers_and_unreadable_first_numbers(completion, parsed):
    strict = gsm8k_answers.strict_value(completion)
    assert (None if strict is None else gsm8k_answers.canonical(strict)) == parsed
    if parsed is not None:
        assert score(completion, {"answer": parsed}).solved


@pytest.mark.parametrize(
    ("answer", "gold"),
    [(2e-05, "0.00002"), (1.5e-3, "0.0015"), (1e20, "100000000000000000000"), ("2e-05", "0.00002"),
     (float("nan"), None), (float("inf"), None), (0.1, "0.1"), (18, "18"), ("#### 18", "18")],
)
def test_gold_answer_of_floats_in_exponent_notation(answer, gold):
    assert gsm8k_answers.gold_answer(answer) == gold
