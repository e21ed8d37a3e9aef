"""spn-ac's ``param_head`` config field: the shared parameter head builds, trains and is
saved and loaded like the flat one."""

import io

import pytest
import torch

import spnpolicy
from spnpolicy.algos.policies import SharedGroupHead
from spnpolicy.algos.spn_ac import SpnAc, SpnAcConfig
from spnpolicy.inference import load_agent
from spnpolicy.training import make_vec_env

COVERAGE = dict(num_agents=4, grid_size=4, max_steps=6, reward="coverage")
TINY = dict(total_steps=96, num_envs=8, learning_starts=32, batch_size=16, eval_interval=96,
            eval_episodes=2, policy_hidden=(16,), critic_hidden=(16,), width=4)


@pytest.mark.parametrize("algo", ["spn-ac", "meanfield-ac"])
def test_shared_head_trains_saves_and_loads(tmp_path, algo):
    envs = make_vec_env("coverage", 1, **COVERAGE)
    torch.manual_seed(3)
    initial = SpnAc(SpnAcConfig(**TINY, policy="selective" if algo == "spn-ac" else
                                "mean_field", param_head="shared"), envs)
    result = spnpolicy.train(algo, "coverage", seed=3, out_dir=tmp_path / "run",
                             env_kwargs=COVERAGE, verbose=False, progress=False,
                             param_head="shared", **TINY)
    agent = result.agent
    assert result.config.param_head == "shared" and isinstance(agent.encoder, SharedGroupHead)
    assert "loss_actor" in result.eval              # updates ran (their metrics)
    # updates moved the shared head (seed 3: the same initial weights as `initial`)
    embedding = initial.policy.encoder.embedding
    assert embedding.shape == agent.encoder.embedding.shape
    assert not torch.equal(embedding, agent.encoder.embedding)
    # torch.save / torch.load(weights_only=True) of the whole algorithm's state
    buffer = io.BytesIO()
    trained = SpnAc(result.config, envs)
    trained.policy.load_state_dict(agent.state_dict())
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    initial.load_state_dict(torch.load(buffer, weights_only=True))
    for (name, a), b in zip(agent.state_dict().items(), initial.policy.state_dict().values()):
        assert torch.equal(a, b), name
    # the run's checkpoint rebuilds the same policy
    states = torch.rand(3, envs.state_dim)
    want = agent.distribution(states).marginals()
    loaded = load_agent(tmp_path / "run")
    assert isinstance(loaded.encoder, SharedGroupHead)
    torch.testing.assert_close(loaded.distribution(states).marginals(), want)
    envs.close()


def test_param_head_is_checked():
    assert SpnAcConfig().param_head == "flat"
    with pytest.raises(ValueError, match="param_head"):
        SpnAcConfig(param_head="wide")
    with pytest.raises(ValueError, match="param_head='shared' needs a circuit policy"):
        SpnAcConfig(policy="softmax", param_head="shared")
    with pytest.raises(ValueError, match="param_head"):
        spnpolicy.train("spn-ac", "coverage", total_steps=8, param_head="wide",
                        progress=False, verbose=False)


def test_compiled_acting_path_takes_the_shared_head():
    # compile=True acts through _act on the uniforms _draw takes; run that path eagerly (no
    # compiler needed): the same draws as the plain sampler, for the shared head too
    envs = make_vec_env("coverage", 2, **COVERAGE)
    torch.manual_seed(0)
    algorithm = SpnAc(SpnAcConfig(**TINY, param_head="shared"), envs)
    states = torch.rand(5, envs.state_dim)
    plain = algorithm.sample(states, None, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        split = algorithm._act(states, algorithm._draw(states, torch.Generator().manual_seed(1)))
    assert torch.equal(plain, split)
    envs.close()
