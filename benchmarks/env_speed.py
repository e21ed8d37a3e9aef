"""Agent-steps per second of the vectorised coverage gridworld (`CoverageVecEnv`).

    python benchmarks/env_speed.py            # 256 envs x 6 agents, 20x20 grid, sparse reward
    python benchmarks/env_speed.py --num-agents 64 --grid-size 32 --num-envs 8

Random joint actions are drawn before timing; each repeat times `steps` calls of `step`
(auto-resets included) after a warm-up, and the figure is the median over repeats of
num_envs * num_agents * steps / seconds. Beside it, the median microseconds of one call of
the assignment potential (`coverage_core.potential`, which every `step` computes) on the
`[num_envs]` layouts the env reached, and its share of a step. Writes
`runs/benchmarks/env_speed.json` (`--out benchmarks/results/env_speed.json`: the tracked
copy).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from spnpolicy.machine import machine
from spnpolicy.envs import coverage_core
from spnpolicy.envs.coverage_vec import CoverageVecEnv

RESULTS = Path("runs/benchmarks/env_speed.json")  # tracked copy: benchmarks/results/ (--out)


def measure(num_envs: int, num_agents: int, grid_size: int, max_steps: int, reward: str,
            steps: int, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Agent-steps/s of each timed repeat, and microseconds per potential call of each."""
    env = CoverageVecEnv(num_envs, num_agents, grid_size, max_steps, reward, seed=0)
    env.reset()
    actions = np.random.default_rng(0).integers(0, 6, size=(steps, num_envs, num_agents))
    for t in range(warmup):
        env.step(actions[t % steps])
    rates, potential_us = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for t in range(steps):
            env.step(actions[t])
        rates.append(num_envs * num_agents * steps / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(steps):
            coverage_core.potential(env.agent_positions, env.goal_positions, grid_size)
        potential_us.append((time.perf_counter() - start) / steps * 1e6)
    return rates, potential_us


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--num-agents", type=int, default=6)
    parser.add_argument("--grid-size", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--reward", default="sparse")
    parser.add_argument("--steps", type=int, default=2000, help="env steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rates, potential_us = measure(args.num_envs, args.num_agents, args.grid_size, args.max_steps,
                    args.reward, args.steps, args.repeats, args.warmup)
    result = {
        "benchmark": "coverage_vec_env_speed",
        "agent_steps_per_s": statistics.median(rates),
        "repeats_agent_steps_per_s": rates,
        "potential_us_per_call": statistics.median(potential_us),
        "potential_share_of_step": statistics.median(potential_us) * 1e-6
        * statistics.median(rates) / (args.num_envs * args.num_agents),
        "config": {key: value for key, value in vars(args).items() if key != "out"},
        "machine": machine(),
        "command": shlex.join(["python", "benchmarks/env_speed.py",
                               *(sys.argv[1:] if argv is None else argv)]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['agent_steps_per_s']:.3g} agent-steps/s "
          f"({args.num_envs} envs x {args.num_agents} agents); potential "
          f"{result['potential_us_per_call']:.0f} us a call, "
          f"{result['potential_share_of_step']:.0%} of a step -> {args.out}")
    return result


if __name__ == "__main__":
    main()
