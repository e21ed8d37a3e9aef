"""masac: its losses against hand-computed values, one update on its own, and a
default run that solves ``coordination``."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.masac import (Masac, MasacConfig, TwinCentralCritic, actor_loss,
                                   others_onehot, soft_target)
from spnpolicy.training import Batch, make_vec_env
from tests.update_helpers import move_apart, random_batch


def test_others_onehot_zeroes_the_own_block():
    rows = others_onehot(torch.tensor([[1, 0, 2]]), 3)[0]   # [n=3, n*k=9]
    expected = torch.tensor([[0, 0, 0, 1, 0, 0, 0, 0, 1],
                             [0, 1, 0, 0, 0, 0, 0, 0, 1],
                             [0, 1, 0, 1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(rows, expected)


def test_soft_target_enumerates_the_agents_own_action():
    """y_0 = r + gamma * sum_a pi_0(a) (min_j Q^j(s', a, u'_1) - alpha log pi_0(a)), the sum
    written out over agent 0's three actions."""
    torch.manual_seed(0)
    critic = TwinCentralCritic(state_dim=2, num_agents=2, num_actions=3, hidden=(8,))
    next_state = torch.randn(1, 2)
    next_actions = torch.tensor([[2, 1]])          # agent 1's sampled next action: 1
    logits = torch.tensor([[[0.3, -1.0, 0.5], [0.0, 0.0, 0.0]]])
    log_probs = torch.log_softmax(logits, -1)
    alpha, gamma, reward = 0.7, 0.9, 1.5
    with torch.no_grad():
        next_q = critic(next_state, next_actions).min(0).values
        y = soft_target(torch.tensor([reward]), torch.tensor([gamma]), next_q, log_probs, alpha)
    value = 0.0
    x = torch.cat([next_state[0], torch.tensor([1.0, 0.0]),   # state, agent 0's id,
                   torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])])  # agent 1's action 1 only
    for a in range(3):   # agent 0's own action, the other's as sampled
        with torch.no_grad():
            q = min(float(c(x)[a]) for c in critic.critics)
        p = math.exp(float(log_probs[0, 0, a]))
        value += p * (q - alpha * math.log(p))
    assert float(y[0, 0]) == pytest.approx(reward + gamma * value, rel=1e-6)


def test_soft_target_without_bootstrap_is_the_reward():
    y = soft_target(torch.tensor([2.0, -1.0]), torch.zeros(2), torch.randn(2, 3, 4),
                    torch.log_softmax(torch.randn(2, 3, 4), -1), 0.5)
    assert torch.equal(y, torch.tensor([[2.0] * 3, [-1.0] * 3]))


def test_actor_loss_by_hand():
    log_probs = torch.log(torch.tensor([[[0.25, 0.75]]]))
    q = torch.tensor([[[1.0, 3.0]]])
    alpha = 0.5
    expected = sum(p * (alpha * math.log(p) - v) for p, v in ((0.25, 1.0), (0.75, 3.0)))
    assert float(actor_loss(q, log_probs, alpha)) == pytest.approx(expected)


def test_actor_loss_gradient_ignores_the_critic():
    q = torch.randn(4, 2, 3, requires_grad=True)
    logits = torch.randn(4, 2, 3, requires_grad=True)
    actor_loss(q, torch.log_softmax(logits, -1), 0.1).backward()
    assert q.grad is None and logits.grad is not None


def _batch(envs, size=16, seed=0):
    g = np.random.default_rng(seed)
    n, k = envs.num_agents, envs.num_actions
    return Batch(state=torch.ones(size, envs.state_dim),
                 actions=torch.as_tensor(g.integers(0, k, (size, n))),
                 reward=torch.zeros(size),
                 next_state=torch.ones(size, envs.state_dim), terminated=torch.ones(size),
                 steps=torch.ones(size, dtype=torch.int64),
                 obs=torch.ones(size, n, envs.obs_dim), next_obs=torch.ones(size, n, envs.obs_dim))


