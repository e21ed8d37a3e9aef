"""benchmarks/many_agents_probe.py: the oracle moves against brute force, and the shares it
reports for a saved run."""

import itertools
import json

import numpy as np
import pytest

import spnpolicy
from spnpolicy.envs import coverage_core as core
from tests.run_helpers import load_script

probe = load_script("benchmarks/many_agents_probe.py")


def _state(agents, goals, config):
    covered = core.goal_distances(agents, goals) == 0
    return core.global_state(agents, goals, covered, 0, config)


def _moves_toward(agents, goals, size):
    """``[n, 6]``: each action takes agent i closer to ``goals[i]``, or keeps it there."""
    now = np.abs(agents - goals).sum(-1)
    after = np.stack([np.abs(np.clip(agents + move, 0, size - 1) - goals).sum(-1)
                      for move in core.MOVES], -1)
    return (after < now[:, None]) | ((now[:, None] == 0) & (after == 0))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_oracle_moves_follow_a_best_assignment(n):
    config = core.CoverageConfig(n, 5, 20)
    rng = np.random.default_rng(n)
    agents, goals = rng.integers(0, 5, size=(2, 30, n, 2))
    goals[:, :, 0] = np.arange(n)                       # distinct goal cells
    oracle = probe.oracle_moves(_state(agents, goals, config), config)
    for e in range(30):
        costs = {p: np.abs(agents[e] - goals[e, list(p)]).sum()
                 for p in itertools.permutations(range(n))}
        best = [p for p, cost in costs.items() if cost == min(costs.values())]
        assert any((_moves_toward(agents[e], goals[e, list(p)], 5) == oracle[e]).all()
                   for p in best)


def test_an_agent_on_its_goal_must_stay():
    config = core.CoverageConfig(1, 3, 5)
    agents = np.array([[[1, 1]]])
    oracle = probe.oracle_moves(_state(agents, agents.copy(), config), config)
    assert oracle[0, 0].tolist() == [True, False, False, False, False, True]


def test_shares_of_a_saved_run(tmp_path):
    spnpolicy.train("spn-ac", "coverage", seed=0, total_steps=96, out_dir=tmp_path,
                    env_kwargs=dict(num_agents=3, grid_size=4, max_steps=6,
                                    observation="egocentric"),
                    learning_starts=48, batch_size=16, eval_interval=96, eval_episodes=2,
                    param_head="agents", critic_input="agents", verbose=False, progress=False)
    out = tmp_path / "probe.json"
    rows = probe.main([str(tmp_path), "--episodes", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == rows
    shares = rows[0]["oracle_share"]
    assert set(shares) == {"policy", "critics", "uniform"}
    assert all(0.0 <= value <= 1.0 for value in shares.values())
    assert 0.0 < shares["uniform"] < 1.0


def test_a_run_on_another_env_is_refused(tmp_path):
    spnpolicy.train("spn-ac", "climbing", seed=0, total_steps=100, out_dir=tmp_path,
                    learning_starts=50, eval_interval=100, verbose=False, progress=False)
    with pytest.raises(ValueError, match="coverage runs"):
        probe.probe(tmp_path)
