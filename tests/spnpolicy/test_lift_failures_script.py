"""benchmarks/lift_failures.py: the rollout's counts, and the whole script on a tiny budget."""

import json

import numpy as np
import pytest
import torch

from spnpolicy.envs.lift import LIFT, WAIT
from tests.run_helpers import load_script


def test_rollout_counts_failed_attempts_and_success():
    bench = load_script("benchmarks/lift_failures.py")
    env = dict(num_agents=2, penalty=0.5, distance=0, max_steps=4)
    # everyone at the object: lifting together succeeds at once
    together = bench.rollout(lambda s, stuck: torch.full((len(s), 2), LIFT), env, 16, seed=0)
    assert together == {"return": 1.0, "success": 1.0, "failed_attempts": 0.0}
    # one lifter alone fails every step until the deadline
    alone = bench.rollout(lambda s, stuck: torch.tensor([[LIFT, WAIT]] * len(s)), env, 16, 0)
    assert alone == {"return": pytest.approx(-2.0), "success": 0.0, "failed_attempts": 4.0}
    # failures make a team that always lifts fail some attempts, and cost their penalty
    failing = dict(env, failure_prob=0.5)
    out = bench.rollout(lambda s, stuck: torch.full((len(s), 2), LIFT), failing, 64, seed=1)
    assert out["failed_attempts"] > 0
    assert out["return"] == pytest.approx(out["success"] - 0.5 * out["failed_attempts"])


def test_the_script_writes_its_tables(tmp_path):
    """One seed, no learning: the files and rows exist, and conditioning a mean-field policy
    changes nothing (its agents are independent)."""
    bench = load_script("benchmarks/lift_failures.py")
    bench.main(["--seeds", "1", "--total-steps", "64", "--episodes", "16",
                "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "lift_failures.json").read_text())
    assert (tmp_path / "out" / "lift_failures.md").is_file()
    assert len(result["summary"]) == 8
    rows = result["per_seed"]
    np.testing.assert_equal(rows["failures: meanfield-ac, plain"],
                            rows["failures: meanfield-ac, conditioned on the failures"])
    assert result["paired_differences"]["failures: meanfield-ac, conditioned - plain"][
        "return"][0] == 0.0
