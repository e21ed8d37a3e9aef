"""benchmarks/benchmarl_side_by_side.py, our harness: a tiny run's row, and its evaluation is
BenchMARL's (the same test episodes, the same moves); on VMAS navigation and on MPE
simple_spread (BenchMARL's PettingZoo task with its env from mpe2)."""

import json

import numpy as np
import pytest

pytest.importorskip("benchmarl")

import torch  # noqa: E402

from tests.run_helpers import load_script  # noqa: E402


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/benchmarl_side_by_side.py")


@pytest.fixture
def vmas():
    return pytest.importorskip("vmas")


@pytest.fixture
def mpe2():
    return pytest.importorskip("mpe2")


def test_ours_harness_row_has_the_returns_and_benchmarls_frames(script, vmas, tmp_path):
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


def test_ours_evaluation_replays_benchmarls_test_episodes(script, vmas, tmp_path):
    """Random actions score the same in our evaluation env as in a BenchMARL experiment's
    test env: the same env, seeding and reading."""
    experiment = script.navigation_experiment(
        500, seed=1, folder=str(tmp_path), algorithm_config=script.algorithm_config("vdn"),
        config=script.experiment_config(500, str(tmp_path)))
    evaluation = script.evaluation_env(seed=1)
    assert script.team_return(evaluation) == script.team_return(experiment)


def test_our_moves_are_benchmarls_moves(script, vmas):
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



def test_navigation_shared_gives_both_harnesses_one_reward(script, vmas, tmp_path):
    """navigation-shared: BenchMARL's task and our env both have VMAS' shared reward, every
    agent gets the same reward in ours, and a BenchMARL experiment's test env gives its agents
    one reward too (so per-agent and team learners see the same signal)."""
    task = script.benchmarl_task("navigation-shared")
    assert task.config["shared_rew"] is True
    assert script.benchmarl_task("navigation").config["shared_rew"] is False
    kwargs, unmatched = script.ours_env_kwargs("navigation-shared")
    assert kwargs["shared_rew"] is True and unmatched == []
    assert script.NOT_MATCHED_BY_TASK["navigation-shared"] == [
        line for line in script.NOT_MATCHED if not line.startswith("learning signal")]
    from spnpolicy.envs.vmas_vec import VmasVecEnv
    ours = VmasVecEnv(8, "navigation", seed=0, **kwargs)
    ours.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        reward = ours.step(rng.integers(0, 9, (8, 2)))[4]["agent_rewards"]
        np.testing.assert_array_equal(reward[:, 0], reward[:, 1])
    experiment = script.task_experiment(
        "navigation-shared", 500, seed=1, folder=str(tmp_path),
        algorithm_config=script.algorithm_config("vdn"),
        config=script.experiment_config(500, str(tmp_path)))
    assert experiment.task.config["shared_rew"] is True
    rollout = experiment.test_env.rollout(20, break_when_any_done=False)
    reward = rollout["next", "agents", "reward"]                     # [E, T, n, 1]
    torch.testing.assert_close(reward[..., 0, :], reward[..., 1, :])
    assert script.team_return(script.evaluation_env(1, "navigation-shared")) == \
        script.task_return(experiment, task="navigation-shared")

# -- MPE simple_spread --------------------------------------------------------------------

SPREAD = {"task": "simple_spread_v3", "max_cycles": 100, "local_ratio": 0.5, "N": 3}


