"""The on-policy loop: a killed-and-resumed run equals an uninterrupted one, through a
checkpoint file read with ``torch.load(weights_only=True)``."""

import pytest
import torch

import spnpolicy
from spnpolicy.training.onpolicy import RolloutStorage
from tests.run_helpers import assert_same_run

COVERAGE = {"num_agents": 2, "grid_size": 4, "max_steps": 6}


class Killed(Exception):
    pass


@pytest.mark.parametrize("algo, env, env_kwargs, extra", [
    # multi-step terminating episodes, n-step returns
    ("ia2c", "penalty", {"episode_length": 3}, {}),
    # time-limit truncations, GAE, random minibatches (torch's generator is checkpointed)
    ("mappo", "coverage", COVERAGE, {"returns": "gae", "minibatches": 3}),
    # next actions drawn at rollout ends, annealed entropy, adaptive penalties, t_k
    ("coma", "coverage", COVERAGE, {}),
    ("pac", "penalty", {"episode_length": 3}, {}),
    ("dpo", "coverage", COVERAGE, {}),
    ("mdpo", "penalty", {"episode_length": 3}, {"minibatches": 2}),
])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, algo, env,
                                                         env_kwargs, extra):
    """Kill the run while it collects the rollout after the checkpoint at step 240 (the
    work since the checkpoint is lost), resume it: the same history and weights."""
    config = dict(num_envs=4, rollout_steps=5, eval_interval=120, checkpoint_interval=120,
                  eval_episodes=4, hidden=(16,), critic_hidden=(16,), total_steps=480,
                  log_interval=100, env_kwargs=env_kwargs, **extra)
    whole = spnpolicy.train(algo, env, seed=3, out_dir=tmp_path / "a", **config)

    collect = RolloutStorage.rollout

    def killed_at_260(self, step, draw):
        if step == 260:
            raise Killed
        return collect(self, step, draw)

    monkeypatch.setattr(RolloutStorage, "rollout", killed_at_260)
    with pytest.raises(Killed):
        spnpolicy.train(algo, env, seed=3, out_dir=tmp_path / "b", **config)
    monkeypatch.undo()
    payload = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert payload["session"]["step"] == 240
    resumed = spnpolicy.train(algo, env, seed=3, out_dir=tmp_path / "b", resume=True, **config)
    assert_same_run(whole, resumed)
    assert [h["step"] for h in whole.history] == [0, 120, 240, 360, 480]
    # a training record after the rollouts crossing 100, 200, ... (20 env steps each)
    assert [r["step"] for r in whole.training] == [100, 200, 300, 400]
    assert all("return_mean" in r for r in whole.training)   # short episodes end in each


def test_budget_not_a_multiple_of_the_rollout():
    """The last rollout is shortened to the budget: 4 copies x (5 + 5 + 1) steps = 44."""
    result = spnpolicy.train("ia2c", "penalty", seed=0, total_steps=41, num_envs=4,
                             rollout_steps=5, eval_episodes=2, env_kwargs={"episode_length": 3})
    assert result.history[-1]["step"] == 44


class Recorder:
    """A learner that records its rollouts and does not learn."""

    def __init__(self, cfg, envs):
        from spnpolicy.algos.onpolicy_common import OnPolicyAgent

        self.agent = OnPolicyAgent(envs.obs_dim, envs.num_agents, envs.num_actions, (8,))
        self.envs, self.rollouts = envs, []

    def update(self, rollout):
        self.rollouts.append(rollout)
        return {}

    def state_dict(self):
        return {}


def _record(shaping, form="potential"):
    from spnpolicy.algos.registry import make_config
    from spnpolicy.training import RunSpec, Session
    from spnpolicy.training.onpolicy import train_onpolicy

    cfg = make_config("ia2c", "coverage", dict(total_steps=60, num_envs=3, rollout_steps=4,
                                               eval_episodes=1, shaping=shaping, gamma=0.9,
                                               shaping_form=form))
    learners = []

    def build(cfg, envs):
        learners.append(Recorder(cfg, envs))
        return learners[-1]

    session = Session(RunSpec("ia2c", "coverage", 0), 60, 60, 60, stdout=False)
    train_onpolicy(cfg, "coverage", COVERAGE, 0, session, build)
    return learners[0]


@pytest.mark.parametrize("form, discount", [("potential", 0.9), ("progress", 1.0)])
def test_shaping_adds_the_potential_difference(form, discount):
    """The learner sees r + gamma (1 - terminated) Phi(s') - Phi(s) (form 'progress': without
    gamma); the env's own reward otherwise (the same seed gives the same steps: the
    recorder never learns)."""
    plain, shaped = _record(False), _record(True, form)
    potential = shaped.envs.potential
    for a, b in zip(plain.rollouts, shaped.rollouts, strict=True):
        assert torch.equal(a.actions, b.actions)
        start, end = (torch.as_tensor(potential(x.flatten(0, 1).numpy())).view(a.reward.shape)
                      for x in (a.state, a.next_state))
        expected = a.reward.double() + discount * (1 - a.terminated.double()) * end - start
        torch.testing.assert_close(b.reward.double(), expected, rtol=1e-5, atol=1e-5)
    assert any(bool((a.reward != b.reward).any())
               for a, b in zip(plain.rollouts, shaped.rollouts))


def test_shaping_needs_a_potential():
    with pytest.raises(ValueError, match="shaping"):
        spnpolicy.train("ippo", "climbing", seed=0, total_steps=16, shaping=True)
