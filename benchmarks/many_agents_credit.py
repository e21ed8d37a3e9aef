"""Can the many-agent suites' critics tell each agent's good move from the team's reward?
A supervised check, without bootstrapping and without a policy.

    python benchmarks/many_agents_credit.py [--agents 8 16] [--rows 50000 200000]
        [--batch 128] [--updates 1000 5000 20000] [--fit critic moves]
        [--observation egocentric relative nearest] [--pairs random] [--critic-ids on off]
        [--lr 1e-3 3e-3] [--epsilon 1.0 0.3] [--held 0 0.6] [--out FILE]
    python benchmarks/many_agents_credit.py --runs RUN_DIR [RUN_DIR ...] [--held 0 0.6]
    python benchmarks/many_agents_credit.py --greedy RUN_DIR [--greedy-episodes 64] [--rows ...]

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
``margin_stray`` is the mean over the stray agents of the critic's value of their best oracle
move minus their best value that keeps the cell, with the team at the critic's best joint
action (``FactorValues.local_values``): near ``one_cell`` = 1 / grid_size (one step's
progress) for a critic that credits each agent's step, near 0 for one that cannot tell it
from standing. ``--pairs nearest`` fits the critic of the many-agent suites' spn-ac instead:
its pairs are each agent's 2 nearest others in each state (use it with ``--observation
nearest``, the suites' observation).

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

``--greedy RUN_DIR`` draws the agent cells from the states that a trained run's greedy policy
reaches instead (``greedy_cells``: ``--greedy-episodes`` episodes from seeded resets of the
run's env, every step's cells; the run's team, grid and layout): the fit trains on the cells
of one set of episodes and is scored on those of episodes from other resets, and the run's
own critics (its first twin) are scored on the same held-out cells (``fit`` "run"). A critic
that scores well on random cells and at chance on these fails on the states the team gets
stuck in; one that also learns them by supervision there, while the run's critics do not,
fails by what bootstrapped training gives it. ``--train-from replay`` trains the fit on the
run's own replay instead (its last checkpoint's stored states and joint actions, the reward
recomputed as one-step progress), ``replay-states`` on those states with uniform
actions, and ``replay-greedy`` on the replay's rows from the greedy env copies alone (a run
with spn-ac's ``greedy_envs``, n_step 1 and no hindsight, where row i came from copy
i % num_envs): what the data that training gave the critics can teach, with no
bootstrapping, and whether their states or their actions fall short. Every record also has
the shares over the agent-steps of agents on no goal (``joint_stray``, ``unary_stray``,
``uniform_stray``), the ones that still have to move.

Writes one record per (fit, observation, agents, rows, epsilon, held), or per (run, held), to
``--out`` (default ``benchmarks/results/many-agents/credit.json``, with ``--runs``
``credit_runs.json``, with ``--greedy`` ``credit_greedy.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from many_agents_probe import oracle_moves, stray_margins  # noqa: E402
from spnpolicy.inference import load_agent, load_run_config  # noqa: E402
from spnpolicy.algos.critics import build_factor_graph  # noqa: E402
from spnpolicy.algos.policies import mlp  # noqa: E402
from spnpolicy.algos.spn_ac import greedy_rows  # noqa: E402
from spnpolicy.envs.coverage_core import (  # noqa: E402
    NUM_ACTIONS, CoverageConfig, global_state, goal_distances, move, observations, on_cells,
    potential, state_positions)
from spnpolicy.training import Runner, load_checkpoint, make_vec_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "many-agents" / "credit.json"
RUN_RESULTS = RESULTS.with_name("credit_runs.json")
GREEDY_RESULTS = RESULTS.with_name("credit_greedy.json")
#: Grid side per team size: the many-agent suites' (one agent per 16 cells), and 11x11 for
#: the 8-agent runs of the study log.
GRIDS = {8: 11, 16: 16, 32: 24, 64: 32}
#: Held-out states scored after each count of updates.
TEST_ROWS = 1_000
#: Training rows of a ``--greedy`` critic fit (see ``--train-from``).
TRAIN_FROM = ("cells", "replay", "replay-states", "replay-greedy")
#: Seed of the resets of the greedy episodes whose cells train a fit (held-out: this + 1).
GREEDY_SEED = 12345


def coverage_config(num_agents: int, grid_size: int,
                    observation: str = "egocentric") -> CoverageConfig:
    """The suites' coverage layout: fixed goals, horizon 4 grid sides, egocentric
    observations unless ``observation`` says otherwise."""
    return CoverageConfig(num_agents=num_agents, grid_size=grid_size, max_steps=4 * grid_size,
                          reward="sparse", layout="fixed", layout_seed=0,
                          observation=observation)


def progress_rows(config: CoverageConfig, rows: int, rng: np.random.Generator,
                  epsilon: float = 1.0, held: float = 0.0, cells: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` random transitions: observations ``[R, n, obs_dim]``, joint actions
    ``[R, n]``, progress rewards ``[R]`` (``Phi(s') - Phi(s)``, float32) and states
    ``[R, S]``. Agent cells are uniform, except that with probability ``held`` an agent is on
    its goal under a random one-to-one assignment; or, given ``cells [M, n, 2]``, each row's
    cells are one of those, drawn uniformly (``held`` then plays no part). The clock is
    uniform over the horizon, and each agent's action is uniform with probability
    ``epsilon``, else 0 (stay)."""
    n, size = config.num_agents, config.grid_size
    goals = np.broadcast_to(config.fixed_goals(), (rows, n, 2)).copy()
    if cells is not None:
        agents = cells[rng.integers(0, len(cells), rows)]
    else:
        agents = rng.integers(0, size, (rows, n, 2))
    if held > 0 and cells is None:
        own = np.take_along_axis(goals, rng.permuted(np.tile(np.arange(n), (rows, 1)),
                                                     axis=1)[..., None], 1)     # [R, n, 2]
        agents = np.where(rng.random((rows, n, 1)) < held, own, agents)
    covered = goal_distances(agents, goals) == 0
    states = global_state(agents, goals, covered, rng.integers(0, config.max_steps, rows), config)
    actions = rng.integers(0, NUM_ACTIONS, (rows, n))
    if epsilon < 1:
        actions = np.where(rng.random((rows, n)) < epsilon, actions, 0)
    return (observations(states, config), actions, progress(config, agents, goals, actions),
            states)


