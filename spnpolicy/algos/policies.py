"""Joint policies ``pi(u | s)`` over ``n`` agents' ``k`` actions, given the global state.

A :class:`JointPolicy` is an MLP state encoder whose output parametrises either a circuit
(``selective``: correlated and tractable; ``mean_field``: independent agents) or, for the
``softmax`` reference, a categorical over all ``k**n`` joint actions
(:class:`JointCategorical`). Both distributions answer the queries the actor-critic needs:
``log_prob``, ``sample``, ``mode``, ``entropy``, ``marginals`` and ``scope_marginals`` (so
``FactorValues.expectation`` works on either).

```python
policy = JointPolicy(state_dim=16, num_agents=3, num_actions=6, kind="selective", width=16)
dist = policy.distribution(states)                    # states [B, 16] -> batch_shape [B]
actions = policy.act(states, deterministic=True)      # [B, 3] joint actions (the mode)
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, constraints

from circuits.nodes import Categorical, Product
from circuits.region_tree import RegionTree
from spnpolicy.algos.policy_structures import BUILTIN_POLICIES, policy_circuit
from spnpolicy.algos.sibling_pairs import Reordered, pair_order, sibling_slots
from spnpolicy.training.observations import agent_input, observation_dict

__all__ = ["AgentGroupHead", "GroupHeads", "JointCategorical", "JointPolicy", "MAX_SOFTMAX_AGENTS",
           "PARAM_HEADS", "POLICY_KINDS", "SCORE_BOUND", "SharedGroupHead", "mlp"]

POLICY_KINDS = BUILTIN_POLICIES
#: How a circuit policy's parameters come from its input: ``flat`` (one MLP on the global
#: state whose output has one logit per circuit parameter, so its last layer grows with the
#: team), ``shared`` (:class:`SharedGroupHead`: one state encoder and one head per group
#: size, shared by every parameter group, told apart by a learned embedding of the group's
#: id) or ``agents`` (:class:`AgentGroupHead`: the agents' own observations, one encoder
#: shared by every agent, each group reading the agents of its scope).
PARAM_HEADS = ("flat", "shared", "agents")
#: Width of the group-id embeddings and the shared state features of ``param_head="shared"``.
GROUP_EMBED_DIM = 32
#: ``param_head="agents"`` bounds each agent's action scores and each group correction to
#: ``(-B, B)`` as ``b(x) = B x / sqrt(B^2 + x^2)``: an agent's least likely action keeps at
#: least about ``exp(-4 B)`` of its most likely one's probability, and ``b``'s slope never
#: reaches 0 (tanh's does, in float32, past ``|x| > 9 B``), so a policy that turned
#: near-deterministic keeps live ELBO and entropy gradients and can widen again.
SCORE_BOUND = 8.0
#: The softmax policy enumerates k**n joint actions; it is a reference for small n only.
MAX_SOFTMAX_AGENTS = 5


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, out_scale: float = 1.0) -> nn.Sequential:
    """ReLU MLP ``in_dim -> hidden... -> out_dim``; the last layer's weights scaled by
    ``out_scale`` (small values start a policy near its uniform distribution)."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    last = nn.Linear(width, out_dim)
    with torch.no_grad():
        last.weight.mul_(out_scale)
        last.bias.mul_(out_scale)
    return nn.Sequential(*layers, last)


