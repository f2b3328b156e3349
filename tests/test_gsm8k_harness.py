"""GSM8K as lm-evaluation-harness scores it: the two filters, its exact match, and its few-shot prompts.

The expected verdicts follow the harness's gsm8k.yaml / gsm8k-cot.yaml (v3.0) literally, quirks included:
``#### 18.00`` is wrong (exact match of strings, not numbers) and ``#### $18`` finds nothing.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpolab.errors import UserError
from grpolab.tasks.gsm8k import TASK
from grpolab.tasks.gsm8k_harness import (
    COT_EXEMPLARS,
    HARNESS_FLEXIBLE_RE,
    HARNESS_IGNORE_RES,
    harness_extract,
    harness_flexible_extract,
    harness_normalize,
    harness_strict_match,
)
from tests.conftest import SHARED_DATA

TEST_FILE = SHARED_DATA / "gsm8k" / "test.jsonl"
needs_shared_data = pytest.mark.skipif(
    not TEST_FILE.is_file(), reason=f"GSM8K test split not found at {TEST_FILE}"
)


def _real_row(line_number: int, style: str = "gsm8k") -> dict:
    """A row as grpolab loads it from the shared test split (line 0: Janet's ducks, gold 18)."""
    record = json.loads(TEST_FILE.read_text(encoding="utf-8").splitlines()[line_number])
    return {
        "answer": record["answer"].split("#### ")[-1],
        "solution": record["answer"],
        "prompt_style": style,
    }


@needs_shared_data
@pytest.mark.parametrize(
    ("completion", "strict", "flexible"),
    [
        ("She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 every day.\n#### 18", True, True),
        ("#### 18.", True, True),  # a trailing full stop is one of the harness's regexes_to_ignore
        ("#### 18.00", False, False),  # exact match of strings: 18.00 is not 18
        ("#### $18", False, True),  # strict's regex wants a digit after '#### '; flexible drops the '$'
        ("#### 18 dollars", True, True),
        ("#### -18", False, False),
        ("#### 18\n#### 20", True, False),  # strict takes the first match, flexible the last number
        ("She makes 18 dollars, so 20 - 2 = 18", False, True),
        ("9 * 2 = 18, then add 2: 20", False, False),
        ("<answer>18</answer>", False, True),  # grpolab's own format is invisible to strict-match
        (
            "The answer is 18.\n\nQuestion: Tom has 5 apples and eats 3.\nAnswer: 2",
            False,
            True,
        ),  # cut at the stop
        ("", False, False),
        ("no number at all", False, False),
        ("ｔhe answer is １８", False, False),  # full-width digits are not [0-9]
        ("18 " + "x " * 5000 + "#### 18", True, True),  # very long
    ],
)
def test_harness_filters_on_real_item(completion, strict, flexible):
    row = _real_row(0)
    assert row["answer"] == "18"
    assert harness_strict_match(completion, row) is strict
    assert harness_flexible_extract(completion, row) is flexible


@needs_shared_data
@pytest.mark.parametrize(
    ("completion", "strict", "flexible"),
    [
        ("He made 70,000 dollars.\n#### 70,000", True, True),  # commas are ignored on both sides
        ("#### 70000", True, True),
        ("#### $70,000", False, True),
        ("The profit is $70,000.", False, True),  # '$70,000.' loses '$', ',' and the final '.'
        ("#### 70 000", False, False),  # a space is not a thousands separator here: strict reads 70
    ],
)
def test_harness_filters_with_a_thousands_answer(completion, strict, flexible):
    row = _real_row(2)
    assert row["answer"] == "70000" and "#### 70000" in row["solution"]
    assert harness_strict_match(completion, row) is strict
    assert harness_flexible_extract(completion, row) is flexible


@needs_shared_data
@pytest.mark.parametrize(
    ("completion", "strict", "flexible"),
    [
        ("9 * 2 = 18. The answer is 18.", True, True),
        ("The answer is 18.\nQ: Tom has 5 apples and eats 3. How many are left?\nA: 2", True, True),
        ("The answer is 18", False, True),  # the regex's final '.' needs a character: it captures only '1'
        ("#### 18", False, True),  # gsm8k-cot's strict-match looks for 'The answer is', not '####'
        ("The answer is $18.", False, True),
    ],
)
def test_harness_cot_filters(completion, strict, flexible):
    row = _real_row(0, style="gsm8k-cot")
    assert harness_strict_match(completion, row) is strict
    assert harness_flexible_extract(completion, row) is flexible


@needs_shared_data
def test_every_reference_solution_passes_both_filters():
    dataset = TASK.load(data_file=str(TEST_FILE))
    assert all(harness_strict_match(row["solution"], row) for row in dataset)
    assert all(harness_flexible_extract(row["solution"], row) for row in dataset)


@pytest.mark.parametrize(
    ("text", "extracted"),
    [("a 12 b 3,4 c", "3,4"), ("$5.", "$5."), ("x 7", "7"), ("none", "[invalid]"), ("-3 and -12.5", "-12.5")],
)
def test_flexible_regex_takes_the_last_match_first_nonempty_group(text, extracted):
    assert harness_extract(HARNESS_FLEXIBLE_RE, text, group_select=-1) == extracted


@pytest.mark.parametrize(
    ("text", "normalized"),
    [("$1,000.", "1000"), ("Work...\n#### 72", "72"), ("18.00", "18.00"), ("ABC", "abc"), ("5.\n", "5\n")],
)
def test_harness_normalize(text, normalized):
    assert harness_normalize(text) == normalized


# ------------------------------------------------------------------------------------- few-shot prompts
@needs_shared_data
def test_five_shot_prompt_uses_train_solutions_as_earlier_turns():
    dataset = TASK.load(data_file=str(TEST_FILE), num=3, seed=0, fewshot=5)
    prompt = dataset[0]["prompt"]
    assert [m["role"] for m in prompt] == ["user", "assistant"] * 5 + ["user"]  # no system prompt
    assert prompt[-1]["content"] == f"Question: {dataset[0]['question'].strip()}\nAnswer:"
    assert all(
        m["content"].startswith("Question: ") and m["content"].endswith("\nAnswer:") for m in prompt[::2]
    )
    assert all("\n#### " in m["content"] for m in prompt[1::2])  # full train solutions, '#### N' last
    train_questions = {
        json.loads(line)["question"]
        for line in (TEST_FILE.parent / "train.jsonl").read_text(encoding="utf-8").splitlines()
    }
    assert all(m["content"][len("Question: ") : -len("\nAnswer:")] in train_questions for m in prompt[:-1:2])
    assert dataset[1]["prompt"][:-1] == prompt[:-1]  # the same exemplars for every item: a shared prefix
    assert dataset[0]["prompt_style"] == "gsm8k"
    assert TASK.load(data_file=str(TEST_FILE), num=3, seed=0, fewshot=5)["prompt"] == dataset["prompt"]


@needs_shared_data
def test_cot_prompt_uses_the_eight_fixed_exemplars():
    dataset = TASK.load(data_file=str(TEST_FILE), num=2, fewshot_style="gsm8k-cot")
    prompt = dataset[0]["prompt"]
    assert len(prompt) == 17 and dataset[0]["prompt_style"] == "gsm8k-cot"
    assert prompt[0]["content"] == f"Q: {COT_EXEMPLARS[0][0]}\nA:"
    assert prompt[15]["content"].endswith("The answer is 8.")
    assert prompt[-1]["content"].startswith("Q: ") and prompt[-1]["content"].endswith("\nA:")
    three = TASK.load(data_file=str(TEST_FILE), num=2, fewshot=3, fewshot_style="gsm8k-cot")["prompt"][0]
    assert len(three) == 7


@needs_shared_data
def test_default_prompt_is_unchanged_without_fewshot():
    row = TASK.load(data_file=str(TEST_FILE), num=1)[0]
    assert row["prompt"][0]["role"] == "system" and row["prompt_style"] == "grpolab"


@needs_shared_data
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fewshot_style": "mmlu"}, "fewshot_style must be one of gsm8k, gsm8k-cot"),
        ({"fewshot": "many"}, "fewshot must be a whole number"),
        ({"fewshot": 9, "fewshot_style": "gsm8k-cot"}, "between 0 and 8"),
        ({"fewshot": 2, "fewshot_file": "/nonexistent/train.jsonl"}, "does not exist"),
    ],
)
def test_bad_fewshot_options_are_one_line_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        TASK.load(data_file=str(TEST_FILE), num=1, **options)


def test_task_reports_both_filters_as_checks():
    assert list(TASK.checks) == ["lm-eval strict-match", "lm-eval flexible-extract"]


def _normalize_with_the_harness_regexes(text: str) -> str:
    """lm-eval's own preprocessing, each regex applied with re.sub (quadratic on long text without ####)."""
    for pattern in HARNESS_IGNORE_RES:
        text = pattern.sub("", text)
    return text.lower()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["#### ", "####", "#", " ", "18", ",", "$", ".", "\n", "A", "-"]) | st.text(
    max_size=3), max_size=30).map("".join))
def test_normalize_cuts_as_the_harness_regexes_do(text):
    assert harness_normalize(text) == _normalize_with_the_harness_regexes(text)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [("." * 5000, "." * 4999), ("1,000.", "1000"), ("a #### b #### $1,8.", "18"),
     ("x" * 3000 + "#### 5", "5")],
)
def test_normalize_on_long_runs(text, normalized):
    assert harness_normalize(text) == normalized == _normalize_with_the_harness_regexes(text)
