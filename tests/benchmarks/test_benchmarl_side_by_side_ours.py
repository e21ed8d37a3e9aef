"""benchmarks/benchmarl_side_by_side.py, our harness: a tiny run's row, and its evaluation is
BenchMARL's (the same test episodes, the same moves)."""

import json

import numpy as np
import pytest

pytest.importorskip("vmas")
pytest.importorskip("benchmarl")

import torch  # noqa: E402

from tests.run_helpers import load_script  # noqa: E402


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/benchmarl_side_by_side.py")


def test_ours_harness_row_has_the_returns_and_benchmarls_frames(script, tmp_path):
    out = tmp_path / "side_by_side.json"
    threads = torch.get_num_threads()
    try:
        result = script.main(["--harness", "ours", "--algos", "vdn", "--frames", "300",
                              "--seeds", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    row, = result["runs"]
    assert "error" not in row, row.get("traceback")
    assert (row["harness"], row["algo"], row["seed"], row["frames"]) == ("ours", "vdn", 0, 300)
    # BenchMARL collects whole iterations of 500 frames: ours trains on as many env frames
    assert row["total_frames"] == result["settings"]["collected_frames"] == 500
    assert np.isfinite(row["trained_return"]) and np.isfinite(row["random_return"])
    assert result["summary"]["ours"]["vdn"]["runs"] == 1
    ours = result["settings"]["ours"]
    assert ours["unmatched_task_keys"] == []
    task = result["settings"]["benchmarl_task_config"]
    assert ours["env_kwargs"] == task | {"diagonal_moves": True}
    assert ours["configs"]["vdn"]["num_envs"] == 10 and ours["configs"]["vdn"]["lr"] == 1e-3
    assert ours["configs"]["vdn"]["total_steps"] == 500


def test_ours_evaluation_replays_benchmarls_test_episodes(script, tmp_path):
    """Random actions score the same in our evaluation env as in a BenchMARL experiment's
    test env: the same env, seeding and reading."""
    experiment = script.navigation_experiment(
        500, seed=1, folder=str(tmp_path), algorithm_config=script.algorithm_config("vdn"),
        config=script.experiment_config(500, str(tmp_path)))
    evaluation = script.evaluation_env(seed=1)
    assert script.team_return(evaluation) == script.team_return(experiment)


def test_our_moves_are_benchmarls_moves(script):
    """Each of our 9 moves, mapped to VMAS' flat index, gives the velocity it gives in our
    env; a greedy agent on global states reads the state our env would give."""
    from spnpolicy.envs.vmas_vec import VmasVecEnv
    kwargs, _ = script.ours_env_kwargs()
    ours = VmasVecEnv(9, "navigation", seed=0, **kwargs)
    ours.reset()
    ours_vel = ours.step(np.repeat(np.arange(9)[:, None], 2, axis=1))[0][:, :, 2:4]
    evaluation = script.evaluation_env(seed=0)
    env = evaluation.test_env
    td = env.reset()
    td["agents", "action"] = script._vmas_action_table().repeat(4)[:32, None].repeat(1, 2)
    vel = env.step(td)["next", "agents", "observation"][:9, :, 2:4]
    np.testing.assert_allclose(vel.numpy(), ours_vel, atol=1e-6)

    class StateAgent:
        input_shape = (ours.state_dim,)

        def act(self, state):
            assert state.shape == (32, ours.state_dim)
            return torch.zeros(32, 2, dtype=torch.long)

    policy = script.greedy_policy(StateAgent(), evaluation)
    assert (policy(env.reset())["agents", "action"] == 0).all()
