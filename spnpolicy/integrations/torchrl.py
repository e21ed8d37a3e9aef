"""A TorchRL actor over a circuit joint policy (extra ``benchmarl``).

TorchRL keeps a group of ``n`` agents under one key of a tensordict, every entry with the
group's batch dims ``[*B, n]``. :func:`joint_actor` reads the group's observations
``[*B, n, obs]``, concatenates them into the joint policy's state ``[*B, n * obs]``, and
writes

- ``(group, "action")`` ``[*B, n]``: one joint action, sampled from ``pi(u | s)`` (the mode
  under ``ExplorationType.DETERMINISTIC``);
- ``(group, "log_prob")`` ``[*B, n]``: the exact joint log-probability ``log pi(u | s)``,
  the same number in every agent's entry (sum over agents counts it ``n`` times);
- ``"<group>_circuit_params"`` ``[*B, num_params]``: the circuit's logits for each state.

```python
from spnpolicy.algos.policies import JointPolicy
from spnpolicy.integrations.torchrl import joint_actor

policy = JointPolicy(state_dim=3 * 18, num_agents=3, num_actions=5)
actor = joint_actor(policy, group="agents")          # a ProbabilisticActor
td = actor(td)             # td["agents", "observation"] [*B, 3, 18] -> the keys above
```
"""

from __future__ import annotations

import math

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import Distribution, constraints
from torchrl.modules import ProbabilisticActor

from spnpolicy.algos.policies import JointCategorical, JointPolicy

__all__ = ["JointActionDistribution", "JointStateEncoder", "group_input", "group_state",
           "joint_actor", "params_key"]


def params_key(group: str) -> str:
    """The tensordict key of the circuit parameters :func:`joint_actor` writes for ``group``."""
    return f"{group}_circuit_params"


