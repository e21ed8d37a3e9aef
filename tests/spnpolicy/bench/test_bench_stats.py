"""Bootstrap statistics against known values."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from spnpolicy.bench.stats import Estimate, iqm, iqm_ci, mean_ci


def test_mean_ci_holds_the_mean_and_matches_a_normal_interval():
    samples = np.arange(10.0)
    estimate = mean_ci(samples)
    assert estimate.value == 4.5 and estimate.n == 10
    assert estimate.low < 4.5 < estimate.high
    half = 1.96 * samples.std() / math.sqrt(10)  # the normal approximation it should be near
    assert estimate.low == pytest.approx(4.5 - half, abs=0.5)
    assert estimate.high == pytest.approx(4.5 + half, abs=0.5)
    assert mean_ci(samples) == estimate  # a fixed resampling seed: reproducible


def test_all_equal_scores_give_a_point_interval_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mean_ci([1.0, 1.0, 1.0]) == Estimate(1.0, 1.0, 1.0, 3)
        assert iqm_ci([[0.0, 0.0], [0.0, 0.0, 0.0]]) == Estimate(0.0, 0.0, 0.0, 5)


def test_one_score_has_no_interval():
    estimate = mean_ci([0.7])
    assert estimate.value == 0.7 and math.isnan(estimate.low) and math.isnan(estimate.high)
    assert estimate.to_json() == {"value": 0.7, "ci95": [None, None], "n": 1}
    assert estimate.format() == "0.70"


def test_iqm_of_known_arrays():
    assert iqm(range(8)) == 3.5
    assert iqm([1, 2, 3, 4, 100, 200, 300, 400]) == 76.75  # mean of 3, 4, 100, 200
    assert iqm([5.0]) == 5.0


def test_iqm_ci_pools_tasks_with_different_seed_counts():
    per_task = [[1.0, 0.0, 1.0, 1.0], [0.5, 0.4], [0.9, 0.8, 0.7]]
    estimate = iqm_ci(per_task)
    pooled = np.concatenate([np.asarray(t) for t in per_task])
    assert estimate.value == pytest.approx(stats.trim_mean(pooled, 0.25))
    assert estimate.low <= estimate.value <= estimate.high and estimate.n == 9
    assert 0.0 <= estimate.low and estimate.high <= 1.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_bad_scores_are_refused(bad):
    with pytest.raises(ValueError, match="mean_ci"):
        mean_ci(bad)
    with pytest.raises(ValueError, match="iqm_ci task 0"):
        iqm_ci([bad])
    with pytest.raises(ValueError, match="at least one task"):
        iqm_ci([])
