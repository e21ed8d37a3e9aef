"""How often a trained coverage team's greedy actions move each agent the right way: the
share of agent-steps whose action is an oracle move, for the policy's mode and, for spn-ac's
family, for the critics' best joint action.

    python benchmarks/many_agents_probe.py RUN_DIR [RUN_DIR ...] [--episodes 32] [--out FILE]

An oracle move takes the agent closer to its goal under a best assignment of agents to goals
at that state (``linear_sum_assignment`` of the Manhattan distances), or keeps it on its
goal when it is there. Both players are scored on the same states: those of episodes played
by the run's greedy policy (``load_agent(run)``, its own acting), ``--episodes`` episodes
from seeded resets of the run's env. ``uniform`` is the share of oracle moves among all six
actions at those states: what random actions score.

A team whose critics score near ``uniform`` has critics that know nothing per agent; a
policy that scores below its critics does not follow them. ``oracle_share_stray`` is the same
shares over the agent-steps of agents on no goal, the ones that still have to move (None
when there are none). ``policy_mass_stray`` reads the policy's own action marginals at the
same agent-steps: the mean probability it gives to oracle moves (``oracle``) and to keeping
its cell (``still``: noop or stay), which tells a sharp wrong choice from a flat one whose
mode happens to stand still (None without strays or for a policy with no distribution).
``critics_response_stray``, for spn-ac's family, asks the run's critics (their ensemble
mean) at the same agent-steps for each stray agent's best action with its team-mates at the
policy's greedy actions: the share that is an oracle move (``oracle``) and that keeps its
cell (``still``). A policy that stands where its critics would move does not follow them;
critics that would stand too taught it to (None without strays or critics).
``critics_margin_stray`` is how firmly: over the same agent-steps, the critics' value of
the best oracle move minus that of the best action that keeps the cell (``mean``,
``median``, and the share above 0, ``positive``), beside ``one_cell`` = 1 / grid_size, the
progress reward (``shaping_form="progress"``) of one agent's step toward its goal. That is
the margin of a step now over never taking it; with discount ``gamma``, a step now over the
same step one state later is worth ``(1 - gamma)`` of it, so critics of a team that keeps
moving show a margin between the two. ``unary`` and ``pairs`` split its mean at the same two
actions into the critics' unary terms and their pair factors (the two sum to ``mean``).

``failures`` describes how the policy's episodes that reach the time limit end (their last
state). Each goal left uncovered has either an agent on no goal (``stray``) or two agents on
one goal (``stacked``: both chose it) as its counterpart; both are means per failed episode.
Over the stray agents: the share whose goal under a best assignment at the episode's start
is held by another agent at its end (``lost``: a team-mate took it, a failure of
who-goes-where rather than of getting there), the share that kept its cell over the last
``STILL_STEPS`` steps (``still``) and the mean distance to the nearest uncovered goal
(``gap``). ``last_change`` gives the quartiles (25, 50, 75) over the failed episodes of
the last step at which the set of agents on a goal changed (0: it never did; None without
failures): when the greedy team stopped. ``twins`` is the share of failed episodes whose last
state has two agents with identical observations (with nearest observations: two agents on
one cell), ``cycled`` the share whose last agent cells already occurred within the
``CYCLE_STEPS`` steps before (the team stands, or goes back and forth; the clock in the
observations still changes, so this is a repeat of cells, not a proof of a loop).
``unseen``, for ``nearest`` observations, is the share of stray agents none of whose
observed nearest goals is free: the goals still to cover lie outside what it sees (None for
observations that show every goal).

``twins`` (top level) reads the agent pairs with identical observations over all the
states played: ``pair_steps`` their count; ``same_action`` the share of them whose greedy
actions agree; for a circuit policy, ``p_same`` the mean probability that the joint policy
gives the two agents one action (from its exact pair marginals) and ``p_same_product`` the
same probability under the product of the two agents' marginals. Twins need different
actions to part; ``p_same`` below ``p_same_product`` is a policy that correlates them apart,
which no product policy can do (None without twin pairs or a distribution). ``siblings``
is, for a policy with sibling pairs (``sibling_pairs=True``), the share of twin pairs that
the policy holds as siblings in its circuit (None otherwise).

Prints one JSON object per run and writes them all to ``--out`` (default
``benchmarks/results/many-agents/probe.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spnpolicy.envs.coverage_core import (  # noqa: E402
    MOVES, CoverageConfig, observations, on_cells, state_positions)
from spnpolicy.inference import load_agent, load_run_config  # noqa: E402
from spnpolicy.training import Runner, make_vec_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "many-agents" / "probe.json"
#: A stray agent that kept its cell over this many last steps counts as ``still``.
STILL_STEPS = 8
#: A failed episode whose last agent cells occurred within this many steps before ``cycled``.
CYCLE_STEPS = 16


def oracle_moves(states: np.ndarray, config: CoverageConfig) -> np.ndarray:
    """``[E, n, 6]`` bool: action ``a`` of agent ``i`` is an oracle move at state ``e``."""
    agents, goals = state_positions(states, config)                     # [E, n, 2] each
    size, n = config.grid_size, config.num_agents
    out = np.zeros((len(states), n, len(MOVES)), dtype=bool)
    for e in range(len(states)):
        cost = np.abs(agents[e][:, None] - goals[e][None]).sum(-1)       # [agent, goal]
        goal = goals[e][linear_sum_assignment(cost)[1]]                  # each agent's goal
        now = np.abs(agents[e] - goal).sum(-1)
        for a, move in enumerate(MOVES):
            after = np.abs(np.clip(agents[e] + move, 0, size - 1) - goal).sum(-1)
            out[e, :, a] = (after < now) | ((now == 0) & (after == 0))
    return out


#: ``[6]`` bool: the actions that keep an agent's cell (noop, stay).
STILL = (MOVES == 0).all(-1)


def stray_mass(marginals: np.ndarray, oracle: np.ndarray, stray: np.ndarray
               ) -> tuple[float, float]:
    """``(oracle mass, still mass)`` summed over the agent-steps where ``stray [E, n]``:
    each agent's probability ``marginals [E, n, 6]`` of its oracle moves (``oracle [E, n,
    6]`` bool) and of the actions that keep its cell (noop, stay)."""
    picked = marginals[stray]                                           # [S, 6]
    return (float((picked * oracle[stray]).sum()), float(picked[:, STILL].sum()))


def twin_pairs(obs: np.ndarray) -> np.ndarray:
    """``[T, 3]`` int rows ``(e, i, j)``, ``i < j``: agents ``i`` and ``j`` of env ``e`` see
    identical observations in ``obs [E, n, obs_dim]``."""
    same = (obs[:, :, None] == obs[:, None]).all(-1)                    # [E, n, n]
    return np.argwhere(np.triu(same, 1))


def twins_agree(actions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``[T]`` bool: twin row ``(e, i, j)`` of ``pairs [T, 3]`` has ``actions [E, n]`` equal
    for agents ``i`` and ``j`` of env ``e``."""
    return actions[pairs[:, 0], pairs[:, 1]] == actions[pairs[:, 0], pairs[:, 2]]


