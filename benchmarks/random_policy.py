"""The uniformly random policy on bench suites' tasks: the reference row of their tables.

```bash
.venv/bin/python benchmarks/random_policy.py vmas-dispersion --episodes 320 \
    --out benchmarks/results/vmas-dispersion/random_policy.json
.venv/bin/python benchmarks/random_policy.py coverage-quick coverage-random \
    coverage-quick-small coverage-paper --episodes 20000 \
    --out benchmarks/results/coverage_random_policy.json
```

Plays ``--episodes`` episodes per task of each SUITE (or of ``--tasks``) with uniform random
joint actions in 32 vectorised copies, seeded as the bench seeds its greedy evaluation of seed 0
(``EVAL_SEED_OFFSET``), and prints and writes to ``--out`` (default
``runs/benchmarks/random_policy_<suites>.json``), per task: its suite, the mean return with its
95% normal CI over the episodes (mean +- 1.96 std / sqrt(episodes)), and the success rate where
the env reports one.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np

from spnpolicy.bench.suites import get_suite
from spnpolicy.training.evaluation import EVAL_SEED_OFFSET, evaluate
from spnpolicy.training.vec_env import make_vec_env

COPIES = 32


def random_policy(env: str, env_kwargs: dict, episodes: int, seed: int = 0) -> dict:
    """Uniform random joint actions for ``episodes`` episodes of ``env``: ``evaluate``'s
    figures plus ``return_ci95``."""
    envs = make_vec_env(env, COPIES, seed=seed + EVAL_SEED_OFFSET, **env_kwargs)
    rng = np.random.default_rng(seed)

    def act(state: np.ndarray, obs: np.ndarray) -> np.ndarray:
        return rng.integers(0, envs.num_actions, size=(state.shape[0], envs.num_agents))

    result = evaluate(act, envs, episodes, seed=seed + EVAL_SEED_OFFSET)
    half = 1.96 * result["return_std"] / np.sqrt(result["episodes"])
    return result | {"return_ci95": [result["return_mean"] - half, result["return_mean"] + half]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="+", metavar="SUITE")
    parser.add_argument("--tasks", default=None, help="only these tasks (comma-separated)")
    parser.add_argument("--episodes", type=int, default=320)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        tasks = [(name, task) for name in args.suites for task in get_suite(name).tasks]
    except ValueError as error:
        parser.error(str(error))
    counts = collections.Counter(task.name for _, task in tasks)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        parser.error(f"suites {', '.join(args.suites)}: tasks given twice: {', '.join(repeated)}")
    names = args.tasks.split(",") if args.tasks else [task.name for _, task in tasks]
    unknown = sorted(set(names) - {task.name for _, task in tasks})
    if unknown:
        parser.error(f"--tasks: {', '.join(unknown)} not in {', '.join(args.suites)} "
                     f"({', '.join(task.name for _, task in tasks)})")
    results = {}
    for suite, task in tasks:
        if task.name in names:
            r = results[task.name] = {"suite": suite} | random_policy(
                task.env, task.env_kwargs, args.episodes)
            low, high = r["return_ci95"]
            success = (f", success {r['success_rate']:.4f}" if "success_rate" in r else "")
            print(f"{task.name}: random return {r['return_mean']:.3f} [{low:.3f}, {high:.3f}] "
                  f"over {r['episodes']} episodes{success}")
    out = args.out or Path(f"runs/benchmarks/random_policy_{'_'.join(args.suites)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
