"""Factor graphs by name, the algorithm registry, and config validation."""

import dataclasses
import math

import pytest

from factor_q import FactorGraph
from spnpolicy.algos import ALGORITHMS, make_config
from spnpolicy.algos.config import field_docs, field_values, parse_field_value
from spnpolicy.algos.config_files import read_config_file, write_config_file
from spnpolicy.algos.critics import build_factor_graph
from spnpolicy.algos.registry import env_family
from spnpolicy.algos.spn_ac import SpnAcConfig
from spnpolicy.training.offpolicy import train_offpolicy
from spnpolicy.training.onpolicy import train_onpolicy


def test_auto_factor_graph():
    assert build_factor_graph("auto", 6) == FactorGraph.random(6, 20, order=2, seed=0)
    assert build_factor_graph("auto", 3) == FactorGraph.complete(3)
    assert build_factor_graph("auto", 2).factors == ((0, 1),)
    assert build_factor_graph("none", 4).num_factors == 0
    assert build_factor_graph("ring", 4) == FactorGraph.ring(4)
    with pytest.raises(ValueError, match="factor_graph must be one of"):
        build_factor_graph("grid", 4)


def test_registry_lists_spn_ac_its_variants_and_the_baselines():
    # the spn-ac family first, then the baselines (other algorithms may follow)
    assert list(ALGORITHMS)[:8] == ["spn-ac", "meanfield-ac", "reinforce", "exact-softmax",
                                    "iql", "vdn", "qmix", "dcg"]
    assert make_config("meanfield-ac", "coverage").policy == "mean_field"
    assert make_config("reinforce", "coverage").actor_gradient == "reinforce"
    assert make_config("exact-softmax", "coverage").policy == "softmax"
    assert env_family("penalty") == "matrix" and env_family("mpe/simple_spread") == "mpe"


def test_per_env_defaults_and_overrides():
    matrix, coverage = make_config("spn-ac", "climbing"), make_config("spn-ac", "coverage")
    assert matrix.total_steps < coverage.total_steps
    assert make_config("spn-ac", "climbing", {"total_steps": 123}).total_steps == 123
    assert make_config("spn-ac", "climbing", {"policy_hidden": [4, 4]}).policy_hidden == (4, 4)


def test_unknown_keys_and_fixed_values():
    with pytest.raises(ValueError, match="unknown config key.*'lr'.*valid keys: total_steps"):
        make_config("spn-ac", "climbing", {"lr": 1.0})
    with pytest.raises(ValueError, match="policy='mean_field' defines the algorithm "
                                         "'meanfield-ac'"):
        make_config("meanfield-ac", "climbing", {"policy": "selective"})
    with pytest.raises(ValueError, match="actor_gradient='exact' defines the algorithm 'spn-ac'"):
        make_config("spn-ac", "climbing", {"actor_gradient": "reinforce"})
    with pytest.raises(ValueError, match="unknown algorithm 'sac'; valid: spn-ac"):
        make_config("sac", "climbing")