def twin_agreement(dist, pairs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p_same [T], p_same_product [T])`` for twin rows ``pairs [T, 3]`` of a policy
    distribution ``dist`` with batch ``[E]``: the probability that agents ``i`` and ``j`` of
    env ``e`` take one action under the joint policy (its exact pair marginal) and under the
    product of their single marginals. Differentiable in the policy's parameters; it asks for
    one fixed list, all ``n(n-1)/2`` agent pairs, so that the circuit plans it once."""
    n = dist.event_shape[-1]
    scopes = [(i, j) for i in range(n) for j in range(i + 1, n)]
    tables = dist.scope_marginals(scopes)                             # [E, n(n-1)/2, k, k]
    rows, i, j = (torch.as_tensor(pairs[:, c], dtype=torch.long) for c in range(3))
    slot = i * n - i * (i + 1) // 2 + (j - i - 1)                     # (i, j)'s place in scopes
    picked = tables[rows, slot]                                       # [T, k, k]
    return (picked.diagonal(dim1=-2, dim2=-1).sum(-1),
            (picked.sum(-1) * picked.sum(-2)).sum(-1))


def twin_siblings(slot_of: np.ndarray, pairs: np.ndarray, siblings: np.ndarray) -> np.ndarray:
    """``[T]`` bool: twin row ``(e, i, j)`` of ``pairs [T, 3]`` sits in one of the circuit's
    sibling slot pairs ``siblings [Q, 2]``, where ``slot_of [E, n]`` is each agent's slot."""
    partner = np.full(slot_of.shape[1], -1)
    partner[siblings[:, 0]], partner[siblings[:, 1]] = siblings[:, 1], siblings[:, 0]
    return partner[slot_of[pairs[:, 0], pairs[:, 1]]] == slot_of[pairs[:, 0], pairs[:, 2]]


