"""qtran: QTRAN-base (Son et al. 2019), value factorisation by transformation.

Three networks: the agents' utilities ``Q_i(o_i, .)`` (one network shared by the agents,
fed a one-hot of the agent id, as ``iql``/``vdn``/``qmix``), a joint action-value
``Q_jt(s, u)`` on the global state and every agent's one-hot action, and a state value
``V_jt(s)``. The transformed value ``Q'(s, u) = sum_i Q_i(o_i, u_i)`` factorises
``Q_jt`` when ``Q'(s, u) - Q_jt(s, u) + V_jt(s)`` is 0 at the greedy joint action ``ubar``
(every ``u_i`` the argmax of ``Q_i``) and >= 0 elsewhere; the losses, as pymarl's
``QTranLearner`` (``qtran_base``):

- td:   ``mean (Q_jt(s, u) - y)^2``, ``y = r + gamma (1 - term) Qbar_jt(s', ubar')`` with
  ``ubar'`` the online agents' greedy next joint action (``double_q``; else the target
  agents'), ``Qbar`` the target networks;
- opt:  ``mean (Q'(s, ubar) - Q_jt(s, ubar) + V_jt(s))^2`` with ``Q_jt`` detached;
- nopt: ``mean min(0, Q'(s, u) - Q_jt(s, u) + V_jt(s))^2`` on the replayed ``u``, ``Q_jt``
  detached: the clamp keeps only the violations of ``Q' - Q_jt + V >= 0``;
- loss = td + ``opt_loss_coef`` opt + ``nopt_min_loss_coef`` nopt (pymarl: 1 and 0.1).

Agents act greedily on their own ``Q_i`` (decentralised); the Q-learning loop's choices
(epsilon annealing, hard target copies, reward standardisation, double Q) are
:class:`~spnpolicy.algos.q_learning.QLearningConfig`'s. Feedforward agents on replayed
transitions, as the other Q-learners here (pymarl: recurrent agents on episodes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spnpolicy.algos.config import AlgorithmSpec, checked, non_negative, widths
from spnpolicy.algos.policies import mlp
from spnpolicy.algos.q_learning import EpsilonGreedyLearner
from spnpolicy.algos.q_learning import ENV_DEFAULTS as Q_DEFAULTS
from spnpolicy.algos.q_learning import QLearningConfig, RunningMeanStd
from spnpolicy.algos.value_based import AgentQNetwork, MixedQ
from spnpolicy.training import VecEnv, make_target
from spnpolicy.training.offpolicy import TargetSync, agent_loader
from spnpolicy.training.optim import adam, gradient_step

__all__ = ["SPECS", "JointValues", "Qtran", "QtranConfig", "qtran_losses"]


@dataclass(frozen=True)
class QtranConfig(QLearningConfig):
    """Hyperparameters of qtran (per-env overrides in ``ENV_DEFAULTS``)."""

    joint_hidden: tuple[int, ...] = checked((64, 64), widths)
    """Hidden widths of the joint Q_jt(s, u) and V_jt(s) networks."""
    opt_loss_coef: float = checked(1.0, non_negative)
    """Weight of the opt loss (pymarl: 1)."""
    nopt_min_loss_coef: float = checked(0.1, non_negative)
    """Weight of the clamped nopt loss (pymarl: 0.1)."""


#: The Q-learners' per-env defaults, the joint networks as small as the agents' on matrix games.
ENV_DEFAULTS = {family: dict(values) for family, values in Q_DEFAULTS.items()}
ENV_DEFAULTS["matrix"]["joint_hidden"] = (32,)


# --- networks ----------------------------------------------------------------------------
class JointValues(nn.Module):
    """``Q_jt(s, u)``: ``state [B, S]``, joint actions ``[B, n]`` -> ``[B]``, and
    ``V_jt(s)``: ``state [B, S]`` -> ``[B]``."""

    def __init__(self, state_dim: int, num_agents: int, num_actions: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.q = mlp(state_dim + num_agents * num_actions, hidden, 1)
        self.v = mlp(state_dim, hidden, 1)

    def joint_q(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(actions, self.num_actions).float().flatten(-2)
        return self.q(torch.cat([state, onehot], dim=-1)).squeeze(-1)

    def value(self, state: torch.Tensor) -> torch.Tensor:
        return self.v(state).squeeze(-1)


class QtranNetworks(nn.Module):
    """The agents' utilities and the joint networks, copied together as the target."""

    def __init__(self, agents: AgentQNetwork, joint: JointValues) -> None:
        super().__init__()
        self.agents, self.joint = agents, joint


