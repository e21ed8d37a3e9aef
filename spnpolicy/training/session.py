"""The bookkeeping of one training run, shared by every algorithm's training loop.

A :class:`Session` owns the run directory (``config.json``, ``metrics.jsonl``,
``metrics.csv``, ``checkpoints/last.pt``, and ``provenance.jsonl``: a line per ``begin``
with the step it starts from and the package's git commit), the evaluation and checkpoint schedule, the
progress bar and the logger (with the experiment tracker, :mod:`spnpolicy.training.tracking`,
whose run a resumed run continues). The algorithm keeps its own loop and calls it:

```python
session = Session(spec, total_steps=cfg.total_steps, eval_interval=cfg.eval_interval,
                  checkpoint_interval=cfg.checkpoint_interval, out_dir=out_dir, resume=True)
payload = session.restore()            # the last checkpoint's payload, or None
step = session.begin(payload)          # env steps already done (0 for a new run)
while step < cfg.total_steps:
    ...                                # collect -> store -> sample -> loss -> step -> targets
    step += num_envs
    session.advance(num_envs)
    if session.log_due(step):
        session.record_training(step, training.pop(envs.has_success))   # TrainingMeans
    if session.eval_due(step):
        session.record(step, evaluate(...) | train_stats)
    if session.checkpoint_due(step):
        session.save(step, {"agent": ..., "optimizers": ..., ...})
session.close()
```

Evaluation happens at step 0, at every multiple of ``eval_interval`` crossed and at the
end; a training record (``"phase": "train"`` in ``metrics.jsonl``) at every multiple of
``log_interval`` crossed; checkpoints at every multiple of ``checkpoint_interval`` crossed
and at the end (the records and wall time are saved with them). Resuming restores the
records and rewrites the metrics files from them, so a killed-and-resumed run leaves the
same files as an uninterrupted one (except wall times). With a run directory, Ctrl-C makes
the next ``checkpoint_due`` true and ``save`` then raises :class:`TrainingInterrupted`, so
an interrupted run can be resumed from where it stopped. The directory's layout is
:mod:`spnpolicy.training.rundir`'s.
"""

from __future__ import annotations

import json
import os
import reprlib
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spnpolicy.machine import training_provenance
from spnpolicy.training.checkpoint import save_checkpoint, warm_start
from spnpolicy.training.logger import MetricsLogger
from spnpolicy.training.progress import ProgressBar
from spnpolicy.training.rundir import PHASE, TRAINING, RunDir
from spnpolicy.training.tracking import open_tracker

__all__ = ["RunSpec", "Session", "TrainingInterrupted", "spec_differences"]

#: The checkpoint's record of the tracked (MLflow) run that a resumed run continues.
TRACKING_RUN = "tracking_run"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run with a run directory: raised right after the checkpoint that the
    interrupt asked for was written (``step``, ``path``)."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__(f"interrupted at step {step:,d}; checkpoint {path}")
        self.step, self.path = step, path


@dataclass(frozen=True)
class RunSpec:
    """What defines a run: resuming requires the same spec (``total_steps`` may differ)."""

    algo: str
    env: str
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"algo": self.algo, "env": self.env, "seed": self.seed,
                "env_kwargs": self.env_kwargs, "config": self.config}


def _normalise(value: Any) -> Any:
    """JSON round trip, so that tuples and lists compare equal."""
    return json.loads(json.dumps(value))


def _short(value: Any) -> str:
    return reprlib.repr(value)


def check_budget(total_steps: int, done: int, out_dir: str | os.PathLike) -> None:
    """ValueError when a resumed run's budget ``total_steps`` is below the ``done`` env
    steps its run directory ``out_dir`` has already trained."""
    if done > total_steps:
        raise ValueError(f"total_steps={total_steps:,d} is below the {done:,d} env steps the "
                         f"run in {out_dir} has already done; give total_steps >= {done} (or "
                         f"leave it out to keep the saved one)")


