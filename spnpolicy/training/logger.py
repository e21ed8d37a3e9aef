"""The metrics logger: one record per evaluation point, to stdout, ``metrics.jsonl``,
``metrics.csv``, TensorBoard (when the ``tensorboard`` package is installed) and a tracker
(MLflow, :mod:`spnpolicy.training.tracking`, when the config asks for it), and the
training records between them (``"phase": "train"``, :data:`~spnpolicy.training.rundir.PHASE`)
to the same places, under ``train/`` in TensorBoard and MLflow (not to stdout: there may be
many).

Every record has ``step`` (env steps so far); the others are numbers (``return_mean``,
``success_rate``, ``wall_time``, losses, ...), and a training record's ``phase``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from spnpolicy.training.rundir import (
    METRICS_CSV,
    METRICS_JSONL,
    TENSORBOARD,
    is_training_record,
    write_text_atomic,
)
from spnpolicy.training.tracking import MlflowTracker

__all__ = ["MetricsLogger", "format_record"]

_SHOWN = ("return_mean", "success_rate", "stochastic_success_rate", "alpha", "entropy",
          "wall_time")


def format_record(record: dict[str, Any]) -> str:
    """One stdout line: the step, then the main metrics present in ``record``."""
    parts = [f"step {record['step']:>9,d}"]
    parts += [f"{key} {record[key]:.4g}" for key in _SHOWN
              if isinstance(record.get(key), (int, float))]
    return " | ".join(parts)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Logs evaluation and training records.

    Args:
        out_dir: run directory for ``metrics.jsonl`` / ``metrics.csv`` / ``tensorboard/``;
            ``None`` writes no files.
        stdout: print one line per record (through ``print_fn``).
        tensorboard: ``None`` = when ``out_dir`` is given and tensorboard is installed.
        print_fn: how lines are printed (a progress bar's ``write`` keeps the bar intact).
        tracker: an experiment tracker (:func:`~spnpolicy.training.tracking.open_tracker`)
            that gets every record too, or None.
    """

    def __init__(self, out_dir: str | os.PathLike | None, stdout: bool = True,
                 tensorboard: bool | None = None, print_fn=None,
                 tracker: MlflowTracker | None = None) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.stdout = stdout
        self.tracker = tracker
        self.print_fn = print_fn or (lambda line: print(line, file=sys.stdout, flush=True))
        self.records: list[dict[str, Any]] = []
        self._tb = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard is not False:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    if tensorboard:
                        raise ImportError("tensorboard=True needs the tensorboard package: "
                                          "pip install 'spnpolicy[tensorboard]'") from None
                else:
                    self._tb = SummaryWriter(str(self.out_dir / TENSORBOARD))

    def log(self, record: dict[str, Any]) -> None:
        """Record one evaluation point or training record (``record["step"]`` is required)."""
        if "step" not in record:
            raise ValueError(f"a metrics record needs a 'step', got keys {sorted(record)}")
        record = {key: _json_safe(value) for key, value in record.items()}
        self.records.append(record)
        training = is_training_record(record)
        if self.stdout and not training:
            self.print_fn(format_record(record))
        if self.out_dir is not None:
            with open(self.out_dir / METRICS_JSONL, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            self._write_csv()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"train/{key}" if training else key, value,
                                        record["step"])
            self._tb.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def restore(self, records: list[dict[str, Any]]) -> None:
        """Start from ``records`` (a resumed run's history): rewrites the files, dropping
        lines that a killed run wrote after its last checkpoint."""
        self.records = [dict(r) for r in records]
        if self.out_dir is not None:
            write_text_atomic(self.out_dir / METRICS_JSONL,
                          "".join(json.dumps(r) + "\n" for r in self.records))
            self._write_csv()
        if self.tracker is not None:
            self.tracker.restore(self.records)

    def _write_csv(self) -> None:
        columns: list[str] = []
        for record in self.records:
            columns += [key for key in record if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.records)
        write_text_atomic(self.out_dir / METRICS_CSV, buffer.getvalue())

    def close(self, finished: bool = True) -> None:
        """Close the TensorBoard writer and end the tracked run (``finished``: the run
        reached its budget)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.tracker is not None:
            self.tracker.close(finished)
            self.tracker = None
