"""BenchMARL's implementations beside ours on VMAS navigation: same task, frames and evaluation.

Two harnesses: BenchMARL's own algorithms (and spn-ac as a BenchMARL algorithm) in BenchMARL's
``Experiment``, and our own implementations of the same algorithms trained by
``spnpolicy.train``.

**Task.** 2-agent VMAS ``navigation``, 50-step episodes: BenchMARL's ``VmasTask.NAVIGATION``
config after ``update(n_agents=2, max_steps=50)`` (:func:`benchmarl_spn.navigation_experiment`,
examples/benchmarl_spn.py). Every key of that config is passed to our env ``vmas/navigation``
(:func:`ours_env_kwargs`; a key our env cannot take would be listed under
``settings["ours"]["unmatched_task_keys"]``; there is none): collisions, agents_with_same_goal,
split_goals, observe_all_goals, shared_rew (False: each agent's own distance reward),
lidar_range, agent_radius, n_agents, max_steps; the scenario's other arguments (n_lidar_rays
12, ...) are VMAS's defaults in both. BenchMARL's discrete VMAS action is the flat index of
VMAS's 3 x 3 per-axis choices: **9 moves** (noop, the 4 axis moves, the 4 diagonals), so our
env runs with ``diagonal_moves=True`` (the same 9 forces; its numbering differs and is
translated at evaluation, :data:`OURS_TO_VMAS`).

**BenchMARL harness** (``--harness benchmarl``). MAPPO, QMIX, VDN, MASAC and spn-ac
(``spnpolicy.integrations.benchmarl``) in BenchMARL's ``Experiment``: 500 frames from 10 envs
per iteration; off-policy algorithms 50 gradient steps of 128 transitions per iteration
(``benchmarl_spn.experiment_config``); MAPPO 12 epochs of 4 minibatches of 125 (48 gradient
steps); learning rate 1e-3 for every optimiser; ``prefer_continuous_actions`` off (MAPPO and
MASAC would otherwise get VMAS' continuous actions). A budget of F frames is rounded up to
whole iterations of 500 frames.

**Our harness** (``--harness ours``). ``spnpolicy.train(algo, "vmas/navigation", ...)`` with
our mappo, qmix, vdn, masac and spn-ac (``spnpolicy.algos.registry``) for the same number of
env frames as BenchMARL collects (``total_steps`` counts env steps summed over the envs, as
BenchMARL's frames do), 10 envs (``num_envs``), every learning-rate field (``lr``,
``*_lr``) at 1e-3, and otherwise each algorithm's own defaults (the full configs are in
``settings["ours"]["configs"]``); our in-training evaluation runs only at the start and the
end, greedy only (``eval_interval`` = the budget, ``eval_stochastic`` off; it reads nothing
back into training), and its return is kept as ``own_eval_return`` (our env's episodes, which
end at success: not the comparison's number).

**Evaluation, the same for both** (:func:`benchmarl_spn.team_return`): greedy team return =
per step the mean over agents of VMAS' reward, summed over 50 steps, mean over 32 episodes;
beside uniformly random actions. A BenchMARL run is evaluated on its experiment's test env;
our trained agent acts in an env built by the same BenchMARL task function (torchrl's
``VmasEnv``, 32 copies, 9 discrete actions, the same kwargs), seeded the same way
(``set_seed(123)`` and ``torch.manual_seed(123)``), rolled out and read by the same
``team_return`` code: its greedy joint actions (on the observations, or on our global state
read from the VMAS world for agents that act on states) are mapped to VMAS' action indices.
The 32 test episodes therefore start from **the identical 32 initial states** as BenchMARL's
test episodes, and random actions give the identical random return; a copy whose episode
ends before step 50 (every agent on its goal) restarts from VMAS' shared generator, whose
draws depend on when the copies finish, so those later episodes are identically distributed
only (as between any two BenchMARL algorithms).

**What is not matched between the harnesses** (also in ``settings["ours"]["not_matched"]``):
the collection and update schedule, network sizes, exploration and replay settings are each
implementation's own (ours: off-policy learners update once per 10-env step after
``learning_starts``, MAPPO on rollouts of ``rollout_steps`` x 10 envs); the time limit is
terminal in BenchMARL (torchrl's ``VmasEnv`` sets ``terminated`` at ``max_steps``) and a
truncation in ours (bootstrapped); our learners train on the team reward (the agents'
mean), BenchMARL's MAPPO and MASAC on each agent's reward (its QMIX and VDN on their mean);
our spn-ac's policy reads the global state (6 floats per agent), BenchMARL's spn-ac the
concatenated observations; training episodes are drawn per copy from seeded generators in
ours and from VMAS' one shared generator in BenchMARL (identically distributed, not the same).

A run that raises is recorded with its error and the script goes on. The JSON is rewritten
after every run; each row has ``harness`` (``benchmarl`` or ``ours``) and ``algo``, the
summary is grouped by harness.

Run from the repository root (both harnesses, 5 seeds, 20,000 frames)::

    nice -n 5 .venv/bin/python benchmarks/benchmarl_side_by_side.py --harness both \
        --frames 20000 --seeds 5 --algos mappo vdn qmix masac spn-ac \
        --out benchmarks/results/benchmarl-side-by-side/side_by_side_harnesses.json

A smoke run: ``--harness ours --algos vdn --frames 500 --seeds 1 --out /tmp/smoke.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import benchmarl_spn  # noqa: E402
from benchmarl_spn import EPISODE_STEPS, navigation_experiment, team_return  # noqa: E402

from spnpolicy.bench.stats import mean_ci  # noqa: E402

RESULTS = ROOT / "benchmarks/results/benchmarl-side-by-side/side_by_side.json"
ALGOS = ("mappo", "qmix", "vdn", "masac", "spn-ac")
HARNESSES = ("benchmarl", "ours")
ON_POLICY = dict(on_policy_collected_frames_per_batch=500, on_policy_n_envs_per_worker=10,
                 on_policy_minibatch_size=125, on_policy_n_minibatch_iters=12)
FRAMES_PER_ITERATION = 500      # BenchMARL's collection, on- and off-policy alike
OURS_ENV = "vmas/navigation"
OURS_NUM_ENVS = 10
OURS_LR = 1e-3
EVAL_EPISODES, EVAL_SEED = 32, 123


# -- BenchMARL's harness -----------------------------------------------------------------

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
    config.prefer_continuous_actions = False   # MAPPO and MASAC too act with VMAS' moves
    return config


def collected_frames(frames: int) -> int:
    """The frames BenchMARL collects for a budget of ``frames``: whole iterations of 500."""
    return -(-frames // FRAMES_PER_ITERATION) * FRAMES_PER_ITERATION


def benchmarl_run(algo: str, seed: int, frames: int) -> dict:
    row = {"harness": "benchmarl", "algo": algo, "seed": seed, "frames": frames}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        config = algorithm_config(algo)
        row["on_policy"] = bool(config.on_policy())
        with tempfile.TemporaryDirectory() as folder:
            experiment = navigation_experiment(frames, seed=seed, folder=folder,
                                               algorithm_config=config,
                                               config=experiment_config(frames, folder))
            row["random_return"] = team_return(experiment, seed=EVAL_SEED)
            experiment.run()
            row["trained_return"] = team_return(experiment, experiment.policy, seed=EVAL_SEED)
            row["total_frames"] = int(experiment.total_frames)
    except Exception as error:  # noqa: BLE001 - recorded, the comparison goes on
        row["error"] = f"{type(error).__name__}: {error}"
        row["traceback"] = traceback.format_exc(limit=6)
    row["wall_s"] = time.perf_counter() - wall
    row["cpu_s"] = time.process_time() - cpu
    return row


# -- our harness -------------------------------------------------------------------------

def benchmarl_task():
    """BenchMARL's navigation task, configured as :func:`navigation_experiment` does."""
    from benchmarl.environments import VmasTask
    task = VmasTask.NAVIGATION.get_from_yaml()
    task.config.update(n_agents=2, max_steps=EPISODE_STEPS)
    return task


