"""BenchMARL's implementations beside ours, VMAS navigation or MPE simple_spread: same task, frames
and evaluation.

Two harnesses: BenchMARL's own algorithms (and spn-ac as a BenchMARL algorithm) in BenchMARL's
``Experiment``, and our own implementations of the same algorithms trained by
``spnpolicy.train``. Two tasks (``--task``): ``navigation`` (the default; all that follows up
to the simple_spread section is about it) and ``simple_spread``.

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
MASAC would otherwise get VMAS' continuous actions). spn-ac on the VMAS tasks reads what
our spn-ac reads there (:func:`algorithm_config`: the agents' observations through networks
shared by the agents); on simple_spread, as ours, the concatenated observations. A budget of F
frames is rounded up to whole iterations of 500 frames.

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
training episodes are drawn per copy from seeded generators in
ours and from VMAS' one shared generator in BenchMARL (identically distributed, not the same).

**Matched schedule** (``--schedule matched``, our harness only). By default our learners keep
their own schedules (off-policy: updates from 5,000 frames on; vdn and qmix: epsilon over
50,000 frames, a hard target copy every 10,000), made for runs of 10^5-10^6 frames, which a
20,000-frame budget cuts short. ``matched`` sets BenchMARL's experiment settings as our
config fields (:func:`matched_schedule`): updates from 500 frames on, one gradient step of 128
per 10 frames, gradient norms clipped at 5, gamma 0.99, Polyak rate 0.005 (vdn and qmix: a
hard copy every 2,000 frames), epsilon 0.8 to 0.01 over a third of the frames; MAPPO 500
frames per rollout, 12 epochs of 4 minibatches, clip 0.2, no entropy bonus, GAE lambda 0.9.
It compares the implementations on one schedule; networks and the other hyperparameters stay
each implementation's own.

**navigation-shared** (``--task navigation-shared``). The navigation task with VMAS'
``shared_rew=True`` in both harnesses: every agent's reward is the sum of the agents' distance
rewards, plus the final reward and its own collision penalty, which with 2 agents strikes both
at once. Every agent then gets the same reward, so each algorithm learns from the same signal in
both harnesses (on ``navigation`` BenchMARL's MAPPO and MASAC learn from each agent's own
reward, ours from the agents' mean). Evaluation as for navigation, on this task's reward.

**simple_spread** (``--task simple_spread``). 3-agent MPE simple_spread (cooperative
navigation: 3 agents cover 3 landmarks), 100-step episodes: BenchMARL's
``PettingZooTask.SIMPLE_SPREAD`` config ``{task: simple_spread_v3, max_cycles: 100,
local_ratio: 0.5, N: 3}``. BenchMARL's own env builder fails here (torchrl's ``PettingZooEnv``
imports ``pettingzoo.mpe``, which pettingzoo >= 1.25 replaced by "MPE has been moved into its
own package: MPE2"), so the BenchMARL task is ``Mpe2PettingZooClass``
(``spnpolicy.integrations.benchmarl``): BenchMARL's ``PettingZooClass`` (its specs, group map
``agent: [agent_0, agent_1, agent_2]``, state, ``max_steps`` = ``max_cycles``) with the same
env built from ``mpe2`` (see its docstring).
Our env ``mpe/simple_spread`` is mpe2's too, given the config's ``N``, ``local_ratio`` and
``max_cycles`` (``task`` names the env: ``simple_spread_v3`` is what ``mpe/simple_spread``
builds); mpe2's other arguments are its defaults in both. Matched here, unlike navigation: the
time limit is a truncation in both (mpe2 truncates at ``max_cycles``, torchrl keeps it as
``truncated``, not ``terminated``); the actions are mpe2's own 5 indices in both (no_action,
left, right, down, up; no translation); our global state is mpe2's ``state()``, the agents'
observations concatenated (54 floats), which is BenchMARL's ``state`` and the input of its
spn-ac. The evaluation env is BenchMARL's test env for this task: PettingZoo envs are not
vectorised, so it is one env and the 32 test episodes (100 steps each) are played one after
the other after ``set_seed(123)`` and ``torch.manual_seed(123)``, by :func:`task_return`
(the same reading as ``team_return``: per step the agents' mean reward, summed over the
episode, mean over the episodes), for both harnesses: the identical 32 episodes (mpe2 draws
each reset from the env's generator seeded once). Not matched: the schedules, networks,
exploration and replay (as for navigation), the learning signal (ours the agents' mean
reward; BenchMARL's MAPPO and MASAC each agent's reward, which differ by each agent's
collision penalty; its QMIX and VDN their mean) and the training episodes
(``NOT_MATCHED_SPREAD``, ``settings["ours"]["not_matched"]``). BenchMARL's PettingZoo task
gives every copy of its training env the experiment's seed, so its 10 copies play the same
initial state at every episode (they reset together, every 100 steps, from generators in the
same state): 1 distinct initial state per 1,000 frames, where our 10 copies draw 10. That is
BenchMARL's behaviour with its own PettingZoo tasks, kept as is.

A run that raises is recorded with its error and the script goes on. The JSON is rewritten
after every run; each row has ``harness`` (``benchmarl`` or ``ours``) and ``algo``, the
summary is grouped by harness.

Run from the repository root (both harnesses, 5 seeds, 20,000 frames)::

    nice -n 5 .venv/bin/python benchmarks/benchmarl_side_by_side.py --harness both \
        --frames 20000 --seeds 5 --algos mappo vdn qmix masac spn-ac \
        --out benchmarks/results/benchmarl-side-by-side/side_by_side_harnesses.json

simple_spread, both harnesses, 5 seeds, 100,000 frames (about 18 CPU s per 1,000 frames for
the 10 runs of a seed, plus about 16 s per run for the evaluations: some 2.7 CPU hours)::

    nice -n 5 .venv/bin/python benchmarks/benchmarl_side_by_side.py --task simple_spread \
        --harness both --frames 100000 --seeds 5 --algos mappo vdn qmix masac spn-ac \
        --out benchmarks/results/benchmarl-side-by-side/side_by_side_simple_spread.json

Our harness on BenchMARL's schedule (the navigation comparison's second table)::

    nice -n 5 .venv/bin/python benchmarks/benchmarl_side_by_side.py --harness ours \
        --schedule matched --frames 20000 --seeds 5 --algos mappo vdn qmix masac spn-ac \
        --out benchmarks/results/benchmarl-side-by-side/side_by_side_ours_matched.json

A smoke run: ``--harness ours --algos vdn --frames 500 --seeds 1 --out /tmp/smoke.json``
(add ``--task simple_spread`` for MPE).
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
from torchrl.envs.utils import ExplorationType, set_exploration_type

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import benchmarl_spn  # noqa: E402
from benchmarl_spn import EPISODE_STEPS, navigation_experiment, team_return  # noqa: E402

from spnpolicy.bench.stats import mean_ci  # noqa: E402

RESULTS = ROOT / "benchmarks/results/benchmarl-side-by-side/side_by_side.json"
RESULTS_SPREAD = RESULTS.with_name("side_by_side_simple_spread.json")
RESULTS_SHARED = RESULTS.with_name("side_by_side_navigation_shared.json")
ALGOS = ("mappo", "qmix", "vdn", "masac", "spn-ac")
HARNESSES = ("benchmarl", "ours")
ON_POLICY = dict(on_policy_collected_frames_per_batch=500, on_policy_n_envs_per_worker=10,
                 on_policy_minibatch_size=125, on_policy_n_minibatch_iters=12)
FRAMES_PER_ITERATION = 500      # BenchMARL's collection, on- and off-policy alike
TASKS = ("navigation", "navigation-shared", "simple_spread")
OURS_ENVS = {"navigation": "vmas/navigation", "navigation-shared": "vmas/navigation",
             "simple_spread": "mpe/simple_spread"}
OURS_NUM_ENVS = 10
OURS_LR = 1e-3
EVAL_EPISODES, EVAL_SEED = 32, 123


# -- BenchMARL's harness -----------------------------------------------------------------

def algorithm_config(name: str, task: str = "navigation"):
    """BenchMARL's config of ``name`` from its yaml; spn-ac on the VMAS tasks with our
    spn-ac's VMAS defaults (``SpnAcAlgorithmConfig.for_family("vmas")``: the policy and the
    critics read each agent's observation through networks shared by the agents), as in our
    harness."""
    from benchmarl.algorithms import MappoConfig, MasacConfig, QmixConfig, VdnConfig

    from spnpolicy.integrations.benchmarl import SpnAcAlgorithmConfig
    if name == "spn-ac" and task != "simple_spread":
        return SpnAcAlgorithmConfig.for_family("vmas")
    configs = {"mappo": MappoConfig, "qmix": QmixConfig, "vdn": VdnConfig,
               "masac": MasacConfig, "spn-ac": SpnAcAlgorithmConfig}
    return configs[name].get_from_yaml()


def experiment_config(max_frames: int, folder: str, lr: float | None = None):
    """The example's config (off-policy settings) plus comparable on-policy settings;
    ``lr``: every optimiser's learning rate, if not the example's 1e-3."""
    config = benchmarl_spn.experiment_config(max_frames, folder)
    if lr is not None:
        config.lr = lr
    for key, value in ON_POLICY.items():
        setattr(config, key, value)
    config.prefer_continuous_actions = False   # MAPPO and MASAC too act with VMAS' moves
    return config


def collected_frames(frames: int) -> int:
    """The frames BenchMARL collects for a budget of ``frames``: whole iterations of 500."""
    return -(-frames // FRAMES_PER_ITERATION) * FRAMES_PER_ITERATION


def task_experiment(task: str, frames: int, seed: int, folder: str, algorithm_config, config):
    """BenchMARL's Experiment of ``algorithm_config`` on ``task``: navigation as the example
    builds it (:func:`navigation_experiment`), simple_spread with :func:`benchmarl_task`'s
    task; BenchMARL's MLP model config."""
    if task == "navigation":
        return navigation_experiment(frames, seed=seed, folder=folder,
                                     algorithm_config=algorithm_config, config=config)
    from benchmarl.experiment import Experiment
    from benchmarl.models.mlp import MlpConfig
    return Experiment(task=benchmarl_task(task), algorithm_config=algorithm_config,
                      model_config=MlpConfig.get_from_yaml(), seed=seed, config=config)


