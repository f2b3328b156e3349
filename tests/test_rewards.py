"""Reward selection and the guard: a broken reward stops training with its name, never a silent 0."""

from __future__ import annotations

import math
import signal
import threading
import time

import pytest

from grpolab.errors import RewardFunctionError, UserError, UserRewardError
from grpolab.tasks import get_task
from grpolab.training.rewards import SampleRecorder, guard, resolve_reward, select_rewards

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


def hanging(completions, **kwargs):
    try:
        time.sleep(30)
    except Exception:  # a broad except in user code must not swallow the timeout
        pass
    return [1.0] * len(completions)


def busy(completions, **kwargs):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pass
    return [1.0] * len(completions)


@pytest.mark.parametrize("function", [hanging, busy])
def test_a_reward_past_its_timeout_stops_with_its_name(function):
    start = time.monotonic()
    with pytest.raises(RewardFunctionError, match=rf"reward function '{function.__name__}' ran longer than "
                       r"reward_timeout \(0.3 s\) on 2 completions; .*raise --reward_timeout"):
        guard(function, timeout=0.3)(prompts=["p", "p"], completions=["a", "b"])
    assert time.monotonic() - start < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the timer is off again
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_the_timeout_also_works_off_the_main_thread():
    outcome = {}

    def call():
        try:
            guard(hanging, timeout=0.3)(prompts=["p"], completions=["a"])
        except RewardFunctionError as error:
            outcome["error"] = str(error)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join(10)
    assert "reward function 'hanging' ran longer than reward_timeout (0.3 s)" in outcome["error"]


def test_a_fast_reward_under_a_timeout_returns_its_values():
    assert guard(constant_reward, timeout=5)(prompts=["p"], completions=["a"]) == [0.5]
    assert guard(constant_reward, timeout=0)(prompts=["p"], completions=["a"]) == [0.5]


def test_a_users_reward_fails_as_a_user_error_and_a_tasks_own_as_a_bug():
    user, = select_rewards(ARITH, ["tests.test_rewards:raising"], None)[0]
    with pytest.raises(UserRewardError, match="'raising' raised KeyError: 'answer'; fix the function"):
        user(prompts=["p"], completions=["a"])
    own, = select_rewards(ARITH, ["arith_correct"], None)[0]
    with pytest.raises(RewardFunctionError) as caught:
        own(prompts=["p"], completions=["a"])  # no answer column: a bug of ours, not the user's
    assert not isinstance(caught.value, UserError)


def test_a_negative_timeout_is_refused():
    from grpolab.training import recipes

    with pytest.raises(UserError, match=r"--reward_timeout \(-1\) must be 0"):
        recipes.parse_train_args(["--reward_timeout", "-1"])