def ours_env_kwargs() -> tuple[dict, list[str]]:
    """Our ``vmas/navigation`` arguments for BenchMARL's task config, and the config's keys
    our env cannot take (none today). ``diagonal_moves``: BenchMARL's 9 discrete moves."""
    from spnpolicy.envs.vmas_tasks import TASKS
    takes = {"n_agents", "max_steps", *TASKS["navigation"].arguments}
    config = dict(benchmarl_task().config)
    kwargs = {k: v for k, v in config.items() if k in takes}
    return kwargs | {"diagonal_moves": True}, sorted(set(config) - takes)


def _vmas_action_table() -> torch.Tensor:
    """Our action index -> VMAS' flat discrete index (3 x per-axis choice x + choice y)."""
    from spnpolicy.envs.vmas_tasks import MOVES_DIAGONAL
    return MOVES_DIAGONAL[:, 0] * 3 + MOVES_DIAGONAL[:, 1]


OURS_TO_VMAS = "our moves noop, left, right, down, up, left-down, left-up, right-down, " \
    "right-up -> VMAS' flat indices 0, 3, 6, 1, 2, 4, 5, 7, 8"


def ours_overrides(algo: str, total_steps: int) -> dict:
    """What our harness sets on ``algo``'s config: 10 envs, every learning rate 1e-3, the
    in-training evaluation at the start and the end only, greedy only."""
    from spnpolicy.algos.registry import get_algorithm
    fields = {f.name for f in dataclasses.fields(get_algorithm(algo).config_cls)}
    overrides = {"num_envs": OURS_NUM_ENVS, "eval_interval": total_steps,
                 "eval_stochastic": False}
    overrides |= {name: OURS_LR for name in sorted(fields)
                  if name == "lr" or name.endswith("_lr")}
    return {k: v for k, v in overrides.items() if k in fields}


