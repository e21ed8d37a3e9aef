"""spnpolicy.train: the result contract, run directories, errors, exact resumption."""

import json
import warnings

import pytest
import torch

import spnpolicy
from circuits import CircuitDistribution

from tests.run_helpers import assert_same_run

QUICK = dict(total_steps=400, learning_starts=200, eval_interval=200, eval_episodes=2,
             eval_stochastic=False)


def test_result_contract():
    result = spnpolicy.train("spn-ac", "climbing", seed=0, **QUICK)
    assert isinstance(result, spnpolicy.TrainResult)
    assert [h["step"] for h in result.history] == [0, 200, 400]
    for record in result.history:
        assert {"step", "return_mean", "success_rate", "wall_time"} <= set(record)
    assert result.eval is result.history[-1]
    assert "loss_critic" in result.eval and "alpha" in result.eval
    actions = result.agent.act([[1.0], [1.0]], deterministic=True)
    assert actions.shape == (2, 2)
    dist = result.agent.distribution(torch.ones(3, 1))
    assert isinstance(dist, CircuitDistribution) and dist.batch_shape == (3,)
    assert result.config.total_steps == 400 and result.out_dir is None


def test_run_directory(tmp_path):
    result = spnpolicy.train("spn-ac", "coordination", seed=1, out_dir=tmp_path, **QUICK)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["algo"], config["env"], config["seed"]) == ("spn-ac", "coordination", 1)
    assert config["config"]["learning_starts"] == 200
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(result.history))
    assert (tmp_path / "metrics.csv").exists()
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["session"]["step"] == 400


def test_a_run_directory_has_one_writer(tmp_path):
    # a second train on a directory that a live process trains (a --resume started while
    # the first run still ran) wrote both runs into the same files
    import os
    import socket

    from spnpolicy.training.rundir import RunBusyError

    holder = tmp_path / "RUNNING"
    holder.write_text(f"{socket.gethostname()} {os.getppid()}\n")     # a live process
    with pytest.raises(RunBusyError, match=f"being trained by process {os.getppid()}"):
        spnpolicy.train("spn-ac", "coordination", seed=1, out_dir=tmp_path, **QUICK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RUNNING", "checkpoints"]
    holder.write_text(f"{socket.gethostname()} 999999999\n")          # its holder is gone
    spnpolicy.train("spn-ac", "coordination", seed=1, out_dir=tmp_path, **QUICK)
    assert not holder.exists() and (tmp_path / "checkpoints" / "last.pt").exists()


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    """Stop at step 400 (a checkpoint), resume to 800: same history and weights as one run
    to 800. Equality is exact: RNG, optimiser, buffer, envs and targets are restored."""
    config = dict(QUICK, checkpoint_interval=200)
    whole = spnpolicy.train("spn-ac", "penalty", seed=2, out_dir=tmp_path / "a",
                            **dict(config, total_steps=800))
    spnpolicy.train("spn-ac", "penalty", seed=2, out_dir=tmp_path / "b", **config)
    resumed = spnpolicy.train("spn-ac", "penalty", seed=2, out_dir=tmp_path / "b", resume=True,
                              **dict(config, total_steps=800))
    assert_same_run(whole, resumed)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown algorithm 'nope'; valid: spn-ac"):
        spnpolicy.train("nope", "climbing")
    with pytest.raises(ValueError, match="unknown environment 'chess'; valid: coverage"):
        spnpolicy.train("spn-ac", "chess")
    with pytest.raises(ValueError, match="unknown config key.*'learning_rate'"):
        spnpolicy.train("spn-ac", "climbing", learning_rate=1e-3)
    with pytest.raises(ValueError, match="^actor_lr must"):
        spnpolicy.train("spn-ac", "climbing", actor_lr=-1.0)
    with pytest.raises(ValueError, match="^width must"):
        spnpolicy.train("spn-ac", "climbing", width=0)
    with pytest.raises(ValueError, match="unknown argument.*'size'"):
        spnpolicy.train("spn-ac", "coverage", env_kwargs={"size": 3}, total_steps=8)
    with pytest.raises(ValueError, match="seed"):
        spnpolicy.train("spn-ac", "climbing", seed=-1)
    with pytest.raises(ValueError, match="resume=True needs an out_dir"):
        spnpolicy.train("spn-ac", "climbing", resume=True)
    spnpolicy.train("spn-ac", "climbing", out_dir=tmp_path, **QUICK)
    with pytest.raises(ValueError, match="already holds a run"):
        spnpolicy.train("spn-ac", "climbing", out_dir=tmp_path, **QUICK)
    with pytest.raises(ValueError, match="differs in config"):
        spnpolicy.train("spn-ac", "climbing", out_dir=tmp_path, resume=True,
                        **dict(QUICK, actor_lr=0.1))


def test_a_resumed_budget_below_the_steps_done_is_an_error_without_warnings(tmp_path):
    # the saved run keeps the default learning_starts (200 on matrix games): a budget of 100
    # is below it, but what the user must hear is that 400 steps are already done
    spnpolicy.train("spn-ac", "climbing", out_dir=tmp_path, total_steps=400, eval_interval=400,
                    eval_episodes=1, policy_hidden=(8,), critic_hidden=(8,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="total_steps=100 is below the 400 env steps"):
            spnpolicy.train("spn-ac", "climbing", out_dir=tmp_path, resume=True,
                            total_steps=100)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("kind", ["builder", "circuit"])
def test_own_policy_structure_trains_and_a_run_directory_names_it(tmp_path, kind):
    from circuits.structures import selective
    policy = (lambda n, k: selective(n, k, 4)) if kind == "builder" else selective(2, 3, 4)
    short = dict(seed=0, total_steps=200, learning_starts=100, eval_interval=200, policy=policy)
    result = spnpolicy.train("spn-ac", "climbing", **short)
    assert isinstance(result.agent.distribution([[1.0]]), CircuitDistribution)
    with pytest.raises(ValueError, match=r"policy=.*cannot be saved.*register_policy"):
        spnpolicy.train("spn-ac", "climbing", out_dir=tmp_path / "run", **short)
    assert not (tmp_path / "run").exists()