class JointCategorical(Distribution):
    """A categorical over the ``k**n`` joint actions, with agent 0 the most significant digit.

    Args:
        logits: ``[B, k**n]`` unnormalised log-probabilities.
        num_agents: ``n``; ``num_actions``: ``k``.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, logits: torch.Tensor, num_agents: int, num_actions: int) -> None:
        if logits.dim() != 2 or logits.shape[1] != num_actions**num_agents:
            raise ValueError(f"logits must have shape [B, k**n = {num_actions**num_agents}], "
                             f"got {list(logits.shape)}")
        self.logp = torch.log_softmax(logits, dim=-1)
        self.n, self.k = num_agents, num_actions
        self._digits = num_actions ** torch.arange(num_agents - 1, -1, -1, device=logits.device)
        super().__init__(batch_shape=logits.shape[:1], event_shape=torch.Size([num_agents]),
                         validate_args=False)

    @property
    def support(self):
        return constraints.integer_interval(0, self.k - 1)

    def _decode(self, index: torch.Tensor) -> torch.Tensor:
        return (index.unsqueeze(-1) // self._digits) % self.k

    def _table(self) -> torch.Tensor:
        """Probabilities ``[B, k, ..., k]`` (axis ``1 + i`` is agent ``i``)."""
        return self.logp.exp().view((-1,) + (self.k,) * self.n)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value [*sample, B, n]`` (integer actions in ``range(k)``, or ``-1`` for an agent
        marginalised out) -> ``[*sample, B]``."""
        batch = self.logp.shape[0]
        if not isinstance(value, torch.Tensor) or value.is_floating_point() or \
                value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"value must be an integer tensor of joint actions [*sample, "
                             f"B={batch}, n={self.n}], got "
                             f"{getattr(value, 'dtype', type(value).__name__)}")
        if value.dim() < 2 or value.shape[-1] != self.n or value.shape[-2] != batch:
            raise ValueError(f"value must have shape [*sample, B={batch}, n={self.n}], got "
                             f"{list(value.shape)}")
        if value.numel() and (value.min() < -1 or value.max() >= self.k):
            raise ValueError(f"value must hold actions in range({self.k}) or -1 (marginalised "
                             f"out), got values from {int(value.min())} to {int(value.max())}")
        if value.numel() and value.min() < 0:   # sum over the joint actions that agree
            joint = self._decode(torch.arange(self.k ** self.n, device=value.device))
            agree = ((value.unsqueeze(-2) == joint) | (value.unsqueeze(-2) < 0)).all(-1)
            return self.logp.masked_fill(~agree, -math.inf).logsumexp(-1)
        index = (value.long() * self._digits).sum(-1)
        logp = self.logp.expand(index.shape + self.logp.shape[-1:])
        return logp.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None):
        shape = torch.Size(sample_shape) + self.logp.shape
        with torch.no_grad():
            u = torch.rand(shape, generator=generator, dtype=self.logp.dtype,
                           device=self.logp.device).clamp_(1e-20, 1.0)
            index = (self.logp - torch.log(-torch.log(u))).argmax(-1)
        return self._decode(index)

    @property
    def mode(self) -> torch.Tensor:
        return self._decode(self.logp.argmax(-1))

    def entropy(self) -> torch.Tensor:
        return -(self.logp.exp() * self.logp).sum(-1)

    def marginals(self) -> torch.Tensor:
        """``[B, n, k]`` single-agent marginals."""
        table = self._table()
        axes = range(1, self.n + 1)
        return torch.stack([table.sum(dim=tuple(a for a in axes if a != 1 + i))
                            if self.n > 1 else table for i in range(self.n)], dim=1)

    def scope_marginals(self, scopes) -> torch.Tensor:
        """``[B, len(scopes), k, k(, k)]`` joint marginals, axes in each scope's order."""
        table = self._table()
        out = []
        for scope in scopes:
            others = tuple(1 + a for a in range(self.n) if a not in scope)
            joint = table.sum(dim=others) if others else table
            order = sorted(range(len(scope)), key=lambda p: scope[p])  # kept axes are sorted
            out.append(joint.permute(0, *(1 + order.index(p) for p in range(len(scope)))))
        return torch.stack(out, dim=1)


