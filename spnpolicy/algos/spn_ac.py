"""spn-ac: the exact-ELBO max-ent actor-critic (docs/design.md, section 4).

A joint policy ``pi(u | s)`` over the ``n`` agents' actions (a selective circuit) and twin
factor-graph critics ``Q_1, Q_2`` with Polyak targets ``Qbar_j``. Both losses are exact,
with no sampling:

- soft value: ``V(s') = min_j E_pi[Qbar_j(s', u')] + alpha H(pi(. | s'))``
- critic:     ``sum_j mean (Q_j(s, u) - (r + gamma (1 - term) V(s')))^2`` (with ``n_step > 1``:
  the discounted n-step return and ``gamma^m V(s_{t+m})``)
- actor:      ``-(min_j E_pi[Q_j(s, u)] + alpha H(pi(. | s)))``, the negative exact ELBO
  (docs/design.md, sections 3-4), differentiated through the circuit (the min is over the
  two critics' exact expectations, per state), plus the mode guidance
  ``-mode_guidance log pi(u* | s)`` toward the critics' best joint action ``u*(s)``
  (exact log-likelihood of the circuit, exact argmax of the factor graph where it is narrow)
- alpha:      fixed, or tuned so that ``H(pi)`` tracks ``target_entropy_scale * n log k``.

Collecting samples ``pi``; greedy acting is the policy's mode, or with ``acting="critics"``
the first critic's best joint action (:class:`CriticsAgent`).

Variants on the same code path (registry names): ``meanfield-ac`` (``policy="mean_field"``),
``reinforce`` (``actor_gradient="reinforce"``: the same circuit, the actor gradient by the
score function over ``reinforce_samples`` samples per state with a leave-one-out baseline)
and ``exact-softmax`` (``policy="softmax"``: all ``k**n`` joint actions enumerated, for
``n <= 5``; its optimum is the Boltzmann policy, the reference optimum of the objective).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factor_q import AgentFactorQ, FactorGraph, FactorQ, FactorValues, NearestGraph
from factor_q.argmax import eliminate, elimination_plan, table_size
from spnpolicy.algos.config import (COVERAGE_BUDGET, MATRIX_BUDGET, AlgorithmSpec, OffPolicyConfig,
                                    boolean, checked, fraction, integer, non_negative, number,
                                    one_of, positive, rate, widths)
from spnpolicy.algos.critics import FACTOR_GRAPHS, build_factor_graph
from spnpolicy.algos.policies import PARAM_HEADS, JointPolicy
from spnpolicy.algos.policy_structures import check_policy
from spnpolicy.algos.q_learning import EXPLORATIONS, epsilon_greedy, linear_epsilon
from spnpolicy.training import Batch, VecEnv, make_target
from spnpolicy.training.offpolicy import ActingAgent, OffPolicyAlgorithm, TargetSync
from spnpolicy.training.optim import adam, compile_acting, compile_update

__all__ = ["ACTINGS", "GREEDY_ENVS_AGENTS", "MAX_PLUS_ITERATIONS", "MODE_TABLE_SIZE", "SPECS",
           "CriticsAgent", "ModeGuidance", "SpnAc", "SpnAcConfig", "actor_loss", "critic_loss",
           "critics_factor_modes", "critics_mode", "greedy_rows", "mode_log_floor",
           "scope_log_probs", "scope_mask", "soft_value"]


#: How a trained spn-ac team can act greedily (``SpnAcConfig.acting``).
ACTINGS = ("policy", "critics")

#: Which agents of the greedy env copies explore (``SpnAcConfig.greedy_envs_agents``).
GREEDY_ENVS_AGENTS = ("all", "unsettled")


@dataclass(frozen=True)
class SpnAcConfig(OffPolicyConfig):
    """Hyperparameters of spn-ac and its variants (per-env overrides in ``ENV_DEFAULTS``).

    For teams of many agents, ``param_head="agents"`` (or ``"shared"``) gives the circuit
    policy a parameter network whose size hardly grows with the team (the flat head's last
    layer has one output per circuit parameter), and ``critic_input="agents"`` does the same
    for the critics."""

    policy: Any = checked("selective", lambda name, value: check_policy(value, name))
    """Joint policy: selective circuit, mean_field circuit, softmax (enumerates k**n), a name
    registered with register_policy, or (from Python) a builder (n, k) -> Circuit or a
    Circuit, deterministic, whose parameters the policy network predicts."""
    actor_gradient: str = checked("exact", one_of("exact", "reinforce"))
    """Actor gradient: exact (the ELBO through the circuit) or reinforce (score function)."""
    width: int = checked(16, integer(1))
    """Sum nodes per region of the selective circuit (k**n makes it fully expressive)."""
    policy_hidden: tuple[int, ...] = checked((128, 128), widths)
    """Hidden widths of the policy's state encoder MLP."""
    param_head: str = checked("flat", one_of(*PARAM_HEADS))
    """How the circuit's parameters come from the policy's input: flat (one MLP on the
    state, one output per circuit parameter), shared (one state encoder and one small head
    per parameter-group size, shared by all groups and told apart by a learned embedding of
    each group's id; JointPolicy's SharedGroupHead) or agents (the agents' own observations
    through one encoder shared by every agent, each group reading the agents of its scope;
    JointPolicy's AgentGroupHead; stores observations in the replay buffer). Circuit
    policies only, not softmax."""
    agent_ids: bool = checked(False, boolean)
    """With param_head="agents": each agent's policy input carries a one-hot of its id, so
    that agents seeing the same thing can act differently (the critics' ids are
    critic_agent_ids)."""
    sibling_pairs: bool = checked(False, boolean)
    """With param_head="agents": per state, the agents with the nearest observations take
    the circuit's sibling places (its two-agent regions) and each sibling pair scores its
    joint actions, so the policy can correlate or part any two agents that see alike
    (JointPolicy's sibling_pairs; the selective circuit needs width below k**2)."""
    critic_hidden: tuple[int, ...] = checked((128, 128), widths)
    """Hidden widths of each critic's MLP (on the state, or on each agent's input)."""
    critic_input: str = checked("state", one_of("state", "agents"))
    """What the critics read: state (FactorQ: one MLP on the global state, one output head
    per factor) or agents (AgentFactorQ: one MLP shared by every agent on its own
    observation and id, and one payoff head shared by every factor, as in Deep
    Coordination Graphs; what one factor learns, every factor whose agents see the same
    shares). agents stores observations in the replay buffer and has no low-rank tables."""
    critic_payoff_hidden: int = checked(0, integer(0))
    """With critic_input="agents": units of the payoff head's ReLU layer on a factor's agent
    embeddings (0: a linear head, as Deep Coordination Graphs)."""
    critic_agent_ids: bool = checked(True, boolean)
    """With critic_input="agents": each agent's critic input carries a one-hot of its id.
    False drops it, so that the critics' weights do not depend on the team size and a run
    of another team size starts them whole (init_from with init_partial)."""
    critic_centred: bool = checked(False, boolean)
    """With critic_input="agents": every factor table is centred along each agent's axis,
    so that it holds only how the agents' actions combine, and what one agent's action is
    worth by itself is its unary term's alone (needs unary)."""
    factor_graph: str = checked("auto", one_of(*FACTOR_GRAPHS))
    """Critic factor graph: auto, complete, random, line, ring, star, none, or nearest: pairs
    chosen per state, each agent with its ``neighbours`` nearest others by position (the
    env gives ``agent_positions``, as coverage does; critic_input="agents" only)
    (build_factor_graph)."""
    neighbours: int = checked(2, integer(1))
    """Nearest other agents per agent of the nearest factor graph."""
    num_factors: int = checked(20, integer(0))
    """Number of factors of a random factor graph."""
    factor_order: int = checked(2, one_of(2, 3))
    """Agents per factor, 2 or 3."""
    graph_seed: int = checked(0, integer(0))
    """Seed of the random factor graph (the same graph for every run seed)."""
    critic_rank: int = checked(0, integer(0))
    """CP rank of the factor tables; 0 for full tables."""
    unary: bool = checked(True, boolean)
    """Give the critics per-agent unary terms."""
    tau: float = checked(0.005, rate)
    """Polyak rate of the target critics."""
    actor_lr: float = checked(1e-3, positive)
    """Adam learning rate of the policy."""
    critic_lr: float = checked(1e-3, positive)
    """Adam learning rate of the critics."""
    alpha_lr: float = checked(1e-3, positive)
    """Adam learning rate of log alpha (autotune_alpha)."""
    alpha: float = checked(0.01, positive)
    """Entropy temperature; its initial value when autotune_alpha."""
    autotune_alpha: bool = checked(True, boolean)
    """Tune alpha so that the policy entropy tracks the target entropy."""
    target_entropy_scale: float = checked(0.3, fraction)
    """Target entropy as a fraction of the maximum joint entropy n log k."""
    regulariser: str = checked("entropy", one_of("entropy", "kl_uniform"))
    """Bonus in the soft value: entropy (alpha H) or kl_uniform (-alpha KL(pi || U) =
    alpha (H - n log k): the same actor gradient, but no per-step bonus for staying alive)."""
    epsilon_start: float = checked(0.0, fraction)
    """Exploration: while collecting, each agent's sampled action is replaced by a uniform
    one with probability epsilon, falling linearly from epsilon_start to epsilon_finish
    over epsilon_anneal_steps env steps (the Q-learners' schedule). 0 and 0: sample from
    the policy alone. The replay data then show joint actions that the policy has stopped
    sampling, such as a coordinated action whose partial attempts it learned to avoid."""
    epsilon_finish: float = checked(0.0, fraction)
    """Exploration rate after annealing (see epsilon_start)."""
    epsilon_anneal_steps: int = checked(50_000, integer(1))
    """Env steps over which the exploration rate falls from epsilon_start to epsilon_finish."""
    exploration: str = checked("independent", one_of(*EXPLORATIONS))
    """How collecting explores: independent (each agent's action replaced on its own) or
    shared (with probability epsilon a row's whole joint action is replaced, every agent
    taking one action index drawn for the row; the Q-learners' ``exploration``)."""
    greedy_envs: float = checked(0.0, fraction)
    """Share of the training env copies that collect with the team's greedy joint action,
    as it is evaluated (the policy's mode, or the critics' argmax with acting="critics"),
    each agent's action then replaced by a uniform one with probability
    greedy_envs_epsilon: the first ``greedy_envs * num_envs`` copies, rounded half up.
    The replay then holds the states where the greedy team stops, with varied actions
    there; sampling the policy reaches other states. The epsilon schedule above applies on
    top. 0: every copy samples."""
    greedy_envs_epsilon: float = checked(0.2, fraction)
    """Per-agent rate of uniform actions in the greedy env copies (see greedy_envs)."""
    greedy_envs_agents: str = checked("all", one_of(*GREEDY_ENVS_AGENTS))
    """Which agents of the greedy env copies take those uniform actions: all, or unsettled
    (only those whose own part of the task the env reports as not done, as coverage
    reports the agents on no goal; the settled agents keep their greedy actions). An
    episode starts with nearly every coverage agent unsettled, so at a high rate those
    copies begin as random walkers, not on the greedy team's path. Needs greedy_envs above
    0 and, for unsettled, an env that reports settled agents."""
    greedy_envs_after: int = checked(0, integer(0))
    """The step of each episode from which the greedy env copies take those uniform actions
    (0: from its first step); before it they play the greedy joint action. A team that
    stops short of its goal stays stuck late in the episode, so a step past the greedy
    team's usual finish keeps those copies on its path and varies the actions in the
    states where it stops. Needs greedy_envs above 0."""
    greedy_envs_branch: bool = checked(False, boolean)
    """Vary the greedy team's actions in one-step branches off its path: the greedy env
    copies then play the greedy joint action unchanged, and as many further copies (the
    next ones) are set to their states before every collection step and take one step of
    that greedy action with the uniform actions above (greedy_envs_epsilon,
    greedy_envs_agents, greedy_envs_after). The replay holds the greedy path and one-step
    variations from each of its states, rather than episodes that drift off it; the branch
    copies' episodes are not reported. Needs greedy_envs at most 0.5, n_step=1, no
    hindsight, and an env that can copy its copies (coverage can)."""
    reinforce_samples: int = checked(8, integer(2))
    """Joint actions sampled per state for the reinforce actor gradient (>= 2)."""
    mode_guidance: float = checked(0.1, non_negative)
    """Weight beta of the actor's cross-entropy toward the critics' best joint action: the
    actor loss gains ``-beta mean log pi(u* | s)`` over the states where both critics'
    exact argmaxes (variable elimination) are the same ``u*`` and ``pi(u* | s)`` is below
    ``mode_floor``. The ELBO's gradient on a joint action's probability shrinks with that
    probability, so a coordinated joint action the policy dropped before the critics valued
    it is not taken up again; this term's gradient does not shrink. Where the critics
    disagree their argmax is noise, and the term leaves the policy alone. Where the
    elimination needs tables of more than MODE_TABLE_SIZE entries per state, the argmax is
    max-plus's (approximate) and the term is per factor: ``-beta mean sum_f log pi(u*_f | s)``
    over the factors f on whose agents' actions both critics' argmaxes agree, each below
    ``mode_floor`` times its own uniform level ``k**-|f|`` (a note at the start of the run
    says so). Off with compile=True (its checks break the single traced graph); 0 turns it
    off."""
    mode_floor: float = checked(1.0, number(0.0, low_open=True, finite=False))
    """The mode guidance acts only on states where the policy gives ``u*`` less than
    ``mode_floor`` times the uniform probability ``k**-n``: where it has moved mass off the
    critics' best joint action (per factor: ``k**-|f|`` for the factor's actions). It lifts
    such an action back to that level and leaves the rest to the ELBO. ``inf`` applies it
    whatever ``pi(u* | s)``."""
    acting: str = checked("policy", one_of(*ACTINGS))
    """How the trained team acts greedily (the run's evaluations, ``spnpolicy evaluate``,
    ``load_agent(run).act``): policy (the joint policy's exact mode) or critics (the first
    critic's best joint action, as :class:`ModeGuidance` finds it: exact variable
    elimination where its tables fit ``MODE_TABLE_SIZE`` entries per state, else max-plus,
    as Deep Coordination Graphs act). Collecting samples the joint policy (but for the
    copies of greedy_envs), and the critics' targets are its exact soft values either
    way. With critics, ``load_agent`` gives a :class:`CriticsAgent`: its ``act`` plays
    that argmax (not deterministic: epsilon-greedy at ``epsilon_finish``), its
    ``distribution(states)`` is the joint policy's, for the queries of
    ``spnpolicy.inference``."""
    compile: bool = checked(False, boolean)
    """Compile with torch.compile: for the exact actor gradient on a selective or softmax
    policy the whole update (both losses, their gradients and the three Adam steps) as one
    graph, and on a selective policy the acting too; otherwise (mean field, the agents
    head, whose global normalisation runs the circuit engine) each loss, forward and
    backward, apart. A one-time compile at the first update and action (on CPU it needs a
    C++ compiler), then fused kernels and the same actions; it pays off on long runs (the
    figures: benchmarks/README.md, "Training speed"). Random draws inside a compiled loss
    (the reinforce gradient's) differ from eager ones."""

    def __post_init__(self) -> None:
        super().__post_init__()
        greedy_rows(self.greedy_envs, self.num_envs)
        if self.greedy_envs_agents != "all" and not self.greedy_envs:
            raise ValueError(f"greedy_envs_agents={self.greedy_envs_agents!r} acts in the "
                             f"greedy env copies; set greedy_envs above 0 (it is 0)")
        if self.greedy_envs_after and not self.greedy_envs:
            raise ValueError(f"greedy_envs_after={self.greedy_envs_after} acts in the greedy "
                             f"env copies; set greedy_envs above 0 (it is 0)")
        if self.greedy_envs_branch:
            rows = greedy_rows(self.greedy_envs, self.num_envs)
            if not rows or 2 * rows > self.num_envs:
                raise ValueError(f"greedy_envs_branch=True needs a branch copy for each of "
                                 f"the {rows} greedy copies (greedy_envs={self.greedy_envs} "
                                 f"of num_envs={self.num_envs}); set greedy_envs above 0 and "
                                 f"at most 0.5")
            if self.n_step != 1 or self.hindsight:
                raise ValueError(f"greedy_envs_branch=True stores one-step branches, not "
                                 f"episodes: it needs n_step=1 and hindsight=False, got "
                                 f"n_step={self.n_step}, hindsight={self.hindsight}")
        if self.critic_input == "agents" and self.critic_rank:
            raise ValueError(f"critic_rank={self.critic_rank} needs critic_input='state'; the "
                             f"agents critics have full tables")
        if self.critic_centred and (self.critic_input != "agents" or not self.unary):
            raise ValueError(f"critic_centred=True needs critic_input='agents' and unary=True "
                             f"(each agent's own effect moves to its unary term), got "
                             f"critic_input={self.critic_input!r}, unary={self.unary}")
        if not self.critic_agent_ids and self.critic_input != "agents":
            raise ValueError(f"critic_agent_ids=False needs critic_input='agents' (per-agent "
                             f"critic inputs), got critic_input={self.critic_input!r}")
        for name in ("agent_ids", "sibling_pairs"):
            if getattr(self, name) and self.param_head != "agents":
                raise ValueError(f"{name}=True needs param_head='agents' (per-agent policy "
                                 f"inputs), got param_head={self.param_head!r}")
        if self.param_head != "flat" and self.policy == "softmax":
            raise ValueError(f"param_head={self.param_head!r} needs a circuit policy; the "
                             f"softmax policy has no parameter groups to share a head across")
        if self.factor_graph == "nearest":
            fixed = {"critic_input": (self.critic_input, "agents"),
                     "factor_order": (self.factor_order, 2), "acting": (self.acting, "policy"),
                     "mode_guidance": (self.mode_guidance, 0.0), "compile": (self.compile, False)}
            wrong = {name: got for name, (got, need) in fixed.items() if got != need}
            if wrong:
                raise ValueError(f"factor_graph='nearest' (pairs chosen per state) needs "
                                 f"critic_input='agents', factor_order=2, acting='policy', "
                                 f"mode_guidance=0 and compile=False; got {wrong}")


