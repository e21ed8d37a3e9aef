"""Helpers for algorithm config dataclasses: value checks that name the field, the fields'
one-line docstrings, and reading ``key=value`` strings and config-file values as a field's
type (for the CLI, config files and saved runs; the files themselves:
:mod:`spnpolicy.algos.config_files`)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from spnpolicy.training.offpolicy import train_offpolicy
from spnpolicy.training.shaping import SHAPING_FORMS
from spnpolicy.training.tracking import TRACKERS

__all__ = ["AlgorithmSpec", "COVERAGE_BUDGET", "MATRIX_BUDGET", "OffPolicyConfig", "RunConfig", "boolean", "check_bool",
           "check_choice", "check_float", "check_hidden", "check_int", "checked", "field_docs",
           "field_values", "fraction", "integer", "non_negative", "number", "one_of",
           "parse_field_value", "positive", "rate", "widths"]


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_float(name: str, value: Any, low: float, high: float = math.inf,
                low_open: bool = False, high_open: bool = False, finite: bool = True) -> None:
    """``value`` must be a real number in the interval (``_open`` bounds excluded), finite
    unless ``finite`` is False (then ``inf`` is allowed where ``high`` is)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and not math.isnan(value) and (math.isfinite(value) or not finite)
          and (value > low if low_open else value >= low)
          and (value < high if high_open else value <= high))
    if not ok:
        excluded = high_open or (finite and high == math.inf)   # a finite value is below inf
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if excluded else ']'}"
        kind = "a finite number" if finite else "a number"
        raise ValueError(f"{name} must be {kind} in {interval}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool (true or false), got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_hidden(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or any(isinstance(h, bool) or not isinstance(h, int)
                                           or h < 1 for h in value):
        raise ValueError(f"{name} must be a tuple of positive ints (layer widths), got {value!r}")


# --- checks carried by the fields ----------------------------------------------------------
#: A field's check: ``check(name, value)`` raises ValueError naming the field and the value,
#: and returns the value to keep (normalised: a list of layer widths as a tuple) or None.
Check = Callable[[str, Any], Any]


def checked(default: Any, check: Check) -> Any:
    """A config field with ``default`` whose value ``check`` validates when the config is
    built (:meth:`RunConfig.__post_init__` reads it from the field's metadata; a subclass
    that redeclares the field with another default keeps the check)."""
    return dataclasses.field(default=default, metadata={"check": check})


def integer(minimum: int) -> Check:
    """An int ``>= minimum`` (not a bool)."""
    return functools.partial(check_int, minimum=minimum)


def number(low: float, high: float = math.inf, low_open: bool = False,
           high_open: bool = False, finite: bool = True) -> Check:
    """A real number in the interval from ``low`` to ``high`` (``_open``: excluded), finite
    unless ``finite`` is False."""
    return functools.partial(check_float, low=low, high=high, low_open=low_open,
                             high_open=high_open, finite=finite)


def one_of(*choices: Any) -> Check:
    return functools.partial(check_choice, choices=choices)


def widths(name: str, value: Any) -> tuple[int, ...]:
    """Hidden layer widths: a tuple of positive ints (a list, as JSON gives it, as a tuple)."""
    value = tuple(value) if isinstance(value, list) else value
    check_hidden(name, value)
    return value


boolean: Check = check_bool
positive = number(0.0, low_open=True)           #: > 0: learning rates, temperatures
non_negative = number(0.0)                      #: >= 0: loss weights
fraction = number(0.0, 1.0)                     #: in [0, 1]: discounts, lambdas, scales
rate = number(0.0, 1.0, low_open=True)          #: in (0, 1]: Polyak rates


