import numpy as np
import pytest

from otpr.buffer import ReplayBuffer


def _batch(n: int, start: float) -> dict[str, np.ndarray]:
    v = start + np.arange(n, dtype=np.float32)
    return {
        "obs": np.repeat(v[:, None, None], 3, 2).reshape(n, 1, 3),
        "actions": np.repeat(v[:, None, None], 2, 2).reshape(n, 1, 2),
        "reward": v,
        "discount": np.full(n, 0.99, np.float32),
        "next_obs": np.repeat(v[:, None, None], 3, 2).reshape(n, 1, 3) + 1,
        "terminated": np.zeros(n, np.float32),
    }


def test_ring_overwrites_oldest_and_restores_exactly() -> None:
    buf = ReplayBuffer(5, (1, 3), (1, 2))
    buf.add(**_batch(4, 0.0))
    buf.add(**_batch(3, 100.0))
    assert len(buf) == 5 and buf.total_added == 7
    assert sorted(buf.data["reward"].tolist()) == [2.0, 3.0, 100.0, 101.0, 102.0]
    other = ReplayBuffer(5, (1, 3), (1, 2))
    other.load_state_dict(buf.state_dict())
    for key in buf.data:
        np.testing.assert_array_equal(other.data[key], buf.data[key])
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(buf.sample(8, rng1)["reward"], other.sample(8, rng2)["reward"])


def test_bad_input_names_the_field() -> None:
    buf = ReplayBuffer(5, (1, 3), (1, 2))
    bad = _batch(2, 0.0)
    bad["actions"] = np.zeros((2, 1, 4), np.float32)
    with pytest.raises(ValueError, match="'actions'"):
        buf.add(**bad)
    bad = _batch(2, 0.0)
    bad["reward"][0] = np.nan
    with pytest.raises(ValueError, match="'reward'.*NaN"):
        buf.add(**bad)
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(1, np.random.default_rng(0))


def test_recent_window_draws_only_the_newest() -> None:
    buf = ReplayBuffer(6, (1, 3), (1, 2))
    buf.add(**_batch(5, 0.0))
    buf.add(**_batch(3, 10.0))  # ring now holds 3, 4, 10, 11, 12 (+ 2 overwritten)
    rewards = buf.sample(200, np.random.default_rng(0), recent=2)["reward"].numpy()
    assert set(rewards.tolist()) == {11.0, 12.0}