@pytest.mark.parametrize("field, value", [
    ("actor_lr", -1e-3), ("critic_lr", 0.0), ("width", 0), ("batch_size", 0),
    ("gamma", 1.5), ("tau", 0.0), ("alpha", -0.1), ("target_entropy_scale", 2.0),
    ("policy_hidden", (0,)), ("critic_hidden", "64"), ("factor_graph", "grid"),
    ("factor_order", 4), ("reinforce_samples", 1), ("total_steps", 0), ("num_envs", 0),
    ("eval_episodes", 0), ("autotune_alpha", 1), ("max_grad_norm", float("nan")),
    ("learning_starts", -1), ("critic_rank", -1), ("device", 0), ("regulariser", "kl"),
    ("n_step", 0), ("eval_stochastic", "yes"), ("log_interval", -1), ("log_interval", 1.5),
    ("tracking", "wandb"),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        SpnAcConfig(**{field: value})


def test_a_registry_entry_runs_its_learner_on_its_loop():
    """No algorithm has a train function of its own: ``AlgorithmSpec.train`` calls the
    entry's loop (off-policy by default, on-policy where the entry says so) with the entry's
    learner."""
    calls = []
    spec = dataclasses.replace(ALGORITHMS["vdn"], loop=lambda *args: calls.append(args) or "agent")
    assert spec.train("cfg", "climbing", {}, 0, "session") == "agent"
    assert calls == [("cfg", "climbing", {}, 0, "session", spec.learner)]
    loops = {name: spec.loop for name, spec in ALGORITHMS.items()}
    assert {name for name, loop in loops.items() if loop is train_onpolicy} == {
        "ia2c", "maa2c", "ippo", "mappo", "coma", "pac", "dpo", "mdpo"}
    assert all(loop in (train_offpolicy, train_onpolicy) for loop in loops.values())


def test_checks_come_from_the_fields_and_survive_a_redeclared_default():
    """Every config class checks its fields from their metadata in the one base
    ``__post_init__``: a subclass that redeclares a field's default (masac's and the
    Q-learners' ``gamma``, ``eval_stochastic``) keeps the base class's check, and a list of
    layer widths (as JSON gives it) is kept as a tuple."""
    classes = {spec.config_cls for spec in ALGORITHMS.values()}
    for cls in classes:
        with pytest.raises(ValueError, match="^gamma must"):
            cls(gamma=1.5)
        with pytest.raises(ValueError, match="^eval_stochastic must"):
            cls(eval_stochastic="yes")
        for f in dataclasses.fields(cls):
            if isinstance(f.default, tuple):
                assert getattr(cls(**{f.name: list(f.default)}), f.name) == f.default


def test_every_field_is_documented():
    docs = field_docs(SpnAcConfig)
    missing = [f.name for f in dataclasses.fields(SpnAcConfig) if not docs.get(f.name)]
    assert missing == []


def test_parse_field_value():
    assert parse_field_value(SpnAcConfig, "actor_lr", "1e-3") == 1e-3
    assert parse_field_value(SpnAcConfig, "total_steps", "100_000") == 100_000
    assert parse_field_value(SpnAcConfig, "autotune_alpha", "false") is False
    assert parse_field_value(SpnAcConfig, "policy_hidden", "64,64") == (64, 64)
    assert parse_field_value(SpnAcConfig, "policy_hidden", "(32,)") == (32,)
    assert parse_field_value(SpnAcConfig, "factor_graph", "ring") == "ring"
    with pytest.raises(ValueError, match="width: cannot read 'wide' as int"):
        parse_field_value(SpnAcConfig, "width", "wide")
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        parse_field_value(SpnAcConfig, "nope", "1")
    assert math.isinf(parse_field_value(SpnAcConfig, "alpha", "inf"))  # rejected by the config


def test_field_values_read_json_and_set_text_forms():
    values = field_values(SpnAcConfig, {"policy_hidden": [64, 64], "actor_lr": "1e-3",
                                        "autotune_alpha": "false", "factor_graph": "ring",
                                        "total_steps": 400})
    assert values == {"policy_hidden": (64, 64), "actor_lr": 1e-3, "autotune_alpha": False,
                      "factor_graph": "ring", "total_steps": 400}
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['lr'\]; valid keys: "):
        field_values(SpnAcConfig, {"lr": 1.0})


def test_a_written_config_file_reads_back_as_the_same_config(tmp_path):
    cfg = make_config("spn-ac", "coverage", {"policy_hidden": (32, 32)})
    path = write_config_file(cfg, tmp_path / "spn-ac.json")
    assert SpnAcConfig(**read_config_file(path, SpnAcConfig)) == cfg
    assert make_config("meanfield-ac", None).policy == "mean_field"   # no env's defaults
    assert make_config("spn-ac", None) == SpnAcConfig()
