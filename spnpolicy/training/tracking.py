"""Experiment tracking beside a run directory's own files, chosen by the config field
``tracking`` (off by default): ``"mlflow"`` sends a run to MLflow (the ``mlflow`` extra).

An MLflow run holds the run's algorithm, env, seed, env arguments and config as params
(``env_kwargs.<key>``, ``config.<key>``) and every record of ``metrics.jsonl`` as metrics at
``step`` = env steps: the evaluation records under their own names (``return_mean``,
``success_rate``, ...) and the training records under ``train/`` (as in TensorBoard). The
store is ``MLFLOW_TRACKING_URI`` (a tracking server, a database), by default a SQLite file
in the run directory (:attr:`~spnpolicy.training.rundir.RunDir.mlflow_db`); the experiment
is ``MLFLOW_EXPERIMENT_NAME``, by default ``spnpolicy``. A resumed run continues its MLflow
run (the id is saved with each checkpoint); records that a killed process logged after its
last checkpoint are logged again at the same steps.

```python
tracker = open_tracker("mlflow", spec, out_dir, run_id=None)   # None for tracking="none"
tracker.log({"step": 1000, "return_mean": 0.5})
tracker.close(finished=True)
```
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from spnpolicy.training.rundir import PHASE, RunDir, is_training_record

__all__ = ["DEFAULT_EXPERIMENT", "MlflowTracker", "TRACKERS", "check_tracking", "open_tracker",
           "tracking_uri"]

#: The values of the config field ``tracking``.
TRACKERS = ("none", "mlflow")
#: The MLflow experiment of runs when ``MLFLOW_EXPERIMENT_NAME`` is not set.
DEFAULT_EXPERIMENT = "spnpolicy"


def tracking_uri(out_dir: str | os.PathLike | None) -> str | None:
    """Where MLflow runs go: ``MLFLOW_TRACKING_URI``, else the SQLite file in ``out_dir``
    (None without either)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if out_dir is None:
        return None
    return "sqlite:///" + str(RunDir(out_dir).mlflow_db.absolute())


def check_tracking(tracking: str, out_dir: str | os.PathLike | None) -> None:
    """ValueError, before a run writes anything, when ``tracking="mlflow"`` cannot work: the
    mlflow package is missing, or there is no store (no ``out_dir`` and no
    ``MLFLOW_TRACKING_URI``)."""
    if tracking != "mlflow":
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ValueError("tracking='mlflow' needs the mlflow package: pip install "
                         "'spnpolicy[mlflow]' (or SPNPOLICY_EXTRAS=mlflow bash "
                         "scripts/setup.sh)") from None
    if tracking_uri(out_dir) is None:
        raise ValueError("tracking='mlflow' needs a store: give an out_dir (its runs go to "
                         "OUT_DIR/mlflow.db) or set MLFLOW_TRACKING_URI")


def open_tracker(tracking: str, spec: Any, out_dir: str | os.PathLike | None,
                 run_id: str | None) -> MlflowTracker | None:
    """The tracker of ``tracking`` for the run ``spec`` (a
    :class:`~spnpolicy.training.session.RunSpec`), continuing the tracked run ``run_id``
    (saved with a checkpoint) when the store still has it; None for ``"none"``."""
    if tracking == "none":
        return None
    check_tracking(tracking, out_dir)
    return MlflowTracker(spec, tracking_uri(out_dir), run_id, out_dir)


def _params(spec: Any) -> dict[str, str]:
    """The run's definition as MLflow params (strings; lists and dicts as JSON)."""
    flat = {"algo": spec.algo, "env": spec.env, "seed": spec.seed}
    flat |= {f"env_kwargs.{k}": v for k, v in spec.env_kwargs.items()}
    flat |= {f"config.{k}": v for k, v in spec.config.items()}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}


class MlflowTracker:
    """One MLflow run of a training run (module docstring), written through MLflow's own
    client (``mlflow.tracking.MlflowClient``, no global active run), named after the run
    directory and tagged ``spnpolicy.run_dir`` with its path. ValueError naming the store
    when it cannot be opened."""

    def __init__(self, spec: Any, uri: str, run_id: str | None,
                 out_dir: str | os.PathLike | None) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id, self.resumed = run_id, False
            if run_id is not None:
                try:
                    self.client.get_run(run_id)
                    self.resumed = True
                except MlflowException:       # another store: start a run there
                    pass
                else:
                    self.client.update_run(run_id, status="RUNNING")
            if not self.resumed:
                experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
                found = self.client.get_experiment_by_name(experiment)
                experiment_id = (found.experiment_id if found is not None
                                 else self.client.create_experiment(experiment))
                out = Path(out_dir).absolute() if out_dir is not None else None
                run = self.client.create_run(
                    experiment_id,
                    run_name=out.name if out is not None else f"{spec.algo}_{spec.env}",
                    tags={"spnpolicy.run_dir": str(out)} if out is not None else None)
                self.run_id = run.info.run_id
                params = [Param(k, v) for k, v in _params(spec).items()]
                for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
                    self.client.log_batch(self.run_id, params=params[
                        start:start + MAX_PARAMS_TAGS_PER_BATCH])
        except MlflowException as error:
            raise ValueError(f"tracking='mlflow': cannot use the MLflow store {uri}: "
                             f"{error.message}") from None

    def log(self, record: dict[str, Any]) -> None:
        """Log a record of ``metrics.jsonl`` (its ``step`` and numbers; a training record's
        under ``train/``) as metrics."""
        from mlflow.entities import Metric

        prefix = "train/" if is_training_record(record) else ""
        now = int(time.time() * 1000)
        metrics = [Metric(prefix + key, float(value), now, int(record["step"]))
                   for key, value in record.items()
                   if key not in ("step", PHASE) and isinstance(value, (int, float))]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def restore(self, records: list[dict[str, Any]]) -> None:
        """A resumed run's records so far: logged when this MLflow run is new (the store
        changed), already there when it was continued."""
        if not self.resumed:
            for record in records:
                self.log(record)

    def close(self, finished: bool) -> None:
        """End the MLflow run: FINISHED when the run reached its budget, else KILLED (an
        interrupted run, continued by a resume)."""
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")
