"""Finished runs as the reports see them, read from run directories.

A run directory (written by ``spnpolicy.train``, read through
:class:`~spnpolicy.training.rundir.RunDir`) holds ``config.json`` (``algo``, ``env``,
``seed``, ``env_kwargs``, ``config``, ``total_steps``) and ``metrics.jsonl`` (one JSON
record per greedy evaluation, each with ``step``, ``return_mean`` and, where the env
defines success, ``success_rate``). A bench also writes ``bench.json``
(``{"suite": ..., "task": ...}``) to name the task; other run directories are named after
their env and env arguments (``penalty[k=25]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spnpolicy.bench.suites import ALL_ALGOS, OFFPOLICY_ALGOS, ONPOLICY_ALGOS
from spnpolicy.training.rundir import CONFIG_JSON, RunDir

__all__ = ["RunRecord", "find_run_dirs", "load_run", "ordered", "task_label"]


@dataclass(frozen=True)
class RunRecord:
    """One run: who ran where, and its evaluation history (oldest first)."""

    task: str
    algo: str
    env: str
    seed: int
    total_steps: int
    history: tuple[dict[str, Any], ...]
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    suite: str | None = None
    """The bench suite that made the run (from ``bench.json``), if any."""
    provenance: tuple[dict[str, Any], ...] = ()
    """What trained it (``provenance.jsonl``): a record per process, each with the ``step``
    it started from and the package's ``commit``; ``()`` for runs made before it was kept."""
    config: dict[str, Any] = field(default_factory=dict)
    """The algorithm's config as the run saved it (``config.json``'s ``config``)."""

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation record (``{}`` for a run without one)."""
        return self.history[-1] if self.history else {}

    @property
    def finished(self) -> bool:
        return bool(self.history) and self.final["step"] >= self.total_steps


def task_label(env: str, env_kwargs: dict[str, Any]) -> str:
    """A task name for a run made outside a bench: ``env[key=value,...]``."""
    if not env_kwargs:
        return env
    return f"{env}[{','.join(f'{k}={v}' for k, v in sorted(env_kwargs.items()))}]"


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read ``run_dir``; ValueError naming it when it is not a run directory or its
    ``config.json`` cannot be read."""
    run = RunDir(run_dir)
    config = run.read_config()
    env_kwargs = dict(config["env_kwargs"])
    bench = run.read_bench()
    task = bench.get("task") or task_label(config["env"], env_kwargs)
    return RunRecord(task=task, algo=config["algo"], env=config["env"], seed=int(config["seed"]),
                     total_steps=run.total_steps(), history=run.read_history(),
                     env_kwargs=env_kwargs, suite=bench.get("suite"),
                     provenance=run.read_provenance(), config=dict(config.get("config", {})))


def find_run_dirs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run directories in ``paths``: each path is one, or is searched for them (a bench's
    ``OUT`` or ``OUT/runs``). ValueError naming a path that holds none."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ValueError(f"run directory {path} does not exist")
        if RunDir(path).is_run():
            found.append(path)
            continue
        inside = sorted(p.parent for p in path.rglob(CONFIG_JSON))
        if not inside:
            raise ValueError(f"{path} holds no run directory (no {CONFIG_JSON} inside it)")
        found += inside
    return list(dict.fromkeys(found))


def ordered(records: Sequence[RunRecord], task_order: Sequence[str] = ()
            ) -> tuple[list[str], list[str]]:
    """The tasks (``task_order`` first, then by name) and algorithms (the suites' order
    first, then by name) present in ``records``."""
    def sort(names: set[str], order: Sequence[str]) -> list[str]:
        rank = {name: i for i, name in enumerate(order)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
    return (sort({r.task for r in records}, task_order),
            sort({r.algo for r in records}, (*ALL_ALGOS, *OFFPOLICY_ALGOS, *ONPOLICY_ALGOS)))
