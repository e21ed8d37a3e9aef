"""The run directory: the one place that knows its files and their layout.

```
RUN_DIR/
  config.json          what the run is: algo, env, seed, env_kwargs, config, total_steps
  metrics.jsonl        one JSON record per greedy evaluation (``step``, ``return_mean``, ...)
                       and, every ``log_interval`` env steps, a training record: the same
                       layout with ``"phase": "train"`` (the training episodes' returns
                       and lengths, and the losses, since the previous one)
  metrics.csv          the same records as a table
  checkpoints/last.pt  the latest checkpoint (atomic writes, ``torch.load(weights_only=True)``)
  tensorboard/         TensorBoard event files (when the tensorboard package is installed)
  mlflow.db            the MLflow store of a run trained with tracking="mlflow" (unless
                       MLFLOW_TRACKING_URI names another; spnpolicy.training.tracking)
  provenance.jsonl     one JSON record per process that trained the run: the ``step`` it
                       started from, the package's git ``commit``, when and where
  bench.json           written by ``spnpolicy bench``: ``{"suite": ..., "task": ...}``
  RUNNING              while ``spnpolicy.train`` (the CLI's train, a bench run) trains the
                       run: ``HOST PID`` of that process
```

```python
run = RunDir("runs/cov")
run.read_config()["env"]       # 'coverage'; ValueError naming the file if missing/corrupt
run.load_checkpoint()          # the payload; ValueError if empty/truncated/corrupt/foreign
run.read_history()             # the evaluation records, oldest first
run.read_training()            # the training records ("phase": "train"), oldest first
run.read_provenance()          # who trained it: [{"step": 0, "commit": "8a19ab3", ...}, ...]
RunDir.locate("runs/cov/checkpoints/last.pt")   # (RunDir("runs/cov"), that checkpoint)
```

Training (:class:`~spnpolicy.training.Session`), inference (``load_agent``), ``query``,
``bench`` and ``plot`` all read and write runs through this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spnpolicy.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
)

__all__ = ["BENCH_JSON", "CHECKPOINTS", "CONFIG_JSON", "LAST", "METRICS_CSV", "METRICS_JSONL",
           "MLFLOW_DB", "PHASE", "PROVENANCE_JSONL", "RUNNING", "RunBusyError", "RunDir",
           "TENSORBOARD", "TRAINING", "is_training_record", "write_text_atomic"]

CONFIG_JSON = "config.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
PROVENANCE_JSONL = "provenance.jsonl"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
TENSORBOARD = "tensorboard"
MLFLOW_DB = "mlflow.db"
BENCH_JSON = "bench.json"
RUNNING = "RUNNING"
#: The key and value that mark a training record in ``metrics.jsonl`` (evaluation records
#: have no ``PHASE``, as in runs made before training records were kept).
PHASE, TRAINING = "phase", "train"


def is_training_record(record: dict[str, Any]) -> bool:
    return record.get(PHASE) == TRAINING


class RunBusyError(RuntimeError):
    """Another live process holds the run directory (:meth:`RunDir.claim`)."""

#: Keys every ``config.json`` has.
CONFIG_KEYS = ("algo", "env", "seed", "env_kwargs", "config")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a kill leaves the
    old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _file(*parts: str, doc: str | None = None) -> property:
    """A read-only property: the run directory's path joined with ``parts``."""
    return property(lambda run: run.path.joinpath(*parts),
                    doc=doc or f"``{'/'.join(parts)}`` in the run directory.")


