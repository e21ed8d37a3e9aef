"""qtran: QTRAN-base's td, opt and clamped nopt losses by hand, one update's double-Q
target by hand, one update on its own, and a default run that solves ``coordination``."""

import copy

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.qtran import Qtran, QtranConfig, qtran_losses
from spnpolicy.training import Batch, make_vec_env
from tests.update_helpers import move_apart, random_batch

# two states, two agents, two actions
Q_AGENTS = torch.tensor([[[1.0, 3.0], [0.5, -1.0]],      # greedy (1, 0): sum 3.5
                         [[2.0, 0.0], [1.0, 4.0]]])      # greedy (0, 1): sum 6.0
ACTIONS = torch.tensor([[0, 1], [0, 1]])                 # taken sums: 0.0 and 6.0
JOINT_TAKEN = torch.tensor([2.0, 5.0])
JOINT_GREEDY = torch.tensor([4.0, 5.0])
VALUE = torch.tensor([1.0, -2.0])
TARGET = torch.tensor([3.0, 5.5])


def test_losses_by_hand():
    td, opt, nopt = qtran_losses(Q_AGENTS, ACTIONS, JOINT_TAKEN, JOINT_GREEDY, VALUE, TARGET)
    assert float(td) == pytest.approx(((2 - 3) ** 2 + (5 - 5.5) ** 2) / 2)
    # opt: sum of greedy utilities - Q_jt(s, ubar) + V = 3.5 - 4 + 1 and 6 - 5 - 2
    assert float(opt) == pytest.approx((0.5 ** 2 + 1.0 ** 2) / 2)
    # nopt: 0 - 2 + 1 = -1 (a violation, kept), 6 - 5 - 2 = -1 (kept)
    assert float(nopt) == pytest.approx((1.0 + 1.0) / 2)


def test_nopt_error_is_clamped_at_zero():
    """A positive nopt error (Q' - Q_jt + V > 0: the condition holds) adds nothing and no
    gradient; a negative one adds its square."""
    value = torch.tensor([3.0, -2.0], requires_grad=True)   # errors: 0 - 2 + 3 = 1, -1
    q_agents = Q_AGENTS.clone().requires_grad_(True)
    _, _, nopt = qtran_losses(q_agents, ACTIONS, JOINT_TAKEN, JOINT_GREEDY, value, TARGET)
    assert float(nopt.detach()) == pytest.approx((0.0 + 1.0) / 2)
    nopt.backward()
    # d/dV of mean(min(0, e)^2) = 2 e / B where e < 0, 0 where clamped
    assert value.grad.tolist() == pytest.approx([0.0, -1.0])
    assert q_agents.grad[0].abs().sum() == 0
    assert q_agents.grad[1].flatten().tolist() == pytest.approx([-1.0, 0.0, 0.0, -1.0])


def test_joint_values_get_no_gradient_from_opt_and_nopt():
    joint_taken = JOINT_TAKEN.clone().requires_grad_(True)
    joint_greedy = JOINT_GREEDY.clone().requires_grad_(True)
    value = VALUE.clone().requires_grad_(True)
    _, opt, nopt = qtran_losses(Q_AGENTS, ACTIONS, joint_taken, joint_greedy, value, TARGET)
    (opt + nopt).backward()
    assert joint_taken.grad is None and joint_greedy.grad is None and value.grad is not None


@pytest.mark.parametrize("double_q", [True, False])
def test_update_td_target_by_hand(double_q):
    """One update's td loss is ``mean (Q_jt(s, u) - y)^2``, ``y = r + gamma Qbar_jt(s', ubar')``
    with ``ubar'`` the online agents' greedy next joint action under double Q, else the
    target agents', and ``Qbar_jt`` the target network (moved apart from the online one)."""
    torch.manual_seed(0)
    envs = make_vec_env("climbing", 1)                   # 2 agents, 3 actions
    algorithm = Qtran(QtranConfig(hidden=(8,), joint_hidden=(8,), gamma=0.9, double_q=double_q,
                                  standardise_rewards=False), envs)
    move_apart(algorithm.target, scale=1.0)
    batch = random_batch(envs)
    nets_before = copy.deepcopy(algorithm.nets)
    metrics = algorithm.update(batch)
    with torch.no_grad():
        online = nets_before.agents(batch.next_obs).argmax(-1)            # [B, n]
        targets = algorithm.target.agents(batch.next_obs).argmax(-1)
        assert not torch.equal(online, targets)           # the choice matters in this batch
        chosen = online if double_q else targets
        y = batch.reward + 0.9 * algorithm.target.joint.joint_q(batch.next_state, chosen)
        expected = (nets_before.joint.joint_q(batch.state, batch.actions) - y).pow(2).mean()
    assert float(metrics["loss_td"]) == pytest.approx(float(expected), rel=1e-5)


def test_update_alone_fits_the_joint_payoff():
    torch.manual_seed(0)
    envs = make_vec_env("coordination", 1)
    algorithm = Qtran(QtranConfig(hidden=(32,), joint_hidden=(32,), lr=1e-2,
                                  standardise_rewards=False), envs)
    g = np.random.default_rng(0)
    actions = torch.as_tensor(g.integers(0, 2, (32, 2)))
    payoff = torch.tensor([[0.0, -5.0], [-5.0, 10.0]])
    batch = Batch(state=torch.ones(32, 1), actions=actions,
                  reward=payoff[actions[:, 0], actions[:, 1]], next_state=torch.ones(32, 1),
                  terminated=torch.ones(32), steps=torch.ones(32, dtype=torch.int64),
                  obs=torch.ones(32, 2, 1), next_obs=torch.ones(32, 2, 1))
    first = algorithm.update(batch)
    for _ in range(300):
        last = algorithm.update(batch)
    assert set(first) == {"loss_td", "loss_opt", "loss_nopt", "q_taken"}
    assert float(last["loss_td"]) < 0.01 * float(first["loss_td"])
    joint = algorithm.nets.joint.joint_q(torch.ones(4, 1), torch.tensor([[0, 0], [0, 1],
                                                                         [1, 0], [1, 1]]))
    assert joint.tolist() == pytest.approx([0.0, -5.0, -5.0, 10.0], abs=0.2)
    assert algorithm.agent.act(np.ones((2, 1))).tolist() == [1, 1]


def test_solves_coordination_by_default():
    result = spnpolicy.train("qtran", "coordination", seed=0)
    assert result.eval["success_rate"] == 1.0
    assert tuple(result.agent.act(np.ones((1, 2, 1)))[0]) == (1, 1)
    assert {"loss_td", "loss_opt", "loss_nopt", "epsilon"} <= set(result.eval)


@pytest.mark.parametrize("key, value", [("joint_hidden", (0,)), ("nopt_min_loss_coef", -0.1),
                                        ("opt_loss_coef", float("nan")), ("lr", 0.0)])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        spnpolicy.train("qtran", "coordination", **{key: value})
