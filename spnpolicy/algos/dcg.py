"""``dcg``: Deep Coordination Graphs (Boehmer, Kurin & Whiteson 2020).

The joint value is a coordination graph of utilities and pairwise payoffs,

    ``Q(o, u) = 1/|V| sum_i f_i(u_i | h_i) + 1/|E| sum_{ij in E} f_ij(u_i, u_j | h_i, h_j)``,

computed by :class:`factor_q.AgentFactorQ`: every agent's embedding ``h_i`` comes from one
MLP shared by the agents, on its own observation and a one-hot of its id; one linear
utility head and one linear payoff head on ``[h_i, h_j]`` serve every agent and edge, with
symmetric payoffs (the average of ``f_ij`` and ``f_ji`` transposed), so the number of
parameters does not grow with the graph. The greedy joint action is
``FactorValues.argmax()``: exact variable elimination when the graph's induced width
allows (always for the default graphs), max-plus otherwise; ``greedy_method="max_plus"``
uses the paper's message passing instead, cheaper on dense graphs such as the 20 random
pairs of 6 coverage agents (which cover every pair, so elimination builds ``6**6``-entry
tables). Training is deep Q-learning with double-Q targets, epsilon-greedy exploration
and a target network, the loop shared with iql/vdn/qmix
(:class:`spnpolicy.algos.q_learning.QLearner`).

Differences from the paper: ``h_i`` is a feedforward embedding of the agent's current
observation, not the hidden state of a recurrent network over its history (the paper's
agents also see their last action), and transitions are replayed one at a time; like the
paper's, the network reads no global state, and the trained agent acts on per-agent
observations ``[B, n, obs_dim]``. Low-rank payoffs (``payoff_rank``) give each agent of an
edge ``rank`` vectors from ``[h_i, h_j]`` through one head shared by both positions, so a
table has CP rank at most ``payoff_rank`` and needs no averaging; the paper's code
averages the two orderings' rank-``K`` tables (rank up to ``2K``). Default graph:
``auto`` (:func:`~spnpolicy.algos.critics.build_factor_graph`): complete for the matrix
games, 20 random pairs for 6 coverage agents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from factor_q import AgentFactorQ, FactorGraph, FactorValues
from spnpolicy.algos.config import AlgorithmSpec, checked, integer, one_of
from spnpolicy.algos.critics import FACTOR_GRAPHS, build_factor_graph
from spnpolicy.algos.q_learning import ENV_DEFAULTS as Q_ENV_DEFAULTS
from spnpolicy.algos.q_learning import QLearningConfig, QModel, q_agent_loader, q_learner
from spnpolicy.training import VecEnv

__all__ = ["ENV_DEFAULTS", "GREEDY_METHODS", "SPECS", "DcgConfig", "DcgQ"]

#: How the greedy joint action is found (``FactorValues.argmax`` methods).
GREEDY_METHODS = ("auto", "elimination", "max_plus")


#: Per-env defaults: the Q-learners', and on predator-prey the paper's fully connected graph.
ENV_DEFAULTS = Q_ENV_DEFAULTS | {"predator-prey": {"factor_graph": "complete"}}


@dataclass(frozen=True)
class DcgConfig(QLearningConfig):
    """Hyperparameters of dcg (per-env overrides in ``ENV_DEFAULTS``)."""

    factor_graph: str = checked("auto", one_of(*FACTOR_GRAPHS))
    """Coordination graph: auto, complete, random, line, ring, star, none (build_factor_graph)."""
    num_factors: int = checked(20, integer(0))
    """Number of edges of a random graph."""
    graph_seed: int = checked(0, integer(0))
    """Seed of the random graph (the same graph for every run seed)."""
    payoff_rank: int = checked(0, integer(0))
    """CP rank of the payoff tables (DCG's low-rank payoffs); 0 for full tables."""
    greedy_method: str = checked("auto", one_of(*GREEDY_METHODS))
    """Greedy joint action: auto (exact elimination when narrow enough), elimination, max_plus."""
    max_plus_iterations: int = checked(8, integer(1))
    """Message-passing rounds of max_plus (the paper's choice; faster, approximate on loops)."""


class DcgQ(QModel):
    """The DCG value ``Q(o, u)`` over ``graph``; :meth:`values` gives its ``FactorValues``.

    Args:
        graph: the coordination graph (pairwise; order-3 factors work the same way).
        obs_dim: one agent's observation size; ``num_actions``: ``k``.
        hidden: widths of the agents' shared MLP.
        rank: CP rank of the payoffs, or ``None`` for full tables.
        explore_epsilon: exploration rate of :meth:`act` when not deterministic.
        method, iterations: ``FactorValues.argmax``'s method and max-plus rounds.
    """

    needs_obs = True

    def __init__(self, graph: FactorGraph, obs_dim: int, num_actions: int,
                 hidden: tuple[int, ...] = (64, 64), rank: int | None = None,
                 explore_epsilon: float = 0.05, method: str = "auto",
                 iterations: int = 8) -> None:
        super().__init__()
        self.method, self.iterations = method, iterations
        self.q = AgentFactorQ(graph, obs_dim, num_actions, hidden=hidden, unary=True,
                              rank=rank)
        self.num_actions, self.explore_epsilon = num_actions, explore_epsilon
        counts = [len(graph.factor_ids(order)) for order in (2, 3)]
        # the paper's 1/|V| and 1/|E| normalisation, kept inside the values so that
        # evaluate and argmax see the same Q
        self._scales = (1.0 / graph.num_agents, *(1.0 / max(c, 1) for c in counts))

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.q.graph.num_agents, self.q.input_dim)

    def values(self, obs: torch.Tensor) -> FactorValues:
        """Observations ``[B, n, obs_dim]`` -> utilities ``[B, n, k]`` and payoff tables,
        normalised."""
        v = self.q.values(obs)
        unary, pair, triple = self._scales
        return FactorValues.trusted(v.graph, v.unary * unary,
                                    None if v.pairwise is None else v.pairwise * pair,
                                    None if v.triple is None else v.triple * triple)

    def best(self, values: FactorValues) -> torch.Tensor:
        """The best joint actions ``[B, n]`` of ``values``: exact by variable elimination
        (``auto`` when the graph is narrow enough, see ``FactorValues.argmax``), else
        max-plus."""
        return values.argmax(self.method, iterations=self.iterations)

    def greedy(self, state: torch.Tensor | None, obs: torch.Tensor) -> torch.Tensor:
        """Greedy joint actions ``[B, n]``: :meth:`best` of :meth:`values`."""
        return self.best(self.values(obs))

    def evaluate(self, state: torch.Tensor | None, obs: torch.Tensor,
                 actions: torch.Tensor) -> torch.Tensor:
        return self.values(obs).evaluate(actions)

    def load_state_dict(self, state_dict, *args, **kwargs):
        check_current(state_dict)
        return super().load_state_dict(state_dict, *args, **kwargs)


