"""``train(init_from=RUN)``: a new run that starts with another run's learner."""

import json
import warnings

import pytest
import torch

import spnpolicy
from spnpolicy.cli import main
from spnpolicy.inference import load_agent

OFF = dict(num_envs=4, learning_starts=32, batch_size=16, checkpoint_interval=96,
           eval_interval=96, eval_episodes=4, policy_hidden=(16,), critic_hidden=(16,),
           width=4)
ON = dict(num_envs=4, rollout_steps=5, eval_interval=120, checkpoint_interval=120,
          eval_episodes=4, hidden=(16,), critic_hidden=(16,))


def _adam_steps(path, loop_key):
    """Every Adam parameter state's ``step`` in a run's last checkpoint, in order."""
    payload = torch.load(path / "checkpoints" / "last.pt", weights_only=True)
    learner = payload[loop_key]
    optimizers = learner["optimizers"]
    return {name: [float(s["step"]) for s in opt["state"].values()]
            for name, opt in optimizers.items()}, \
        {name: [g["lr"] for g in opt["param_groups"]] for name, opt in optimizers.items()}


def test_new_run_starts_with_the_source_runs_networks(tmp_path):
    """A run that never updates (the default learning_starts, 200 on penalty, above its
    budget) ends with exactly the networks it was initialised with; its step-0 greedy
    evaluation is the source's last."""
    source = spnpolicy.train("spn-ac", "penalty", seed=1, out_dir=tmp_path / "a",
                             total_steps=192, **OFF)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "the run would end before ..."
        new = spnpolicy.train("spn-ac", "penalty", seed=5, out_dir=tmp_path / "b",
                              total_steps=96, init_from=tmp_path / "a",
                              **{k: v for k, v in OFF.items() if k != "learning_starts"})
    trained = load_agent(tmp_path / "a").state_dict()
    started = new.agent.state_dict()
    assert trained.keys() == started.keys()
    assert all(torch.equal(trained[k], started[k]) for k in trained)
    fresh = spnpolicy.train("spn-ac", "penalty", seed=5, total_steps=8,
                            **(OFF | {"learning_starts": 8}))
    assert not all(torch.equal(trained[k], v) for k, v in fresh.agent.state_dict().items())
    assert new.history[0]["return_mean"] == source.eval["return_mean"]
    provenance = (tmp_path / "b" / "provenance.jsonl").read_text()
    assert str(tmp_path / "a" / "checkpoints" / "last.pt") in provenance


@pytest.mark.parametrize("algo, config, lr_key, loop_key", [
    ("spn-ac", OFF, "critic_lr", "algorithm"),
    ("mappo", ON, "critic_lr", "learner"),
])
def test_optimizer_moments_carry_over_and_learning_rates_are_the_new_configs(
        tmp_path, algo, config, lr_key, loop_key):
    """Adam's step counts continue from the source's (a fresh optimizer would count this
    run's updates only), while the learning rates are the new run's config's."""
    spnpolicy.train(algo, "penalty", seed=1, out_dir=tmp_path / "a", total_steps=240,
                    **config)
    new_config = config | {lr_key: 3e-4, "total_steps": 240}
    spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "b",
                    init_from=tmp_path / "a" / "checkpoints" / "last.pt", **new_config)
    spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "c", **new_config)
    source_steps, source_lrs = _adam_steps(tmp_path / "a", loop_key)
    steps, lrs = _adam_steps(tmp_path / "b", loop_key)
    alone_steps, alone_lrs = _adam_steps(tmp_path / "c", loop_key)
    assert steps == {name: [a + b for a, b in zip(source_steps[name], alone_steps[name],
                                                    strict=True)] for name in steps}
    assert lrs == alone_lrs
    assert lrs["critic"] == [3e-4] and source_lrs["critic"] != [3e-4]


def test_init_from_refuses_another_algorithm_a_missing_run_and_a_resume(tmp_path):
    spnpolicy.train("vdn", "penalty", seed=0, out_dir=tmp_path / "a", total_steps=96,
                    num_envs=4, learning_starts=32, batch_size=16, eval_interval=96,
                    eval_episodes=2)
    with pytest.raises(ValueError, match=r"trained 'vdn'; its learner cannot start a "
                                         r"'qmix' run"):
        spnpolicy.train("qmix", "penalty", out_dir=tmp_path / "q", total_steps=96,
                        init_from=tmp_path / "a")
    assert not (tmp_path / "q").exists()
    with pytest.raises(ValueError, match="no run directory or checkpoint file at"):
        spnpolicy.train("vdn", "penalty", total_steps=96, init_from=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="init_from starts a new run, and .* already holds"):
        spnpolicy.train("vdn", "penalty", out_dir=tmp_path / "a", total_steps=192,
                        resume=True, init_from=tmp_path / "a")


