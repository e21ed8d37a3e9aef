"""ma2ql: multi-agent alternate Q-learning (Su et al. 2022, "MA2QL: A Minimalist Approach
to Fully Decentralized Multi-Agent Reinforcement Learning").

Independent Q-learners ``Q_i(o_i, .)`` with separate parameters (a shared network would
change every agent at each update), that take turns: during agent ``i``'s turn only ``Q_i``
is updated, by double-Q learning on the team reward,
``(Q_i(o_i, u_i) - (r + gamma (1 - term) Qbar_i(o'_i, argmax Q_i(o'_i, .))))^2``, while
every other agent's ``Q_j`` (and so its greedy policy) stays fixed. The turn passes to the
next agent every ``turn_length`` gradient steps, round robin:
``turn = (updates // turn_length) % n``. With exact Q-iteration in each turn the joint
policy converges to a Nash equilibrium (the paper's result); IQL, which updates every
agent at once, has no such guarantee.

All agents keep collecting epsilon-greedily with their current ``Q``; the replay buffer,
epsilon annealing, hard target copies and reward standardisation are the Q-learners'
(:class:`~spnpolicy.algos.q_learning.QLearningConfig`). The paper's tabular turns run Q-
iteration to convergence; here a turn is ``turn_length`` gradient steps on replayed data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import AlgorithmSpec, checked, integer
from spnpolicy.algos.policies import mlp
from spnpolicy.algos.q_learning import EpsilonGreedyLearner
from spnpolicy.algos.q_learning import ENV_DEFAULTS as Q_DEFAULTS
from spnpolicy.algos.q_learning import QLearningConfig, RunningMeanStd
from spnpolicy.algos.value_based import MixedQ
from spnpolicy.training import VecEnv, make_target
from spnpolicy.training.offpolicy import TargetSync, agent_loader
from spnpolicy.training.optim import adam, gradient_step

__all__ = ["SPECS", "Ma2ql", "Ma2qlConfig", "SeparateAgentQ", "agent_td_loss", "turn"]


@dataclass(frozen=True)
class Ma2qlConfig(QLearningConfig):
    """Hyperparameters of ma2ql (per-env overrides in ``ENV_DEFAULTS``)."""

    turn_length: int = checked(1_000, integer(1))
    """Gradient steps of one agent's turn before the next agent's begins."""


#: The Q-learners' per-env defaults; on matrix games (about 450 gradient steps) turns of 50.
ENV_DEFAULTS = {family: dict(values) for family, values in Q_DEFAULTS.items()}
ENV_DEFAULTS["matrix"]["turn_length"] = 50


# --- networks ----------------------------------------------------------------------------
class SeparateAgentQ(nn.Module):
    """``Q_i(o_i, .)`` with one MLP per agent: ``[B, n, obs_dim]`` -> ``[B, n, k]``."""

    def __init__(self, obs_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.obs_dim, self.num_agents, self.num_actions = obs_dim, num_agents, num_actions
        self.nets = nn.ModuleList(mlp(obs_dim, hidden, num_actions) for _ in range(num_agents))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(obs[:, i]) for i, net in enumerate(self.nets)], dim=1)


# --- loss and schedule -------------------------------------------------------------------
def turn(updates: int, turn_length: int, num_agents: int) -> int:
    """The agent whose turn it is after ``updates`` gradient steps."""
    return (updates // turn_length) % num_agents


def agent_td_loss(q: SeparateAgentQ, target: SeparateAgentQ, batch, reward: torch.Tensor,
                  agent: int, gamma: float, double_q: bool = True) -> torch.Tensor:
    """Agent ``agent``'s double-Q TD loss on the team ``reward`` ``[B]``; only ``Q_agent``
    gets a gradient."""
    net, target_net = q.nets[agent], target.nets[agent]
    with torch.no_grad():
        next_obs = batch.next_obs[:, agent]
        chooser = net if double_q else target_net
        next_action = chooser(next_obs).argmax(-1, keepdim=True)
        next_q = target_net(next_obs).gather(-1, next_action).squeeze(-1)
        discount = gamma ** batch.steps.float() * (1.0 - batch.terminated)
        y = reward + discount * next_q
    taken = net(batch.obs[:, agent]).gather(-1, batch.actions[:, agent:agent + 1]).squeeze(-1)
    return F.mse_loss(taken, y)


# --- the algorithm -----------------------------------------------------------------------
class Ma2ql(EpsilonGreedyLearner):
    """ma2ql's networks, per-agent optimizers and alternating update."""

    def __init__(self, cfg: Ma2qlConfig, envs: VecEnv) -> None:
        device = torch.device(cfg.device)
        self.cfg = cfg
        self.q = SeparateAgentQ(envs.obs_dim, envs.num_agents, envs.num_actions,
                                cfg.hidden).to(device)
        self.target = make_target(self.q)
        self.agent = MixedQ(self.q, None, cfg.epsilon_finish)
        self.optimizers = [adam(net.parameters(), lr=cfg.lr) for net in self.q.nets]
        self.rewards = RunningMeanStd() if cfg.standardise_rewards else None
        self.updates = 0
        self.target_sync = TargetSync(((self.target, self.q),),
                                      interval=cfg.target_update_interval)

    def update(self, batch):
        agent = turn(self.updates, self.cfg.turn_length, self.q.num_agents)
        reward = batch.reward
        if self.rewards is not None:
            self.rewards.update(reward)
            reward = self.rewards.standardise(reward)
        loss = agent_td_loss(self.q, self.target, batch, reward, agent, self.cfg.gamma,
                             self.cfg.double_q)
        gradient_step(self.optimizers[agent], loss, self.cfg.max_grad_norm)
        self.updates += 1
        return {"loss_td": loss.detach(), "turn": agent}

    def state_dict(self):
        return {"q": self.q.state_dict(), "target": self.target.state_dict(),
                "optimizers": [o.state_dict() for o in self.optimizers],
                "rewards": self.rewards.state_dict() if self.rewards is not None else {},
                "updates": self.updates}

    def load_state_dict(self, state):
        self.q.load_state_dict(state["q"])
        self.target.load_state_dict(state["target"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        if self.rewards is not None:
            self.rewards.load_state_dict(state["rewards"])
        self.updates = int(state["updates"])


SPECS = (AlgorithmSpec("ma2ql", "multi-agent alternate Q-learning: independent Q-learners "
                       "updated one agent at a time, in turns", Ma2qlConfig, Ma2ql, {},
                       ENV_DEFAULTS,
                       load_agent=agent_loader(Ma2qlConfig, Ma2ql)),)
