"""``dpo``: decentralised policy optimisation (Su & Lu 2022, "Decentralized Policy
Optimization"; PKU-RL/DPO's penalty method), on the epochs of :mod:`spnpolicy.algos.ippo`.

Fully decentralised: every agent ``i`` has ``pi_i(u_i | o_i)`` and a critic ``V_i(o_i)``
(shared networks fed the agent id). Each agent's surrogate replaces PPO's clipping by the
two divergence penalties of DPO's lower bound on the joint improvement, with ``pi_old`` the
policy that collected the rollout and ``D_i = KL(pi_old_i(. | o_i) || pi_i(. | o_i))``
(exact, per state):

    L_i = -mean(rho_i A_i) + beta_sqrt_i mean(sqrt(D_i)) + beta_kl_i mean(D_i)

averaged over agents (minus ``entropy_coef`` times the mean policy entropy: 0 by default,
DPO's objective has no entropy term), with advantages ``A_i`` standardised over the rollout
(as DPO's code).
Both coefficients adapt per agent after each rollout's epochs, as PPO's adaptive KL
penalty: halved (divided by ``beta_factor``) when the mean penalty term fell below
``target / kl_tolerance``, doubled when it rose above ``target * kl_tolerance``, and kept in
``[beta_min, beta_max]``; the target is ``kl_target`` for ``D`` and ``sqrt(kl_target)`` for
``sqrt(D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from spnpolicy.algos.config import AlgorithmSpec, checked, number, positive
from spnpolicy.algos.ippo import PPO_ENV_DEFAULTS, EpochsConfig, PPOLearner, taken_log_probs
from spnpolicy.algos.onpolicy_common import ON_POLICY, categorical_kl
from spnpolicy.training.onpolicy import Rollout

__all__ = ["DpoConfig", "DpoLearner", "SPECS", "adapt_coefficient", "dpo_loss"]


@dataclass(frozen=True)
class DpoConfig(EpochsConfig):
    """Hyperparameters of dpo (epochs and learning rates as ippo's)."""

    entropy_coef: float = 0.0
    """Weight of an entropy bonus in the actor loss (DPO's objective has none)."""
    kl_target: float = checked(0.01, positive)
    """Target of each agent's mean KL(pi_old || pi) per rollout (sqrt of it for the sqrt term)."""
    kl_tolerance: float = checked(1.5, number(1.0))
    """A penalty's coefficient changes when its term leaves [target / tol, target * tol]."""
    beta_factor: float = checked(2.0, number(1.0))
    """Factor by which a penalty coefficient is raised or lowered."""
    beta_kl: float = checked(1.0, positive)
    """Initial coefficient of the KL penalty."""
    beta_sqrt_kl: float = checked(1.0, positive)
    """Initial coefficient of the sqrt-KL penalty."""
    beta_min: float = checked(1e-4, positive)
    """Lower bound of both coefficients."""
    beta_max: float = checked(1e4, positive)
    """Upper bound of both coefficients."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_min > self.beta_max:
            raise ValueError(f"beta_min must be <= beta_max, got beta_min={self.beta_min!r} "
                             f"and beta_max={self.beta_max!r}")


def dpo_loss(logits: torch.Tensor, old_logits: torch.Tensor, actions: torch.Tensor,
             advantage: torch.Tensor, beta_sqrt_kl: torch.Tensor, beta_kl: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's loss, averaged over agents, and each agent's mean ``sqrt(D)`` and ``D`` ``[n]``.

    ``logits``, ``old_logits`` ``[M, n, k]``; ``actions``, ``advantage`` ``[M, n]``;
    ``beta_*`` ``[n]``. ``D = KL(pi_old || pi)`` per row and agent.
    """
    log_pi, _ = taken_log_probs(logits, actions)
    old_log_pi, _ = taken_log_probs(old_logits, actions)
    surrogate = (torch.exp(log_pi - old_log_pi.detach()) * advantage.detach()).mean(0)   # [n]
    kl = categorical_kl(old_logits.detach(), logits)                                 # [M, n]
    sqrt_kl = torch.sqrt(kl.clamp_min(0.0) + 1e-12).mean(0)
    kl = kl.mean(0)
    return (-surrogate + beta_sqrt_kl * sqrt_kl + beta_kl * kl).mean(), sqrt_kl, kl


def adapt_coefficient(beta: torch.Tensor, term: torch.Tensor, target: float, tolerance: float,
                      factor: float, low: float, high: float) -> torch.Tensor:
    """Per agent: ``beta / factor`` where ``term < target / tolerance``, ``beta * factor``
    where ``term > target * tolerance``, else ``beta``; clamped to ``[low, high]``."""
    beta = torch.where(term < target / tolerance, beta / factor, beta)
    beta = torch.where(term > target * tolerance, beta * factor, beta)
    return beta.clamp(low, high)


class DpoLearner(PPOLearner):
    """ippo's epochs with DPO's penalised surrogate and per-agent adaptive coefficients."""

    def __init__(self, cfg: DpoConfig, envs: Any) -> None:
        super().__init__(cfg, envs)
        self.beta_kl = torch.full((self.num_agents,), cfg.beta_kl, dtype=torch.float64)
        self.beta_sqrt_kl = torch.full((self.num_agents,), cfg.beta_sqrt_kl, dtype=torch.float64)
        self._last_terms: tuple[torch.Tensor, torch.Tensor] | None = None

    def advantages(self, advantage: torch.Tensor) -> torch.Tensor:
        return (advantage - advantage.mean()) / (advantage.std(unbiased=False) + 1e-5)

    def actor_loss(self, logits, old_logits, actions, advantage, rollout: Rollout):
        loss, sqrt_kl, kl = dpo_loss(logits, old_logits, actions, advantage,
                                     self.beta_sqrt_kl.to(logits), self.beta_kl.to(logits))
        self._last_terms = (sqrt_kl.detach().double().cpu(), kl.detach().double().cpu())
        entropy = taken_log_probs(logits, actions)[1].mean()
        metrics = {"kl": kl.mean(), "sqrt_kl": sqrt_kl.mean(), "entropy": entropy}
        return loss - self.cfg.entropy_coef * entropy, metrics

    def after_update(self, metrics: dict[str, float]) -> None:
        """Adapt both coefficients from the last minibatch's penalty terms."""
        cfg = self.cfg
        sqrt_kl, kl = self._last_terms
        bounds = (cfg.kl_tolerance, cfg.beta_factor, cfg.beta_min, cfg.beta_max)
        self.beta_kl = adapt_coefficient(self.beta_kl, kl, cfg.kl_target, *bounds)
        self.beta_sqrt_kl = adapt_coefficient(self.beta_sqrt_kl, sqrt_kl,
                                              math.sqrt(cfg.kl_target), *bounds)
        metrics["beta_kl"] = float(self.beta_kl.mean())
        metrics["beta_sqrt_kl"] = float(self.beta_sqrt_kl.mean())

    def extra_state(self) -> dict[str, Any]:
        return super().extra_state() | {"beta_kl": self.beta_kl.tolist(),
                                        "beta_sqrt_kl": self.beta_sqrt_kl.tolist()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.beta_kl = torch.tensor(state["beta_kl"], dtype=torch.float64)
        self.beta_sqrt_kl = torch.tensor(state["beta_sqrt_kl"], dtype=torch.float64)


SPECS = (
    AlgorithmSpec("dpo", "decentralised policy optimisation: per-agent surrogate with "
                  "adaptive KL and sqrt-KL penalties", DpoConfig, DpoLearner, {}, PPO_ENV_DEFAULTS,
                  **ON_POLICY),
)
