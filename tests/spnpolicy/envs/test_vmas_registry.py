"""The VMAS tasks' names, arguments and missing-extra message: what works without vmas."""

import sys

import pytest

import spnpolicy
from spnpolicy.envs.registry import ENV_DESCRIPTIONS, ENV_NAMES, action_names
from spnpolicy.training.vec_env import make_vec_env

VMAS_NAMES = ("vmas/dispersion", "vmas/navigation", "vmas/transport")


def test_tasks_are_listed_and_described():
    assert set(VMAS_NAMES) <= set(ENV_NAMES)
    for name in VMAS_NAMES:
        assert "extra vmas" in ENV_DESCRIPTIONS[name] and "success" in ENV_DESCRIPTIONS[name]
    from spnpolicy.cli import _env_listing
    assert all(name in _env_listing() for name in VMAS_NAMES)


@pytest.mark.parametrize("make", [lambda: spnpolicy.make_env("vmas/dispersion"),
                                  lambda: make_vec_env("vmas/dispersion", 2, seed=0)],
                         ids=["make_env", "make_vec_env"])
def test_missing_extra_says_what_to_install(monkeypatch, make):
    monkeypatch.setitem(sys.modules, "vmas", None)
    with pytest.raises(ImportError, match=r"vmas/dispersion needs the vmas package: "
                                          r"pip install 'spnpolicy\[vmas\]'"):
        make()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_agents": 0}, "n_agents must be an integer >= 1, got 0"),
    ({"max_steps": 2.5}, "max_steps must be an integer >= 1"),
    ({"diagonal_moves": "yes"}, "diagonal_moves must be True or False"),
    ({"num_food": 3}, r"unknown argument\(s\) \['num_food'\] for vmas/dispersion; valid: "
                      r"\('n_agents', 'max_steps', 'diagonal_moves', 'n_food'"),
    ({"seed": 3}, r"unknown argument\(s\) \['seed'\]"),
])
def test_bad_arguments_are_named_before_vmas_is_needed(monkeypatch, kwargs, message):
    monkeypatch.setitem(sys.modules, "vmas", None)
    with pytest.raises(ValueError, match=message):
        spnpolicy.make_env("vmas/dispersion", **kwargs)


def test_unknown_task_and_reserved_prefix():
    with pytest.raises(ValueError, match="unknown env 'vmas/balance'"):
        spnpolicy.make_env("vmas/balance")
    with pytest.raises(ValueError, match="built-in environment name"):
        spnpolicy.register_env("vmas/mine", lambda: None)


def test_action_names():
    assert action_names("vmas/dispersion", 5) == ("noop", "left", "right", "down", "up")
    assert action_names("vmas/navigation", 9)[5:] == ("left-down", "left-up", "right-down",
                                                      "right-up")


def test_dispersion_suite_compares_five_algorithms_at_4_and_16_agents(tmp_path):
    from spnpolicy.algos.registry import make_config
    from spnpolicy.bench.runner import plan
    from spnpolicy.bench.suites import get_suite

    suite = get_suite("vmas-dispersion")
    assert [(t.name, t.env, t.env_kwargs) for t in suite.tasks] == [
        ("dispersion-4", "vmas/dispersion", {"n_agents": 4}),
        ("dispersion-16", "vmas/dispersion", {"n_agents": 16})]
    assert suite.algos == ("spn-ac", "meanfield-ac", "vdn", "qmix", "mappo")
    assert suite.metric == "return_mean"
    runs = plan(suite, tmp_path)
    assert len(runs) == 2 * 5 * suite.seeds
    for run in runs:
        config = make_config(run.algo, run.task.env, run.config)
        assert config.total_steps == suite.protocol.total_steps


@pytest.mark.parametrize("task", VMAS_NAMES)
def test_spn_ac_family_reads_the_agents_observations_on_vmas(task):
    """VMAS states hold absolute positions, the observations relative ones: the circuit
    policies read the observations through the agents head, the critics through the agents
    critics; the softmax keeps its state head; coverage keeps the state."""
    from spnpolicy.algos.registry import make_config

    for algo in ("spn-ac", "meanfield-ac", "reinforce"):
        config = make_config(algo, task)
        assert (config.param_head, config.critic_input) == ("agents", "agents")
    config = make_config("exact-softmax", task)
    assert (config.param_head, config.critic_input) == ("flat", "agents")
    config = make_config("spn-ac", "coverage")
    assert (config.param_head, config.critic_input) == ("flat", "state")
