"""gapops.studies.stats: paired differences with t intervals, and the verdict rule."""
import math
import random

import pytest

from gapops.studies import stats


def test_t_quantiles():
    assert stats.t975(1) == pytest.approx(12.706)
    assert stats.t975(4) == pytest.approx(2.776)
    assert stats.t975(1000) == pytest.approx(1.96)
    with pytest.raises(ValueError):
        stats.t975(0)


def test_mean_ci_by_hand():
    ci = stats.mean_ci([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)
    assert ci["mean"] == 2.0 and ci["lo"] == pytest.approx(2 - half)
    assert ci["hi"] == pytest.approx(2 + half)
    assert stats.mean_ci([5.0])["lo"] is None


def test_paired_needs_the_interval_to_exclude_zero_in_the_direction():
    a, b = [1.0, 1.1, 0.9, 1.05, 0.95], [0.5, 0.6, 0.4, 0.55, 0.45]
    assert stats.paired("a-b", a, b, ">")["holds"]
    assert not stats.paired("a-b", a, b, "<")["holds"]
    noisy = [0.5 + d for d in (0.3, -0.3, 0.2, -0.25, 0.1)]
    assert not stats.paired("noise", noisy, b, ">")["holds"]
    assert not stats.paired("one", [2.0], [1.0])["holds"]  # one seed: no interval, no verdict
    with pytest.raises(ValueError):
        stats.paired("x", [1.0], [1.0, 2.0])


def test_coverage_is_about_95_percent():
    rng = random.Random(0)
    hits = 0
    for _ in range(2000):
        ci = stats.mean_ci([rng.gauss(0.3, 1.0) for _ in range(5)])
        hits += ci["lo"] <= 0.3 <= ci["hi"]
    assert 0.93 < hits / 2000 < 0.97


def test_at_least_and_describe():
    c = stats.at_least("gap", [0.8, 0.85, 0.82], 0.3)
    assert c["holds"] and "[" in stats.describe(c)
    assert not stats.at_least("gap", [0.31, 0.2, 0.4], 0.3)["holds"]
