"""spn-ac as a BenchMARL algorithm (extra ``benchmarl``).

Each agent group is one joint policy ``pi(u | s)`` (:class:`~spnpolicy.algos.policies.JointPolicy`,
a selective circuit by default) over the group's actions, with ``s`` the group's
observations concatenated, trained off-policy by spn-ac's exact losses against twin
factor-graph critics (:class:`~spnpolicy.integrations.spn_ac_loss.SpnAcLoss`). Acting is
centralised: one sampled joint action per state for the whole group. As in spn-ac's own
config, ``param_head="agents"`` makes the policy read each agent's observation through one
encoder shared by the agents, and ``critic_input="agents"`` does the same for the critics
(``AgentFactorQ``), instead of one MLP on the concatenation.

```python
from benchmarl.environments import VmasTask
from benchmarl.experiment import Experiment, ExperimentConfig
from benchmarl.models.mlp import MlpConfig
from spnpolicy.integrations.benchmarl import SpnAcAlgorithmConfig

experiment = Experiment(task=VmasTask.NAVIGATION.get_from_yaml(),
                        algorithm_config=SpnAcAlgorithmConfig.for_family("vmas"),
                        model_config=MlpConfig.get_from_yaml(), seed=0,
                        config=ExperimentConfig.get_from_yaml())
experiment.run()
```

Discrete actions only, no action masks, no prioritised replay. The networks' sizes come
from this config (``policy_hidden``, ``critic_hidden``), not from BenchMARL's model
configs; the learning rate, discount, Polyak rate and gradient clipping from BenchMARL's
``ExperimentConfig``.

BenchMARL's MPE tasks (``PettingZooTask.SIMPLE_SPREAD``, ...) fail to build their env with
pettingzoo >= 1.25, whose ``pettingzoo.mpe`` moved to the ``mpe2`` package;
:class:`Mpe2PettingZooClass` is the same task with its env from mpe2:
``Experiment(task=Mpe2PettingZooClass.from_task(PettingZooTask.SIMPLE_SPREAD), ...)``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pathlib
from dataclasses import field
from typing import Iterable

from benchmarl.algorithms.common import Algorithm, AlgorithmConfig
from benchmarl.environments.pettingzoo.common import PettingZooClass
from benchmarl.models.common import ModelConfig
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.objectives import LossModule

from factor_q import AgentFactorQ
from spnpolicy.algos.critics import TwinFactorQ, build_factor_graph
from spnpolicy.algos.policies import JointPolicy
from spnpolicy.algos.config import field_docs
from spnpolicy.algos.spn_ac import ENV_DEFAULTS, SpnAcConfig
from spnpolicy.integrations.spn_ac_loss import SpnAcLoss
from spnpolicy.integrations.torchrl import joint_actor

__all__ = ["CONFIG_YAML", "Mpe2PettingZooClass", "SETTINGS", "SpnAcAlgorithm",
           "SpnAcAlgorithmConfig"]

#: The algorithm's BenchMARL yaml (its values are the dataclass's defaults).
CONFIG_YAML = pathlib.Path(__file__).with_name("spnac.yaml")

_SPN_AC = {f.name: f for f in dataclasses.fields(SpnAcConfig)}


class SpnAcAlgorithm(Algorithm):
    """spn-ac for BenchMARL: per group a joint circuit policy and twin factor-graph critics.

    Built by :class:`SpnAcAlgorithmConfig` (BenchMARL passes the config's fields and the
    experiment as keyword arguments).
    """

    def __init__(self, **kwargs) -> None:
        settings = {name: kwargs.pop(name) for name in SETTINGS}
        super().__init__(**kwargs)
        self.settings = _spn_ac_config(settings)
        if self.has_rnn:
            raise ValueError("spn-ac for BenchMARL has no recurrent networks (its policy and "
                             "critics are MLPs: policy_hidden, critic_hidden); pass a model "
                             "config that is not recurrent")
        if self.experiment_config.off_policy_use_prioritized_replay_buffer:
            raise ValueError("spn-ac for BenchMARL samples its replay buffer uniformly; set "
                             "off_policy_use_prioritized_replay_buffer=False")
        self._joint_policies: dict[str, JointPolicy] = {}

    def _group_layout(self, group: str) -> tuple[str, int, int, int]:
        """The group's observation key, agents ``n``, observation size and actions ``k``."""
        if self.action_mask_spec is not None and group in self.action_mask_spec.keys():
            raise ValueError(f"spn-ac for BenchMARL does not take action masks; group "
                             f"{group!r} has one")
        spec = self.observation_spec[group]
        keys = list(spec.keys(True, True))
        if len(keys) != 1 or len(spec[keys[0]].shape) != 2:
            raise ValueError(f"spn-ac for BenchMARL needs one observation [n_agents, obs] per "
                             f"group; group {group!r} has {', '.join(map(str, keys)) or 'none'} "
                             f"with shapes {[list(spec[key].shape) for key in keys]}")
        n, obs = spec[keys[0]].shape
        return keys[0], n, obs, self.action_spec[group, "action"].space.n

    def _get_policy_for_loss(self, group: str, model_config: ModelConfig,
                             continuous: bool) -> TensorDictModule:
        if continuous:
            raise ValueError("spn-ac for BenchMARL takes discrete actions only")
        key, n, obs, k = self._group_layout(group)
        cfg = self.settings
        policy = JointPolicy(n * obs, n, k, cfg.policy, cfg.width, cfg.policy_hidden,
                             param_head=cfg.param_head,
                             obs_dim=obs if cfg.param_head == "agents" else None,
                             agent_ids=cfg.agent_ids)
        self._joint_policies[group] = policy.to(self.device)
        return joint_actor(policy, group, key, spec=self.action_spec[group, "action"])

    def _get_policy_for_collection(self, policy_for_loss: TensorDictModule, group: str,
                                   continuous: bool) -> TensorDictModule:
        return policy_for_loss          # it samples from pi; the mode when deterministic

    def _get_loss(self, group: str, policy_for_loss: TensorDictModule,
                  continuous: bool) -> tuple[LossModule, bool]:
        key, n, obs, k = self._group_layout(group)
        cfg = self.settings
        graph = build_factor_graph(cfg.factor_graph, n, cfg.num_factors, cfg.factor_order,
                                   seed=cfg.graph_seed)
        if cfg.critic_input == "agents":
            critic = AgentFactorQ(graph, obs, k, cfg.critic_hidden, cfg.unary,
                                  payoff_hidden=cfg.critic_payoff_hidden, ensemble=2,
                                  agent_ids=cfg.critic_agent_ids, centred=cfg.critic_centred)
        else:
            critic = TwinFactorQ(graph, n * obs, k, cfg.critic_hidden, cfg.unary,
                                 cfg.critic_rank or None)
        critic = critic.to(self.device)
        loss = SpnAcLoss(self._joint_policies[group], critic,
                         gamma=self.experiment_config.gamma, alpha=cfg.alpha,
                         autotune_alpha=cfg.autotune_alpha,
                         target_entropy_scale=cfg.target_entropy_scale,
                         regulariser=cfg.regulariser, mode_guidance=cfg.mode_guidance,
                         mode_floor=cfg.mode_floor, group=group, observation_key=key)
        return loss.to(self.device), True

    def _get_parameters(self, group: str, loss: SpnAcLoss) -> dict[str, Iterable]:
        critic = [p for p in loss.critic_params.values(True, True) if p.requires_grad]
        params = {"loss_qvalue": critic,
                  "loss_actor": list(loss.policy.encoder.parameters())}
        if self.settings.autotune_alpha:
            params["loss_alpha"] = [loss.log_alpha]
        return params

    def process_batch(self, group: str, batch: TensorDictBase) -> TensorDictBase:
        """Team-level ``done``, ``terminated`` and ``reward`` copied to every agent of the
        group where the environment gives none per agent: ``[*B, 1]`` -> ``[*B, n, 1]``."""
        group_shape = batch.get(group).shape
        for name in ("done", "terminated", "reward"):
            if ("next", group, name) not in batch.keys(True, True):
                team = batch.get(("next", name))
                batch.set(("next", group, name), team.unsqueeze(-1).expand(*group_shape, 1))
        return batch