def ours_config(algo: str, total_steps: int) -> dict:
    """The full config our harness trains ``algo`` with."""
    from spnpolicy.algos.registry import make_config
    config = make_config(algo, OURS_ENV, ours_overrides(algo, total_steps)
                         | {"total_steps": total_steps})
    return dataclasses.asdict(config)


def _reads_observations(agent) -> bool:
    """Whether our trained agent acts on per-agent observations (else on global states)."""
    shape = getattr(agent, "input_shape", None)
    if shape is not None:
        return len(tuple(shape)) == 2
    return bool(getattr(agent, "needs_obs", False))


def evaluation_env(seed: int):
    """The evaluation env: BenchMARL's own test env for this task (32 copies, discrete
    actions), built as ``Experiment`` builds it, as ``team_return`` reads it."""
    from torchrl.envs import Compose, TransformedEnv
    task = benchmarl_task()
    env = task.get_env_fun(num_envs=EVAL_EPISODES, continuous_actions=False, seed=seed,
                           device="cpu")()
    env = TransformedEnv(env, Compose(*task.get_env_transforms(env)))
    return SimpleNamespace(test_env=env, group_map=task.group_map(env))


def greedy_policy(agent, evaluation) -> object:
    """A TensorDict policy playing ``agent``'s greedy joint actions in ``evaluation``'s env,
    on the group's observations or on our global state read from the VMAS world."""
    from tensordict.nn import TensorDictModule

    from spnpolicy.envs.vmas_tasks import TASKS
    group = next(iter(evaluation.group_map))
    world = evaluation.test_env.base_env._env          # the VMAS Environment
    reads_obs, table = _reads_observations(agent), _vmas_action_table()

    def act(observation: torch.Tensor) -> torch.Tensor:
        x = observation if reads_obs else TASKS["navigation"].state(world).to(torch.float32)
        actions = torch.as_tensor(agent.act(x.to(torch.float32)), dtype=torch.long)
        return table[actions]

    return TensorDictModule(act, in_keys=[(group, "observation")],
                            out_keys=[(group, "action")])