#: Per-env (or env-family) defaults; everything else comes from ``SpnAcConfig``.
ENV_DEFAULTS = {
    # One-step games: the critic regresses the payoff; a short random warm-up shows it
    # every joint action, then the policy concentrates on the best one.
    "matrix": MATRIX_BUDGET | dict(learning_starts=200, batch_size=64, gradient_steps=2,
                                   policy_hidden=(32,), critic_hidden=(32,), actor_lr=3e-3,
                                   critic_lr=1e-2, alpha=1.0, alpha_lr=3e-2),
    # Coverage ends on success, so a per-step entropy bonus makes success cost about
    # alpha H / (1 - gamma) of bonus no longer collected: kl_uniform has no such bonus
    # (benchmarks/results/coverage/README.md, "Coverage defaults"). No joint action there is
    # penalised when only some agents take it, and the shaped reward reaches every joint
    # action: the mode guidance has nothing to recover and slows learning, so it is off.
    "coverage": COVERAGE_BUDGET | dict(regulariser="kl_uniform", mode_guidance=0.0),
    # VMAS: the global state holds absolute positions only, while each agent's observation
    # holds its goal's (or the foods') position relative to itself: the policy and the
    # critics read the agents' observations, through networks shared by the agents
    # (benchmarks/results/benchmarl-side-by-side/README.md, "Our harness on BenchMARL's
    # schedule, and spn-ac reading the observations").
    "vmas": dict(param_head="agents", critic_input="agents"),
    # Predator-prey: a capture pays only when two predators next to one prey catch in the
    # same step, which each sees in its own window, so the critics are the agents critics
    # (shared heads on each predator's observation, one factor per pair of predators). A
    # lone catch is punished and soon avoided: uniform exploration keeps showing joint
    # catches while the critics learn them (the Q-learners' epsilon schedule), and
    # kl_uniform, with alpha starting at 1, keeps the policy broad until then without
    # paying for staying alive. The exact ELBO's ascent from that broad policy stops where
    # nobody catches (a catch beside a partner who rarely catches is worth less than
    # standing), while the critics' joint argmax catches together: the team acts by it.
    "predator-prey": dict(critic_input="agents", factor_graph="complete",
                          critic_payoff_hidden=128, regulariser="kl_uniform", alpha=1.0,
                          epsilon_start=1.0, epsilon_finish=0.05, acting="critics"),
}


