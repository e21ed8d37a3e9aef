"""Multilinear factor-graph Q-functions over agents' actions, with exact expectations
under circuit policies, argmax, and the exact ELBO (docs/design.md, section 3)."""

from factor_q.agent_q import AgentFactorQ
from factor_q.elbo import elbo, log_partition
from factor_q.graph import FactorGraph, NearestGraph
from factor_q.q import FactorQ
from factor_q.values import FactorValues

__all__ = ["AgentFactorQ", "FactorGraph", "FactorQ", "FactorValues", "NearestGraph", "elbo", "log_partition"]
