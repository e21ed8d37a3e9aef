"""ma2ql: the turn schedule, an update that changes only the agent whose turn it
is, its TD loss by hand, and a default run that solves ``coordination``."""

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.ma2ql import Ma2ql, Ma2qlConfig, turn
from spnpolicy.training import Batch, make_vec_env


def test_turn_schedule_is_round_robin():
    assert [turn(u, 3, 2) for u in range(13)] == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    assert [turn(u, 1, 3) for u in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def _batch(size=8):
    g = np.random.default_rng(0)
    return Batch(state=torch.ones(size, 1), actions=torch.as_tensor(g.integers(0, 2, (size, 2))),
                 reward=torch.as_tensor(g.normal(size=size), dtype=torch.float32),
                 next_state=torch.ones(size, 1),
                 terminated=torch.as_tensor(g.integers(0, 2, size), dtype=torch.float32),
                 steps=torch.ones(size, dtype=torch.int64), obs=torch.ones(size, 2, 1),
                 next_obs=torch.ones(size, 2, 1))


def test_updates_change_only_the_agent_whose_turn_it_is():
    torch.manual_seed(0)
    algorithm = Ma2ql(Ma2qlConfig(hidden=(8,), turn_length=2), make_vec_env("coordination", 1))
    batch = _batch()
    turns = []
    for _ in range(6):
        before = [[p.clone() for p in net.parameters()] for net in algorithm.q.nets]
        turns.append(algorithm.update(batch)["turn"])
        changed = [any(not torch.equal(a, b) for a, b in zip(old, net.parameters()))
                   for old, net in zip(before, algorithm.q.nets)]
        assert changed == [turns[-1] == 0, turns[-1] == 1]
    assert turns == [0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize("double_q", [True, False])
def test_update_td_loss_by_hand(double_q):
    """Double Q: the next action is the online argmax, valued by the target network (else
    the target's own argmax); the first update is agent 0's."""
    torch.manual_seed(0)
    algorithm = Ma2ql(Ma2qlConfig(hidden=(4,), double_q=double_q, standardise_rewards=False),
                      make_vec_env("coordination", 1))
    with torch.no_grad():
        online = algorithm.q.nets[0](torch.ones(1, 1))[0].tolist()
        best = int(np.argmax(online))
        algorithm.target.nets[0][-1].bias[best] -= 3.0   # the target prefers the other action
        target = algorithm.target.nets[0](torch.ones(1, 1))[0].tolist()
    assert int(np.argmax(target)) != best
    batch = _batch(4)._replace(terminated=torch.tensor([0.0, 1.0, 0.0, 0.0]))
    gamma = algorithm.cfg.gamma
    bootstrap = target[best] if double_q else max(target)
    expected = np.mean([(online[int(a)] - (r + gamma * (1 - d) * bootstrap)) ** 2
                        for a, r, d in zip(batch.actions[:, 0].tolist(), batch.reward.tolist(),
                                           batch.terminated.tolist())])
    metrics = algorithm.update(batch)
    assert metrics["turn"] == 0
    assert float(metrics["loss_td"]) == pytest.approx(expected, rel=1e-5)


def test_solves_coordination_by_default():
    result = spnpolicy.train("ma2ql", "coordination", seed=0)
    assert result.eval["success_rate"] == 1.0
    assert tuple(result.agent.act(np.ones((1, 2, 1)))[0]) == (1, 1)


@pytest.mark.parametrize("key, value", [("turn_length", 0), ("epsilon_finish", 1.5)])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        spnpolicy.train("ma2ql", "coordination", **{key: value})