def progress(config: CoverageConfig, agents: np.ndarray, goals: np.ndarray,
             actions: np.ndarray) -> np.ndarray:
    """``[R]`` float32: the one-step progress ``Phi(s') - Phi(s)`` of joint ``actions [R, n]``
    from agent cells ``agents [R, n, 2]`` towards ``goals [R, n, 2]``."""
    after = move(agents, actions, config.move_table(), config.grid_size)
    return (potential(after, goals, config.grid_size)
            - potential(agents, goals, config.grid_size)).astype(np.float32)


def stray_agents(states: np.ndarray, config: CoverageConfig) -> torch.Tensor:
    """``[E, n]`` bool: agent ``i`` stands on no goal at state ``e``."""
    agents, goals = state_positions(states, config)
    return torch.as_tensor(~on_cells(agents, goals, config.grid_size))


def best_shares(values, oracle: torch.Tensor, stray: torch.Tensor) -> dict:
    """Shares of oracle moves ``oracle [E, n, 6]`` among the best joint (``joint``) and the
    best unary (``unary``) actions of factor values on ``E`` states, and the same over the
    agent-steps where ``stray [E, n]`` (``joint_stray``, ``unary_stray``; None without any)."""
    joint = oracle.gather(2, values.argmax()[..., None])[..., 0]           # [E, n]
    unary = oracle.gather(2, values.unary.argmax(-1)[..., None])[..., 0]
    out = {}
    for name, hit in (("joint", joint), ("unary", unary)):
        out[name] = round(hit.float().mean().item(), 4)
        out[f"{name}_stray"] = round(hit[stray].float().mean().item(), 4) if stray.any() else None
    return out


