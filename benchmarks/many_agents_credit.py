"""Can the many-agent suites' critics tell each agent's good move from the team's reward?
A supervised check, without bootstrapping and without a policy.

    python benchmarks/many_agents_credit.py [--agents 8 16] [--rows 50000 200000]
        [--batch 128] [--updates 1000 5000 20000] [--fit critic moves]
        [--observation egocentric relative] [--epsilon 1.0 0.3] [--held 0 0.6] [--out FILE]
    python benchmarks/many_agents_credit.py --runs RUN_DIR [RUN_DIR ...] [--held 0 0.6]

For each team size and data size: ``--rows`` rows of uniform random agent cells on the
coverage layout the suites train on (fixed goals, ``layout_seed`` 0; egocentric
observations), each with a random joint action and its one-step progress reward
``Phi(s') - Phi(s)`` (the shaping term of ``shaping_form="progress"``: minus the change of the
best assignment's summed distance, over ``grid_size``). Each agent's action is uniform with
probability ``--epsilon`` and otherwise stays put (action 0): 1 gives uniform actions, smaller
values a behaviour that rarely tries anything but standing still. With ``--held`` above 0
each agent starts on its own goal of a random one-to-one assignment with that probability (the
states where a trained team gets stuck: most goals held, a few agents still looking for the
free ones); training and held-out states are drawn alike. The spn-ac critic of the many-agent
suites (``AgentFactorQ`` on ``2n`` random pairs, every pair below 5 agents; a shared
``(128, 128)`` agent network; unary terms; one network, not the twin) is fitted to that reward
by mean squared error with Adam (learning rate 1e-3, batches of ``--batch`` rows drawn with
replacement). After each count in
``--updates`` its best joint action (exact or max-plus, ``FactorValues.argmax``) and each
agent's best unary action are scored on 1,000 held-out states: the share of agent-steps that
are oracle moves (``many_agents_probe.oracle_moves``), beside ``uniform``, the share among all
six actions. The reward is nearly a sum of per-agent terms (each agent's step toward or away
from its goal), so a critic that learns who did what scores far above ``uniform``.

``--fit moves`` asks instead whether one agent's observation shows its oracle move: an MLP of
the same width shared by the agents, trained on the same rows to put its probability on the
oracle moves (minus the log of their summed probability), scored by its argmax. It compares
observation kinds (``--observation``): a network that reads the oracle moves equally well from
each has the same information within reach.

``--runs`` scores trained runs' critics instead (spn-ac's family, coverage with egocentric
observations): the first of each run's twin critics on the same held-out states, drawn for
the run's team and grid, its best joint and unary actions scored alike (``fit`` "run").
A run's critics score well here and at chance on its own greedy episodes
(``many_agents_probe.py``) when they know who does what in general but not in the states the
team reaches.

Writes one record per (fit, observation, agents, rows, epsilon, held), or per (run, held), to
``--out`` (default ``benchmarks/results/many-agents/credit.json``, with ``--runs``
``credit_runs.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from factor_q import AgentFactorQ  # noqa: E402
from many_agents_probe import oracle_moves  # noqa: E402
from spnpolicy.inference import load_agent, load_run_config  # noqa: E402
from spnpolicy.algos.critics import build_factor_graph  # noqa: E402
from spnpolicy.algos.policies import mlp  # noqa: E402
from spnpolicy.envs.coverage_core import (  # noqa: E402
    CoverageConfig, global_state, goal_distances, move, observations, potential)

RESULTS = ROOT / "benchmarks" / "results" / "many-agents" / "credit.json"
RUN_RESULTS = RESULTS.with_name("credit_runs.json")
#: Grid side per team size: the many-agent suites' (one agent per 16 cells), and 11x11 for
#: the 8-agent runs of the study log.
GRIDS = {8: 11, 16: 16, 32: 24, 64: 32}
#: Held-out states scored after each count of updates.
TEST_ROWS = 1_000


def coverage_config(num_agents: int, grid_size: int,
                    observation: str = "egocentric") -> CoverageConfig:
    """The suites' coverage layout: fixed goals, horizon 4 grid sides, egocentric
    observations unless ``observation`` says otherwise."""
    return CoverageConfig(num_agents=num_agents, grid_size=grid_size, max_steps=4 * grid_size,
                          reward="sparse", layout="fixed", layout_seed=0,
                          observation=observation)


def progress_rows(config: CoverageConfig, rows: int, rng: np.random.Generator,
                  epsilon: float = 1.0, held: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` random transitions: observations ``[R, n, obs_dim]``, joint actions
    ``[R, n]``, progress rewards ``[R]`` (``Phi(s') - Phi(s)``, float32) and states
    ``[R, S]``. Agent cells are uniform, except that with probability ``held`` an agent is on
    its goal under a random one-to-one assignment; the clock is uniform over the horizon, and
    each agent's action is uniform with probability ``epsilon``, else 0 (stay)."""
    n, size = config.num_agents, config.grid_size
    goals = np.broadcast_to(config.fixed_goals(), (rows, n, 2)).copy()
    agents = rng.integers(0, size, (rows, n, 2))
    if held > 0:
        own = np.take_along_axis(goals, rng.permuted(np.tile(np.arange(n), (rows, 1)),
                                                     axis=1)[..., None], 1)     # [R, n, 2]
        agents = np.where(rng.random((rows, n, 1)) < held, own, agents)
    covered = goal_distances(agents, goals) == 0
    states = global_state(agents, goals, covered, rng.integers(0, config.max_steps, rows), config)
    actions = rng.integers(0, 6, (rows, n))
    if epsilon < 1:
        actions = np.where(rng.random((rows, n)) < epsilon, actions, 0)
    after = move(agents, actions, config.move_table(), size)
    reward = (potential(after, goals, size) - potential(agents, goals, size)).astype(np.float32)
    return observations(states, config), actions, reward, states


