"""BenchMARL's MAPPO or QMIX on simple_spread, trained as in the side by side: the greedy
return on the 32 test episodes, then on the first 8 greedy and sampled (the algorithm's own
exploration), and the greedy actions' counts over those 8.

    python benchmarks/results/benchmarl-side-by-side/spread_diag.py ALGO SEED FRAMES
"""

import collections
import sys
import tempfile
from pathlib import Path

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import benchmarl_side_by_side as side  # noqa: E402

EPISODES = 8


def main(algo: str, seed: int, frames: int) -> None:
    torch.set_num_threads(1)
    config = side.algorithm_config(algo, "simple_spread")
    with tempfile.TemporaryDirectory() as folder:
        experiment = side.task_experiment("simple_spread", frames, seed, folder, config,
                                          side.experiment_config(frames, folder))
        experiment.run()
        greedy = side.task_return(experiment, experiment.policy, task="simple_spread")
        env, group = experiment.test_env, next(iter(experiment.group_map))
        counts, returns = collections.Counter(), {}
        for mode in (ExplorationType.DETERMINISTIC, ExplorationType.RANDOM):
            torch.manual_seed(side.EVAL_SEED)
            env.set_seed(side.EVAL_SEED)
            total = 0.0
            with set_exploration_type(mode), torch.no_grad():
                for _ in range(EPISODES):
                    td = env.rollout(side.episode_steps("simple_spread"),
                                     policy=experiment.policy, break_when_any_done=True)
                    total += td["next", group, "reward"].mean((-2, -1)).sum().item()
                    if mode == ExplorationType.DETERMINISTIC:
                        counts.update(td[group, "action"].flatten().tolist())
            returns[mode.name] = total / EPISODES
    print(f"{algo} seed {seed}: greedy return (32 episodes) {greedy:.1f}; first {EPISODES}: "
          f"greedy {returns['DETERMINISTIC']:.1f}, sampled {returns['RANDOM']:.1f}; greedy "
          f"actions {sorted(counts.items())}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
