"""The shared off-policy loop: its schedule with a scripted algorithm, and exact
resumption of a real one."""

import dataclasses

import pytest
import torch
from torch import nn

import spnpolicy
from spnpolicy.algos.config import OffPolicyConfig
from spnpolicy.training import RunSpec, Session
from spnpolicy.training.offpolicy import (ActingAgent, OffPolicyAlgorithm, TargetSync,
                                          train_offpolicy)
from tests.run_helpers import assert_same_run


class _Constant(ActingAgent):
    needs_obs = False
    input_shape = (1,)

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def greedy_actions(self, x):
        return torch.ones(x.shape[0], 2, dtype=torch.long)


class _Scripted(OffPolicyAlgorithm):
    """Records what the loop asks of it; its 'update' adds 1 to a weight."""

    needs_obs = False

    def __init__(self, cfg, envs, tau, interval):
        self.agent, self.target = _Constant(), _Constant()
        self.target_sync = TargetSync(((self.target, self.agent),), tau=tau, interval=interval)
        self.explored, self.batches, self.elapsed = [], [], []

    def explore(self, state, obs, step, generator, settled=None, elapsed=None):
        self.explored.append(step)
        self.elapsed.append(elapsed.tolist())
        return torch.zeros(state.shape[0], 2, dtype=torch.long)

    def greedy(self, state, obs):
        return self.agent.greedy_actions(state)

    def update(self, batch):
        self.batches.append(batch.state.shape[0])
        with torch.no_grad():
            self.agent.weight += 1.0
        return {"updates": len(self.batches)}

    def state_dict(self):
        return {}


def _run(uniform_warmup=True, tau=None, interval=None, env="coordination", env_kwargs=None,
         **overrides):
    cfg = OffPolicyConfig(**dict(dict(total_steps=64, num_envs=4, learning_starts=16,
                                      batch_size=5, update_every=2, gradient_steps=3,
                                      eval_interval=32, eval_episodes=2, eval_stochastic=False),
                                 **overrides))
    session = Session(RunSpec("scripted", env, 0), cfg.total_steps,
                      cfg.eval_interval, cfg.checkpoint_interval, stdout=False,
                      log_interval=cfg.log_interval)
    made = []

    def build(cfg, envs):
        algorithm = _Scripted(cfg, envs, tau, interval)
        algorithm.uniform_warmup = uniform_warmup
        made.append(algorithm)
        return algorithm

    agent = train_offpolicy(cfg, env, env_kwargs or {}, 0, session, build)
    return made[0], agent, session


def test_schedule_of_collection_updates_and_evaluations():
    algorithm, agent, session = _run()
    # uniform warm-up below learning_starts=16, then explore at every iteration
    assert algorithm.explored == list(range(16, 64, 4))
    # iterations end at steps 4, 8, ..., 64; update rounds from 16 where step / 4 is even:
    # 16, 24, ..., 64, 7 rounds of 3 gradient steps
    assert algorithm.batches == [5] * (7 * 3)
    assert [h["step"] for h in session.history] == [0, 32, 64]
    assert session.history[-1]["success_rate"] == 1.0      # greedy (1, 1) is optimal
    # the evaluation at 32 follows the round at 32: updates 1..9 before it, 10..21 after
    assert session.history[1]["updates"] == pytest.approx(5.0)
    assert session.history[-1]["updates"] == pytest.approx((10 + 21) / 2)
    assert agent is algorithm.agent and not agent.training


def test_training_records_between_evaluations():
    algorithm, _, session = _run(log_interval=16)
    assert [(r["step"], r.get("phase")) for r in session.records] == [
        (0, None), (16, "train"), (32, "train"), (32, None), (48, "train"), (64, "train"),
        (64, None)]
    training = [r for r in session.records if r.get("phase") == "train"]
    # update rounds (3 updates each, the i-th returning i) at steps 16, 24, 32, ...: the
    # means of 1-3, 4-9, 10-15 and 16-21 since the previous record
    assert [r["updates"] for r in training] == [2.0, 6.5, 12.5, 18.5]
    assert [r["episodes"] for r in training] == [16, 16, 16, 16]   # one-step episodes
    # uniform joint actions until learning_starts, then explore's (0, 0), whose payoff is 0
    assert training[0]["return_mean"] > 0 and 0 < training[0]["success_rate"] < 1
    assert [r["return_mean"] for r in training[1:]] == [0.0, 0.0, 0.0]


