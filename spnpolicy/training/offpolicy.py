"""The one off-policy training loop: collect -> store -> sample -> update -> targets -> log.

An algorithm is an :class:`OffPolicyAlgorithm`: its networks, optimizers and losses behind
``update(batch) -> metrics`` (one gradient step, callable alone in a test), how it acts
(``explore`` while collecting, ``greedy`` and ``sample`` when evaluated) and which target
networks follow which online ones (:class:`TargetSync`). :func:`train_offpolicy` owns the
rest, in this order per loop iteration:

1. evaluate (``session.eval_due``) and checkpoint (``session.checkpoint_due``);
2. collect one step of every env copy: uniform random joint actions before
   ``learning_starts`` when the algorithm asks for them (``uniform_warmup``), else
   ``algorithm.explore``; store the rows of :class:`~spnpolicy.training.TransitionStream`
   (n-step returns, hindsight copies) in the replay buffer;
3. every ``update_every`` iterations from ``learning_starts`` on, once the buffer holds a
   row: ``gradient_steps`` times sample a batch, ``algorithm.update(batch)``,
   Polyak-update the targets (``TargetSync.tau``);
4. hard-copy the targets whenever ``TargetSync.interval`` env steps are crossed;
5. log a training record (``session.log_due``): the training episodes that ended and the
   updates' metrics since the previous one (:class:`~spnpolicy.training.TrainingMeans`).

Everything random is either a generator checkpointed here or the global generators
(``get_rng_state``), so a run resumed from a checkpoint is the uninterrupted run.

```python
AlgorithmSpec("my-algo", "...", MyConfig, MyAlgorithm)   # loop=train_offpolicy, the default
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from spnpolicy.training.buffer import Batch, ReplayBuffer
from spnpolicy.training.evaluation import evaluate_run
from spnpolicy.training.metrics import TrainingMeans, UpdateMeans
from spnpolicy.training.observations import agent_input
from spnpolicy.training.runner import Runner
from spnpolicy.training.seeding import get_rng_state, seed_everything, set_rng_state
from spnpolicy.training.session import Session
from spnpolicy.training.stream import TransitionStream
from spnpolicy.training.targets import Polyak, hard_update
from spnpolicy.training.vec_env import VecEnv, make_vec_env, observation_dict

__all__ = ["ActingAgent", "LoopState", "OffPolicyAlgorithm", "TargetSync", "agent_loader",
           "load_algorithm", "load_modules_state", "modules_state", "train_offpolicy"]


@dataclass(frozen=True)
class TargetSync:
    """Which target networks track which online ones, and how.

    ``pairs``: ``(target, online)`` modules. ``tau``: Polyak rate applied after every
    gradient step (``None``: no soft update). ``interval``: env steps between hard copies
    (``None``: no hard copy). Both may be set.
    """

    pairs: Sequence[tuple[nn.Module, nn.Module]] = ()
    tau: float | None = None
    interval: int | None = None


class OffPolicyAlgorithm:
    """What :func:`train_offpolicy` needs from an algorithm (subclass and fill in).

    Inputs are tensors on the algorithm's device: ``state`` ``[E, state_dim]``, ``obs``
    ``[E, n, obs_dim]`` (``None`` unless ``needs_obs``); actions are LongTensors ``[E, n]``.
    """

    needs_obs: bool = True
    """The replay buffer stores per-agent observations (decentralised networks read them)."""
    uniform_warmup: bool = True
    """Act uniformly at random before ``learning_starts`` (else ``explore`` from step 0)."""
    agent: nn.Module
    """The trained agent the loop returns (``act(observations, deterministic=True)``)."""
    target_sync: TargetSync = TargetSync()
    notes: tuple[str, ...] = ()
    """Lines printed when the run starts (with the evaluation lines), e.g. of a slow start."""
    branches: tuple[np.ndarray, np.ndarray] | None = None
    """``(source [m], target [m])``: before each ``explore`` the env copies ``target`` are
    set to the current states of the copies ``source`` (:meth:`Runner.branch`); None: never."""

    def explore(self, state: torch.Tensor, obs: torch.Tensor | None, step: int,
                generator: torch.Generator, settled: torch.Tensor | None = None,
                elapsed: torch.Tensor | None = None) -> torch.Tensor:
        """Joint actions for collection at env step ``step``; ``settled [E, n]`` bool is the
        env's :meth:`~spnpolicy.training.vec_env.VecEnv.settled` (None where it has none),
        ``elapsed [E]`` int64 each copy's steps since its episode began."""
        raise NotImplementedError

    def greedy(self, state: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        """Greedy joint actions (evaluation)."""
        raise NotImplementedError

    def sample(self, state: torch.Tensor, obs: torch.Tensor | None,
               generator: torch.Generator) -> torch.Tensor:
        """The stochastic policy's joint actions (evaluated when ``eval_stochastic``)."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float | torch.Tensor]:
        """One gradient step on ``batch``; returns scalar metrics (averaged between evals)."""
        raise NotImplementedError

    def schedule_metrics(self, step: int) -> dict[str, float]:
        """Scheduled values logged with each evaluation (e.g. epsilon)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Networks, targets, optimizers and any counters: what a resume needs."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


def modules_state(modules: Mapping[str, nn.Module],
                  optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """A learner's checkpoint state: each module's under its name, the optimizers' under
    ``"optimizers"`` (:func:`load_modules_state` reads it back)."""
    return {name: m.state_dict() for name, m in modules.items()} | {
        "optimizers": {name: o.state_dict() for name, o in optimizers.items()}}


def load_modules_state(state: Mapping[str, Any], modules: Mapping[str, nn.Module],
                       optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
    for name, module in modules.items():
        module.load_state_dict(state[name])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])


class ActingAgent(nn.Module):
    """A trained agent's ``act`` on one input kind: per-agent observations ``[B, n, obs_dim]``
    when ``needs_obs``, else global states ``[B, state_dim]`` (or one of either).

    Subclasses set ``needs_obs``, ``input_shape`` and define ``greedy_actions(x)`` and
    ``sampled_actions(x, generator)`` on a batch ``x`` -> ``[B, n]``.
    """

    needs_obs: bool = True
    input_shape: tuple[int, ...] = ()

    def greedy_actions(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sampled_actions(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, observations, deterministic: bool = True,
            generator: torch.Generator | None = None):
        """Joint actions ``[B, n]`` (``[n]`` for one input): greedy, or sampled from the
        exploring policy when not ``deterministic``. numpy int64 for numpy or list input,
        a LongTensor for tensor input; for a PettingZoo observation dict (agents that read
        per-agent observations), a dict ``{agent: action}`` that ``env.step`` takes.
        ValueError for another shape or a NaN or infinite input (:func:`agent_input`)."""
        shape = tuple(self.input_shape)
        if isinstance(observations, Mapping):
            x = observation_dict(observations, shape[0] if self.needs_obs else 0,
                                 shape[1] if self.needs_obs else None)
            return dict(zip(observations, self.act(x, deterministic, generator).tolist()))
        x, single = agent_input(observations, shape, next(self.parameters()).device)
        actions = self.greedy_actions(x) if deterministic else self.sampled_actions(x, generator)
        actions = actions[0] if single else actions
        return actions if isinstance(observations, torch.Tensor) else actions.cpu().numpy()


class LoopState:
    """What both training loops checkpoint besides the learner and its data: the runner,
    the acting generator, the global random state, the metrics averaged between evaluations
    (``stats``) and between training records (``training``)."""

    def __init__(self, runner: Runner, act_generator: torch.Generator) -> None:
        self.runner, self.act_generator = runner, act_generator
        self.stats, self.training = UpdateMeans(), TrainingMeans()

    def state_dict(self) -> dict[str, Any]:
        return {"runner": self.runner.state_dict(),
                "act_generator": self.act_generator.get_state(), "rng": get_rng_state(),
                "stats": self.stats.state_dict(), "training": self.training.state_dict()}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Restore from a checkpoint's ``payload``, the global random state last."""
        self.runner.load_state_dict(payload["runner"])
        self.act_generator.set_state(payload["act_generator"])
        set_rng_state(payload["rng"])
        self.stats.load_state_dict(payload["stats"])
        if "training" in payload:   # absent from checkpoints made before training records
            self.training.load_state_dict(payload["training"])


def train_offpolicy(cfg: Any, env: str, env_kwargs: dict, seed: int, session: Session,
                    build: Callable[[Any, VecEnv], OffPolicyAlgorithm]) -> nn.Module:
    """Train ``build(cfg, envs)`` (an :class:`OffPolicyAlgorithm`) on ``env`` with the
    :class:`~spnpolicy.algos.config.OffPolicyConfig` fields of ``cfg``; returns its agent.

    ``build`` runs after the global generators are seeded, so initial weights depend on
    ``seed`` only.
    """
    seed_everything(seed)
    device = torch.device(cfg.device)
    envs = make_vec_env(env, cfg.num_envs, seed=seed, **cfg.training_env_kwargs(env_kwargs))
    runner = Runner(envs)
    runner.reset(seed=seed)
    algorithm = build(cfg, envs)
    runner.observations = algorithm.needs_obs   # else None: nothing copies them
    buffer = ReplayBuffer(cfg.buffer_size, envs.state_dim, envs.num_agents,
                          obs_dim=envs.obs_dim if algorithm.needs_obs else None, seed=seed,
                          device=device)
    stream = TransitionStream(envs, cfg.n_step, cfg.gamma, cfg.hindsight, seed=seed,
                              shaping=cfg.shaping, shaping_form=cfg.shaping_form)
    warmup_rng = np.random.default_rng(seed)
    act_generator = torch.Generator(device).manual_seed(seed)
    progress = LoopState(runner, act_generator)
    stats, training = progress.stats, progress.training
    sync = algorithm.target_sync

    def tensors(state: np.ndarray, obs: np.ndarray):
        return (torch.as_tensor(state, device=device),
                torch.as_tensor(obs, device=device) if algorithm.needs_obs else None)

    @torch.no_grad()
    def greedy(state: np.ndarray, obs: np.ndarray) -> np.ndarray:
        return algorithm.greedy(*tensors(state, obs)).cpu().numpy()

    def sampler(generator: torch.Generator):
        @torch.no_grad()
        def act(state: np.ndarray, obs: np.ndarray) -> np.ndarray:
            return algorithm.sample(*tensors(state, obs), generator).cpu().numpy()
        return act

    payload = session.restore()
    if payload is not None:
        algorithm.load_state_dict(payload["algorithm"])
        buffer.load_state_dict(payload["buffer"])
        stream.load_state_dict(payload["stream"])
        warmup_rng.bit_generator.state = payload["warmup_rng"]
        progress.load_state_dict(payload)
    elif session.init_from is not None:
        session.warm_start(algorithm, "algorithm")
    step = session.begin(payload)
    for line in algorithm.notes:
        session.note(line)
    polyak = [] if sync.tau is None else [Polyak(target, online) for target, online in sync.pairs]

    while True:
        if session.eval_due(step):
            metrics = evaluate_run(env, env_kwargs, seed, step, cfg.eval_episodes, greedy,
                                   sampler if cfg.eval_stochastic else None, device)
            session.record(step, metrics | stats.pop() | algorithm.schedule_metrics(step))
        if session.checkpoint_due(step):
            session.save(step, progress.state_dict() | {
                "algorithm": algorithm.state_dict(), "buffer": buffer.state_dict(),
                "stream": stream.state_dict(), "warmup_rng": warmup_rng.bit_generator.state})
        if step >= cfg.total_steps:
            break

        # collect -> store
        if algorithm.uniform_warmup and step < cfg.learning_starts:
            actions = warmup_rng.integers(0, envs.num_actions, size=(cfg.num_envs,
                                                                     envs.num_agents))
        else:
            if algorithm.branches is not None:
                runner.branch(*algorithm.branches)
            settled = envs.settled()
            with torch.no_grad():
                actions = algorithm.explore(
                    *tensors(runner.state, runner.obs), step, act_generator,
                    None if settled is None else torch.as_tensor(settled, device=device),
                    torch.as_tensor(runner.elapsed, device=device)).cpu().numpy()
        buffer.add(stream.push(runner.step(actions)))
        previous, step = step, step + cfg.num_envs
        session.advance(cfg.num_envs)

        # sample -> update -> soft targets (n-step rows reach the buffer n - 1 steps late,
        # so with a small learning_starts it can still be empty)
        if step >= cfg.learning_starts and len(buffer) and \
                (step // cfg.num_envs) % cfg.update_every == 0:
            for _ in range(cfg.gradient_steps):
                metrics = algorithm.update(buffer.sample(cfg.batch_size))
                stats.add(**metrics)
                training.add_update(metrics)
                for pair in polyak:
                    pair(sync.tau)
        # hard targets
        if sync.interval is not None and step // sync.interval > previous // sync.interval:
            for target, online in sync.pairs:
                hard_update(target, online)
        # log
        training.add_episodes(runner.pop_episodes())
        if session.log_due(step):
            session.record_training(step, training.pop(envs.has_success)
                                    | algorithm.schedule_metrics(step))

    envs.close()
    session.close()
    return algorithm.agent.eval()


def load_algorithm(config_cls: type, build: Callable[[Any, VecEnv], OffPolicyAlgorithm],
                   run: dict[str, Any], payload: dict[str, Any]) -> OffPolicyAlgorithm:
    """``build(config_cls(**run["config"]), envs)`` for the run's env (``run``: its
    ``config.json``), with the checkpoint ``payload``'s ``"algorithm"`` entry loaded: the
    trained algorithm, its critics and targets too. ValueError when the checkpoint does not
    hold what the config describes."""
    envs = make_vec_env(run["env"], 1, **run.get("env_kwargs", {}))
    try:
        algorithm = build(config_cls(**run["config"]), envs)
    finally:
        envs.close()
    try:
        algorithm.load_state_dict(payload["algorithm"])
    except (KeyError, RuntimeError, TypeError, ValueError):
        raise ValueError(f"the checkpoint does not hold the {run.get('algo')!r} agent that "
                         f"the run's config describes (written by another run or version)"
                         ) from None
    return algorithm


def agent_loader(config_cls: type, build: Callable[[Any, VecEnv], OffPolicyAlgorithm]
                 ) -> Callable[[dict[str, Any], dict[str, Any]], nn.Module]:
    """An ``AlgorithmSpec.load_agent`` for an algorithm on this loop: ``load(run, payload)``
    is :func:`load_algorithm`'s agent, in eval mode."""
    def load(run: dict[str, Any], payload: dict[str, Any]) -> nn.Module:
        return load_algorithm(config_cls, build, run, payload).agent.eval()
    return load
