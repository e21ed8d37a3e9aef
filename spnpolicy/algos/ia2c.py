"""``ia2c``: independent advantage actor-critic (EPyMARL's ``actor_critic_learner``).

Every agent ``i`` has a policy ``pi_i(u_i | o_i)`` and a critic ``V_i(o_i)`` (one shared
network each, fed the agent id). Per rollout:

- critic targets ``y_t``: n-step returns (``q_nstep`` steps of the team reward, bootstrapped
  from the *target* critic) or lambda-returns (``returns="gae"``);
- advantage ``A_t = y_t - V_i(o_t)``, with the critic's value *before* its update;
- critic loss ``mean (V_i - y)^2``; actor loss ``-mean(A log pi_i(u_i)) - c H(pi_i)``;
- one Adam step each, then a Polyak step of the target critic.

``maa2c`` (:mod:`spnpolicy.algos.maa2c`) is the same learner with a critic on the global
state. The loop is :func:`spnpolicy.training.onpolicy.train_onpolicy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spnpolicy.algos.config import AlgorithmSpec
from spnpolicy.algos.onpolicy_common import (ENV_DEFAULTS, ON_POLICY, OnPolicyConfig,
                                             OnPolicyLearner)
from spnpolicy.training.onpolicy import Rollout
from spnpolicy.training.optim import gradient_step

__all__ = ["A2CConfig", "A2CLearner", "SPECS", "actor_step", "policy_gradient_loss"]


@dataclass(frozen=True)
class A2CConfig(OnPolicyConfig):
    """Hyperparameters of ia2c and maa2c (EPyMARL: lr 5e-4, entropy 0.01, 5-step returns,
    target critic tau 0.01, standardised rewards)."""


def policy_gradient_loss(advantage: torch.Tensor, logits: torch.Tensor, actions: torch.Tensor,
                         entropy_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``-mean(A log pi(u)) - entropy_coef mean H(pi)`` and the mean entropy.

    ``advantage`` ``[...]`` (constant), ``logits`` ``[..., k]``, ``actions`` ``[...]``.
    """
    log_pi = F.log_softmax(logits, -1)
    log_pi_taken = log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_pi.exp() * log_pi).sum(-1).mean()
    return -(advantage.detach() * log_pi_taken).mean() - entropy_coef * entropy, entropy


def actor_step(learner: OnPolicyLearner, advantage: torch.Tensor, logits: torch.Tensor,
               actions: torch.Tensor, entropy_coef: float) -> dict[str, torch.Tensor]:
    """The actor's step on :func:`policy_gradient_loss` with ``advantage`` (ia2c's, coma's and
    pac's actor), then the Polyak update of the target critic; the actor's metrics."""
    loss_actor, entropy = policy_gradient_loss(advantage, logits, actions, entropy_coef)
    gradient_step(learner.optimizers["actor"], loss_actor, learner.cfg.max_grad_norm)
    learner.update_target()
    return {"loss_actor": loss_actor, "entropy": entropy, "advantage_abs": advantage.abs().mean()}


class A2CLearner(OnPolicyLearner):
    """Actor ``pi_i(u_i | o_i)``, critic ``V_i`` on ``cfg.critic_input``, one update per rollout."""

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        # critic targets (target critic) -> advantage with the critic before its step
        targets = self.default_targets(rollout, self.team_reward(rollout))
        values = self.values(self.critic, rollout.state, rollout.obs)          # [T, E, n]
        advantage = (targets - values).detach()
        loss_critic = F.mse_loss(values, targets)
        gradient_step(self.optimizers["critic"], loss_critic, self.cfg.max_grad_norm)

        # actor: policy gradient with the advantage
        return {"loss_critic": loss_critic} | actor_step(
            self, advantage, self.agent.logits(rollout.obs), rollout.actions,
            self.cfg.entropy_coef)


SPECS = (
    AlgorithmSpec("ia2c", "independent advantage actor-critic: shared-parameter actors, "
                  "critics on each agent's observation", A2CConfig, A2CLearner,
                  {"critic_input": "obs"}, ENV_DEFAULTS, **ON_POLICY),
)
