"""maddpg: multi-agent DDPG (Lowe et al. 2017) for discrete actions.

Every agent ``i`` has a policy of logits ``l_i(o_i)`` (one network shared by the agents, fed
a one-hot of the agent id) and a centralised critic ``Q_i(s, u_1, ..., u_n)`` on the global
state and every agent's one-hot action (one network shared by the agents, fed the agent id;
with the team reward each ``Q_i`` regresses the same return). Polyak target copies of both.
As in the discrete-action MADDPG of the original code and EPyMARL/BenchMARL:

- the own action in the actor loss is a straight-through Gumbel-softmax sample: the forward
  pass is the one-hot of ``argmax(l_i + g)`` (``g`` Gumbel noise), the backward pass the
  gradient of ``softmax((l_i + g) / temperature)``;
- actor: ``mean_{B, i} -Q_i(s, u_i^ST, u_-i)`` with the others' actions ``u_-i`` as taken
  (detached), plus ``logits_reg * mean(l_i^2)`` (the original code's 1e-3 regulariser);
- critic: ``mean_{B, i} (Q_i(s, u) - y)^2``, ``y = r + gamma (1 - term) Qbar_i(s', ubar')``
  with ``ubar'`` every agent's argmax one-hot of the target policy at ``o'``;
- acting: a draw from ``softmax(l_i)`` while collecting (the Gumbel-max sample), the argmax
  when evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import AlgorithmSpec, checked, non_negative, positive
from spnpolicy.algos.masac import ENV_DEFAULTS as MASAC_DEFAULTS
from spnpolicy.algos.masac import CentralCriticConfig, CentralCriticLearner
from spnpolicy.algos.policies import mlp
from spnpolicy.training import VecEnv
from spnpolicy.training.offpolicy import agent_loader
from spnpolicy.training.optim import gradient_step

__all__ = ["SPECS", "CentralCritic", "Maddpg", "MaddpgConfig", "actor_loss",
           "gumbel_softmax_st"]


@dataclass(frozen=True)
class MaddpgConfig(CentralCriticConfig):
    """Hyperparameters of maddpg (per-env overrides in ``ENV_DEFAULTS``)."""

    gumbel_temperature: float = checked(1.0, positive)
    """Temperature of the Gumbel-softmax relaxation in the actor's backward pass."""
    logits_reg: float = checked(1e-3, non_negative)
    """Weight of the mean squared logits added to the actor loss (original code: 1e-3)."""


#: masac's per-env defaults, without its temperature fields.
ENV_DEFAULTS = {family: {k: v for k, v in values.items() if k not in ("alpha", "alpha_lr")}
                for family, values in MASAC_DEFAULTS.items()}


# --- networks ----------------------------------------------------------------------------
class CentralCritic(nn.Module):
    """``Q_i(s, u)`` for every agent: ``state [B, S]``, one-hot joint actions
    ``[B, n, n * k]`` (row ``i`` is what agent ``i``'s critic sees) -> ``[B, n]``."""

    def __init__(self, state_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.num_agents, self.num_actions = num_agents, num_actions
        self.net = mlp(state_dim + num_agents + num_agents * num_actions, hidden, 1)
        self.register_buffer("agent_ids", torch.eye(num_agents), persistent=False)

    def forward(self, state: torch.Tensor, onehots: torch.Tensor) -> torch.Tensor:
        batch, n = state.shape[0], self.num_agents
        x = torch.cat([state.unsqueeze(1).expand(batch, n, -1),
                       self.agent_ids.expand(batch, -1, -1), onehots], dim=-1)
        return self.net(x).squeeze(-1)

    def joint(self, actions: torch.Tensor) -> torch.Tensor:
        """Every agent's view of the joint action ``[B, n]``: ``[B, n, n * k]``."""
        onehot = F.one_hot(actions, self.num_actions).float().flatten(-2)
        return onehot.unsqueeze(1).expand(-1, self.num_agents, -1)


# --- losses ------------------------------------------------------------------------------
def gumbel_softmax_st(logits: torch.Tensor, gumbels: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Straight-through Gumbel-softmax over the last axis, with the noise ``gumbels`` given
    (``-log(-log(U))``): forward the one-hot of ``argmax(logits + gumbels)``, backward the
    gradient of ``softmax((logits + gumbels) / temperature)``."""
    soft = torch.softmax((logits + gumbels) / temperature, -1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def actor_loss(critic: CentralCritic, state: torch.Tensor, actions: torch.Tensor,
               own: torch.Tensor, logits: torch.Tensor, logits_reg: float) -> torch.Tensor:
    """``mean_{B, i} -Q_i(s, own_i, u_-i) + logits_reg * mean(logits^2)``.

    ``actions`` ``[B, n]`` the replayed joint actions (the others' part, constant); ``own``
    ``[B, n, k]`` each agent's differentiable one-hot action; ``logits`` ``[B, n, k]``.
    """
    n, k = actions.shape[-1], own.shape[-1]
    taken = critic.joint(actions)                                  # [B, n, n * k]
    mine = torch.eye(n, device=own.device).repeat_interleave(k, dim=1)   # [n, n * k]
    inputs = taken.detach() * (1.0 - mine) + own.repeat(1, 1, n) * mine
    return -critic(state, inputs).mean() + logits_reg * logits.pow(2).mean()


# --- the algorithm -----------------------------------------------------------------------
class Maddpg(CentralCriticLearner):
    """maddpg's critic and update, for the off-policy loop
    (:func:`~spnpolicy.training.offpolicy.train_offpolicy`)."""

    def __init__(self, cfg: MaddpgConfig, envs: VecEnv) -> None:
        super().__init__(cfg, envs, CentralCritic)

    def update(self, batch):
        with torch.no_grad():
            next_actions = self.agent_target.greedy_actions(batch.next_obs)
            next_q = self.critic_target(batch.next_state, self.critic.joint(next_actions))
            discount = self.cfg.gamma ** batch.steps.float() * (1.0 - batch.terminated)
            target = batch.reward.unsqueeze(-1) + discount.unsqueeze(-1) * next_q
        q = self.critic(batch.state, self.critic.joint(batch.actions))
        loss_critic = F.mse_loss(q, target)
        gradient_step(self.optimizers["critic"], loss_critic, self.cfg.max_grad_norm)

        logits = self.agent(batch.obs)
        uniform = torch.rand_like(logits).clamp(1e-20, 1.0)
        own = gumbel_softmax_st(logits, -torch.log(-torch.log(uniform)),
                                self.cfg.gumbel_temperature)
        loss_actor = actor_loss(self.critic, batch.state, batch.actions, own, logits,
                                self.cfg.logits_reg)
        gradient_step(self.optimizers["actor"], loss_actor, self.cfg.max_grad_norm)
        return {"loss_critic": loss_critic.detach(), "loss_actor": loss_actor.detach(),
                "q_taken": q.detach().mean()}


SPECS = (AlgorithmSpec("maddpg", "MADDPG for discrete actions: straight-through "
                       "Gumbel-softmax actors, centralised critics", MaddpgConfig, Maddpg, {},
                       ENV_DEFAULTS,
                       load_agent=agent_loader(MaddpgConfig, Maddpg)),)
