"""Questions to a trained joint policy ``pi(u | s)``: a broken agent, a lost agent, an
anomalous action.

Every helper but one takes an agent with ``distribution(states)`` returning a
:class:`~circuits.CircuitDistribution` (spn-ac, meanfield-ac, reinforce: ``result.agent`` of
``spnpolicy.train``, or :func:`load_agent` of a run directory) and global states
``[B, state_dim]``. :func:`best_joint_action` asks a team that acts by its factor-graph Q
(dcg; spn-ac and meanfield-ac acting by their critics) instead. Agents are numbered
``0..n-1``, actions ``0..k-1``. All answers are exact (the factor-graph argmax where the
team's own greedy rule is).

```python
from spnpolicy.inference import (anomaly_scores, best_joint_action, conditional_policy,
                                 drop_agents, load_agent, most_likely)
agent = load_agent("runs/cov4")                          # or spnpolicy.train(...).agent
dist = conditional_policy(agent, states, fixed={3: "noop"})  # agent 3 is broken: noop
dist.marginals()                                         # [B, n, k]; agent 3's row is one-hot
actions = dist.sample()                                  # [B, n], agent 3 always 0
most_likely(agent, states, fixed={3: 0})                 # [B, n]: the MPE given the evidence
lost = drop_agents(agent, states, [2])                   # marginal over agents 0, 1, 3
lost.sample(), lost.mode                                 # [B, 3] each
anomaly_scores(agent, states, joint_actions)             # [B, n]: -log pi(u_i | u_-i, s)
team = load_agent("runs/pp4", acting="critics")          # acts by its factor critics
best_joint_action(team, obs, fixed={0: "stay"})          # [B, n]: best when agent 0 is stuck
```
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from spnpolicy.envs.validation import as_integer
from spnpolicy.training.rundir import RunDir

__all__ = ["MAX_ENUMERATION", "MarginalPolicy", "anomaly_scores", "best_joint_action",
           "conditional_policy", "drop_agents", "load_agent", "load_run_config",
           "marginal_scores", "most_likely"]

#: Most joint actions of the kept agents that ``MarginalPolicy.mode`` enumerates per state.
MAX_ENUMERATION = 1 << 16

Fixed = Mapping[int, Any]
"""Evidence: agent index -> action, an int or an action name such as ``"noop"`` (every
state), or a sequence/tensor ``[B]`` of ints."""


# --- helpers ------------------------------------------------------------------------------
def _distribution(agent, states):
    """``agent.distribution(states)`` with batch shape ``[B]``, checked to be a circuit."""
    if not callable(getattr(agent, "distribution", None)):
        raise ValueError(f"agent must have a distribution(states) method (a circuit policy "
                         f"such as spn-ac's), got {type(agent).__name__}")
    dist = agent.distribution(states)
    for method in ("condition", "leave_one_out_log_prob", "marginals"):
        if not callable(getattr(dist, method, None)):
            raise ValueError(f"the agent's distribution ({type(dist).__name__}) cannot be "
                             f"queried: it has no {method}(); use a circuit policy (spn-ac, "
                             f"meanfield-ac, reinforce)")
    if len(dist.batch_shape) != 1:
        raise ValueError(f"states must be a batch [B, state_dim], which gives a distribution "
                         f"with batch shape [B]; got batch shape {list(dist.batch_shape)}")
    return dist


def _device(agent) -> torch.device:
    """The device of the agent's parameters (CPU for an agent without any)."""
    parameters = getattr(agent, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def _sizes(dist) -> tuple[int, int, int]:
    """``(B, n, k)`` of a batched policy distribution."""
    return dist.batch_shape[0], dist.event_shape[0], int(dist.support.upper_bound) + 1


def _agent_index(agent: Any, n: int, name: str) -> int:
    index = as_integer(agent)
    if index is None:
        raise ValueError(f"{name}: agent index must be an int, got {agent!r}")
    if not 0 <= index < n:
        raise ValueError(f"{name}: agent index {index} is out of range; the policy has {n} "
                         f"agents (0..{n - 1})")
    return index


def _evidence(fixed: Fixed | None, batch: int, n: int, k: int, device,
              names: tuple[str, ...] | None = None) -> torch.Tensor:
    """``fixed`` as evidence ``[B, n]`` (-1 = free), every entry validated."""
    evidence = torch.full((batch, n), -1, dtype=torch.long, device=device)
    if fixed is None:
        return evidence
    if not isinstance(fixed, Mapping):
        raise ValueError(f"fixed must be a dict {{agent index: action}}, got {fixed!r}")
    for agent, action in fixed.items():
        i = _agent_index(agent, n, "fixed")
        if isinstance(action, str):
            action = _named_action(names, action, i)
        value = torch.as_tensor(action, device=device)
        if value.is_floating_point() or value.dtype == torch.bool or value.dim() > 1 or (
                value.dim() == 1 and value.shape[0] != batch):
            raise ValueError(f"fixed[{i}] must be an action (int) or one action per state "
                             f"[B={batch}] ints, got {action!r}")
        bad = (value < 0) | (value >= k)
        if bool(bad.any()):
            shown = int(value) if value.dim() == 0 else int(value[bad][0])
            raise ValueError(f"fixed[{i}]: action {shown} is out of range; agents have {k} "
                             f"actions (0..{k - 1})")
        evidence[:, i] = value.long()
    return evidence


def _named_action(names: tuple[str, ...] | None, action: str, agent: int) -> int:
    """The index of the action called ``action`` (``names``: the agent's action_names)."""
    if names is None:
        raise ValueError(f"fixed[{agent}] = {action!r}: this agent has no action names; give "
                         f"an action index (int)")
    if action not in names:
        raise ValueError(f"fixed[{agent}]: unknown action {action!r}; expected an index "
                         f"0..{len(names) - 1} or one of {', '.join(names)}")
    return names.index(action)


def _condition(dist, evidence: torch.Tensor, what: str):
    """``dist`` given ``evidence [B, n]``; ValueError naming ``what`` when it is impossible."""
    impossible = torch.isneginf(dist.log_prob(evidence))
    if bool(impossible.any()):
        row = int(torch.nonzero(impossible)[0])
        raise ValueError(f"{what} has probability zero under the policy at state row {row} "
                         f"(evidence {evidence[row].tolist()}, -1 = free); the conditional "
                         f"policy is undefined")
    return dist.condition(evidence)


def _joint_actions(joint_actions, batch: int, n: int, k: int, device) -> torch.Tensor:
    actions = torch.as_tensor(joint_actions, device=device)
    if actions.is_floating_point() or actions.dtype == torch.bool:
        raise ValueError(f"joint_actions must be integers, got dtype {actions.dtype}")
    if actions.dim() == 1:
        actions = actions.unsqueeze(0)
    if tuple(actions.shape) != (batch, n):
        raise ValueError(f"joint_actions must have shape [B={batch}, n={n}] (one joint action "
                         f"per state), got {list(actions.shape)}")
    bad = (actions < 0) | (actions >= k)
    if bool(bad.any()):
        row, i = torch.nonzero(bad)[0].tolist()
        raise ValueError(f"joint_actions[{row}, {i}]: action {int(actions[row, i])} of agent "
                         f"{i} is out of range; agents have {k} actions (0..{k - 1})")
    return actions.long()


# --- queries ------------------------------------------------------------------------------
def conditional_policy(agent, states, fixed: Fixed):
    """``pi(u | s, u_F = fixed)``: the joint policy given some agents' actions.

    Args:
        agent: a circuit-policy agent (``distribution(states)``).
        states: global states ``[B, state_dim]``.
        fixed: ``{agent index: action}``; an action is an int, an action name (agents from
            ``spnpolicy.train`` or :func:`load_agent` know their env's, e.g. ``"noop"``), or
            ``[B]`` ints (one per state).

    Returns:
        A ``CircuitDistribution`` with batch shape ``[B]`` over all ``n`` agents; the fixed
        agents are point masses at their actions (``marginals()`` ``[B, n, k]``,
        ``sample()`` ``[B, n]``, ``mode`` ``[B, n]``, ``entropy()`` ``[B]``, ...).

    Raises ValueError for an agent index or action out of range, or evidence of probability
    zero under the policy.
    """
    dist = _distribution(agent, states)
    batch, n, k = _sizes(dist)
    names = getattr(agent, "action_names", None)
    evidence = _evidence(fixed, batch, n, k, _device(agent), names)
    return _condition(dist, evidence, f"fixed={dict(fixed)}")


def most_likely(agent, states, fixed: Fixed | None = None) -> torch.Tensor:
    """The most probable joint action ``[B, n]`` given the evidence ``fixed`` (MPE).

    Exact for deterministic circuits (spn-ac's selective circuit, mean field); for other
    circuits the max-product approximation (see ``CircuitDistribution.mode``). The fixed
    agents keep their given actions. Errors as :func:`conditional_policy`.
    """
    if not fixed:
        return _distribution(agent, states).mode
    return conditional_policy(agent, states, fixed).mode


def best_joint_action(agent, inputs, fixed: Fixed | None = None) -> torch.Tensor:
    """The best joint action ``[B, n]`` by the agent's factor-graph Q, given the ``fixed``
    agents' actions: ``argmax_u Q(s, u)`` over the joint actions with ``u_F = fixed``.

    This asks "what is best for the others when the agents ``F`` are stuck at these
    actions". :func:`conditional_policy` asks another question: what the joint policy
    does when it sees ``F`` take them.

    Args:
        agent: an agent that acts by a factor-graph Q, with ``values(inputs)`` (a
            ``FactorValues``) and ``best(values)``: dcg's, or spn-ac's and meanfield-ac's
            loaded with ``load_agent(run, acting="critics")``.
        inputs: what the agent acts on, ``[B, *agent.input_shape]``: per-agent observations
            ``[B, n, obs_dim]`` for observation critics, else global states
            ``[B, state_dim]``.
        fixed: ``{agent index: action}`` as in :func:`conditional_policy`; none gives the
            agent's greedy joint action.

    The maximum is exact where the agent's own greedy rule is (variable elimination on
    narrow graphs, else max-plus): the fixed actions enter through ``FactorValues.clamp``.
    """
    if not (callable(getattr(agent, "values", None)) and callable(getattr(agent, "best", None))):
        raise ValueError(f"agent must act by a factor-graph Q (values(inputs) and best(values)): "
                         f"dcg, or spn-ac / meanfield-ac from load_agent(run, acting=\"critics\"); "
                         f"got {type(agent).__name__}")
    shape = tuple(agent.input_shape)
    inputs = torch.as_tensor(inputs, dtype=torch.float32, device=_device(agent))
    if inputs.dim() == len(shape):
        inputs = inputs.unsqueeze(0)
    if tuple(inputs.shape[1:]) != shape:
        raise ValueError(f"inputs must have shape [B, {', '.join(map(str, shape))}] (what the "
                         f"agent acts on), got {list(inputs.shape)}")
    values = agent.values(inputs)
    if fixed:
        names = getattr(agent, "action_names", None)
        evidence = _evidence(fixed, values.batch_size, values.graph.num_agents,
                             values.num_actions, inputs.device, names)
        values = values.clamp(evidence)
    return agent.best(values)


def anomaly_scores(agent, states, joint_actions) -> torch.Tensor:
    """Per-agent anomaly scores ``-log pi(u_i | u_-i, s)`` ``[B, n]`` for observed joint
    actions ``[B, n]`` (one per state): how surprising agent ``i``'s action is given what
    the others did. ``+inf`` where the joint action has probability zero."""
    dist = _distribution(agent, states)
    batch, n, k = _sizes(dist)
    actions = _joint_actions(joint_actions, batch, n, k, _device(agent))
    return -dist.leave_one_out_log_prob(actions)


def marginal_scores(agent, states, joint_actions) -> torch.Tensor:
    """The per-agent marginal surprise ``-log pi(u_i | s)`` ``[B, n]``: the baseline that
    ignores the other agents' actions (equal to :func:`anomaly_scores` for a mean-field
    policy)."""
    dist = _distribution(agent, states)
    batch, n, k = _sizes(dist)
    actions = _joint_actions(joint_actions, batch, n, k, _device(agent))
    probs = dist.marginals().gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return -torch.log(probs)


def drop_agents(agent, states, agents: Iterable[int], fixed: Fixed | None = None
                ) -> MarginalPolicy:
    """The marginal policy ``pi(u_R | s)`` of the remaining agents ``R`` when ``agents`` are
    dropped (their actions unknown: summed out, not fixed), optionally given ``fixed``
    actions of remaining agents.

    Returns a :class:`MarginalPolicy` over the remaining agents in increasing index order
    (``.agents``); its tensors have ``m = n - len(agents)`` agent columns.
    """
    dist = _distribution(agent, states)
    _, n, k = _sizes(dist)
    dropped = sorted({_agent_index(a, n, "agents") for a in _as_list(agents, "agents")})
    if len(dropped) == n:
        raise ValueError(f"agents: cannot drop all {n} agents ({dropped})")
    if fixed:
        both = sorted(set(dropped) & {int(a) for a in fixed})
        if both:
            raise ValueError(f"agents {both} are both dropped and fixed; an agent's action is "
                             f"either unknown (dropped) or given (fixed)")
        dist = conditional_policy(agent, states, fixed)
    kept = tuple(i for i in range(n) if i not in dropped)
    return MarginalPolicy(dist, kept, k, _device(agent))


def _as_list(values: Iterable[int], name: str) -> list:
    if isinstance(values, (int, torch.Tensor)) and not isinstance(values, bool) and (
            not isinstance(values, torch.Tensor) or values.dim() == 0):
        return [values]
    try:
        return list(values)
    except TypeError:
        raise ValueError(f"{name} must be agent indices, got {values!r}") from None


class MarginalPolicy:
    """``pi(u_R | s)``: a policy distribution with some agents summed out.

    Marginalising a circuit is exact and cheap (the dropped agents' leaves evaluate to 1),
    so likelihoods, single-agent marginals, conditionals and samples stay exact. It loses
    determinism, so the mode is found by enumerating the kept agents' ``k**m`` joint actions
    (up to :data:`MAX_ENUMERATION`; marginal MAP is NP-hard on circuits in general) and
    there is no exact entropy.

    Attributes:
        agents: the kept agents' indices in the full policy (increasing); column ``j`` of
            every tensor here is agent ``agents[j]``.
        batch_shape: ``[B]``.
    """

    def __init__(self, dist, agents: tuple[int, ...], num_actions: int,
                 device: torch.device | str = "cpu") -> None:
        self.dist = dist
        self.agents = agents
        self.num_actions = num_actions
        self.batch_shape = dist.batch_shape
        self._n = dist.event_shape[0]
        self._index = torch.tensor(agents, dtype=torch.long, device=device)

    def _full(self, value: torch.Tensor) -> torch.Tensor:
        """``[..., m]`` -> ``[..., n]`` with -1 (summed out) for the dropped agents."""
        value = torch.as_tensor(value, device=self._index.device)
        if value.is_floating_point() or value.dim() == 0 or value.shape[-1] != len(self.agents):
            raise ValueError(f"value must be an integer tensor [..., m={len(self.agents)}] (the "
                             f"actions of agents {list(self.agents)}), got "
                             f"{value.dtype} {list(value.shape)}")
        full = torch.full(value.shape[:-1] + (self._n,), -1, dtype=torch.long,
                          device=value.device)
        full[..., self._index] = value.long()
        return full

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log pi(u_R | s)``: value ``[*sample, B, m]`` -> ``[*sample, B]``."""
        return self.dist.log_prob(self._full(value))

    def marginals(self) -> torch.Tensor:
        """Single-agent marginals ``[B, m, k]``."""
        return self.dist.marginals()[:, self._index]

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """Exact samples ``[*sample_shape, B, m]`` (joint samples with the dropped agents'
        columns removed)."""
        return self.dist.sample(sample_shape, generator=generator)[..., self._index]

    def leave_one_out_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log pi(u_i | u_{R \\ i}, s)`` for each kept agent: value ``[B, m]`` -> ``[B, m]``
        (``m + 1`` upward passes)."""
        full = self._full(value)
        joint = self.dist.log_prob(full)
        out = []
        for i in self.agents:
            rest = full.clone()
            rest[..., i] = -1
            out.append(joint - self.dist.log_prob(rest))
        return torch.stack(out, dim=-1)

    def condition(self, fixed: Fixed) -> MarginalPolicy:
        """Condition on ``{agent index: action}`` of kept agents (indices of the full policy)."""
        batch, n, k = _sizes(self.dist)
        for agent in fixed:
            if _agent_index(agent, n, "fixed") not in self.agents:
                raise ValueError(f"fixed: agent {int(agent)} was dropped; condition on agents "
                                 f"{list(self.agents)}")
        evidence = _evidence(fixed, batch, n, k, self._index.device)
        return MarginalPolicy(_condition(self.dist, evidence, f"fixed={dict(fixed)}"),
                              self.agents, k, self._index.device)

    @property
    def mode(self) -> torch.Tensor:
        """The exact most probable actions of the kept agents ``[B, m]``, by enumeration."""
        m, k = len(self.agents), self.num_actions
        if k**m > MAX_ENUMERATION:
            raise ValueError(f"the mode of a marginal over {m} agents enumerates k**m = {k**m} "
                             f"joint actions (limit {MAX_ENUMERATION}): marginal MAP is NP-hard "
                             f"on circuits in general; use sample() instead")
        batch = self.batch_shape[0]
        candidates = torch.tensor(list(itertools.product(range(k), repeat=m)),
                                  dtype=torch.long, device=self._index.device)   # [k^m, m]
        values = candidates.unsqueeze(1).expand(-1, batch, -1)                    # [k^m, B, m]
        with torch.no_grad():
            best = self.log_prob(values).argmax(0)                                # [B]
        return candidates[best]

    def __repr__(self) -> str:
        return (f"MarginalPolicy(batch_shape={list(self.batch_shape)}, agents="
                f"{list(self.agents)})")


# --- loading trained agents ---------------------------------------------------------------
def load_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a run directory (or of the run a checkpoint belongs to):
    ``algo``, ``env``, ``seed``, ``env_kwargs``, ``config``."""
    return RunDir.locate(path)[0].read_config()


def load_agent(path: str | os.PathLike, acting: str | None = None):
    """Rebuild the trained agent of a run directory (``config.json`` +
    ``checkpoints/last.pt``) or of a checkpoint file in one, in eval mode on the CPU
    (whatever device the run trained on; ``agent.to(device)`` moves it), through the
    algorithm's registry entry (``AlgorithmSpec.load_agent``); spn-ac and its variants give
    a ``JointPolicy``, the circuit policy the queries here take (with ``acting="critics"``
    a ``CriticsAgent``: its ``act`` is the critics' argmax, its ``distribution`` the joint
    policy's). The agent knows its env's ``action_names``.

    ``acting`` (``"policy"`` or ``"critics"``; spn-ac and its variants only) overrides the
    run's own ``acting``: a run trained to act by its policy can be played by its critics,
    and the other way round.

    Raises ValueError when the path holds no run, its files cannot be read (naming the
    file), or the run's algorithm cannot rebuild its agent; ValueError for another
    ``acting``, or an ``acting`` for a run without spn-ac's critics.
    """
    from spnpolicy.algos.registry import get_algorithm
    from spnpolicy.algos.spn_ac import ACTINGS, SpnAcConfig
    from spnpolicy.envs.registry import action_names

    run, checkpoint = RunDir.locate(path)
    saved = run.read_config()
    if "device" in saved["config"]:                 # the checkpoint is read onto the CPU
        saved["config"] = saved["config"] | {"device": "cpu"}
    spec = get_algorithm(saved["algo"])
    loader = spec.load_agent
    if acting is not None:
        if acting not in ACTINGS:
            raise ValueError(f"acting must be one of {ACTINGS}, got {acting!r}")
        if loader is not None or spec.config_cls is not SpnAcConfig:
            raise ValueError(f"acting={acting!r}: run {str(path)!r} trained {saved['algo']!r}, "
                             f"which has no joint policy and factor critics to choose between; "
                             f"acting is for spn-ac and its variants")
        saved["config"] = saved["config"] | {"acting": acting}
    if loader is None and spec.config_cls is SpnAcConfig:
        loader = (_critics_agent if saved["config"].get("acting") == "critics"
                  else _joint_policy)
    if loader is None:
        raise ValueError(f"run {str(path)!r} trained {saved['algo']!r}, which has no joint "
                         f"circuit policy and no load_agent in its registry entry; load_agent "
                         f"reads spn-ac runs, its variants, and algorithms that register one")
    agent = loader(saved, run.load_checkpoint(checkpoint))
    num_actions = getattr(agent, "num_actions", None)
    if isinstance(num_actions, int):
        agent.action_names = action_names(saved["env"], num_actions)
    return agent.eval()


def _critics_agent(saved: dict[str, Any], payload: dict[str, Any]):
    """spn-ac's trained team that acts by its critics (``acting="critics"``): a
    :class:`~spnpolicy.algos.spn_ac.CriticsAgent` rebuilt with the run's algorithm."""
    from spnpolicy.algos.spn_ac import SpnAc, SpnAcConfig
    from spnpolicy.training.offpolicy import agent_loader

    return agent_loader(SpnAcConfig, SpnAc)(saved, payload)


def _joint_policy(saved: dict[str, Any], payload: dict[str, Any]):
    """spn-ac's (and its variants') trained ``JointPolicy`` from a run's config and checkpoint."""
    from spnpolicy.algos.spn_ac import joint_policy
    from spnpolicy.training.vec_env import make_vec_env

    cfg = saved["config"]
    envs = make_vec_env(saved["env"], 1, **saved["env_kwargs"])
    try:
        # param_head, agent_ids and sibling_pairs are absent from older runs' configs
        policy = joint_policy(envs, cfg["policy"], cfg["width"], cfg["policy_hidden"],
                              cfg.get("param_head", "flat"), cfg.get("agent_ids", False),
                              cfg.get("sibling_pairs", False))
    finally:
        envs.close()
    # the modules sit at the top of the payload, or in the shared loop's "algorithm" entry
    modules = payload.get("modules") or payload.get("algorithm", {}).get("modules", {})
    try:
        policy.load_state_dict(modules["policy"])
    except (KeyError, RuntimeError, TypeError):
        raise ValueError(f"the checkpoint does not hold the {saved['algo']!r} policy that the "
                         f"run's config describes (written by another run or version)"
                         ) from None
    return policy
