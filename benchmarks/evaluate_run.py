"""Greedy evaluation of a finished run beside the uniform random policy, on fresh episodes.

    python benchmarks/evaluate_run.py runs/bench/coverage-paper/runs/coverage-6x20x20-fixed/vdn/s0
    python benchmarks/evaluate_run.py RUN --episodes 200 --out benchmarks/results/x.json

Loads the run's agent (``spnpolicy.inference.load_agent``: every algorithm with a registry
loader and spn-ac's family) and plays ``--episodes`` greedy episodes of the run's env, then
the same episodes (same seed) with uniform random joint actions. Besides return and success,
envs with a potential report ``final_potential``, the mean potential of the episodes' last
states (coverage: minus the summed agent-goal distance under the best assignment / grid
size; 0 = every goal covered), which shows progress on sparse tasks before any success.
Prints one JSON object and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from spnpolicy.inference import load_agent
from spnpolicy.training import evaluate, make_vec_env
from spnpolicy.training.rundir import RunDir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory")
    parser.add_argument("--episodes", type=int, default=100, help="episodes (default 100)")
    parser.add_argument("--seed", type=int, default=12_345, help="episode seed (default 12345)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run, _ = RunDir.locate(args.run)
    saved = run.read_config()
    agent = load_agent(args.run)
    envs = make_vec_env(saved["env"], min(args.episodes, 64), seed=args.seed,
                        **saved["env_kwargs"])

    def greedy(state, obs):
        return np.asarray(agent.act(obs if getattr(agent, "needs_obs", False) else state))

    rng = np.random.default_rng(args.seed)

    def uniform(state, obs):
        return rng.integers(0, envs.num_actions, (len(state), envs.num_agents))

    record = {"run": str(args.run), "algo": saved["algo"], "env": saved["env"],
              "env_kwargs": saved["env_kwargs"], "episodes": args.episodes, "seed": args.seed,
              "greedy": evaluate(greedy, envs, args.episodes, seed=args.seed),
              "uniform_random": evaluate(uniform, envs, args.episodes, seed=args.seed)}
    text = json.dumps(record, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
