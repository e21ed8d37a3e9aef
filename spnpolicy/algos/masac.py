"""masac: multi-agent soft actor-critic (MA-SAC, "Probabilistic View of Multi-Agent
Reinforcement Learning: A Unified Approach"), for discrete actions.

Every agent ``i`` has a categorical policy ``pi_i(. | o_i)`` (one network shared by the
agents, fed the agent's observation and a one-hot of its id) and a centralised critic
``Q_i(s, u_i, u_-i)`` on the global state and all agents' actions: one network shared by
the agents, fed the state, the agent id and the others' one-hot actions, that outputs a
value for each of the agent's own ``k`` actions. Twin critics ``Q^1, Q^2`` (the min of the
two, Fujimoto et al. 2018) and Polyak target copies of the critics and the policy (MA-SAC
uses target policy and Q networks). With the team reward every ``Q_i`` regresses the
same return; they differ in whose action is summed out:

- soft target: ``y_i = r + gamma (1 - term) sum_a pibar_i(a | o'_i) (min_j Qbar^j_i(s', a,
  u'_-i) - alpha log pibar_i(a | o'_i))``, the agent's own next action summed exactly
  under its (target) policy, the others' ``u'_-i`` one joint sample of theirs;
- critic: ``sum_j mean_{B, i} (Q^j_i(s, u_i, u_-i) - y_i)^2`` on replayed joint actions;
- actor: ``mean_{B, i} sum_a pi_i(a | o_i) (alpha log pi_i(a | o_i) - min_j Q^j_i(s, a,
  u_-i))``, the own action summed exactly, the others' actions ``u_-i`` as taken (the
  critic values are constants here);
- temperature: ``alpha`` tuned so that the mean per-agent entropy tracks
  ``target_entropy_scale * log k`` (Haarnoja et al. 2018b; MA-SAC fixes alpha per task
  and leaves the tuning to future work; ``autotune_alpha=False`` is its setting).

MA-SAC's other choices kept: 128-128 ReLU networks, Polyak rate 0.01, gamma 0.95, one
alpha shared by the cooperating agents. Its learning rate 0.01 and batch 1024 are replaced
by 1e-3 and 128 (smaller budgets here). Summing the own action exactly replaces MA-SAC's
Gumbel-softmax sample (discrete actions make the sum cheap and exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import (COVERAGE_BUDGET, MATRIX_BUDGET, AlgorithmSpec, OffPolicyConfig,
                                    boolean, checked, fraction, positive, rate, widths)
from spnpolicy.algos.policies import mlp
from spnpolicy.algos.value_based import AgentQNetwork
from spnpolicy.training import VecEnv, make_target
from spnpolicy.training.offpolicy import (ActingAgent, OffPolicyAlgorithm, TargetSync,
                                          agent_loader, load_modules_state, modules_state)
from spnpolicy.training.optim import adam, gradient_step

__all__ = ["SPECS", "CategoricalAgents", "CentralCriticConfig", "CentralCriticLearner", "Masac",
           "MasacConfig",
           "TwinCentralCritic", "actor_loss", "others_onehot", "soft_target"]


@dataclass(frozen=True)
class CentralCriticConfig(OffPolicyConfig):
    """Fields of the actor-critics with per-agent policies and centralised critics (masac,
    maddpg)."""

    gamma: float = 0.95
    """Discount factor (Lowe et al. 2017: 0.95)."""
    actor_hidden: tuple[int, ...] = checked((128, 128), widths)
    """Hidden widths of the shared policy network."""
    critic_hidden: tuple[int, ...] = checked((128, 128), widths)
    """Hidden widths of each centralised critic."""
    actor_lr: float = checked(1e-3, positive)
    """Adam learning rate of the policy."""
    critic_lr: float = checked(1e-3, positive)
    """Adam learning rate of the critics."""
    tau: float = checked(0.01, rate)
    """Polyak rate of the target critics and policy (Lowe et al. 2017: 0.01)."""


@dataclass(frozen=True)
class MasacConfig(CentralCriticConfig):
    """Hyperparameters of masac (per-env overrides in ``ENV_DEFAULTS``)."""

    alpha_lr: float = checked(1e-3, positive)
    """Adam learning rate of log alpha (autotune_alpha)."""
    alpha: float = checked(0.02, positive)
    """Entropy temperature; its initial value when autotune_alpha (MASAC's published value
    on cooperative navigation: 0.02)."""
    autotune_alpha: bool = checked(True, boolean)
    """Tune alpha so that the mean per-agent entropy tracks the target entropy."""
    target_entropy_scale: float = checked(0.3, fraction)
    """Target per-agent entropy as a fraction of the maximum, log k."""


#: Per-env-family defaults; everything else comes from ``MasacConfig``.
ENV_DEFAULTS = {
    # One-step games, spn-ac's budget: a uniform warm-up shows the critics every joint
    # action, then the policies concentrate.
    "matrix": MATRIX_BUDGET | dict(learning_starts=200, batch_size=64, gradient_steps=2,
                                   actor_hidden=(32,), critic_hidden=(32,), actor_lr=3e-3,
                                   critic_lr=1e-2, alpha=1.0, alpha_lr=3e-2),
    "coverage": COVERAGE_BUDGET,
}


# --- networks ----------------------------------------------------------------------------
class CategoricalAgents(ActingAgent):
    """Per-agent categorical policies from one shared logits network
    (:class:`~spnpolicy.algos.value_based.AgentQNetwork`): ``[B, n, obs_dim]`` -> logits
    ``[B, n, k]``. Greedy: the argmax; sampled: a draw from each agent's softmax."""

    needs_obs = True

    def __init__(self, obs_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.logits = AgentQNetwork(obs_dim, num_agents, num_actions, hidden)
        self.input_shape = (num_agents, obs_dim)
        self.num_actions = num_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.logits(obs)

    def greedy_actions(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs).argmax(-1)

    def sampled_actions(self, obs: torch.Tensor, generator: torch.Generator | None
                        ) -> torch.Tensor:
        probs = torch.softmax(self(obs), -1)
        draws = torch.multinomial(probs.reshape(-1, self.num_actions), 1, generator=generator)
        return draws.view(probs.shape[:-1])


def others_onehot(actions: torch.Tensor, num_actions: int) -> torch.Tensor:
    """Row ``i`` of the result is every agent's one-hot action with agent ``i``'s own block
    zeroed: ``[B, n]`` -> ``[B, n, n * k]``."""
    n = actions.shape[-1]
    onehot = F.one_hot(actions, num_actions).float().flatten(-2)       # [B, n * k]
    keep = 1.0 - torch.eye(n, device=actions.device).repeat_interleave(num_actions, dim=1)
    return onehot.unsqueeze(-2) * keep                                 # [B, n, n * k]


class TwinCentralCritic(nn.Module):
    """Two critics ``Q^j_i(s, ., u_-i)``: ``state [B, S]``, joint actions ``[B, n]`` ->
    ``[2, B, n, k]``, the value of each own action of each agent given the others' actions.
    Each critic is one MLP shared by the agents on (state, agent one-hot, others' one-hots).
    """

    def __init__(self, state_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.num_agents, self.num_actions = num_agents, num_actions
        width = state_dim + num_agents + num_agents * num_actions
        self.critics = nn.ModuleList(mlp(width, hidden, num_actions) for _ in range(2))
        self.register_buffer("agent_ids", torch.eye(num_agents), persistent=False)

    def forward(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        batch, n = state.shape[0], self.num_agents
        x = torch.cat([state.unsqueeze(1).expand(batch, n, -1),
                       self.agent_ids.expand(batch, -1, -1),
                       others_onehot(actions, self.num_actions)], dim=-1)
        return torch.stack([critic(x) for critic in self.critics])


# --- losses ------------------------------------------------------------------------------
def soft_target(reward: torch.Tensor, discount: torch.Tensor, next_q: torch.Tensor,
                next_log_probs: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """``y_i = r + discount * sum_a p_i(a) (q_i(a) - alpha log p_i(a))`` -> ``[B, n]``.

    ``reward``, ``discount`` ``[B]`` (discount already ``gamma^m (1 - terminated)``);
    ``next_q`` ``[B, n, k]`` (the min over the twin target critics at ``s'`` with the
    others' sampled next actions); ``next_log_probs`` ``[B, n, k]``.
    """
    probs = next_log_probs.exp()
    value = (probs * (next_q - alpha * next_log_probs)).sum(-1)
    return reward.unsqueeze(-1) + discount.unsqueeze(-1) * value


def actor_loss(q: torch.Tensor, log_probs: torch.Tensor,
               alpha: float | torch.Tensor) -> torch.Tensor:
    """``mean_{B, i} sum_a p_i(a) (alpha log p_i(a) - q_i(a))`` for ``q``, ``log_probs``
    ``[B, n, k]`` (``q`` treated as a constant)."""
    return (log_probs.exp() * (alpha * log_probs - q.detach())).sum(-1).mean()


# --- the algorithm -----------------------------------------------------------------------
class CentralCriticLearner(OffPolicyAlgorithm):
    """Per-agent categorical policies (``agent``) and a centralised critic built by
    ``critic(state_dim, n, k, hidden)``, Polyak targets of both and their Adam optimisers:
    the acting and the checkpoint state that masac and maddpg share. Subclasses write
    ``update``."""

    needs_obs = True
    uniform_warmup = True

    def __init__(self, cfg: CentralCriticConfig, envs: VecEnv,
                 critic: Callable[[int, int, int, tuple[int, ...]], nn.Module]) -> None:
        device = torch.device(cfg.device)
        n, k = envs.num_agents, envs.num_actions
        self.cfg, self.num_actions = cfg, k
        self.agent = CategoricalAgents(envs.obs_dim, n, k, cfg.actor_hidden).to(device)
        self.critic = critic(envs.state_dim, n, k, cfg.critic_hidden).to(device)
        self.agent_target, self.critic_target = make_target(self.agent), make_target(self.critic)
        self.optimizers = {
            "actor": adam(self.agent.parameters(), lr=cfg.actor_lr),
            "critic": adam(self.critic.parameters(), lr=cfg.critic_lr)}
        self.target_sync = TargetSync(((self.critic_target, self.critic),
                                       (self.agent_target, self.agent)), tau=cfg.tau)

    def explore(self, state, obs, step, generator, settled=None, elapsed=None):
        return self.agent.sampled_actions(obs, generator)

    def greedy(self, state, obs):
        return self.agent.greedy_actions(obs)

    def sample(self, state, obs, generator):
        return self.agent.sampled_actions(obs, generator)

    def _modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name)
                for name in ("agent", "critic", "agent_target", "critic_target")}

    def state_dict(self):
        return modules_state(self._modules(), self.optimizers)

    def load_state_dict(self, state):
        load_modules_state(state, self._modules(), self.optimizers)


class Masac(CentralCriticLearner):
    """masac's twin critics, temperature and update, for the off-policy loop
    (:func:`~spnpolicy.training.offpolicy.train_offpolicy`)."""

    def __init__(self, cfg: MasacConfig, envs: VecEnv) -> None:
        super().__init__(cfg, envs, TwinCentralCritic)
        self.log_alpha = torch.tensor(math.log(cfg.alpha), device=torch.device(cfg.device),
                                      requires_grad=cfg.autotune_alpha)
        self.target_entropy = cfg.target_entropy_scale * math.log(envs.num_actions)
        self.optimizers["alpha"] = adam([self.log_alpha], lr=cfg.alpha_lr)

    def update(self, batch):
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_log_probs = torch.log_softmax(self.agent_target(batch.next_obs), -1)
            next_actions = self.agent_target.sampled_actions(batch.next_obs, None)
            next_q = self.critic_target(batch.next_state, next_actions).min(0).values
            discount = self.cfg.gamma ** batch.steps.float() * (1.0 - batch.terminated)
            target = soft_target(batch.reward, discount, next_q, next_log_probs, alpha)
        taken = batch.actions.unsqueeze(0).unsqueeze(-1).expand(2, -1, -1, -1)
        q_taken = self.critic(batch.state, batch.actions).gather(-1, taken).squeeze(-1)
        loss_critic = sum(F.mse_loss(q, target) for q in q_taken)
        gradient_step(self.optimizers["critic"], loss_critic, self.cfg.max_grad_norm)

        with torch.no_grad():
            q = self.critic(batch.state, batch.actions).min(0).values
        log_probs = torch.log_softmax(self.agent(batch.obs), -1)
        loss_actor = actor_loss(q, log_probs, alpha)
        gradient_step(self.optimizers["actor"], loss_actor, self.cfg.max_grad_norm)

        entropy = -(log_probs.exp() * log_probs).sum(-1).mean().detach()
        if self.cfg.autotune_alpha:
            loss_alpha = self.log_alpha.exp() * (entropy - self.target_entropy)
            gradient_step(self.optimizers["alpha"], loss_alpha)
        return {"loss_critic": loss_critic.detach(), "loss_actor": loss_actor.detach(),
                "entropy": entropy, "alpha": alpha}

    def state_dict(self):
        return super().state_dict() | {"log_alpha": self.log_alpha.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        super().load_state_dict(state)


SPECS = (AlgorithmSpec("masac", "multi-agent soft actor-critic: per-agent "
                       "policies, centralised twin critics, tuned temperature", MasacConfig,
                       Masac, {}, ENV_DEFAULTS,
                       load_agent=agent_loader(MasacConfig, Masac)),)