def uniform_shares(oracle: torch.Tensor, stray: torch.Tensor) -> dict:
    """``uniform`` and ``uniform_stray``: the share of oracle moves among all six actions,
    over every agent-step and over the stray ones (None without any)."""
    share = oracle.float().mean(-1)                                        # [E, n]
    return {"uniform": round(share.mean().item(), 4),
            "uniform_stray": round(share[stray].mean().item(), 4) if stray.any() else None}


def replay_rows(config: CoverageConfig, states: np.ndarray, actions: np.ndarray, rows: int,
                rng: np.random.Generator, uniform_actions: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` transitions drawn uniformly from stored ``states [M, S]`` and their joint
    ``actions [M, n]`` (a run's replay), as :func:`progress_rows` returns them: the stored
    state and action, or a uniform action with ``uniform_actions``, and the one-step
    progress reward of that action at that state (recomputed: a stored reward may be an
    n-step return, with the sparse reward in it)."""
    index = rng.integers(0, len(states), rows)
    states = states[index]
    agents, goals = state_positions(states, config)
    joint = (rng.integers(0, NUM_ACTIONS, (rows, config.num_agents)) if uniform_actions
             else actions[index])
    return observations(states, config), joint, progress(config, agents, goals, joint), states


def run_replay(run: str | Path, greedy_copies: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(states [M, S], actions [M, n])``: the replay stored in ``run``'s last checkpoint,
    or with ``greedy_copies`` its rows from the greedy env copies alone (ValueError for a
    run whose rows do not follow the copies in turn)."""
    payload = load_checkpoint(Path(run) / "checkpoints" / "last.pt")
    data = payload["buffer"]["data"]
    states, actions = data["state"].numpy(), data["actions"].numpy()
    if not greedy_copies:
        return states, actions
    cfg = load_run_config(run)["config"]
    num_envs, copies = cfg["num_envs"], greedy_rows(cfg.get("greedy_envs", 0.0), cfg["num_envs"])
    if not copies or cfg["n_step"] != 1 or cfg["hindsight"] or len(states) % num_envs:
        raise ValueError(f"run {str(run)!r}: replay-greedy needs greedy_envs above 0, n_step 1, "
                         f"no hindsight and a replay of a multiple of num_envs rows (got "
                         f"greedy_envs={cfg.get('greedy_envs', 0.0)}, n_step={cfg['n_step']}, "
                         f"hindsight={cfg['hindsight']}, {len(states)} rows, "
                         f"num_envs={num_envs})")
    keep = np.arange(len(states)) % num_envs < copies
    return states[keep], actions[keep]


def greedy_team(run: str | Path) -> CoverageConfig:
    """The coverage config of ``run``; ValueError for a run on another env or with random
    goals (every row's goals are the layout's fixed ones)."""
    saved = load_run_config(run)
    if saved["env"] != "coverage":
        raise ValueError(f"run {str(run)!r} trained on {saved['env']!r}; --greedy reads "
                         f"coverage runs")
    config = CoverageConfig(**saved["env_kwargs"])
    if config.layout != "fixed":
        raise ValueError(f"run {str(run)!r} has layout {config.layout!r}; --greedy needs "
                         f"fixed goals")
    return config


def greedy_cells(run: str | Path, episodes: int, seed: int) -> np.ndarray:
    """``[episodes * max_steps, n, 2]``: the agents' cells at every step of ``episodes``
    episodes of ``run``'s greedy policy (its own acting) from resets seeded by ``seed``."""
    saved = load_run_config(run)
    config = CoverageConfig(**saved["env_kwargs"])
    policy = load_agent(run)
    envs = make_vec_env("coverage", episodes, **saved["env_kwargs"])
    runner = Runner(envs, observations=True)
    runner.reset(seed=seed)
    cells = []
    try:
        for _ in range(config.max_steps):
            cells.append(state_positions(runner.state, config)[0])
            x = runner.obs if len(policy.input_shape) == 2 else runner.state
            runner.step(np.asarray(policy.act(x)))
    finally:
        envs.close()
    return np.concatenate(cells)


def positions(states: np.ndarray, config: CoverageConfig) -> torch.Tensor:
    """The agents' cells ``[R, n, 2]`` (float) in global states ``[R, S]``: what critics on
    each agent's nearest others read their pairs from."""
    return torch.as_tensor(state_positions(states, config)[0], dtype=torch.float32)


def stray_margin(values, oracle: torch.Tensor, stray: torch.Tensor) -> float | None:
    """The mean, over the stray agents with an oracle move, of their best oracle move's
    value minus their best value that keeps the cell, each with its team-mates at the best
    joint action of ``values`` (:meth:`FactorValues.local_values`); None without any."""
    local = values.local_values(values.argmax()).double().numpy()           # [E, n, 6]
    margins = stray_margins(local, oracle.numpy(), stray.numpy())
    return round(float(margins.mean()), 6) if margins.size else None


def fit(config: CoverageConfig, rows: int, batch: int, updates: tuple[int, ...],
        seed: int = 0, hidden: tuple[int, ...] = (128, 128), epsilon: float = 1.0,
        held: float = 0.0, cells: tuple[np.ndarray, np.ndarray] | None = None,
        replay: tuple[np.ndarray, np.ndarray] | None = None,
        replay_actions: bool = True, pairs: str = "random", agent_ids: bool = True,
        lr: float = 1e-3) -> dict:
    """Fit the suites' critic to ``rows`` progress rows; the record of the module docstring:
    ``uniform``, the reward's standard deviation and, per count in ``updates``, the shares
    of oracle moves of the best joint (``joint``) and unary (``unary``) actions and the last
    batch's loss. ``cells``, if given, is ``(train, test)``, the pools of agent cells
    ``[M, n, 2]`` that the training and the held-out rows draw from. ``replay``, if given,
    is ``(states [M, S], actions [M, n])`` that the training rows draw from instead
    (:func:`replay_rows`), with their stored actions or, without ``replay_actions``,
    uniform ones. ``pairs``: the critic's pairs, ``2 n`` random ones, or each agent's 2
    nearest others in each state (``"nearest"``, the many-agent suites' spn-ac).
    ``agent_ids``: whether the agent network reads a one-hot agent id beside each agent's
    observation (spn-ac's ``critic_agent_ids``). ``lr``: Adam's learning rate (spn-ac's
    ``critic_lr`` default, 1e-3)."""
    n = config.num_agents
    train_cells, test_cells = cells if cells is not None else (None, None)
    rng = np.random.default_rng(seed)
    if replay is not None:
        train = replay_rows(config, *replay, rows, rng, uniform_actions=not replay_actions)
    else:
        train = progress_rows(config, rows, rng, epsilon, held, train_cells)
    obs, actions, reward = (torch.as_tensor(x) for x in train[:3])
    where = positions(train[3], config) if pairs == "nearest" else None
    test_obs, _, _, test_states = progress_rows(config, TEST_ROWS,
                                                np.random.default_rng(seed + 1), held=held,
                                                cells=test_cells)
    oracle = torch.as_tensor(oracle_moves(test_states, config))            # [E, n, 6]
    stray = stray_agents(test_states, config)
    test_obs = torch.as_tensor(test_obs)
    test_where = positions(test_states, config) if pairs == "nearest" else None
    torch.manual_seed(seed)
    graph = build_factor_graph(pairs, n, min(2 * n, n * (n - 1) // 2), 2, seed=0,
                               neighbours=2)
    critic = AgentFactorQ(graph, config.obs_dim, 6, hidden, agent_ids=agent_ids)
    optimiser = torch.optim.Adam(critic.parameters(), lr=lr)
    draws = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(1, max(updates) + 1):
        index = torch.randint(rows, (batch,), generator=draws)
        batch_where = None if where is None else where[index]
        loss = (critic.values(obs[index], positions=batch_where).evaluate(actions[index])
                - reward[index]).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step in updates:
            with torch.no_grad():
                values = critic.values(test_obs, positions=test_where)
                shares = best_shares(values, oracle, stray)
                margin = stray_margin(values, oracle, stray)
            curve.append({"updates": step, **shares, "margin_stray": margin,
                          "loss": round(loss.item(), 6)})
    return {"fit": "critic", "observation": config.observation, "pairs": pairs, "agents": n,
            "one_cell": 1.0 / config.grid_size,
            "grid": config.grid_size, "rows": rows, "batch": batch, "seed": seed,
            "epsilon": epsilon, "held": held, "agent_ids": agent_ids, "lr": lr,
            "reward_std": round(float(reward.std()), 4),
            **uniform_shares(oracle, stray), "curve": curve}


def fit_moves(config: CoverageConfig, rows: int, batch: int, updates: tuple[int, ...],
              seed: int = 0, hidden: tuple[int, ...] = (128, 128), epsilon: float = 1.0,
              held: float = 0.0, cells: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Fit a shared MLP from one agent's observation to its oracle moves on the states of
    ``rows`` progress rows (``rows * n`` agent-rows); the record of the module docstring, with
    each curve point's share of argmax actions that are oracle moves (``moves``); the
    actions, and so ``epsilon``, play no part. ``cells`` as in :func:`fit`."""
    train_cells, test_cells = cells if cells is not None else (None, None)
    obs, _, _, states = progress_rows(config, rows, np.random.default_rng(seed), epsilon,
                                      held, train_cells)
    test_obs, _, _, test_states = progress_rows(config, TEST_ROWS,
                                                np.random.default_rng(seed + 1), held=held,
                                                cells=test_cells)
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


def score_run(run: str | Path, held: float = 0.0, seed: int = 0,
              cells: np.ndarray | None = None) -> dict:
    """Score a trained coverage run's critics on held-out states of its team and grid (their
    agents' cells drawn from ``cells [M, n, 2]`` when given)."""
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
                                      held=held, cells=cells)
    oracle = torch.as_tensor(oracle_moves(states, config))
    stray = stray_agents(states, config)
    with torch.no_grad():
        shares = best_shares(agent.values(torch.as_tensor(obs)), oracle, stray)
    return {"fit": "run", "run": str(run), "algo": saved["algo"],
            "agents": config.num_agents, "grid": config.grid_size, "held": held,
            **uniform_shares(oracle, stray), **shares}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[8, 16],
                        choices=sorted(GRIDS))
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--updates", type=int, nargs="+", default=[1_000, 5_000, 20_000])
    parser.add_argument("--fit", nargs="+", default=["critic"], choices=sorted(FITS))
    parser.add_argument("--observation", nargs="+", default=["egocentric"],
                        choices=["egocentric", "relative", "nearest"])
    parser.add_argument("--pairs", default="random", choices=["random", "nearest"],
                        help="the critic fit's pairs: 2n random ones, or each agent's 2 "
                             "nearest others in each state (the many-agent suites' spn-ac)")
    parser.add_argument("--critic-ids", nargs="+", default=["on"], choices=["on", "off"],
                        help="the critic fit's agent network with a one-hot agent id beside "
                             "each observation (on, the suites' critics) or without (off)")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3],
                        help="the critic fit's Adam learning rates (spn-ac's critic_lr: 1e-3)")
    parser.add_argument("--epsilon", type=float, nargs="+", default=[1.0])
    parser.add_argument("--held", type=float, nargs="+", default=[0.0])
    parser.add_argument("--runs", nargs="+", default=[], metavar="RUN_DIR")
    parser.add_argument("--greedy", metavar="RUN_DIR", default=None,
                        help="draw the agent cells from this run's greedy episodes (its "
                             "team, grid and fixed goals; --agents is not used)")
    parser.add_argument("--train-from", nargs="+", default=["cells"], choices=TRAIN_FROM,
                        help="with --greedy, the training rows of the critic fit: other "
                             "greedy episodes' cells (cells), the run's replay with its "
                             "actions (replay) or with uniform actions (replay-states), or "
                             "its greedy env copies' rows (replay-greedy)")
    parser.add_argument("--greedy-episodes", type=int, default=64,
                        help="greedy episodes for the training cells, and as many for the "
                             "held-out cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default {RESULTS.name}, with --runs {RUN_RESULTS.name}, with "
                             f"--greedy {GREEDY_RESULTS.name} (in "
                             f"{RESULTS.parent.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    out = args.out or (RUN_RESULTS if args.runs else GREEDY_RESULTS if args.greedy else RESULTS)
    for name in ("rows", "updates"):
        if min(getattr(args, name)) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if min(args.lr) <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    for name in ("epsilon", "held"):
        if not all(0 <= value <= 1 for value in getattr(args, name)):
            parser.error(f"--{name} must lie in [0, 1], got {getattr(args, name)}")
    if args.batch < 1:
        parser.error(f"--batch must be positive, got {args.batch}")
    if args.greedy_episodes < 1:
        parser.error(f"--greedy-episodes must be positive, got {args.greedy_episodes}")
    if args.greedy and args.runs:
        parser.error("--greedy and --runs: give one (--greedy also scores its run's critics)")
    if args.train_from != ["cells"] and (not args.greedy or args.fit != ["critic"]):
        parser.error(f"--train-from {' '.join(args.train_from)} needs --greedy and --fit "
                     f"critic alone")
    torch.set_num_threads(1)
    records = []
    updates = tuple(sorted(set(args.updates)))
    cells, team = None, None
    if args.greedy:
        try:
            team = greedy_team(args.greedy)
            cells = tuple(greedy_cells(args.greedy, args.greedy_episodes, GREEDY_SEED + k)
                          for k in (0, 1))
            replays = {source: run_replay(args.greedy, source == "replay-greedy")
                       for source in args.train_from if source != "cells"}
            records.append(score_run(args.greedy, seed=args.seed, cells=cells[1]))
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
        records[-1]["states"] = "greedy"
        print(json.dumps(records[-1]), flush=True)
    for run, held in itertools.product(args.runs, args.held):
        try:
            records.append(score_run(run, held, args.seed))
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
        print(json.dumps(records[-1]), flush=True)
    for kind in args.fit if not args.runs else ():
        for observation in args.observation:
            sizes = [team.num_agents] if team else args.agents
            for n, rows, epsilon, held, source, ids, lr in itertools.product(
                    sizes, args.rows, args.epsilon, args.held, args.train_from,
                    args.critic_ids if kind == "critic" else [None],
                    args.lr if kind == "critic" else [None]):
                start = time.perf_counter()
                config = (dataclasses.replace(team, observation=observation) if team
                          else coverage_config(n, GRIDS[n], observation))
                extra = ({"replay": replays[source],
                          "replay_actions": source != "replay-states"}
                         if source != "cells" else {})
                if kind == "critic":
                    extra |= {"pairs": args.pairs, "agent_ids": ids == "on", "lr": lr}
                records.append(FITS[kind](config, rows, args.batch, updates, args.seed,
                                          epsilon=epsilon, held=held, cells=cells, **extra))
                if team:
                    records[-1] |= {"states": "greedy", "run": args.greedy,
                                    "train_from": source}
                records[-1]["seconds"] = round(time.perf_counter() - start, 1)
                print(json.dumps(records[-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2) + "\n")
    return records


if __name__ == "__main__":
    main()