def spec_differences(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """``"key (saved X, given Y)"`` for each key where two ``config.json`` contents differ
    (``config`` and ``env_kwargs`` key by key; ``total_steps`` is ignored, and a config key
    the saved run lacks, added by a newer version, counts as its default)."""
    saved, given = _normalise(saved), _normalise(given)
    out = []
    for key in ("algo", "env", "seed"):
        if saved.get(key) != given.get(key):
            out.append(f"{key} (saved {_short(saved.get(key))}, given {_short(given.get(key))})")
    for part in ("env_kwargs", "config"):
        old, new = saved.get(part) or {}, given.get(part) or {}
        for key in sorted(set(old) | set(new)):
            if key == "total_steps" or (part == "config" and key not in old):
                continue
            if old.get(key, "<unset>") != new.get(key, "<unset>"):
                out.append(f"{part}.{key} (saved {_short(old.get(key, '<unset>'))}, given "
                           f"{_short(new.get(key, '<unset>'))})")
    return out


class Session:
    """Run directory, schedules, logger and progress bar of one training run.

    Args:
        spec: the run's algorithm, env, seed and full config (written to ``config.json``).
        total_steps: env-step budget.
        eval_interval: env steps between evaluations.
        checkpoint_interval: env steps between checkpoints (only with ``out_dir``).
        log_interval: env steps between training records (:meth:`record_training`); 0: none.
        out_dir: run directory; ``None`` writes nothing and cannot resume.
        resume: continue from ``out_dir/checkpoints/last.pt`` if it exists. Without it, a
            directory that already holds a checkpoint is refused (ValueError).
        init_from: another run's directory or checkpoint file whose learner a new run starts
            from (:meth:`warm_start`); recorded in ``provenance.jsonl``.
        init_partial: take only the tensors of ``init_from``'s learner that fit this run's
            (:func:`~spnpolicy.training.checkpoint.warm_start` with ``partial``).
        progress: show a tqdm bar on stderr.
        stdout: print one line per evaluation.
        tracking: ``"mlflow"`` also sends the run to MLflow
            (:mod:`spnpolicy.training.tracking`); ``"none"``: no tracking.
    """

    def __init__(self, spec: RunSpec, total_steps: int, eval_interval: int,
                 checkpoint_interval: int, out_dir: str | os.PathLike | None = None,
                 resume: bool = False, progress: bool = False, stdout: bool = True,
                 log_interval: int = 0, tracking: str = "none",
                 init_from: str | os.PathLike | None = None,
                 init_partial: bool = False) -> None:
        self.spec = spec
        self._init_run, self.init_from = RunDir.locate(init_from) if init_from is not None \
            else (None, None)
        self.init_partial = init_partial
        self._kept_fresh: list[str] = []
        self.total_steps = total_steps
        self.eval_interval = eval_interval
        self.checkpoint_interval = checkpoint_interval
        self.log_interval = log_interval
        self.tracking = tracking
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        self._progress_enabled = progress
        self._stdout = stdout
        self.history: list[dict[str, Any]] = []      # the evaluation records
        self.records: list[dict[str, Any]] = []      # every record, as in metrics.jsonl
        self._bar: ProgressBar | None = None
        self._logger: MetricsLogger | None = None
        self._wall_base = 0.0
        self._start_time = time.perf_counter()
        self._start_step = 0
        self._next_eval = 0
        self._next_checkpoint = checkpoint_interval
        self._next_log = log_interval
        self.interrupted = False
        self._previous_handler = None

    @property
    def checkpoint_path(self) -> Path | None:
        return RunDir(self.out_dir).checkpoint if self.out_dir is not None else None

    def restore(self) -> dict[str, Any] | None:
        """The payload of the run directory's last checkpoint when resuming, else None.

        ValueError (nothing on disk changed) when the directory holds a run but ``resume``
        is off, when the saved run differs from this one (naming the keys), when the budget
        is below the steps already done, or when ``config.json`` or the checkpoint cannot
        be read."""
        if self.out_dir is None:
            return None
        run = RunDir(self.out_dir)
        if not run.has_checkpoint():
            return None
        if not self.resume:
            raise ValueError(f"out_dir {self.out_dir} already holds a run (checkpoint "
                             f"{run.checkpoint}); resume it (resume=True, CLI --resume) or "
                             f"use another out_dir")
        differ = spec_differences(run.read_config(), self.spec.to_json())
        if differ:
            raise ValueError(f"cannot resume {self.out_dir}: the saved run differs in "
                             f"{'; '.join(differ)}")
        payload = run.load_checkpoint()
        check_budget(self.total_steps, int(payload["session"]["step"]), self.out_dir)
        return payload

    def warm_start(self, learner: Any, key: str) -> None:
        """Load the ``key`` entry (``"algorithm"`` or ``"learner"``) of ``init_from``'s
        checkpoint into ``learner`` (:func:`~spnpolicy.training.checkpoint.warm_start`)."""
        state = self._init_run.load_checkpoint(self.init_from)[key]
        self._kept_fresh = warm_start(learner, state, self.init_from, partial=self.init_partial)

    def begin(self, payload: dict[str, Any] | None = None) -> int:
        """Open the logger and progress bar; returns the env steps already done."""
        step = 0
        if self.out_dir is not None:
            run = RunDir(self.out_dir)
            run.remove_stale_temporaries()
            run.write_config(dict(self.spec.to_json(), total_steps=self.total_steps))
        self._bar = ProgressBar(self.total_steps, enabled=self._progress_enabled,
                                description=f"{self.spec.algo} {self.spec.env}")
        tracked = payload["session"].get(TRACKING_RUN) if payload is not None else None
        self._logger = MetricsLogger(self.out_dir, stdout=self._stdout,
                                     print_fn=self._bar.write if self._progress_enabled else None,
                                     tracker=open_tracker(self.tracking, self.spec,
                                                          self.out_dir, tracked))
        if payload is not None:
            step = int(payload["session"]["step"])
            self.history = [dict(r) for r in payload["session"]["history"]]
            # checkpoints written before training records were kept hold the history only
            self.records = [dict(r) for r in payload["session"].get("records", self.history)]
            self._wall_base = float(payload["session"]["wall_time"])
            self._logger.restore(self.records)
            self._bar.update(step)
            if self._stdout:
                self._logger.print_fn(f"resumed from step {step:,d} ({self.checkpoint_path})")
        last_eval = self.history[-1]["step"] if self.history else None
        self._next_eval = 0 if last_eval is None else self._after(last_eval, self.eval_interval)
        self._next_checkpoint = self._after(step, self.checkpoint_interval)
        if self.log_interval:
            self._next_log = self._after(step, self.log_interval)
        self._start_time, self._start_step = time.perf_counter(), step
        if self.out_dir is not None:
            started = {"init_from": str(self.init_from)} \
                if self.init_from is not None and payload is None else {}
            if started and self.init_partial:
                started |= {"init_partial": True, "kept_fresh": self._kept_fresh}
            RunDir(self.out_dir).append_provenance(training_provenance(step) | started)
        if self.init_from is not None and payload is None and self._stdout:
            kept = (f"; optimizers and {len(self._kept_fresh)} tensors that do not fit kept "
                    f"fresh: {', '.join(self._kept_fresh) or 'none'}" if self.init_partial else "")
            self._logger.print_fn(f"learner initialised from {self.init_from}{kept}")
        self._catch_interrupt()
        return step

    def _catch_interrupt(self) -> None:
        """With a run directory, the first Ctrl-C (SIGINT) makes the next loop iteration
        write a checkpoint (a point where the state is whole) and then raise
        :class:`TrainingInterrupted`; a second Ctrl-C stops at once."""
        if (self.out_dir is None or threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return
        self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_interrupt(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\ninterrupted: saving a checkpoint at the end of this step (Ctrl-C again to "
              "stop at once)", file=sys.stderr, flush=True)

    @staticmethod
    def _after(step: int, interval: int) -> int:
        return (step // interval + 1) * interval

    def wall_time(self) -> float:
        """Seconds spent on this run, over all its resumed segments."""
        return self._wall_base + time.perf_counter() - self._start_time

    def note(self, line: str) -> None:
        """Print ``line`` where the evaluation lines go (nothing when quiet)."""
        if self._stdout and self._logger is not None:
            self._logger.print_fn(line)

    def advance(self, steps: int) -> None:
        """Count ``steps`` more env steps on the progress bar."""
        self._bar.update(steps)

    def eval_due(self, step: int) -> bool:
        return step >= self._next_eval or (step >= self.total_steps and
                                           (not self.history or self.history[-1]["step"] != step))

    def record(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Log an evaluation at ``step`` (adds ``wall_time`` and ``steps_per_second``)."""
        elapsed = max(time.perf_counter() - self._start_time, 1e-9)
        record = {"step": int(step), **metrics, "wall_time": round(self.wall_time(), 3),
                  "steps_per_second": round((step - self._start_step) / elapsed, 1)}
        self.history.append(record)
        self.records.append(record)
        self._logger.log(record)
        shown = {k: record[k] for k in ("return_mean", "success_rate") if k in record}
        self._bar.set_postfix(**shown)
        self._next_eval = self._after(step, self.eval_interval)
        return record

    def log_due(self, step: int) -> bool:
        """Whether a training record is due at ``step`` (never with ``log_interval=0``)."""
        return self.log_interval > 0 and step >= self._next_log

    def record_training(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Log a training record at ``step``: ``metrics`` (the training episodes' returns
        and lengths and the losses since the previous one, as
        :class:`~spnpolicy.training.metrics.TrainingMeans` gives them) with
        ``"phase": "train"`` and ``wall_time``, to the metrics files (not the history)."""
        record = {"step": int(step), PHASE: TRAINING, **metrics,
                  "wall_time": round(self.wall_time(), 3)}
        self.records.append(record)
        self._logger.log(record)
        self._next_log = self._after(step, self.log_interval)
        return record

    def checkpoint_due(self, step: int) -> bool:
        return self.out_dir is not None and (self.interrupted or step >= self._next_checkpoint
                                             or step >= self.total_steps)

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        """Write ``payload`` (plus the session's step, records and wall time) atomically."""
        session = {"step": int(step), "history": self.history, "records": self.records,
                   "wall_time": self.wall_time()}
        if self._logger.tracker is not None:
            session[TRACKING_RUN] = self._logger.tracker.run_id
        payload = dict(payload, session=session)
        self._next_checkpoint = self._after(step, self.checkpoint_interval)
        path = save_checkpoint(self.checkpoint_path, payload)
        if self.interrupted:
            raise TrainingInterrupted(step, path)
        return path

    def close(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
        if self._bar is not None:
            self._bar.close()
        if self._logger is not None:
            self._logger.close(finished=bool(self.history)
                               and self.history[-1]["step"] >= self.total_steps)
