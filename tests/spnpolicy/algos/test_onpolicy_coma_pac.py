"""COMA's counterfactual baseline and PAC's max over the others' actions, by enumeration."""

import itertools

import pytest
import torch

from spnpolicy.algos.coma import (ComaConfig, ComaLearner, counterfactual_advantage,
                                  others_actions)
from spnpolicy.algos.pac import (PacConfig, PacLearner, entropy_schedule, joint_index,
                                 max_over_others)
from tests.spnpolicy.algos.test_onpolicy_losses import FakeEnvs, tiny_rollout


def test_others_actions_by_hand():
    got = others_actions(torch.tensor([[2, 0]]), num_actions=3)       # n=2, k=3
    assert got.tolist() == [[[0, 0, 0, 1, 0, 0],                      # agent 0 sees agent 1: 0
                             [0, 0, 1, 0, 0, 0]]]                     # agent 1 sees agent 0: 2


def test_counterfactual_advantage_by_hand():
    q = torch.tensor([[1.0, 4.0, -2.0]])
    probs = torch.tensor([[0.5, 0.25, 0.25]])
    advantage, baseline = counterfactual_advantage(q, probs, torch.tensor([1]))
    assert float(baseline) == pytest.approx(0.5 + 1.0 - 0.5)
    assert float(advantage) == pytest.approx(4.0 - 1.0)


@torch.no_grad()
def test_coma_baseline_by_enumeration():
    """sum_u pi_a(u | o_a) Q(s, (u_-a, u)), each Q read from the critic fed the joint action
    with agent a's action replaced by u, equals the learner's baseline from one pass."""
    torch.manual_seed(0)
    learner = ComaLearner(ComaConfig(), FakeEnvs())
    rollout = tiny_rollout()
    state, actions = rollout.state[0], rollout.actions[0]                 # [E, S], [E, n]
    q_all = learner.q_values(learner.critic, state, actions)             # [E, n, k]
    probs = torch.softmax(learner.agent.logits(rollout.obs[0]), -1)      # [E, n, k]
    _, baseline = counterfactual_advantage(q_all, probs, actions)
    k = FakeEnvs.num_actions
    for e in range(actions.shape[0]):
        for a in range(FakeEnvs.num_agents):
            total = 0.0
            for u in range(k):
                joint = actions[e].clone()
                joint[a] = u
                q = learner.q_values(learner.critic, state[e:e + 1], joint[None])[0, a, u]
                total += float(probs[e, a, u]) * float(q)
            assert float(baseline[e, a]) == pytest.approx(total, rel=1e-5, abs=1e-6)


def test_joint_index_by_hand():
    assert joint_index(torch.tensor([[1, 2, 0], [2, 2, 2]]), 3).tolist() == [1 * 9 + 2 * 3, 26]


@pytest.mark.parametrize("n, k", [(2, 3), (3, 2), (3, 3)])
def test_max_over_others_by_enumeration(n, k):
    g = torch.Generator().manual_seed(n * 10 + k)
    table = torch.randn(4, n, k ** n, generator=g)
    got = max_over_others(table, n, k)
    for b in range(4):
        for i in range(n):
            for u in range(k):
                best = max(float(table[b, i, int(joint_index(torch.tensor(joint), k))])
                           for joint in itertools.product(range(k), repeat=n) if joint[i] == u)
                assert float(got[b, i, u]) == pytest.approx(best)


def test_pac_advantage_uses_the_optimistic_value():
    """A_i = max_{u_-i} Q_i(s, u_i, u_-i) - V_i(s), read off the critics before their step."""
    torch.manual_seed(0)
    learner = PacLearner(PacConfig(standardise_rewards=False), FakeEnvs())
    rollout = tiny_rollout()
    inputs = learner.critic_inputs(rollout.state, None)
    with torch.no_grad():
        table = learner.critic["q"](inputs)
        v = learner.critic["v"](inputs).squeeze(-1)
    expected = torch.zeros_like(v)
    n, k = FakeEnvs.num_agents, FakeEnvs.num_actions
    for t, e, i in itertools.product(range(2), range(3), range(n)):
        own = int(rollout.actions[t, e, i])
        best = max(float(table[t, e, i, int(joint_index(torch.tensor(j), k))])
                   for j in itertools.product(range(k), repeat=n) if j[i] == own)
        expected[t, e, i] = best - v[t, e, i]
    metrics = learner.update(rollout)
    assert float(metrics["advantage_abs"]) == pytest.approx(float(expected.abs().mean()), rel=1e-5)


def test_pac_entropy_schedule():
    cfg = PacConfig(total_steps=1000, entropy_start=0.5, entropy_end=0.1,
                    entropy_anneal_fraction=0.5)
    assert [entropy_schedule(s, cfg) for s in (0, 250, 500, 900)] == pytest.approx(
        [0.5, 0.3, 0.1, 0.1])


def test_pac_refuses_large_joint_tables():
    class Big(FakeEnvs):
        num_agents, num_actions = 6, 6

    with pytest.raises(ValueError, match="6\\*\\*6 = 46656"):
        PacLearner(PacConfig(), Big())
