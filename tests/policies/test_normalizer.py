"""MinMaxNormalizer: [-1, 1] mapping, constant dims, round-trip, state_dict, errors."""

import numpy as np
import pytest
import torch

from policies.normalizer import MinMaxNormalizer


def _fitted():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(50, 3, 4)) * [1.0, 10.0, 0.1, 1.0] + [0.0, 5.0, -2.0, 0.0]
    obs[..., 3] = 7.5  # a constant dimension
    actions = rng.uniform(-3.0, 2.0, size=(50, 8, 2))
    return MinMaxNormalizer(4, 2).fit(obs, actions), obs, actions


def test_maps_min_max_to_minus_one_one_and_constant_dims_to_zero():
    norm, obs, actions = _fitted()
    y = norm.normalize_obs(torch.as_tensor(obs, dtype=torch.float32))
    flat = y.reshape(-1, 4)
    torch.testing.assert_close(flat[:, :3].min(0).values, -torch.ones(3))
    torch.testing.assert_close(flat[:, :3].max(0).values, torch.ones(3))
    assert (flat[:, 3] == 0).all() and torch.isfinite(flat).all()
    a = norm.normalize_action(torch.as_tensor(actions, dtype=torch.float32)).reshape(-1, 2)
    torch.testing.assert_close(a.min(0).values, -torch.ones(2))
    torch.testing.assert_close(a.max(0).values, torch.ones(2))
    # exact reference: y = 2 (x - min) / (max - min) - 1
    ref = 2 * (actions - actions.reshape(-1, 2).min(0)) / np.ptp(actions.reshape(-1, 2), 0) - 1
    torch.testing.assert_close(a, torch.as_tensor(ref, dtype=torch.float32).reshape(-1, 2))


def test_action_round_trip_and_constant_action_dim():
    norm, _, actions = _fitted()
    a = torch.as_tensor(actions, dtype=torch.float32)
    torch.testing.assert_close(norm.unnormalize_action(norm.normalize_action(a)), a)
    const = MinMaxNormalizer(1, 2).fit(np.zeros((5, 1)), np.array([[1.0, 4.0]] * 5))
    y = const.normalize_action(torch.tensor([[1.0, 4.0]]))
    assert torch.equal(y, torch.zeros(1, 2))
    assert torch.equal(
        const.unnormalize_action(torch.tensor([[0.3, -0.9]])), torch.tensor([[1.0, 4.0]])
    )


def test_state_dict_restores_exactly():
    norm, obs, _ = _fitted()
    fresh = MinMaxNormalizer(4, 2)
    assert not fresh.is_fitted
    fresh.load_state_dict(norm.state_dict())
    assert fresh.is_fitted
    for key, value in norm.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    x = torch.as_tensor(obs, dtype=torch.float32)
    assert torch.equal(fresh.normalize_obs(x), norm.normalize_obs(x))


def test_errors():
    norm = MinMaxNormalizer(4, 2)
    with pytest.raises(RuntimeError, match="before fit"):
        norm.normalize_obs(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"obs must have shape \[\.\.\., 4\]"):
        norm.fit(np.zeros((3, 5)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        norm.fit(np.full((3, 4), np.nan), np.zeros((3, 2)))
    norm.fit(np.zeros((3, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="actions last dim must be 2"):
        norm.normalize_action(torch.zeros(3, 3))


def test_near_constant_obs_dims_are_centred_not_blown_up() -> None:
    # a dim that varies by 1e-5 in the demos must not map a later value of 1.0 to ~1e5
    obs = torch.zeros(50, 3)
    obs[:, 0] = torch.linspace(-1.0, 1.0, 50)
    obs[:, 1] = 0.3 + 1e-5 * torch.rand(50)
    norm = MinMaxNormalizer(3, 1)
    norm.fit(obs, torch.randn(50, 1))
    out = norm.normalize_obs(torch.tensor([[0.5, 1.3, 0.0], [100.0, 0.3, 5.0]]))
    assert abs(float(out[0, 1]) - 1.0) < 1e-3  # centred only: 1.3 - 0.3
    assert abs(float(out[0, 0]) - 0.5) < 1e-5  # wide dims keep the min-max map
    assert float(out.abs().max()) <= float(norm.obs_clip)  # 100 is clipped
    restored = MinMaxNormalizer(3, 1, obs_range_eps=0.5, obs_clip=2.0)
    restored.load_state_dict(norm.state_dict())  # the settings travel with the state
    assert float(restored.obs_clip) == float(norm.obs_clip)
