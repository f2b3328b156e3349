"""The step-0 sampling check: one line at the first logged step, a warning when generation and training
disagree."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from grpolab.training.callbacks import SamplingCheck

VLLM = {
    "sampling/importance_sampling_ratio/min": 0.97,
    "sampling/importance_sampling_ratio/max": 1.04,
    "sampling/sampling_logp_difference/max": 0.3,
}


@pytest.mark.parametrize(
    ("logs", "off", "fragment"),
    [
        (
            {
                **VLLM,
                "sampling/importance_sampling_ratio/mean": 1.002,
                "sampling/sampling_logp_difference/mean": 0.01,
            },
            False,
            "importance ratio mean 1.002 (min 0.970, max 1.040), |log-prob gap| mean 0.0100 max 0.3000",
        ),
        (
            {
                **VLLM,
                "sampling/importance_sampling_ratio/mean": 1.25,
                "sampling/sampling_logp_difference/mean": 0.01,
            },
            True,
            "generation and training disagree: check dtype",
        ),
        (
            {
                **VLLM,
                "sampling/importance_sampling_ratio/mean": 1.0,
                "sampling/sampling_logp_difference/mean": 0.2,
            },
            True,
            "|log-prob gap| mean 0.2000",
        ),
        ({"clip_ratio/region_mean": 0.0}, False, "importance ratio 1 by construction); clipped tokens 0.0%"),
        (
            {"clip_ratio/region_mean": 0.2},
            True,
            "clipped tokens 20.0%; generation and training passes disagree",
        ),
        ({}, False, "TRL logged no importance ratio for this loss"),
    ],
)
def test_verdict(logs, off, fragment):
    line, is_off = SamplingCheck.verdict({"reward": 0.5, **logs}, 1)
    assert is_off is off
    assert fragment in line and line.startswith("WARNING step-1" if off else "step-1")
    assert "\n" not in line


def test_the_check_runs_once_at_the_first_training_log(caplog):
    check = SamplingCheck()
    state = SimpleNamespace(is_world_process_zero=True, global_step=1)
    with caplog.at_level("INFO", logger="grpolab.training.callbacks"):
        check.on_log(None, state, None, logs={"train_runtime": 3.0})  # not a training step's log
        check.on_log(None, state, None, logs={"reward": 0.1, "clip_ratio/region_mean": 0.3})
        check.on_log(None, state, None, logs={"reward": 0.1, "clip_ratio/region_mean": 0.0})
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "clipped tokens 30.0%" in caplog.records[0].message
