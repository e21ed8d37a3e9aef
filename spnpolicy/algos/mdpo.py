"""``mdpo``: on-policy mirror-descent policy optimisation (Tomar et al. 2022, "Mirror
Descent Policy Optimization"), per agent, on the epochs of :mod:`spnpolicy.algos.ippo`.

Each rollout ``k`` of ``K`` is one mirror-descent step on every agent's policy: several
gradient steps (``epochs``) on

    L_i = -mean(rho_i A_i) + mean(KL(pi_i(. | o_i) || pi_old_i(. | o_i))) / t_k

with ``rho_i = pi_i(u_i | o_i) / pi_old_i(u_i | o_i)``, ``pi_old`` the policy that
collected the rollout, the KL exact per state (note its direction: new || old, as the
mirror-descent step prescribes), and the step size ``t_k = 1 - (k - 1) / K`` decreasing
linearly from 1 to ``1 / K`` over the run (``t_k = 1 - step / total_steps``, ``step`` the
env steps before the rollout), as MDPO's on-policy schedule (a run resumed with a larger
``total_steps`` follows the new schedule from there). Critics and advantages as
ippo's (``V_i`` on each agent's observation by default); no entropy bonus by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spnpolicy.algos.config import AlgorithmSpec
from spnpolicy.algos.ippo import PPO_ENV_DEFAULTS, EpochsConfig, PPOLearner, taken_log_probs
from spnpolicy.algos.onpolicy_common import ON_POLICY, categorical_kl
from spnpolicy.training.onpolicy import Rollout

__all__ = ["MdpoConfig", "MdpoLearner", "SPECS", "mdpo_loss", "step_size"]


@dataclass(frozen=True)
class MdpoConfig(EpochsConfig):
    """Hyperparameters of mdpo (epochs and learning rates as ippo's)."""

    entropy_coef: float = 0.0
    """Weight of an entropy bonus in the actor loss (MDPO has none)."""


def step_size(step: int, total_steps: int) -> float:
    """``t_k = 1 - step / total_steps``: 1 for the first rollout, decreasing linearly."""
    return 1.0 - step / total_steps


def mdpo_loss(logits: torch.Tensor, old_logits: torch.Tensor, actions: torch.Tensor,
              advantage: torch.Tensor, t_k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``-mean(rho A) + mean(KL(pi || pi_old)) / t_k`` and the mean KL.

    ``logits``, ``old_logits`` ``[M, n, k]``; ``actions``, ``advantage`` ``[M, n]``.
    """
    log_pi, _ = taken_log_probs(logits, actions)
    old_log_pi, _ = taken_log_probs(old_logits, actions)
    ratio = torch.exp(log_pi - old_log_pi.detach())
    kl = categorical_kl(logits, old_logits.detach()).mean()
    return -(ratio * advantage.detach()).mean() + kl / t_k, kl


class MdpoLearner(PPOLearner):
    """ippo's epochs with the mirror-descent objective."""

    def actor_loss(self, logits, old_logits, actions, advantage, rollout: Rollout):
        t_k = step_size(rollout.step, self.cfg.total_steps)
        loss, kl = mdpo_loss(logits, old_logits, actions, advantage, t_k)
        entropy = taken_log_probs(logits, actions)[1].mean()
        return loss - self.cfg.entropy_coef * entropy, {"kl": kl, "entropy": entropy,
                                                        "step_size": torch.tensor(t_k)}


SPECS = (
    AlgorithmSpec("mdpo", "mirror-descent policy optimisation: ratio * A - KL(new || old) / "
                  "t_k, t_k decreasing", MdpoConfig, MdpoLearner, {}, PPO_ENV_DEFAULTS,
                  **ON_POLICY),
)