#: spn-ac's settings that the BenchMARL algorithm takes, with ``SpnAcConfig``'s defaults and
#: meanings; the learning rate, discount, Polyak rate and clipping are BenchMARL's
#: ``ExperimentConfig``'s.
SETTINGS = ("policy", "width", "policy_hidden", "param_head", "agent_ids", "critic_hidden",
            "critic_input", "critic_payoff_hidden", "critic_agent_ids", "critic_centred",
            "factor_graph", "num_factors", "factor_order", "graph_seed", "critic_rank", "unary",
            "alpha", "autotune_alpha", "target_entropy_scale", "regulariser", "mode_guidance",
            "mode_floor")


class _SpnAcAlgorithmMethods(AlgorithmConfig):
    """BenchMARL's ``AlgorithmConfig`` interface for spn-ac; the fields are
    :class:`SpnAcAlgorithmConfig`'s."""

    def __post_init__(self) -> None:
        _spn_ac_config({name: getattr(self, name) for name in SETTINGS})

    @classmethod
    def get_from_yaml(cls, path: str | None = None) -> SpnAcAlgorithmConfig:
        """The config of the yaml at ``path`` (default :data:`CONFIG_YAML`)."""
        return super().get_from_yaml(str(CONFIG_YAML) if path is None else path)

    @classmethod
    def for_family(cls, family: str, path: str | None = None) -> SpnAcAlgorithmConfig:
        """:meth:`get_from_yaml`'s config with spn-ac's own defaults for the env family
        ``family`` (``spnpolicy.algos.spn_ac.ENV_DEFAULTS``), those of its fields this config
        has. ``"vmas"``: the policy and the critics read each agent's observation through
        networks shared by the agents (``param_head``, ``critic_input`` "agents")."""
        if family not in ENV_DEFAULTS:
            raise ValueError(f"family must be one of {', '.join(sorted(ENV_DEFAULTS))}, got "
                             f"{family!r}")
        settings = {name: _as_yaml(value) for name, value in ENV_DEFAULTS[family].items()
                    if name in SETTINGS}
        return dataclasses.replace(cls.get_from_yaml(path), **settings)

    @staticmethod
    def associated_class() -> type[Algorithm]:
        return SpnAcAlgorithm

    # what BenchMARL asks of an algorithm: discrete actions only, off-policy, a centralised
    # critic
    supports_continuous_actions = staticmethod(lambda: False)
    supports_discrete_actions = staticmethod(lambda: True)
    on_policy = staticmethod(lambda: False)
    has_centralized_critic = staticmethod(lambda: True)