def timed_row(row: dict, fill) -> dict:
    """``row`` after ``fill(row)``, with its wall and CPU seconds; an error that ``fill``
    raises is recorded in the row (``error``, ``traceback``) and the comparison goes on."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        fill(row)
    except Exception as error:  # noqa: BLE001 - recorded, the comparison goes on
        row["error"] = f"{type(error).__name__}: {error}"
        row["traceback"] = traceback.format_exc(limit=6)
    row["wall_s"] = time.perf_counter() - wall
    row["cpu_s"] = time.process_time() - cpu
    return row


def benchmarl_run(algo: str, seed: int, frames: int, task: str = "navigation",
                  lr: float | None = None) -> dict:
    def fill(row: dict) -> None:
        config = algorithm_config(algo, task)
        row["on_policy"] = bool(config.on_policy())
        with tempfile.TemporaryDirectory() as folder:
            experiment = task_experiment(task, frames, seed, folder, config,
                                         experiment_config(frames, folder, lr))
            row["random_return"] = task_return(experiment, seed=EVAL_SEED, task=task)
            experiment.run()
            row["trained_return"] = task_return(experiment, experiment.policy, seed=EVAL_SEED,
                                                task=task)
            row["total_frames"] = int(experiment.total_frames)
    return timed_row({"harness": "benchmarl", "algo": algo, "seed": seed, "frames": frames},
                     fill)


# -- our harness -------------------------------------------------------------------------

def benchmarl_task(task_name: str = "navigation"):
    """BenchMARL's task: navigation configured as :func:`navigation_experiment` does
    (navigation-shared: and ``shared_rew=True``); simple_spread as BenchMARL's
    ``PettingZooTask.SIMPLE_SPREAD`` config, its env from mpe2
    (``spnpolicy.integrations.benchmarl.Mpe2PettingZooClass``)."""
    if task_name == "simple_spread":
        from benchmarl.environments import PettingZooTask

        from spnpolicy.integrations.benchmarl import Mpe2PettingZooClass
        return Mpe2PettingZooClass.from_task(PettingZooTask.SIMPLE_SPREAD)
    from benchmarl.environments import VmasTask
    task = VmasTask.NAVIGATION.get_from_yaml()
    task.config.update(n_agents=2, max_steps=EPISODE_STEPS)
    if task_name == "navigation-shared":
        task.config.update(shared_rew=True)
    return task


def episode_steps(task: str = "navigation") -> int:
    """Steps of an episode (and of an evaluation episode): 50 (navigation), or
    simple_spread's ``max_cycles`` (100)."""
    return benchmarl_task(task).config.get("max_cycles", EPISODE_STEPS)