class RunDir:
    """The files of one run directory (which need not exist yet)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths: each a property, ``run.config`` = ``run.path / "config.json"`` -----------
    config = _file(CONFIG_JSON)
    metrics_jsonl = _file(METRICS_JSONL)
    metrics_csv = _file(METRICS_CSV)
    provenance_jsonl = _file(PROVENANCE_JSONL)
    checkpoint = _file(CHECKPOINTS, LAST, doc="``checkpoints/last.pt``: the latest checkpoint.")
    tensorboard = _file(TENSORBOARD)
    mlflow_db = _file(MLFLOW_DB, doc="``mlflow.db``: the default MLflow store (SQLite) of a "
                                     "tracked run.")
    bench = _file(BENCH_JSON)
    running = _file(RUNNING)

    def is_run(self) -> bool:
        """Whether the directory holds a ``config.json``."""
        return self.config.is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    # --- locating -------------------------------------------------------------------------
    @classmethod
    def locate(cls, path: str | os.PathLike) -> tuple[RunDir, Path]:
        """``(run directory, checkpoint)`` of a run directory or of a checkpoint file in one
        (its ``config.json`` sits in the file's directory or the one above). ValueError naming
        ``path`` when there is no such run or it has no checkpoint."""
        path = Path(path)
        if path.is_dir():
            run, checkpoint = cls(path), cls(path).checkpoint
            candidates = [run]
        elif path.is_file():
            checkpoint = path
            candidates = [cls(path.parent), cls(path.parent.parent)]
            run = next((c for c in candidates if c.is_run()), candidates[0])
        else:
            raise ValueError(f"no run directory or checkpoint file at {str(path)!r}")
        if not run.is_run():
            raise ValueError(f"no {CONFIG_JSON} for {str(path)!r} (looked in "
                             f"{', '.join(str(c.path) for c in candidates)}); pass a run "
                             f"directory written by spnpolicy.train(out_dir=...) or "
                             f"'spnpolicy train --out-dir'")
        if not checkpoint.is_file():
            raise ValueError(f"run {str(path)!r} has no checkpoint at {checkpoint}")
        return run, checkpoint

    # --- config.json ----------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The parsed ``config.json``; ValueError naming the file when it is missing, not
        JSON, or lacks the keys a run's config has."""
        if not self.config.is_file():
            raise ValueError(f"{self.path} is not a run directory: it has no {CONFIG_JSON}")
        try:
            config = json.loads(self.config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.config} is not valid JSON ({error}); the run's config "
                             f"is lost, so it cannot be resumed or loaded") from None
        missing = [key for key in CONFIG_KEYS if not isinstance(config, dict) or key not in config]
        if missing:
            raise ValueError(f"{self.config} is not a spnpolicy run config: it lacks "
                             f"{', '.join(missing)}")
        if not isinstance(config["config"], dict) or not isinstance(config["env_kwargs"], dict):
            raise ValueError(f"{self.config} is not a spnpolicy run config: 'config' and "
                             f"'env_kwargs' must be JSON objects")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically (a kill never leaves half a file)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config, json.dumps(config, indent=2) + "\n")

    def total_steps(self) -> int:
        """The budget recorded in ``config.json``."""
        config = self.read_config()
        return int(config.get("total_steps", config["config"].get("total_steps", 0)))

    # --- checkpoints ----------------------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike | None = None) -> dict[str, Any]:
        """The payload of ``path`` (default ``checkpoints/last.pt``), checked to be a
        training checkpoint; ValueError naming the file otherwise."""
        path = Path(path) if path is not None else self.checkpoint
        payload = load_checkpoint(path)
        session = payload.get("session")
        if not isinstance(session, dict) or "step" not in session or "history" not in session:
            raise CheckpointError(f"checkpoint {path} is not a spnpolicy training checkpoint "
                                  f"(it has no session step and history)")
        return payload

    def checkpoint_step(self) -> int | None:
        """The env step of the last checkpoint, or None when there is none or it is
        unreadable."""
        try:
            return int(self.load_checkpoint()["session"]["step"])
        except (FileNotFoundError, ValueError):
            return None

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the partial files of a checkpoint save that a kill interrupted."""
        return remove_stale_temporaries(self.checkpoint)

    # --- metrics --------------------------------------------------------------------------
    def read_history(self) -> tuple[dict[str, Any], ...]:
        """The evaluation records of ``metrics.jsonl``, oldest first (``()`` when there is no
        file); stops at a line cut off by a kill."""
        return tuple(r for r in _read_records(self.metrics_jsonl) if not is_training_record(r))

    def read_training(self) -> tuple[dict[str, Any], ...]:
        """The training records of ``metrics.jsonl`` (``"phase": "train"``), oldest first."""
        return tuple(r for r in _read_records(self.metrics_jsonl) if is_training_record(r))

    # --- provenance -----------------------------------------------------------------------
    def read_provenance(self) -> tuple[dict[str, Any], ...]:
        """The records of ``provenance.jsonl``, oldest first: one per process that trained
        the run, each with the ``step`` it started from (``()`` for a run made before the
        file was kept); stops at a line cut off by a kill."""
        return _read_records(self.provenance_jsonl)

    def append_provenance(self, record: dict[str, Any]) -> None:
        """Add one record (a ``step`` and what trained the run from it) as a line of
        ``provenance.jsonl``; a kill can cut off only that line, which reading skips."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.provenance_jsonl.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_bench(self) -> dict[str, Any]:
        """``bench.json`` (``{}`` when the run was not made by a bench)."""
        if not self.bench.is_file():
            return {}
        try:
            bench = json.loads(self.bench.read_text())
        except json.JSONDecodeError:
            raise ValueError(f"{self.bench} is not valid JSON") from None
        return bench if isinstance(bench, dict) else {}

    def write_bench(self, suite: str, task: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.bench, json.dumps({"suite": suite, "task": task}) + "\n")

    # --- one writer at a time -------------------------------------------------------------
    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the directory for this process while the block runs: ``RUNNING`` is created
        exclusively with ``HOST PID`` and removed at the end. RunBusyError when a live
        process on this host holds it, or any process on another host (whose liveness
        cannot be checked here); a holder on this host that has exited is replaced. A claim
        this process already holds is held on (``spnpolicy bench`` claims, then trains with
        ``spnpolicy.train``, which claims too)."""
        self.path.mkdir(parents=True, exist_ok=True)
        mine = f"{socket.gethostname()} {os.getpid()}"
        if self.running.exists() and self.running.read_text().strip() == mine:
            yield                                             # held by this process already
            return
        for _ in range(2):
            try:
                fd = os.open(self.running, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self.running.read_text().strip() if self.running.exists() else ""
                host, _, pid = holder.rpartition(" ")
                if host != socket.gethostname() or (pid.isdigit() and _alive(int(pid))):
                    raise RunBusyError(
                        f"{self.path} is being trained by process {pid or '?'} on "
                        f"{host or '?'} ({self.running}); if that process is gone, delete "
                        f"the file and run again") from None
                self.running.unlink(missing_ok=True)          # its holder has exited
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(mine + "\n")
            break
        else:
            raise RunBusyError(f"{self.path}: could not claim {self.running}")
        try:
            yield
        finally:
            self.running.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete everything in the directory except a claim (``RUNNING``)."""
        for entry in self.path.iterdir() if self.path.is_dir() else ():
            if entry.name == RUNNING:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # --- preparing a directory to write ---------------------------------------------------
    def ensure_writable(self, what: str = "out_dir") -> None:
        """Create the directory (and ``checkpoints/``) and check files can be written there;
        ValueError naming ``what``, the path and the reason otherwise. Writes nothing else."""
        try:
            (self.path / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test.{os.getpid()}.tmp"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            blocker = next((p for p in [self.path, *self.path.parents]
                            if p.exists() and not p.is_dir()), None)
            if blocker is not None:
                reason = f"{blocker} is a file, not a directory"
            raise ValueError(f"{what} {str(self.path)!r}: cannot write a run directory there "
                             f"({reason}); choose another directory") from None


def _read_records(path: Path) -> tuple[dict[str, Any], ...]:
    """The JSON records of a ``.jsonl`` file with a ``step`` each, oldest first (``()`` when
    there is no file); stops at a line cut off by a kill."""
    if not path.is_file():
        return ()
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut off by a kill; everything before it is whole
        if not isinstance(record, dict) or "step" not in record:
            break
        records.append(record)
    return tuple(records)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # it exists, owned by someone else
        return True
    return True
