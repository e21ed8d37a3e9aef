"""UpdateMeans: per-update scalars averaged between evaluations, checkpointable;
TrainingMeans: the training episodes and update scalars between training records."""

import torch

from spnpolicy.training import Episode, TrainingMeans, UpdateMeans


def test_means_reset_on_pop_and_survive_a_state_dict_round_trip():
    means = UpdateMeans()
    assert means.pop() == {}
    means.add(loss=torch.tensor(1.0), alpha=0.5)
    means.add(loss=torch.tensor(3.0, requires_grad=True) * 1, alpha=1.5)
    restored = UpdateMeans()
    restored.load_state_dict(means.state_dict())
    for m in (means, restored):
        assert m.pop() == {"loss": 2.0, "alpha": 1.0}
        assert m.pop() == {}


def test_training_means_of_episodes_and_updates_since_the_last_pop():
    means = TrainingMeans()
    assert means.pop(has_success=True) == {"episodes": 0}
    means.add_episodes([Episode(0, 1.0, 4, True), Episode(3, 0.0, 6, False)])
    means.add_update({"loss": torch.tensor(2.0)})
    means.add_update({"loss": 4.0})
    means.add_episodes([Episode(1, 2.0, 2, True)])
    restored = TrainingMeans()
    restored.load_state_dict(means.state_dict())
    for m in (means, restored):
        assert m.pop(has_success=True) == {"episodes": 3, "return_mean": 1.0, "length_mean": 4.0,
                                           "success_rate": 2 / 3, "loss": 3.0}
        assert m.pop(has_success=True) == {"episodes": 0}
    means.add_episodes([Episode(0, 5.0, 1, False)])
    assert means.pop(has_success=False) == {"episodes": 1, "return_mean": 5.0,
                                            "length_mean": 1.0}   # no success flag: none
