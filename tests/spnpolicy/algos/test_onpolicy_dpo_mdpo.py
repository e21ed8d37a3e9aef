"""DPO's penalised surrogate and adaptive coefficients, MDPO's mirror-descent objective."""

import math

import pytest
import torch

from spnpolicy.algos.dpo import DpoConfig, DpoLearner, adapt_coefficient, dpo_loss
from spnpolicy.algos.mdpo import MdpoConfig, MdpoLearner, mdpo_loss, step_size
from tests.spnpolicy.algos.test_onpolicy_losses import FakeEnvs, tiny_rollout

# one row, two agents, two actions: new pi = (0.5, 0.5) and (0.8, 0.2); old (0.6, 0.4) twice
NEW = torch.log(torch.tensor([[[0.5, 0.5], [0.8, 0.2]]]))
OLD = torch.log(torch.tensor([[[0.6, 0.4], [0.6, 0.4]]]))
ACTIONS = torch.tensor([[0, 1]])
ADVANTAGE = torch.tensor([[2.0, -1.0]])


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_dpo_loss_by_hand():
    kl0, kl1 = _kl([0.6, 0.4], [0.5, 0.5]), _kl([0.6, 0.4], [0.8, 0.2])  # KL(old || new)
    rho = [0.5 / 0.6, 0.2 / 0.4]
    beta_sqrt, beta_kl = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])
    loss, sqrt_kl, kl = dpo_loss(NEW, OLD, ACTIONS, ADVANTAGE, beta_sqrt, beta_kl)
    per_agent = [-rho[0] * 2.0 + 1.0 * math.sqrt(kl0) + 3.0 * kl0,
                 -rho[1] * -1.0 + 2.0 * math.sqrt(kl1) + 0.5 * kl1]
    assert float(loss) == pytest.approx(sum(per_agent) / 2, rel=1e-5)
    assert kl.tolist() == pytest.approx([kl0, kl1], rel=1e-5)
    assert sqrt_kl.tolist() == pytest.approx([math.sqrt(kl0), math.sqrt(kl1)], rel=1e-5)


def test_dpo_coefficients_adapt_per_agent():
    beta = torch.tensor([1.0, 1.0, 1.0, 1e-4])
    term = torch.tensor([0.001, 0.01, 0.1, 0.001])        # below, inside, above, below
    got = adapt_coefficient(beta, term, target=0.01, tolerance=1.5, factor=2.0, low=1e-4,
                            high=10.0)
    assert got.tolist() == pytest.approx([0.5, 1.0, 2.0, 1e-4])


def test_dpo_update_adapts_and_checkpoints_its_coefficients():
    learner = DpoLearner(DpoConfig(kl_target=1e-9, beta_kl=1.0, beta_sqrt_kl=1.0), FakeEnvs())
    metrics = learner.update(tiny_rollout())
    assert metrics["beta_kl"] == 2.0 and metrics["beta_sqrt_kl"] == 2.0   # KL above target
    other = DpoLearner(DpoConfig(), FakeEnvs())
    other.load_state_dict(learner.state_dict())
    assert other.beta_kl.tolist() == [2.0, 2.0]


def test_mdpo_loss_by_hand():
    kl_new_old = (_kl([0.5, 0.5], [0.6, 0.4]) + _kl([0.8, 0.2], [0.6, 0.4])) / 2
    rho = [0.5 / 0.6, 0.2 / 0.4]
    loss, kl = mdpo_loss(NEW, OLD, ACTIONS, ADVANTAGE, t_k=0.25)
    assert float(kl) == pytest.approx(kl_new_old, rel=1e-5)
    assert float(loss) == pytest.approx(-(rho[0] * 2.0 - rho[1]) / 2 + kl_new_old / 0.25,
                                        rel=1e-5)


def test_mdpo_step_size_decreases_linearly():
    assert [step_size(s, 1000) for s in (0, 250, 900)] == pytest.approx([1.0, 0.75, 0.1])


def test_mdpo_first_epoch_has_no_kl_gradient():
    """At pi = pi_old the KL term's gradient vanishes: the first step is the policy gradient."""
    learner = MdpoLearner(MdpoConfig(), FakeEnvs())
    logits = torch.randn(5, 2, 3, requires_grad=True)
    actions, advantage = torch.randint(3, (5, 2)), torch.randn(5, 2)
    loss, kl = mdpo_loss(logits, logits.detach(), actions, advantage, t_k=0.01)
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-7)
    (grad,) = torch.autograd.grad(loss, logits)
    pg = -(advantage * torch.log_softmax(logits, -1).gather(-1, actions[..., None])[..., 0]).mean()
    (expected,) = torch.autograd.grad(pg, logits)
    torch.testing.assert_close(grad, expected)
    assert learner.update(tiny_rollout())["step_size"] == 1.0
