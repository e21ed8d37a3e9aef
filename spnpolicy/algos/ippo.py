"""``ippo``: independent PPO (de Witt et al. 2020), EPyMARL's ``ppo_learner``.

Every agent ``i`` has a policy ``pi_i(u_i | o_i)`` and a critic ``V_i(o_i)`` (shared
networks fed the agent id). Per rollout, with ``pi_old`` the policy that collected it:

- critic targets ``y``: n-step returns bootstrapped from the target critic (or
  lambda-returns with ``returns="gae"``), computed once;
- ``epochs`` passes over the rollout, each split into ``minibatches`` random minibatches;
  in each: advantage ``A = y - V_i`` with the critic before its step; critic loss
  ``mean (V_i - y)^2``; actor loss, the clipped surrogate
  ``-mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A)) - c H(pi_i)``, ``rho = pi_i / pi_old``;
- a Polyak step of the target critic after the epochs.

Which variant, and why: EPyMARL's (5-step returns, no GAE, the whole rollout per epoch,
the advantage recomputed from the current critic every epoch) is the default, because it is
the published baseline (Papoudakis et al. 2021, EPyMARL's benchmark) and it shares its
targets with ia2c and maa2c, so the four differ only in the actor loss and the critic
input. BenchMARL's
variant is ``returns="gae"`` with ``minibatches > 1``. ``mappo``
(:mod:`spnpolicy.algos.mappo`) is this learner with a critic on the global state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spnpolicy.algos.config import AlgorithmSpec, checked, integer, number
from spnpolicy.algos.onpolicy_common import (ENV_DEFAULTS, ON_POLICY, OnPolicyConfig,
                                             OnPolicyLearner)
from spnpolicy.training.onpolicy import Rollout
from spnpolicy.training.optim import gradient_step

__all__ = ["EpochsConfig", "PPO_ENV_DEFAULTS", "PPOConfig", "PPOLearner", "SPECS",
           "clipped_surrogate_loss", "minibatch_indices", "taken_log_probs"]


@dataclass(frozen=True)
class EpochsConfig(OnPolicyConfig):
    """Fields of the learners that make several passes over each rollout (ippo, mappo, dpo,
    mdpo; EPyMARL's PPO: lr 3e-4, 4 epochs, entropy 0.001, 5-step returns)."""

    lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic."""
    entropy_coef: float = 0.001
    """Weight of the policy-entropy bonus in the actor loss."""
    epochs: int = checked(4, integer(1))
    """Passes over each rollout."""
    minibatches: int = checked(1, integer(1))
    """Random minibatches per epoch (1: the whole rollout, as EPyMARL)."""


@dataclass(frozen=True)
class PPOConfig(EpochsConfig):
    """Hyperparameters of ippo and mappo (EPyMARL's, with clip 0.2)."""

    clip: float = checked(0.2, number(0.0, 1.0, low_open=True))
    """PPO's ratio clipping epsilon."""


#: The shared on-policy defaults; on the one-step games, rollouts of 5 steps per copy (40
#: rows) so that the 4 epochs per update cost about what ia2c's 250 updates do.
PPO_ENV_DEFAULTS = ENV_DEFAULTS | {"matrix": ENV_DEFAULTS["matrix"] | {"rollout_steps": 5}}


def clipped_surrogate_loss(log_pi: torch.Tensor, old_log_pi: torch.Tensor,
                           advantage: torch.Tensor, clip: float) -> torch.Tensor:
    """``-mean(min(rho A, clip(rho, 1 - clip, 1 + clip) A))``, ``rho = exp(log_pi - old_log_pi)``.

    All arguments ``[...]`` (log-probabilities of the taken actions; ``advantage`` constant).
    """
    ratio = torch.exp(log_pi - old_log_pi.detach())
    advantage = advantage.detach()
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantage
    return -torch.min(ratio * advantage, clipped).mean()


def minibatch_indices(rows: int, minibatches: int) -> list[torch.Tensor]:
    """A random partition of ``range(rows)`` into ``minibatches`` near-equal index sets
    (torch's global generator, which the loop's checkpoints restore)."""
    if minibatches == 1:
        return [torch.arange(rows)]
    return list(torch.randperm(rows).chunk(min(minibatches, rows)))


def taken_log_probs(logits: torch.Tensor,
                    actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log pi(u)`` ``[...]`` of ``actions`` and the entropies ``H(pi)`` ``[...]``."""
    log_pi = F.log_softmax(logits, -1)
    return (log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1),
            -(log_pi.exp() * log_pi).sum(-1))


class PPOLearner(OnPolicyLearner):
    """Clipped-ratio policy updates over ``epochs``, critic on ``cfg.critic_input``.

    dpo and mdpo subclass it and replace :meth:`actor_loss` (and :meth:`advantages`,
    :meth:`after_update`); the epochs, minibatches and critic steps are this class's.
    """

    def advantages(self, advantage: torch.Tensor) -> torch.Tensor:
        """The advantages the actor loss sees (PPO: as estimated)."""
        return advantage

    def actor_loss(self, logits: torch.Tensor, old_logits: torch.Tensor, actions: torch.Tensor,
                   advantage: torch.Tensor, rollout: Rollout
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clipped surrogate minus the entropy bonus; rows ``[M, n]``, logits ``[M, n, k]``."""
        log_pi, entropy = taken_log_probs(logits, actions)
        old_log_pi, _ = taken_log_probs(old_logits, actions)
        loss = (clipped_surrogate_loss(log_pi, old_log_pi, advantage, self.cfg.clip)
                - self.cfg.entropy_coef * entropy.mean())
        ratio = torch.exp(log_pi.detach() - old_log_pi)
        return loss, {"entropy": entropy.mean(),
                      "ratio_clipped": ((ratio - 1).abs() > self.cfg.clip).float().mean()}

    def after_update(self, metrics: dict[str, float]) -> None:
        """Hook run once per rollout after the epochs (dpo adapts its penalties here)."""

    def update(self, rollout: Rollout) -> dict[str, float]:
        cfg = self.cfg
        targets = self.default_targets(rollout, self.team_reward(rollout)).flatten(0, 1)
        state, obs = rollout.state.flatten(0, 1), rollout.obs.flatten(0, 1)      # rows = T*E
        actions = rollout.actions.flatten(0, 1)
        with torch.no_grad():
            old_logits = self.agent.logits(obs)                                  # pi_old
        totals: dict[str, float] = {}
        steps = 0
        for _ in range(cfg.epochs):
            for idx in minibatch_indices(targets.shape[0], cfg.minibatches):
                # critic: advantage with the critic before its step
                values = self.values(self.critic, state[idx], obs[idx])          # [M, n]
                advantage = self.advantages((targets[idx] - values).detach())
                loss_critic = F.mse_loss(values, targets[idx])
                gradient_step(self.optimizers["critic"], loss_critic, cfg.max_grad_norm)

                # actor
                loss_actor, extra = self.actor_loss(self.agent.logits(obs[idx]), old_logits[idx],
                                                    actions[idx], advantage, rollout)
                gradient_step(self.optimizers["actor"], loss_actor, cfg.max_grad_norm)
                for key, value in {"loss_critic": loss_critic, "loss_actor": loss_actor,
                                   **extra}.items():
                    totals[key] = totals.get(key, 0.0) + float(value.detach())
                steps += 1
        self.update_target()
        metrics = {key: value / steps for key, value in totals.items()}
        self.after_update(metrics)
        return metrics


SPECS = (
    AlgorithmSpec("ippo", "independent PPO: clipped-ratio shared-parameter actors, critics on "
                  "each agent's observation", PPOConfig, PPOLearner, {"critic_input": "obs"},
                  PPO_ENV_DEFAULTS, **ON_POLICY),
)
