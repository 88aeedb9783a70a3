"""Noise-prediction networks: shapes, conditioning, padding of odd horizons, bad settings."""

import pytest
import torch

from policies.networks import ResidualMLPScoreNet, SinusoidalPosEmb, TemporalUnet1D


def _inputs(b, h, a, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, h, a, generator=g),
        torch.rand(b, generator=g),
        torch.randn(b, c, generator=g),
    )


def test_sinusoidal_embedding_values():
    emb = SinusoidalPosEmb(4)(torch.tensor([0.0, 2.0]))
    # frequencies 1 and 1/10000 for dim 4: [sin(x), sin(x/1e4), cos(x), cos(x/1e4)]
    ref = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [torch.sin(torch.tensor(2.0)), 2e-4, torch.cos(torch.tensor(2.0)), 1.0],
        ]
    )
    torch.testing.assert_close(emb, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda h: ResidualMLPScoreNet(3, h, 8, hidden=(32, 32, 32, 32, 32), use_layernorm=True),
        lambda h: TemporalUnet1D(3, h, 8, down_dims=(16, 32, 64), n_groups=4, time_dim=16),
    ],
    ids=["mlp", "unet"],
)
@pytest.mark.parametrize("horizon", [8, 10, 5])
def test_output_shape_and_dependence_on_inputs(make, horizon):
    torch.manual_seed(0)
    net = make(horizon)
    x, t, c = _inputs(4, horizon, 3, 8)
    out = net(x, t, c)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # each input changes the output; each sample is computed independently of the batch
    assert not torch.allclose(net(x, t, c + 1.0), out)
    assert not torch.allclose(net(x, t.flip(0), c), out)
    assert not torch.allclose(net(x + 0.5, t, c), out)
    torch.testing.assert_close(net(x[:1], t[:1], c[:1]), out[:1], atol=1e-5, rtol=1e-4)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet_pads_odd_horizon_and_crops_back():
    net = TemporalUnet1D(2, 10, 4, down_dims=(8, 16, 32), n_groups=4, time_dim=8)
    assert net.padded_horizon == 12
    assert TemporalUnet1D(2, 16, 4, down_dims=(8, 16, 32), n_groups=4).padded_horizon == 16
    x, t, c = _inputs(2, 10, 2, 4)
    assert net(x, t, c).shape == (2, 10, 2)


def test_mlp_layout_matches_dppo():
    net = ResidualMLPScoreNet(4, 4, 40, hidden=(512, 512, 512), time_dim=16)
    assert len(net.blocks) == 1  # input layer + one two-layer residual block + output layer
    assert net.input_layer.in_features == 4 * 4 + 16 + 40
    assert net.output_layer.out_features == 16


def test_bad_settings_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="hidden"):
        ResidualMLPScoreNet(2, 4, 3, hidden=(64, 64))
    with pytest.raises(ValueError, match="hidden"):
        ResidualMLPScoreNet(2, 4, 3, hidden=(64, 32, 64))
    with pytest.raises(ValueError, match="activation"):
        ResidualMLPScoreNet(2, 4, 3, hidden=(16,), activation="swishy")
    with pytest.raises(ValueError, match="n_groups"):
        TemporalUnet1D(2, 8, 3, down_dims=(12, 24), n_groups=8)
    with pytest.raises(ValueError, match="kernel_size"):
        TemporalUnet1D(2, 8, 3, down_dims=(8, 16), n_groups=4, kernel_size=4)
    net = ResidualMLPScoreNet(2, 4, 3, hidden=(16,))
    x, t, c = _inputs(5, 4, 2, 3)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 4, 2\]"):
        net(x[:, :3], t, c)
    with pytest.raises(ValueError, match="t must have shape"):
        net(x, t[:2], c)
    with pytest.raises(ValueError, match="cond must have shape"):
        net(x, t, c[:, :2])
