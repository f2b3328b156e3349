"""4x4 Sudoku: grids, puzzle generation, splits, data files, the answer parser, the scorer and rewards."""

from __future__ import annotations

import itertools
import json
import logging
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpolab.errors import UserError
from grpolab.tasks import get_task
from grpolab.tasks import sudoku as S
from grpolab.tasks import sudoku_grids as G

ANSWER = "1234341221434321"  # 1234 / 3412 / 2143 / 4321
QUESTION = "12_4_4122_43432_"  # blanks at cells 2, 4, 9 and 15; ANSWER is its only solution
# Blanks at cells 9, 11, 13 and 15 leave two solutions: ANSWER and ALTERNATIVE (two 2x2 swaps).
# ALTERNATIVE is also a valid grid that changes a clue of QUESTION (cell 11: 3 -> 1).
MULTI_QUESTION = "123434122_4_4_2_"
ALTERNATIVE = "1234341223414123"
ROW = {"question": QUESTION, "answer": ANSWER}
MULTI_ROW = {"question": MULTI_QUESTION, "answer": ANSWER}
REFERENCE_LINE = '{"question": "_24___1234212134", "answer": "1243431234212134", "label": "simple"}'
WRONG_TWO = "1214141221434321"  # cells 2 and 4 wrong, cells 9 and 15 right, every clue kept


def tag(content: str) -> str:
    return f"<answer>{content}</answer>"


def test_fixtures_are_what_the_tables_assume():
    assert S.count_solutions(QUESTION) == 1 and S.keeps_clues(QUESTION, ANSWER)
    assert sorted(S.solutions(MULTI_QUESTION)) == [ANSWER, ALTERNATIVE]
    assert S.is_valid_grid(ALTERNATIVE) and not S.keeps_clues(QUESTION, ALTERNATIVE)
    assert not S.is_valid_grid(WRONG_TWO) and S.keeps_clues(QUESTION, WRONG_TWO)


# ------------------------------------------------------------------------------------------- grids


def _relabel(grid: str, digits: str) -> str:
    return grid.translate(str.maketrans("1234", digits))


def test_there_are_exactly_288_valid_grids():
    grids = G.all_grids()
    assert len(grids) == 288 == len(set(grids))
    assert all(S.is_valid_grid(grid) for grid in grids)


def test_all_grids_matches_brute_force_over_relabelings():
    # Independent of the solver: every grid is a relabeling of one whose first row is 1234, and those are
    # found by trying every permutation for the other three rows.
    permutations = ["".join(p) for p in itertools.permutations("1234")]
    first_row_1234 = [
        "1234" + b + c + d
        for b, c, d in itertools.product(permutations, repeat=3)
        if S.is_valid_grid("1234" + b + c + d)
    ]
    assert len(first_row_1234) == 12
    assert {_relabel(grid, digits) for grid in first_row_1234 for digits in permutations} == set(
        G.all_grids()
    )


@pytest.mark.parametrize(
    "grid, valid",
    [
        (ANSWER, True),
        (ALTERNATIVE, True),
        ("1234123412341234", False),  # rows fine, columns repeat
        ("1234234134124123", False),  # rows and columns fine (a Latin square), boxes repeat
        ("123434122143432", False),  # 15 cells
        ("12343412214343211", False),  # 17 cells
        ("1234341221434325", False),  # a 5
        ("123434122143432_", False),  # a blank
        ("１２３４３４１２２１４３４３２１", False),  # full-width digits
        ("", False),
    ],
)
def test_is_valid_grid(grid, valid):
    assert S.is_valid_grid(grid) is valid


@pytest.mark.parametrize("seed", range(20))
def test_solutions_agree_with_filtering_all_grids(seed):
    rng = random.Random(seed)
    grid = rng.choice(G.all_grids())
    blanked = set(rng.sample(range(16), rng.randint(0, 16)))
    puzzle = "".join("_" if cell in blanked else digit for cell, digit in enumerate(grid))
    expected = sorted(g for g in G.all_grids() if S.keeps_clues(puzzle, g))
    assert sorted(S.solutions(puzzle)) == expected
    assert S.count_solutions(puzzle) == min(len(expected), 2)


