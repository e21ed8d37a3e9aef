"""Every on-policy algorithm learns the coordination game with its defaults, validates its
config, and its trained agent acts."""

import numpy as np
import pytest

import spnpolicy
from spnpolicy.algos.registry import make_config

ONPOLICY = ["ia2c", "maa2c", "ippo", "mappo", "coma", "pac", "dpo", "mdpo"]


@pytest.mark.parametrize("algo", ONPOLICY)
def test_solves_coordination_with_defaults(algo):
    """[[0, -5], [-5, 10]]: the optimum (1, 1) pays 10; greedy evaluation at the end."""
    result = spnpolicy.train(algo, "coordination", seed=0)
    assert result.eval["return_mean"] == 10.0
    assert result.history[-1]["step"] == 2_000
    assert result.agent.act(np.ones((1, 2, 1), np.float32)).tolist() == [[1, 1]]
    assert result.agent.act(np.ones((2, 1), np.float32), deterministic=False).shape == (2,)


def test_pac_solves_climbing():
    """The optimistic critic selects climbing's optimum (0, 0), payoff 11, which the other
    actor-critics miss (Christianos et al. 2023)."""
    result = spnpolicy.train("pac", "climbing", seed=0)
    assert result.eval["return_mean"] == 11.0


@pytest.mark.parametrize("algo", ONPOLICY)
@pytest.mark.parametrize("key, value", [("rollout_steps", 0), ("gamma", 1.5), ("returns", "td"),
                                        ("q_nstep", 0), ("hidden", (0,)), ("entropy_coef", -1.0),
                                        ("tau", 0.0), ("share_parameters", "yes")])
def test_bad_config_values_name_the_field(algo, key, value):
    with pytest.raises(ValueError, match=key):
        make_config(algo, "coordination", {key: value})


@pytest.mark.parametrize("algo, key, value", [
    ("mappo", "epochs", 0), ("mappo", "minibatches", 0), ("mappo", "clip", 0.0),
    ("pac", "entropy_start", -0.1), ("pac", "entropy_anneal_fraction", 0.0),
    ("dpo", "kl_target", 0.0), ("dpo", "beta_factor", 0.5), ("dpo", "beta_min", 1e5),
    ("mdpo", "epochs", 1.5)])
def test_bad_algorithm_values_name_the_field(algo, key, value):
    with pytest.raises(ValueError, match=key):
        make_config(algo, "coordination", {key: value})


@pytest.mark.parametrize("algo, critic", [("ia2c", "obs"), ("maa2c", "state"),
                                          ("ippo", "obs"), ("mappo", "state"),
                                          ("coma", "state"), ("pac", "state")])
def test_critic_input_defines_the_algorithm(algo, critic):
    assert make_config(algo, "climbing").critic_input == critic
    other = "state" if critic == "obs" else "obs"
    with pytest.raises(ValueError, match="critic_input"):
        make_config(algo, "climbing", {"critic_input": other})


def test_agent_act_rejects_bad_shapes():
    result = spnpolicy.train("ia2c", "coordination", seed=0, total_steps=16, eval_episodes=2)
    with pytest.raises(ValueError, match=r"\[B, 2, 1\]"):
        result.agent.act(np.zeros((3, 4)))


@pytest.mark.parametrize("algo", ["mappo", "pac"])
def test_trained_agent_loads_from_its_run_directory(tmp_path, algo):
    """``inference.load_agent`` rebuilds the agent through the registry entry's load_agent;
    it acts as the trained one. A checkpoint of other networks is refused by name."""
    from spnpolicy.algos.onpolicy_common import agent_from_run
    from spnpolicy.inference import load_agent
    from spnpolicy.training.rundir import RunDir

    result = spnpolicy.train(algo, "coverage", seed=0, total_steps=64, num_envs=4,
                             eval_episodes=2, out_dir=tmp_path / "run", hidden=(8,),
                             env_kwargs={"num_agents": 2, "grid_size": 4, "max_steps": 5})
    agent = load_agent(tmp_path / "run")
    obs = np.random.default_rng(0).random((5, 2, result.agent.obs_dim)).astype(np.float32)
    assert agent.act(obs).tolist() == result.agent.act(obs).tolist()
    run = RunDir(tmp_path / "run")
    saved = run.read_config()
    with pytest.raises(ValueError, match=algo):
        agent_from_run(dict(saved, config=dict(saved["config"], hidden=[4])),
                       run.load_checkpoint())
