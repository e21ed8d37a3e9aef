"""Aggregate scores over seeds and tasks, with 95% bootstrap confidence intervals.

Follows rliable (Agarwal et al. 2021) with ``scipy.stats.bootstrap``: percentile intervals
over seeds for a per-task mean; the interquartile mean (IQM, ``trim_mean(., 0.25)``) over
all runs of all tasks, bootstrapped by resampling the seeds of each task independently
(stratified bootstrap).

```python
mean_ci([0.0, 1.0, 1.0, 1.0])                   # Estimate(value=0.75, low=0.25, high=1.0, n=4)
iqm_ci([[1.0, 0.0, 1.0], [0.5, 0.5, 0.6]])      # over 2 tasks x 3 seeds
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["Estimate", "iqm", "iqm_ci", "mean_ci"]

CONFIDENCE = 0.95
RESAMPLES = 2_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval ``[low, high]`` from ``n`` runs.

    ``low`` and ``high`` are NaN when there is nothing to resample (fewer than 2 runs);
    they equal ``value`` when all runs scored the same.
    """

    value: float
    low: float
    high: float
    n: int

    def to_json(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x
        return {"value": clean(self.value), "ci95": [clean(self.low), clean(self.high)],
                "n": self.n}

    def format(self, digits: int = 2) -> str:
        """``0.75 [0.25, 1.00]``, or just the value without an interval."""
        if math.isnan(self.low):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _as_samples(samples: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(samples, dtype=float).ravel()
    if array.size == 0:
        raise ValueError(f"{what} needs at least one score, got none")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} needs finite scores, got {array.tolist()}")
    return array


def _bootstrap(data: tuple[np.ndarray, ...], statistic, value: float, seed: int) -> Estimate:
    n = sum(d.size for d in data)
    if min(d.size for d in data) < 2:
        return Estimate(value, math.nan, math.nan, n)
    if np.ptp(np.concatenate(data)) == 0:  # scipy reports a degenerate distribution as NaN
        return Estimate(value, value, value, n)
    result = stats.bootstrap(data, statistic, confidence_level=CONFIDENCE,
                             n_resamples=RESAMPLES, method="percentile", vectorized=True,
                             paired=False, random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Estimate(value, float(low), float(high), n)


def mean_ci(samples: Sequence[float], seed: int = 0) -> Estimate:
    """Mean of ``samples`` (one score per seed) with a 95% percentile-bootstrap interval."""
    array = _as_samples(samples, "mean_ci")
    return _bootstrap((array,), lambda x, axis: np.mean(x, axis=axis), float(array.mean()),
                      seed)


def iqm(scores: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (``trim_mean(scores, 0.25)``)."""
    return float(stats.trim_mean(_as_samples(scores, "iqm"), 0.25))


def iqm_ci(per_task: Sequence[Sequence[float]], seed: int = 0) -> Estimate:
    """IQM over every run of every task (``per_task[t]`` = the seeds' scores on task t),
    with a stratified bootstrap interval; tasks may have different numbers of seeds.
    Scores should share a scale across tasks (success rates, normalised returns)."""
    if len(per_task) == 0:
        raise ValueError("iqm_ci needs at least one task, got none")
    data = tuple(_as_samples(scores, f"iqm_ci task {t}") for t, scores in enumerate(per_task))

    def statistic(*samples: np.ndarray, axis: int) -> np.ndarray:
        return stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)

    return _bootstrap(data, statistic, iqm(np.concatenate(data)), seed)
