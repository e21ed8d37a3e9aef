"""``coma``: counterfactual multi-agent policy gradients (Foerster et al. 2018), EPyMARL's
``coma_learner`` on feedforward networks.

A centralised critic ``Q(s, u_-a, .)`` gives, for agent ``a``, the value of each of its
``k`` actions with the others' actions ``u_-a`` fixed: its input is the global state, the
one-hot joint action with agent ``a``'s block zeroed, and ``a``'s id (one shared network).
Per rollout:

- critic targets: TD(lambda) returns of the target critic's ``Qbar(s', u')`` (the next
  joint action taken, or drawn from the policy where the rollout has none), i.e.
  ``returns="gae"`` with ``gae_lambda = 0.8`` as EPyMARL's ``td_lambda``;
- critic loss ``mean (Q(s, u_-a, u_a) - y)^2``;
- counterfactual advantage, with the critic before its step and no gradient:
  ``A_a = Q(s, u_-a, u_a) - sum_u pi_a(u | o_a) Q(s, u_-a, u)``;
- actor loss ``-mean(A_a log pi_a(u_a)) - c H(pi_a)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import AlgorithmSpec
from spnpolicy.algos.ia2c import actor_step
from spnpolicy.algos.onpolicy_common import (ENV_DEFAULTS, OnPolicyConfig, OnPolicyLearner,
                                             ON_POLICY, PerAgentNet)
from spnpolicy.training.onpolicy import Rollout
from spnpolicy.training.optim import gradient_step

__all__ = ["ComaConfig", "ComaLearner", "SPECS", "counterfactual_advantage",
           "others_actions"]


@dataclass(frozen=True)
class ComaConfig(OnPolicyConfig):
    """Hyperparameters of coma (EPyMARL: lr 5e-4, TD(lambda = 0.8) targets, entropy 0.001)."""

    returns: str = "gae"
    """Critic targets: gae (TD(lambda) returns of the target critic) or nstep."""
    gae_lambda: float = 0.8
    """TD(lambda) parameter of the critic targets (EPyMARL's td_lambda)."""
    entropy_coef: float = 0.001
    """Weight of the policy-entropy bonus in the actor loss."""
    critic_input: str = "state"
    """The critic sees the global state (and the others' actions)."""


def others_actions(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """``[..., n]`` joint actions -> ``[..., n, n * k]``: row ``a`` is the one-hot joint
    action with agent ``a``'s block zeroed (what agent ``a``'s counterfactual critic sees)."""
    n = actions.shape[-1]
    onehot = F.one_hot(actions, num_actions).to(torch.float32).flatten(-2)      # [..., n*k]
    mask = 1.0 - torch.eye(n, device=actions.device).repeat_interleave(num_actions, dim=1)
    return onehot.unsqueeze(-2) * mask                                          # [..., n, n*k]


def counterfactual_advantage(q_all: torch.Tensor, probs: torch.Tensor,
                             actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = Q(u_a) - sum_u pi(u) Q(u)`` and the baseline, both ``[...]`` and detached.

    ``q_all`` and ``probs`` ``[..., k]`` (one agent's counterfactual values and policy),
    ``actions`` ``[...]``.
    """
    q_all, probs = q_all.detach(), probs.detach()
    baseline = (probs * q_all).sum(-1)
    return q_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1) - baseline, baseline


class ComaLearner(OnPolicyLearner):
    """Decentralised actors with one centralised counterfactual critic."""

    def build_critic(self) -> nn.Module:
        return PerAgentNet(self.state_dim + self.num_agents * self.num_actions, self.num_agents,
                           self.num_actions, self.cfg.critic_hidden, self.cfg.share_parameters)

    def q_values(self, critic: nn.Module, state: torch.Tensor,
                 actions: torch.Tensor) -> torch.Tensor:
        """``Q(s, u_-a, .)`` ``[..., n, k]`` for every agent ``a``."""
        state = self.critic_inputs(state, None)
        return critic(torch.cat([state, others_actions(actions, self.num_actions)], dim=-1))

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        # critic targets: TD(lambda) of the target critic on the taken and the next actions
        reward = self.team_reward(rollout)
        with torch.no_grad():
            def taken(q, actions):
                return q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

            value = taken(self.q_values(self.target_critic, rollout.state, rollout.actions),
                          rollout.actions)
            next_value = taken(self.q_values(self.target_critic, rollout.next_state,
                                             rollout.next_actions), rollout.next_actions)
            targets = self.targets(reward, value, next_value, rollout)            # [T, E, n]

        # critic step; the counterfactual values before it
        q_all = self.q_values(self.critic, rollout.state, rollout.actions)        # [T, E, n, k]
        q_taken = q_all.gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1)
        loss_critic = F.mse_loss(q_taken, targets)
        gradient_step(self.optimizers["critic"], loss_critic, self.cfg.max_grad_norm)

        # actor: counterfactual advantage
        logits = self.agent.logits(rollout.obs)
        advantage, _ = counterfactual_advantage(q_all, torch.softmax(logits, -1), rollout.actions)
        return {"loss_critic": loss_critic} | actor_step(self, advantage, logits, rollout.actions,
                                                         self.cfg.entropy_coef)


SPECS = (
    AlgorithmSpec("coma", "counterfactual multi-agent policy gradients: centralised critic "
                  "Q(s, u_-a, .), baseline sum_u pi(u) Q", ComaConfig, ComaLearner,
                  {"critic_input": "state"}, ENV_DEFAULTS, **ON_POLICY),
)
