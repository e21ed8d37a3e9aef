"""The ``start_on_goals`` config: a start-state curriculum for the training envs only."""

import pytest

import spnpolicy
from spnpolicy.algos.config import RunConfig

ENV = dict(num_agents=2, grid_size=4, max_steps=4)


def run(algo: str, share: float):
    extra = dict(learning_starts=2000) if algo == "vdn" else {}   # vdn: uniform actions only
    return spnpolicy.train(algo, "coverage", seed=3, total_steps=2000, env_kwargs=ENV,
                           start_on_goals=share, eval_episodes=16, eval_interval=10_000,
                           log_interval=1000, progress=False, verbose=False, **extra)


@pytest.mark.parametrize("algo", ["vdn", "ippo"])   # the off-policy and on-policy loops
def test_training_envs_start_on_goals_and_evaluation_does_not(algo):
    plain, curriculum = run(algo, 0.0), run(algo, 1.0)
    ignore = {"wall_time", "steps_per_second"}
    first = [{k: v for k, v in r.history[0].items() if k not in ignore}
             for r in (plain, curriculum)]
    assert first[0]["step"] == 0 and first[0] == first[1]    # same untrained agent, same starts

    def training_success(result):
        episodes = sum(r["episodes"] for r in result.training)
        return sum(r["success_rate"] * r["episodes"] for r in result.training) / episodes

    # 2 agents, each on a goal with probability u ~ U(0, 1): both start covered in a third of
    # the episodes, against about 1 in 100 under uniform starts on 16 cells
    assert training_success(curriculum) > training_success(plain) + 0.05


def test_training_env_kwargs_add_the_share_only_when_set():
    assert RunConfig().training_env_kwargs({"a": 1}) == {"a": 1}
    assert RunConfig(start_on_goals=0.5).training_env_kwargs({"a": 1}) == {
        "a": 1, "start_on_goals": 0.5}
    with pytest.raises(ValueError, match="start_on_goals"):
        RunConfig(start_on_goals=1.5)


def test_an_env_without_goals_refuses_the_share_before_training():
    with pytest.raises(ValueError, match=r"start_on_goals=0.5 \(config\) needs an env with goals"):
        spnpolicy.train("vdn", "predator-prey", total_steps=100, start_on_goals=0.5,
                        progress=False, verbose=False)
