"""Next states and observations kept by reference to later rows: the buffer samples exactly
what a buffer storing every row's values would, through overwrites and checkpoints."""

import io

import numpy as np
import pytest
import torch

from spnpolicy.training import ReplayBuffer, Transition
from spnpolicy.training.next_values import NextValues


class PlainBuffer:
    """The buffer before next values were shared: every field stored as given."""

    def __init__(self, capacity, seed):
        self.capacity, self.rows, self.pos, self.size = capacity, {}, 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, t):
        fields = {k: np.asarray(getattr(t, k)) for k in
                  ("state", "actions", "reward", "next_state", "terminated", "obs", "next_obs")}
        for i in range(len(fields["state"])):
            self.rows[self.pos] = {k: v[i].copy() for k, v in fields.items()}
            self.pos = (self.pos + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch):
        index = self.rng.integers(0, self.size, size=batch)
        return {k: np.stack([self.rows[int(i)][k] for i in index]) for k in
                ("state", "next_state", "obs", "next_obs", "reward", "actions")}


def episodes(seed, copies=3, n=2, obs_dim=3, max_len=5):
    """Rows of ``copies`` env copies: mid-episode, a row's next values are the next row's
    values; an episode's last row gets a final state no row holds; some steps add no row,
    some rows are relabelled copies (values no other row holds), some repeat values."""
    rng = np.random.default_rng(seed)
    state = rng.integers(0, 4, (copies, 2)).astype(np.float32)
    left = rng.integers(1, max_len + 1, copies)
    while True:
        rows = []
        for e in range(copies):
            nxt = rng.integers(0, 4, 2).astype(np.float32)    # small values: many repeats
            rows.append((state[e].copy(), nxt))
            left[e] -= 1
            if left[e] == 0:                                   # episode end, then reset
                rows[-1] = (state[e].copy(), nxt + 100)
                nxt = rng.integers(0, 4, 2).astype(np.float32)
                left[e] = rng.integers(1, max_len + 1)
            state[e] = nxt
        if rng.random() < 0.3:
            rows.append((rng.random(2).astype(np.float32), rng.random(2).astype(np.float32)))
        keep = rows[:int(rng.integers(0, len(rows) + 1))] if rng.random() < 0.2 else rows
        m = len(keep)
        s = np.array([r[0] for r in keep], np.float32).reshape(m, 2)
        ns = np.array([r[1] for r in keep], np.float32).reshape(m, 2)
        obs = np.repeat(s[:, None, :1], n, 1).repeat(obs_dim, 2) * np.arange(1, obs_dim + 1)
        next_obs = np.repeat(ns[:, None, :1], n, 1).repeat(obs_dim, 2) * np.arange(
            1, obs_dim + 1)
        yield Transition(state=s, obs=obs.astype(np.float32),
                         actions=rng.integers(0, 3, (m, n)), reward=rng.random(m).astype(
                             np.float32), next_state=ns, next_obs=next_obs.astype(np.float32),
                         terminated=np.zeros(m, np.float32), truncated=np.zeros(m, bool))


def _same(batch, plain):
    for key, value in plain.items():
        assert np.array_equal(getattr(batch, key).numpy(), value), key


# shared_bytes: 0 shares both columns, 16 the observations (24 bytes a row) but not the
# states (8 bytes), 1024 neither; the checkpoint in the middle loads into the next layout
SHARING = [0, 16, 1024]


@pytest.mark.parametrize("capacity, seed", [(7, 0), (16, 1), (50, 2), (200, 3)])
@pytest.mark.parametrize("layout", range(3))
def test_samples_equal_a_buffer_that_stores_every_value(capacity, seed, layout):
    buffer = ReplayBuffer(capacity, state_dim=2, num_agents=2, obs_dim=3, seed=seed,
                          shared_bytes=SHARING[layout])
    plain = PlainBuffer(capacity, seed)
    stream = episodes(seed)
    for step in range(300):
        t = next(stream)
        buffer.add(t)
        plain.add(t)
        if len(buffer) and step % 3 == 0:
            _same(buffer.sample(32), plain.sample(32))
        if step == 150:                      # a checkpoint round trip in the middle
            saved = io.BytesIO()
            torch.save(buffer.state_dict(), saved)
            saved.seek(0)
            buffer = ReplayBuffer(capacity, state_dim=2, num_agents=2, obs_dim=3, seed=99,
                                  shared_bytes=SHARING[(layout + 1) % 3])
            buffer.load_state_dict(torch.load(saved, weights_only=True))
    assert len(buffer) == plain.size == capacity


def test_most_next_values_are_shared_in_the_middle_of_episodes():
    buffer = ReplayBuffer(400, state_dim=2, num_agents=2, obs_dim=3, seed=0, shared_bytes=0)
    stream = episodes(0, max_len=50)
    for _ in range(150):
        buffer.add(next(stream))
    for name in ("next_state", "next_obs"):
        # stored without a reference: episode ends, relabelled copies, the newest rows
        assert buffer.next[name].stored < 0.3 * len(buffer), name


def test_a_checkpoint_of_the_earlier_format_loads():
    buffer = ReplayBuffer(30, state_dim=2, num_agents=2, obs_dim=3, seed=4, shared_bytes=0)
    stream = episodes(4)
    for _ in range(20):
        buffer.add(next(stream))
    state = buffer.state_dict()
    expected = buffer.sample(64)
    # the earlier format: next values as plain rows in "data", no "next" entry
    rows = buffer.size
    old = {"data": dict(state["data"]), "pos": state["pos"], "size": state["size"],
           "rng": state["rng"]}
    for name in ("next_state", "next_obs"):
        old["data"][name] = torch.from_numpy(
            buffer.next[name].gather(np.arange(rows), buffer.data[name[5:]]))
    restored = ReplayBuffer(30, state_dim=2, num_agents=2, obs_dim=3, seed=0, shared_bytes=0)
    restored.load_state_dict(old)
    for a, b in zip(restored.sample(64), expected):
        assert torch.equal(a, b)


def test_rows_beyond_capacity_in_one_add_keep_the_last():
    buffer = ReplayBuffer(4, state_dim=2, num_agents=2, obs_dim=3, seed=0, shared_bytes=0)
    assert set(buffer.next) == {"next_state", "next_obs"}
    plain = PlainBuffer(4, 0)
    stream = episodes(0, copies=9)
    for _ in range(5):
        t = next(stream)
        buffer.add(t)
        plain.add(t)
    _same(buffer.sample(40), plain.sample(40))


def test_the_side_store_grows_and_reuses_its_slots():
    values = NextValues(1000, (2,), np.float32)
    current = np.zeros((1000, 2), np.float32)
    rows = np.arange(200)
    values.release(rows)
    values.store(rows, np.arange(400, dtype=np.float32).reshape(200, 2), current)
    assert len(values.extra) == 256 and values.stored == 200
    values.release(rows[:100])
    values.store(rows[:100], np.zeros((100, 2), np.float32), current)
    assert len(values.extra) == 256                  # the freed slots were reused
    np.testing.assert_array_equal(values.gather(np.array([150]), current), [[300, 301]])


def test_small_rows_are_stored_as_they_come():
    buffer = ReplayBuffer(10, state_dim=4, num_agents=2, obs_dim=300, seed=0)
    assert set(buffer.next) == {"next_obs"}          # 2400 bytes a row; states 16 bytes
