"""``spnpolicy query``: ask a trained joint policy about one state of its environment.

```
spnpolicy query runs/cov4 --fix 3=noop                 # agent 3 is broken: the others?
spnpolicy query runs/cov4 --drop 2 --samples 10        # agent 2 is lost: the rest's marginal
spnpolicy query runs/cov4/checkpoints/last.pt --env-kw grid_size=5 --seed 7
```

The state is given (``--state``) or the env's reset state for ``--seed`` (the run's env and
env arguments unless ``--env`` / ``--env-kw`` say otherwise); a policy that reads the agents'
observations (``param_head="agents"``) is asked about the reset state's observations.
Printed: the state, each agent's conditional marginal over its actions (named where the env
names them), samples of the joint action, and the most likely joint action with its
probability.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from spnpolicy.cli_args import command, key_value, literal
from spnpolicy.envs.registry import action_names

__all__ = ["action_names", "register", "reset_state"]


def register(commands) -> None:
    """Add the ``query`` subcommand to the CLI's subparsers."""
    query = command(
        commands, run, "query",
        help="query a trained joint policy: conditionals, marginals, samples, MPE",
        description="Ask a trained joint policy about the reset state of its env (for --seed): "
        "each agent's marginal given the --fix evidence with the --drop agents summed out, "
        "samples of the joint action, and the most likely joint action.")
    query.add_argument("checkpoint", metavar="CHECKPOINT",
                       help="run directory (config.json + checkpoints/last.pt) or a checkpoint")
    query.add_argument("--env", default=None, help="environment (default: the run's)")
    query.add_argument("--env-kw", type=key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="environment argument (repeatable); "
                       "overrides the run's, e.g. broken_agents=(3,)")
    query.add_argument("--fix", type=key_value, action="append", default=[],
                       metavar="AGENT=ACTION", help="condition on agent AGENT taking ACTION "
                       "(an index or an action name such as noop; repeatable)")
    query.add_argument("--drop", type=int, action="append", default=[], metavar="AGENT",
                       help="marginalise agent AGENT out: its action is unknown (repeatable)")
    query.add_argument("--seed", type=int, default=0,
                       help="seed of the env reset and of the samples (default 0)")
    query.add_argument("--state", default=None, metavar="X,X,...",
                       help="a given global state, comma-separated (default: the env's reset "
                       "state for --seed; not for a policy that reads the agents' observations)")
    query.add_argument("--samples", type=int, default=5,
                       help="joint actions to sample (default 5)")
    query.add_argument("--best", action="store_true",
                       help="also print the critics' best joint action given the --fix "
                       "evidence: what is best for the others when the fixed agents are "
                       "stuck (spn-ac and its variants; --drop does not apply to it)")


def reset_state(env: str, env_kwargs: dict[str, Any], seed: int):
    """``(global state [state_dim], env)`` after ``reset(seed=seed)``; the state as training
    sees it (``state()``, or the agents' padded observations concatenated when there is
    none: :func:`~spnpolicy.training.vec_env.global_state`)."""
    from spnpolicy.envs import make_env
    from spnpolicy.training.vec_env import global_state

    instance = make_env(env, **env_kwargs)
    observations, _ = instance.reset(seed=seed)
    return global_state(instance, observations), instance


def _given_state(text: str) -> np.ndarray:
    try:
        return np.array([float(x) for x in text.replace(" ", "").strip("[]()").split(",")],
                        dtype=np.float32)
    except ValueError:
        raise ValueError(f"--state must be comma-separated numbers, got {text!r}") from None


def _action(text: str, names: tuple[str, ...], agent: int) -> int:
    if text in names:
        return names.index(text)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--fix {agent}={text}: unknown action {text!r}; expected an index "
                         f"0..{len(names) - 1} or one of {', '.join(names)}") from None


