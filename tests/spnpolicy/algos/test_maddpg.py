"""maddpg: the straight-through Gumbel-softmax by hand, the actor loss's
gradient reaching only the agent's own action, and a default run that solves
``coordination``."""

import math

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.maddpg import CentralCritic, actor_loss, gumbel_softmax_st


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


def test_solves_coordination_by_default():
    result = spnpolicy.train("maddpg", "coordination", seed=0)
    assert result.eval["success_rate"] == 1.0
    assert tuple(result.agent.act(np.ones((1, 2, 1)))[0]) == (1, 1)


@pytest.mark.parametrize("key, value", [("gumbel_temperature", 0.0), ("logits_reg", -1.0),
                                        ("tau", 2.0), ("critic_hidden", (1, -1))])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        spnpolicy.train("maddpg", "coordination", **{key: value})
