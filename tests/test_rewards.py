"""Reward selection and the guard: a broken reward stops training with its name, never a silent 0."""

from __future__ import annotations

import math

import pytest

from grpolab.errors import RewardFunctionError, UserError
from grpolab.rewards import SampleRecorder, guard, resolve_reward, select_rewards
from grpolab.tasks import get_task

ARITH = get_task("arith")


def constant_reward(completions, **kwargs):
    return [0.5] * len(completions)


def test_task_defaults_with_their_weights():
    functions, weights = select_rewards(ARITH, None, None)
    assert [f.__name__ for f in functions] == list(ARITH.default_rewards)
    assert weights == list(ARITH.default_weights)


def test_dotted_path_admits_user_code():
    function = resolve_reward("tests.test_rewards:constant_reward", ARITH)
    assert function(["a", "b"]) == [0.5, 0.5]


@pytest.mark.parametrize(
    ("names", "weights", "message"),
    [
        (["nope"], None, "unknown reward 'nope' for task arith: choose from arith_correct, arith_brevity"),
        (["no_such_module:fn"], None, "cannot import reward function 'no_such_module:fn'"),
        (["arith_correct"], [1.0, 2.0], "reward_weights has 2 values but there are 1 reward functions"),
    ],
)
def test_selection_errors(names, weights, message):
    with pytest.raises(UserError, match=message):
        select_rewards(ARITH, names, weights)


def raising(completions, **kwargs):
    raise KeyError("answer")


def short(completions, **kwargs):
    return [1.0]


def nan(completions, **kwargs):
    return [math.nan] * len(completions)


def text(completions, **kwargs):
    return ["1"] * len(completions)


def not_a_list(completions, **kwargs):
    return 1.0


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (raising, "reward function 'raising' raised KeyError"),
        (short, "reward function 'short' returned 1 values for 2 completions"),
        (nan, "reward function 'nan' returned nan"),
        (text, "reward function 'text' returned '1'"),
        (not_a_list, "reward function 'not_a_list' returned float"),
    ],
)
def test_guard_names_the_broken_function(function, message):
    with pytest.raises(RewardFunctionError, match=message):
        guard(function)(prompts=["p", "p"], completions=["a", "b"])


def test_guard_keeps_the_name_and_passes_values_and_none():
    def maybe(completions, **kwargs):
        return [1.0, None]

    guarded = guard(maybe)
    assert guarded.__name__ == "maybe"
    assert guarded(prompts=["p", "p"], completions=["a", "b"]) == [1.0, None]


def test_recorder_keeps_the_latest_batch_with_every_reward():
    recorder = SampleRecorder()
    functions, _ = select_rewards(ARITH, None, None, recorder)
    completions = ["19", "20"]
    for function in functions:
        function(prompts=["p", "p"], completions=completions, answer=["19", "19"])
    samples = recorder.take(5)
    assert samples == [
        {"completion": "19", "rewards": {"arith_correct": 1.0, "arith_brevity": 1.0}, "answer": "19"},
        {"completion": "20", "rewards": {"arith_correct": 0.0, "arith_brevity": 0.0}, "answer": "19"},
    ]
    assert recorder.take(5) == []