def _fixed(pairs: list[tuple[str, str]], names: tuple[str, ...]) -> dict[int, int]:
    fixed: dict[int, int] = {}
    for agent_text, action_text in pairs:
        try:
            agent = int(agent_text)
        except ValueError:
            raise ValueError(f"--fix {agent_text}={action_text}: AGENT must be an agent index"
                             ) from None
        action = _action(action_text, names, agent)
        if fixed.get(agent, action) != action:
            raise ValueError(f"--fix {agent}={names[fixed[agent]]} and --fix {agent_text}="
                             f"{action_text} fix agent {agent} to two actions; give one")
        fixed[agent] = action
    return fixed


def _joint(actions, names: tuple[str, ...]) -> str:
    return "(" + ", ".join(names[int(a)] for a in actions) + ")"


def run(args: argparse.Namespace) -> int:
    from spnpolicy.inference import (MAX_ENUMERATION, conditional_policy, drop_agents,
                                     load_agent, load_run_config)

    torch.set_num_threads(1)
    if args.samples < 0:
        raise ValueError(f"--samples must be >= 0, got {args.samples}")
    agent = load_agent(args.checkpoint)
    run_config = load_run_config(args.checkpoint)
    if not callable(getattr(agent, "distribution", None)) or \
            not hasattr(agent, "state_dim"):
        raise ValueError(f"the run trained {run_config.get('algo')!r}, whose agent "
                         f"({type(agent).__name__}) holds no joint policy to query; "
                         f"query runs of a circuit policy (spn-ac, meanfield-ac, reinforce)")
    env = args.env or run_config["env"]
    env_kwargs = dict(run_config.get("env_kwargs", {})) if env == run_config["env"] else {}
    env_kwargs.update((k, literal(v)) for k, v in args.env_kw)
    if args.state is None:
        state, instance = reset_state(env, env_kwargs, args.seed)
    else:
        state, instance = _given_state(args.state), None
    # what the joint policy reads (an agent acting by its critics reads theirs when it acts)
    joint_policy = getattr(agent, "policy", agent)
    if joint_policy.needs_obs and instance is None:
        raise ValueError("--state: this run's policy reads each agent's observation "
                         "(param_head='agents'), which a given global state does not hold; "
                         "use the env's reset state (--seed)")
    inputs = _observations(instance, args.seed) if joint_policy.needs_obs else state
    if inputs.shape != tuple(joint_policy.input_shape):
        what = "observations of shape" if joint_policy.needs_obs else "states of size"
        raise ValueError(f"{'--state' if instance is None else f'env {env!r} {env_kwargs}'} "
                         f"has {what} {_shape(inputs.shape)}, but "
                         f"the policy was trained on {run_config['env']!r} "
                         f"{run_config.get('env_kwargs', {})} with {what} "
                         f"{_shape(joint_policy.input_shape)}")
    n, k = agent.num_agents, agent.num_actions
    names = action_names(env, k)
    fixed = _fixed(args.fix, names)
    _check_some_free(fixed, args.drop, n)
    states = torch.as_tensor(inputs).unsqueeze(0)

    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        if args.drop:
            policy = drop_agents(agent, states, args.drop, fixed=fixed or None)
            kept = policy.agents
        else:
            policy = conditional_policy(agent, states, fixed)
            kept = tuple(range(n))
        marginals = policy.marginals()[0]                                # [m, k]
        samples = policy.sample((args.samples,), generator=generator)[:, 0]  # [N, m]
        # with agents dropped the mode is found by enumerating the kept agents' k^m actions
        enumerable = not args.drop or k ** len(kept) <= MAX_ENUMERATION
        mode = policy.mode if enumerable else None                        # [1, m]
        mode_prob = float(policy.log_prob(mode).exp()[0]) if enumerable else None

    shown = " ".join(f"{key}={value!r}" for key, value in env_kwargs.items())
    if instance is None:
        print(f"state: given ({env} {shown}): " + ", ".join(f"{x:.4g}" for x in state))
    else:
        print(f"state: {env} {shown} reset with seed {args.seed}")
        _print_layout(instance)
    given = ", ".join(f"agent {a} = {names[u]}" for a, u in sorted(fixed.items())) or "nothing"
    dropped = ", ".join(map(str, sorted(set(args.drop)))) or "none"
    print(f"given: {given}; dropped (marginalised): {dropped}\n")
    width = max(6, *map(len, names))
    print("probability of each action (columns) for each agent (rows):")
    print("agent  " + " ".join(f"{name:>{width}}" for name in names))
    for i in range(n):
        if i not in kept:
            print(f"{i:<5}  {'dropped':>{width}}")
            continue
        row = marginals[kept.index(i)]
        note = "   (fixed)" if i in fixed else ""
        print(f"{i:<5}  " + " ".join(f"{float(p):>{width}.3f}" for p in row[:k]) + note)
    agents = "agents " + ", ".join(map(str, kept))
    print(f"\n{args.samples} samples of the joint action ({agents}):")
    for sample in samples:
        print("  " + _joint(sample, names))
    if mode is None:
        print(f"most likely joint action ({agents}): not computed: with agents dropped it "
              f"takes enumerating the {k}**{len(kept)} joint actions of the kept agents (limit "
              f"{MAX_ENUMERATION:,}); the samples above are exact")
    else:
        print(f"most likely joint action ({agents}): {_joint(mode[0], names)}, probability "
              f"{mode_prob:.4f}")
    if args.best:
        best, q = _critics_best(args.checkpoint, state, instance, args.seed, fixed)
        print(f"critics' best joint action given the fixed agents (agents 0..{n - 1}): "
              f"{_joint(best, names)}, Q = {q:.4g}")
    return 0


