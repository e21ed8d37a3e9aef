"""What a trained spn-ac (or meanfield-ac) knows at predator-prey's capture opportunities: the
critics' value of the joint catch and the policy's mass on it.

    python benchmarks/predator_prey_diagnosis.py RUN_DIR [--steps 2000] [--out FILE]
        [--acting [--episodes 100]]

Rebuilds the run's algorithm from its ``config.json`` and last checkpoint, plays the run's
sampling policy in ``--envs`` copies of its env for ``--steps`` env steps, and at every
state where two active predators i < j stand 4-adjacent to the same live prey (an
*opportunity*: both catching captures it) reports, averaged over the opportunities:

- ``dq_cc``, ``dq_cs``, ``dq_sc``: the twin critics' minimum ``Q(s, u)`` where
  ``(u_i, u_j)`` is (catch, catch), (catch, stay) or (stay, catch), minus where it is
  (stay, stay), the other predators at the policy's mode;
- ``pi_cc``, ``pi_ci``, ``pi_cj``: the policy's exact pair marginal ``pi(catch_i, catch_j | s)``
  and its single marginals; ``lone_share``: of the mass on "i or j catches", the share on
  exactly one catching (a lone, punished attempt);

and over all the steps played, ``captures_per_200`` and ``punished_per_200`` (prey
captured, and prey a lone predator tried to catch, per 200 env steps). One JSON object to
stdout, and to ``--out`` when given.

With ``--acting`` it also reports, under ``acting``, how the run's policy acts beside its own
critics on the same ``--episodes`` episodes (those of ``spnpolicy evaluate RUN_DIR``, same
seed): the greedy return of the policy's mode, of its samples, and of the critics' best joint
action (the first critic's argmax: exact by variable elimination where its tables fit
``MODE_TABLE_SIZE``, else max-plus, as the mode guidance's target). A policy that trails its
critics' argmax has not learned what its critics know.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from spnpolicy.algos.config import field_values
from spnpolicy.algos.registry import get_algorithm, make_config
from spnpolicy.envs import predator_prey_core as core
from spnpolicy.envs.predator_prey_core import CATCH, STAY
from spnpolicy.evaluate import SAVED_RUN_EPISODES, SAVED_RUN_SEED
from spnpolicy.training.evaluation import evaluate
from spnpolicy.training.rundir import RunDir
from spnpolicy.training.vec_env import make_vec_env

#: (u_i, u_j) of the four probed pair actions; the last is the baseline.
PAIR_ACTIONS = ((CATCH, CATCH), (CATCH, STAY), (STAY, CATCH), (STAY, STAY))


def opportunities(world: core.World) -> list[tuple[int, int, int]]:
    """``(copy, i, j)`` for every pair ``i < j`` of active predators 4-adjacent to one live
    prey of ``world``."""
    found = []
    for e in range(len(world.active)):
        for prey, alive in zip(world.prey[e], world.alive[e]):
            if alive:
                gap = np.abs(world.predators[e] - prey).sum(-1)
                near = np.flatnonzero((gap == 1) & world.active[e]).tolist()
                found += [(e, a, b) for a in near for b in near if a < b]
    return found


def load_algorithm(run_dir: Path, num_envs: int, seed: int):
    """The run's algorithm with its last checkpoint's weights, and ``num_envs`` fresh copies
    of its env (a ``predator-prey`` run of a spn-ac-family algorithm)."""
    run, checkpoint = RunDir.locate(run_dir)
    saved = run.read_config()
    if saved["env"] != "predator-prey":
        raise ValueError(f"{run_dir} trained on {saved['env']!r}, not predator-prey")
    spec = get_algorithm(saved["algo"])
    config = field_values(spec.config_cls, saved["config"])
    cfg = make_config(saved["algo"], saved["env"],
                      {key: value for key, value in config.items() if key not in spec.fixed})
    envs = make_vec_env(saved["env"], num_envs, seed=seed, **saved["env_kwargs"])
    algorithm = spec.learner(cfg, envs)
    if not hasattr(algorithm, "policy"):
        raise ValueError(f"{run_dir} trained {saved['algo']!r}: this diagnosis reads a circuit "
                         f"policy and factor critics (spn-ac, meanfield-ac, reinforce)")
    algorithm.load_state_dict(run.load_checkpoint(checkpoint)["algorithm"])
    return algorithm, envs, saved


def diagnose(run_dir: Path, steps: int = 2000, num_envs: int = 16, seed: int = 123) -> dict:
    """The figures of the module docstring for the run in ``run_dir``."""
    algorithm, envs, saved = load_algorithm(run_dir, num_envs, seed)
    generator = torch.Generator().manual_seed(seed)
    rows: dict[str, list[float]] = {key: [] for key in ("dq_cc", "dq_cs", "dq_sc", "pi_cc",
                                                         "pi_ci", "pi_cj", "lone_share")}
    captures = punished = played = 0
    state, obs = envs.reset(seed=seed)
    so_far = np.zeros(num_envs, dtype=np.int64)
    pairs = torch.tensor(PAIR_ACTIONS)                                   # [4, 2]
    for _ in range(max(steps // num_envs, 1)):
        found = opportunities(envs.env.world)
        states = torch.as_tensor(state)
        with torch.no_grad():
            dist = algorithm.policy.distribution(states)
            if found:
                e, i, j = (torch.tensor(c) for c in zip(*found))
                rows_ = torch.arange(len(found))[:, None]
                joint = dist.mode[e].unsqueeze(1).repeat(1, len(pairs), 1)   # [O, 4, n]
                joint[rows_, torch.arange(len(pairs)), i[:, None]] = pairs[:, 0]
                joint[rows_, torch.arange(len(pairs)), j[:, None]] = pairs[:, 1]
                repeat = len(pairs)
                values = algorithm._values(
                    algorithm.critic, states[e].repeat_interleave(repeat, 0),
                    torch.as_tensor(obs)[e].repeat_interleave(repeat, 0))
                q = values.evaluate(joint.flatten(0, 1)).min(0).values.view(-1, repeat)
                for key, column in (("dq_cc", 0), ("dq_cs", 1), ("dq_sc", 2)):
                    rows[key] += (q[:, column] - q[:, 3]).tolist()
                for copy, a, b in found:
                    table = algorithm.policy.distribution(
                        states[copy:copy + 1]).scope_marginals([(a, b)])[0, 0]    # [k, k]
                    both, first, second = (float(table[CATCH, CATCH]), float(table[CATCH].sum()),
                                           float(table[:, CATCH].sum()))
                    some = first + second - both
                    rows["pi_cc"].append(both)
                    rows["pi_ci"].append(first)
                    rows["pi_cj"].append(second)
                    rows["lone_share"].append((some - both) / some if some > 0 else 0.0)
            actions = dist.sample(generator=generator)
        # the batched env itself, for its info: prey captured in each episode so far
        obs, reward, terminated, truncated, info = envs.env.step(actions.numpy())
        state = envs.env.state()
        captured = info["captures"] - so_far                             # [E], this step
        so_far = np.where(terminated | truncated, 0, info["captures"])
        config = envs.env.config
        captures += int(captured.sum())
        if config.punishment:
            punished += int(np.rint((config.capture_reward * captured - reward)
                                    / config.punishment).sum())
        played += num_envs
    envs.close()
    report = {"run": str(run_dir), "algo": saved["algo"], "env_kwargs": saved["env_kwargs"],
              "steps": played, "opportunities": len(rows["dq_cc"]),
              "captures_per_200": 200 * captures / played,
              "punished_per_200": 200 * punished / played}
    report |= {key: float(np.mean(values)) if values else None for key, values in rows.items()}
    return report


def acting(run_dir: Path, episodes: int = SAVED_RUN_EPISODES, seed: int = SAVED_RUN_SEED
           ) -> dict:
    """Greedy return of the run's policy mode, its samples and its critics' argmax, each on
    the same ``episodes`` episodes (those of ``spnpolicy evaluate`` with ``seed``)."""
    algorithm, envs, _ = load_algorithm(run_dir, min(episodes, 64), seed)
    generator = torch.Generator().manual_seed(seed)

    def tensors(state, obs):
        return torch.as_tensor(state), torch.as_tensor(obs)

    def critics_argmax(state, obs):
        values = algorithm._values(algorithm.critic, *tensors(state, obs))
        return algorithm.guidance.best(values[0])

    players = {"policy_mode": lambda state, obs: algorithm.policy.distribution(
                   torch.as_tensor(state)).mode,
               "policy_sample": lambda state, obs: algorithm.sample(*tensors(state, obs),
                                                                    generator),
               "critics_argmax": critics_argmax}
    report: dict = {"episodes": episodes, "seed": seed,
                    "critics_argmax_rule": "exact" if algorithm.guidance.exact else "max-plus"}
    try:
        with torch.no_grad():
            for name, play in players.items():
                report[name] = evaluate(lambda s, o: play(s, o).cpu().numpy(), envs,
                                        episodes, seed=seed)
    finally:
        envs.close()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=2000, help="env steps played (default 2000)")
    parser.add_argument("--envs", type=int, default=16, help="env copies (default 16)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--acting", action="store_true",
                        help="also play the policy's mode, its samples and the critics' argmax")
    parser.add_argument("--episodes", type=int, default=SAVED_RUN_EPISODES,
                        help=f"episodes per player with --acting (default {SAVED_RUN_EPISODES})")
    args = parser.parse_args(argv)
    report = diagnose(args.run_dir, args.steps, args.envs, args.seed)
    if args.acting:
        report["acting"] = acting(args.run_dir, args.episodes)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
