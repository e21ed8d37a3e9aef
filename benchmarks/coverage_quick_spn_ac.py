"""spn-ac on small sparse-reward coverage tasks, against a uniformly random policy.

    python benchmarks/coverage_quick_spn_ac.py                  # both settings, 3 seeds
    python benchmarks/coverage_quick_spn_ac.py --settings 3x6x6 --seeds 1 --set total_steps=100000

Settings (sparse reward: 1, and the episode ends, when every goal holds an agent):
``3x6x6``: 3 agents, 6x6 grid, 50 steps, spn-ac's default coverage budget;
``2x4x4``: 2 agents, 4x4 grid, 20 steps, 60k env steps.
Each run uses spn-ac's coverage defaults (plus the setting's budget and any --set), one
torch thread, and records its greedy and stochastic success rate at every evaluation with
wall-clock and CPU minutes. The random policy is evaluated with the same protocol (same
eval seeds) over --random-episodes episodes. Writes
`runs/benchmarks/coverage_quick_spn_ac.json` (or `--out`; `--out
benchmarks/results/coverage_quick_spn_ac.json` updates the tracked figures).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import spnpolicy
from spnpolicy.algos.config import parse_field_value
from spnpolicy.algos.registry import get_algorithm
from spnpolicy.bench.machine import machine
from spnpolicy.training import EVAL_SEED_OFFSET, evaluate, make_vec_env

RESULTS = Path("runs/benchmarks/coverage_quick_spn_ac.json")  # tracked copy: benchmarks/results/
#: name -> (env kwargs, config overrides)
SETTINGS = {
    "3x6x6": (dict(num_agents=3, grid_size=6, max_steps=50, reward="sparse"), {}),
    "2x4x4": (dict(num_agents=2, grid_size=4, max_steps=20, reward="sparse"),
              {"total_steps": 60_000, "eval_interval": 10_000}),
}


def random_policy(setting: dict, episodes: int, seed: int = 0) -> dict:
    envs = make_vec_env("coverage", 64, seed=seed + EVAL_SEED_OFFSET, **setting)
    rng = np.random.default_rng(seed)
    shape = (64, setting["num_agents"])
    return evaluate(lambda state, obs: rng.integers(0, envs.num_actions, shape), envs,
                    episodes, seed=seed + EVAL_SEED_OFFSET)


def run(algo: str, seed: int, setting: dict, overrides: dict) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    result = spnpolicy.train(algo, "coverage", seed=seed, env_kwargs=setting, progress=False,
                             verbose=False, **overrides)
    keep = ("step", "success_rate", "stochastic_success_rate", "return_mean", "entropy",
            "alpha", "wall_time")
    return {"seed": seed, "final": {k: result.eval.get(k) for k in keep},
            "best_success_rate": max(h["success_rate"] for h in result.history),
            "history": [{k: h.get(k) for k in keep} for h in result.history],
            "wall_minutes": round((time.perf_counter() - start) / 60, 2),
            "cpu_minutes": round((time.process_time() - cpu) / 60, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="spn-ac")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--random-episodes", type=int, default=2000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as in the CLI")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config_cls = get_algorithm(args.algo).config_cls
    overrides = {key: parse_field_value(config_cls, key, value)
                 for key, value in (item.split("=", 1) for item in args.set)}
    results = {}
    for name in args.settings:
        env_kwargs, budget = SETTINGS[name]
        baseline = random_policy(env_kwargs, args.random_episodes)
        print(json.dumps({"setting": name, "random_policy": baseline}), flush=True)
        runs = []
        for seed in range(args.seeds):
            runs.append(run(args.algo, seed, env_kwargs, budget | overrides))
            print(json.dumps({"setting": name} | {k: v for k, v in runs[-1].items()
                                                   if k != "history"}), flush=True)
        finals = [r["final"]["success_rate"] for r in runs]
        results[name] = {"env_kwargs": env_kwargs, "overrides": budget | overrides,
                         "random_policy_success_rate": baseline["success_rate"],
                         "random_policy_episodes": baseline["episodes"],
                         "final_success_rate_mean": float(np.mean(finals)),
                         "final_success_rates": finals, "runs": runs}
    report = {"benchmark": "coverage_quick_spn_ac", "algo": args.algo, "settings": results,
              "machine": machine(),
              "command": shlex.join(["python", "benchmarks/coverage_quick_spn_ac.py",
                                     *(argv if argv is not None else sys.argv[1:])])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
