"""Inference that matches the situation: transient failures and a lost agent on the lift task.

    python benchmarks/lift_failures.py                       # 5 seeds, 30k steps each
    python benchmarks/lift_failures.py --seeds 10 --episodes 1000 --out benchmarks/results/lift-failures

Setting: the lift task (2 agents by default, penalty 0.5). Before every step each agent
fails with probability ``--failure-prob``; a failed agent executes ``wait`` whatever it
chose, and the failures of the coming step are announced. Policies are trained with the
failures on, and the replay buffer stores the executed joint action, so the joint policy
and its critics see how the team's joint actions play out when one agent is stuck:

- ``spn-ac`` and ``meanfield-ac``, whose state does not show the failures;
- ``spn-ac (oracle)``: trained and tested with the announced failures in its state.

Test (greedy, the same episodes for every controller):

1. Failures. ``plain``: the policy's mode, the env overriding the failed agents.
   ``conditioned``: the mode of ``pi(u | s, u_F = wait)`` for the announced failed agents F,
   the question "what do the others do when F waits". For a mean-field policy conditioning
   changes nothing by construction (the others' actions are independent of F's).
2. Lost agent (no failures): agent 0 acts alone from its own marginal's argmax; the others
   from the joint mode (naive) or from the exact mode of their marginal ``pi(u_-0 | s)``.

Per seed: mean return, success rate and failed attempts per episode over ``--episodes``
test episodes; across seeds: the mean with a 95% bootstrap CI, and the paired per-seed
difference conditioned - plain. Writes ``lift_failures.json`` and ``lift_failures.md``
under ``--out``.
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
from spnpolicy.bench.stats import mean_ci
from spnpolicy.envs.lift import WAIT, LiftVecEnv
from spnpolicy.inference import drop_agents, load_agent
from spnpolicy.machine import machine

TEST_SEED = 70_000
TRAIN = dict(eval_episodes=50)
METRICS = ("return", "success", "failed_attempts")


def train(algo: str, seed: int, total_steps: int, env: dict, runs_dir: Path, tag: str):
    """The trained agent; a finished run in ``runs_dir`` is loaded, not retrained."""
    out = runs_dir / f"{tag}_s{seed}_{total_steps}"
    metrics = out / "metrics.jsonl"
    if (out / "checkpoints" / "last.pt").is_file() and metrics.is_file():
        evaluations = [json.loads(line) for line in metrics.read_text().splitlines()]
        if max(e["step"] for e in evaluations) >= total_steps:
            return load_agent(out)
    return spnpolicy.train(algo, "lift", seed=seed, total_steps=total_steps, out_dir=out,
                           env_kwargs=env, resume=True, progress=False, verbose=False,
                           eval_interval=total_steps, checkpoint_interval=total_steps,
                           **TRAIN).agent


@torch.no_grad()
def rollout(choose, env: dict, episodes: int, seed: int) -> dict[str, float]:
    """One episode in each of ``episodes`` copies; ``choose(states [E, S], stuck [E, n])``
    gives joint actions ``[E, n]``. Means over the episodes."""
    vec = LiftVecEnv(episodes, seed=seed, **env)
    vec.reset()
    total = np.zeros(episodes)
    success = np.zeros(episodes, dtype=bool)
    failed = np.zeros(episodes)
    live = np.ones(episodes, dtype=bool)
    while live.any():
        actions = choose(torch.as_tensor(vec.state()), torch.as_tensor(vec.stuck))
        _, reward, terminated, truncated, info = vec.step(np.asarray(actions))
        total += np.where(live, reward, 0.0)
        success |= live & info["success"]
        failed += live & info["attempt"] & ~info["success"]
        live &= ~(terminated | truncated)
    return {"return": float(total.mean()), "success": float(success.mean()),
            "failed_attempts": float(failed.mean())}


def mode(agent):
    return lambda states, stuck: agent.distribution(states).mode


def conditioned(agent):
    def choose(states, stuck):
        evidence = torch.where(stuck, WAIT, -1)
        return agent.distribution(states).condition(evidence).mode
    return choose


def lost_agent(agent, marginal: bool, lost: int = 0):
    """Agent ``lost`` acts from its own marginal's argmax; the others from the joint mode
    (``marginal=False``) or the exact mode of their marginal."""
    def choose(states, stuck):
        dist = agent.distribution(states)
        actions = dist.mode.clone()
        actions[:, lost] = dist.marginals()[:, lost].argmax(-1)
        if marginal:
            kept = drop_agents(agent, states, [lost])
            actions[:, list(kept.agents)] = kept.mode
        return actions
    return choose


def summary(per_seed: list[dict[str, float]]) -> dict[str, list[float]]:
    out = {}
    for metric in METRICS:
        estimate = mean_ci([row[metric] for row in per_seed])
        out[metric] = [estimate.value, estimate.low, estimate.high]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--total-steps", type=int, default=30_000)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--penalty", type=float, default=0.5)
    parser.add_argument("--failure-prob", type=float, default=0.1)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/lift_failures"))
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = dict(num_agents=args.agents, penalty=args.penalty)
    failing = dict(base, failure_prob=args.failure_prob)
    oracle_env = dict(failing, observe_failures=True)
    rows: dict[str, list[dict[str, float]]] = {}
    started = time.time()
    for seed in range(args.seeds):
        spn = train("spn-ac", seed, args.total_steps, failing, args.runs_dir, "spn-ac")
        mf = train("meanfield-ac", seed, args.total_steps, failing, args.runs_dir,
                   "meanfield-ac")
        oracle = train("spn-ac", seed, args.total_steps, oracle_env, args.runs_dir,
                       "spn-ac-oracle")
        test = TEST_SEED + 1_000 * seed
        controllers = {
            "failures: spn-ac, plain": (mode(spn), failing),
            "failures: spn-ac, conditioned on the failures": (conditioned(spn), failing),
            "failures: meanfield-ac, plain": (mode(mf), failing),
            "failures: meanfield-ac, conditioned on the failures": (conditioned(mf), failing),
            "failures: spn-ac (oracle: failures in its state)": (mode(oracle), oracle_env),
            "lost agent 0: spn-ac, others from the joint mode": (lost_agent(spn, False), base),
            "lost agent 0: spn-ac, others from their marginal's mode":
                (lost_agent(spn, True), base),
            "lost agent 0: meanfield-ac, others from the joint mode":
                (lost_agent(mf, False), base),
        }
        for name, (choose, env) in controllers.items():
            rows.setdefault(name, []).append(rollout(choose, env, args.episodes, test))
        print(f"seed {seed} done ({time.time() - started:.0f} s)", flush=True)
    pairs = {"failures: spn-ac, conditioned - plain": (
                 "failures: spn-ac, conditioned on the failures", "failures: spn-ac, plain"),
             "failures: meanfield-ac, conditioned - plain": (
                 "failures: meanfield-ac, conditioned on the failures",
                 "failures: meanfield-ac, plain"),
             "lost agent 0: spn-ac, marginal - joint mode": (
                 "lost agent 0: spn-ac, others from their marginal's mode",
                 "lost agent 0: spn-ac, others from the joint mode")}
    differences = {name: summary([{m: a[m] - b[m] for m in METRICS}
                                  for a, b in zip(rows[first], rows[second])])
                   for name, (first, second) in pairs.items()}
    result = {"command": "python " + shlex.join(["benchmarks/lift_failures.py",
                                                 *(sys.argv[1:] if argv is None else argv)]),
              "machine": machine(), "settings": vars(args) | {"runs_dir": str(args.runs_dir),
                                                              "out": str(args.out)},
              "per_seed": rows, "summary": {name: summary(r) for name, r in rows.items()},
              "paired_differences": differences}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lift_failures.json").write_text(json.dumps(result, indent=1))
    lines = [f"Lift, {args.agents} agents, penalty {args.penalty}, failure probability "
             f"{args.failure_prob}; {args.seeds} seeds x {args.total_steps:,} training steps, "
             f"{args.episodes} greedy test episodes per seed; mean [95% bootstrap CI] over "
             f"seeds.", "", "| controller | return | success | failed attempts / episode |",
             "|---|---|---|---|"]
    for table in (result["summary"], differences):
        for name, values in table.items():
            cells = " | ".join(f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                               for v, lo, hi in (values[m] for m in METRICS))
            lines.append(f"| {name} | {cells} |")
    (args.out / "lift_failures.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