# --- losses ------------------------------------------------------------------------------
def qtran_losses(q_agents: torch.Tensor, actions: torch.Tensor, joint_taken: torch.Tensor,
                 joint_greedy: torch.Tensor, value: torch.Tensor, target: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QTRAN-base's td, opt and nopt losses (each a mean over the batch).

    ``q_agents`` ``[B, n, k]`` the agents' utilities; ``actions`` ``[B, n]`` the replayed
    joint actions; ``joint_taken`` ``Q_jt(s, u)`` and ``joint_greedy`` ``Q_jt(s, ubar)``
    ``[B]`` (``ubar`` = the argmax of ``q_agents``); ``value`` ``V_jt(s)`` ``[B]``; ``target``
    the TD target ``[B]``. ``Q_jt`` enters opt and nopt detached.
    """
    td = F.mse_loss(joint_taken, target)
    greedy_sum = q_agents.max(-1).values.sum(-1)
    opt = (greedy_sum - joint_greedy.detach() + value).pow(2).mean()
    taken_sum = q_agents.gather(-1, actions.unsqueeze(-1)).squeeze(-1).sum(-1)
    nopt = (taken_sum - joint_taken.detach() + value).clamp(max=0.0).pow(2).mean()
    return td, opt, nopt


# --- the algorithm -----------------------------------------------------------------------
class Qtran(EpsilonGreedyLearner):
    """qtran's networks, optimizer and update, for the off-policy loop
    (:func:`~spnpolicy.training.offpolicy.train_offpolicy`)."""

    def __init__(self, cfg: QtranConfig, envs: VecEnv) -> None:
        device = torch.device(cfg.device)
        n, k = envs.num_agents, envs.num_actions
        self.cfg = cfg
        agents = AgentQNetwork(envs.obs_dim, n, k, cfg.hidden)
        self.nets = QtranNetworks(agents, JointValues(envs.state_dim, n, k,
                                                      cfg.joint_hidden)).to(device)
        self.target = make_target(self.nets)
        self.agent = MixedQ(self.nets.agents, None, cfg.epsilon_finish)
        self.optimizer = adam(self.nets.parameters(), lr=cfg.lr)
        self.rewards = RunningMeanStd() if cfg.standardise_rewards else None
        self.target_sync = TargetSync(((self.target, self.nets),),
                                      interval=cfg.target_update_interval)

    def update(self, batch):
        reward = batch.reward
        if self.rewards is not None:
            self.rewards.update(reward)
            reward = self.rewards.standardise(reward)
        with torch.no_grad():
            chooser = self.nets if self.cfg.double_q else self.target
            next_greedy = chooser.agents(batch.next_obs).argmax(-1)
            discount = self.cfg.gamma ** batch.steps.float() * (1.0 - batch.terminated)
            target = reward + discount * self.target.joint.joint_q(batch.next_state, next_greedy)
        q_agents = self.nets.agents(batch.obs)
        joint_taken = self.nets.joint.joint_q(batch.state, batch.actions)
        with torch.no_grad():
            joint_greedy = self.nets.joint.joint_q(batch.state, q_agents.argmax(-1))
        td, opt, nopt = qtran_losses(q_agents, batch.actions, joint_taken, joint_greedy,
                                     self.nets.joint.value(batch.state), target)
        loss = td + self.cfg.opt_loss_coef * opt + self.cfg.nopt_min_loss_coef * nopt
        gradient_step(self.optimizer, loss, self.cfg.max_grad_norm)
        return {"loss_td": td.detach(), "loss_opt": opt.detach(), "loss_nopt": nopt.detach(),
                "q_taken": joint_taken.detach().mean()}

    def state_dict(self):
        return {"nets": self.nets.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rewards": self.rewards.state_dict() if self.rewards is not None else {}}

    def load_state_dict(self, state):
        self.nets.load_state_dict(state["nets"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.rewards is not None:
            self.rewards.load_state_dict(state["rewards"])


SPECS = (AlgorithmSpec("qtran", "QTRAN-base: joint Q, transformed sum of agent utilities and "
                       "V, with the opt and clamped nopt losses", QtranConfig, Qtran, {},
                       ENV_DEFAULTS,
                       load_agent=agent_loader(QtranConfig, Qtran)),)
