"""Inference on predator-prey: what is best for the others when predators are stuck.

    python benchmarks/predator_prey_failures.py RUN [RUN ...] --out DIR
    python benchmarks/predator_prey_failures.py RUN --failure-prob 0 --broken 0

Each RUN is a trained predator-prey run directory. spn-ac and meanfield-ac teams are played
by their critics (``load_agent(run, acting="critics")``), dcg by its own Q. The episodes
are those of ``spnpolicy evaluate`` (``--episodes`` 100, ``--seed`` 12345). Before every
step each predator fails with probability ``--failure-prob`` (and the ``--broken`` ones
always fail); the failures are announced, and a failed predator stays whatever it was told.
Two controllers of the same team, on the same episodes and the same failure draws:

- ``plain``: the team's greedy joint action; the env makes the failed predators stay.
- ``clamped``: ``best_joint_action(team, obs, fixed={failed: "stay"})``, the critics'
  best joint action for the others given the failures (``FactorValues.clamp``).

Neither was trained with failures: the clamped query reads Q at joint actions the team's
exploration visited, a failed predator's ``stay`` among them.

Per run: the mean return and success rate of each controller. Per algorithm: their means
over the runs with 95% bootstrap CIs, and the paired per-run difference clamped - plain.
Writes ``failures.json`` and ``failures.md`` under ``--out``.
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

from spnpolicy.bench.stats import mean_ci
from spnpolicy.envs.predator_prey_core import STAY
from spnpolicy.evaluate import SAVED_RUN_EPISODES, SAVED_RUN_SEED
from spnpolicy.inference import load_agent, load_run_config
from spnpolicy.machine import machine
from spnpolicy.training.evaluation import evaluate
from spnpolicy.training.vec_env import make_vec_env

CONTROLLERS = ("plain", "clamped")
METRICS = ("return_mean", "success_rate")


def team(run: Path):
    """``(label, agent)``: the run's team acting by its factor-graph Q (spn-ac and its
    variants by their critics, which ``load_agent`` refuses for other algorithms)."""
    algo = load_run_config(run)["algo"]
    try:
        return f"{algo} (critics)", load_agent(run, acting="critics")
    except ValueError:
        agent = load_agent(run)
    if not callable(getattr(agent, "values", None)):
        raise SystemExit(f"{run}: {algo} does not act by a factor-graph Q (dcg, spn-ac and "
                         f"meanfield-ac do)")
    return algo, agent


def play(agent, saved: dict, controller: str, failure_prob: float, broken: list[int],
         episodes: int, seed: int) -> dict[str, float]:
    """``evaluate``'s metrics of one controller under the failures (module docstring)."""
    envs = make_vec_env(saved["env"], min(episodes, 64), seed=seed, **saved["env_kwargs"])
    n = envs.num_agents
    bad = [i for i in broken if not 0 <= i < n]
    if bad:
        envs.close()
        raise SystemExit(f"--broken {bad[0]}: the team has {n} predators (0..{n - 1})")
    failures = np.random.default_rng(seed)
    reads_obs = len(agent.input_shape) == 2

    @torch.no_grad()
    def act(state: np.ndarray, obs: np.ndarray) -> np.ndarray:
        stuck = failures.random((len(state), n)) < failure_prob
        stuck[:, broken] = True
        values = agent.values(torch.as_tensor(obs if reads_obs else state))
        if controller == "clamped":     # best_joint_action's query, evidence per state
            evidence = torch.where(torch.as_tensor(stuck), STAY, -1)
            values = values.clamp(evidence)
        chosen = agent.best(values).cpu().numpy()
        return np.where(stuck, STAY, chosen)

    try:
        return evaluate(act, envs, episodes, seed=seed)
    finally:
        envs.close()


def summary(records: list[dict]) -> dict[str, dict]:
    """Per algorithm: each controller's metrics over the runs (mean and 95% CI) and the
    paired difference clamped - plain."""
    out: dict[str, dict] = {}
    for label in sorted({r["algo"] for r in records}):
        rows = [r for r in records if r["algo"] == label]
        entry: dict = {"runs": len(rows), "seeds": [r["seed"] for r in rows]}
        for metric in METRICS:
            for controller in CONTROLLERS:
                estimate = mean_ci([r[controller][metric] for r in rows])
                entry[f"{controller}_{metric}"] = [estimate.value, estimate.low, estimate.high]
            gain = mean_ci([r["clamped"][metric] - r["plain"][metric] for r in rows])
            entry[f"gain_{metric}"] = [gain.value, gain.low, gain.high]
        out[label] = entry
    return out


def table(result: dict) -> str:
    """The markdown table of ``summary``'s returns."""
    ci = "{:.2f} [{:.2f}, {:.2f}]".format
    lines = ["| team | runs | plain return | clamped return | clamped - plain (paired) |",
             "|---|---:|---|---|---|"]
    for label, e in result["summary"].items():
        lines.append(f"| {label} | {e['runs']} | {ci(*e['plain_return_mean'])} | "
                     f"{ci(*e['clamped_return_mean'])} | **{ci(*e['gain_return_mean'])}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="trained predator-prey run directories")
    parser.add_argument("--failure-prob", type=float, default=0.2,
                        help="chance that a predator fails at a step (default 0.2)")
    parser.add_argument("--broken", type=int, action="append", default=[], metavar="AGENT",
                        help="a predator that fails at every step (repeatable)")
    parser.add_argument("--episodes", type=int, default=SAVED_RUN_EPISODES)
    parser.add_argument("--seed", type=int, default=SAVED_RUN_SEED)
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/predator-prey/failures"))
    args = parser.parse_args(argv)
    if not 0.0 <= args.failure_prob < 1.0:
        parser.error(f"--failure-prob must be in [0, 1), got {args.failure_prob}")
    records = []
    for run in args.runs:
        saved = load_run_config(run)
        if saved["env"] != "predator-prey":
            parser.error(f"{run}: trained on {saved['env']!r}, not predator-prey")
        label, agent = team(run)
        start = time.perf_counter()
        record = {"run": str(run), "algo": label, "seed": saved["seed"]}
        for controller in CONTROLLERS:
            record[controller] = play(agent, saved, controller, args.failure_prob,
                                      args.broken, args.episodes, args.seed)
        records.append(record)
        print(f"{label} s{saved['seed']}: plain {record['plain']['return_mean']:.2f}, "
              f"clamped {record['clamped']['return_mean']:.2f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    result = {"command": shlex.join(["python", "benchmarks/predator_prey_failures.py",
                                     *(sys.argv[1:] if argv is None else argv)]),
              "failure_prob": args.failure_prob, "broken": args.broken,
              "episodes": args.episodes, "seed": args.seed, "machine": machine(),
              "records": records, "summary": summary(records)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failures.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "failures.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