def _device(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string such as 'cpu', got {value!r}")


@cache
def _field_checks(cls: type) -> tuple[tuple[str, Check], ...]:
    """``(name, check)`` of every field of the config class ``cls`` that has one, in field
    order; a field redeclared without a check keeps its base class's."""
    out = []
    for f in dataclasses.fields(cls):
        for klass in cls.__mro__:
            own = getattr(klass, "__dataclass_fields__", {}).get(f.name)
            if own is not None and "check" in own.metadata:
                out.append((f.name, own.metadata["check"]))
                break
    return tuple(out)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of the dataclass ``cls`` (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Fields every algorithm config has: budget, parallel envs, evaluation, checkpoints.

    Algorithm configs subclass it; the values here are generic defaults, each algorithm's
    own defaults and per-env overrides come first. A field declared with :func:`checked`
    carries its check, which ``__post_init__`` runs; a subclass writes ``__post_init__``
    only for rules between fields (calling ``super().__post_init__()`` first).
    """

    total_steps: int = checked(100_000, integer(1))
    """Env-step budget: transitions collected, summed over the parallel env copies."""
    num_envs: int = checked(8, integer(1))
    """Env copies stepped together (each loop iteration collects num_envs transitions)."""
    eval_interval: int = checked(10_000, integer(1))
    """Env steps between greedy evaluations (also one at step 0 and one at the end)."""
    eval_episodes: int = checked(32, integer(1))
    """Episodes per evaluation, played in fixed-seed eval envs."""
    eval_stochastic: bool = checked(True, boolean)
    """Also evaluate the sampling policy (metrics prefixed stochastic_)."""
    checkpoint_interval: int = checked(10_000, integer(1))
    """Env steps between checkpoints (runs with an out_dir; one is also written at the end)."""
    log_interval: int = checked(1_000, integer(0))
    """Env steps between training records in metrics.jsonl / .csv (marked "phase": "train";
    TensorBoard: train/): the return, length and success of the training episodes that ended
    and the mean losses since the previous record, to follow learning between evaluations.
    0: none."""
    tracking: str = checked("none", one_of(*TRACKERS))
    """Experiment tracking: 'mlflow' also logs the config as params and every evaluation and
    training record as metrics (step = env steps) to MLflow (the mlflow extra), at
    MLFLOW_TRACKING_URI or else in the run directory's mlflow.db; 'none': off."""
    device: str = checked("cpu", _device)
    """Torch device for networks and updates."""
    torch_threads: int = checked(1, integer(0))
    """Torch CPU threads during the run (small networks run fastest on 1); 0 keeps torch's."""
    shaping: bool = checked(False, boolean)
    """Learn from r + gamma Phi(s') - Phi(s) with the env's potential (Ng et al. 1999; Phi of a
    terminal state is 0; envs with a potential: coverage). Evaluation keeps the env's reward."""
    shaping_form: str = checked("potential", one_of(*SHAPING_FORMS))
    """With shaping: 'potential' adds gamma Phi(s') - Phi(s) (the task's optimal policies
    unchanged, but where the env's reward is never reached the values learn to cancel it);
    'progress' adds Phi(s') - Phi(s), a dense reward for progress that does not fade (it also
    pays for nearing the goals sooner; one-step rows only, so n_step must be 1)."""
    start_on_goals: float = checked(0.0, fraction)
    """Training envs only (envs with goals: coverage): each episode starts a random share of
    the agents, from none to this value, on distinct goals, so that some episodes begin
    nearly solved (a start-state curriculum). Evaluation keeps the env's own starts. 0: off."""

    def training_env_kwargs(self, env_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The training envs' arguments: ``env_kwargs`` plus ``start_on_goals`` when set
        (evaluation envs take ``env_kwargs`` as given)."""
        if not self.start_on_goals:
            return dict(env_kwargs)
        return dict(env_kwargs) | {"start_on_goals": self.start_on_goals}

    def __post_init__(self) -> None:
        """Every field's check (:func:`checked`), in field order; subclasses add the rules
        between fields after ``super().__post_init__()``."""
        for name, check in _field_checks(type(self)):
            value = check(name, getattr(self, name))
            if value is not None:
                object.__setattr__(self, name, value)


@dataclasses.dataclass(frozen=True)
class OffPolicyConfig(RunConfig):
    """Fields of the replay-based algorithms (spn-ac's family and the Q-learners)."""

    buffer_size: int = checked(200_000, integer(1))
    """Replay buffer capacity in transitions."""
    batch_size: int = checked(128, integer(1))
    """Transitions per gradient step."""
    learning_starts: int = checked(5_000, integer(0))
    """Env steps collected before the first update."""
    update_every: int = checked(1, integer(1))
    """Loop iterations (each num_envs env steps) between update rounds."""
    gradient_steps: int = checked(1, integer(1))
    """Gradient steps per update round."""
    gamma: float = checked(0.99, fraction)
    """Discount factor."""
    n_step: int = checked(1, integer(1))
    """Steps of reward summed before bootstrapping (1: the one-step target)."""
    max_grad_norm: float = checked(10.0, non_negative)
    """Gradient-norm clipping of every network; 0 disables it."""
    hindsight: bool = checked(False, boolean)
    """Also store every finished episode's transitions with hindsight goals (HER's future
    strategy; envs with goals to move: coverage). About doubles the rows stored per env
    step, so the buffer then spans about half as many env steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shaping and self.shaping_form == "progress" and self.n_step != 1:
            raise ValueError(f"shaping_form='progress' needs one-step rows (n_step=1; the "
                             f"undiscounted progress of an n-step row needs the potentials of "
                             f"its inner steps), got n_step={self.n_step}")


#: The env-step budgets and evaluation schedules that every algorithm's per-env defaults
#: start from: the one-step matrix games and coverage.
MATRIX_BUDGET = dict(total_steps=2_000, num_envs=8, eval_interval=250, eval_episodes=8,
                     checkpoint_interval=500)
COVERAGE_BUDGET = dict(total_steps=300_000, num_envs=16, eval_interval=20_000,
                       eval_episodes=200, checkpoint_interval=20_000)


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """A registry entry: how to configure and train one algorithm.

    ``learner(config, envs)`` builds the algorithm's learner; ``loop`` is the training loop
    that runs it, :func:`~spnpolicy.training.offpolicy.train_offpolicy` (an
    :class:`~spnpolicy.training.offpolicy.OffPolicyAlgorithm`) or
    :func:`~spnpolicy.training.onpolicy.train_onpolicy` (an on-policy learner).
    :meth:`train` runs that loop inside a :class:`~spnpolicy.training.Session` and returns
    the trained agent (with ``act(observations, deterministic=True)``). ``fixed`` are the
    config values that define the algorithm (variants share a config class);
    ``env_defaults`` maps an env name or family (``matrix``, ``coverage``, ``mpe``, ``lbf``)
    to default overrides. ``load_agent(run, payload)`` rebuilds the trained agent from a
    run's ``config.json`` content and checkpoint payload (``spnpolicy.inference.load_agent``
    calls it).
    """

    name: str
    summary: str
    config_cls: type
    learner: Callable[[Any, Any], Any]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    env_defaults: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    load_agent: Any = None
    loop: Callable[..., Any] = train_offpolicy

    def train(self, cfg: Any, env: str, env_kwargs: dict, seed: int, session: Any) -> Any:
        """Train the learner on ``env`` with the config ``cfg`` by its loop; the agent."""
        return self.loop(cfg, env, env_kwargs, seed, session, self.learner)


def parse_field_value(cls: type, name: str, text: str) -> Any:
    """Convert the string ``text`` to the type of field ``name`` of dataclass ``cls``.

    ints and floats as Python literals (``1e-3``, ``100_000``), bools as true/false/1/0,
    tuples of ints as ``128,128`` (empty string = ``()``); strings as given.
    """
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    if name not in hints or name not in valid:
        raise ValueError(f"unknown config key {name!r}; valid keys: {', '.join(valid)}")
    kind = hints[name]
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(text.replace("_", ""))
        if kind is float:
            return float(text)
        if typing.get_origin(kind) is tuple:
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            return tuple(int(p) for p in parts)
        return text
    except ValueError:
        raise ValueError(f"{name}: cannot read {text!r} as {getattr(kind, '__name__', kind)}"
                         ) from None


def field_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON values of fields of dataclass ``cls`` (a config file, a run's ``config.json``)
    as the fields' types: a list as a tuple for a tuple field, and a string for a field of
    another type in ``--set``'s text form, read by :func:`parse_field_value` (``"1e-3"``,
    ``"64,64"``, ``"true"``); other values as given (the dataclass checks them).
    ValueError for an unknown key, listing the valid ones."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(valid)}")
    out = {}
    for key, value in values.items():
        if isinstance(value, str) and hints[key] is not str:
            value = parse_field_value(cls, key, value)
        elif isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            value = tuple(value)
        out[key] = value
    return out
