"""spn-ac as a BenchMARL algorithm: its config, and BenchMARL's own Experiment learning a
VMAS task with it (examples/benchmarl_spn.py)."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("benchmarl")
pytest.importorskip("vmas")

from omegaconf import OmegaConf  # noqa: E402

from spnpolicy.algos.spn_ac import SpnAcConfig  # noqa: E402
from spnpolicy.integrations.benchmarl import (  # noqa: E402
    CONFIG_YAML,
    SpnAcAlgorithm,
    SpnAcAlgorithmConfig,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
from benchmarl_spn import experiment_config, navigation_experiment, team_return  # noqa: E402


def test_the_yaml_config_holds_spn_acs_defaults():
    config = SpnAcAlgorithmConfig.get_from_yaml()
    assert CONFIG_YAML.is_file() and config.associated_class() is SpnAcAlgorithm
    defaults = SpnAcConfig()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        assert (tuple(value) if isinstance(value, list) else value) == \
            getattr(defaults, field.name), field.name
    # hydra's route: the structured config with a yaml override
    merged = OmegaConf.merge(OmegaConf.structured(SpnAcAlgorithmConfig), {"width": 8})
    assert OmegaConf.to_object(merged) == dataclasses.replace(config, width=8)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="width must be an int >= 1, got 0"):
        SpnAcAlgorithmConfig(width=0)
    with pytest.raises(ValueError, match="regulariser must be one of"):
        SpnAcAlgorithmConfig(regulariser="kl")


def test_what_it_cannot_run_is_named(tmp_path):
    from benchmarl.environments import VmasTask
    from benchmarl.experiment import Experiment
    from benchmarl.models import GruConfig, MlpConfig

    with pytest.raises(ValueError, match="no recurrent networks"):
        navigation_experiment(500, seed=0, folder=str(tmp_path),
                              model_config=GruConfig.get_from_yaml())
    config = experiment_config(500, str(tmp_path))
    config.off_policy_use_prioritized_replay_buffer = True
    with pytest.raises(ValueError, match="off_policy_use_prioritized_replay_buffer=False"):
        Experiment(task=VmasTask.NAVIGATION.get_from_yaml(),
                   algorithm_config=SpnAcAlgorithmConfig.get_from_yaml(),
                   model_config=MlpConfig.get_from_yaml(), seed=0, config=config)


@pytest.mark.parametrize("inputs", ["concatenated", "agents"])
def test_an_experiment_trains_the_policy_and_the_critics(tmp_path, inputs):
    """The default (policy and critics on the concatenated observations), and the agents
    head with AgentFactorQ critics (each on the agents' own observations)."""
    config = SpnAcAlgorithmConfig.get_from_yaml()
    if inputs == "agents":
        config = dataclasses.replace(config, param_head="agents", critic_input="agents",
                                     agent_ids=True)
    experiment = navigation_experiment(500, seed=0, folder=str(tmp_path),
                                       algorithm_config=config)
    losses = experiment.losses[next(iter(experiment.group_map))]
    assert (losses.policy.param_head, losses.critic_shape) == (
        ("agents", (2, 18)) if inputs == "agents" else ("flat", (36,)))
    if inputs == "agents":
        assert losses.policy.encoder.agent_ids
    before = {name: [p.detach().clone() for p in params]
              for name, params in _trained_parameters(losses).items()}
    experiment.run()
    assert experiment.total_frames == 500
    for name, params in _trained_parameters(losses).items():
        assert any(not torch.equal(p, q) for p, q in zip(params, before[name])), name


def _trained_parameters(loss) -> dict[str, list[torch.Tensor]]:
    """The policy's and the critics' parameters that the optimisers step."""
    return {"policy": list(loss.policy.encoder.parameters()),
            "critics": [p for p in loss.critic_params.values(True, True) if p.requires_grad]}


@pytest.mark.slow
def test_an_experiment_learns_navigation_where_random_actions_drift_away(tmp_path):
    """40,000 frames (about a CPU minute). Random and greedy policies are scored on the same
    32 episodes. The gain must clear 0.5: over seeds 0-9 it was 1.03 to 1.44, and at most
    -0.07 with the actor's or the critics' learning rate set to 0."""
    experiment = navigation_experiment(40_000, seed=0, folder=str(tmp_path))
    random_return = team_return(experiment)
    untrained = team_return(experiment, experiment.policy)
    experiment.run()
    trained = team_return(experiment, experiment.policy)
    assert experiment.total_frames == 40_000
    assert random_return < -0.3 and untrained < -0.3
    assert trained > max(random_return, untrained) + 0.5, (trained, untrained, random_return)


def test_for_family_takes_spn_acs_env_defaults():
    from spnpolicy.algos.spn_ac import ENV_DEFAULTS
    config = SpnAcAlgorithmConfig.for_family("vmas")
    assert (config.param_head, config.critic_input) == ("agents", "agents")
    assert dataclasses.replace(config, param_head="flat", critic_input="state") == \
        SpnAcAlgorithmConfig.get_from_yaml()
    matrix = SpnAcAlgorithmConfig.for_family("matrix")      # its fields this config has
    assert matrix.policy_hidden == list(ENV_DEFAULTS["matrix"]["policy_hidden"])
    assert matrix.alpha == ENV_DEFAULTS["matrix"]["alpha"]
    with pytest.raises(ValueError, match="family must be one of .*got 'mujoco'"):
        SpnAcAlgorithmConfig.for_family("mujoco")
