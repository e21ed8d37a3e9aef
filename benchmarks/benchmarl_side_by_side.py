"""BenchMARL's own algorithms beside spn-ac, in BenchMARL's own Experiment on VMAS navigation.

Every (algorithm, seed) runs :func:`benchmarl_spn.navigation_experiment` (2-agent VMAS
navigation, 50-step episodes; examples/benchmarl_spn.py) for the same number of frames,
with the same collection (500 frames from 10 envs per iteration) and the same evaluation
(:func:`benchmarl_spn.team_return`: greedy team return on 32 seeded test episodes, beside
uniformly random actions). Off-policy algorithms (QMIX, VDN, MASAC, spn-ac) take 50
gradient steps of 128 transitions per iteration (``experiment_config``); MAPPO, on-policy,
gets the same 500 frames from 10 envs per iteration and 12 epochs of 4 minibatches of 125
(48 gradient steps). All act with the same 5 discrete moves (``prefer_continuous_actions``
off: BenchMARL would otherwise give MAPPO and MASAC VMAS' continuous actions). A run that
raises is recorded with its error and the script goes on. The JSON is rewritten after every
run.

Run from the repository root::

    nice -n 5 .venv/bin/python benchmarks/benchmarl_side_by_side.py \
        --frames 20000 --seeds 3 --out benchmarks/results/benchmarl-side-by-side/side_by_side.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import benchmarl_spn  # noqa: E402
from benchmarl_spn import EPISODE_STEPS, navigation_experiment, team_return  # noqa: E402

from spnpolicy.bench.stats import mean_ci  # noqa: E402

RESULTS = ROOT / "benchmarks/results/benchmarl-side-by-side/side_by_side.json"
ALGOS = ("mappo", "qmix", "vdn", "masac", "spn-ac")
ON_POLICY = dict(on_policy_collected_frames_per_batch=500, on_policy_n_envs_per_worker=10,
                 on_policy_minibatch_size=125, on_policy_n_minibatch_iters=12)


def algorithm_config(name: str):
    from benchmarl.algorithms import MappoConfig, MasacConfig, QmixConfig, VdnConfig

    from spnpolicy.integrations.benchmarl import SpnAcAlgorithmConfig
    configs = {"mappo": MappoConfig, "qmix": QmixConfig, "vdn": VdnConfig,
               "masac": MasacConfig, "spn-ac": SpnAcAlgorithmConfig}
    return configs[name].get_from_yaml()


def experiment_config(max_frames: int, folder: str):
    """The example's config (off-policy settings) plus comparable on-policy settings."""
    config = benchmarl_spn.experiment_config(max_frames, folder)
    for key, value in ON_POLICY.items():
        setattr(config, key, value)
    config.prefer_continuous_actions = False   # MAPPO and MASAC too act with VMAS' 5 moves
    return config


def one_run(algo: str, seed: int, frames: int) -> dict:
    row = {"algo": algo, "seed": seed, "frames": frames}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        config = algorithm_config(algo)
        row["on_policy"] = bool(config.on_policy())
        with tempfile.TemporaryDirectory() as folder:
            experiment = navigation_experiment(frames, seed=seed, folder=folder,
                                               algorithm_config=config,
                                               config=experiment_config(frames, folder))
            row["random_return"] = team_return(experiment)
            experiment.run()
            row["trained_return"] = team_return(experiment, experiment.policy)
            row["total_frames"] = int(experiment.total_frames)
    except Exception as error:  # noqa: BLE001 - recorded, the comparison goes on
        row["error"] = f"{type(error).__name__}: {error}"
        row["traceback"] = traceback.format_exc(limit=6)
    row["wall_s"] = time.perf_counter() - wall
    row["cpu_s"] = time.process_time() - cpu
    return row


def summary(rows: list[dict], algos) -> dict:
    out = {}
    for algo in algos:
        done = [r for r in rows if r["algo"] == algo and "trained_return" in r]
        failed = [r["error"] for r in rows if r["algo"] == algo and "error" in r]
        entry = {"runs": len(done), "errors": failed}
        if done:
            entry["trained_return"] = mean_ci([r["trained_return"] for r in done]).to_json()
            entry["random_return"] = mean_ci([r["random_return"] for r in done]).to_json()
            entry["wall_s_per_run"] = sum(r["wall_s"] for r in done) / len(done)
        out[algo] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--task", choices=("navigation",), default="navigation")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    probe = experiment_config(args.frames, "/tmp")
    settings = {"task": "vmas/navigation", "n_agents": 2, "episode_steps": EPISODE_STEPS,
                "frames": args.frames, "seeds": args.seeds, "algos": args.algos,
                "evaluation_episodes": probe.evaluation_episodes, "torch_threads": 1,
                "off_policy": {k: getattr(probe, k) for k in (
                    "off_policy_collected_frames_per_batch", "off_policy_n_envs_per_worker",
                    "off_policy_n_optimizer_steps", "off_policy_train_batch_size")},
                "on_policy": ON_POLICY, "lr": probe.lr,
                "prefer_continuous_actions": probe.prefer_continuous_actions}
    result = {"commit": commit, "command": " ".join([sys.executable] + sys.argv),
              "settings": settings, "runs": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        for algo in args.algos:
            row = one_run(algo, seed, args.frames)
            result["runs"].append(row)
            result["summary"] = summary(result["runs"], args.algos)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
            status = (f"trained {row['trained_return']:.3f} random {row['random_return']:.3f}"
                      if "trained_return" in row else f"ERROR {row['error'][:200]}")
            print(f"{algo:7s} seed {seed}: {status} ({row['wall_s']:.0f} s wall, "
                  f"{row['cpu_s']:.0f} s CPU)", flush=True)

    print(f"\nVMAS navigation, 2 agents, {args.frames} frames, {args.seeds} seeds "
          f"(greedy team return, mean [95% bootstrap CI]); {args.out}")
    print(f"{'algo':8s} {'trained':>24s} {'random':>24s} {'wall s/run':>10s}  errors")
    for algo, entry in result["summary"].items():
        if entry["runs"]:
            def fmt(key):
                e = entry[key]
                lo, hi = e["ci95"]
                return f"{e['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
            print(f"{algo:8s} {fmt('trained_return'):>24s} {fmt('random_return'):>24s} "
                  f"{entry['wall_s_per_run']:10.0f}  {len(entry['errors'])}")
        else:
            print(f"{algo:8s} {'-':>24s} {'-':>24s} {'-':>10s}  {entry['errors'][:1]}")


if __name__ == "__main__":
    main()
