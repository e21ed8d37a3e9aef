"""spn-ac's epsilon exploration: off by default (collection samples the policy alone, with
the same random draws as before the option existed), and when on, each agent's action is
uniform with probability epsilon (or, shared, each row's agents take one uniform action
together), annealed linearly as the Q-learners' schedule."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from spnpolicy.algos.registry import make_config
from spnpolicy.algos.spn_ac import SpnAc
from spnpolicy.training import make_vec_env


def _algorithm(**overrides) -> tuple[SpnAc, torch.Tensor]:
    cfg = make_config("spn-ac", "lift", dict(num_envs=4, width=4, policy_hidden=(16,),
                                             critic_hidden=(16,)) | overrides)
    envs = make_vec_env("lift", 4, seed=0, num_agents=3)
    torch.manual_seed(0)
    algo = SpnAc(cfg, envs)
    state, _ = envs.reset(seed=0)
    envs.close()
    return algo, torch.as_tensor(state)


def test_off_by_default_collection_samples_the_policy_with_the_same_draws():
    algo, state = _algorithm()
    assert (algo.cfg.epsilon_start, algo.cfg.epsilon_finish) == (0.0, 0.0)
    explored = algo.explore(state, None, 0, torch.Generator().manual_seed(3))
    sampled = algo.sample(state, None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(explored, sampled)
    assert algo.schedule_metrics(0) == {}


def _peaked(algo: SpnAc) -> None:
    """Push the policy onto one joint action per state (large random circuit logits)."""
    with torch.no_grad():
        for p in algo.policy.encoder.parameters():
            p.zero_()
        algo.policy.encoder[-1].bias.copy_(torch.randn_like(algo.policy.encoder[-1].bias) * 30)


def test_epsilon_one_collects_uniform_actions():
    """At epsilon 1 every agent's action is uniform over the k actions, whatever the policy
    (a policy pushed onto one joint action first): a chi-square test per agent, seeded."""
    algo, state = _algorithm(epsilon_start=1.0, epsilon_finish=1.0)
    _peaked(algo)
    greedy = algo.greedy(state, None)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([algo.explore(state, None, 10**6, generator) for _ in range(500)])
    k = algo.policy.num_actions
    for agent in range(draws.shape[1]):
        counts = np.bincount(draws[:, agent].numpy(), minlength=k)
        assert stats.chisquare(counts).pvalue > 1e-3, counts
    policy_draws = torch.cat([algo.sample(state, None, generator) for _ in range(50)])
    assert (policy_draws == greedy.repeat(50, 1)).float().mean() > 0.9   # the policy is peaked


@pytest.mark.parametrize("step, expected", [(0, 0.8), (500, 0.5), (1000, 0.2), (5000, 0.2)])
def test_epsilon_anneals_linearly_and_is_logged(step, expected):
    """On a peaked policy an action differs from the policy's own when replaced (probability
    epsilon) by one of the k - 1 others: a share epsilon (k - 1) / k of the entries."""
    algo, state = _algorithm(epsilon_start=0.8, epsilon_finish=0.2, epsilon_anneal_steps=1000)
    assert algo.schedule_metrics(step)["epsilon"] == pytest.approx(expected)
    _peaked(algo)
    greedy = algo.greedy(state, None)
    generator = torch.Generator().manual_seed(1)
    explored = torch.cat([algo.explore(state, None, step, generator) for _ in range(1000)])
    k = algo.policy.num_actions
    changed = (explored != greedy.repeat(1000, 1)).float().mean().item()   # 12,000 entries
    assert changed == pytest.approx(expected * (k - 1) / k, abs=0.02)


def test_the_config_checks_the_rates():
    with pytest.raises(ValueError, match="epsilon_start"):
        make_config("spn-ac", "lift", {"epsilon_start": 1.5})
    with pytest.raises(ValueError, match="epsilon_anneal_steps"):
        make_config("spn-ac", "lift", {"epsilon_anneal_steps": 0})
    cfg = make_config("spn-ac", "lift", {"epsilon_start": 1.0, "epsilon_finish": 0.05})
    assert dataclasses.replace(cfg).epsilon_finish == 0.05


def test_shared_exploration_moves_the_whole_team_together():
    """At epsilon 1 with shared exploration every agent of a row takes the row's one action,
    uniform over the k actions (chi-square, seeded), whatever the policy."""
    algo, state = _algorithm(epsilon_start=1.0, epsilon_finish=1.0, exploration="shared")
    _peaked(algo)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([algo.explore(state, None, 10**6, generator) for _ in range(500)])
    assert (draws == draws[:, :1]).all()
    counts = np.bincount(draws[:, 0].numpy(), minlength=algo.policy.num_actions)
    assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_shared_exploration_replaces_whole_rows_at_the_rate():
    """On a peaked policy a row differs from the policy's joint action when it is replaced
    (probability epsilon) by a shared action other than that joint action: epsilon (1 - c / k)
    of the rows, c = 1 where the policy's joint action is one action for every agent."""
    epsilon = 0.4
    algo, state = _algorithm(epsilon_start=epsilon, epsilon_finish=epsilon, exploration="shared")
    _peaked(algo)
    greedy = algo.greedy(state, None)
    k = algo.policy.num_actions
    uniform_row = (greedy == greedy[:, :1]).all(1).float()
    expected = epsilon * (1 - uniform_row / k).mean().item()
    generator = torch.Generator().manual_seed(2)
    explored = torch.stack([algo.explore(state, None, 0, generator) for _ in range(1000)])
    changed = (explored != greedy).any(-1).float().mean().item()          # 4,000 rows
    assert changed == pytest.approx(expected, abs=0.03)