@pytest.mark.parametrize("puzzle", ["11__" + "_" * 12, "1234341221434322", "1_1_" + "_" * 12])
def test_contradictory_puzzles_have_no_solution(puzzle):
    assert S.count_solutions(puzzle) == 0


def test_split_is_a_fixed_partition_of_the_grids_with_about_a_fifth_in_test():
    train, test = G.split_grids("train"), G.split_grids("test")
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == set(G.all_grids())
    assert 0.15 <= len(test) / 288 <= 0.25
    assert all(G.grid_split(grid) == "test" for grid in test)


# ----------------------------------------------------------------------------------------- puzzles


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, (4, 8, 12)),
        ("4,8,12", (4, 8, 12)),
        ("simple,medium,difficult", (4, 8, 12)),
        (" simple , 6 ", (4, 6)),
        ("blanks-6", (6,)),
        (6, (6,)),
        ([4, "medium", "blanks-10"], (4, 8, 10)),
        ("1,12", (1, 12)),
    ],
)
def test_parse_blanks(spec, expected):
    assert G.parse_blanks(spec) == expected


@pytest.mark.parametrize("spec", ["0", "13", "16", "hard", "", "4,,8", "-4", "٣", "blanks-", [], "4.5"])
def test_parse_blanks_rejects_bad_values_with_the_choices(spec):
    with pytest.raises(UserError, match="blanks"):
        G.parse_blanks(spec)


@pytest.mark.parametrize("blanks, label", [(4, "simple"), (8, "medium"), (12, "difficult"), (6, "blanks-6")])
def test_blank_label(blanks, label):
    assert S.blank_label(blanks) == label


def test_every_grid_has_a_unique_puzzle_with_only_four_clues():
    rng = random.Random(0)
    for grid in G.all_grids():
        puzzle = G.make_puzzle(grid, 12, rng)
        assert puzzle is not None, grid
        assert puzzle.count("_") == 12 and S.keeps_clues(puzzle, grid)
        assert S.count_solutions(puzzle) == 1


def test_thirteen_blanks_never_leave_a_unique_puzzle():
    assert G.make_puzzle(ANSWER, 13, random.Random(0)) is None


@pytest.mark.parametrize("split", ["train", "test"])
def test_generated_rows_have_unique_solutions_and_labelled_blank_counts(split):
    rows = S.generate_rows(90, seed=3, split=split, blanks="simple,medium,difficult,6")
    assert [row["label"] for row in rows[:4]] == ["simple", "medium", "difficult", "blanks-6"]
    expected_blanks = {"simple": 4, "medium": 8, "difficult": 12, "blanks-6": 6}
    for row in rows:
        assert row["question"].count("_") == expected_blanks[row["label"]]
        assert S.is_valid_grid(row["answer"]) and S.keeps_clues(row["question"], row["answer"])
        assert list(S.solutions(row["question"])) == [row["answer"]]
        assert row["split"] == split == G.grid_split(row["answer"])


def test_generation_is_deterministic_per_seed():
    assert S.generate_rows(30, seed=7) == S.generate_rows(30, seed=7)
    assert S.generate_rows(30, seed=7) != S.generate_rows(30, seed=8)
    assert S.generate_rows(30, seed=7, split="test") != S.generate_rows(30, seed=7, split="train")


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_train_and_test_never_share_a_solution_grid(seed):
    train = {row["answer"] for row in S.generate_rows(300, seed=seed, split="train")}
    test = {row["answer"] for row in S.generate_rows(100, seed=seed + 1, split="test")}
    assert train and test and train.isdisjoint(test)


def test_generated_puzzles_are_distinct():
    rows = S.generate_rows(300, seed=0, split="test", blanks=12)  # drew 20% repeats before de-duplication
    assert len(rows) == len({row["question"] for row in rows}) == 300