def test_updates_wait_for_the_first_n_step_row():
    # n-step rows of a multi-step episode reach the buffer n - 1 iterations late: with
    # learning_starts=0 the first rounds found an empty buffer and raised ValueError
    algorithm, _, _ = _run(learning_starts=0, update_every=1, gradient_steps=1, n_step=3,
                           env="coverage", env_kwargs=dict(num_agents=2, grid_size=4,
                                                           max_steps=10))
    # iterations end at 4, 8, ..., 64; rows arrive from the third (step 12) on
    assert algorithm.batches == [5] * 14


def test_explore_from_step_zero_without_uniform_warmup():
    algorithm, _, _ = _run(uniform_warmup=False)
    assert algorithm.explored == list(range(0, 64, 4))


def test_explore_is_given_each_copys_steps_since_its_episode_began():
    algorithm, _, _ = _run(uniform_warmup=False, env="climbing",
                           env_kwargs=dict(episode_length=3))
    assert algorithm.elapsed == [[t % 3] * 4 for t in range(16)]


def test_soft_targets_follow_every_gradient_step():
    algorithm, _, _ = _run(tau=0.5)
    expected = 0.0
    for value in range(1, 22):
        expected = 0.5 * value + 0.5 * expected
    assert float(algorithm.target.weight.detach()) == pytest.approx(expected)


def test_hard_targets_copy_when_an_interval_is_crossed():
    algorithm, _, _ = _run(interval=40)
    # step 40 is crossed at the iteration ending at 40: 3 update rounds (16, 24, 32, 40 -> 4)
    assert float(algorithm.target.weight.detach()) == 4 * 3


RESUME = dict(total_steps=960, num_envs=8, learning_starts=96, batch_size=16,
              gradient_steps=1, checkpoint_interval=240, eval_interval=240, eval_episodes=4,
              n_step=2, eval_stochastic=True, log_interval=100)


#: Per algorithm: config that makes target copies happen in both halves of the run.
EXTRA = {"masac": {}, "maddpg": {}, "qtran": {"target_update_interval": 96},
         "ma2ql": {"target_update_interval": 96, "turn_length": 7},
         "i2q": {"target_update_interval": 96, "n_step": 1}}


@pytest.mark.parametrize("algo", sorted(EXTRA))
def test_resumed_run_equals_uninterrupted_run(tmp_path, algo):
    """Stop at step 480 (a checkpoint), resume to 960: the same history and weights as one
    run to 960, with multi-step episodes, n-step returns and target updates in both halves."""
    env_kwargs = {"episode_length": 3}
    config = dict(RESUME, **EXTRA[algo])
    whole = spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "a",
                            env_kwargs=env_kwargs, **config)
    spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "b", env_kwargs=env_kwargs,
                    **dict(config, total_steps=480))
    resumed = spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "b", resume=True,
                              env_kwargs=env_kwargs, **config)
    assert_same_run(whole, resumed)
    assert len(whole.history) == 5
    # the first step (a multiple of num_envs=8) at or past each multiple of log_interval=100
    assert [r["step"] for r in whole.training] == [104, 200, 304, 400, 504, 600, 704, 800, 904]


def test_config_is_checked_before_the_loop():
    with pytest.raises(ValueError, match="gradient_steps"):
        dataclasses.replace(OffPolicyConfig(), gradient_steps=0)


@pytest.mark.parametrize("algo", sorted(EXTRA))
def test_trained_agent_loads_from_its_run_directory(tmp_path, algo):
    """The registry entry's load_agent (through inference.load_agent) rebuilds the agent."""
    from spnpolicy.inference import load_agent

    config = dict(RESUME, **EXTRA[algo], total_steps=240)
    result = spnpolicy.train(algo, "penalty", seed=1, out_dir=tmp_path, **config)
    loaded = load_agent(tmp_path)
    for a, b in zip(result.agent.state_dict().values(), loaded.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert type(loaded) is type(result.agent) and not loaded.training
