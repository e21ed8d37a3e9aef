"""Twins: agents with identical observations (with nearest observations, two agents on one
cell) need different actions to part, and a greedy policy that gives them one action keeps
them together. Does parting them lift a trained coverage team's greedy success, and can its
joint policy part them by correlation alone?

    python benchmarks/many_agents_twins.py RUN_DIR [RUN_DIR ...] [--beta 1 10]
        [--updates 300] [--episodes 128] [--seed 777] [--out FILE]

For each run (a coverage run of a circuit policy: spn-ac, meanfield-ac) and each ``--beta``:

1. The twin states: every state of 256 greedy episodes from resets seeded 1 (not the
   evaluation's ``--seed``) with a twin pair (``many_agents_probe.twin_pairs``), and one in
   eight of all their states (``others``). 80% of the twin states are for the fit, 20% held
   out.
2. The policy is fitted for ``--updates`` Adam steps (learning rate 3e-4, batches of 64 twin
   states and 64 others) to ``mean p_same + beta * KL``: ``p_same`` is the probability that
   the joint policy gives a twin pair one action (its exact pair marginal), ``KL`` the mean
   over agents of ``KL(before || now)`` of their single marginals, on the batch's twin states
   and others. A small ``beta`` lets the agents' marginals move apart; a large one keeps them,
   and leaves only the joint policy's correlation between the twins to lower ``p_same``.
3. Before and after: ``p_same`` and ``p_same_product`` (the same probability under the
   product of the twins' marginals) on the held-out twin states, the mean KL there, and the
   greedy success over ``--episodes`` episodes from resets seeded ``--seed``.

``p_same`` falling with ``p_same_product`` is twins parted by their own marginals (a
product policy can do that too, through per-agent parameters); ``p_same`` falling below
``p_same_product`` is correlation that only a joint policy has. The fit knows nothing about
the task but "twins differ": a gain in greedy success is what the training signal leaves
on the table. Prints one JSON object per (run, beta) and writes them all to ``--out``
(default ``benchmarks/results/many-agents/twins.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from many_agents_probe import twin_agreement, twin_pairs  # noqa: E402

from spnpolicy.envs.coverage_core import CoverageConfig  # noqa: E402
from spnpolicy.inference import load_agent, load_run_config  # noqa: E402
from spnpolicy.training import Runner, make_vec_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "many-agents" / "twins.json"
COLLECT_EPISODES, COLLECT_SEED = 256, 1
BATCH, LEARNING_RATE, HELD_OUT = 64, 3e-4, 0.2


def play(policy, env_kwargs: dict, episodes: int, seed: int, collect: bool = False):
    """``(greedy success, twin states, their pairs, other states)`` of ``episodes`` greedy
    episodes from resets seeded ``seed``; each episode is played to its end once. Twin states
    are observations ``[n, obs_dim]``, their pairs ``[T, 2]`` agent indices (empty lists
    without ``collect``)."""
    config = CoverageConfig(**env_kwargs)
    envs = make_vec_env("coverage", episodes, **env_kwargs)
    runner = Runner(envs, observations=True)
    runner.reset(seed=seed)
    done = np.zeros(episodes, dtype=bool)
    success = np.zeros(episodes, dtype=bool)
    twins, pairs, others = [], [], []
    try:
        for _ in range(config.max_steps):
            obs = runner.obs.copy()                                        # [E, n, obs_dim]
            with torch.no_grad():
                actions = np.asarray(policy.act(obs))
            if collect:
                found = twin_pairs(obs)
                found = found[~done[found[:, 0]]]
                for e in np.unique(found[:, 0]).tolist():
                    twins.append(obs[e])
                    pairs.append(found[found[:, 0] == e][:, 1:])
                others.extend(obs[e] for e in np.flatnonzero(~done)[::8].tolist())
            step = runner.step(actions)
            ended = ((np.asarray(step.terminated) > 0) | (np.asarray(step.truncated) > 0)) & ~done
            success |= ended & (np.asarray(step.terminated) > 0)
            done |= ended
            if done.all():
                break
    finally:
        envs.close()
    return float(success.mean()), twins, pairs, others


def twin_tables(policy, twins: list, pairs: list):
    """``(p_same [T], p_same_product [T], marginals [B, n, k])`` for the ``B`` twin states
    ``twins`` (observations ``[n, obs_dim]``) with their pairs (``[T_b, 2]`` each, ``T`` in
    all): ``many_agents_probe.twin_agreement`` on them."""
    dist = policy.distribution(torch.as_tensor(np.stack(twins)))
    rows = np.concatenate([np.column_stack([np.full(len(p), b), p])
                           for b, p in enumerate(pairs)])                  # [T, 3]
    return (*twin_agreement(dist, rows), dist.marginals())


def kl(before: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
    """Mean over rows and agents of ``KL(before || now)`` of marginals ``[B, n, k]``."""
    before, now = before.clamp_min(1e-8), now.clamp_min(1e-8)
    return (before * (before.log() - now.log())).sum(-1).mean()


def part(run: str | Path, beta: float, updates: int, episodes: int, seed: int) -> dict:
    """One record (see the module docstring)."""
    saved = load_run_config(run)
    if saved["env"] != "coverage":
        raise ValueError(f"run {str(run)!r} trained on {saved['env']!r}; this reads coverage "
                         f"runs")
    policy = load_agent(run)
    if not callable(getattr(policy, "distribution", None)):
        raise ValueError(f"run {str(run)!r} trained {saved['algo']!r}, which has no circuit "
                         f"policy; this reads spn-ac's family")
    env_kwargs = saved["env_kwargs"]
    _, twins, pairs, others = play(policy, env_kwargs, COLLECT_EPISODES, COLLECT_SEED,
                                   collect=True)
    if len(twins) < 2:
        raise ValueError(f"run {str(run)!r}: its greedy episodes reach {len(twins)} states "
                         f"with twins; nothing to fit")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(twins))
    cut = max(int((1 - HELD_OUT) * len(twins)), 1)
    fit, held = order[:cut], order[cut:]
    with torch.no_grad():
        start_twins = twin_tables(policy, twins, pairs)[2]
        start_others = policy.distribution(torch.as_tensor(np.stack(others))).marginals()

    def measure() -> dict:
        with torch.no_grad():
            same, product, marginals = twin_tables(policy, [twins[i] for i in held],
                                              [pairs[i] for i in held])
        return {"p_same": same.mean().item(), "p_same_product": product.mean().item(),
                "kl": kl(start_twins[held], marginals).item(),
                "greedy_success": play(policy, env_kwargs, episodes, seed)[0]}

    record = {"run": str(run), "algo": saved["algo"], "env_kwargs": env_kwargs, "beta": beta,
              "updates": updates, "episodes": episodes, "seed": seed,
              "twin_states": len(twins), "held_out": len(held), "before": measure()}
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(policy.parameters(), lr=LEARNING_RATE)
    for _ in range(updates):
        batch, other = rng.choice(fit, BATCH), rng.choice(len(others), BATCH)
        same, _, marginals = twin_tables(policy, [twins[i] for i in batch],
                                    [pairs[i] for i in batch])
        now_others = policy.distribution(
            torch.as_tensor(np.stack([others[i] for i in other]))).marginals()
        loss = same.mean() + beta * (kl(start_twins[batch], marginals)
                                     + kl(start_others[other], now_others))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    record["after"] = measure()
    return record


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--beta", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.updates < 0 or args.episodes < 1 or min(args.beta) < 0:
        parser.error(f"--updates must be >= 0, --episodes >= 1 and every --beta >= 0, got "
                     f"{args.updates}, {args.episodes} and {args.beta}")
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        for beta in args.beta:
            rows.append(part(run, beta, args.updates, args.episodes, args.seed))
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
