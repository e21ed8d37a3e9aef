"""Success rate of the uniformly random policy on the coverage suites' tasks.

```bash
.venv/bin/python benchmarks/coverage_random_policy.py --episodes 20000 \
    --out benchmarks/results/coverage_random_policy.json
```

Plays ``--episodes`` episodes per task with uniform random joint actions in 100 vectorised
copies (seeds 0..99) and prints and writes to ``--out`` (default
``runs/benchmarks/coverage_random_policy.json``): the fraction of episodes that cover every
goal before the time limit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from spnpolicy.bench.suites import get_suite
from spnpolicy.envs.coverage_vec import CoverageVecEnv

SUITES = ("coverage-quick", "coverage-random", "coverage-quick-small", "coverage-paper")
OUT = Path("runs/benchmarks/coverage_random_policy.json")


def success_rate(episodes: int, copies: int = 100, **env_kwargs) -> tuple[float, int]:
    env = CoverageVecEnv(copies, seed=0, **env_kwargs)
    env.reset()
    rng = np.random.default_rng(0)
    done = covered = 0
    while done < episodes:
        _, _, terminated, truncated, info = env.step(
            rng.integers(0, 6, size=(copies, env.num_agents)))
        done += int((terminated | truncated).sum())
        covered += int(info["success"].sum())
    return covered / done, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = {}
    for name in SUITES:
        task = get_suite(name).tasks[0]
        rate, episodes = success_rate(args.episodes, **task.env_kwargs)
        results[task.name] = {"suite": name, "success_rate": rate, "episodes": episodes}
        print(f"{name} ({task.name}): random policy success {rate:.4f} over {episodes} episodes")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