def cycled(path: np.ndarray, steps: int = CYCLE_STEPS) -> bool:
    """Whether the last agent cells of ``path [T + 1, n, 2]`` occurred at one of the
    ``steps`` states before them."""
    last, earlier = path[-1], path[max(len(path) - 1 - steps, 0):-1]
    return bool((earlier == last).all(axis=(-2, -1)).any())


def settle_step(path: np.ndarray, goals: np.ndarray, grid_size: int) -> int:
    """The last step at which the set of agents on a goal changed along an episode's agent
    cells ``path [T + 1, n, 2]`` (states 0..T) with ``goals [n, 2]``; 0 if it never did."""
    on = on_cells(path, np.broadcast_to(goals, path.shape), grid_size)     # [T + 1, n]
    changed = np.flatnonzero((on[1:] != on[:-1]).any(-1))
    return int(changed[-1]) + 1 if len(changed) else 0


def failure_breakdown(starts: np.ndarray, agents: np.ndarray, goals: np.ndarray,
                      moved: np.ndarray, grid_size: int, seen: int | None = None) -> dict:
    """How failed episodes end (see the module docstring). ``starts``, ``agents`` and ``goals``
    ``[F, n, 2]`` are the first and last agent positions and the goals of ``F`` failed
    episodes on a ``grid_size`` grid; ``moved [F, n]`` bool says which agents changed cell in
    the last ``STILL_STEPS`` steps; ``seen`` is how many nearest goals an agent observes
    (Manhattan distance, ties to the lower index), None when it observes all. ``stray`` and
    ``stacked`` are means per episode (None without episodes); ``lost``, ``still``, ``gap``
    and ``unseen`` are over the stray agents (None without any, ``unseen`` also without
    ``seen``)."""
    covered = on_cells(goals, agents, grid_size)                      # [F, goal]
    held = on_cells(agents, goals, grid_size)                         # [F, agent]
    stray = ~held
    distance = np.abs(agents[:, :, None] - goals[:, None]).sum(-1)    # [F, agent, goal]
    gap = np.where(covered[:, None], np.iinfo(np.int64).max, distance).min(-1)
    planned = np.array([linear_sum_assignment(np.abs(a[:, None] - g[None]).sum(-1))[1]
                        for a, g in zip(starts, goals)], dtype=np.int64).reshape(stray.shape)
    lost = np.take_along_axis(covered, planned, -1)                   # [F, agent]
    nearest = np.argsort(distance, axis=-1, kind="stable")[..., :seen]  # [F, agent, seen]
    free_seen = ~np.take_along_axis(np.broadcast_to(covered[:, None], distance.shape),
                                    nearest, -1)                      # [F, agent, seen]
    mean = (lambda x: float(x.mean()) if len(agents) else None)
    share = (lambda x: float(x[stray].mean()) if stray.any() else None)
    return {"episodes": len(agents), "stray": mean(stray.sum(-1)),
            "stacked": mean(held.sum(-1) - covered.sum(-1)), "lost": share(lost),
            "still": share(~moved), "gap": share(gap),
            "unseen": None if seen is None else share(~free_seen.any(-1))}


def trained_spn_ac(run: str | Path):
    """The run's trained spn-ac (or variant) with its critics, rebuilt on the CPU from its
    config and last checkpoint; None for another algorithm."""
    from spnpolicy.algos.registry import get_algorithm
    from spnpolicy.algos.spn_ac import SpnAc, SpnAcConfig
    from spnpolicy.training.offpolicy import load_algorithm
    from spnpolicy.training.rundir import RunDir

    folder, checkpoint = RunDir.locate(run)
    saved = folder.read_config()
    if get_algorithm(saved["algo"]).config_cls is not SpnAcConfig:
        return None
    saved["config"] = saved["config"] | {"device": "cpu"}
    return load_algorithm(SpnAcConfig, SpnAc, saved, folder.load_checkpoint(checkpoint))


