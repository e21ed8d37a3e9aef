"""The on-policy losses and one update of each learner, against hand-computed values."""

import math

import pytest
import torch

from spnpolicy.algos.ia2c import A2CConfig, A2CLearner, policy_gradient_loss
from spnpolicy.algos.ippo import PPOConfig, PPOLearner, clipped_surrogate_loss
from spnpolicy.algos.onpolicy_common import PerAgentNet, categorical_kl
from spnpolicy.training.onpolicy import Rollout
from tests.update_helpers import move_apart


class FakeEnvs:
    num_agents, num_actions, obs_dim, state_dim = 2, 3, 4, 5


def tiny_rollout(T=2, E=3, n=2, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Rollout(state=torch.randn(T, E, 5, generator=g),
                   obs=torch.randn(T, E, n, 4, generator=g),
                   actions=torch.randint(k, (T, E, n), generator=g),
                   reward=torch.randn(T, E, generator=g),
                   next_state=torch.randn(T, E, 5, generator=g),
                   next_obs=torch.randn(T, E, n, 4, generator=g),
                   next_actions=torch.randint(k, (T, E, n), generator=g),
                   terminated=torch.zeros(T, E), done=torch.zeros(T, E), step=0)


def test_policy_gradient_loss_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    actions = torch.tensor([0, 2])
    advantage = torch.tensor([2.0, -1.0])
    loss, entropy = policy_gradient_loss(advantage, logits, actions, entropy_coef=0.1)
    h0 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    h1 = -(0.1 * math.log(0.1) + 0.2 * math.log(0.2) + 0.7 * math.log(0.7))
    expected = -(2.0 * math.log(0.5) - 1.0 * math.log(0.7)) / 2 - 0.1 * (h0 + h1) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(entropy) == pytest.approx((h0 + h1) / 2, rel=1e-5)


def test_ppo_clip_by_hand():
    """Ratios 1.5, 0.5, 1.1, 0.7 with advantages +1, +1, -2, -1 and eps 0.2:
    min(rho A, clip(rho) A) = 1.2, 0.5, -2.2, -0.8."""
    old = torch.zeros(4)
    log_pi = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7]))
    advantage = torch.tensor([1.0, 1.0, -2.0, -1.0])
    loss = clipped_surrogate_loss(log_pi, old, advantage, clip=0.2)
    assert float(loss) == pytest.approx(-(1.2 + 0.5 - 2.2 - 0.8) / 4, rel=1e-6)


def test_ppo_clip_gradient_is_zero_where_clipped():
    log_pi = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7])).requires_grad_()
    advantage = torch.tensor([1.0, 1.0, -2.0, -1.0])
    clipped_surrogate_loss(log_pi, torch.zeros(4), advantage, 0.2).backward()
    # sample 0 (rho > 1 + eps, A > 0) and 3 (rho < 1 - eps, A < 0) are clipped: no gradient
    assert log_pi.grad[0] == 0 and log_pi.grad[3] == 0
    assert log_pi.grad[1] == pytest.approx(-0.5 / 4) and log_pi.grad[2] == pytest.approx(2.2 / 4)


def test_categorical_kl_by_hand():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(categorical_kl(p.log(), q.log())) == pytest.approx(expected, rel=1e-6)


def test_per_agent_net_shared_and_separate():
    x = torch.randn(7, 3, 4)
    for shared in (True, False):
        net = PerAgentNet(4, 3, 2, (8,), shared)
        assert net(x).shape == (7, 3, 2)
    shared = PerAgentNet(4, 3, 2, (8,), True)
    same = x[:, :1].expand(-1, 3, -1)    # equal inputs: agents still differ by their id
    assert not torch.allclose(shared(same)[:, 0], shared(same)[:, 1])


def _manual_a2c_update(learner, rollout, cfg):
    """ia2c's update written out: n-step targets of the target critic, advantage with the
    critic before its step."""
    with torch.no_grad():
        next_v = learner.target_critic(rollout.next_obs).squeeze(-1)
        r = rollout.reward
        # T=2, q_nstep=5, no episode ends: G_0 = r0 + g r1 + g^2 V(s'_1), G_1 = r1 + g V(s'_1)
        g = cfg.gamma
        targets = torch.stack([r[0, :, None] + g * r[1, :, None] + g * g * next_v[1],
                               r[1, :, None] + g * next_v[1]])
        values = learner.critic(rollout.obs).squeeze(-1)
    return targets, targets - values


def test_a2c_update_matches_manual_targets():
    torch.manual_seed(0)
    cfg = A2CConfig(standardise_rewards=False, entropy_coef=0.0, lr=0.1)
    learner = A2CLearner(cfg, FakeEnvs())
    move_apart(learner.target_critic)            # the targets read the target critic
    rollout = tiny_rollout()
    targets, advantage = _manual_a2c_update(learner, rollout, cfg)
    logits_before = learner.agent.logits(rollout.obs).detach()
    metrics = learner.update(rollout)
    assert float(metrics["advantage_abs"]) == pytest.approx(float(advantage.abs().mean()), rel=1e-5)
    # the actor stepped along E[A grad log pi]: the taken actions with A > 0 became likelier
    log_pi_before = torch.log_softmax(logits_before, -1).gather(-1, rollout.actions[..., None])
    log_pi_after = torch.log_softmax(learner.agent.logits(rollout.obs), -1).gather(
        -1, rollout.actions[..., None])
    surrogate = lambda lp: float((advantage * lp.detach().squeeze(-1)).mean())  # noqa: E731
    assert surrogate(log_pi_after) > surrogate(log_pi_before)


def test_ppo_update_one_epoch_equals_a2c_on_the_critic():
    """With one epoch, one minibatch and the same seeds, PPO's critic step is A2C's."""
    torch.manual_seed(0)
    a2c = A2CLearner(A2CConfig(standardise_rewards=False), FakeEnvs())
    torch.manual_seed(0)
    ppo = PPOLearner(PPOConfig(standardise_rewards=False, epochs=1, critic_lr=5e-4), FakeEnvs())
    rollout = tiny_rollout()
    a2c.update(rollout)
    ppo.update(rollout)
    for a, b in zip(a2c.critic.parameters(), ppo.critic.parameters(), strict=True):
        torch.testing.assert_close(a, b)
