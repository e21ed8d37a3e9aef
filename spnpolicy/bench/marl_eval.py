"""Finished runs as marl-eval's raw-data JSON, the format BenchMARL's ``create_json`` writes.

marl-eval (github.com/instadeepai/marl-eval, README "Data Structure for Raw Experiment
data") plots and aggregates a JSON file nested environment -> task -> algorithm -> run ->
logging step; BenchMARL (``benchmarl/experiment/logger.py``, ``JsonWriter``) writes one per
experiment and merges them. We write the same layout, so that our runs and theirs go through
one plotting tool::

    {"climbing": {                                   # environment: the run's env
      "climbing": {                                  # task: the run's task
        "spn-ac": {                                  # algorithm
          "seed_0": {                                # run: seed_<seed>, as BenchMARL
            "step_0": {"step_count": 0,   "return": [0.0],  "success_rate": [0.0]},
            "step_1": {"step_count": 100, "return": [7.0],  "success_rate": [0.0]},
            "step_2": {"step_count": 200, "return": [11.0], "success_rate": [1.0]},
            "absolute_metrics": {"return": [11.0], "success_rate": [1.0]}}}}}}

- ``step_<i>`` is a run's i-th greedy evaluation, from 0 (BenchMARL's numbering,
  ``step_<frames // evaluation_interval>``, for evaluations every interval from step 0),
  and ``step_count`` the env steps trained before it.
- Metrics, from our evaluation records: ``return_mean`` -> ``"return"`` (BenchMARL's and
  marl-eval's name), ``success_rate`` -> ``"success_rate"`` (the name marl-eval's own
  example uses; its ``win_rate`` is SMAC's battles won), ``length_mean`` ->
  ``"episode_length"`` and ``final_potential`` -> ``"final_potential"``. An environment
  gets those that every evaluation of its runs reports, as marl-eval needs one metric set
  per environment.
- Values are per-evaluation means: marl-eval takes a list of per-episode values or one
  value for a rate, and the run directories keep only each evaluation's mean over its
  episodes, so every list holds one element, the mean.
- ``absolute_metrics`` holds each metric's largest evaluation mean over the run, each metric
  on its own (BenchMARL's ``JsonWriter`` keeps the largest per-episode value). marl-eval's
  absolute metric re-evaluates the best policy on ten times the episodes; ours is not
  re-evaluated, so it is optimistic, and it is not the final evaluation that
  ``summary.json`` scores.

Only finished runs are written. marl-eval also needs, per environment, the same algorithms,
seeds and number of evaluations in every task; runs of different budgets are written as
they are, and marl-eval's ``DiagnoseData`` names what differs.

```python
from spnpolicy.bench import find_run_dirs, load_run
from spnpolicy.bench.marl_eval import write_marl_eval
records = [load_run(path) for path in find_run_dirs(["runs/bench/matrix"])]
write_marl_eval(records, "runs/bench/matrix/marl_eval.json")
# then: marl_eval.utils.data_processing_utils.data_process_pipeline(json.load(f), ["return"])
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spnpolicy.bench.records import RunRecord, ordered

__all__ = ["MARL_EVAL_JSON", "METRIC_KEYS", "to_marl_eval", "write_marl_eval"]

MARL_EVAL_JSON = "marl_eval.json"

#: our evaluation metric -> its key in the marl-eval JSON, in the order written
METRIC_KEYS = {"return_mean": "return", "success_rate": "success_rate",
               "length_mean": "episode_length", "final_potential": "final_potential"}

ABSOLUTE_METRICS = "absolute_metrics"


def _run_data(record: RunRecord, metrics: Sequence[str]) -> dict[str, Any]:
    """One run's steps and absolute metrics (module docstring)."""
    run: dict[str, Any] = {
        f"step_{i}": {"step_count": int(evaluation["step"]),
                      **{METRIC_KEYS[m]: [float(evaluation[m])] for m in metrics}}
        for i, evaluation in enumerate(record.history)}
    run[ABSOLUTE_METRICS] = {METRIC_KEYS[m]: [max(float(e[m]) for e in record.history)]
                             for m in metrics}
    return run


def to_marl_eval(records: Sequence[RunRecord], environment: str | None = None
                 ) -> dict[str, Any]:
    """The finished runs among ``records`` in marl-eval's raw-data layout (module
    docstring). ``environment``: one environment name for every run (a suite's, to have
    marl-eval aggregate over all its tasks), default each run's env. ValueError naming the
    run when two runs share an environment, task, algorithm and seed."""
    finished = [r for r in records if r.finished]
    groups: dict[str, list[RunRecord]] = {}
    for record in finished:
        groups.setdefault(environment or record.env, []).append(record)
    tasks, algos = ordered(finished)
    data: dict[str, Any] = {}
    for env_name in sorted(groups):
        runs = sorted(groups[env_name],
                      key=lambda r: (tasks.index(r.task), algos.index(r.algo), r.seed))
        metrics = [m for m in METRIC_KEYS
                   if all(m in evaluation for r in runs for evaluation in r.history)]
        for record in runs:
            seeds = data.setdefault(env_name, {}).setdefault(record.task, {}) \
                .setdefault(record.algo, {})
            key = f"seed_{record.seed}"
            if key in seeds:
                raise ValueError(f"two runs of {record.task} {record.algo} seed {record.seed} "
                                 f"in environment {env_name!r}: marl-eval names a run by its "
                                 f"seed; give the run directories of one of them")
            seeds[key] = _run_data(record, metrics)
    return data


def write_marl_eval(records: Sequence[RunRecord], path: str | os.PathLike,
                    environment: str | None = None) -> Path:
    """Write ``to_marl_eval(records, environment)`` to ``path`` as JSON; the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_marl_eval(records, environment), indent=2) + "\n")
    return path
