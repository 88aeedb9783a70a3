"""Neural potentials: plan marginals on continuous measures, cost normalisation, masking, API."""

import copy
import pathlib

import pytest
import torch

from potentials.masked import js_divergence, relation_vectors
from potentials.neural import NeuralPotentials


def sq_dist(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (s - a).square().sum(-1)


def _gaussians(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mu = N(0, 1), nu = N(1, 0.5^2); the unregularised OT map is T(s) = 1 + s / 2."""
    return torch.randn(n, 1, generator=g), 1.0 + 0.5 * torch.randn(n, 1, generator=g)


def _density(pot: NeuralPotentials, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """H on all pairs [n, m], with the same normalisation as pot.pairwise_cost."""
    with torch.no_grad():
        c = sq_dist(s[:, None, :], a[None, :, :]) / pot.cost_std
        return torch.relu(pot.u(s)[:, None] + pot.v(a)[None, :] - c) / (2 * pot.lam)


def test_minibatch_training_recovers_plan_marginals():
    """E_a[H(s, a)] = 1 for each s and E_s[H(s, a)] = 1 for each a (plan has marginals mu, nu)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lam, lr, steps = 0.1, 1e-3, 1000
    pot = NeuralPotentials(1, 1, hidden=(64, 64), lam=lam, lr=lr)
    g = torch.Generator().manual_seed(100)
    for i in range(steps):
        for group in pot.optimizer.param_groups:  # linear decay over the second half
            group["lr"] = lr * min(1.0, 2 * (1 - i / steps) + 0.02)
        s, a = _gaussians(g, 256)
        info = pot.update(s, a, sq_dist)
    assert 0.8 < info["ot/h_mean"] < 1.2
    # Fresh samples; 20000 on the averaged side keeps the Monte Carlo error ~1%.
    s, _ = _gaussians(g, 400)
    _, a = _gaussians(g, 20000)
    h = _density(pot, s, a)
    rows = (h.mean(1) - 1).abs()
    assert rows.mean() < 0.05 and rows.quantile(0.9) < 0.05
    _, a = _gaussians(g, 400)
    s, _ = _gaussians(g, 20000)
    cols = (_density(pot, s, a).mean(0) - 1).abs()
    assert cols.mean() < 0.05 and cols.quantile(0.9) < 0.05
    # Not the trivial product plan: the barycentric map follows T(s) = 1 + s/2
    # (the independent coupling would give a constant 1, mean error ~0.4).
    s, _ = _gaussians(g, 400)
    _, a = _gaussians(g, 20000)
    h = _density(pot, s, a)
    bary = (h @ a[:, 0]) / h.sum(1)
    assert (bary - (1 + 0.5 * s[:, 0])).abs().mean() < 0.15
    assert (h > 0).float().mean() < 0.85


def test_running_normalisation_makes_lam_scale_free():
    """Cost k*c with running normalisation trains exactly like c: lam is in normalised units."""
    torch.manual_seed(0)
    p1 = NeuralPotentials(2, 3, hidden=(16, 16), lam=0.1, lr=1e-3)
    p2 = copy.deepcopy(p1)
    k = 37.0
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 3, generator=g)

    def cost(s, a):
        return ((s @ w) - a).square().sum(-1)

    for _ in range(20):
        s, a = torch.randn(32, 2, generator=g), torch.randn(32, 3, generator=g)
        p1.update(s, a, cost)
        p2.update(s, a, lambda s, a: k * cost(s, a))
    assert float(p2.cost_std) == pytest.approx(k * float(p1.cost_std), rel=1e-5)
    s, a = torch.randn(8, 2, generator=g), torch.randn(8, 5, 3, generator=g)
    h1 = p1.compatibility(s, a, cost)
    h2 = p2.compatibility(s, a, lambda s, a: k * cost(s, a))
    assert h1.abs().sum() > 0
    torch.testing.assert_close(h1, h2, rtol=1e-4, atol=1e-4)


def test_cost_std_is_running_average_then_ema():
    """Weight max(1/count, momentum) on the newest batch std: 1, 1/2, 1/3, then 1/4 = momentum."""
    pot = NeuralPotentials(1, 1, hidden=(4,), norm_momentum=0.25)
    g = torch.Generator().manual_seed(0)
    expected = 0.0
    for count, scale in enumerate((1.0, 3.0, 2.0, 5.0, 0.5), start=1):
        s, a = torch.randn(8, 1, generator=g), torch.randn(8, 1, generator=g)
        pot.update(s, a, lambda s, a, scale=scale: scale * sq_dist(s, a))
        batch_std = float((scale * sq_dist(s[:, None], a[None])).std())
        b = max(1 / count, 0.25)
        expected = (1 - b) * expected + b * batch_std
        assert float(pot.cost_std) == pytest.approx(expected, rel=1e-5)
    assert int(pot.norm_count) == 5
    assert {"cost_std", "norm_count"} <= set(pot.state_dict())


def test_compatibility_is_paired_and_matches_pairwise_diagonal():
    torch.manual_seed(0)
    pot = NeuralPotentials(2, 2, hidden=(16,), lam=0.3, lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        pot.update(torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g), sq_dist)
    s, a = torch.randn(6, 2, generator=g), torch.randn(6, 4, 2, generator=g)
    h = pot.compatibility(s, a, sq_dist)
    assert h.shape == (6, 4)
    for l in range(4):
        c = pot.pairwise_cost(s, a[:, l], sq_dist).diagonal()
        ref = torch.relu(pot.u(s) + pot.v(a[:, l]) - c) / (2 * pot.lam)
        torch.testing.assert_close(h[:, l], ref.detach())
        torch.testing.assert_close(pot.compatibility(s, a[:, l], sq_dist), h[:, l])
    # A reloaded copy (weights + running statistics from the state_dict) gives the same H.
    fresh = NeuralPotentials(2, 2, hidden=(16,), lam=0.3)
    fresh.load_state_dict(pot.state_dict())
    torch.testing.assert_close(fresh.compatibility(s, a, sq_dist), h)


def test_pairwise_cost_is_one_batched_call():
    pot = NeuralPotentials(2, 3, hidden=(4,), cost_normalization="none")
    calls = []

    def cost(s, a):
        calls.append(s.shape[0])
        return s.sum(-1) * 10 + a.sum(-1)

    s, a = torch.randn(4, 2), torch.randn(5, 3)
    c = pot.pairwise_cost(s, a, cost)
    assert calls == [20]
    torch.testing.assert_close(c, s.sum(-1)[:, None] * 10 + a.sum(-1)[None, :])


def test_masked_cost_update_and_errors():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    ks, ka = torch.randn(50, 2, generator=g), torch.randn(50, 3, generator=g)
    pot = NeuralPotentials(
        2, 3, hidden=(16,), masked=True, alpha=0.4, rho=0.5, num_keypoints=4, num_anchors=5
    )
    s, a = torch.randn(8, 2, generator=g), torch.randn(8, 3, generator=g)
    with pytest.raises(RuntimeError, match="set_keypoints"):
        pot.update(s, a, lambda s, a: sq_dist(s, a[:, :2]))
    pot.set_keypoints(ks, ka)
    torch.testing.assert_close(pot.anchor_index, torch.tensor([0, 12, 24, 37, 49]))
    info = pot.update(s, a, lambda s, a: sq_dist(s, a[:, :2]), steps=3)
    assert all(torch.isfinite(torch.tensor(v)) for v in info.values())
    # Guided cost = (1 - alpha) * normalised critic cost + alpha * JS to the anchor keypoints.
    idx = pot.anchor_index
    js = js_divergence(relation_vectors(s, ks[idx], 0.5), relation_vectors(a, ka[idx], 0.5))
    q = sq_dist(s[:, None], a[None, :, :2]) / pot.cost_std
    torch.testing.assert_close(
        pot.pairwise_cost(s, a, lambda s, a: sq_dist(s, a[:, :2])), 0.6 * q + 0.4 * js
    )
    with pytest.raises(ValueError, match="as many states as actions"):
        pot.update(s, a[:5], lambda s, a: sq_dist(s, a[:, :2]))


def test_reset_parameters_keeps_statistics_and_restarts_optimizer():
    torch.manual_seed(0)
    pot = NeuralPotentials(1, 1, hidden=(8,), lr=1e-2)
    pot.update(torch.randn(16, 1), torch.randn(16, 1), sq_dist, steps=5)
    before = [p.detach().clone() for p in pot.parameters()]
    std = float(pot.cost_std)
    pot.reset_parameters()
    assert all(not torch.equal(b, p) for b, p in zip(before, pot.parameters(), strict=True))
    assert float(pot.cost_std) == std
    assert len(pot.optimizer.state) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": 0.0}, "lam"),
        ({"cost_normalization": "batch"}, "cost_normalization"),
        ({"distance": "l1"}, "distance"),
        ({"alpha": 2.0}, "alpha"),
        ({"state_dim": 0}, "state_dim"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    args = {"state_dim": 2, "action_dim": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        NeuralPotentials(**args)


def test_bad_shapes_are_named():
    pot = NeuralPotentials(2, 3, hidden=(4,))
    with pytest.raises(ValueError, match=r"update: states must be a tensor of shape \[n, 2\]"):
        pot.update(torch.zeros(4, 3), torch.zeros(4, 3), sq_dist)
    with pytest.raises(ValueError, match="cost_fn"):
        pot.update(torch.zeros(4, 2), torch.zeros(4, 3), lambda s, a: torch.zeros(len(s), 1))
    with pytest.raises(ValueError, match=r"compatibility: actions must be \[B, L, 3\]"):
        pot.compatibility(torch.zeros(4, 2), torch.zeros(5, 2, 3), sq_dist)


def test_no_cuda_calls_in_potentials():
    root = pathlib.Path(__file__).resolve().parents[2] / "potentials"
    for path in root.glob("*.py"):
        assert ".cuda(" not in path.read_text(), path
