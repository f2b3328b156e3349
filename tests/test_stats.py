"""grpolab.evaluation.stats: intervals and paired tests against values worked out by hand (shown in the
comments)."""

from __future__ import annotations

import pytest

from grpolab.evaluation import stats


@pytest.mark.parametrize(
    ("successes", "total", "low", "high"),
    [
        # p = .38, z^2 = 3.8415: centre (.38 + .019207) / 1.038415 = .384439,
        # half-width 1.96 * sqrt(.002356 + .000096) / 1.038415 = .093463 (statsmodels' 'wilson' agrees).
        (38, 100, 0.290976, 0.477902),
        (0, 10, 0.0, 0.277533),  # upper bound z^2 / (n + z^2) = 3.8415 / 13.8415
        (10, 10, 0.722467, 1.0),  # the mirror image of 0/10
        (2, 4, 0.150039, 0.849961),  # centred on .5: half-width 1.96 * sqrt(.0625 + .060024) / 1.9604
        (0, 1, 0.0, 0.793451),  # 3.8415 / 4.8415: one item says almost nothing
        (500, 1000, 0.469070, 0.530930),  # close to the normal approximation .5 +- .031 at large n
        (0, 0, 0.0, 1.0),  # no items: no information
    ],
)
def test_wilson_interval(successes, total, low, high):
    assert stats.wilson_interval(successes, total) == (
        pytest.approx(low, abs=1e-6),
        pytest.approx(high, abs=1e-6),
    )


@pytest.mark.parametrize(("successes", "total"), [(-1, 4), (5, 4)])
def test_wilson_interval_rejects_impossible_counts(successes, total):
    with pytest.raises(ValueError):
        stats.wilson_interval(successes, total)


@pytest.mark.parametrize(
    ("only_a", "only_b", "p_value"),
    [
        # 2 * (C(34,0) + ... + C(34,4)) / 2^34 = 2 * 52,956 / 17,179,869,184
        (4, 30, 6.164890e-06),
        (1, 5, 0.21875),  # 2 * (1 + 6) / 64
        (5, 1, 0.21875),  # symmetric in the two runs
        (0, 6, 0.03125),  # 2 / 64: six of six discordant items favour B
        (0, 5, 0.0625),  # 2 / 32: five are not enough for p < .05
        (3, 3, 1.0),  # 2 * 42 / 64 > 1 is capped at 1
        (0, 0, 1.0),  # no discordant items: no evidence of a difference
    ],
)
def test_mcnemar_exact(only_a, only_b, p_value):
    assert stats.mcnemar_exact(only_a, only_b) == pytest.approx(p_value, rel=1e-5)


def test_mcnemar_exact_rejects_negative_counts():
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)


def test_quantile_matches_numpy_linear_interpolation():
    # numpy.quantile([.3, .1, .9, .5, .2], [.025, .5, .975]) = [.11, .3, .86]
    values = sorted([0.3, 0.1, 0.9, 0.5, 0.2])
    assert [stats._quantile(values, q) for q in (0.025, 0.5, 0.975)] == pytest.approx([0.11, 0.3, 0.86])


def test_bootstrap_interval_is_seeded_and_close_to_the_normal_approximation():
    values = [0.0, 1.0] * 50  # mean .5, standard error .05: the normal interval is .402 to .598
    low, high = stats.bootstrap_interval(values)
    assert (low, high) == stats.bootstrap_interval(values)
    assert low == pytest.approx(0.402, abs=0.02) and high == pytest.approx(0.598, abs=0.02)
    assert stats.bootstrap_interval([0.25] * 7) == (pytest.approx(0.25), pytest.approx(0.25))


def test_paired_bootstrap_p():
    assert stats.paired_bootstrap_p([0.0] * 30) == 1.0  # no difference at all
    assert stats.paired_bootstrap_p([1.0, -1.0] * 10) == 1.0  # observed mean exactly 0
    # mean .2 with standard error ~.04: five standard errors; p has the floor 1 / 2001, and a resample or
    # two may reach it
    assert stats.paired_bootstrap_p([1.0] * 20 + [0.0] * 80) <= 3 / 2001
    # mean 1/6 from 30 items with standard error ~.083: about two standard errors, p near .05
    assert 0.01 < stats.paired_bootstrap_p([1.0] * 6 + [-1.0] + [0.0] * 23) < 0.1
    with pytest.raises(ValueError):
        stats.paired_bootstrap_p([])