def ours_env_kwargs(task: str = "navigation") -> tuple[dict, list[str]]:
    """Our env's arguments for BenchMARL's task config, and the config's keys our env cannot
    take (none today). navigation: ``diagonal_moves``, BenchMARL's 9 discrete moves.
    simple_spread: ``task`` names the env (mpe2's module ``mpe/simple_spread`` builds)."""
    config = dict(benchmarl_task(task).config)
    if task == "simple_spread":
        from spnpolicy.envs.mpe import MPE_TASKS, task_arguments
        takes = set(task_arguments("simple_spread"))
        names = {"task"} if config.get("task") == MPE_TASKS["simple_spread"] else set()
        kwargs = {k: v for k, v in config.items() if k in takes}
        return kwargs, sorted(set(config) - takes - names)
    from spnpolicy.envs.vmas_tasks import TASKS
    takes = {"n_agents", "max_steps", *TASKS["navigation"].arguments}
    kwargs = {k: v for k, v in config.items() if k in takes}
    return kwargs | {"diagonal_moves": True}, sorted(set(config) - takes)


def _vmas_action_table() -> torch.Tensor:
    """Our action index -> VMAS' flat discrete index (3 x per-axis choice x + choice y)."""
    from spnpolicy.envs.vmas_tasks import MOVES_DIAGONAL
    return MOVES_DIAGONAL[:, 0] * 3 + MOVES_DIAGONAL[:, 1]