def test_fewer_distinct_puzzles_than_asked_is_a_warning(caplog):
    # 63 test grids x 16 cells: at most 1,008 one-blank test puzzles exist.
    rows = S.generate_rows(2100, seed=0, split="test", blanks="1,4")
    questions = [row["question"] for row in rows]
    assert len(set(questions)) == len(questions) == 2100  # the 4-blank turn fills in after 1 runs out
    ones = [question for question in questions if question.count("_") == 1]
    assert 900 < len(ones) <= 63 * 16
    with caplog.at_level("WARNING", logger="grpolab.tasks.sudoku"):
        rows = S.generate_rows(1100, seed=0, split="test", blanks=1)
    assert len({row["question"] for row in rows}) == len(rows) and 900 < len(rows) <= 63 * 16
    assert f"only {len(rows)} distinct test puzzles exist with blanks 1 (asked for 1100)" in caplog.text


def test_generate_rows_rejects_an_unknown_split():
    with pytest.raises(UserError, match="unknown split 'dev'"):
        S.generate_rows(1, split="dev")


# -------------------------------------------------------------------------------------- data files


def _write(tmp_path, lines, name="rows.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


GOOD = json.dumps({"question": QUESTION, "answer": ANSWER, "label": "simple"})


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"question": "12_4"', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({"question": QUESTION}), "missing key 'answer'"),
        (json.dumps({"answer": ANSWER}), "missing key 'question'"),
        (json.dumps({"question": QUESTION[:15], "answer": ANSWER}), "is not 16 characters"),
        (json.dumps({"question": QUESTION + "1", "answer": ANSWER}), "is not 16 characters"),
        (json.dumps({"question": "0" + QUESTION[1:], "answer": ANSWER}), "is not 16 characters of 1-4 and _"),
        (json.dumps({"question": QUESTION.replace("_", "."), "answer": ANSWER}), "of 1-4 and _"),
        (json.dumps({"question": 1234, "answer": ANSWER}), "is not 16 characters"),
        (json.dumps({"question": QUESTION, "answer": "1234123412341234"}), "not a valid 4x4 Sudoku grid"),
        (json.dumps({"question": QUESTION, "answer": ANSWER[:15]}), "not a valid 4x4 Sudoku grid"),
        (json.dumps({"question": QUESTION, "answer": ALTERNATIVE}), "does not agree with the clues"),
        (json.dumps({"question": QUESTION, "answer": ANSWER, "split": "dev"}), "split 'dev'"),
        (b'{"question": "\xff"}', "not UTF-8"),
    ],
)
def test_bad_rows_stop_loading_with_file_line_and_problem(tmp_path, line, problem):
    path = _write(tmp_path, [GOOD, "", line, GOOD])
    with pytest.raises(UserError) as error:
        S.read_rows(path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: ")
    assert problem in message and "skip_bad_rows" in message and "\n" not in message


def test_skip_bad_rows_skips_and_counts_them(tmp_path):
    path = _write(tmp_path, [GOOD, "not json", GOOD, '{"question": "x", "answer": "y"}', GOOD])
    rows, skipped = S.read_rows(path, skip_bad_rows=True)
    assert skipped == 2 and len(rows) == 3


@pytest.mark.parametrize("flag", [True, "true", "yes", "1"])
def test_load_with_skip_bad_rows_logs_the_count(tmp_path, caplog, flag):
    path = _write(tmp_path, [GOOD, "not json", GOOD, "[]"])
    with caplog.at_level(logging.WARNING, logger=S.__name__):
        dataset = S.load(data_file=path, skip_bad_rows=flag)
    assert len(dataset) == 2
    assert "skipped 2 bad rows" in caplog.text


def test_load_rejects_unknown_options_and_bad_flags(tmp_path):
    with pytest.raises(UserError, match="unknown sudoku option"):
        S.load(num=1, blank=4)
    with pytest.raises(UserError, match="skip_bad_rows must be true or false"):
        S.load(data_file=_write(tmp_path, [GOOD]), skip_bad_rows="maybe")
    with pytest.raises(UserError, match="--num must be 1 or more"):
        S.load(num=-1)


def test_missing_data_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="does not exist: generate one with 'grpolab data sudoku"):
        S.load(data_file=tmp_path / "nope.jsonl")


def test_reference_format_loads_including_multi_solution_puzzles(tmp_path):
    multi = json.dumps({"question": MULTI_QUESTION, "answer": ANSWER})  # no label: derived from blanks
    dataset = S.load(data_file=_write(tmp_path, [REFERENCE_LINE, multi]))
    assert dataset["question"] == ["_24___1234212134", MULTI_QUESTION]
    assert dataset["answer"] == ["1243431234212134", ANSWER]
    assert dataset["label"] == ["simple", "simple"]
    assert S.score(tag(ALTERNATIVE), dataset[1]).solved


