"""Matrix-game outcomes: optimal joint actions and whether a run reached one."""

import numpy as np
import pytest

from spnpolicy.bench.matrix import (
    greedy_joint_action,
    is_matrix_game,
    optimal_joint_actions,
    reached_optimum,
)


def test_optimal_joint_actions_follow_the_env_arguments():
    assert optimal_joint_actions("climbing") == ((0, 0),)
    assert optimal_joint_actions("penalty", {"k": 25}) == ((0, 2), (2, 0))
    assert optimal_joint_actions("stag_hunt") == ((0, 0),)
    assert is_matrix_game("linear") and not is_matrix_game("coverage")


def test_greedy_joint_action_asks_the_agent_for_the_constant_observation():
    class Agent:
        def act(self, observations):
            assert np.asarray(observations).tolist() == [[1.0]]
            return np.array([[2, 0]])

    assert greedy_joint_action(Agent()) == (2, 0)


def test_reached_optimum_reads_the_final_greedy_success():
    assert reached_optimum({"step": 5, "success_rate": 1.0})
    assert not reached_optimum({"step": 5, "success_rate": 0.0})
    with pytest.raises(ValueError, match="success_rate"):
        reached_optimum({"step": 5, "return_mean": 11.0})


@pytest.mark.parametrize("algo", ["vdn", "dcg"])
def test_greedy_joint_action_of_real_agents_matches_their_evaluation(algo):
    import spnpolicy

    result = spnpolicy.train(algo, "coordination", seed=0, total_steps=400, eval_interval=400,
                             progress=False, verbose=False)
    joint = greedy_joint_action(result.agent)
    assert len(joint) == 2 and all(0 <= a < 3 for a in joint)
    assert (joint in optimal_joint_actions("coordination")) == reached_optimum(result.eval)