class GroupHeads(nn.Module):
    """Circuit logits ``[B, P]`` from features of the parameter groups (the support of one
    leaf or the children of one sum): group ``g`` of ``s`` parameters gets
    ``head_s(relu(f_g + e_g))``, ``f_g`` its feature ``[B, d]``, ``e_g`` row ``g`` of a
    learned ``[G, d]`` embedding and ``head_s`` a linear map ``d -> s`` shared by every group
    of size ``s``. Only the embedding grows with the number of groups.

    Args:
        group_sizes: parameters per group ``[G]``, groups in the circuit's parameter order
            (each a contiguous range of the flat parameters).
        embed_dim: ``d``, the width of the features and embeddings.
    """

    def __init__(self, group_sizes: Sequence[int], embed_dim: int = GROUP_EMBED_DIM) -> None:
        super().__init__()
        sizes = [int(size) for size in group_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"group_sizes must be positive parameter counts, got {sizes}")
        self.embedding = nn.Parameter(0.1 * torch.randn(len(sizes), embed_dim))
        # groups by size, and where each of their parameters lies in the flat order
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.sizes = sorted(set(sizes))
        order = []
        for size in self.sizes:
            groups = [g for g, other in enumerate(sizes) if other == size]
            self.register_buffer(f"groups_{size}", torch.tensor(groups), persistent=False)
            order += [starts[g] + j for g in groups for j in range(size)]
        # flat parameter p is entry inverse[p] of the size-sorted concatenation
        self.register_buffer("inverse", torch.from_numpy(np.argsort(order)), persistent=False)
        self.heads = nn.ModuleDict({str(size): mlp(embed_dim, (), size, out_scale=0.01)
                                    for size in self.sizes})

    def heads_of(self, features: torch.Tensor) -> torch.Tensor:
        """Group features ``[B, G, d]`` (or ``[B, 1, d]``, one for every group) -> logits
        ``[B, P]``."""
        parts = []
        for size in self.sizes:
            groups = getattr(self, f"groups_{size}")
            own = features if features.shape[1] == 1 else features.index_select(1, groups)
            z = torch.relu(own + self.embedding[groups])                 # [B, G_s, d]
            parts.append(self.heads[str(size)](z).flatten(1))           # [B, G_s * size]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        return out.index_select(1, self.inverse)


