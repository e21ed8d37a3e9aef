"""i2q: ideal independent Q-learning (Jiang and Lu 2022, "I2Q: A Fully Decentralized
Q-Learning Algorithm").

Fully decentralised learners on the global state ``s``. In a deterministic environment,
the others' optimal reply to agent ``i``'s action ``a_i`` leads to the "ideal" next state
``s'* = argmax_{s' in N(s, a_i)} Q^ss_i(s, s')``, where the state-to-next-state value
``Q^ss_i(s, s') = r + gamma max_{s''} Q^ss_i(s', s'')`` needs no actions. Independent
Q-learning on the ideal transitions converges to the optimal joint policy (the paper's
result). Each agent has three networks (shared by the agents here, fed a one-hot of the
agent id) and takes, per gradient step, the paper's three steps in order:

1. transition model ``f_i(s, a_i) ~ s'*``: minimise
   ``mean(-qss_weight * Q^ss_i(s, f_i(s, a_i)) + |f_i(s, a_i) - s'|^2)``, fitting the
   observed next states pulled toward high ``Q^ss`` (only ``f`` is stepped);
2. ``Q^ss_i(s, s')``: minimise ``mean(Q^ss_i(s, s') - r - gamma (1 - term)
   Qbar^ss_i(s', f_i(s', a'*)))^2`` with ``a'* = argmax_a Q_i(s', a)``;
3. ``Q_i(s, a_i)``: minimise ``mean(Q_i(s, a_i) - r - gamma (1 - term)
   max_a' Qbar_i(f_i(s, a_i), a'))^2``: the bootstrap from the ideal next state.

Agents act epsilon-greedily on ``Q_i(s, .)``; epsilon annealing, hard target copies
(``Qbar``, ``Qbar^ss``) and the replay buffer are the Q-learners'
(:class:`~spnpolicy.algos.q_learning.QLearningConfig`); rewards are used as given. In a
one-step game every transition terminates, so step 3's target is the reward and i2q learns
as independent Q-learning does there; the ideal transition matters from two steps on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import AlgorithmSpec, checked, non_negative
from spnpolicy.algos.policies import mlp
from spnpolicy.algos.q_learning import EpsilonGreedyLearner
from spnpolicy.algos.q_learning import ENV_DEFAULTS, QLearningConfig, QModel
from spnpolicy.training import VecEnv, make_target
from spnpolicy.training.offpolicy import (TargetSync, agent_loader, load_modules_state,
                                          modules_state)
from spnpolicy.training.optim import adam, gradient_step

__all__ = ["SPECS", "I2q", "I2qConfig", "I2qNetworks", "StateAgentQ", "q_loss", "qss_loss",
           "transition_loss"]


@dataclass(frozen=True)
class I2qConfig(QLearningConfig):
    """Hyperparameters of i2q (per-env overrides in the Q-learners' ``ENV_DEFAULTS``)."""

    standardise_rewards: bool = False
    """Standardise sampled rewards (off: Q^ss and Q_i regress the env's reward scale)."""
    qss_weight: float = checked(0.1, non_negative)
    """lambda of step 1: how strongly f's prediction is pulled toward high Q^ss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_step != 1:
            raise ValueError(f"n_step must be 1 for i2q (its transition model predicts the "
                             f"next state), got {self.n_step!r}")


# --- networks ----------------------------------------------------------------------------
class StateAgentQ(QModel):
    """``Q_i(s, .)`` for every agent from one network fed the state and the agent id:
    ``state [B, S]`` -> ``[B, n, k]``. Acts on global states (``needs_obs = False``)."""

    needs_obs = False

    def __init__(self, state_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...], explore_epsilon: float = 0.05) -> None:
        super().__init__()
        self.state_dim, self.num_agents, self.num_actions = state_dim, num_agents, num_actions
        self.explore_epsilon = explore_epsilon
        self.net = mlp(state_dim + num_agents, hidden, num_actions)
        self.register_buffer("agent_ids", torch.eye(num_agents), persistent=False)

    @property
    def input_shape(self) -> tuple[int]:
        return (self.state_dim,)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.per_agent(state.unsqueeze(1).expand(-1, self.num_agents, -1))

    def per_agent(self, states: torch.Tensor) -> torch.Tensor:
        """Agent ``i``'s values at its own state ``states[:, i]``: ``[B, n, S]`` ->
        ``[B, n, k]``."""
        return self.net(torch.cat([states, self.agent_ids.expand(states.shape[0], -1, -1)], -1))

    def greedy(self, state: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        return self(state).argmax(-1)


class I2qNetworks(nn.Module):
    """``Q^ss_i(s, s')``: ``[B, S]``, ``[B, n, S]`` -> ``[B, n]``, and the transition model
    ``f_i(s, a_i)``: ``[B, S]``, ``[B, n]`` -> ``[B, n, S]``, each fed the agent id."""

    def __init__(self, state_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.num_agents, self.num_actions = num_agents, num_actions
        self.qss_net = mlp(2 * state_dim + num_agents, hidden, 1)
        self.model = mlp(state_dim + num_agents + num_actions, hidden, state_dim)
        self.register_buffer("agent_ids", torch.eye(num_agents), persistent=False)

    def _per_agent(self, state: torch.Tensor) -> torch.Tensor:
        return state.unsqueeze(1).expand(state.shape[0], self.num_agents, -1)

    def qss(self, state: torch.Tensor, next_states: torch.Tensor) -> torch.Tensor:
        ids = self.agent_ids.expand(state.shape[0], -1, -1)
        return self.qss_net(torch.cat([self._per_agent(state), next_states, ids], -1)).squeeze(-1)

    def transition(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        ids = self.agent_ids.expand(state.shape[0], -1, -1)
        onehot = F.one_hot(actions, self.num_actions).float()
        return self.model(torch.cat([self._per_agent(state), ids, onehot], -1))


# --- losses ------------------------------------------------------------------------------
def transition_loss(predicted: torch.Tensor, qss_at_predicted: torch.Tensor,
                    next_state: torch.Tensor, weight: float) -> torch.Tensor:
    """Step 1: ``mean_{B, i}(-weight * Q^ss_i(s, f_i) + |f_i - s'|^2)`` for predictions
    ``[B, n, S]``, their ``Q^ss`` ``[B, n]`` and the observed ``next_state`` ``[B, S]``."""
    error = (predicted - next_state.unsqueeze(1)).pow(2).sum(-1)
    return (error - weight * qss_at_predicted).mean()


def qss_loss(qss: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
             next_qss: torch.Tensor) -> torch.Tensor:
    """Step 2: ``mean (Q^ss_i(s, s') - r - discount * Qbar^ss_i(s', f_i(s', a'*)))^2``;
    ``qss``, ``next_qss`` ``[B, n]``, ``reward``, ``discount`` ``[B]``."""
    target = reward.unsqueeze(-1) + discount.unsqueeze(-1) * next_qss.detach()
    return F.mse_loss(qss, target)


def q_loss(q_taken: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor,
           next_q_ideal: torch.Tensor) -> torch.Tensor:
    """Step 3: ``mean (Q_i(s, a_i) - r - discount * max_a' Qbar_i(f_i(s, a_i), a'))^2``;
    ``q_taken`` ``[B, n]``, ``next_q_ideal`` ``[B, n, k]`` (``Qbar_i`` at ``f_i(s, a_i)``)."""
    target = reward.unsqueeze(-1) + discount.unsqueeze(-1) * next_q_ideal.detach().max(-1).values
    return F.mse_loss(q_taken, target)


# --- the algorithm -----------------------------------------------------------------------
class I2q(EpsilonGreedyLearner):
    """i2q's networks, optimizers and three-step update."""

    def __init__(self, cfg: I2qConfig, envs: VecEnv) -> None:
        device = torch.device(cfg.device)
        n, k, state_dim = envs.num_agents, envs.num_actions, envs.state_dim
        self.cfg = cfg
        self.agent = StateAgentQ(state_dim, n, k, cfg.hidden, cfg.epsilon_finish).to(device)
        self.nets = I2qNetworks(state_dim, n, k, cfg.hidden).to(device)
        self.q_target, self.nets_target = make_target(self.agent), make_target(self.nets)
        self.optimizers = {
            "model": adam(self.nets.model.parameters(), lr=cfg.lr),
            "qss": adam(self.nets.qss_net.parameters(), lr=cfg.lr),
            "q": adam(self.agent.parameters(), lr=cfg.lr)}
        self.target_sync = TargetSync(((self.q_target, self.agent),
                                       (self.nets_target, self.nets)),
                                      interval=cfg.target_update_interval)

    def update(self, batch):
        state, next_state, reward = batch.state, batch.next_state, batch.reward
        discount = self.cfg.gamma ** batch.steps.float() * (1.0 - batch.terminated)
        # 1. transition model (gradients reaching Q^ss here are cleared by its own step)
        predicted = self.nets.transition(state, batch.actions)
        loss_model = transition_loss(predicted, self.nets.qss(state, predicted), next_state,
                                     self.cfg.qss_weight)
        gradient_step(self.optimizers["model"], loss_model, self.cfg.max_grad_norm)
        # 2. Q^ss, bootstrapped at the ideal next state of the greedy next action
        with torch.no_grad():
            ideal_next = self.nets.transition(next_state, self.agent.greedy(next_state, None))
            next_qss = self.nets_target.qss(next_state, ideal_next)
        per_agent_next = next_state.unsqueeze(1).expand(-1, self.agent.num_agents, -1)
        loss_qss = qss_loss(self.nets.qss(state, per_agent_next), reward, discount, next_qss)
        gradient_step(self.optimizers["qss"], loss_qss, self.cfg.max_grad_norm)
        # 3. Q_i, bootstrapped at the ideal next state of the taken own action
        with torch.no_grad():
            next_q_ideal = self.q_target.per_agent(self.nets.transition(state, batch.actions))
        q_taken = self.agent(state).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
        loss_q = q_loss(q_taken, reward, discount, next_q_ideal)
        gradient_step(self.optimizers["q"], loss_q, self.cfg.max_grad_norm)
        return {"loss_model": loss_model.detach(), "loss_qss": loss_qss.detach(),
                "loss_td": loss_q.detach(), "q_taken": q_taken.detach().mean()}

    def _modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in ("agent", "nets", "q_target", "nets_target")}

    def state_dict(self):
        return modules_state(self._modules(), self.optimizers)

    def load_state_dict(self, state):
        load_modules_state(state, self._modules(), self.optimizers)


SPECS = (AlgorithmSpec("i2q", "ideal independent Q-learning: Q-learning on the ideal "
                       "transitions of a learned Q^ss(s, s') and transition model",
                       I2qConfig, I2q, {}, ENV_DEFAULTS,
                       load_agent=agent_loader(I2qConfig, I2q)),)
