"""maddpg: the straight-through Gumbel-softmax by hand, the actor loss's
gradient reaching only the agent's own action, one update's critic target by hand, and a
default run that solves ``coordination``."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.maddpg import (CentralCritic, Maddpg, MaddpgConfig, actor_loss,
                                    gumbel_softmax_st)
from spnpolicy.training import make_vec_env
from tests.update_helpers import move_apart, random_batch


def test_straight_through_forward_is_the_gumbel_max_one_hot():
    logits = torch.tensor([[0.0, 1.0, 0.5]])
    gumbels = torch.tensor([[2.0, 0.0, 0.1]])          # argmax of the sum: action 0
    assert gumbel_softmax_st(logits, gumbels).tolist() == [[1.0, 0.0, 0.0]]


def test_straight_through_gradient_by_hand():
    """d(w . y)/dl_j = sum_i w_i p_i (delta_ij - p_j) / T with p = softmax((l + g) / T)."""
    logits = torch.tensor([0.2, -0.4, 0.9], requires_grad=True)
    gumbels = torch.tensor([0.5, 1.5, -0.3])
    temperature, w = 0.5, [1.0, -2.0, 3.0]
    (gumbel_softmax_st(logits, gumbels, temperature) * torch.tensor(w)).sum().backward()
    z = [(l + g) / temperature for l, g in zip(logits.tolist(), gumbels.tolist())]
    p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    expected = [sum(w[i] * p[i] * ((i == j) - p[j]) for i in range(3)) / temperature
                for j in range(3)]
    assert logits.grad.tolist() == pytest.approx(expected)


def test_actor_loss_differentiates_only_the_own_action():
    """Agent i's critic input holds its own differentiable one-hot and the others' replayed
    actions: a perturbation of agent 1's own action changes agent 1's term only."""
    torch.manual_seed(0)
    critic = CentralCritic(state_dim=1, num_agents=2, num_actions=2, hidden=(8,))
    state, actions = torch.ones(1, 1), torch.tensor([[0, 1]])
    own = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], requires_grad=True)
    loss = actor_loss(critic, state, actions, own, torch.zeros(1, 2, 2), 0.0)
    with torch.no_grad():
        q0 = critic(state, torch.tensor([[[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]]))[0, 0]
        q1 = critic(state, torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]]))[0, 1]
    assert float(loss.detach()) == pytest.approx(-(float(q0) + float(q1)) / 2)
    loss.backward()
    assert own.grad.abs().sum() > 0


def test_logits_regulariser_by_hand():
    critic = CentralCritic(1, 2, 2, (4,))
    logits = torch.tensor([[[1.0, -2.0], [0.0, 3.0]]])
    own = torch.zeros(1, 2, 2)
    with_reg = actor_loss(critic, torch.ones(1, 1), torch.zeros(1, 2, dtype=torch.long), own,
                          logits, 0.1)
    without = actor_loss(critic, torch.ones(1, 1), torch.zeros(1, 2, dtype=torch.long), own,
                         logits, 0.0)
    assert float((with_reg - without).detach()) == pytest.approx(0.1 * (1 + 4 + 0 + 9) / 4)


def test_update_regresses_the_critic_on_the_target_networks():
    """One update's critic loss is ``mean_{b, i} (Q_i(s, u) - y)^2`` with ``y = r + gamma
    Qbar_i(s', ubar')``, ``ubar'`` every agent's argmax of the target policy at ``o'``, and
    ``Qbar`` the target critic (both moved apart from the online networks): each critic input
    (state, agent id, every agent's one-hot action) written out here."""
    torch.manual_seed(0)
    envs = make_vec_env("climbing", 1)                   # 2 agents, 3 actions, state [1]
    algorithm = Maddpg(MaddpgConfig(critic_hidden=(8,), actor_hidden=(8,), gamma=0.9), envs)
    move_apart(algorithm.critic_target, algorithm.agent_target)
    batch = random_batch(envs)
    critic_before = copy.deepcopy(algorithm.critic)
    metrics = algorithm.update(batch)

    def value(critic, state, agent, joint):                       # Q_agent(state, joint)
        x = torch.cat([state, torch.eye(2)[agent], torch.eye(3)[joint[0]], torch.eye(3)[joint[1]]])
        return float(critic.net(x))

    total = 0.0
    with torch.no_grad():
        for b, i in itertools.product(range(8), range(2)):
            greedy = [int(algorithm.agent_target(batch.next_obs[b:b + 1])[0, a].argmax())
                      for a in range(2)]
            y = float(batch.reward[b]) + 0.9 * value(algorithm.critic_target,
                                                     batch.next_state[b], i, greedy)
            total += (value(critic_before, batch.state[b], i, batch.actions[b].tolist()) - y) ** 2
    assert float(metrics["loss_critic"]) == pytest.approx(total / 16, rel=1e-5)


def test_solves_coordination_by_default():
    result = spnpolicy.train("maddpg", "coordination", seed=0)
    assert result.eval["success_rate"] == 1.0
    assert tuple(result.agent.act(np.ones((1, 2, 1)))[0]) == (1, 1)


@pytest.mark.parametrize("key, value", [("gumbel_temperature", 0.0), ("logits_reg", -1.0),
                                        ("tau", 2.0), ("critic_hidden", (1, -1))])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        spnpolicy.train("maddpg", "coordination", **{key: value})
