"""``dcg``: Deep Coordination Graphs (Boehmer, Kurin & Whiteson 2020).

The joint value is a coordination graph of utilities and pairwise payoffs,

    ``Q(s, u) = 1/|V| sum_i f_i(u_i | s) + 1/|E| sum_{ij in E} f_ij(u_i, u_j | s)``,

computed by :class:`factor_q.FactorQ` with shared heads (``share_params=True``): one
utility head and one payoff network for all edges, told the edge's agents by their ids,
with symmetric payoffs (the average of ``f_ij`` and ``f_ji`` transposed), so the number of
parameters does not grow with the graph. The greedy joint action is
``FactorValues.argmax()``: exact variable elimination when the graph's induced width
allows (always for the default graphs), max-plus otherwise; ``greedy_method="max_plus"``
uses the paper's message passing instead, cheaper on dense graphs such as the 20 random
pairs of 6 coverage agents (which cover every pair, so elimination builds ``6**6``-entry
tables). Training is deep Q-learning with double-Q targets, epsilon-greedy exploration
and a target network, the loop shared with iql/vdn/qmix
(:class:`spnpolicy.algos.q_learning.QLearner`).

Differences from the paper: utilities and payoffs are conditioned on the global state
(through one MLP torso) instead of each agent's recurrent history, and transitions are
replayed one at a time; the trained agent therefore acts on global states ``[B, S]``,
like spn-ac. Default graph: ``auto`` (:func:`~spnpolicy.algos.critics.build_factor_graph`):
complete for the matrix games, 20 random pairs for 6 coverage agents.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from factor_q import FactorGraph, FactorQ, FactorValues
from spnpolicy.algos.config import AlgorithmSpec, checked, integer, one_of
from spnpolicy.algos.critics import FACTOR_GRAPHS, build_factor_graph
from spnpolicy.algos.q_learning import (ENV_DEFAULTS, QLearningConfig, QModel, q_agent_loader,
                                         q_learner)
from spnpolicy.training import VecEnv

__all__ = ["ENV_DEFAULTS", "GREEDY_METHODS", "SPECS", "DcgConfig", "DcgQ"]

#: How the greedy joint action is found (``FactorValues.argmax`` methods).
GREEDY_METHODS = ("auto", "elimination", "max_plus")


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
    """The DCG value ``Q(s, u)`` over ``graph``; :meth:`values` gives its ``FactorValues``.

    Args:
        graph: the coordination graph (pairwise; order-3 factors work the same way).
        state_dim: global state size ``S``; ``num_actions``: ``k``.
        hidden: widths of the state MLP torso.
        rank: CP rank of the payoffs, or ``None`` for full tables.
        explore_epsilon: exploration rate of :meth:`act` when not deterministic.
        method, iterations: ``FactorValues.argmax``'s method and max-plus rounds.
    """

    needs_obs = False

    def __init__(self, graph: FactorGraph, state_dim: int, num_actions: int,
                 hidden: tuple[int, ...] = (64, 64), rank: int | None = None,
                 explore_epsilon: float = 0.05, method: str = "auto",
                 iterations: int = 8) -> None:
        super().__init__()
        self.method, self.iterations = method, iterations
        self.q = FactorQ(graph, state_dim, num_actions, hidden=hidden, unary=True, rank=rank,
                         share_params=True)
        self.num_actions, self.explore_epsilon = num_actions, explore_epsilon
        counts = [len(graph.factor_ids(order)) for order in (2, 3)]
        # the paper's 1/|V| and 1/|E| normalisation, kept inside the values so that
        # evaluate and argmax see the same Q
        self._scales = (1.0 / graph.num_agents, *(1.0 / max(c, 1) for c in counts))

    @property
    def input_shape(self) -> tuple[int]:
        return (self.q.state_dim,)

    def values(self, state: torch.Tensor) -> FactorValues:
        """``state`` ``[B, S]`` -> utilities ``[B, n, k]`` and payoff tables, normalised."""
        v = self.q(state)
        unary, pair, triple = self._scales
        return FactorValues(v.graph, v.unary * unary,
                            None if v.pairwise is None else v.pairwise * pair,
                            None if v.triple is None else v.triple * triple)

    def greedy(self, state: torch.Tensor, obs: None = None) -> torch.Tensor:
        """Greedy joint actions ``[B, n]``: exact by variable elimination (``auto`` when the
        graph is narrow enough, see ``FactorValues.argmax``), else max-plus."""
        return self.values(state).argmax(self.method, iterations=self.iterations)

    def evaluate(self, state: torch.Tensor, obs: None, actions: torch.Tensor) -> torch.Tensor:
        return self.values(state).evaluate(actions)


def build(cfg: DcgConfig, envs: VecEnv) -> DcgQ:
    """The DCG network for ``cfg`` on ``envs``."""
    graph = build_factor_graph(cfg.factor_graph, envs.num_agents, cfg.num_factors, 2,
                               seed=cfg.graph_seed)
    return DcgQ(graph, envs.state_dim, envs.num_actions, cfg.hidden, cfg.payoff_rank or None,
                cfg.epsilon_finish, cfg.greedy_method, cfg.max_plus_iterations)


SPECS = (
    AlgorithmSpec("dcg", "deep coordination graph: shared utility and symmetric payoff heads, "
                  "greedy joint action by variable elimination", DcgConfig, q_learner(build), {},
                  ENV_DEFAULTS,
                  load_agent=q_agent_loader(DcgConfig, build)),
)