def ours_run(algo: str, seed: int, frames: int) -> dict:
    import spnpolicy
    row = {"harness": "ours", "algo": algo, "seed": seed, "frames": frames}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        total_steps = collected_frames(frames)
        env_kwargs, _ = ours_env_kwargs()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            result = spnpolicy.train(algo, OURS_ENV, seed=seed, total_steps=total_steps,
                                     env_kwargs=env_kwargs, progress=False, verbose=False,
                                     **ours_overrides(algo, total_steps))
        notes = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
        if notes:
            row["warnings"] = notes
        row["total_frames"] = int(result.history[-1]["step"])
        row["own_eval_return"] = float(result.eval["return_mean"])
        evaluation = evaluation_env(seed)
        row["random_return"] = team_return(evaluation, seed=EVAL_SEED)
        row["trained_return"] = team_return(evaluation, greedy_policy(result.agent, evaluation),
                                            seed=EVAL_SEED)
        evaluation.test_env.close()
    except Exception as error:  # noqa: BLE001 - recorded, the comparison goes on
        row["error"] = f"{type(error).__name__}: {error}"
        row["traceback"] = traceback.format_exc(limit=6)
    row["wall_s"] = time.perf_counter() - wall
    row["cpu_s"] = time.process_time() - cpu
    return row


NOT_MATCHED = [
    "collection/update schedule, network sizes, exploration and replay settings: each "
    "implementation's own defaults (ours: settings['ours']['configs'])",
    "time limit: terminal in BenchMARL (torchrl VmasEnv sets terminated at max_steps), a "
    "truncation in ours (bootstrapped)",
    "learning signal: ours the team reward (agents' mean); BenchMARL MAPPO/MASAC each agent's "
    "reward, QMIX/VDN the agents' mean",
    "spn-ac's policy input: ours the global state (6 floats per agent), BenchMARL's the "
    "concatenated observations",
    "training episodes: ours per-copy generators seeded seed + copy, BenchMARL VMAS' one "
    "shared generator: identically distributed, not the same",
    "action numbering: the same 9 moves and forces, ours numbered differently (translated "
    "at evaluation)",
]


# -- the comparison ----------------------------------------------------------------------

RUNS = {"benchmarl": benchmarl_run, "ours": ours_run}


def summary(rows: list[dict], harnesses, algos) -> dict:
    out = {}
    for harness in harnesses:
        out[harness] = {}
        for algo in algos:
            mine = [r for r in rows if r["harness"] == harness and r["algo"] == algo]
            done = [r for r in mine if "trained_return" in r]
            entry = {"runs": len(done), "errors": [r["error"] for r in mine if "error" in r]}
            if done:
                entry["trained_return"] = mean_ci([r["trained_return"] for r in done]).to_json()
                entry["random_return"] = mean_ci([r["random_return"] for r in done]).to_json()
                entry["wall_s_per_run"] = sum(r["wall_s"] for r in done) / len(done)
                entry["cpu_s_per_run"] = sum(r["cpu_s"] for r in done) / len(done)
            out[harness][algo] = entry
    return out