def test_simple_spread_rows_of_both_harnesses(script, mpe2, tmp_path, monkeypatch):
    """A tiny run in each harness on simple_spread: equal frames, BenchMARL's task config,
    and the same random return (the same test episodes) in both rows."""
    monkeypatch.setattr(script, "EVAL_EPISODES", 2)   # the test's time: 2 of the 32 episodes
    out = tmp_path / "spread.json"
    threads = torch.get_num_threads()
    try:
        result = script.main(["--task", "simple_spread", "--harness", "both", "--algos", "vdn",
                              "--frames", "300", "--seeds", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["runs"]
    assert [(r["harness"], r["algo"], r["seed"], r["frames"]) for r in rows] == \
        [("benchmarl", "vdn", 0, 300), ("ours", "vdn", 0, 300)]
    for row in rows:
        assert "error" not in row, row.get("traceback")
        assert row["total_frames"] == result["settings"]["collected_frames"] == 500
        assert np.isfinite(row["trained_return"]) and np.isfinite(row["random_return"])
    assert rows[0]["random_return"] == rows[1]["random_return"]
    assert [result["summary"][h]["vdn"]["runs"] for h in ("benchmarl", "ours")] == [1, 1]
    settings = result["settings"]
    assert settings["benchmarl_task_config"] == SPREAD
    assert (settings["n_agents"], settings["episode_steps"]) == (3, 100)
    assert settings["evaluation"] | {"env": None, "return": None} == {
        "episodes": 2, "steps": 100, "seed": 123, "env": None, "return": None}
    ours = settings["ours"]
    assert ours["env"] == "mpe/simple_spread" and ours["unmatched_task_keys"] == []
    assert ours["env_kwargs"] == {k: v for k, v in SPREAD.items() if k != "task"}
    assert ours["not_matched"] == script.NOT_MATCHED_SPREAD
    assert ours["configs"]["vdn"]["num_envs"] == 10 and ours["configs"]["vdn"]["lr"] == 1e-3
    assert ours["configs"]["vdn"]["total_steps"] == 500
    assert settings["benchmarl"]["prefer_continuous_actions"] is False


def test_ours_simple_spread_evaluation_replays_benchmarls_test_episodes(script, mpe2, tmp_path,
                                                                      monkeypatch):
    """Random actions score the same in our evaluation env as in a BenchMARL experiment's
    test env: the same env, seeding and reading (the episodes follow one another in one env:
    8 of them check the chain in a quarter of the time of 32)."""
    monkeypatch.setattr(script, "EVAL_EPISODES", 8)
    experiment = script.task_experiment(
        "simple_spread", 500, seed=1, folder=str(tmp_path),
        algorithm_config=script.algorithm_config("vdn"),
        config=script.experiment_config(500, str(tmp_path)))
    assert experiment.max_steps == 100 and experiment.group_map == {
        "agent": ["agent_0", "agent_1", "agent_2"]}
    evaluation = script.evaluation_env(seed=1, task="simple_spread")
    random_return = script.task_return(evaluation, task="simple_spread")
    assert random_return == script.task_return(experiment, task="simple_spread")
    assert random_return < 0


def test_simple_spread_env_is_ours_step_for_step(script, mpe2):
    """BenchMARL's simple_spread env (from mpe2) and ours, reset with one seed and given the
    same action indices, give the same observations, state and rewards: no translation of
    actions, our global state is the env's ``state``; the greedy policy gives our agent that
    state (or the observations) and plays its actions as they are."""
    from spnpolicy.envs.registry import make_env
    from spnpolicy.training.observations import global_state
    kwargs, _ = script.ours_env_kwargs("simple_spread")
    ours = make_env("mpe/simple_spread", **kwargs)
    agents = list(ours.possible_agents)
    evaluation = script.evaluation_env(seed=0, task="simple_spread")
    env = evaluation.test_env
    assert evaluation.group_map == {"agent": agents}
    observations, _ = ours.reset(seed=7)
    td = env.reset(seed=7)
    rng = np.random.default_rng(0)
    for step in range(12):
        obs = np.stack([observations[a] for a in agents])
        np.testing.assert_array_equal(td["agent", "observation"].numpy(), obs)
        np.testing.assert_array_equal(td["state"].numpy(), global_state(ours, observations))
        actions = torch.as_tensor(rng.integers(0, 5, size=3))
        reads_state = step % 2 == 0
        expected = td["state"] if reads_state else td["agent", "observation"]

        class Agent:
            input_shape = (54,) if reads_state else (3, 18)

            def act(self, x):
                assert torch.equal(x, expected[None])
                return actions[None]

        td = script.greedy_policy(Agent(), evaluation)(td)
        assert torch.equal(td["agent", "action"], actions)
        out = env.step(td)
        observations, rewards, _, _, _ = ours.step(dict(zip(agents, actions.tolist())))
        np.testing.assert_allclose(out["next", "agent", "reward"][:, 0].numpy(),
                                   [rewards[a] for a in agents], rtol=1e-6)
        td = env.step_mdp(out)


def test_mpe2_task_is_benchmarls_pettingzoo_task(mpe2):
    """``Mpe2PettingZooClass``: BenchMARL's SIMPLE_SPREAD (name, yaml config, specs, group
    map, max_steps) with a working env from mpe2, discrete and continuous; it pickles (an
    Experiment pickles its task)."""
    import pickle

    from benchmarl.environments import PettingZooTask

    from spnpolicy.integrations.benchmarl import Mpe2PettingZooClass
    task = Mpe2PettingZooClass.from_task(PettingZooTask.SIMPLE_SPREAD)
    assert (task.name, task.config) == ("SIMPLE_SPREAD", SPREAD)
    assert pickle.loads(pickle.dumps(task)) == task
    env = task.get_env_fun(num_envs=1, continuous_actions=False, seed=0, device="cpu")()
    assert task.group_map(env) == {"agent": ["agent_0", "agent_1", "agent_2"]}
    assert task.max_steps(env) == 100 and task.action_mask_spec(env) is None
    assert task.observation_spec(env)["agent", "observation"].shape == (3, 18)
    assert task.state_spec(env)["state"].shape == (54,)
    assert task.action_spec(env)["agent", "action"].space.n == 5
    rollout = env.rollout(100, break_when_any_done=False)
    assert rollout["next", "truncated"][-1].all() and not rollout["next", "terminated"].any()
    continuous = task.get_env_fun(num_envs=1, continuous_actions=True, seed=0, device="cpu")()
    assert task.action_spec(continuous)["agent", "action"].shape == (3, 5)


@pytest.mark.parametrize("algo", ["mappo", "vdn", "qmix", "masac", "spn-ac"])
def test_matched_schedule_is_benchmarls_as_our_fields(script, algo):
    """--schedule matched: every field it sets is one of the algorithm's config fields, the
    config accepts it, and the off-policy learners update from BenchMARL's first collection
    on, one gradient step per 10 frames; MAPPO collects BenchMARL's 500 frames per
    rollout."""
    from spnpolicy.algos.registry import make_config

    frames = 20_000
    own = script.ours_overrides(algo, frames)
    matched = script.ours_overrides(algo, frames, "matched")
    config = make_config(algo, "vmas/navigation", matched | {"total_steps": frames})
    assert set(own) < set(matched)
    if algo == "mappo":
        assert config.rollout_steps * config.num_envs == 500
        assert (config.epochs, config.minibatches) == (12, 4)
    else:
        assert (config.learning_starts, config.update_every, config.gradient_steps,
                config.num_envs, config.batch_size) == (500, 1, 1, 10, 128)
    if algo in ("vdn", "qmix"):
        assert (config.epsilon_start, config.epsilon_finish) == (0.8, 0.01)
        assert config.epsilon_anneal_steps == frames // 3
    assert config.max_grad_norm == 5.0 and config.gamma == 0.99


def test_benchmarl_lr_sets_every_optimisers_rate_and_is_checked(script, capsys):
    """--benchmarl-lr reaches BenchMARL's ExperimentConfig (default: the example's 1e-3);
    a rate <= 0 is refused in one line naming the option."""
    assert script.experiment_config(500, "/tmp").lr == 1e-3
    assert script.experiment_config(500, "/tmp", 5e-5).lr == 5e-5
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--benchmarl-lr", "0", "--seeds", "1"])
    assert exit_info.value.code == 2
    assert "--benchmarl-lr must be > 0, got 0.0" in capsys.readouterr().err


def test_spn_ac_reads_in_benchmarls_harness_what_it_reads_in_ours(script):
    """On VMAS tasks our spn-ac's defaults read the agents' observations (agents head,
    agents critics); the BenchMARL harness's spn-ac is built the same; on simple_spread both
    read the concatenated observations."""
    from spnpolicy.algos.registry import make_config
    for task in ("navigation", "navigation-shared", "simple_spread"):
        ours = make_config("spn-ac", script.OURS_ENVS[task], {})
        theirs = script.algorithm_config("spn-ac", task)
        assert (theirs.param_head, theirs.critic_input) == (ours.param_head, ours.critic_input)
    assert script.algorithm_config("spn-ac").param_head == "agents"
    assert script.algorithm_config("spn-ac", "simple_spread").param_head == "flat"
