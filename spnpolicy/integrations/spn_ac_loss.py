"""spn-ac's losses as a TorchRL ``LossModule`` (extra ``benchmarl``).

The same exact losses as :mod:`spnpolicy.algos.spn_ac` (its ``soft_value``,
``critic_loss`` and ``actor_loss``), on a replayed tensordict of one agent group, with the
group's observations concatenated as the global state ``s`` ``[B, n * obs]``, the team
reward the mean of the agents' rewards, and an episode terminated when any agent's is:

- ``loss_qvalue``: ``sum_j mean (Q_j(s, u) - (r + gamma (1 - term) V(s')))^2``, with
  ``V(s') = min_j E_pi[Qbar_j(s', .)] + alpha H(pi(. | s'))`` under the target critics;
- ``loss_actor``: ``-mean(min_j E_pi[Q_j(s, .)] + alpha H(pi(. | s)))``, the negative exact
  ELBO, plus mode guidance ``-beta mean log pi(u*(s) | s)``;
- ``loss_alpha`` (when alpha is tuned): ``alpha (H(pi) - target)``, ``H`` a constant.

Each loss reaches only its own parameters (critics, policy, ``log_alpha``), so a trainer
may backpropagate and step them one after the other. All three are computed before any
step: the actor sees the critics of this update's start (spn-ac's own loop steps the
critics first). The target critics are ``target_critic_params``, for TorchRL's
``SoftUpdate`` / ``HardUpdate``.
"""

from __future__ import annotations

import math
import warnings

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictParams
from torch import nn
from torchrl.objectives import LossModule

from spnpolicy.algos.critics import TwinFactorQ
from spnpolicy.algos.policies import JointPolicy
from spnpolicy.algos.spn_ac import ModeGuidance, actor_loss, critic_loss, soft_value
from spnpolicy.integrations.torchrl import group_state

__all__ = ["SpnAcLoss"]


class SpnAcLoss(LossModule):
    """spn-ac's critic, actor and temperature losses on one agent group's transitions.

    Args:
        policy: the joint policy over the group's ``n`` agents (``state_dim = n * obs``).
        critic: twin factor-graph critics on the same states and actions.
        gamma: discount.
        alpha: the entropy temperature (its initial value when ``autotune_alpha``).
        autotune_alpha: tune alpha so that ``H(pi)`` tracks ``target_entropy_scale * n log k``.
        target_entropy_scale: the target entropy as a fraction of ``n log k``.
        regulariser: ``entropy`` (``alpha H``) or ``kl_uniform`` (``alpha (H - n log k)`` in
            the soft value).
        mode_guidance: weight of ``-log pi(u* | s)`` on the states where every critic's
            exact argmax is ``u*`` and ``pi(u* | s) < mode_floor * k**-n``; per factor (with
            a warning) where that argmax needs tables of more than ``MODE_TABLE_SIZE``
            entries per state (spn-ac's ``ModeGuidance``).
        mode_floor: the guidance's floor, in units of the uniform probability ``k**-n``.
        group, observation_key: where the group's data lies in the tensordict.

    ``forward(td)`` reads ``(group, observation_key)`` ``[B, n, obs]``, ``(group, "action")``
    ``[B, n]`` and, under ``"next"``, the observation, ``(group, "reward")`` and
    ``(group, "terminated")`` ``[B, n, 1]`` (any leading batch dims are flattened), and
    returns a tensordict of scalars: ``loss_qvalue``, ``loss_actor``, ``loss_alpha`` (when
    tuned), ``alpha`` and ``entropy`` (the batch mean of ``H(pi(. | s))``).
    """

    critic: TwinFactorQ
    critic_params: TensorDictParams
    target_critic_params: TensorDictParams

    def __init__(self, policy: JointPolicy, critic: TwinFactorQ, *, gamma: float,
                 alpha: float, autotune_alpha: bool, target_entropy_scale: float,
                 regulariser: str, mode_guidance: float, mode_floor: float = 1.0,
                 group: str = "agents",
                 observation_key: str = "observation") -> None:
        super().__init__()
        n, k = policy.num_agents, policy.num_actions
        if (critic.graph.num_agents, critic.num_actions, critic.state_dim) != \
                (n, k, policy.state_dim):
            raise ValueError(f"critic must be over the policy's {n} agents, {k} actions and "
                             f"state_dim {policy.state_dim}, got {critic.graph.num_agents}, "
                             f"{critic.num_actions} and {critic.state_dim}")
        if regulariser not in ("entropy", "kl_uniform"):
            raise ValueError(f"regulariser must be 'entropy' or 'kl_uniform', got {regulariser!r}")
        self.policy = policy
        self.convert_to_functional(critic, "critic", create_target_params=True)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)),
                                      requires_grad=autotune_alpha)
        self.gamma, self.autotune_alpha = gamma, autotune_alpha
        self.target_entropy = target_entropy_scale * n * math.log(k)
        self.value_offset = n * math.log(k) if regulariser == "kl_uniform" else 0.0
        self.group, self.observation_key = group, observation_key
        self.guidance = ModeGuidance(critic.graph, k, mode_guidance, mode_floor)
        if self.guidance.note:
            warnings.warn(self.guidance.note, stacklevel=2)

    def _states(self, td: TensorDictBase, *prefix: str) -> torch.Tensor:
        return group_state(td.get((*prefix, self.group, self.observation_key)), self.policy)

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        td = tensordict.reshape(-1)
        group = self.group
        state, next_state = self._states(td), self._states(td, "next")
        actions = td.get((group, "action")).long()                          # [B, n]
        reward = td.get(("next", group, "reward")).flatten(1).mean(1)       # [B]
        terminated = td.get(("next", group, "terminated")).flatten(1).any(1)
        alpha = self.log_alpha.detach().exp()

        with torch.no_grad():
            with self.target_critic_params.to_module(self.critic):
                next_values = self.critic.values(next_state)
            next_value = soft_value(next_values, self.policy.distribution(next_state),
                                    alpha, self.value_offset)
            target = reward + self.gamma * (~terminated).to(reward.dtype) * next_value
        with self.critic_params.to_module(self.critic):
            loss_qvalue = critic_loss(self.critic.evaluate(state, actions), target)
            with torch.no_grad():
                values = self.critic.values(state)
        loss_actor, entropy = actor_loss(values, self.policy.distribution(state), alpha,
                                         **self.guidance.loss_arguments(values))
        out = {"loss_qvalue": loss_qvalue, "loss_actor": loss_actor}
        if self.autotune_alpha:
            out["loss_alpha"] = self.log_alpha.exp() * (entropy.detach()
                                                        - self.target_entropy).mean()
        out.update(alpha=alpha, entropy=entropy.detach().mean())
        return TensorDict(out, [])