class SharedGroupHead(GroupHeads):
    """Circuit logits ``[B, P]`` from one state encoder and :class:`GroupHeads`: every
    group's feature is ``f(state)``, the encoder MLP ``state_dim -> hidden -> embed_dim``.
    On a mean-field circuit the groups are the agents (``e_g`` an agent-id embedding); on a
    selective circuit they are its sums. Only the embedding grows with the team; the encoder
    and heads depend on the group sizes alone.

    Args:
        state_dim: global state size.
        group_sizes: parameters per group (see :class:`GroupHeads`).
        hidden: encoder widths; ``embed_dim``: width of the features and embeddings.
    """

    def __init__(self, state_dim: int, group_sizes: Sequence[int], hidden: Sequence[int],
                 embed_dim: int = GROUP_EMBED_DIM) -> None:
        encoder = mlp(state_dim, hidden, embed_dim)
        super().__init__(group_sizes, embed_dim)
        self.encoder = encoder

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every group shares (all but the embedding)."""
        return [*self.encoder.parameters(), *self.heads.parameters()]

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """``states [B, state_dim]`` -> logits ``[B, P]``, ``P = sum(group_sizes)``."""
        return self.heads_of(self.encoder(states).unsqueeze(1))


class AgentGroupHead(GroupHeads):
    """Circuit logits ``[B, P]`` from per-agent inputs ``[B, n, input_dim]``, every network
    shared by all agents and all parameter groups, so that the parameter count does not grow
    with the team (only the group embedding does): unnormalised log-weights, normalised
    globally (:meth:`circuits.Circuit.locally_normalised`).

    Each agent is embedded by one MLP, ``h_i = relu(MLP(x_i))`` ``[B, n, d]``, and scores its
    own actions, ``f_i = b(F h_i)`` ``[B, n, k]``, ``b(x) = B x / sqrt(B^2 + x^2)`` with
    ``B`` the ``bound`` (:data:`SCORE_BOUND`). A parameter's log-weight is the scores of
    the agents' actions it fixes (a leaf's state; a sum edge into a product, the indicator
    leaves among the product's children), plus a correction: a parameter group (a sum's
    weights, or a leaf's distribution) reads two scopes of agents, the two factors' scopes
    where its children are products of two factors (the sums of a region tree: the region's
    left and right child), else its own scope twice; a scope is read as its agents' mean
    embedding. Groups reading the same pair of scopes share one feature ``u = relu(M
    [mean_A h, mean_B h])``, the group's feature in :class:`GroupHeads`, and each correction
    is bounded by ``b`` too. With the corrections at zero the distribution is the product of
    the agents' ``softmax(f_i)``: the mean-field policy is the head's starting point,
    correlations what it adds.

    Args:
        input_dim: one agent's input size.
        circuit: the policy circuit (its parameter groups and their scopes).
        hidden: widths of the agent encoder MLP; ``embed_dim``: ``d``.
        bound: ``B``, a positive float (``inf``: unbounded).
        agent_ids: append a one-hot of each agent's id to its input (``x_i`` becomes
            ``[x_i, e_i]``, ``[B, n, input_dim + n]``), so that agents with equal inputs can
            score their actions differently; without it the head is symmetric in the agents
            up to the circuit's structure.
        sibling_pairs: the circuit's places are filled per state (``forward``'s ``order``,
            :mod:`~spnpolicy.algos.sibling_pairs`), and each pair of sibling slots ``(a, b)``
            scores its joint actions, ``g_ab = b((G(h_a, h_b) + G(h_b, h_a)^T) / 2)``
            ``[B, k, k]``, ``G`` an MLP ``2 d -> d -> k k`` shared by every pair: a sum edge
            into the product of ``a``'s and ``b``'s indicators adds ``g_ab`` at their
            actions, so siblings can be correlated (or parted) whatever their positions in
            the team.
    """

    #: its global normalisation runs the circuit engine, which torch.compile does not trace
    #: as one graph (:attr:`JointPolicy.traces_whole`)
    traces_whole = False

    def __init__(self, input_dim: int, circuit, hidden: Sequence[int],
                 embed_dim: int = GROUP_EMBED_DIM, bound: float = SCORE_BOUND,
                 agent_ids: bool = False, sibling_pairs: bool = False) -> None:
        if not bound > 0:
            raise ValueError(f"bound must be a positive float (inf: unbounded), got {bound!r}")
        n = circuit.num_vars
        encoder = mlp(input_dim + (n if agent_ids else 0), hidden, embed_dim)
        super().__init__(_group_sizes(circuit), embed_dim)
        self.bound = float(bound)
        self.encoder, self.mix = encoder, nn.Linear(2 * embed_dim, embed_dim)
        self.agent_ids = agent_ids
        self.register_buffer("ids", torch.eye(n), persistent=False)
        plan = circuit._plan_on(torch.device("cpu"))
        # the circuit stays the policy's module, not a submodule of this head
        self._normalise = circuit.locally_normalised
        k = plan.max_states
        self.scores = mlp(embed_dim, (), k, out_scale=0.01)
        # each parameter's (agent, action) scores, as entries of the flat [n * k] scores
        # (entry n * k: a zero)
        fixed = [_fixed_actions(plan, p) for p in range(plan.num_params)]
        width = max((len(f) for f in fixed), default=0)
        self.register_buffer("score_index", torch.tensor(
            [[v * k + s for v, s in f] + [n * k] * (width - len(f)) for f in fixed],
            dtype=torch.long).view(plan.num_params, width), persistent=False)
        group_of = plan.param_group.tolist()
        nodes, node_of = plan.nodes, plan.param_node.tolist()
        leaf_of, leaf_var = plan.param_leaf.tolist(), plan.leaf_var.tolist()
        scopes: dict[int, tuple] = {}                       # group -> (scope A, scope B)
        for p, g in enumerate(group_of):
            if g in scopes:
                continue
            if node_of[p] >= 0:
                node = nodes[node_of[p] - 1]
                children = node.children
                if all(isinstance(c, Product) and len(c.children) == 2 for c in children):
                    a, b = (frozenset().union(*(c.children[i].scope for c in children))
                            for i in (0, 1))
                    scopes[g] = (tuple(sorted(a)), tuple(sorted(b)))
                else:
                    scopes[g] = (tuple(sorted(node.scope)),) * 2
            else:
                scopes[g] = ((leaf_var[leaf_of[p]],),) * 2
        pairs = sorted(set(scopes.values()))
        index = {pair: u for u, pair in enumerate(pairs)}
        pool = torch.zeros(2, len(pairs), n)                # mean over each side's agents
        for u, pair in enumerate(pairs):
            for side, scope in enumerate(pair):
                pool[side, u, list(scope)] = 1.0 / len(scope)
        self.register_buffer("pool", pool, persistent=False)
        self.register_buffer("pair_of", torch.tensor([index[scopes[g]]
                                                      for g in range(plan.num_param_groups)]),
                             persistent=False)
        self.sibling_pairs = sibling_pairs
        if sibling_pairs:
            siblings, singles = sibling_slots(fixed, n)
            self.register_buffer("siblings", siblings, persistent=False)       # [Q, 2]
            self.register_buffer("singles", singles, persistent=False)         # [S]
            slot_pair = {tuple(pair): q for q, pair in enumerate(siblings.tolist())}
            zero = len(slot_pair) * k * k
            joint = []                                  # each parameter's entry of g, or zero
            for f in fixed:
                agents = dict(f)
                q = slot_pair.get(tuple(sorted(agents))) if len(agents) == 2 else None
                if q is None:
                    joint.append(zero)
                else:
                    a, b = siblings[q].tolist()
                    joint.append(q * k * k + agents[a] * k + agents[b])
            self.register_buffer("joint_index", torch.tensor(joint, dtype=torch.long),
                                 persistent=False)
            self.pair_scores = mlp(2 * embed_dim, (embed_dim,), k * k, out_scale=0.01)

    def _bounded(self, x: torch.Tensor) -> torch.Tensor:
        if math.isinf(self.bound):
            return x
        return x * torch.rsqrt(1.0 + (x / self.bound).square())

    def action_scores(self, h: torch.Tensor) -> torch.Tensor:
        """The agents' bounded action scores ``f`` ``[B, n, k]`` from their embeddings ``h``
        ``[B, n, d]``."""
        return self._bounded(self.scores(h))

    def joint_scores(self, h: torch.Tensor) -> torch.Tensor:
        """Each sibling slot pair's bounded, symmetric joint-action scores ``[B, Q, k, k]``
        from the slots' embeddings ``h`` ``[B, n, d]`` (``sibling_pairs``)."""
        a, b = h[:, self.siblings[:, 0]], h[:, self.siblings[:, 1]]         # [B, Q, d]
        k = int(math.isqrt(self.pair_scores[-1].out_features))
        ab = self.pair_scores(torch.cat([a, b], -1)).unflatten(-1, (k, k))
        ba = self.pair_scores(torch.cat([b, a], -1)).unflatten(-1, (k, k))
        return self._bounded(0.5 * (ab + ba.transpose(-1, -2)))

    def forward(self, inputs: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """``inputs [B, n, input_dim]`` -> logits ``[B, P]``, each group normalised. With
        ``sibling_pairs``, ``order`` ``[B, n]`` (long) is the agent in each of the circuit's
        slots (:func:`~spnpolicy.algos.sibling_pairs.pair_order`), and the logits are the
        slots'."""
        if (order is None) == self.sibling_pairs:
            raise ValueError("order (the agent in each slot [B, n]) is given with "
                             "sibling_pairs and only then")
        if self.agent_ids:
            inputs = torch.cat([inputs, self.ids.expand(inputs.shape[0], -1, -1)], -1)
        if order is not None:
            inputs = inputs.gather(1, order[..., None].expand_as(inputs))
        h = torch.relu(self.encoder(inputs))                                # [B, n, d]
        sides = torch.einsum("sun,bnd->bsud", self.pool, h)                 # [B, 2, U, d]
        u = torch.relu(self.mix(torch.cat([sides[:, 0], sides[:, 1]], -1)))  # [B, U, d]
        correction = self._bounded(self.heads_of(u.index_select(1, self.pair_of)))  # [B, P]
        scores = self.action_scores(h).flatten(1)                           # [B, n k]
        scores = torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], 1)
        fixed = scores.index_select(1, self.score_index.flatten())          # [B, P w]
        logits = correction + fixed.unflatten(1, self.score_index.shape).sum(-1)
        if self.sibling_pairs:
            joint = self.joint_scores(h).flatten(1)                         # [B, Q k k]
            joint = torch.cat([joint, joint.new_zeros(joint.shape[0], 1)], 1)
            logits = logits + joint.index_select(1, self.joint_index)
        return self._normalise(logits)


