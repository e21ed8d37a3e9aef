"""Inference on trained joint policies: broken agent, lost agent, anomaly scores.

    python benchmarks/inference.py                                # 3 seeds, 40k steps each
    python benchmarks/inference.py --seeds 5 --total-steps 60000 --episodes 100
    python benchmarks/inference.py --bench-dir runs/bench/coverage-quick  # its trained policies

Setting: coverage gridworld with the ``coverage`` reward (fraction of goals covered each
step), 4 agents, 5x5 grid, 30 steps. For each seed, spn-ac (selective circuit) and
meanfield-ac are trained with no broken agent (runs cached under ``--runs-dir``; a finished
run is loaded, not retrained). Then, on the same fixed test layouts for every method:

1. Broken agent: agent ``j`` (each ``j`` in turn) is broken, the env forces its noop.
   (a) act from the joint policy, the env overriding agent ``j``;
   (b) the others act from the policy conditioned on ``u_j = noop``.
   Each sampled and greedy (mode / MPE given the evidence); meanfield-ac for (a).
2. Lost agent: the controller loses contact with agent ``j``, which keeps acting alone from
   its own marginal ``pi(u_j | s)`` (sampled, or its argmax when greedy). The others act
   from the marginal ``pi(u_-j | s)`` (sampled; greedy: its exact mode, by enumeration), or,
   naively, from the joint mode with agent ``j``'s part ignored.
3. Anomaly detection: in each episode one random agent acts uniformly at random from a
   random step on; the others sample from the joint policy. Each step is scored by
   ``max_i -log pi(u_i | u_-i, s)`` (leave-one-out) or by the baseline
   ``max_i -log pi(u_i | s)`` (per-agent marginal likelihood). AUROC for flagging anomalous
   steps (Mann-Whitney U / (n1 n2)); accuracy of naming the rogue agent on anomalous steps
   (argmax_i) and per episode (argmax of the scores summed over its anomalous steps).

Metrics are per seed (means over test episodes), reported as the mean over seeds with a 95%
percentile bootstrap CI (``scipy.stats.bootstrap``), plus paired per-seed differences of the
main comparisons (same seeds, same test layouts). Writes
``runs/benchmarks/inference.json`` and ``inference_{broken,lost,anomaly}.png`` (``--out
benchmarks/results`` updates the tracked figures).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu

import spnpolicy
from spnpolicy.machine import machine
from spnpolicy.bench.stats import mean_ci
from spnpolicy.inference import (
    anomaly_scores,
    conditional_policy,
    drop_agents,
    load_agent,
    marginal_scores,
    most_likely,
)
from spnpolicy.training import make_vec_env

RESULTS = Path("runs/benchmarks")  # tracked copy: benchmarks/results/ (--out)
ENV = dict(num_agents=4, grid_size=5, max_steps=30, reward="coverage")
NOOP = 0
METRICS = ("mean", "final", "success")  # per rollout, see rollout()
TEST_SEED = 50_000  # test layouts: fixed per (experiment, agent), shared by every method
TRAIN = dict(num_envs=16, learning_starts=2_000, buffer_size=50_000, eval_episodes=64)


def train(algo: str, seed: int, total_steps: int, runs_dir: Path):
    """The trained policy and its final evaluation; a finished run in ``runs_dir`` is loaded
    (``load_agent``), not retrained."""
    out = runs_dir / f"{algo}_s{seed}_{total_steps}"
    metrics = out / "metrics.jsonl"
    if (out / "checkpoints" / "last.pt").is_file() and metrics.is_file():
        final = json.loads(metrics.read_text().splitlines()[-1])
        if final["step"] >= total_steps:
            return load_agent(out), final
    result = spnpolicy.train(algo, "coverage", seed=seed, total_steps=total_steps, out_dir=out,
                             env_kwargs=ENV, resume=True, progress=False, verbose=False,
                             eval_interval=total_steps, checkpoint_interval=total_steps, **TRAIN)
    return result.agent, result.eval


def rollout(act, env: dict, episodes: int, seed: int, broken: tuple[int, ...] = ()) -> dict:
    """Play ``episodes`` episodes of the coverage env ``env`` (its ``coverage`` reward: the
    fraction of goals covered, so episodes never end early) in parallel;
    ``act(states [E, S], t) -> actions [E, n]``. Returns the covered fraction, mean over the
    steps and at the end, and ``success``: the fraction of episodes that cover every goal at
    some step (the sparse task's success: its episodes end there)."""
    envs = make_vec_env("coverage", episodes, seed=seed, broken_agents=broken, **env)
    state, _ = envs.reset(seed=seed)
    covered = []
    with torch.no_grad():
        for t in range(env["max_steps"]):
            actions = np.asarray(act(torch.as_tensor(state), t))
            out = envs.step(actions)
            covered.append(out.reward)  # coverage reward = fraction of goals covered
            state = out.state
    covered = np.stack(covered)          # [T, E]
    return {"mean": float(covered.mean()), "final": float(covered[-1].mean()),
            "success": float((covered >= 1.0).any(axis=0).mean())}


def sampled(dist, g):
    return dist.sample(generator=g)


def broken_agent(spn, meanfield, env: dict, episodes: int, g: torch.Generator) -> dict:
    n = env["num_agents"]
    methods = {
        "spn joint, sampled (a)": lambda s, j: sampled(spn.distribution(s), g),
        "spn conditioned, sampled (b)": lambda s, j: sampled(
            conditional_policy(spn, s, {j: NOOP}), g),
        "spn joint, greedy (a)": lambda s, j: spn.distribution(s).mode,
        "spn conditioned, greedy (b)": lambda s, j: most_likely(spn, s, {j: NOOP}),
        "meanfield joint, sampled (a)": lambda s, j: sampled(meanfield.distribution(s), g),
        "meanfield joint, greedy (a)": lambda s, j: meanfield.distribution(s).mode,
        "uniform random (a)": lambda s, j: torch.randint(0, 6, (len(s), n), generator=g),
    }
    out = {}
    for name, act in methods.items():
        runs = [rollout(lambda s, t, act=act, j=j: act(s, j), env, episodes, TEST_SEED + j,
                        broken=(j,)) for j in range(n)]
        out[name] = {k: float(np.mean([r[k] for r in runs])) for k in METRICS}
    out["spn, no broken agent, greedy"] = rollout(
        lambda s, t: spn.distribution(s).mode, env, episodes * n, TEST_SEED)
    return out


def lost_agent(spn, meanfield, env: dict, episodes: int, g: torch.Generator) -> dict:
    n = env["num_agents"]

    def combine(others, lost, j):
        actions = torch.empty(others.shape[0], n, dtype=torch.long)
        actions[:, [i for i in range(n) if i != j]] = others
        actions[:, j] = lost
        return actions

    def own_marginal(policy, s, j, greedy):
        margin = policy.distribution(s).marginals()[:, j]
        return margin.argmax(-1) if greedy else torch.multinomial(margin, 1, generator=g)[:, 0]

    def keep(j):
        return [i for i in range(n) if i != j]

    methods = {
        "spn marginal, sampled": lambda s, j: combine(
            drop_agents(spn, s, [j]).sample(generator=g), own_marginal(spn, s, j, False), j),
        "spn marginal mode, greedy": lambda s, j: combine(
            drop_agents(spn, s, [j]).mode, own_marginal(spn, s, j, True), j),
        "spn joint mode ignoring lost agent, greedy": lambda s, j: combine(
            spn.distribution(s).mode[:, keep(j)], own_marginal(spn, s, j, True), j),
        "meanfield, sampled": lambda s, j: sampled(meanfield.distribution(s), g),
        "meanfield, greedy": lambda s, j: meanfield.distribution(s).mode,
        "spn joint (no loss), sampled": lambda s, j: sampled(spn.distribution(s), g),
        "spn joint (no loss), greedy": lambda s, j: spn.distribution(s).mode,
    }
    out = {}
    for name, act in methods.items():
        runs = [rollout(lambda s, t, act=act, j=j: act(s, j), env, episodes,
                        TEST_SEED + 100 + j) for j in range(n)]
        out[name] = {k: float(np.mean([r[k] for r in runs])) for k in METRICS}
    return out


def anomaly(spn, env: dict, episodes: int, seed: int) -> dict:
    """AUROC and rogue-naming accuracy of leave-one-out vs marginal scores."""
    n, T, k = env["num_agents"], env["max_steps"], 6
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    rogue = rng.integers(0, n, episodes)
    start = rng.integers(0, T, episodes)
    envs = make_vec_env("coverage", episodes, seed=TEST_SEED + 200, **env)
    state, _ = envs.reset(seed=TEST_SEED + 200)
    scores = {"leave-one-out": [], "marginal": []}
    labels = []
    with torch.no_grad():
        for t in range(T):
            s = torch.as_tensor(state)
            actions = spn.distribution(s).sample(generator=g)
            active = t >= start
            actions[active, rogue[active]] = torch.as_tensor(rng.integers(0, k, active.sum()))
            scores["leave-one-out"].append(anomaly_scores(spn, s, actions).numpy())
            scores["marginal"].append(marginal_scores(spn, s, actions).numpy())
            labels.append(active)
            state = envs.step(actions.numpy()).state
    labels = np.stack(labels)                                    # [T, E]
    out = {}
    for name, per_step in scores.items():
        per_agent = np.stack(per_step)                           # [T, E, n]
        step_score = per_agent.max(-1)
        u = mannwhitneyu(step_score[labels], step_score[~labels]).statistic
        named = per_agent.argmax(-1) == rogue[None, :]
        summed = np.where(labels[..., None], per_agent, 0.0).sum(0)   # [E, n]
        out[name] = {"auroc": float(u / (labels.sum() * (~labels).sum())),
                     "step_accuracy": float(named[labels].mean()),
                     "episode_accuracy": float((summed.argmax(-1) == rogue).mean())}
    out["anomalous_fraction"] = float(labels.mean())
    return out


#: Paired differences per seed: name -> (part, minuend, subtrahend, metric keys).
DIFFERENCES = {
    "broken: (b) - (a), sampled": ("broken", "spn conditioned, sampled (b)",
                                   "spn joint, sampled (a)", METRICS),
    "broken: (b) - (a), greedy": ("broken", "spn conditioned, greedy (b)",
                                  "spn joint, greedy (a)", METRICS),
    "lost: marginal mode - joint mode ignoring lost, greedy": (
        "lost", "spn marginal mode, greedy", "spn joint mode ignoring lost agent, greedy",
        METRICS),
    "anomaly: leave-one-out - marginal": ("anomaly", "leave-one-out", "marginal",
                                          ("auroc", "step_accuracy", "episode_accuracy")),
}


def differences(per_seed: dict) -> list[dict]:
    """Per seed, the :data:`DIFFERENCES` of its results."""
    out = []
    for seed in range(len(per_seed["broken"])):
        out.append({name: {key: per_seed[part][seed][a][key] - per_seed[part][seed][b][key]
                           for key in keys}
                    for name, (part, a, b, keys) in DIFFERENCES.items()})
    return out


def summarise(per_seed: list[dict]) -> dict:
    """Nested dict of per-seed floats -> the same nesting of ``{value, ci95, n, seeds}``."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {key: summarise([p[key] for p in per_seed]) for key in first}
    estimate = mean_ci(per_seed).to_json()
    return estimate | {"seeds": [float(v) for v in per_seed]}


def plot(summary: dict, path: Path, keys: tuple[str, ...], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 0.5 * len(names) + 1.8),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [summary[m][key]["value"] for m in names]
        lows = [summary[m][key]["ci95"][0] for m in names]
        highs = [summary[m][key]["ci95"][1] for m in names]
        err = np.array([[v - (lo if lo is not None else v) for v, lo in zip(values, lows)],
                        [(hi if hi is not None else v) - v for v, hi in zip(values, highs)]])
        ax.barh(range(len(names)), values, xerr=err, capsize=3, color="tab:blue", alpha=0.7)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names))
        ax.invert_yaxis()
        ax.set_xlabel(key)
    fig.suptitle(title + " (mean over seeds, 95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def from_bench(bench_dir: Path) -> tuple[dict, list[int], Callable]:
    """The test env, the seeds and a loader of ``(agent, final eval)`` for the spn-ac and
    meanfield-ac runs of a finished ``spnpolicy bench`` suite in ``bench_dir`` (one task).

    The test env is the runs' env with the ``coverage`` reward (same dynamics, layout and
    observations), so covered fractions can be read per step; seeds are those where both
    algorithms finished."""
    tasks = sorted(p for p in (bench_dir / "runs").iterdir() if p.is_dir())
    if len(tasks) != 1:
        raise SystemExit(f"--bench-dir {bench_dir}: expected one task under runs/, found "
                         f"{[t.name for t in tasks]}")
    runs = {algo: {int(d.name[1:]): d for d in (tasks[0] / algo).glob("s*")
                   if (d / "checkpoints" / "last.pt").is_file()}
            for algo in ("spn-ac", "meanfield-ac")}
    seeds = sorted(set(runs["spn-ac"]) & set(runs["meanfield-ac"]))
    if not seeds:
        raise SystemExit(f"--bench-dir {bench_dir}: no seed with finished spn-ac and "
                         f"meanfield-ac runs")
    config = json.loads((runs["spn-ac"][seeds[0]] / "config.json").read_text())
    if config["env"] != "coverage":
        raise SystemExit(f"--bench-dir {bench_dir}: runs are on {config['env']!r}, not coverage")
    env = config["env_kwargs"] | {"reward": "coverage"}

    def load(algo: str, seed: int, total_steps: int | None, runs_dir: Path):
        out = runs[algo][seed]
        final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        return load_agent(out), final

    return env, seeds, load


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None,
                        help="training seeds (default 3; with --bench-dir: the first SEEDS "
                             "of its seeds, default all)")
    parser.add_argument("--total-steps", type=int, default=40_000,
                        help="env steps per training run (default 40000)")
    parser.add_argument("--episodes", type=int, default=50,
                        help="test episodes per broken/lost agent (default 50)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/inference_bench"),
                        help="training runs (cached: finished runs are reloaded)")
    parser.add_argument("--bench-dir", type=Path, default=None,
                        help="instead of training, load the spn-ac and meanfield-ac runs of a "
                             "finished coverage bench (e.g. runs/bench/coverage-quick); "
                             "--total-steps is then ignored")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.bench_dir is not None:
        env, seeds, load = from_bench(args.bench_dir)
        seeds = seeds[:args.seeds]
        train_info = {"bench_dir": str(args.bench_dir)}
    else:
        env, seeds, load = ENV, list(range(args.seeds or 3)), train
        train_info = TRAIN | {"total_steps": args.total_steps}
    per_seed = {"broken": [], "lost": [], "anomaly": [], "train_eval": []}
    for seed in seeds:
        spn, spn_eval = load("spn-ac", seed, args.total_steps, args.runs_dir)
        meanfield, mf_eval = load("meanfield-ac", seed, args.total_steps, args.runs_dir)
        g = torch.Generator().manual_seed(seed)
        per_seed["train_eval"].append({
            "spn-ac greedy return": spn_eval["return_mean"],
            "meanfield-ac greedy return": mf_eval["return_mean"],
            "spn-ac greedy success": spn_eval.get("success_rate", float("nan")),
            "meanfield-ac greedy success": mf_eval.get("success_rate", float("nan"))})
        per_seed["broken"].append(broken_agent(spn, meanfield, env, args.episodes, g))
        per_seed["lost"].append(lost_agent(spn, meanfield, env, args.episodes, g))
        per_seed["anomaly"].append(anomaly(spn, env, args.episodes * env["num_agents"], seed))
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    per_seed["paired_differences"] = differences(per_seed)
    summary = {name: summarise(values) for name, values in per_seed.items()}
    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]),
        "env": env, "train": train_info, "seeds": seeds, "episodes": args.episodes,
        "machine": machine(), "wall_seconds": round(time.perf_counter() - start, 1),
        **summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(summary["broken"], args.out / "inference_broken.png", METRICS,
         "Broken agent: covered fraction")
    plot(summary["lost"], args.out / "inference_lost.png", METRICS,
         "Lost agent: covered fraction")
    anomaly_methods = {k: v for k, v in summary["anomaly"].items() if k != "anomalous_fraction"}
    plot(anomaly_methods, args.out / "inference_anomaly.png",
         ("auroc", "step_accuracy", "episode_accuracy"), "Anomaly detection")
    for part in ("train_eval", "broken", "lost", "anomaly", "paired_differences"):
        print(f"\n{part}:")
        for name, metrics in summary[part].items():
            shown = ("  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
                     if "value" not in metrics else _fmt(metrics))
            print(f"  {name}: {shown}")
    print(f"\nwrote {args.out / 'inference.json'} and the plots beside it")
    return 0


def _fmt(entry: dict) -> str:
    low, high = entry["ci95"]
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
    return f"{entry['value']:.3f}{ci}"


if __name__ == "__main__":
    sys.exit(main())
