"""How much of coverage's shaped reward one agent's action explains, by team size.

    python benchmarks/many_agents_signal.py                  # teams 3, 4, 8, 16, 32
    python benchmarks/many_agents_signal.py --teams 4:8 16:16 --steps 100

Under the uniform random joint policy, at the states it visits (fixed goals, as the
many-agent suites), one step's progress reward ``r = Phi(s') - Phi(s)`` (``Phi`` minus the
agents' summed distance to their goals under the best assignment, over the grid side) is
compared with:

- ``r_add = sum_i [Phi(s with agent i moved alone) - Phi(s)]``, the part a critic with one
  unary term per agent can represent: ``additive_r2`` is the share of ``Var(r)`` that it
  explains;
- one agent's own term: ``agent_gap`` is the mean, over states and agents, of the spread
  (max - min) of agent i's term over its 6 actions, the advantage a critic must resolve for
  agent i; ``gap_to_noise`` divides it by the standard deviation of the rest of the team's
  reward, the noise in which a critic trained on the team reward sees it.

Writes one JSON object per team to ``--out`` (default
``benchmarks/results/many-agents/signal.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spnpolicy.envs import coverage_core as core
from spnpolicy.envs.coverage_vec import CoverageVecEnv


def measure(num_agents: int, grid_size: int, num_envs: int, steps: int, seed: int) -> dict:
    """The statistics of the module docstring for one team, ``steps`` random steps of
    ``num_envs`` copies."""
    env = CoverageVecEnv(num_envs, num_agents, grid_size, max_steps=4 * grid_size,
                         layout="fixed", observation="absolute", seed=seed)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    table, k = env.config.move_table(), core.NUM_ACTIONS
    rewards, additive, own, rest = [], [], [], []
    for _ in range(steps):
        pos, goals = env.agent_positions.copy(), env.goal_positions.copy()
        phi = core.potential(pos, goals, grid_size)                          # [E]
        actions = rng.integers(0, k, size=(num_envs, num_agents))
        # [E, n, k]: Phi after agent i alone takes action a, minus Phi(s)
        terms = np.empty((num_envs, num_agents, k))
        for i in range(num_agents):
            for a in range(k):
                moved = actions.copy()
                moved[:] = 0                                                 # everyone noop
                moved[:, i] = a
                terms[:, i, a] = core.potential(core.move(pos, moved, table, grid_size),
                                                goals, grid_size) - phi
        # the potential of the state the step reached, before any reset of a finished copy
        reward = env.step(actions)[4]["potential"] - phi
        taken = np.take_along_axis(terms, actions[..., None], -1)[..., 0]   # [E, n]
        rewards.append(reward)
        additive.append(taken.sum(-1))
        own.append(terms.max(-1) - terms.min(-1))
        rest.append(reward[:, None] - taken)                                  # [E, n]
    r, r_add = np.concatenate(rewards), np.concatenate(additive)
    resid = r - r_add
    gap, noise = float(np.concatenate(own).mean()), float(np.concatenate(rest).std())
    return {"num_agents": num_agents, "grid_size": grid_size, "transitions": int(r.size),
            "reward_std": float(r.std()),
            "additive_r2": float(1.0 - resid.var() / r.var()),
            "agent_gap": gap, "rest_std": noise,
            "gap_to_noise": gap / noise if noise > 0 else float("inf")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teams", nargs="+", default=["3:6", "4:8", "8:11", "16:16", "32:24"],
                        metavar="N:SIDE", help="team size and grid side")
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results/many-agents/signal.json")
    args = parser.parse_args(argv)
    rows = []
    for team in args.teams:
        n, side = (int(part) for part in team.split(":"))
        start = time.perf_counter()
        row = measure(n, side, args.envs, args.steps, args.seed)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