def check_current(model: Mapping[str, Any]) -> None:
    """ValueError if ``model`` is the state dict of the earlier dcg network (on the global
    state, its payoff network told the edge's agents by id embeddings: ``agent_in``), which
    the current one (on observations) cannot load."""
    if any(".agent_in." in key for key in model):
        raise ValueError("the checkpoint was written by an earlier dcg network (utilities and "
                         "payoffs on the global state), which this version of dcg (on each "
                         "agent's observation) cannot load; train the run again")


def build(cfg: DcgConfig, envs: VecEnv) -> DcgQ:
    """The DCG network for ``cfg`` on ``envs``."""
    graph = build_factor_graph(cfg.factor_graph, envs.num_agents, cfg.num_factors, 2,
                               seed=cfg.graph_seed)
    return DcgQ(graph, envs.obs_dim, envs.num_actions, cfg.hidden, cfg.payoff_rank or None,
                cfg.epsilon_finish, cfg.greedy_method, cfg.max_plus_iterations)


_load_agent = q_agent_loader(DcgConfig, build)


def load_agent(run: dict[str, Any], payload: dict[str, Any]) -> DcgQ:
    """The registry entry's ``load_agent``, saying so when the checkpoint holds the earlier
    dcg network (:func:`check_current`)."""
    algorithm = payload.get("algorithm")
    if isinstance(algorithm, Mapping) and isinstance(algorithm.get("model"), Mapping):
        check_current(algorithm["model"])
    return _load_agent(run, payload)


SPECS = (
    AlgorithmSpec("dcg", "deep coordination graph: shared utility and symmetric payoff heads "
                  "on the agents' observations, greedy joint action by variable elimination",
                  DcgConfig, q_learner(build), {}, ENV_DEFAULTS, load_agent=load_agent),
)
