"""Suite definitions: the tasks and algorithms the issue names, one protocol per suite."""

import pytest

from spnpolicy.algos.registry import make_config
from spnpolicy.bench.runner import plan, suite_config
from spnpolicy.bench.suites import ONPOLICY_ALGOS, SUITES, Protocol, Suite, get_suite
from spnpolicy.envs import make_env

ALGOS = ("spn-ac", "meanfield-ac", "reinforce", "iql", "vdn", "qmix", "dcg")


def test_matrix_suite_has_every_game_and_penalty_level():
    suite = get_suite("matrix")
    assert suite.task_names() == ("climbing", "penalty-k0", "penalty-k25", "penalty-k50",
                                  "penalty-k75", "penalty-k100", "coordination", "linear",
                                  "monotonic", "stag_hunt")
    assert suite.task("penalty-k75").env_kwargs == {"k": 75}
    assert suite.algos == ALGOS and suite.seeds == 10


def test_coverage_suites_follow_the_issue():
    learnable = {"reward": "sparse", "layout": "fixed", "layout_seed": 0,
                 "observation": "relative"}
    quick = get_suite("coverage-quick")
    assert quick.tasks[0].env_kwargs == {"num_agents": 3, "grid_size": 6, "max_steps": 50,
                                         **learnable}
    assert quick.seeds == 10 and quick.protocol.total_steps == 100_000
    random = get_suite("coverage-random")
    assert random.tasks[0].env_kwargs == {**quick.tasks[0].env_kwargs, "layout": "random"}
    assert random.algos == ("spn-ac", "vdn", "qmix", "dcg") and random.seeds == 5
    assert random.protocol.total_steps == 1_000_000
    paper = get_suite("coverage-paper")
    assert paper.tasks[0].env_kwargs == {"num_agents": 6, "grid_size": 20, "max_steps": 200,
                                         **learnable}
    assert paper.config == {"factor_graph": "random", "num_factors": 20, "factor_order": 2,
                            "shaping": True, "shaping_form": "progress", "gamma": 0.9}
    assert quick.algos == paper.algos == ALGOS
    small = get_suite("coverage-quick-small")
    assert small.algos == ALGOS and small.seeds == 3  # DESIGN: 3 seeds in quick mode
    assert small.tasks[0].env_kwargs["layout"] == "fixed"
    assert small.protocol.total_steps < quick.protocol.total_steps


@pytest.mark.parametrize("name", ["coverage-quick", "coverage-random", "coverage-quick-small",
                                  "coverage-paper"])
def test_coverage_suites_shape_every_algorithm(tmp_path, name):
    suite = get_suite(name)
    runs = plan(suite, tmp_path)
    assert {run.algo for run in runs} == set(suite.algos)
    assert len(runs) == len(suite.algos) * suite.seeds
    for run in runs:
        config = make_config(run.algo, "coverage", run.config)
        assert config.shaping is True
        if name == "coverage-paper":  # every algorithm, on- and off-policy, takes both
            assert (config.shaping_form, config.gamma) == ("progress", 0.9)


@pytest.mark.parametrize("name, algos", [("lbf", ONPOLICY_ALGOS),
                                         ("mpe-spread", ("masac", "maddpg"))])
def test_return_suites_compare_the_new_baselines(tmp_path, name, algos):
    # no success flag on these tasks: tables and curves report the greedy return
    suite = get_suite(name)
    assert suite.metric == "return_mean"
    assert set(algos) <= set(suite.algos) and {"spn-ac", "vdn"} <= set(suite.algos)
    runs = plan(suite, tmp_path)
    assert len(runs) == len(suite.algos) * suite.seeds
    assert {run.config["total_steps"] for run in runs} == {suite.protocol.total_steps}


@pytest.mark.parametrize("name", list(SUITES))
def test_every_task_makes_its_env(name):
    for task in SUITES[name].tasks:
        try:
            env = make_env(task.env, **task.env_kwargs)
        except ImportError as error:        # an optional extra that is not installed
            pytest.skip(str(error))
        env.close()


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown suite 'nope'; valid: matrix, coordination, coordination-quick, "
                                         "coverage-quick"):
        get_suite("nope")
    with pytest.raises(ValueError, match="unknown task 'penalty' for suite 'matrix'; valid: "
                                         "climbing, penalty-k0"):
        get_suite("matrix").task("penalty")