class JointStateEncoder(nn.Module):
    """The joint policy's state encoder on a group's observations.

    ``forward(observation [*B, n, obs]) -> [*B, num_params]``: the ``n`` agents'
    observations concatenated into the state ``[*B, n * obs]`` (or kept per agent for a
    policy with ``param_head="agents"``), then ``policy.encoder`` (whose output is the
    circuit's logits, or the softmax policy's ``k**n`` logits).
    """

    def __init__(self, policy: JointPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        x = group_state(observation, self.policy)
        shape = self.policy.input_shape
        lead = x.shape[:x.dim() - len(shape)]
        return self.policy.encoder(x.reshape(-1, *shape)).reshape(*lead, -1)


def group_input(observation: torch.Tensor, shape: tuple[int, ...],
                reader: str = "the module") -> torch.Tensor:
    """A group's observations ``[*B, n, obs]`` as the input of a module that reads
    ``shape``: per agent ``[*B, n, obs]`` for ``shape = (n, obs)``, concatenated into the
    group's state ``[*B, n * obs]`` for ``shape = (n * obs,)``. Float32.

    Raises ValueError, naming ``reader``, when the observations fit neither."""
    per_agent = len(shape) == 2
    fits = observation.dim() >= 2 and (
        tuple(observation.shape[-2:]) == tuple(shape) if per_agent
        else observation.shape[-2] * observation.shape[-1] == shape[0])
    if not fits:
        want = (f"[*B, {shape[0]}, {shape[1]}]" if per_agent
                else f"[*B, n, obs] with n * obs = {shape[0]}")
        raise ValueError(f"observation must have shape {want} for {reader}'s input "
                         f"{list(shape)}, got {list(observation.shape)}")
    x = observation if per_agent else observation.flatten(-2)
    return x.to(torch.float32)


def group_state(observation: torch.Tensor, policy: JointPolicy) -> torch.Tensor:
    """A group's observations ``[*B, n, obs]`` as the joint policy's input
    (:func:`group_input` of its ``input_shape``): the states ``[*B, n * obs]``, or the
    observations themselves for ``param_head="agents"``.

    Raises ValueError when ``n`` is not the policy's agent count or the sizes do not fit."""
    n = policy.num_agents
    if observation.dim() < 2 or observation.shape[-2] != n:
        raise ValueError(f"observation must have shape [*B, n={n}, obs] (the policy's "
                         f"{n} agents), got {list(observation.shape)}")
    return group_input(observation, policy.input_shape, "the policy")


def _joint_distribution(policy: JointPolicy, params: torch.Tensor) -> Distribution:
    """``pi(. | s)`` from the encoder's output ``params [B, num_params]``: the same
    distribution as ``policy.distribution(states)`` for ``params =
    policy.encoder(states)``."""
    if policy.circuit is None:
        return JointCategorical(params, policy.num_agents, policy.num_actions)
    return policy.circuit.distribution(params)


class JointActionDistribution(Distribution):
    """A joint policy's ``pi(u | s)`` laid out as TorchRL lays out a group's actions.

    Args:
        params: the joint policy's encoder output ``[*B, num_params]``
            (:class:`JointStateEncoder`).
        policy: the :class:`~spnpolicy.algos.policies.JointPolicy` whose circuit (or
            softmax) they parametrise.

    ``batch_shape`` is ``[*B, n]`` and ``event_shape`` ``[]``, as for ``n`` per-agent
    categoricals, but the ``n`` actions are drawn jointly: ``sample(shape)`` is
    ``[*shape, *B, n]``, ``log_prob(u [*S, *B, n])`` is the joint ``log pi(u | s)``
    broadcast to ``[*S, *B, n]`` and ``entropy()`` the joint entropy broadcast to ``[*B, n]``.
    :attr:`joint` is the distribution itself (batch ``[prod(B)]``, event ``[n]``) for the
    other exact queries (``marginals``, ``scope_marginals``, ``condition``).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, params: torch.Tensor, policy: JointPolicy) -> None:
        if params.dim() < 1:
            raise ValueError("params must have shape [*B, num_params], got a scalar")
        self.policy = policy
        self._lead = params.shape[:-1]
        self.joint = _joint_distribution(policy, params.reshape(-1, params.shape[-1]))
        super().__init__(batch_shape=self._lead + (policy.num_agents,),
                         event_shape=torch.Size(), validate_args=False)

    @property
    def support(self):
        return constraints.integer_interval(0, self.policy.num_actions - 1)

    def _flat(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """``[*S, *B, n]`` -> ``[prod(S), prod(B), n]`` and ``S``."""
        expected = tuple(self.batch_shape)
        if value.dim() < len(expected) or tuple(value.shape[value.dim() - len(expected):]) \
                != expected:
            raise ValueError(f"value must have shape [*sample_shape, *batch_shape="
                             f"{list(expected)}], got {list(value.shape)}")
        sample = value.shape[:value.dim() - len(expected)]
        return value.reshape(math.prod(sample), math.prod(self._lead),
                             self.policy.num_agents), sample

    def _broadcast(self, joint: torch.Tensor, sample=torch.Size()) -> torch.Tensor:
        """Joint values ``[prod(S) * prod(B)]`` -> ``[*S, *B, n]``, equal across agents."""
        return joint.reshape(tuple(sample) + tuple(self._lead)).unsqueeze(-1).expand(
            tuple(sample) + tuple(self.batch_shape))

    def joint_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log pi(u | s)`` for joint actions ``[*S, *B, n]`` -> ``[*S, *B]``."""
        flat, sample = self._flat(value)
        return self.joint.log_prob(flat).reshape(tuple(sample) + tuple(self._lead))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.joint_log_prob(value).unsqueeze(-1).expand(value.shape)

    def entropy(self) -> torch.Tensor:
        return self._broadcast(self.joint.entropy())

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        draws = self.joint.sample(sample_shape)              # [*S, prod(B), n]
        return draws.reshape(tuple(sample_shape) + tuple(self.batch_shape))

    @property
    def mode(self) -> torch.Tensor:
        """The most probable joint action ``[*B, n]`` (exact on deterministic circuits)."""
        return self.joint.mode.reshape(self.batch_shape)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """:attr:`mode`: what TorchRL acts under ``ExplorationType.DETERMINISTIC``."""
        return self.mode

    def __repr__(self) -> str:
        return (f"JointActionDistribution(batch_shape={list(self.batch_shape)}, "
                f"joint={self.joint!r})")


def joint_actor(policy: JointPolicy, group: str = "agents", observation_key: str = "observation",
                spec=None) -> ProbabilisticActor:
    """A TorchRL ``ProbabilisticActor`` acting with ``policy`` for one agent group.

    Args:
        policy: the joint policy over the group's ``n`` agents; its ``state_dim`` is
            ``n * obs``, the group's observations concatenated (with
            ``param_head="agents"`` its input is the observations ``[n, obs]`` themselves).
        group: the group's key in the tensordict.
        observation_key: the observation's key inside the group.
        spec: the group's action spec (``action_spec[group, "action"]``), or None.

    Reads ``(group, observation_key)`` ``[*B, n, obs]``; writes the keys listed in the
    module docstring. The actor's parameters are ``policy``'s.
    """
    if not isinstance(policy, JointPolicy):
        raise TypeError(f"policy must be a JointPolicy, got {type(policy).__name__}")
    if policy.sibling_pairs:
        raise ValueError("a policy with sibling_pairs=True orders its agents per state, which "
                         "the actor's logits (the circuit's parameters alone) do not carry; "
                         "use sibling_pairs=False here")
    encoder = TensorDictModule(JointStateEncoder(policy), in_keys=[(group, observation_key)],
                               out_keys=[params_key(group)])
    return ProbabilisticActor(module=encoder, spec=spec, in_keys={"params": params_key(group)},
                              out_keys=[(group, "action")],
                              distribution_class=JointActionDistribution,
                              distribution_kwargs={"policy": policy}, return_log_prob=True,
                              log_prob_key=(group, "log_prob"))
