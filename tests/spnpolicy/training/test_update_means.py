"""UpdateMeans: per-update scalars averaged between evaluations, checkpointable."""

import torch

from spnpolicy.training import UpdateMeans


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
