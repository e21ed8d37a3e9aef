"""``pac``: Pareto actor-critic (Christianos et al. 2023, "Pareto Actor-Critic for
Equilibrium Selection in Multi-Agent Reinforcement Learning"), after its EPyMARL learner.

Each agent ``i`` has a joint-action critic ``Q_i(s, u_i, u_-i)`` (one shared network fed the
state and ``i``'s id, outputting the ``k**n`` joint-action table) and a separate state value
``V_i(s)``. The Pareto step is optimism about the others: they are assumed to play the joint
action best for ``i`` given ``u_i``,

    Qmax_i(s, u_i) = max_{u_-i} Q_i(s, u_i, u_-i),

which is used both in the critic targets and in the advantage. Per rollout:

- targets ``y``: n-step returns bootstrapped from ``Qmax``-bar``_i(s', u'_i)`` of the target
  critic (``u'_i`` the next action taken, or drawn from the policy where the rollout has none);
- critic loss ``mean (Q_i(s, u) - y)^2 + mean (V_i(s) - y)^2``;
- advantage ``A_i = Qmax_i(s, u_i) - V_i(s)`` (critic before its step, no gradient);
- actor loss ``-mean(A_i log pi_i(u_i)) - c_t H(pi_i)``, with ``c_t`` annealed linearly from
  ``entropy_start`` to ``entropy_end`` over the first ``entropy_anneal_fraction`` of the budget
  (``total_steps``: a run resumed with a larger budget follows the new schedule from there).

The joint table has ``k**n`` entries per agent: small teams only (``MAX_JOINT_ACTIONS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import AlgorithmSpec, checked, non_negative, rate
from spnpolicy.algos.ia2c import actor_step
from spnpolicy.algos.onpolicy_common import (ENV_DEFAULTS, OnPolicyConfig, OnPolicyLearner,
                                             ON_POLICY, PerAgentNet)
from spnpolicy.training.onpolicy import Rollout
from spnpolicy.training.optim import gradient_step

__all__ = ["MAX_JOINT_ACTIONS", "PacConfig", "PacLearner", "SPECS", "entropy_schedule",
           "joint_index", "max_over_others"]

#: Largest joint-action table ``k**n`` a PAC critic outputs per agent.
MAX_JOINT_ACTIONS = 4096


@dataclass(frozen=True)
class PacConfig(OnPolicyConfig):
    """Hyperparameters of pac (the others as ia2c's)."""

    critic_input: str = "state"
    """The critics see the global state."""
    entropy_start: float = checked(0.1, non_negative)
    """Entropy coefficient at step 0 (large: explore while the optimistic critic forms)."""
    entropy_end: float = checked(0.001, non_negative)
    """Entropy coefficient after annealing."""
    entropy_anneal_fraction: float = checked(0.8, rate)
    """Fraction of total_steps over which the coefficient falls linearly to entropy_end."""


def entropy_schedule(step: int, cfg: PacConfig) -> float:
    """The entropy coefficient after ``step`` env steps (linear, then constant)."""
    fraction = min(step / (cfg.entropy_anneal_fraction * cfg.total_steps), 1.0)
    return cfg.entropy_start + fraction * (cfg.entropy_end - cfg.entropy_start)


def joint_index(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """``[..., n]`` joint actions -> ``[...]`` indices into a ``k**n`` table, agent 0 the most
    significant digit."""
    n = actions.shape[-1]
    weights = num_actions ** torch.arange(n - 1, -1, -1, device=actions.device)
    return (actions * weights).sum(-1)


def max_over_others(table: torch.Tensor, num_agents: int, num_actions: int) -> torch.Tensor:
    """``[..., n, k**n]`` per-agent joint tables -> ``[..., n, k]``: entry ``(i, u)`` is
    ``max_{u_-i} Q_i(u_i = u, u_-i)``."""
    lead = table.shape[:-2]
    cube = table.reshape(*lead, num_agents, *(num_actions,) * num_agents)
    out = []
    for i in range(num_agents):
        own = cube[..., i, *(slice(None),) * num_agents].movedim(len(lead) + i, len(lead))
        out.append(own.reshape(*lead, num_actions, -1).max(-1).values)
    return torch.stack(out, dim=-2)


class PacLearner(OnPolicyLearner):
    """Decentralised actors, per-agent joint-action critics ``Q_i`` and values ``V_i``."""

    def build_critic(self) -> nn.Module:
        joint = self.num_actions ** self.num_agents
        if joint > MAX_JOINT_ACTIONS:
            raise ValueError(f"pac's critics output all k**n = {self.num_actions}**"
                             f"{self.num_agents} = {joint} joint actions per agent; at most "
                             f"{MAX_JOINT_ACTIONS} are supported (use fewer agents or actions)")
        cfg = self.cfg
        return nn.ModuleDict({
            "q": PerAgentNet(self.state_dim, self.num_agents, joint, cfg.critic_hidden,
                             cfg.share_parameters),
            "v": PerAgentNet(self.state_dim, self.num_agents, 1, cfg.critic_hidden,
                             cfg.share_parameters)})

    def optimistic(self, critic: nn.Module, state: torch.Tensor,
                   actions: torch.Tensor) -> torch.Tensor:
        """``Qmax_i(s, u_i)`` ``[..., n]`` at each agent's own action ``u_i``."""
        table = critic["q"](self.critic_inputs(state, None))
        best = max_over_others(table, self.num_agents, self.num_actions)         # [..., n, k]
        return best.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def update(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        # targets from the optimistic target critic
        reward = self.team_reward(rollout)
        with torch.no_grad():
            value = self.optimistic(self.target_critic, rollout.state, rollout.actions)
            next_value = self.optimistic(self.target_critic, rollout.next_state,
                                         rollout.next_actions)
            targets = self.targets(reward, value, next_value, rollout)            # [T, E, n]

        # critics: Q_i at the joint action taken, and V_i; the advantage before their step
        inputs = self.critic_inputs(rollout.state, None)
        table = self.critic["q"](inputs)                                         # [T, E, n, k**n]
        index = joint_index(rollout.actions, self.num_actions)                   # [T, E]
        q_taken = table.gather(-1, index[..., None, None].expand(*index.shape, self.num_agents, 1)
                               ).squeeze(-1)
        v = self.critic["v"](inputs).squeeze(-1)
        best = max_over_others(table.detach(), self.num_agents, self.num_actions)
        advantage = (best.gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1) - v).detach()
        loss_critic = F.mse_loss(q_taken, targets) + F.mse_loss(v, targets)
        gradient_step(self.optimizers["critic"], loss_critic, self.cfg.max_grad_norm)

        # actor with the annealed entropy bonus
        coef = entropy_schedule(rollout.step, self.cfg)
        return {"loss_critic": loss_critic} | actor_step(
            self, advantage, self.agent.logits(rollout.obs), rollout.actions, coef) | {
            "entropy_coef": coef}


SPECS = (
    AlgorithmSpec("pac", "Pareto actor-critic: per-agent joint-action critics, optimistic "
                  "max over the others' actions, annealed entropy", PacConfig, PacLearner,
                  {"critic_input": "state"}, ENV_DEFAULTS, **ON_POLICY),
)