OURS_TO_VMAS = "our moves noop, left, right, down, up, left-down, left-up, right-down, " \
    "right-up -> VMAS' flat indices 0, 3, 6, 1, 2, 4, 5, 7, 8"
OURS_TO_MPE = "none: mpe2's own indices in both (0 no_action, 1 left, 2 right, 3 down, 4 up)"
ACTION_MAPS = {"navigation": OURS_TO_VMAS, "navigation-shared": OURS_TO_VMAS,
               "simple_spread": OURS_TO_MPE}


SCHEDULE_CHOICES = ("own", "matched")
#: Polyak rate of BenchMARL's target networks (``polyak_tau``), per optimiser step.
BENCHMARL_TAU = 0.005


def matched_schedule(algo: str, total_steps: int) -> dict:
    """BenchMARL's experiment settings (its defaults and :func:`experiment_config`'s) as our
    config fields of ``algo``, for ``--schedule matched``: updates from the first 500-frame
    collection on, one gradient step of 128 per 10 frames (BenchMARL's 50 per 500),
    gradient norms clipped at 5, gamma 0.99, target networks at Polyak rate 0.005 (our vdn
    and qmix copy theirs every ``1 / 0.005`` updates, 2,000 frames, instead), epsilon from
    0.8 to 0.01 over a third of the frames (vdn, qmix); MAPPO: 500 frames (50 steps of 10
    envs) per rollout, 12 epochs of 4 minibatches, clip 0.2, no entropy bonus, GAE with
    lambda 0.9 (BenchMARL's mappo.yaml)."""
    if algo == "mappo":
        return {"rollout_steps": FRAMES_PER_ITERATION // OURS_NUM_ENVS, "epochs": 12,
                "minibatches": 4, "clip": 0.2, "entropy_coef": 0.0, "returns": "gae",
                "gae_lambda": 0.9, "gamma": 0.99, "max_grad_norm": 5.0, "tau": BENCHMARL_TAU}
    schedule = {"learning_starts": FRAMES_PER_ITERATION, "update_every": 1, "gradient_steps": 1,
                "batch_size": 128, "gamma": 0.99, "max_grad_norm": 5.0, "tau": BENCHMARL_TAU}
    if algo in ("vdn", "qmix"):
        schedule |= {"epsilon_start": 0.8, "epsilon_finish": 0.01,
                     "epsilon_anneal_steps": max(1, total_steps // 3),
                     "target_update_interval": round(OURS_NUM_ENVS / BENCHMARL_TAU)}
    return schedule


def ours_overrides(algo: str, total_steps: int, schedule: str = "own") -> dict:
    """What our harness sets on ``algo``'s config: 10 envs, every learning rate 1e-3, the
    in-training evaluation at the start and the end only, greedy only; with ``schedule``
    "matched" also :func:`matched_schedule` (the fields ``algo``'s config has)."""
    from spnpolicy.algos.registry import get_algorithm
    fields = {f.name for f in dataclasses.fields(get_algorithm(algo).config_cls)}
    overrides = {"num_envs": OURS_NUM_ENVS, "eval_interval": total_steps,
                 "eval_stochastic": False}
    overrides |= {name: OURS_LR for name in sorted(fields)
                  if name == "lr" or name.endswith("_lr")}
    if schedule == "matched":
        overrides |= matched_schedule(algo, total_steps)
    return {k: v for k, v in overrides.items() if k in fields}


def ours_config(algo: str, total_steps: int, task: str = "navigation",
                schedule: str = "own") -> dict:
    """The full config our harness trains ``algo`` with."""
    from spnpolicy.algos.registry import make_config
    config = make_config(algo, OURS_ENVS[task], ours_overrides(algo, total_steps, schedule)
                         | {"total_steps": total_steps})
    return dataclasses.asdict(config)


def _reads_observations(agent) -> bool:
    """Whether our trained agent acts on per-agent observations (else on global states)."""
    shape = getattr(agent, "input_shape", None)
    if shape is not None:
        return len(tuple(shape)) == 2
    return bool(getattr(agent, "needs_obs", False))


def evaluation_env(seed: int, task: str = "navigation"):
    """The evaluation env: BenchMARL's own test env for this task (navigation: 32 copies;
    simple_spread: one env; discrete actions), built as ``Experiment`` builds it, as
    :func:`task_return` reads it."""
    from torchrl.envs import Compose, TransformedEnv
    benchmarl = benchmarl_task(task)
    env = benchmarl.get_env_fun(num_envs=EVAL_EPISODES, continuous_actions=False, seed=seed,
                                device="cpu")()
    env = TransformedEnv(env, Compose(*benchmarl.get_env_transforms(env)))
    return SimpleNamespace(test_env=env, group_map=benchmarl.group_map(env), task=task)


def task_return(experiment, policy=None, seed: int = EVAL_SEED,
                task: str = "navigation") -> float:
    """``team_return`` on ``task``: navigation's is the example's (32 VMAS copies, 50 steps);
    simple_spread's test env is one PettingZoo env, so its :data:`EVAL_EPISODES` episodes of
    :func:`episode_steps` steps are played one after the other after the same seeding
    (``torch.manual_seed(seed)``, ``set_seed(seed)``), greedy (``policy``'s mode) or uniformly
    random (None), and read the same way: per step the mean over agents of the reward, summed
    over the episode, mean over the episodes. ``experiment``: a BenchMARL Experiment or
    :func:`evaluation_env`'s namespace."""
    if task != "simple_spread":
        return team_return(experiment, policy, seed=seed)
    env, group = experiment.test_env, next(iter(experiment.group_map))
    torch.manual_seed(seed)
    env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rewards = [env.rollout(episode_steps(task), policy=policy, break_when_any_done=True)
                   ["next", group, "reward"] for _ in range(EVAL_EPISODES)]
    reward = torch.stack(rewards)                                  # [E, T, n, 1]
    return reward.mean((-2, -1)).sum(-1).mean().item()


def greedy_policy(agent, evaluation) -> object:
    """A TensorDict policy playing ``agent``'s greedy joint actions in ``evaluation``'s env,
    on the group's observations or on our global state (navigation: read from the VMAS
    world; simple_spread: the env's ``state``, mpe2's ``state()`` as ours)."""
    from tensordict.nn import TensorDictModule

    from spnpolicy.envs.vmas_tasks import TASKS
    group = next(iter(evaluation.group_map))
    if getattr(evaluation, "task", "navigation") == "simple_spread":
        reads_obs = _reads_observations(agent)

        def act_one(observation: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            x = (observation if reads_obs else state)[None].to(torch.float32)  # one env
            return torch.as_tensor(agent.act(x), dtype=torch.long)[0]          # mpe2's indices

        return TensorDictModule(act_one, in_keys=[(group, "observation"), "state"],
                                out_keys=[(group, "action")])
    world = evaluation.test_env.base_env._env          # the VMAS Environment
    reads_obs, table = _reads_observations(agent), _vmas_action_table()

    def act(observation: torch.Tensor) -> torch.Tensor:
        x = observation if reads_obs else TASKS["navigation"].state(world).to(torch.float32)
        actions = torch.as_tensor(agent.act(x.to(torch.float32)), dtype=torch.long)
        return table[actions]

    return TensorDictModule(act, in_keys=[(group, "observation")],
                            out_keys=[(group, "action")])


def ours_run(algo: str, seed: int, frames: int, task: str = "navigation",
             schedule: str = "own") -> dict:
    import spnpolicy

    def fill(row: dict) -> None:
        total_steps = collected_frames(frames)
        env_kwargs, _ = ours_env_kwargs(task)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            result = spnpolicy.train(algo, OURS_ENVS[task], seed=seed, total_steps=total_steps,
                                     env_kwargs=env_kwargs, progress=False, verbose=False,
                                     **ours_overrides(algo, total_steps, schedule))
        notes = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
        if notes:
            row["warnings"] = notes
        row["total_frames"] = int(result.history[-1]["step"])
        row["own_eval_return"] = float(result.eval["return_mean"])
        evaluation = evaluation_env(seed, task)
        row["random_return"] = task_return(evaluation, seed=EVAL_SEED, task=task)
        row["trained_return"] = task_return(evaluation, greedy_policy(result.agent, evaluation),
                                            seed=EVAL_SEED, task=task)
        evaluation.test_env.close()
    return timed_row({"harness": "ours", "algo": algo, "seed": seed, "frames": frames,
                      "schedule": schedule}, fill)


SCHEDULES = ("collection/update schedule, network sizes, exploration and replay settings: each "
             "implementation's own defaults (ours: settings['ours']['configs'])")
SCHEDULES_MATCHED = ("schedule matched to BenchMARL's as our fields (matched_schedule); our "
                     "vdn and qmix copy their target networks every 2,000 frames where "
                     "BenchMARL's move at Polyak rate 0.005 per update; network sizes and the "
                     "algorithms' other hyperparameters each implementation's own")
NOT_MATCHED = [
    SCHEDULES,
    "time limit: terminal in BenchMARL (torchrl VmasEnv sets terminated at max_steps), a "
    "truncation in ours (bootstrapped)",
    "learning signal: ours the team reward (agents' mean); BenchMARL MAPPO/MASAC each agent's "
    "reward, QMIX/VDN the agents' mean",
    "training episodes: ours per-copy generators seeded seed + copy, BenchMARL VMAS' one "
    "shared generator: identically distributed, not the same",
    "action numbering: the same 9 moves and forces, ours numbered differently (translated "
    "at evaluation)",
]
NOT_MATCHED_SPREAD = [
    SCHEDULES,
    "learning signal: ours the team reward (agents' mean); BenchMARL MAPPO/MASAC each agent's "
    "reward (local_ratio 0.5: they differ by each agent's collision penalty), QMIX/VDN the "
    "agents' mean",
    "training episodes: ours each copy's episodes reset with seeds from SeedSequence([seed, "
    "copy, episode]) (10 distinct initial states per 10 episodes); BenchMARL's PettingZoo "
    "task builds each of its 10 copies (SerialEnv) with the experiment's seed, so all 10 "
    "start every episode from the same initial state (1 distinct per 10 episodes), as "
    "BenchMARL does with its own PettingZoo tasks",
    "render_mode: BenchMARL's env built with 'rgb_array' (as BenchMARL builds it), ours None: "
    "no effect on the dynamics (nothing is rendered)",
]
NOT_MATCHED_SHARED = [line for line in NOT_MATCHED if not line.startswith("learning signal")]
NOT_MATCHED_BY_TASK = {"navigation": NOT_MATCHED, "navigation-shared": NOT_MATCHED_SHARED,
                       "simple_spread": NOT_MATCHED_SPREAD}
EVALUATION_ENVS = {
    "navigation": "BenchMARL's VmasTask env (torchrl VmasEnv, 9 discrete actions), both "
                  "harnesses",
    "navigation-shared": "BenchMARL's VmasTask env (torchrl VmasEnv, 9 discrete actions, "
                         "shared_rew True), both harnesses",
    "simple_spread": "BenchMARL's PettingZooTask.SIMPLE_SPREAD env built from mpe2 "
                     "(spnpolicy.integrations.benchmarl.Mpe2PettingZooClass: torchrl "
                     "PettingZooWrapper, 5 discrete actions, "
                     "one env, the episodes played one after the other), both harnesses"}
TASK_LABELS = {"navigation": ("vmas/navigation", 2, "VMAS navigation, 2 agents"),
               "navigation-shared": ("vmas/navigation (shared_rew True)", 2,
                                     "VMAS navigation, 2 agents, shared reward"),
               "simple_spread": ("mpe/simple_spread (BenchMARL pettingzoo SIMPLE_SPREAD, "
                                 "mpe2)", 3, "MPE simple_spread, 3 agents")}


# -- the comparison ----------------------------------------------------------------------

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
    probe = experiment_config(args.frames, "/tmp", getattr(args, "benchmarl_lr", None))
    task = getattr(args, "task", "navigation")
    name, n_agents, _ = TASK_LABELS[task]
    steps = episode_steps(task)
    settings = {"task": name, "n_agents": n_agents, "episode_steps": steps,
                "frames": args.frames, "collected_frames": collected_frames(args.frames),
                "seeds": args.seeds, "algos": args.algos, "harnesses": list(harnesses),
                "torch_threads": 1, "benchmarl_task_config": dict(benchmarl_task(task).config),
                "evaluation": {"episodes": EVAL_EPISODES, "steps": steps,
                               "seed": EVAL_SEED, "env": EVALUATION_ENVS[task],
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
        env_kwargs, unmatched = ours_env_kwargs(task)
        steps = collected_frames(args.frames)
        settings["ours"] = {
            "env": OURS_ENVS[task], "env_kwargs": env_kwargs, "unmatched_task_keys": unmatched,
            "total_steps": steps, "action_map": ACTION_MAPS[task],
            "schedule": args.schedule,
            "overrides": {a: ours_overrides(a, steps, args.schedule) for a in args.algos},
            "configs": {a: ours_config(a, steps, task, args.schedule) for a in args.algos},
            "not_matched": [SCHEDULES_MATCHED if line == SCHEDULES and args.schedule == "matched"
                            else line for line in NOT_MATCHED_BY_TASK[task]]}
    return settings


def _fmt(entry: dict, key: str) -> str:
    e = entry[key]
    lo, hi = e["ci95"]
    return f"{e['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def print_table(result: dict, frames: int, seeds: int, out: Path,
                task: str = "navigation") -> None:
    print(f"\n{TASK_LABELS[task][2]}, {frames} frames, {seeds} seeds "
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
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--harness", choices=(*HARNESSES, "both"), default="both",
                        help="BenchMARL's implementations, ours (spnpolicy.train), or both")
    parser.add_argument("--task", choices=TASKS, default="navigation",
                        help="VMAS navigation (2 agents; navigation-shared: with VMAS' "
                             "shared reward) or MPE simple_spread (3 agents, mpe2)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON (default {RESULTS.relative_to(ROOT)}, "
                             f"{RESULTS_SHARED.name} for navigation-shared, "
                             f"{RESULTS_SPREAD.name} for simple_spread)")
    parser.add_argument("--schedule", choices=SCHEDULE_CHOICES, default="own",
                        help="our harness: each algorithm's own schedule (default), or "
                             "BenchMARL's experiment settings as our fields (matched_schedule)")
    parser.add_argument("--benchmarl-lr", type=float, default=None,
                        help="BenchMARL's harness: every optimiser's learning rate (default "
                             "1e-3, as our harness; BenchMARL's own default is 5e-5)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = {"navigation": RESULTS, "navigation-shared": RESULTS_SHARED,
                    "simple_spread": RESULTS_SPREAD}[args.task]
    if args.frames < 1 or args.seeds < 1:
        parser.error("--frames and --seeds must be >= 1")
    if args.benchmarl_lr is not None and not args.benchmarl_lr > 0:
        parser.error(f"--benchmarl-lr must be > 0, got {args.benchmarl_lr}")
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
                row = (ours_run(algo, seed, args.frames, args.task, args.schedule)
                       if harness == "ours" else benchmarl_run(algo, seed, args.frames,
                                                                args.task, args.benchmarl_lr))
                result["runs"].append(row)
                result["summary"] = summary(result["runs"], harnesses, args.algos)
                args.out.write_text(json.dumps(result, indent=1) + "\n")
                status = (f"trained {row['trained_return']:.3f} "
                          f"random {row['random_return']:.3f}"
                          if "trained_return" in row else f"ERROR {row['error'][:200]}")
                print(f"{harness:9s} {algo:7s} seed {seed}: {status} ({row['wall_s']:.0f} s "
                      f"wall, {row['cpu_s']:.0f} s CPU)", flush=True)
    print_table(result, args.frames, args.seeds, args.out, args.task)
    return result


if __name__ == "__main__":
    main()