def test_update_regresses_both_critics_on_the_twins_minimum_and_the_actor_on_it_too():
    """One update's critic loss is ``sum_j mean_{b, i} (Q^j_i(s, u) - y_i)^2`` with ``y_i = r +
    gamma sum_a pibar_i(a) (min_j Qbar^j_i(s', a, u'_-i) - alpha log pibar_i(a))``, read from
    the target critics and the target policy (moved apart from the online ones), and its
    actor loss ``mean_{b, i} sum_a pi_i(a) (alpha log pi_i(a) - min_j Q^j_i(s, a, u_-i))`` on
    the critics after their step: each written out here, element by element."""
    torch.manual_seed(0)
    envs = make_vec_env("climbing", 1)                   # 2 agents, 3 actions
    algorithm = Masac(MasacConfig(critic_hidden=(8,), actor_hidden=(8,), gamma=0.9, alpha=0.3,
                                  autotune_alpha=False), envs)
    move_apart(algorithm.critic_target, algorithm.agent_target)
    batch = random_batch(envs)
    critic_before, agent_before = copy.deepcopy(algorithm.critic), copy.deepcopy(algorithm.agent)
    torch.manual_seed(7)
    metrics = algorithm.update(batch)
    torch.manual_seed(7)                                 # the others' next actions it drew
    next_actions = algorithm.agent_target.sampled_actions(batch.next_obs, None)
    alpha, gamma = math.exp(math.log(0.3)), 0.9
    with torch.no_grad():
        next_pi = torch.softmax(algorithm.agent_target(batch.next_obs), -1)    # [B, n, k]
        next_q = algorithm.critic_target(batch.next_state, next_actions)       # [2, B, n, k]
        q_before = critic_before(batch.state, batch.actions)
        q_after = algorithm.critic(batch.state, batch.actions)
        pi = torch.softmax(agent_before(batch.obs), -1)
    critic_loss, actor_loss_sum, count = 0.0, 0.0, 0
    for b, i in itertools.product(range(8), range(2)):
        soft_value = sum(float(next_pi[b, i, a]) * (min(float(next_q[0, b, i, a]),
                                                        float(next_q[1, b, i, a]))
                                                    - alpha * math.log(float(next_pi[b, i, a])))
                         for a in range(3))
        y = float(batch.reward[b]) + gamma * soft_value
        u = int(batch.actions[b, i])
        critic_loss += sum((float(q_before[j, b, i, u]) - y) ** 2 for j in range(2))
        actor_loss_sum += sum(float(pi[b, i, a]) * (alpha * math.log(float(pi[b, i, a]))
                                                    - min(float(q_after[0, b, i, a]),
                                                          float(q_after[1, b, i, a])))
                              for a in range(3))
        count += 1
    assert float(metrics["loss_critic"]) == pytest.approx(critic_loss / count, rel=1e-5)
    assert float(metrics["loss_actor"]) == pytest.approx(actor_loss_sum / count, rel=1e-5)


def test_update_alone_fits_the_payoff():
    """Repeated updates on one batch of the one-step game drive the critic loss down."""
    torch.manual_seed(0)
    envs = make_vec_env("coordination", 1)
    algorithm = Masac(MasacConfig(critic_hidden=(32,), actor_hidden=(32,), critic_lr=1e-2),
                      envs)
    batch = _batch(envs)
    payoff = torch.tensor([[0.0, -5.0], [-5.0, 10.0]])
    batch = batch._replace(reward=payoff[batch.actions[:, 0], batch.actions[:, 1]])
    first = algorithm.update(batch)
    for _ in range(300):
        last = algorithm.update(batch)
    assert set(first) == {"loss_critic", "loss_actor", "entropy", "alpha"}
    assert float(last["loss_critic"]) < 0.05 * float(first["loss_critic"])


def test_solves_coordination_by_default():
    result = spnpolicy.train("masac", "coordination", seed=0)
    assert result.eval["success_rate"] == 1.0
    assert tuple(result.agent.act(np.ones((1, 2, 1)))[0]) == (1, 1)
    assert result.agent.act(np.ones((2, 1)), deterministic=False).shape == (2,)


@pytest.mark.parametrize("key, value", [("tau", 0.0), ("actor_hidden", (0,)),
                                        ("target_entropy_scale", 1.5), ("alpha", -1.0)])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        spnpolicy.train("masac", "coordination", **{key: value})
