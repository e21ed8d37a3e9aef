"""Synthetic run directories, laid out as ``spnpolicy.train`` and a bench write them."""

import json
from pathlib import Path

import pytest


def write_run(root: Path, task: str, algo: str, seed: int, env: str, success: list[float],
              returns: list[float] | None = None, env_kwargs: dict | None = None,
              total_steps: int | None = None, interval: int = 100, suite: str | None = "matrix",
              checkpoint: bool = True) -> Path:
    """A run dir whose evaluations at steps 0, interval, ... score ``success`` (and
    ``returns``, default 10 * success); ``total_steps`` defaults to the last step."""
    run_dir = root / "runs" / task / algo / f"s{seed}"
    run_dir.mkdir(parents=True)
    steps = [i * interval for i in range(len(success))]
    returns = returns if returns is not None else [10.0 * s for s in success]
    config = {"algo": algo, "env": env, "seed": seed, "env_kwargs": env_kwargs or {},
              "config": {}, "total_steps": steps[-1] if total_steps is None else total_steps}
    (run_dir / "config.json").write_text(json.dumps(config))
    records = [{"step": step, "return_mean": r, **({} if s is None else {"success_rate": s})}
               for step, s, r in zip(steps, success, returns)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if suite is not None:
        (run_dir / "bench.json").write_text(json.dumps({"suite": suite, "task": task}))
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    return run_dir


@pytest.fixture
def matrix_runs(tmp_path):
    """climbing: spn-ac optimal in seeds 0, 1 of 3, vdn in none; penalty-k25: both in all."""
    for seed, final in enumerate([1.0, 1.0, 0.0]):
        write_run(tmp_path, "climbing", "spn-ac", seed, "climbing", [0.0, 0.0, final],
                  returns=[0.0, 7.0, 11.0 if final else 7.0])
        write_run(tmp_path, "climbing", "vdn", seed, "climbing", [0.0, 0.0, 0.0],
                  returns=[0.0, 5.0, 7.0])
        for algo in ("spn-ac", "vdn"):
            write_run(tmp_path, "penalty-k25", algo, seed, "penalty", [0.0, 1.0, 1.0],
                      env_kwargs={"k": 25})
    return tmp_path


@pytest.fixture
def make_run():
    """``write_run`` (above), for tests that lay out their own runs."""
    return write_run