def _as_yaml(value):
    """A setting's value as yaml and hydra configs hold it: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


def _setting(name: str) -> tuple[str, type, dataclasses.Field]:
    """``SpnAcConfig``'s field ``name`` as a field of :class:`SpnAcAlgorithmConfig`: its
    default, typed as that default is (widths as ``list[int]``)."""
    value = _SPN_AC[name].default
    if isinstance(value, tuple):
        return name, list[int], field(default_factory=lambda: _as_yaml(value))
    return name, type(value), field(default=value)


SpnAcAlgorithmConfig = dataclasses.make_dataclass(
    "SpnAcAlgorithmConfig", [_setting(name) for name in SETTINGS],
    bases=(_SpnAcAlgorithmMethods,),
    namespace={"__module__": __name__, "__doc__": (
        "spn-ac's settings for BenchMARL; every default and meaning is ``SpnAcConfig``'s "
        "(one source); ``policy`` is a name here (yaml holds no builder or circuit)."
        "\n\n``get_from_yaml()`` reads :data:`CONFIG_YAML`; a key set there overrides its "
        "default.\n\nSettings:\n\n" + "\n".join(
            f"- ``{name}``: {field_docs(SpnAcConfig)[name]}" for name in SETTINGS))})


def _spn_ac_config(settings: dict) -> SpnAcConfig:
    """``settings`` as an ``SpnAcConfig`` (whose checks name a bad value's field)."""
    return SpnAcConfig(**{name: tuple(value) if isinstance(value, list) else value
                          for name, value in settings.items()})


class Mpe2PettingZooClass(PettingZooClass):
    """BenchMARL's PettingZoo task (``PettingZooClass``) with its MPE env built from ``mpe2``.

    BenchMARL builds torchrl's ``PettingZooEnv(task=config["task"], parallel=True,
    categorical_actions=True, return_state=has_state(), render_mode="rgb_array", seed,
    device, **rest of the config)``, which looks MPE tasks up in ``pettingzoo.mpe``: from
    pettingzoo 1.25 on that raises "MPE has been moved into its own package: MPE2". This
    class builds the same env from mpe2 (``mpe2.<config["task"]>.parallel_env(
    render_mode="rgb_array", continuous_actions=..., **rest of the config)``) wrapped by
    torchrl's ``PettingZooWrapper`` (which ``PettingZooEnv`` derives from, adding only the
    lookup by name) with the same arguments: categorical actions, the global state when the
    task has one, the seed (the env is reset with it when built), the device, and the
    default group map (``agent_0..N-1`` -> group ``agent``; done when any agent is done).
    Everything else is BenchMARL's ``PettingZooClass``: specs, group map, ``max_steps`` =
    ``max_cycles``, which action kinds a task supports. The one difference is the env's
    class, ``PettingZooWrapper`` rather than ``PettingZooEnv`` (no ``task_name``
    attribute); its specs, keys and steps are the same.

    ``name`` must be BenchMARL's task name (``SIMPLE_SPREAD``, ...), as the supported
    actions and the state are looked up by it; :meth:`from_task` takes it and the config
    from BenchMARL's enum. Needs the ``mpe2`` package.
    """

    @classmethod
    def from_task(cls, task, config: dict | None = None) -> Mpe2PettingZooClass:
        """The task of BenchMARL's ``PettingZooTask`` member ``task`` (e.g.
        ``PettingZooTask.SIMPLE_SPREAD``) with ``config``, default BenchMARL's yaml."""
        config = dict(task.get_from_yaml().config if config is None else config)
        return cls(name=task.name, config=config)

    def get_env_fun(self, num_envs, continuous_actions, seed, device):
        from torchrl.envs.libs.pettingzoo import PettingZooWrapper
        config = copy.deepcopy(self.config)
        if self.supports_continuous_actions() and self.supports_discrete_actions():
            config.update({"continuous_actions": continuous_actions})
        module = importlib.import_module(f"mpe2.{config.pop('task')}")
        return lambda: PettingZooWrapper(
            module.parallel_env(render_mode="rgb_array", **config), categorical_actions=True,
            return_state=self.has_state(), seed=seed, device=device)