def test_networks_of_another_shape_are_named_in_the_error(tmp_path):
    spnpolicy.train("spn-ac", "penalty", seed=0, out_dir=tmp_path / "a", total_steps=96,
                    **OFF)
    with pytest.raises(ValueError, match=r"init_from .*last\.pt: its learner does not fit "
                                         r"this run's config"):
        spnpolicy.train("spn-ac", "penalty", total_steps=96, init_from=tmp_path / "a",
                        **(OFF | {"critic_hidden": (8,)}))


def test_cli_init_from_starts_a_new_run(tmp_path, capsys):
    common = ["--total-steps", "96", "--quiet", "--set", "num_envs=4", "--set",
              "learning_starts=32", "--set", "batch_size=16", "--set", "eval_episodes=2"]
    assert main(["train", "vdn", "penalty", "--out-dir", str(tmp_path / "a"), *common]) == 0
    assert main(["train", "vdn", "penalty", "--out-dir", str(tmp_path / "b"), *common,
                 "--init-from", str(tmp_path / "a"), "--set", "lr=1e-4"]) == 0
    assert "init_from" in (tmp_path / "b" / "provenance.jsonl").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["train", "qmix", "penalty", "--out-dir", str(tmp_path / "c"), *common,
              "--init-from", str(tmp_path / "a")])
    assert exited.value.code == 2
    assert "trained 'vdn'; its learner cannot start a 'qmix' run" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


class _Learner:
    """Two modules and an Adam each, with the checkpoint layout of the algorithms."""

    def __init__(self, lr):
        torch.manual_seed(0)
        self.modules = {"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(2, 1)}
        self.optimizers = {name: torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.9))
                           for name, m in self.modules.items()}

    def step(self):
        for name, module in self.modules.items():
            module.weight.sum().backward()
            self.optimizers[name].step()

    def state_dict(self):
        return {"modules": {k: m.state_dict() for k, m in self.modules.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state):
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])


def test_warm_start_loads_weights_and_moments_and_keeps_the_learning_rates():
    from spnpolicy.training.checkpoint import warm_start

    trained = _Learner(lr=0.1)
    trained.step()
    trained.step()
    new = _Learner(lr=0.001)
    warm_start(new, trained.state_dict(), "somewhere")
    for k in ("a", "b"):
        for p, q in zip(new.modules[k].parameters(), trained.modules[k].parameters()):
            assert torch.equal(p, q)
        moments = new.optimizers[k].state_dict()["state"]
        assert all(float(s["step"]) == 2 for s in moments.values())
        assert torch.equal(moments[0]["exp_avg"],
                           trained.optimizers[k].state_dict()["state"][0]["exp_avg"])
        assert new.optimizers[k].param_groups[0]["lr"] == 0.001
    wider = _Learner(lr=0.001)
    wider.modules["a"] = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="init_from somewhere: its learner does not fit"):
        warm_start(wider, trained.state_dict(), "somewhere")


def test_partial_warm_start_takes_the_tensors_that_fit_and_fresh_optimizers():
    from spnpolicy.training.checkpoint import warm_start

    trained = _Learner(lr=0.1)
    trained.step()
    new = _Learner(lr=0.001)
    new.modules["a"] = torch.nn.Linear(4, 2)          # another input width: weight [2, 4]
    new.optimizers["a"] = torch.optim.Adam(new.modules["a"].parameters(), lr=0.001)
    own_weight = new.modules["a"].weight.detach().clone()
    kept = warm_start(new, trained.state_dict(), "somewhere", partial=True)
    assert kept == ["modules.a.weight"]
    assert torch.equal(new.modules["a"].weight, own_weight)
    assert torch.equal(new.modules["a"].bias, trained.modules["a"].bias)
    assert all(torch.equal(p, q) for p, q in zip(new.modules["b"].parameters(),
                                                  trained.modules["b"].parameters()))
    assert all(not o.state_dict()["state"] for o in new.optimizers.values())
    assert new.optimizers["b"].param_groups[0]["lr"] == 0.001
    same = _Learner(lr=0.001)                                  # everything fits: none kept
    assert warm_start(same, trained.state_dict(), "somewhere", partial=True) == []


def test_partial_warm_start_keeps_optimizer_states_in_lists_fresh():
    """Some learners keep their optimizers in a list: those start fresh too."""
    from spnpolicy.training.checkpoint import warm_start

    class Listed(_Learner):
        def state_dict(self):
            return {"modules": {k: m.state_dict() for k, m in self.modules.items()},
                    "optimizers": [o.state_dict() for o in self.optimizers.values()]}

        def load_state_dict(self, state):
            for k, m in self.modules.items():
                m.load_state_dict(state["modules"][k])
            for o, saved in zip(self.optimizers.values(), state["optimizers"], strict=True):
                o.load_state_dict(saved)

    trained = Listed(lr=0.1)
    trained.step()
    new = Listed(lr=0.001)
    assert warm_start(new, trained.state_dict(), "somewhere", partial=True) == []
    assert torch.equal(new.modules["a"].weight, trained.modules["a"].weight)
    assert all(not o.state_dict()["state"] for o in new.optimizers.values())


