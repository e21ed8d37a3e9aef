"""spn-ac on the matrix games: does the greedy joint action reach the optimum?

    python benchmarks/matrix_spn_ac.py                 # 10 seeds x climbing, penalty, coordination
    python benchmarks/matrix_spn_ac.py --seeds 3 --algo meanfield-ac

Each run uses the algorithm's default budget and hyperparameters for the game (penalty with
k = 100), one torch thread, and is timed on its own (runs are sequential). A seed succeeds
when the final greedy joint action (the policy's mode) is an optimal joint action.
Writes `runs/benchmarks/matrix_spn_ac.json` (or `--out`; `--out
benchmarks/results/matrix_spn_ac.json` updates the tracked figures).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import spnpolicy
from spnpolicy.machine import machine
from spnpolicy.bench.matrix import greedy_joint_action, optimal_joint_actions

RESULTS = Path("runs/benchmarks/matrix_spn_ac.json")  # tracked copy: benchmarks/results/ (--out)
GAMES = {"climbing": {}, "penalty": {"k": 100}, "coordination": {}}


def run(algo: str, game: str, seed: int) -> dict:
    env_kwargs = GAMES[game]
    optimal = optimal_joint_actions(game, env_kwargs)
    start = time.perf_counter()
    result = spnpolicy.train(algo, game, seed=seed, env_kwargs=env_kwargs, progress=False,
                             verbose=False)
    seconds = time.perf_counter() - start
    joint = greedy_joint_action(result.agent)
    return {"game": game, "seed": seed, "greedy_joint_action": list(joint),
            "optimal": joint in optimal, "return_mean": result.eval["return_mean"],
            "env_steps": result.eval["step"], "wall_time_s": round(seconds, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="spn-ac")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = []
    for game in args.games:
        for seed in range(args.seeds):
            runs.append(run(args.algo, game, seed))
            print(json.dumps(runs[-1]), flush=True)
    summary = {game: {"optimal_seeds": sum(r["optimal"] for r in runs if r["game"] == game),
                      "seeds": args.seeds,
                      "max_wall_time_s": max(r["wall_time_s"] for r in runs if r["game"] == game),
                      "mean_wall_time_s": round(sum(r["wall_time_s"] for r in runs
                                                    if r["game"] == game) / args.seeds, 2)}
               for game in args.games}
    report = {"benchmark": "matrix_spn_ac", "algo": args.algo, "summary": summary, "runs": runs,
              "machine": machine(),
              "command": shlex.join(["python", "benchmarks/matrix_spn_ac.py",
                                     *(argv if argv is not None else sys.argv[1:])])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
