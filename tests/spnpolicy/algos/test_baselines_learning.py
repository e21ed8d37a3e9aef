"""What the baselines provably can learn, at their default matrix-game budgets.

IQL, VDN and QMIX represent the additive ``linear`` game exactly; QMIX's monotonic mixer
represents ``monotonic``; DCG's pairwise payoff on the complete graph of two agents is the
whole ``climbing`` table. Longer multi-seed checks are marked slow.
"""

import pytest
import torch

import spnpolicy
from spnpolicy.envs import make_env

CASES = [("iql", "linear"), ("vdn", "linear"), ("qmix", "linear"), ("qmix", "monotonic"),
         ("dcg", "climbing")]


def _greedy(result):
    return tuple(result.agent.act(torch.ones(1, 2, 1))[0].tolist())  # the agents' observations


def _solves(algo, game, seed):
    result = spnpolicy.train(algo, game, seed=seed)
    optimal = make_env(game).unwrapped.optimal_joint_actions
    return _greedy(result) in optimal and result.eval["success_rate"] == 1.0


@pytest.mark.parametrize("algo, game", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_solves(algo, game, seed):
    assert _solves(algo, game, seed)


def test_dcg_complete_graph_is_what_solves_climbing():
    """Without payoffs (utilities only, like VDN) DCG settles on a dominated equilibrium."""
    result = spnpolicy.train("dcg", "climbing", seed=0, factor_graph="none")
    assert _greedy(result) != (0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("algo, game", CASES)
def test_solves_in_every_one_of_ten_seeds(algo, game):
    assert sum(_solves(algo, game, seed) for seed in range(10)) == 10