def test_partial_start_refuses_modules_saved_with_another_layout_version():
    from spnpolicy.training.checkpoint import warm_start

    state = _Learner(lr=0.1).state_dict()
    state["modules"]["a"]._metadata[""]["version"] = 0
    with pytest.raises(ValueError, match="init_from somewhere: modules saved with another "
                                         "layout version"):
        warm_start(_Learner(lr=0.1), state, "somewhere", partial=True)


def test_init_partial_starts_a_larger_team_from_a_smaller_ones_learner(tmp_path):
    """With nearest observations the agents' networks do not depend on the team size: a
    4-agent spn-ac run takes them from a 3-agent run, and keeps fresh only the tensors that
    grow with the team (the circuit's parameter groups, the critics' one-hot agent ids)."""
    config = OFF | dict(param_head="agents", critic_input="agents", factor_graph="random",
                        num_factors=4, total_steps=96)
    env = dict(grid_size=5, max_steps=10, observation="nearest", neighbours=2,
               layout="fixed")
    spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path / "a",
                    env_kwargs=env | {"num_agents": 3}, **config)
    with pytest.raises(ValueError, match="its learner does not fit"):
        spnpolicy.train("spn-ac", "coverage", env_kwargs=env | {"num_agents": 4},
                        init_from=tmp_path / "a", **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "the run would end before ..."
        new = spnpolicy.train("spn-ac", "coverage", seed=1, out_dir=tmp_path / "b",
                              env_kwargs=env | {"num_agents": 4}, init_from=tmp_path / "a",
                              init_partial=True,
                              **{k: v for k, v in config.items() if k != "learning_starts"})
    source = load_agent(tmp_path / "a").state_dict()
    started = new.agent.state_dict()
    shared = [k for k in source.keys() & started.keys() if source[k].shape == started[k].shape]
    assert any("encoder" in k for k in shared)
    assert all(torch.equal(source[k], started[k]) for k in shared)
    provenance = (tmp_path / "b" / "provenance.jsonl").read_text()
    assert '"init_partial": true' in provenance
    assert "modules.policy.encoder.embedding" in provenance
    assert "modules.critic.torso.0.weight" in provenance
    with pytest.raises(ValueError, match="init_partial=True needs init_from"):
        spnpolicy.train("spn-ac", "coverage", init_partial=True, **config)
    with pytest.raises(ValueError, match="init_partial must be True or False, got 'yes'"):
        spnpolicy.train("spn-ac", "coverage", init_from=tmp_path / "a", init_partial="yes",
                        **config)


def test_critics_without_agent_ids_start_whole_in_a_larger_team(tmp_path):
    """With critic_agent_ids=False the critics' weights do not depend on the team size: a
    4-agent run takes them all from a 3-agent run, and keeps fresh only the circuit's."""
    config = OFF | dict(param_head="agents", critic_input="agents", critic_agent_ids=False,
                        factor_graph="random", num_factors=4, total_steps=96)
    env = dict(grid_size=5, max_steps=10, observation="nearest", neighbours=2,
               layout="fixed")
    spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path / "a",
                    env_kwargs=env | {"num_agents": 3}, **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "the run would end before ..."
        new = spnpolicy.train("spn-ac", "coverage", seed=1, out_dir=tmp_path / "b",
                              env_kwargs=env | {"num_agents": 4}, init_from=tmp_path / "a",
                              init_partial=True,
                              **{k: v for k, v in config.items() if k != "learning_starts"})
    source, started = (torch.load(tmp_path / run / "checkpoints" / "last.pt",
                                  weights_only=False)["algorithm"]["modules"]
                       for run in ("a", "b"))
    for critic in ("critic", "critic_target"):      # no update ran: still the source's
        assert all(torch.equal(value, started[critic][name])
                   for name, value in source[critic].items())
    assert new.history[-1]["step"] == 96
    records = [json.loads(line) for line in
               (tmp_path / "b" / "provenance.jsonl").read_text().splitlines()]
    fresh = [path for record in records for path in record.get("kept_fresh", ())]
    assert "modules.policy.encoder.embedding" in fresh
    assert not [path for path in fresh if "critic" in path]


def test_cli_init_partial_needs_init_from(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "vdn", "penalty", "--out-dir", str(tmp_path / "a"), "--quiet",
              "--total-steps", "96", "--init-partial"])
    assert exited.value.code == 2
    assert "init_partial=True needs init_from" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