def _fixed_actions(plan, p: int) -> list[tuple[int, int]]:
    """The ``(agent, action)`` pairs that parameter ``p`` of ``plan`` fixes: a leaf's state,
    or for a sum edge the indicator leaves below its child that no other parameter chooses
    (reached through products and one-child sums, which have no parameter)."""
    if int(plan.param_leaf[p]) >= 0:
        return [(int(plan.leaf_var[plan.param_leaf[p]]), int(plan.param_state[p]))]
    return _indicators_below(plan.nodes[int(plan.param_child[p]) - 1])


def _indicators_below(node) -> list[tuple[int, int]]:
    if isinstance(node, Categorical):
        return [(node.var, node.support[0])] if len(node.support) == 1 else []
    if isinstance(node, Product) or len(node.children) == 1:
        return [pair for child in node.children for pair in _indicators_below(child)]
    return []


def _group_sizes(circuit) -> list[int]:
    """Parameters per parameter group of ``circuit``, groups in parameter order."""
    plan = circuit._plan_on(torch.device("cpu"))
    return torch.bincount(plan.param_group, minlength=plan.num_param_groups).tolist()


class JointPolicy(nn.Module):
    """``pi(u | s)``: state encoder MLP -> parameters of a joint action distribution.

    Args:
        state_dim: global state size.
        num_agents, num_actions: ``n`` agents with ``k`` actions each.
        kind: ``selective`` (deterministic selective circuit of ``width``), ``mean_field``
            (product of per-agent categoricals, as a circuit), ``softmax`` (all ``k**n``
            joint actions; ``n <= MAX_SOFTMAX_AGENTS``), a name registered with
            :func:`~spnpolicy.algos.policy_structures.register_policy`, or the user's own
            structure: a callable ``(num_agents, num_actions) -> Circuit`` or a Circuit
            (validated by :func:`~spnpolicy.algos.policy_structures.policy_circuit`).
        width: sum nodes per region of the selective circuit.
        hidden: encoder widths.
        param_head: one of :data:`PARAM_HEADS`: ``flat`` (an MLP with one output per circuit
            parameter), ``shared`` (:class:`SharedGroupHead`) or ``agents``
            (:class:`AgentGroupHead`); the last two for circuit policies only.
        obs_dim: with ``param_head="agents"``, one agent's observation size: the policy
            then reads per-agent observations ``[B, n, obs_dim]`` instead of global states.
        agent_ids: with ``param_head="agents"``, each agent's input carries a one-hot of its
            id (:class:`AgentGroupHead`).
        sibling_pairs: with ``param_head="agents"`` and a circuit with two-agent regions
            (:func:`~spnpolicy.algos.sibling_pairs.sibling_slots`), the agents with the
            nearest observations fill the circuit's sibling places per state, each sibling
            pair scores its joint actions (:class:`AgentGroupHead`), and
            :meth:`distribution` returns a :class:`~spnpolicy.algos.sibling_pairs.Reordered`.

    ``input_shape`` is what :meth:`distribution` and :meth:`act` read: ``(state_dim,)``, or
    ``(n, obs_dim)`` for ``param_head="agents"``.
    """

    def __init__(self, state_dim: int, num_agents: int, num_actions: int,
                 kind="selective", width: int = 16, hidden: Sequence[int] = (128, 128),
                 param_head: str = "flat", obs_dim: int | None = None,
                 agent_ids: bool = False, sibling_pairs: bool = False):
        super().__init__()
        if param_head not in PARAM_HEADS:
            raise ValueError(f"param_head must be one of {PARAM_HEADS}, got {param_head!r}")
        for name, value in (("agent_ids", agent_ids), ("sibling_pairs", sibling_pairs)):
            if value and param_head != "agents":
                raise ValueError(f"{name} needs param_head='agents' (per-agent inputs), got "
                                 f"param_head={param_head!r}")
        if param_head != "flat" and kind == "softmax":
            raise ValueError(f"param_head={param_head!r} needs a circuit policy; the softmax "
                             f"policy has no parameter groups to share a head across")
        if (param_head == "agents") != (obs_dim is not None):
            raise ValueError(f"obs_dim is the agents' observation size for param_head='agents' "
                             f"and only for it; got param_head={param_head!r}, obs_dim={obs_dim!r}")
        if kind == "softmax" and num_agents > MAX_SOFTMAX_AGENTS:
            raise ValueError(f"the softmax policy enumerates k**n joint actions and is for "
                             f"n <= {MAX_SOFTMAX_AGENTS} agents, got n = {num_agents}")
        self.state_dim, self.num_agents, self.num_actions = state_dim, num_agents, num_actions
        self.kind = kind
        self.circuit = policy_circuit(kind, num_agents, num_actions, width)
        if self.circuit is None:
            out_dim = num_actions**num_agents
        else:
            # the circuit's own weights are unused: its parameters come from the encoder
            self.circuit.requires_grad_(False)
            out_dim = self.circuit.num_params
        # the circuit's region-tree layout (selective), whose distribution traces whole
        self.tree = None if self.circuit is None else RegionTree.from_circuit(self.circuit)
        self.param_head, self.sibling_pairs = param_head, sibling_pairs
        self.input_shape = ((num_agents, obs_dim) if param_head == "agents"
                            else (state_dim,))
        if param_head == "agents":
            self.encoder = AgentGroupHead(obs_dim, self.circuit, hidden, agent_ids=agent_ids,
                                          sibling_pairs=sibling_pairs)
        elif param_head == "shared":
            self.encoder = SharedGroupHead(state_dim, _group_sizes(self.circuit), hidden)
        else:
            self.encoder = mlp(state_dim, hidden, out_dim, out_scale=0.01)

    def _inputs(self, observations) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        x = torch.as_tensor(observations, dtype=torch.float32, device=device)
        shape = self.input_shape
        if x.dim() == len(shape):
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != shape:
            what = ("per-agent observations [B, n, obs_dim]" if len(shape) == 2
                    else "global states [B, state_dim]")
            raise ValueError(f"observations must be {what} = [B, "
                             f"{', '.join(map(str, shape))}] or one of them, got "
                             f"{list(x.shape)}")
        return x

    def distribution(self, observations) -> Distribution:
        """``pi(. | s)`` for global states ``[B, state_dim]`` (array or tensor; ``[state_dim]``
        is a batch of one), or with ``param_head="agents"`` for the agents' observations
        ``[B, n, obs_dim]`` (``input_shape``): a ``CircuitDistribution`` (or
        :class:`JointCategorical` for ``softmax``, a ``Reordered`` one with
        ``sibling_pairs``) with batch shape ``[B]`` over the ``n`` agents' actions."""
        x = self._inputs(observations)
        if self.sibling_pairs:
            order = pair_order(x, self.encoder.siblings, self.encoder.singles)
            return Reordered(self.circuit.distribution(self.encoder(x, order)), order)
        params = self.encoder(x)
        if self.circuit is None:
            return JointCategorical(params, self.num_agents, self.num_actions)
        return self.circuit.distribution(params)

    @property
    def needs_obs(self) -> bool:
        """Whether :meth:`act` reads the agents' observations ``[B, n, obs_dim]``
        (``param_head="agents"``) rather than global states ``[B, state_dim]``."""
        return self.param_head == "agents"

    @property
    def traces_whole(self) -> bool:
        """Whether :meth:`distribution`'s training queries are pure tensor ops, with no
        branch on values, so that torch.compile traces an update through them as one graph:
        the region tree (selective) and the softmax, not the circuit engine (its exactness
        guard recomputes the columns that lost precision), nor a parameter head that runs
        the engine itself (``traces_whole = False`` on the head)."""
        if not getattr(self.encoder, "traces_whole", True):
            return False
        return self.tree is not None or self.circuit is None

    @torch.no_grad()
    def act(self, observations, deterministic: bool = True,
            generator: torch.Generator | None = None):
        """Joint actions ``[B, n]`` for global states ``[B, state_dim]`` (or ``[n]`` for one
        state ``[state_dim]``): the mode when ``deterministic``, else a sample. Returns a
        numpy int64 array for numpy (or list) input, a LongTensor for tensor input."""
        if isinstance(observations, Mapping):   # TypeError: a dict holds no global state
            observation_dict(observations, self.num_agents, None)
        x, single = agent_input(observations, self.input_shape,
                                next(self.encoder.parameters()).device)
        dist = self.distribution(x)
        actions = dist.mode if deterministic else dist.sample(generator=generator)
        if single:
            actions = actions[0]
        return actions if isinstance(observations, torch.Tensor) else actions.cpu().numpy()
