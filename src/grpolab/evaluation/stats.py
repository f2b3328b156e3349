"""Small, pure statistics for eval reports: how sure an accuracy is, and whether two models differ.

* One accuracy over n independent items (one completion each): the 95% **Wilson score interval**
  (Wilson 1927). Unlike the normal approximation p +- 1.96 sqrt(p(1-p)/n) it stays inside [0, 1] and
  does not collapse to a zero-width interval at 0/n or n/n, which small models on hard tasks often hit.
* A mean of per-item values that are not 0/1 (mean@k with k > 1 completions per item, pass@j): a
  **percentile bootstrap over items**. The k completions of one item share its difficulty, so they are not
  independent draws; resampling whole items keeps that correlation, where Wilson on the n*k completions
  would claim a narrower interval than the data supports.
* Two models on the same items: a **paired** test, which is far more sensitive than comparing two
  intervals because item difficulty cancels. With one completion per item it is the **exact McNemar
  test**: only discordant items (one model right, the other wrong) carry information, and under "no
  difference" each is equally likely to favour either model, so the count favouring one is
  Binomial(b + c, 1/2). With k > 1 it is a **paired bootstrap** of the per-item differences.

The bootstrap uses a fixed seed, so a report is reproducible to the digit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``total``; (0, 1) when total is 0."""
    if not 0 <= successes <= total:
        raise ValueError(f"Wilson interval needs 0 <= successes <= total, got {successes} of {total}")
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (items only A got right, only B got right).

    p = min(1, 2 * P[X <= min(b, c)]) for X ~ Binomial(b + c, 1/2); 1.0 when there are no discordant items.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be 0 or more, got {only_a} and {only_b}")
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def _resampled_means(values: Sequence[float], resamples: int, seed: int) -> list[float]:
    """Means of ``resamples`` bootstrap resamples (with replacement, same size) of ``values``."""
    rng = random.Random(seed)
    count = len(values)
    return [sum(rng.choices(values, k=count)) / count for _ in range(resamples)]


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bootstrap_interval(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (one value per item)."""
    if not values:
        raise ValueError("bootstrap_interval needs at least one value")
    means = sorted(_resampled_means(values, resamples, seed))
    return _quantile(means, 0.025), _quantile(means, 0.975)


def paired_bootstrap_p(differences: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided p-value that the mean per-item difference is 0, by bootstrap of the centred differences.

    Centring imposes the null hypothesis; p is the share of resampled means at least as far from 0 as the
    observed one, with the +1 correction so that p is never exactly 0 from a finite number of resamples.
    """
    if not differences:
        raise ValueError("paired_bootstrap_p needs at least one difference")
    observed = sum(differences) / len(differences)
    centred = [difference - observed for difference in differences]
    extreme = sum(abs(mean) >= abs(observed) - 1e-12 for mean in _resampled_means(centred, resamples, seed))
    return (extreme + 1) / (resamples + 1)