def _critics_best(checkpoint: str, state: np.ndarray, instance, seed: int,
                  fixed: dict[int, int]) -> tuple[torch.Tensor, float]:
    """The first critic's best joint action ``[n]`` given ``fixed`` and its Q, on the
    global ``state`` or, for critics that read each agent's observation, on the env
    ``instance``'s observations after ``reset(seed=seed)``."""
    from spnpolicy.inference import best_joint_action, load_agent

    team = load_agent(checkpoint, acting="critics")
    if len(team.input_shape) == 1:
        inputs = state
    elif instance is None:
        raise ValueError("--best: this run's critics read each agent's observation, which a "
                         "given --state does not hold; use the env's reset state (--seed)")
    else:
        inputs = _observations(instance, seed)
    inputs = torch.as_tensor(inputs).unsqueeze(0)
    with torch.no_grad():
        best = best_joint_action(team, inputs, fixed)
        q = float(team.values(inputs).evaluate(best)[0])
    return best[0], q


def _observations(instance, seed: int) -> np.ndarray:
    """The agents' observations ``[n, obs_dim]`` (padded as in training) of the env
    ``instance`` after ``reset(seed=seed)``."""
    from spnpolicy.training.vec_env import max_obs_dim, stack_observations

    observations, _ = instance.reset(seed=seed)
    agents = list(instance.possible_agents)
    return stack_observations(observations, agents, max_obs_dim(instance),
                              {a: instance.observation_space(a) for a in agents})


def _shape(shape) -> str:
    """``[n, d]`` for a shape of two sizes, ``d`` for one."""
    return str(shape[0]) if len(shape) == 1 else f"[{', '.join(map(str, shape))}]"


def _check_some_free(fixed: dict[int, int], dropped: list[int], n: int) -> None:
    """ValueError when --fix and --drop leave no agent of the ``n`` to ask about."""
    taken = set(fixed) | set(dropped)
    if set(range(n)) <= taken:
        shown = [", ".join(map(str, sorted(set(a)))) or "none" for a in (fixed, dropped)]
        raise ValueError(f"--fix (agents {shown[0]}) and --drop (agents {shown[1]}) cover all "
                         f"{n} agents of the policy (0..{n - 1}); leave at least one agent "
                         f"free to query")


def _print_layout(instance) -> None:
    """Agent and goal positions for gridworlds that expose them (coverage)."""
    env = getattr(instance, "unwrapped", instance)
    for what in ("agent_positions", "goal_positions"):
        positions = getattr(env, what, None)
        if positions is not None:
            cells = " ".join(f"({r},{c})" for r, c in np.asarray(positions).tolist())
            print(f"  {what.replace('_', ' ')} (row, col): {cells}")
