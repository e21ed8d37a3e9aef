"""i2q: its three losses by hand, the ideal bootstrap through the transition
model, one update's targets from the target networks, and a default run that solves
``coordination``."""

import copy

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.i2q import (I2q, I2qConfig, StateAgentQ, q_loss, qss_loss,
                                 transition_loss)
from spnpolicy.training import Batch, make_vec_env
from tests.update_helpers import move_apart, random_batch


def test_transition_loss_by_hand():
    predicted = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])      # [B=1, n=2, S=2]
    qss = torch.tensor([[3.0, -1.0]])
    next_state = torch.tensor([[1.0, 0.0]])
    # agent 0: |(0, 2)|^2 - 0.5 * 3 = 2.5; agent 1: |(-1, 0)|^2 + 0.5 = 1.5
    assert float(transition_loss(predicted, qss, next_state, 0.5)) == pytest.approx(2.0)


def test_qss_and_q_losses_by_hand():
    reward, discount = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0])
    qss = torch.tensor([[1.0, 2.0], [2.0, 0.0]])
    next_qss = torch.tensor([[4.0, 2.0], [9.0, 9.0]])
    # targets: row 0: 1 + 0.5 * (4, 2) = (3, 2); row 1: 2
    assert float(qss_loss(qss, reward, discount, next_qss)) == pytest.approx((4 + 0 + 0 + 4) / 4)
    next_q = torch.tensor([[[0.0, 6.0], [2.0, -1.0]], [[5.0, 5.0], [5.0, 5.0]]])
    # targets: row 0: 1 + 0.5 * max -> (4, 2); row 1: 2
    assert float(q_loss(qss, reward, discount, next_q)) == pytest.approx((9 + 0 + 0 + 4) / 4)


def test_per_agent_values_each_agent_at_its_own_state():
    torch.manual_seed(0)
    q = StateAgentQ(state_dim=3, num_agents=2, num_actions=4, hidden=(8,))
    states = torch.randn(5, 2, 3)
    values = q.per_agent(states)
    assert torch.allclose(values[:, 0], q(states[:, 0])[:, 0])
    assert torch.allclose(values[:, 1], q(states[:, 1])[:, 1])


def test_q_bootstraps_at_the_model_prediction():
    """With a transition model that predicts a state whose target value is known, step 3's
    target is r + gamma * max_a' Qbar_i(f_i(s, a_i), a')."""
    torch.manual_seed(0)
    algorithm = I2q(I2qConfig(hidden=(8,), lr=1e-9, gamma=0.5),
                    make_vec_env("coordination", 1))
    with torch.no_grad():   # f predicts the constant state 3.0 for every input
        for p in algorithm.nets.model.parameters():
            p.zero_()
        algorithm.nets.model[-1].bias.fill_(3.0)
    batch = Batch(state=torch.ones(4, 1), actions=torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0]]),
                  reward=torch.tensor([1.0, 0.0, -1.0, 2.0]), next_state=torch.ones(4, 1),
                  terminated=torch.zeros(4), steps=torch.ones(4, dtype=torch.int64))
    with torch.no_grad():
        best = algorithm.q_target(torch.full((1, 1), 3.0))[0].max(-1).values   # [n]
        q = algorithm.agent(batch.state).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    expected = ((q - (batch.reward.unsqueeze(-1) + 0.5 * best)) ** 2).mean()
    metrics = algorithm.update(batch)
    assert float(metrics["loss_td"]) == pytest.approx(float(expected), rel=1e-4)


def test_update_bootstraps_from_the_target_networks():
    """Steps 2 and 3 of one update by hand, with the target networks moved apart from the
    online ones: ``Q^ss``'s target ``r + gamma Qbar^ss_i(s', f_i(s', a'*))`` with ``a'*`` the
    online ``argmax_a Q_i(s', a)``, and ``Q``'s target ``r + gamma max_a' Qbar_i(f_i(s, a_i),
    a')``; ``f`` is the transition model after its step (step 1)."""
    torch.manual_seed(0)
    envs = make_vec_env("climbing", 1)                   # 2 agents, 3 actions, state [1]
    algorithm = I2q(I2qConfig(hidden=(8,), gamma=0.9), envs)
    move_apart(algorithm.q_target, algorithm.nets_target, scale=1.0)
    batch = random_batch(envs)
    agent_before, nets_before = copy.deepcopy(algorithm.agent), copy.deepcopy(algorithm.nets)
    metrics = algorithm.update(batch)
    model = algorithm.nets.transition                  # stepped in step 1 only
    reward = batch.reward.unsqueeze(-1)
    with torch.no_grad():
        greedy = agent_before(batch.next_state).argmax(-1)                      # [B, n]
        assert not torch.equal(greedy, algorithm.q_target(batch.next_state).argmax(-1))
        next_qss = algorithm.nets_target.qss(batch.next_state, model(batch.next_state, greedy))
        per_agent_next = batch.next_state.unsqueeze(1).expand(-1, 2, -1)
        qss = nets_before.qss(batch.state, per_agent_next)
        ideal = algorithm.q_target.per_agent(model(batch.state, batch.actions))  # [B, n, k]
        q_taken = agent_before(batch.state).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    expected_qss = (qss - (reward + 0.9 * next_qss)).pow(2).mean()
    expected_td = (q_taken - (reward + 0.9 * ideal.max(-1).values)).pow(2).mean()
    assert float(metrics["loss_qss"]) == pytest.approx(float(expected_qss), rel=1e-5)
    assert float(metrics["loss_td"]) == pytest.approx(float(expected_td), rel=1e-5)


def test_solves_coordination_by_default():
    result = spnpolicy.train("i2q", "coordination", seed=0)
    assert result.eval["success_rate"] == 1.0
    assert tuple(result.agent.act(np.ones((1, 1)))[0]) == (1, 1)


@pytest.mark.parametrize("key, value", [("n_step", 3), ("qss_weight", -0.5)])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        spnpolicy.train("i2q", "coordination", **{key: value})
