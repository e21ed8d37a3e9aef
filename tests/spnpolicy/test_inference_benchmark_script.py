"""benchmarks/inference.py: the rollout's covered fraction and success, and --bench-dir errors."""

import numpy as np
import pytest

from tests.run_helpers import load_script

ENV = dict(num_agents=2, grid_size=2, max_steps=5, reward="coverage", layout="fixed")


def test_rollout_success_is_every_goal_held_at_some_step():
    bench = load_script("benchmarks/inference.py")
    # agents that never move: an episode succeeds iff both already stand on the goals
    still = bench.rollout(lambda s, t: np.zeros((len(s), 2), dtype=int), ENV, 40, seed=3)
    envs = bench.make_vec_env("coverage", 40, seed=3, **ENV)
    state, _ = envs.reset(seed=3)
    covered = state[:, 8:10].mean(-1)                   # goals held at reset [E]
    assert still["mean"] == pytest.approx(covered.mean(), abs=1e-6)
    assert still["final"] == pytest.approx(covered.mean(), abs=1e-6)
    assert still["success"] == pytest.approx((covered == 1).mean())
    # on a 1x1 grid the single agent always holds the goal
    one = bench.rollout(lambda s, t: np.zeros((len(s), 1), dtype=int),
                        dict(num_agents=1, grid_size=1, max_steps=3, reward="coverage"), 4, 0)
    assert one == {"mean": 1.0, "final": 1.0, "success": 1.0}


def test_bench_dir_without_one_task_or_runs_is_refused(tmp_path):
    bench = load_script("benchmarks/inference.py")
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit, match="expected one task under runs/"):
        bench.from_bench(tmp_path)
    (tmp_path / "runs" / "coverage-x").mkdir()
    with pytest.raises(SystemExit, match="no seed with finished spn-ac and meanfield-ac runs"):
        bench.from_bench(tmp_path)