def test_another_budget_keeps_the_intervals():
    # a run's config must not change when its budget grows, or resuming it is refused: a
    # budget below an interval used to cap it (300 -> checkpoint_interval 300, then 1000)
    protocol = Protocol(total_steps=5_000, eval_interval=250, eval_episodes=8,
                        checkpoint_interval=1_000)
    assert protocol.with_budget(None) is protocol
    assert protocol.with_budget(10_000) == Protocol(10_000, 250, 8, 1_000)
    assert protocol.with_budget(300) == Protocol(300, 250, 8, 1_000)
    assert protocol.with_budget(100) == Protocol(100, 250, 8, 1_000)
    assert protocol.overrides() == {"total_steps": 5_000, "eval_interval": 250,
                                    "eval_episodes": 8, "checkpoint_interval": 1_000}
    with pytest.raises(ValueError, match="total_steps must be an int >= 1, got 0"):
        protocol.with_budget(0)
    with pytest.raises(ValueError, match="eval_episodes must be an int >= 1"):
        Protocol(100, 10, 0, 10)


@pytest.mark.parametrize("n, size", [(16, 16), (32, 24), (64, 32)])
def test_many_agent_coverage_suites(tmp_path, n, size):
    suite = get_suite(f"coverage-{n}")
    fixed, random = suite.tasks
    assert fixed.env_kwargs == {"num_agents": n, "grid_size": size, "max_steps": 4 * size,
                                "reward": "sparse", "layout": "fixed", "layout_seed": 0,
                                "observation": "nearest"}
    assert random.env_kwargs == {**fixed.env_kwargs, "layout": "random"}
    assert set(suite.algos) == {"spn-ac", "meanfield-ac", "vdn", "qmix", "dcg", "ippo", "mappo"}
    for run in plan(suite, tmp_path):
        config = make_config(run.algo, "coverage", run.config)
        assert (config.shaping, config.shaping_form, config.gamma) == (True, "progress", 0.9)
        if hasattr(config, "param_head"):       # spn-ac's family: networks shared by agents
            assert (config.param_head, config.critic_input) == ("agents", "agents")
            # O(n) factors: each agent's 2 nearest others, per state
            assert (config.factor_graph, config.neighbours) == ("nearest", 2)
        elif hasattr(config, "num_factors"):    # dcg acts on a fixed graph: 2 n random pairs
            assert (config.factor_graph, config.num_factors) == ("random", 2 * n)
        if run.algo == "spn-ac":
            assert config.sibling_pairs
    # a full replay of states and per-agent observations (float32) stays under 2.6 GB
    env = make_env("coverage", **fixed.env_kwargs)
    env.reset(seed=0)
    state_dim = env.state().shape[0]
    obs_dim = env.observation_space(env.possible_agents[0]).shape[0]
    env.close()
    assert 4 * (state_dim + n * obs_dim) * suite.config["buffer_size"] < 2.6e9


def test_a_suites_per_algorithm_config_comes_after_its_shared_one_and_before_the_users(
        tmp_path):
    suite = get_suite("coverage-16")
    assert suite_config(suite, "dcg")["factor_graph"] == "random"
    assert suite_config(suite, "spn-ac")["factor_graph"] == "nearest"
    assert "sibling_pairs" not in suite_config(suite, "meanfield-ac")
    runs = plan(suite, tmp_path, algos=["spn-ac", "meanfield-ac"], seeds=1,
                overrides={"factor_graph": "random", "spn-ac:sibling_pairs": "false"})
    configs = {run.algo: make_config(run.algo, "coverage", run.config) for run in runs}
    assert {c.factor_graph for c in configs.values()} == {"random"}
    assert not configs["spn-ac"].sibling_pairs
    with pytest.raises(ValueError, match=r"algo_config names \['iql'\], which are not"):
        Suite("s", "", suite.tasks, ("spn-ac",), 1, suite.protocol,
              algo_config={"iql": {"gamma": 0.5}})


def test_coordination_sizes_grows_the_lift_team(tmp_path):
    suite = get_suite("coordination-sizes")
    assert [task.env_kwargs["num_agents"] for task in suite.tasks] == [4, 6, 8]
    assert all(task.env == "lift" and task.env_kwargs["penalty"] == 0.5 for task in suite.tasks)
    assert "spn-ac" in suite.algos and "meanfield-ac" in suite.algos
    assert suite.config["exploration"] == "shared"
    assert len(plan(suite, tmp_path)) == len(suite.tasks) * len(suite.algos) * suite.seeds


def test_lbf_coop_needs_every_player_and_charges_failed_loads():
    pytest.importorskip("lbforaging", reason="the lbforaging extra is not installed")
    (task,) = get_suite("lbf-coop").tasks
    env = make_env(task.env, **task.env_kwargs)
    try:
        assert env.foraging.force_coop and env.foraging.penalty == 0.5
        assert env.common_reward and len(env.possible_agents) == 3
    finally:
        env.close()