def local_values(learner, state: np.ndarray, obs: np.ndarray, actions: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``[E, n, 6]`` twice: each agent's values of its six actions by the critics' ensemble
    mean, with its team-mates at ``actions [E, n]`` (:meth:`FactorValues.local_values`), and
    their unary rows alone (``FactorValues.unary``; zeros without unary terms), at global
    states ``state [E, S]`` and observations ``obs [E, n, obs_dim]``."""
    values = learner.critic_values(torch.as_tensor(state), torch.as_tensor(obs)).mean()
    local = values.local_values(torch.as_tensor(actions)).double().numpy()
    return local, values.unary.double().numpy()


def stray_margins(local: np.ndarray, oracle: np.ndarray, stray: np.ndarray) -> np.ndarray:
    """``[M]``: over the agent-steps where ``stray [E, n]`` with an oracle move, the best
    oracle move's value minus the best value that keeps the cell, of ``local [E, n, 6]``
    (``oracle [E, n, 6]`` bool)."""
    rows = stray & oracle.any(-1)
    moves = np.where(oracle, local, -np.inf).max(-1)                       # [E, n]
    keeps = local[..., STILL].max(-1)
    return (moves - keeps)[rows]


def stray_margin_parts(local: np.ndarray, unary: np.ndarray, oracle: np.ndarray,
                       stray: np.ndarray) -> np.ndarray:
    """``[M, 2]``: :func:`stray_margins` split at its two actions (the best oracle move and
    the best action that keeps the cell, by ``local``) into the difference of the unary
    rows ``unary [E, n, 6]`` and the rest, the pair factors' (the two sum to the margin)."""
    rows = stray & oracle.any(-1)
    move = np.where(oracle, local, -np.inf).argmax(-1)                      # [E, n]
    keep = np.where(STILL, local, -np.inf).argmax(-1)

    def at(x: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, actions[..., None], -1)[..., 0]

    margin = at(local, move) - at(local, keep)
    from_unary = at(unary, move) - at(unary, keep)
    return np.stack([from_unary, margin - from_unary], -1)[rows]


def _margin_summary(margins: list[np.ndarray], parts: list[np.ndarray],
                    grid_size: int) -> dict | None:
    """``critics_margin_stray`` (see the module docstring) of the margins of each step and
    their unary and pair parts ``[M, 2]``."""
    margin = np.concatenate(margins) if margins else np.zeros(0)
    if not margin.size:
        return None
    unary, pairs = np.concatenate(parts).mean(0).tolist()
    return {"mean": float(margin.mean()), "median": float(np.median(margin)),
            "positive": float((margin > 0).mean()), "unary": unary, "pairs": pairs,
            "one_cell": 1.0 / grid_size}


def probe(run: str | Path, episodes: int = 32, seed: int = 12345) -> dict:
    """The shares of oracle moves of ``run``'s greedy players (see the module docstring)."""
    saved = load_run_config(run)
    if saved["env"] != "coverage":
        raise ValueError(f"run {str(run)!r} trained on {saved['env']!r}; the probe reads "
                         f"coverage runs")
    config = CoverageConfig(**saved["env_kwargs"])
    players = {"policy": load_agent(run)}
    try:
        players["critics"] = load_agent(run, acting="critics")
    except ValueError:                                  # no factor critics to act by
        pass
    learner = trained_spn_ac(run)
    responses = np.zeros(2)                  # critics' best responses: (oracle, still)
    margins, parts = [], []                  # critics' margins of moving, and their parts
    seen = config.nearest_counts[0] if config.observation == "nearest" else None
    envs = make_vec_env("coverage", episodes, **saved["env_kwargs"])
    runner = Runner(envs, observations=True)
    runner.reset(seed=seed)
    hits = {name: [] for name in [*players, "uniform"]}
    stray_hits = dict.fromkeys(hits, 0.0)              # summed over agent-steps on no goal
    stray_steps = 0
    mass = np.zeros(2)                       # policy's (oracle, still) mass over strays
    policy = players["policy"]
    marginals = getattr(policy, "distribution", None)
    history = []                                            # [E, n, 2] agents before each step
    ended = []                                  # (starts, agents, goals, moved) per failure
    last_change = []                            # per failure, see the module docstring
    ended_twins, ended_cycled = [], []          # per failure, see the module docstring
    twin_counts = np.zeros(2, dtype=np.int64)   # twin pairs, of them with one greedy action
    p_same = np.zeros(2)                        # summed over twin pairs: joint, product
    siblings = getattr(getattr(policy, "encoder", None), "siblings", None)
    sibling_count = 0                           # twin pairs held as siblings
    try:
        for _ in range(config.max_steps):
            oracle = oracle_moves(runner.state, config)
            agents, goals = state_positions(runner.state, config)
            stray = ~on_cells(agents, goals, config.grid_size)             # [E, n]
            stray_steps += int(stray.sum())
            acted = None
            for name, agent in players.items():
                x = runner.obs if len(agent.input_shape) == 2 else runner.state
                actions = np.asarray(agent.act(x))
                hit = np.take_along_axis(oracle, actions[..., None], -1)[..., 0]  # [E, n]
                hits[name].append(hit.mean())
                stray_hits[name] += float(hit[stray].sum())
                acted = actions if name == "policy" else acted
            pairs = twin_pairs(runner.obs)                                   # [T, 3]
            twin_counts += (len(pairs), int(twins_agree(acted, pairs).sum()))
            if marginals is not None:
                with torch.no_grad():
                    x = runner.obs if len(policy.input_shape) == 2 else runner.state
                    dist = marginals(x)
                    probs = dist.marginals().double().cpu().numpy()             # [E, n, 6]
                    if len(pairs):
                        p_same += [part.sum().item() for part in twin_agreement(dist, pairs)]
                    if len(pairs) and siblings is not None:
                        sibling_count += int(twin_siblings(dist.slot_of.cpu().numpy(), pairs,
                                                           siblings.cpu().numpy()).sum())
                mass += stray_mass(probs, oracle, stray)
            if learner is not None:
                local, unary = local_values(learner, runner.state, runner.obs, acted)
                best = local.argmax(-1)                                          # [E, n]
                hit = np.take_along_axis(oracle, best[..., None], -1)[..., 0]
                responses += (float(hit[stray].sum()), float(STILL[best][stray].sum()))
                margins.append(stray_margins(local, oracle, stray))
                parts.append(stray_margin_parts(local, unary, oracle, stray))
            hits["uniform"].append(oracle.mean())
            stray_hits["uniform"] += float(oracle.mean(-1)[stray].sum())
            history.append(agents)
            step = runner.step(acted)
            for e in np.flatnonzero(step.truncated & (step.terminated == 0)).tolist():
                agents, goals = state_positions(step.next_state[e], config)
                earlier = history[max(len(history) - STILL_STEPS, 0)][e]
                ended.append((history[0][e], agents, goals, (agents != earlier).any(-1)))
                path = np.stack([h[e] for h in history] + [agents])          # [T + 1, n, 2]
                last_change.append(settle_step(path, goals, config.grid_size))
                ended_cycled.append(cycled(path))
                last_obs = observations(step.next_state[e][None], config)
                ended_twins.append(len(twin_pairs(last_obs)) > 0)
    finally:
        envs.close()
    empty = np.zeros((0, config.num_agents, 2), dtype=np.int64)
    last = ([np.stack(part) for part in zip(*ended)] if ended
            else [empty, empty, empty, np.zeros((0, config.num_agents), dtype=bool)])
    return {"run": str(run), "algo": saved["algo"], "env_kwargs": saved["env_kwargs"],
            "episodes": episodes, "seed": seed,
            "oracle_share": {name: float(np.mean(v)) for name, v in hits.items()},
            "oracle_share_stray": {name: v / stray_steps if stray_steps else None
                                   for name, v in stray_hits.items()},
            "policy_mass_stray": (dict(zip(("oracle", "still"), (mass / stray_steps).tolist()))
                                  if stray_steps and marginals is not None else None),
            "critics_response_stray": (dict(zip(("oracle", "still"),
                                                (responses / stray_steps).tolist()))
                                       if stray_steps and learner is not None else None),
            "critics_margin_stray": _margin_summary(margins, parts, config.grid_size),
            "failures": failure_breakdown(*last, config.grid_size, seen) | {
                "last_change": (np.percentile(last_change, [25, 50, 75]).tolist()
                                if last_change else None),
                "twins": float(np.mean(ended_twins)) if ended else None,
                "cycled": float(np.mean(ended_cycled)) if ended else None},
            "twins": {"pair_steps": int(twin_counts[0]),
                      "same_action": (twin_counts[1] / twin_counts[0]).item()
                      if twin_counts[0] else None,
                      **{key: (p_same[s] / twin_counts[0]).item()
                         if twin_counts[0] and marginals is not None else None
                         for s, key in enumerate(("p_same", "p_same_product"))},
                      "siblings": sibling_count / twin_counts[0].item()
                      if twin_counts[0] and siblings is not None else None}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        rows.append(probe(run, args.episodes, args.seed))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
