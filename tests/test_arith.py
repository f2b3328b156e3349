"""The default task: answer extraction, scoring, rewards and leak-free splits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grpolab.errors import UserError
from grpolab.tasks import arith, get_task

ROW = {"question": "7 + 12", "answer": "19", "label": "add-20"}


@pytest.mark.parametrize(
    ("completion", "parsed", "solved", "lenient"),
    [
        ("19", "19", True, True),
        ("7 + 12 = 19.", "19", True, True),
        ("The answer is 19", "19", True, True),
        ("To add 7 and 12 we combine them.\nSo 7 + 12 = 19", "19", True, True),
        ("19. That is 19 apples in 2 baskets", "2", False, True),  # judged on the last number
        ("7 + 12 = 18", "18", False, False),
        ("1,019", "1019", False, False),  # thousands separators read as one number
        ("19, 20", "20", False, True),  # a list is two numbers, not 1,920
        ("1,2", "2", False, False),
        ("-19", "-19", False, False),
        ("", None, False, False),
        ("nineteen", None, False, False),
        ("１９", None, False, False),  # full-width digits are not ASCII digits: unparseable
        ("\u0661\u0669", None, False, False),  # Arabic-Indic digits neither
        ("\u221219", "-19", False, False),  # U+2212 minus sign, as in gsm8k
        ("\uff0d19", "-19", False, False),  # full-width hyphen-minus
        ("19" + " word" * 20_000, None, False, False),  # 100 kB: only the last 10,000 characters are read
        (" word" * 20_000 + " 19", "19", True, True),
        ("19" + " word" * 1_999, "19", True, True),  # 19 ends 9,997 characters before the end: read
        # A decimal is read whole, never by its last digit group.
        ("19.0", "19", True, True),
        ("19.00.", "19", True, True),
        ("11.0", "11", False, False),
        ("The answer is 1.9", "1.9", False, False),
        ("19.5", "19.5", False, False),
        ("0.19", "0.19", False, False),
        (".5", "0.5", False, False),
        ("1,019.0", "1019", False, False),
        # A minus glued to a word or digit is a hyphen, not a sign.
        ("Result-19", "19", True, True),
        ("Result: -19", "-19", False, False),
        ("7+12=19-0", "0", False, True),
        ("(-19)", "-19", False, False),
    ],
)
def test_score_table(completion, parsed, solved, lenient):
    verdict = arith.score(completion, ROW)
    assert verdict.parsed == parsed
    assert verdict.solved is solved
    assert verdict.lenient is lenient
    assert verdict.partial == (1.0 if solved else 0.0)


@pytest.mark.parametrize(
    ("completion", "format_ok"),
    [("19", True), ("7 + 12 = 19.", True), ("x" * 41 + " 19", False), ("no", False)],
)
def test_format_is_a_short_reply_with_a_number(completion, format_ok):
    assert arith.score(completion, ROW).format_ok is format_ok


def test_rewards_are_batched_and_accept_chat_completions():
    completions = [
        [{"role": "assistant", "content": "19"}],
        [{"role": "assistant", "content": "20"}],
        "7 + 12 = 19",
    ]
    kwargs = {"answer": ["19", "19", "19"], "question": ["7 + 12"] * 3}
    assert arith.arith_correct(completions, **kwargs) == [1.0, 0.0, 1.0]
    assert arith.arith_brevity(completions, **kwargs) == [1.0, 0.0, 1.0]
    long_but_right = "x" * 41 + " 19"
    assert arith.arith_brevity([long_but_right], answer=["19"]) == [0.0]
    assert arith.arith_correct.__name__ in get_task("arith").rewards


@given(st.text(max_size=300))
def test_score_never_raises_and_rewards_stay_in_range(text):
    verdict = arith.score(text, ROW)
    assert verdict.partial in (0.0, 1.0)
    for reward in (arith.arith_correct, arith.arith_brevity):
        assert reward([text], answer=["19"])[0] in (0.0, 1.0)


def test_generated_items_are_correct_and_deterministic():
    rows = arith.generate_rows(300, seed=3, split="train", levels=("addsub-20", "mixed-12"))
    assert rows == arith.generate_rows(300, seed=3, split="train", levels=("addsub-20", "mixed-12"))
    for row in rows:
        assert eval(row["question"]) == int(row["answer"])  # noqa: S307 - our own generated expressions
        assert int(row["answer"]) >= 0


def test_test_split_never_shares_an_expression_with_train_in_either_order():
    def key(question):
        a, op, b = question.split()
        return (op, *sorted((a, b))) if op in "+*" else (op, a, b)

    for seed in (0, 1, 2):
        train = {key(r["question"]) for r in arith.generate_rows(2000, seed, "train", ("add-20",))}
        test = {key(r["question"]) for r in arith.generate_rows(200, seed, "test", ("add-20",))}
        assert test and not train & test


def test_test_items_are_distinct_and_capped_by_the_space():
    rows = arith.generate_rows(1000, 0, "test", ("add-10",))
    assert len(rows) == len({r["question"] for r in rows})
    assert len(rows) < 121  # add-10 has 121 expressions; a quarter or so go to test


def test_load_builds_chat_prompts():
    dataset = get_task("arith").load("test", num=5, seed=0, levels="add-20")
    assert len(dataset) == 5
    assert dataset[0]["prompt"][-1]["role"] == "user"
    assert dataset[0]["question"] in dataset[0]["prompt"][-1]["content"]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"levels": "add-9000"}, "unknown arith level"), ({"colour": 1}, "unknown arith option")],
)
def test_bad_options(options, message):
    with pytest.raises(UserError, match=message):
        get_task("arith").load("train", num=5, **options)


def test_reference_reply_scores_as_solved():
    task = get_task("arith")
    for row in task.load("train", num=20, seed=1):
        assert task.score(task.reference(row), row).solved