def best_shares(values, oracle: torch.Tensor) -> dict:
    """Shares of oracle moves ``oracle [E, n, 6]`` among the best joint (``joint``) and the
    best unary (``unary``) actions of factor values on ``E`` states."""
    joint = oracle.gather(2, values.argmax()[..., None]).float().mean()
    unary = oracle.gather(2, values.unary.argmax(-1)[..., None]).float().mean()
    return {"joint": round(joint.item(), 4), "unary": round(unary.item(), 4)}


def fit(config: CoverageConfig, rows: int, batch: int, updates: tuple[int, ...],
        seed: int = 0, hidden: tuple[int, ...] = (128, 128), epsilon: float = 1.0,
        held: float = 0.0) -> dict:
    """Fit the suites' critic to ``rows`` progress rows; the record of the module docstring:
    ``uniform``, the reward's standard deviation and, per count in ``updates``, the shares
    of oracle moves of the best joint (``joint``) and unary (``unary``) actions and the last
    batch's loss."""
    n = config.num_agents
    obs, actions, reward, _ = (torch.as_tensor(x) for x in
                               progress_rows(config, rows, np.random.default_rng(seed),
                                             epsilon, held))
    test_obs, _, _, test_states = progress_rows(config, TEST_ROWS,
                                                np.random.default_rng(seed + 1), held=held)
    oracle = torch.as_tensor(oracle_moves(test_states, config))            # [E, n, 6]
    test_obs = torch.as_tensor(test_obs)
    torch.manual_seed(seed)
    graph = build_factor_graph("random", n, min(2 * n, n * (n - 1) // 2), 2, seed=0)
    critic = AgentFactorQ(graph, config.obs_dim, 6, hidden)
    optimiser = torch.optim.Adam(critic.parameters(), lr=1e-3)
    draws = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(1, max(updates) + 1):
        index = torch.randint(rows, (batch,), generator=draws)
        loss = (critic.values(obs[index]).evaluate(actions[index]) - reward[index]).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step in updates:
            with torch.no_grad():
                shares = best_shares(critic.values(test_obs), oracle)
            curve.append({"updates": step, **shares, "loss": round(loss.item(), 6)})
    return {"fit": "critic", "observation": config.observation, "agents": n,
            "grid": config.grid_size, "rows": rows, "batch": batch, "seed": seed,
            "epsilon": epsilon, "held": held, "reward_std": round(float(reward.std()), 4),
            "uniform": round(oracle.float().mean().item(), 4), "curve": curve}


def fit_moves(config: CoverageConfig, rows: int, batch: int, updates: tuple[int, ...],
              seed: int = 0, hidden: tuple[int, ...] = (128, 128), epsilon: float = 1.0,
              held: float = 0.0) -> dict:
    """Fit a shared MLP from one agent's observation to its oracle moves on the states of
    ``rows`` progress rows (``rows * n`` agent-rows); the record of the module docstring, with
    each curve point's share of argmax actions that are oracle moves (``moves``); the
    actions, and so ``epsilon``, play no part."""
    obs, _, _, states = progress_rows(config, rows, np.random.default_rng(seed), epsilon,
                                      held)
    test_obs, _, _, test_states = progress_rows(config, TEST_ROWS,
                                                np.random.default_rng(seed + 1), held=held)
    obs = torch.as_tensor(obs).flatten(0, 1)                               # [R n, obs_dim]
    oracle = torch.as_tensor(oracle_moves(states, config)).flatten(0, 1)   # [R n, 6]
    test_obs = torch.as_tensor(test_obs).flatten(0, 1)
    test_oracle = torch.as_tensor(oracle_moves(test_states, config)).flatten(0, 1)
    torch.manual_seed(seed)
    network = mlp(config.obs_dim, hidden, 6)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    draws = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(1, max(updates) + 1):
        index = torch.randint(len(obs), (batch,), generator=draws)
        log_p = network(obs[index]).log_softmax(-1).masked_fill(~oracle[index], -torch.inf)
        loss = -log_p.logsumexp(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step in updates:
            with torch.no_grad():
                best = network(test_obs).argmax(-1, keepdim=True)
            share = test_oracle.gather(1, best).float().mean()
            curve.append({"updates": step, "moves": round(share.item(), 4),
                          "loss": round(loss.item(), 6)})
    return {"fit": "moves", "observation": config.observation, "agents": config.num_agents,
            "grid": config.grid_size, "rows": rows, "batch": batch, "seed": seed,
            "epsilon": epsilon, "held": held,
            "uniform": round(test_oracle.float().mean().item(), 4), "curve": curve}


FITS = {"critic": fit, "moves": fit_moves}


def score_run(run: str | Path, held: float = 0.0, seed: int = 0) -> dict:
    """Score a trained coverage run's critics on held-out states of its team and grid."""
    saved = load_run_config(run)
    config = CoverageConfig(**saved["env_kwargs"])
    if saved["env"] != "coverage" or config.observation != "egocentric":
        raise ValueError(f"run {str(run)!r} is not on coverage with egocentric observations "
                         f"(env {saved['env']!r}, {saved['env_kwargs']})")
    agent = load_agent(run, acting="critics")
    if len(agent.input_shape) != 2:
        raise ValueError(f"run {str(run)!r}'s critics read the global state; --runs scores "
                         f"critics on the agents' observations (critic_input='agents')")
    obs, _, _, states = progress_rows(config, TEST_ROWS, np.random.default_rng(seed + 1),
                                      held=held)
    oracle = torch.as_tensor(oracle_moves(states, config))
    with torch.no_grad():
        shares = best_shares(agent.values(torch.as_tensor(obs)), oracle)
    return {"fit": "run", "run": str(run), "algo": saved["algo"],
            "agents": config.num_agents, "grid": config.grid_size, "held": held,
            "uniform": round(oracle.float().mean().item(), 4), **shares}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[8, 16],
                        choices=sorted(GRIDS))
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--updates", type=int, nargs="+", default=[1_000, 5_000, 20_000])
    parser.add_argument("--fit", nargs="+", default=["critic"], choices=sorted(FITS))
    parser.add_argument("--observation", nargs="+", default=["egocentric"],
                        choices=["egocentric", "relative"])
    parser.add_argument("--epsilon", type=float, nargs="+", default=[1.0])
    parser.add_argument("--held", type=float, nargs="+", default=[0.0])
    parser.add_argument("--runs", nargs="+", default=[], metavar="RUN_DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default {RESULTS.name}, with --runs {RUN_RESULTS.name} (in "
                             f"{RESULTS.parent.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    out = args.out or (RUN_RESULTS if args.runs else RESULTS)
    for name in ("rows", "updates"):
        if min(getattr(args, name)) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("epsilon", "held"):
        if not all(0 <= value <= 1 for value in getattr(args, name)):
            parser.error(f"--{name} must lie in [0, 1], got {getattr(args, name)}")
    if args.batch < 1:
        parser.error(f"--batch must be positive, got {args.batch}")
    torch.set_num_threads(1)
    records = []
    updates = tuple(sorted(set(args.updates)))
    for run, held in itertools.product(args.runs, args.held):
        try:
            records.append(score_run(run, held, args.seed))
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
        print(json.dumps(records[-1]), flush=True)
    for kind in args.fit if not args.runs else ():
        for observation in args.observation:
            for n, rows, epsilon, held in itertools.product(args.agents, args.rows,
                                                            args.epsilon, args.held):
                start = time.perf_counter()
                config = coverage_config(n, GRIDS[n], observation)
                records.append(FITS[kind](config, rows, args.batch, updates, args.seed,
                                          epsilon=epsilon, held=held))
                records[-1]["seconds"] = round(time.perf_counter() - start, 1)
                print(json.dumps(records[-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2) + "\n")
    return records


if __name__ == "__main__":
    main()
