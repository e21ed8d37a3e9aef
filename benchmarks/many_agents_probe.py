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
policy that scores below its critics does not follow them. Prints one JSON object per run
and writes them all to ``--out`` (default
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

from spnpolicy.envs.coverage_core import MOVES, CoverageConfig, state_positions  # noqa: E402
from spnpolicy.inference import load_agent, load_run_config  # noqa: E402
from spnpolicy.training import Runner, make_vec_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "many-agents" / "probe.json"


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
    envs = make_vec_env("coverage", episodes, **saved["env_kwargs"])
    runner = Runner(envs, observations=True)
    runner.reset(seed=seed)
    hits = {name: [] for name in [*players, "uniform"]}
    try:
        for _ in range(config.max_steps):
            oracle = oracle_moves(runner.state, config)
            acted = None
            for name, agent in players.items():
                x = runner.obs if len(agent.input_shape) == 2 else runner.state
                actions = np.asarray(agent.act(x))
                hits[name].append(np.take_along_axis(oracle, actions[..., None], -1).mean())
                acted = actions if name == "policy" else acted
            hits["uniform"].append(oracle.mean())
            runner.step(acted)
    finally:
        envs.close()
    return {"run": str(run), "algo": saved["algo"], "env_kwargs": saved["env_kwargs"],
            "episodes": episodes, "seed": seed,
            "oracle_share": {name: float(np.mean(v)) for name, v in hits.items()}}


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
