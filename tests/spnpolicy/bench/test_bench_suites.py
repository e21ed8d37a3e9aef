"""Suite definitions: the tasks and algorithms the issue names, one protocol per suite."""

import pytest

from spnpolicy.algos.registry import make_config
from spnpolicy.bench.runner import plan
from spnpolicy.bench.suites import SUITES, Protocol, get_suite
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
    quick = get_suite("coverage-quick").tasks[0]
    assert quick.env_kwargs == {"num_agents": 3, "grid_size": 6, "max_steps": 50,
                                "reward": "sparse"}
    paper = get_suite("coverage-paper")
    assert paper.tasks[0].env_kwargs == {"num_agents": 6, "grid_size": 20, "max_steps": 200,
                                         "reward": "sparse"}
    assert paper.config == {"factor_graph": "random", "num_factors": 20, "factor_order": 2}
    assert get_suite("coverage-quick").algos == paper.algos == ALGOS
    small = get_suite("coverage-quick-small")
    assert small.algos == ALGOS and small.seeds == 3  # DESIGN: 3 seeds in quick mode
    assert small.protocol.total_steps < get_suite("coverage-quick").protocol.total_steps


def test_hindsight_suite_is_coverage_quick_with_relabelling_for_everyone(tmp_path):
    suite, quick = get_suite("coverage-quick-hindsight"), get_suite("coverage-quick")
    assert suite.tasks == quick.tasks and suite.algos == ALGOS
    runs = plan(suite, tmp_path)
    assert {run.algo for run in runs} == set(ALGOS) and len(runs) == 7 * suite.seeds
    for run in runs:
        assert run.config["hindsight"] is True
        assert make_config(run.algo, "coverage", run.config).hindsight is True
    assert all("hindsight" not in run.config for run in plan(quick, tmp_path))


@pytest.mark.parametrize("name", list(SUITES))
def test_every_task_makes_its_env(name):
    for task in SUITES[name].tasks:
        make_env(task.env, **task.env_kwargs).close()


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown suite 'nope'; valid: matrix, coverage-quick"):
        get_suite("nope")
    with pytest.raises(ValueError, match="unknown task 'penalty' for suite 'matrix'; valid: "
                                         "climbing, penalty-k0"):
        get_suite("matrix").task("penalty")


def test_a_smaller_budget_caps_the_intervals_only():
    protocol = Protocol(total_steps=5_000, eval_interval=250, eval_episodes=8,
                        checkpoint_interval=1_000)
    assert protocol.with_budget(None) is protocol
    assert protocol.with_budget(10_000) == Protocol(10_000, 250, 8, 1_000)
    assert protocol.with_budget(300) == Protocol(300, 250, 8, 300)
    assert protocol.overrides() == {"total_steps": 5_000, "eval_interval": 250,
                                    "eval_episodes": 8, "checkpoint_interval": 1_000}
    with pytest.raises(ValueError, match="total_steps must be an int >= 1, got 0"):
        protocol.with_budget(0)
    with pytest.raises(ValueError, match="eval_episodes must be an int >= 1"):
        Protocol(100, 10, 0, 10)