# --- losses ------------------------------------------------------------------------------
def soft_value(target_values: FactorValues, dist, alpha: torch.Tensor,
               max_entropy: float = 0.0) -> torch.Tensor:
    """``V(s') = min_j E_pi[Qbar_j(s', .)] + alpha (H(pi(. | s')) - max_entropy)`` -> ``[B]``
    for the target critics' ensemble values.

    Exact. ``max_entropy = n log k`` turns the entropy bonus into ``-alpha KL(pi || uniform)``.
    """
    return target_values.min_expectation(dist) + alpha * (dist.entropy() - max_entropy)


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum_j mean_B (Q_j(s, u) - target)^2`` for the critics' ``Q_j(s, u)`` ``[J, B]``."""
    return F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()


def actor_loss(values: FactorValues, dist, alpha: torch.Tensor, gradient: str = "exact",
               samples: int = 8, mode: torch.Tensor | None = None,
               mode_weight: float = 0.0, mode_log_floor: float | torch.Tensor = 0.0,
               mode_mask: torch.Tensor | None = None,
               mode_scopes: Sequence[tuple[int, ...]] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The actor loss and the (exact) policy entropy ``[B]``, for the critics' ensemble
    ``values``.

    With ``mode`` (the critics' best joint actions ``[B, n]``) the loss also gains
    ``-mode_weight mean min(log pi(mode | s), mode_log_floor)`` (mode guidance, see
    ``SpnAcConfig``; :func:`mode_log_floor`): no gradient on states where
    ``log pi(mode | s) >= mode_log_floor``, nor where ``mode_mask`` ``[B]`` is 0. With
    ``mode_scopes`` (``F`` tuples of agents) the term is instead per scope,
    ``-mode_weight mean_B sum_f mask_f min(log pi(mode_f | s), floor_f)``, of the exact
    marginal of the scope's agents' part of ``mode`` (:func:`scope_log_probs`),
    ``mode_mask`` ``[B, F]`` and ``mode_log_floor`` ``[F]``.

    ``exact``: ``-mean(min_j E_pi[Q_j(s, .)] + alpha H(pi))`` differentiated through ``dist``.
    ``reinforce``: a surrogate whose gradient is the score-function estimate of the same
    objective's gradient, ``-mean((f(u) - b) grad log pi(u))`` with
    ``f(u) = min_j Q_j(s, u) - alpha log pi(u)`` over ``samples`` draws and ``b`` the mean
    of ``f`` over the other draws (leave-one-out baseline).
    """
    entropy = dist.entropy()
    guidance = 0.0
    if mode is not None:
        if mode_scopes is None:
            log_prob = dist.log_prob(mode).clamp(max=mode_log_floor)             # [B]
        else:
            log_prob = torch.minimum(scope_log_probs(dist, mode, mode_scopes),
                                     mode_log_floor)                            # [B, F]
        if mode_mask is not None:
            log_prob = log_prob * mode_mask
        guidance = -mode_weight * log_prob.reshape(len(log_prob), -1).sum(1).mean()
    if gradient == "exact":
        return -(values.min_expectation(dist) + alpha * entropy).mean() + guidance, entropy
    draws = dist.sample((samples,))                                      # [M, B, n]
    log_prob = dist.log_prob(draws)                                      # [M, B]
    with torch.no_grad():
        q = torch.stack([values.min_evaluate(d) for d in draws])
        f = q - alpha * log_prob
        baseline = (f.sum(0, keepdim=True) - f) / (samples - 1)
    return -((f - baseline) * log_prob).mean() + guidance, entropy


#: Below this a marginal read off the linear-space joint tables has lost its precision (float32's
#: smallest normal is about 1.2e-38); such a batch is read in log space instead.
TINY_MARGINAL = 1e-30


def scope_log_probs(dist, actions: torch.Tensor,
                    scopes: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """``log pi(u_f | s)`` ``[B, F]``: the log-marginal of each scope's part of the joint
    actions ``[B, n]``, for scopes of 2 or 3 agents.

    Read off ``dist.scope_marginals`` (the joint tables that the critics' expectation uses);
    where one of them is below ``TINY_MARGINAL`` the batch is computed in log space instead,
    by ``dist.log_prob`` with the other agents' entries ``-1`` (marginalised out), so that
    a marginal that underflowed still has its gradient."""
    k = dist.marginals().shape[-1]
    probs = actions.new_zeros(actions.shape[0], len(scopes), dtype=dist.marginals().dtype)
    for order in sorted({len(scope) for scope in scopes}):
        ids = [f for f, scope in enumerate(scopes) if len(scope) == order]
        tables = dist.scope_marginals([scopes[f] for f in ids]).flatten(2)  # [B, F_o, k^o]
        picked = actions[:, torch.tensor([scopes[f] for f in ids], device=actions.device)]
        flat = sum(picked[..., p] * k ** (order - 1 - p) for p in range(order))
        probs = probs.index_copy(1, torch.tensor(ids, device=actions.device),
                                 tables.gather(2, flat.unsqueeze(-1)).squeeze(-1))
    if bool((probs >= TINY_MARGINAL).all()):
        return probs.log()
    kept = scope_mask(scopes, actions.shape[1], actions.device)            # [F, n]
    return dist.log_prob(torch.where(kept[:, None, :], actions, -1)).T     # [B, F]


def scope_mask(scopes: Sequence[tuple[int, ...]], n: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``[F, n]`` bool: ``True`` where agent ``i`` is in scope ``f``."""
    rows = torch.tensor([f for f, scope in enumerate(scopes) for _ in scope], device=device)
    cols = torch.tensor([i for scope in scopes for i in scope], device=device)
    mask = torch.zeros(len(scopes), n, dtype=torch.bool, device=device)
    return mask.index_put_((rows, cols), torch.ones_like(rows, dtype=torch.bool))


def mode_log_floor(mode_floor: float, n: int, k: int) -> float:
    """``log min(1, mode_floor * k**-n)``, the mode guidance's floor, computed in log space
    (``k**-n`` underflows for large teams)."""
    return min(0.0, math.log(mode_floor) - n * math.log(k))


def critics_mode(values: FactorValues, steps) -> tuple[torch.Tensor, torch.Tensor]:
    """The first critic's exact argmax ``[B, n]`` (variable elimination along ``steps``) and
    ``[B]`` 1.0 where every member of the ensemble ``values`` has that same argmax, else 0.0:
    the mode guidance's target and mask."""
    modes = torch.stack([eliminate(q, steps) for q in values])                # [E, B, n]
    return modes[0], (modes == modes[0]).all(-1).all(0).to(values.unary.dtype)


#: Message-passing rounds of the max-plus argmax of the per-factor mode guidance (Deep
#: Coordination Graphs' choice).
MAX_PLUS_ITERATIONS = 8

def critics_factor_modes(values: FactorValues, iterations: int = MAX_PLUS_ITERATIONS
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first critic's max-plus argmax ``[B, n]`` (every member's in one batched pass) and
    ``[B, F]`` 1.0 where every member's argmax gives the agents of factor ``f`` (of
    ``values.graph``) the same actions, else 0.0: the per-factor mode guidance's target and
    mask on graphs too wide for the exact argmax."""
    members, batch = values.ensemble, values.batch_size
    flat = [None if t is None else t.flatten(0, 1) for t in (values.unary, values.pairwise,
                                                                values.triple)]
    stacked = FactorValues.trusted(values.graph, *flat)                      # [E B, ...]
    modes = stacked.argmax("max_plus", iterations=iterations).view(members, batch, -1)
    differ = (modes != modes[0]).any(0)                                      # [B, n]
    scopes = scope_mask(values.graph.factors, modes.shape[-1], modes.device)  # [F, n]
    agree = ~(differ[:, None, :] & scopes).any(-1)                           # [B, F]
    return modes[0], agree.to(values.unary.dtype)


#: Largest intermediate table (entries per state) of the exact argmax that mode guidance
#: computes at every update; on wider factor graphs it guides each factor instead.
MODE_TABLE_SIZE = 4096


class ModeGuidance:
    """The mode guidance's targets on one factor graph (see ``SpnAcConfig.mode_guidance``):
    the joint action, where the exact argmax needs tables of at most ``MODE_TABLE_SIZE``
    entries per state; else each factor, with the max-plus argmax.

    Attributes: ``weight`` (0 when off), ``exact`` (whether the targets are the exact
    argmax, else max-plus's), ``log_floor`` (a float, or ``[F]`` per factor), ``scopes``
    (``None`` for the joint action, else the graph's factors; ``None`` when off), ``note``
    (what the run's start says, or ``""``).
    """

    def __init__(self, graph, num_actions: int, weight: float, mode_floor: float) -> None:
        n, k = graph.num_agents, num_actions
        self.weight, self.steps, self.scopes, self.note = weight, elimination_plan(graph), None, ""
        self.log_floor: float | torch.Tensor = mode_log_floor(mode_floor, n, k)
        size = table_size(self.steps, k)
        self.exact = size <= MODE_TABLE_SIZE
        if weight > 0 and not self.exact:
            self.scopes = tuple(graph.factors)
            self.log_floor = torch.tensor([mode_log_floor(mode_floor, len(scope), k)
                                           for scope in graph.factors])
            self.note = (f"mode_guidance acts per factor: the exact argmax of this factor "
                         f"graph needs tables of {size:,} entries per state (more than "
                         f"{MODE_TABLE_SIZE:,}), so the critics' argmax is max-plus's and "
                         f"each factor whose actions every critic's argmax agrees on is "
                         f"guided")

    def targets(self, values: FactorValues) -> tuple[torch.Tensor, torch.Tensor]:
        """The critics' best joint actions ``[B, n]`` and where to guide: ``[B]`` (joint) or
        ``[B, F]`` (per factor), 1.0 where every critic's argmax agrees."""
        if self.exact:
            return critics_mode(values, self.steps)
        return critics_factor_modes(values)

    def best(self, values: FactorValues) -> torch.Tensor:
        """One critic's best joint actions ``[B, n]`` (``values`` without an ensemble axis),
        by the rule of :meth:`targets`, which finds every member's to compare them."""
        if self.exact:
            return eliminate(values, self.steps)
        return values.argmax("max_plus", iterations=MAX_PLUS_ITERATIONS)

    def loss_arguments(self, values: FactorValues) -> dict[str, Any]:
        """:func:`actor_loss`'s guidance arguments for the critics' ``values`` (none when
        off)."""
        if not self.weight:
            return {}
        with torch.no_grad():
            mode, mask = self.targets(values)
        log_floor = self.log_floor
        if isinstance(log_floor, torch.Tensor):
            log_floor = log_floor.to(mask.device, mask.dtype)
        return dict(mode=mode, mode_weight=self.weight, mode_log_floor=log_floor,
                    mode_mask=mask, mode_scopes=self.scopes)


class CriticsAgent(ActingAgent):
    """spn-ac's trained team with ``acting="critics"``: ``act`` plays the first critic's
    best joint action ``[B, n]`` (:meth:`best` of :meth:`values`), on per-agent observations
    ``[B, n, obs_dim]`` for the agents critics, else on global states ``[B, state_dim]``;
    not ``deterministic``, each agent's action is replaced by a uniform one with
    probability ``epsilon`` (the Q-learners' exploring policy). ``distribution(states)``
    is the joint policy's ``pi(. | s)`` for its inputs (global states ``[B, state_dim]``, or
    observations ``[B, n, obs_dim]`` for ``param_head="agents"``).

    Attributes: ``policy`` (the :class:`JointPolicy`), ``critic`` (the critics' ensemble),
    ``num_agents``, ``num_actions``, ``state_dim`` (the policy's).
    """

    def __init__(self, policy: JointPolicy, critic: nn.Module, guidance: ModeGuidance,
                 needs_obs: bool, obs_dim: int, epsilon: float) -> None:
        super().__init__()
        self.policy, self.critic, self.guidance = policy, critic, guidance
        self.needs_obs, self.epsilon = needs_obs, epsilon
        self.num_agents, self.num_actions = policy.num_agents, policy.num_actions
        self.state_dim = policy.state_dim
        self.input_shape = (self.num_agents, obs_dim) if needs_obs else (policy.state_dim,)

    def values(self, x: torch.Tensor) -> FactorValues:
        """The first critic's values on inputs ``x`` (``[B, *input_shape]``): the Q it acts
        by."""
        return self.critic.values(x)[0]

    def best(self, values: FactorValues) -> torch.Tensor:
        """The best joint actions ``[B, n]`` of ``values`` by the acting rule
        (:meth:`ModeGuidance.best`)."""
        return self.guidance.best(values)

    def greedy_actions(self, x: torch.Tensor) -> torch.Tensor:
        return self.best(self.values(x))

    def sampled_actions(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return epsilon_greedy(self.greedy_actions(x), self.epsilon, self.num_actions, generator)

    def distribution(self, inputs):
        """The joint policy's ``pi(. | s)`` (:meth:`JointPolicy.distribution` on its
        ``input_shape``)."""
        return self.policy.distribution(inputs)


class Temperature(nn.Module):
    """The entropy temperature ``alpha = exp(log_alpha)``, learnable when ``tune``."""

    def __init__(self, alpha: float, tune: bool) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)), requires_grad=tune)

    @property
    def value(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def loss(self, entropy: torch.Tensor, target: float) -> torch.Tensor:
        """Lowers alpha while the entropy is above ``target``, raises it while below."""
        return self.log_alpha.exp() * (entropy.detach() - target).mean()


# --- the algorithm ---------------------------------------------------------------------
def greedy_rows(share: float, num_envs: int) -> int:
    """How many of ``num_envs`` env copies collect greedily at ``greedy_envs=share``: the
    first ``share * num_envs``, rounded half up. ValueError when a share above 0 gives none."""
    rows = math.floor(share * num_envs + 0.5)
    if share > 0 and rows == 0:
        raise ValueError(f"greedy_envs={share} gives none of num_envs={num_envs} env copies "
                         f"({share} * {num_envs} rounds to 0); use at least "
                         f"{1 / (2 * num_envs):g} or 0")
    return rows


def joint_policy(envs: VecEnv, policy, width: int, hidden: Sequence[int],
                 param_head: str = "flat", agent_ids: bool = False,
                 sibling_pairs: bool = False) -> JointPolicy:
    """spn-ac's ``JointPolicy`` for ``envs`` (its agents, actions, state or observation
    size): what training builds and what a saved run's agent is rebuilt as."""
    return JointPolicy(envs.state_dim, envs.num_agents, envs.num_actions, policy, width,
                       tuple(hidden), param_head=param_head,
                       obs_dim=envs.obs_dim if param_head == "agents" else None,
                       agent_ids=agent_ids, sibling_pairs=sibling_pairs)


class SpnAc(OffPolicyAlgorithm):
    """spn-ac's networks, optimizers and one update, for :func:`train_offpolicy`.

    ``update(batch)`` is one gradient step of each loss, in order: soft value of the next
    states (target critics) -> critic loss -> step; actor loss on the stepped critics (their
    values are constants there) -> step; alpha -> step. The loop then Polyak-updates the
    target critics (``target_sync``). The update is written once against a steps callable
    and compiled, or not, from outside by
    :func:`~spnpolicy.training.optim.compile_update`: :class:`EagerSteps` (autograd
    and torch's Adam), or with ``cfg.compile`` the whole update as one graph (its gradients
    and Adam steps traced with the losses), or each loss compiled apart. Acting (``sample``,
    ``explore``) likewise through :func:`~spnpolicy.training.optim.compile_acting`: with
    ``cfg.compile``, on a region-tree policy, the tree's uniforms drawn eagerly and the
    rest compiled; eagerly on the other policies.
    """

    uniform_warmup = True

    def __init__(self, cfg: SpnAcConfig, envs: VecEnv) -> None:
        device = torch.device(cfg.device)
        n, k, state_dim = envs.num_agents, envs.num_actions, envs.state_dim
        if cfg.greedy_envs_agents == "unsettled" and envs.settled() is None:
            raise ValueError(f"greedy_envs_agents='unsettled' needs an env that reports its "
                             f"settled agents (coverage does); {type(envs).__name__} does not")
        if cfg.greedy_envs_branch and not getattr(envs, "can_copy", False):
            raise ValueError(f"greedy_envs_branch=True needs an env that can set one copy to "
                             f"another's state (coverage can); {type(envs).__name__} cannot")
        self.cfg = cfg
        self.policy = joint_policy(envs, cfg.policy, cfg.width, cfg.policy_hidden,
                                   cfg.param_head, cfg.agent_ids,
                                   cfg.sibling_pairs).to(device)
        graph = build_factor_graph(cfg.factor_graph, n, cfg.num_factors, cfg.factor_order,
                                   seed=cfg.graph_seed, neighbours=cfg.neighbours)
        # a graph per state reads the agents' positions from the replayed global states
        self.positions = None
        if isinstance(graph, NearestGraph):
            self.positions = getattr(envs, "agent_positions", None)
            if not callable(self.positions):
                raise ValueError(f"factor_graph='nearest' chooses the critics' pairs by the "
                                 f"agents' positions, which {type(envs).__name__} does not "
                                 f"give (an env with agent_positions(states), as coverage)")
        # the joint policy and the critics each read the global state, or each agent's
        # observation (then the replay buffer stores the observations)
        self.policy_reads_obs = cfg.param_head == "agents"
        self.needs_obs = cfg.critic_input == "agents" or self.policy_reads_obs
        if cfg.critic_input == "agents":
            self.critic = AgentFactorQ(graph, envs.obs_dim, k, cfg.critic_hidden, cfg.unary,
                                       payoff_hidden=cfg.critic_payoff_hidden,
                                       ensemble=2, agent_ids=cfg.critic_agent_ids,
                                       centred=cfg.critic_centred).to(device)
        else:
            self.critic = FactorQ(graph, state_dim, k, cfg.critic_hidden, cfg.unary,
                                  cfg.critic_rank or None, ensemble=2).to(device)
        self.critic_target = make_target(self.critic)
        self.temperature = Temperature(cfg.alpha, cfg.autotune_alpha).to(device)
        self.target_entropy = cfg.target_entropy_scale * n * math.log(k)
        self.notes: tuple[str, ...] = ()
        # a graph per state has no guidance (mode_guidance=0, checked by the config)
        guided = graph if self.positions is None else FactorGraph(n, [])
        self.guidance = ModeGuidance(guided, k, cfg.mode_guidance, cfg.mode_floor)
        if cfg.mode_guidance > 0 and cfg.compile:
            self.guidance.weight = 0.0
            self.notes += ("mode_guidance is off with compile=True: the log-likelihood's "
                           "checks of u* break the update's single traced graph",)
        elif self.guidance.note:
            self.notes += (self.guidance.note,)
        self.value_offset = n * math.log(k) if cfg.regulariser == "kl_uniform" else 0.0
        self.optimizers = {
            "actor": adam(self.policy.encoder.parameters(), lr=cfg.actor_lr),
            "critic": adam(self.critic.parameters(), lr=cfg.critic_lr),
            "alpha": adam([self.temperature.log_alpha], lr=cfg.alpha_lr)}
        self.modules = {"policy": self.policy, "critic": self.critic,
                        "critic_target": self.critic_target, "temperature": self.temperature}
        self.agent = self.policy if cfg.acting == "policy" else CriticsAgent(
            self.policy, self.critic, self.guidance, cfg.critic_input == "agents",
            envs.obs_dim, cfg.epsilon_finish)
        self.target_sync = TargetSync(((self.critic_target, self.critic),), tau=cfg.tau)
        if cfg.greedy_envs_branch:
            rows = greedy_rows(cfg.greedy_envs, cfg.num_envs)
            self.branches = (np.arange(rows), np.arange(rows, 2 * rows))
        # cfg.compile, applied from outside to _update: the whole update (both losses, their
        # gradients, the optimiser steps) as one graph where the actor loss is pure tensor
        # ops, else each loss apart (the circuit engine's exactness guard and log_prob's
        # checks of the reinforce draws branch on values)
        self._update_fn = compile_update(
            self._update, self.modules, "spn-ac's update", cfg.compile,
            whole=self.policy.traces_whole and cfg.actor_gradient == "exact")
        # acting likewise: on a region-tree policy it is also given split at its random
        # numbers (the tree's uniforms, then the encoder and the descent: pure tensor ops)
        self._sample_fn = compile_acting(
            self._sample, "spn-ac's acting", cfg.compile,
            traced=(self._draw, self._act) if self.policy.tree is not None else None)
        if cfg.compile:
            self.notes += ("compile=True: the first update and the first action compile with "
                          "torch.compile (once per run; faster once torch's on-disk cache "
                          "has the kernels)",)

    @torch.inference_mode()
    def explore(self, state, obs, step, generator, settled=None, elapsed=None):
        sampled = self.sample(state, obs, generator)
        rows = greedy_rows(self.cfg.greedy_envs, state.shape[0])
        if rows:
            greedy = self.greedy(state[:rows], None if obs is None else obs[:rows])
            # with branches, the copies rows..2 rows stand where the greedy ones do
            varied = slice(rows, 2 * rows) if self.cfg.greedy_envs_branch else slice(rows)
            explorers = self._greedy_explorers(
                greedy, None if settled is None else settled[varied],
                None if elapsed is None else elapsed[varied])
            varied_actions = epsilon_greedy(greedy, self.cfg.greedy_envs_epsilon,
                                            self.policy.num_actions, generator, only=explorers)
            led = [greedy, varied_actions] if self.cfg.greedy_envs_branch else [varied_actions]
            sampled = torch.cat([*led, sampled[len(led) * rows:]])
        if not self._explores:
            return sampled
        return epsilon_greedy(sampled, linear_epsilon(step, self.cfg), self.policy.num_actions,
                              generator, self.cfg.exploration)

    def _greedy_explorers(self, greedy, settled, elapsed):
        """``[R, n]`` bool, the entries of the greedy joint actions ``greedy [R, n]`` that may
        take uniform actions (None: all), from ``greedy_envs_agents`` (the env's ``settled
        [R, n]`` of the copies that act them) and ``greedy_envs_after`` (their ``elapsed
        [R]`` steps)."""
        only = None
        if self.cfg.greedy_envs_agents == "unsettled":
            if settled is None:
                raise ValueError("greedy_envs_agents='unsettled' needs the env's settled "
                                 "agents; this env reports none")
            only = ~settled
        if self.cfg.greedy_envs_after:
            if elapsed is None:
                raise ValueError(f"greedy_envs_after={self.cfg.greedy_envs_after} needs the "
                                 f"env copies' elapsed steps; none were given")
            late = (elapsed >= self.cfg.greedy_envs_after)[:, None].expand_as(greedy)
            only = late if only is None else only & late
        return only

    def schedule_metrics(self, step: int) -> dict[str, float]:
        return {"epsilon": linear_epsilon(step, self.cfg)} if self._explores else {}

    @property
    def _explores(self) -> bool:
        """Whether collecting mixes in uniform actions (an epsilon schedule above 0)."""
        return bool(self.cfg.epsilon_start or self.cfg.epsilon_finish)

    @torch.inference_mode()
    def greedy(self, state, obs):
        if self.cfg.acting == "critics":
            return self.agent.greedy_actions(obs if self.agent.needs_obs else state)
        return self.policy.distribution(self._policy_input(state, obs)).mode

    @torch.inference_mode()
    def sample(self, state, obs, generator):
        return self._sample_fn(self._policy_input(state, obs), generator)

    def _policy_input(self, state, obs):
        """What the joint policy reads: the states ``[B, S]``, or the observations
        ``[B, n, obs_dim]`` for ``param_head="agents"``."""
        return obs if self.policy_reads_obs else state

    def _sample(self, inputs, generator):
        """Sampled joint actions ``[E, n]`` for the policy's inputs ``[E, ...]``."""
        return self.policy.distribution(inputs).sample(generator=generator)

    def _draw(self, inputs, generator):
        """The uniforms that :meth:`_sample` takes from ``generator`` on the region-tree
        policy for inputs ``[E, ...]``, in its order
        (:meth:`~circuits.region_tree.RegionTree.draw_noise`)."""
        dtype = next(self.policy.encoder.parameters()).dtype    # the logits' (any param_head)
        return self.policy.tree.draw_noise(inputs.shape[0], generator, dtype, inputs.device)

    def _act(self, inputs, noise):
        """:meth:`_sample`'s joint actions ``[E, n]`` from its uniforms ``noise``
        (:meth:`_draw`)."""
        return self.policy.distribution(inputs).sample_with(noise)

    @torch.no_grad()
    def critic_values(self, state, obs) -> FactorValues:
        """The critics' ensemble values (``[E, B, ...]``) at states ``[B, S]`` and, for the
        agents critics, the agents' observations ``[B, n, obs_dim]`` (tensors)."""
        return self._values(self.critic, state, obs)

    def _values(self, critic, state, obs) -> FactorValues:
        """The critic ensemble's values at states ``[B, S]``, or for the agents critics at
        observations ``[B, n, obs_dim]`` (and, on a graph per state, the agents' positions
        in the states)."""
        if self.cfg.critic_input != "agents":
            return critic.values(state)
        return critic.values(obs, positions=self._positions(state))

    def _positions(self, state):
        """The agents' positions ``[B, n, d]`` in states ``[B, S]`` for critics on a graph
        per state, else None."""
        return None if self.positions is None else self.positions(state)

    def _critic_loss(self, state, obs, actions, reward, next_state, next_obs, steps,
                     terminated, alpha):
        """The critics' loss (a 1-tuple), bootstrapped from the soft value of the next states
        under the target critics."""
        with torch.no_grad():
            # the soft value needs no gradient: its policy pass is recorded by no graph (a
            # shared pass over next states and states, sliced, costs more in the backward)
            next_dist = self.policy.distribution(self._policy_input(next_state, next_obs))
            next_value = soft_value(self._values(self.critic_target, next_state, next_obs),
                                    next_dist, alpha, self.value_offset)
        discount = self.cfg.gamma ** steps.to(next_value.dtype)
        target = reward + discount * (1.0 - terminated) * next_value
        if self.cfg.critic_input == "agents":
            q = self.critic.evaluate(obs, actions, positions=self._positions(state))
        else:
            q = self.critic.evaluate(state, actions)
        return critic_loss(q, target),

    def _actor_loss(self, state, obs, alpha):
        """The loss to backpropagate (the actor's plus alpha's when alpha is tuned), the
        actor's loss and the policy entropy ``[B]``."""
        cfg = self.cfg
        with torch.no_grad():
            values = self._values(self.critic, state, obs)
        dist = self.policy.distribution(self._policy_input(state, obs))
        loss_actor, entropy = actor_loss(values, dist, alpha, cfg.actor_gradient,
                                         cfg.reinforce_samples,
                                         **self.guidance.loss_arguments(values))
        if cfg.autotune_alpha:
            return loss_actor + self.temperature.loss(entropy, self.target_entropy), \
                loss_actor, entropy
        return loss_actor, loss_actor, entropy

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step of the critics, the actor and alpha on ``batch``; the metrics."""
        return self._update_fn(batch.state, batch.obs, batch.actions, batch.reward,
                               batch.next_state, batch.next_obs, batch.steps, batch.terminated)

    def _update(self, optimise, state, obs, actions, reward, next_state, next_obs, steps,
                terminated):
        """:meth:`update` on the batch's tensors (``obs``, ``next_obs`` None unless the
        critics read them), each optimiser stepped by ``optimise``
        (:class:`EagerSteps`, the traced steps of the one compiled graph, or
        :class:`CompiledLosses`); each objective ``functools.partial(loss, *tensors)``."""
        cfg, alpha = self.cfg, self.temperature.value
        loss_critic, = optimise(
            self.optimizers["critic"],
            functools.partial(self._critic_loss, state, obs, actions, reward, next_state,
                              next_obs, steps, terminated, alpha),
            cfg.max_grad_norm)
        # with autotune_alpha one backward for both: the alpha loss sees the entropy as a
        # constant, so the gradients are those of two separate steps, the actor's clipped alone
        _, loss_actor, entropy = optimise(
            self.optimizers["actor"], functools.partial(self._actor_loss, state, obs, alpha),
            cfg.max_grad_norm, also=(self.optimizers["alpha"],) if cfg.autotune_alpha else ())
        return {"loss_critic": loss_critic.detach(), "loss_actor": loss_actor.detach(),
                "entropy": entropy.detach().mean(), "alpha": alpha}

    def state_dict(self) -> dict:
        return {"modules": {name: m.state_dict() for name, m in self.modules.items()},
                "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])


SPECS = (
    # spn-ac's policy is the selective circuit by default, or the user's own structure
    AlgorithmSpec("spn-ac", "exact-ELBO max-ent actor-critic with a selective-circuit joint "
                  "policy", SpnAcConfig, SpnAc, {"actor_gradient": "exact"}, ENV_DEFAULTS),
    AlgorithmSpec("meanfield-ac", "spn-ac with a mean-field (independent agents) policy",
                  SpnAcConfig, SpnAc, {"policy": "mean_field", "actor_gradient": "exact"},
                  ENV_DEFAULTS),
    AlgorithmSpec("reinforce", "spn-ac's circuit policy trained by the score-function "
                  "gradient with a leave-one-out baseline", SpnAcConfig, SpnAc,
                  {"policy": "selective", "actor_gradient": "reinforce"}, ENV_DEFAULTS),
    # the softmax enumerates joint actions from the state: no agents head
    AlgorithmSpec("exact-softmax", "spn-ac with a softmax over all k^n joint actions "
                  "(n <= 5): the reference optimum", SpnAcConfig, SpnAc,
                  {"policy": "softmax", "actor_gradient": "exact"},
                  ENV_DEFAULTS | {"vmas": dict(critic_input="agents")}),
)
