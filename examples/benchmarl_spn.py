"""spn-ac inside BenchMARL: its own Experiment, on a VMAS task, with our algorithm.

Run: .venv/bin/python examples/benchmarl_spn.py      # 20,000 frames of VMAS navigation

Needs the ``benchmarl`` extra (``SPNPOLICY_EXTRAS=benchmarl bash scripts/setup.sh``). Two
agents must each reach their own goal (VMAS ``navigation``, 9 discrete moves: still, the 4
sides and the 4 diagonals; episodes of 50 steps); the reward is the decrease of the distance
to the goal, so a policy that walks at random drifts away and scores below 0. The script
prints the greedy return of the trained joint policy beside a uniformly random policy's, on
the same 32 episodes.
"""

from __future__ import annotations

import tempfile

import torch
from benchmarl.environments import VmasTask
from benchmarl.experiment import Experiment, ExperimentConfig
from benchmarl.models.mlp import MlpConfig
from torchrl.envs.utils import ExplorationType, set_exploration_type

from spnpolicy.integrations.benchmarl import SpnAcAlgorithmConfig

EPISODE_STEPS = 50


def navigation_experiment(max_frames: int, seed: int, folder: str, model_config=None,
                          algorithm_config=None, config=None) -> Experiment:
    """BenchMARL's Experiment of spn-ac (or ``algorithm_config``) on 2-agent VMAS navigation
    (``config``, default :func:`experiment_config`; BenchMARL's MLP model config unless
    ``model_config``). spn-ac's settings are its VMAS defaults: the policy and the critics
    read each agent's observation through networks shared by the agents."""
    task = VmasTask.NAVIGATION.get_from_yaml()
    task.config.update(n_agents=2, max_steps=EPISODE_STEPS)
    algorithm_config = algorithm_config or SpnAcAlgorithmConfig.for_family("vmas")
    return Experiment(task=task, algorithm_config=algorithm_config,
                      model_config=model_config or MlpConfig.get_from_yaml(), seed=seed,
                      config=config or experiment_config(max_frames, folder))


def experiment_config(max_frames: int, folder: str) -> ExperimentConfig:
    """BenchMARL's defaults, but 500 frames (10 envs) per iteration, 50 gradient steps of 128
    transitions each, learning rate 1e-3, no loggers, no periodic evaluation; files under
    ``folder``."""
    config = ExperimentConfig.get_from_yaml()
    config.max_n_frames = max_frames
    config.off_policy_collected_frames_per_batch = 500
    config.off_policy_n_envs_per_worker = 10
    config.off_policy_n_optimizer_steps = 50
    config.lr = 1e-3
    config.evaluation, config.evaluation_episodes = False, 32
    config.loggers, config.create_json, config.render = [], False, False
    config.save_folder = folder
    return config


def team_return(experiment: Experiment, policy=None, seed: int = 123) -> float:
    """Mean over ``evaluation_episodes`` episodes of the team's return (the agents' mean
    reward, summed over the episode) on the experiment's test env, seeded by ``seed``:
    ``policy`` acting greedily (its mode), or uniformly random actions when None."""
    torch.manual_seed(seed)
    experiment.test_env.set_seed(seed)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = experiment.test_env.rollout(EPISODE_STEPS, policy=policy,
                                              break_when_any_done=False)
    group = next(iter(experiment.group_map))
    reward = rollout["next", group, "reward"]                      # [E, T, n, 1]
    return reward.mean((-2, -1)).sum(-1).mean().item()


if __name__ == "__main__":
    torch.set_num_threads(1)          # small networks: more threads only contend for the CPU
    with tempfile.TemporaryDirectory() as folder:
        experiment = navigation_experiment(20_000, seed=0, folder=folder)
        random_return = team_return(experiment)
        experiment.run()
        trained_return = team_return(experiment, experiment.policy)
        print(f"greedy return after 20,000 frames: {trained_return:.3f} "
              f"(uniformly random actions: {random_return:.3f})")