def test_generated_rows_round_trip_through_a_file(tmp_path):
    rows = S.generate_rows(12, seed=5, split="train") + S.generate_rows(6, seed=5, split="test")
    path = _write(tmp_path, [json.dumps(row) for row in rows])
    assert S.read_rows(path) == (rows, 0)
    test = S.load(split="test", data_file=path)
    assert test["question"] == [row["question"] for row in rows[12:]]
    assert len(S.load(split="train", data_file=path, num=5)) == 5


def test_a_file_without_rows_of_the_split_is_an_error(tmp_path):
    path = _write(tmp_path, [json.dumps({"question": QUESTION, "answer": ANSWER, "split": "train"})])
    with pytest.raises(UserError, match="no usable rows for split 'test'"):
        S.load(split="test", data_file=path)


def test_generated_dataset_has_prompt_question_answer_label():
    dataset = S.load(split="test", num=6, seed=2)
    assert set(dataset.column_names) == {"prompt", "question", "answer", "label"}
    assert dataset["question"] == [row["question"] for row in S.generate_rows(6, seed=2, split="test")]
    system, user = dataset[0]["prompt"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert "<answer>" in system["content"] and "2x2" in system["content"]
    assert S.render_grid(dataset[0]["question"]) in user["content"]


def test_render_grid_shows_four_rows_with_blanks():
    assert S.render_grid(QUESTION) == "1 2 _ 4\n_ 4 1 2\n2 _ 4 3\n4 3 2 _"


def test_the_prompt_example_grid_is_valid():
    example = S.SYSTEM_PROMPT[S.SYSTEM_PROMPT.rfind("<answer>") :]
    assert S.is_valid_grid(S.parse_grid(example))


# ------------------------------------------------------------------------------ parser and scorer

LINES = "1234\n3412\n2143\n4321"
# (completion, parsed grid, solved, partial, format_ok), scored against ROW.
SCORE_CASES = {
    "four lines": (tag(LINES), ANSWER, True, 1.0, True),
    "four lines padded": (tag(f"\n  {LINES}\n\n"), ANSWER, True, 1.0, True),
    "reasoning before": (f"Row 1 lacks 3.\nColumn 1 lacks 3.\n\nSo:\n{tag(LINES)}", ANSWER, True, 1.0, True),
    "text after": (f"{tag(LINES)}\nI checked every box. 1111", ANSWER, True, 1.0, True),
    "16 digits": (tag(ANSWER), ANSWER, True, 1.0, True),
    "list of lists": (tag("[[1,2,3,4],[3,4,1,2],[2,1,4,3],[4,3,2,1]]"), ANSWER, True, 1.0, True),
    "list of lists spaced": (
        tag("[\n  [1, 2, 3, 4],\n  [3, 4, 1, 2],\n  [2, 1, 4, 3],\n  [4, 3, 2, 1],\n]"),
        ANSWER,
        True,
        1.0,
        True,
    ),
    "flat list": (tag("[" + ", ".join(ANSWER) + "]"), ANSWER, True, 1.0, True),
    "commas": (tag(",".join(ANSWER)), ANSWER, True, 1.0, True),
    "commas and rows": (tag("1, 2, 3, 4,\n3, 4, 1, 2,\n2, 1, 4, 3,\n4, 3, 2, 1"), ANSWER, True, 1.0, True),
    "spaces": (tag(" ".join(ANSWER)), ANSWER, True, 1.0, True),
    "spaces and rows": (tag("1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1"), ANSWER, True, 1.0, True),
    "row separators": (tag("1234 | 3412 | 2143 | 4321"), ANSWER, True, 1.0, True),
    "semicolon rows": (tag("1 2 3 4; 3 4 1 2; 2 1 4 3; 4 3 2 1"), ANSWER, True, 1.0, True),
    "windows newlines": (tag(LINES.replace("\n", "\r\n")), ANSWER, True, 1.0, True),
    "two answers, last right": (tag(ALTERNATIVE) + " wait, " + tag(ANSWER), ANSWER, True, 1.0, True),
    "two answers, last wrong": (tag(ANSWER) + " wait, " + tag(ALTERNATIVE), ALTERNATIVE, False, 0.0, True),
    "valid grid changing a clue": (tag(ALTERNATIVE), ALTERNATIVE, False, 0.0, True),
    "clues kept, two blanks wrong": (tag(WRONG_TWO), WRONG_TWO, False, 0.5, True),
    "clues kept, a 5 in a blank": (tag(ANSWER[:15] + "5"), ANSWER[:15] + "5", False, 0.75, True),
    "zeros everywhere": (tag("0" * 16), "0" * 16, False, 0.0, True),
    "15 digits": (tag(ANSWER[:15]), None, False, 0.0, False),
    "17 digits": (tag(ANSWER + "1"), None, False, 0.0, False),
    "five rows": (tag(LINES + "\n1234"), None, False, 0.0, False),
    "full-width digits": (tag("１２３４３４１２２１４３４３２１"), None, False, 0.0, False),
    "arabic-indic digits": (tag("١٢٣٤٣٤١٢٢١٤٣٤٣٢١"), None, False, 0.0, False),
    "empty": ("", None, False, 0.0, False),
    "empty block": (tag(""), None, False, 0.0, False),
    "no tags": (ANSWER, None, False, 0.0, False),
    "unclosed tag": ("<answer>" + LINES, None, False, 0.0, False),
    "closed, then unclosed": (tag(ANSWER) + " hmm <answer>1234", None, False, 0.0, False),
    "closing tag only": (LINES + "</answer>", None, False, 0.0, False),
    "upper-case tags": ("<ANSWER>" + ANSWER + "</ANSWER>", None, False, 0.0, False),
    "blanks copied": (tag(QUESTION), None, False, 0.0, False),
    "prose in the block": (tag("The grid is " + ANSWER), None, False, 0.0, False),
    "code fence": (tag("```\n" + LINES + "\n```"), None, False, 0.0, False),
    "two-digit numbers": (tag("[[12,34],[34,12],[21,43],[43,21]]"), None, False, 0.0, False),
    "list of strings": (tag('["1234","3412","2143","4321"]'), None, False, 0.0, False),
    "negative numbers": (tag(",".join("-" + d for d in ANSWER)), None, False, 0.0, False),
    "100 kB of reasoning": ("x" * 100_000 + tag(LINES), ANSWER, True, 1.0, True),
    "100 kB inside the block": (tag("1 " * 50_000), None, False, 0.0, False),
}


@pytest.mark.parametrize(
    "completion, parsed, solved, partial, format_ok", SCORE_CASES.values(), ids=SCORE_CASES
)
def test_score(completion, parsed, solved, partial, format_ok):
    verdict = S.score(completion, ROW)
    assert (verdict.parsed, verdict.solved, verdict.partial, verdict.format_ok) == (
        parsed,
        solved,
        pytest.approx(partial),
        format_ok,
    )


@pytest.mark.parametrize(
    "grid, solved, partial",
    [
        (ANSWER, True, 1.0),  # the stored solution
        (ALTERNATIVE, True, 1.0),  # the other solution: no string equality with the stored answer
        ("1234341221434323", False, 0.75),  # one blank wrong, compared with the stored answer
        ("4321341221434321", False, 0.0),  # a clue changed
    ],
)
def test_multi_solution_puzzles_accept_any_solution(grid, solved, partial):
    verdict = S.score(tag(grid), MULTI_ROW)
    assert (verdict.solved, verdict.partial) == (solved, pytest.approx(partial))


ADVERSARIAL_100_KB = [
    "<answer>" * 12_500,
    "<answer>" * 6_000 + "</answer>" * 6_000,
    "<answer>[[1,2,3,4" + " " * 100_000 + "x</answer>",
    "<answer>1" + " " * 100_000 + "x</answer>",
    "<answer>1234" + " \n" * 50_000 + "x</answer>",
    "<answer>[" + "1, " * 33_000 + "</answer>",
    "<answer>" + "1," * 50_000,
    "1234 " * 20_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL_100_KB, ids=range(len(ADVERSARIAL_100_KB)))
def test_parser_is_fast_on_100_kb_adversarial_text(text):
    start = time.perf_counter()
    assert S.parse_grid(text) is None
    assert time.perf_counter() - start < 1.0  # linear: milliseconds; a backtracking regex takes minutes


GRID_FORMATS = [
    lambda g: g,
    lambda g: "\n".join(g[i : i + 4] for i in range(0, 16, 4)),
    lambda g: ",".join(g),
    lambda g: " ".join(g),
    lambda g: "\n".join(" ".join(g[i : i + 4]) for i in range(0, 16, 4)),
    lambda g: "[" + ", ".join("[" + ", ".join(g[i : i + 4]) + "]" for i in range(0, 16, 4)) + "]",
]


@given(
    grid=st.sampled_from(G.all_grids()), render=st.sampled_from(GRID_FORMATS), before=st.text(max_size=200)
)
def test_any_valid_grid_in_any_accepted_format_parses_back(grid, render, before):
    assert S.parse_grid(before + tag(render(grid)) + "\nDone.") == grid


@settings(max_examples=300)
@given(text=st.text() | st.text(alphabet="1234_ ,;|[]\n<>/answer０１"))
def test_score_never_raises_and_stays_in_range(text):
    for row in (ROW, MULTI_ROW):
        verdict = S.score(text, row)
        assert 0.0 <= verdict.partial <= 1.0
        assert verdict.format_ok == (verdict.parsed is not None)
        assert not verdict.solved or verdict.partial == 1.0
        assert verdict.parsed is None or (len(verdict.parsed) == 16 and verdict.parsed.isascii())


# ------------------------------------------------------------------------------------------ rewards


def test_task_registration():
    task = get_task("sudoku")
    assert task is S.TASK and task.score is S.score and task.load is S.load
    assert all(name == function.__name__ for name, function in task.rewards.items())
    assert set(task.default_rewards) <= set(task.rewards)
    assert len(task.default_weights) == len(task.default_rewards)
    assert set(task.options) == {"blanks", "skip_bad_rows"}


def test_rewards_score_strings_and_chat_messages():
    completions = [
        tag(LINES),
        [{"role": "assistant", "content": tag(ALTERNATIVE)}],
        [{"role": "assistant", "content": tag(WRONG_TWO)}],
        "no answer",
        [],
    ]
    columns = {"question": [QUESTION] * 5, "answer": [ANSWER] * 5, "label": ["simple"] * 5}
    assert S.sudoku_solved(completions, **columns) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert S.sudoku_partial(completions, **columns) == [1.0, 0.0, 0.5, 0.0, 0.0]
    assert S.sudoku_format(completions, **columns) == [1.0, 1.0, 1.0, 0.0, 0.0]
    # ALTERNATIVE changed clues (partial credit 0) but 12 of its 16 cells equal ANSWER's; WRONG_TWO: 14
    assert S.sudoku_cells(completions, **columns) == [1.0, 12 / 16, 14 / 16, 0.0, 0.0]


def test_rewards_follow_the_row_of_each_completion():
    completions = [tag(ALTERNATIVE), tag(ALTERNATIVE)]
    solved = S.sudoku_solved(completions, question=[QUESTION, MULTI_QUESTION], answer=[ANSWER, ANSWER])
    assert solved == [0.0, 1.0]


@pytest.mark.parametrize("reward", list(S.REWARDS.values()), ids=list(S.REWARDS))
def test_rewards_raise_on_bugs_instead_of_scoring_zero(reward):
    with pytest.raises(ValueError):
        reward([tag(LINES)], question=[QUESTION, QUESTION], answer=[ANSWER, ANSWER])
    with pytest.raises(TypeError):
        reward([42], question=[QUESTION], answer=[ANSWER])


@settings(max_examples=100)
@given(texts=st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_rewards_are_within_zero_and_one(texts):
    columns = {"question": [MULTI_QUESTION] * len(texts), "answer": [ANSWER] * len(texts)}
    for reward in S.REWARDS.values():
        values = reward(texts, **columns)
        assert len(values) == len(texts) and all(0.0 <= value <= 1.0 for value in values)