def settings_of(args, harnesses) -> dict:
    probe = experiment_config(args.frames, "/tmp")
    settings = {"task": "vmas/navigation", "n_agents": 2, "episode_steps": EPISODE_STEPS,
                "frames": args.frames, "collected_frames": collected_frames(args.frames),
                "seeds": args.seeds, "algos": args.algos, "harnesses": list(harnesses),
                "torch_threads": 1, "benchmarl_task_config": dict(benchmarl_task().config),
                "evaluation": {"episodes": EVAL_EPISODES, "steps": EPISODE_STEPS,
                               "seed": EVAL_SEED, "env": "BenchMARL's VmasTask env "
                               "(torchrl VmasEnv, 9 discrete actions), both harnesses",
                               "return": "per step the agents' mean reward, summed over "
                               "the steps, mean over the episodes"}}
    if "benchmarl" in harnesses:
        settings["benchmarl"] = {
            "evaluation_episodes": probe.evaluation_episodes,
            "off_policy": {k: getattr(probe, k) for k in (
                "off_policy_collected_frames_per_batch", "off_policy_n_envs_per_worker",
                "off_policy_n_optimizer_steps", "off_policy_train_batch_size")},
            "on_policy": ON_POLICY, "lr": probe.lr,
            "prefer_continuous_actions": probe.prefer_continuous_actions}
    if "ours" in harnesses:
        env_kwargs, unmatched = ours_env_kwargs()
        steps = collected_frames(args.frames)
        settings["ours"] = {
            "env": OURS_ENV, "env_kwargs": env_kwargs, "unmatched_task_keys": unmatched,
            "total_steps": steps, "action_map": OURS_TO_VMAS,
            "overrides": {a: ours_overrides(a, steps) for a in args.algos},
            "configs": {a: ours_config(a, steps) for a in args.algos},
            "not_matched": NOT_MATCHED}
    return settings


def _fmt(entry: dict, key: str) -> str:
    e = entry[key]
    lo, hi = e["ci95"]
    return f"{e['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def print_table(result: dict, frames: int, seeds: int, out: Path) -> None:
    print(f"\nVMAS navigation, 2 agents, {frames} frames, {seeds} seeds "
          f"(greedy team return, mean [95% bootstrap CI]); {out}")
    for harness, entries in result["summary"].items():
        print(f"\n{harness}")
        print(f"{'algo':8s} {'trained':>24s} {'random':>24s} {'wall s/run':>10s}  errors")
        for algo, entry in entries.items():
            if entry["runs"]:
                print(f"{algo:8s} {_fmt(entry, 'trained_return'):>24s} "
                      f"{_fmt(entry, 'random_return'):>24s} "
                      f"{entry['wall_s_per_run']:10.0f}  {len(entry['errors'])}")
            else:
                print(f"{algo:8s} {'-':>24s} {'-':>24s} {'-':>10s}  {entry['errors'][:1]}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--harness", choices=(*HARNESSES, "both"), default="both",
                        help="BenchMARL's implementations, ours (spnpolicy.train), or both")
    parser.add_argument("--task", choices=("navigation",), default="navigation")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.seeds < 1:
        parser.error("--frames and --seeds must be >= 1")
    harnesses = HARNESSES if args.harness == "both" else (args.harness,)
    torch.set_num_threads(1)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    command = [sys.executable, "benchmarks/benchmarl_side_by_side.py",
               *(sys.argv[1:] if argv is None else argv)]
    result = {"commit": commit, "command": " ".join(command),
              "settings": settings_of(args, harnesses), "runs": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        for harness in harnesses:
            for algo in args.algos:
                row = RUNS[harness](algo, seed, args.frames)
                result["runs"].append(row)
                result["summary"] = summary(result["runs"], harnesses, args.algos)
                args.out.write_text(json.dumps(result, indent=1) + "\n")
                status = (f"trained {row['trained_return']:.3f} "
                          f"random {row['random_return']:.3f}"
                          if "trained_return" in row else f"ERROR {row['error'][:200]}")
                print(f"{harness:9s} {algo:7s} seed {seed}: {status} ({row['wall_s']:.0f} s "
                      f"wall, {row['cpu_s']:.0f} s CPU)", flush=True)
    print_table(result, args.frames, args.seeds, args.out)
    return result


if __name__ == "__main__":
    main()
