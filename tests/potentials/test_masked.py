"""Keypoint-guided OT: relation vectors, JS divergence, the KPG mask and the masked dual."""

import math

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from potentials.dual import compatibility
from potentials.masked import (
    guided_cost,
    guided_cost_paired,
    js_divergence,
    js_divergence_paired,
    keypoint_mask,
    relation_vectors,
)


def test_relation_vectors_l2_reference():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    rho = 0.7
    r = relation_vectors(x, keys, rho, "l2")
    for i in range(2):
        d = np.array([((x[i] - k) ** 2).sum().item() for k in keys])
        ref = np.exp(-d / rho) / np.exp(-d / rho).sum()
        np.testing.assert_allclose(r[i].numpy(), ref, rtol=1e-5, atol=1e-7)


def test_relation_vectors_cosine_reference_and_one_hot_limit():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    keys = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    r = relation_vectors(x, keys, 0.5, "cosine")
    d = torch.tensor([[0.0, 1.0], [1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(2)]])
    torch.testing.assert_close(r, torch.softmax(-d / 0.5, dim=-1))
    torch.testing.assert_close(r[1], torch.tensor([0.5, 0.5]))
    # A point on a keypoint relates only to it as rho -> 0.
    sharp = relation_vectors(keys, keys, 1e-3, "l2")
    torch.testing.assert_close(sharp, torch.eye(2))


def test_relation_vectors_bad_input():
    with pytest.raises(ValueError, match="distance must be one of"):
        relation_vectors(torch.zeros(2, 2), torch.zeros(3, 2), 0.1, "manhattan")
    with pytest.raises(ValueError, match="same d"):
        relation_vectors(torch.zeros(2, 2), torch.zeros(3, 4), 0.1)
    with pytest.raises(ValueError, match="rho"):
        relation_vectors(torch.zeros(2, 2), torch.zeros(3, 2), 0.0)


def test_js_divergence_matches_scipy_with_zeros():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    js = js_divergence(p, q)
    assert js.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            # scipy returns the JS distance (square root of the divergence), natural log.
            assert float(js[i, j]) == pytest.approx(jensenshannon(p[i], q[j]) ** 2, abs=1e-12)
    assert float(js[0, 0]) == pytest.approx(math.log(2))  # disjoint supports
    assert float(js_divergence(p, p).diagonal().abs().max()) < 1e-12
    torch.testing.assert_close(js_divergence_paired(p[:2], q), js.diagonal()[:2])


def test_keypoint_mask_follows_kpg_rule():
    rows = torch.tensor([-1, 0, 2, -1])
    cols = torch.tensor([2, -1, 0, 1, -1])
    expected = torch.tensor(
        [
            [0, 1, 0, 0, 1],  # ordinary row: only ordinary columns
            [0, 0, 1, 0, 0],  # keypoint 0: only its partner column
            [1, 0, 0, 0, 0],  # keypoint 2: only its partner column
            [0, 1, 0, 0, 1],
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(keypoint_mask(rows, cols), expected)
    with pytest.raises(ValueError, match="integer"):
        keypoint_mask(torch.zeros(2), torch.zeros(2))


def test_guided_cost_mixes_critic_cost_and_js():
    g = torch.Generator().manual_seed(0)
    s, a = torch.randn(5, 3, generator=g), torch.randn(4, 2, generator=g)
    ks, ka = torch.randn(6, 3, generator=g), torch.randn(6, 2, generator=g)
    q = torch.randn(5, 4, generator=g)
    js = js_divergence(relation_vectors(s, ks, 0.5), relation_vectors(a, ka, 0.5))
    torch.testing.assert_close(guided_cost(q, s, a, ks, ka, alpha=0.0, rho=0.5), q)
    torch.testing.assert_close(guided_cost(q, s, a, ks, ka, alpha=1.0, rho=0.5), js)
    torch.testing.assert_close(guided_cost(q, s, a, ks, ka, alpha=0.3, rho=0.5), 0.7 * q + 0.3 * js)
    paired = guided_cost_paired(
        q[torch.arange(4), torch.arange(4)], s[:4], a, ks, ka, alpha=0.3, rho=0.5
    )
    torch.testing.assert_close(paired, (0.7 * q + 0.3 * js)[torch.arange(4), torch.arange(4)])
    with pytest.raises(ValueError, match="alpha"):
        guided_cost(q, s, a, ks, ka, alpha=1.5)


def _masked_problem():
    """10 ordinary points + 3 keypoint pairs on each side (balanced, n == m)."""
    n_free, n_kp = 10, 3
    rng = np.random.default_rng(3)
    cost = torch.tensor(rng.random((n_free + n_kp, n_free + n_kp)))
    ids = torch.cat([torch.full((n_free,), -1), torch.tensor([0, 1, 2])])
    col_ids = torch.cat([torch.full((n_free,), -1), torch.tensor([2, 0, 1])])  # shuffled
    return cost, keypoint_mask(ids, col_ids).double(), ids, col_ids


@pytest.mark.parametrize("lam", [0.02, 0.2])
def test_masked_tabular_dual_converges_and_pins_keypoints(lam, solve_tabular):
    cost, mask, ids, col_ids = _masked_problem()
    n = cost.shape[0]
    u, v = solve_tabular(cost, lam, mask)
    assert torch.isfinite(u).all() and torch.isfinite(v).all()
    plan = mask * compatibility(u[:, None], v[None, :], cost, lam) / n**2
    # A coupling of the uniform marginals ...
    torch.testing.assert_close(plan.sum(1), torch.full((n,), 1 / n, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(0), torch.full((n,), 1 / n, dtype=torch.float64))
    # ... where each keypoint row sends all its mass to its partner column, exactly 0 elsewhere.
    for i in torch.nonzero(ids >= 0).flatten():
        partner = int(torch.nonzero(col_ids == ids[i]).flatten())
        assert float(plan[i, partner]) == pytest.approx(1 / n, rel=1e-6)
        others = torch.cat([plan[i, :partner], plan[i, partner + 1 :]])
        assert bool((others == 0).all())
        assert bool((torch.cat([plan[:i, partner], plan[i + 1 :, partner]]) == 0).all())
    # Reference: masking equals forbidding the masked pairs with a prohibitive cost in POT.
    big = cost.numpy() + 100.0 * (1 - mask.numpy())
    pot = ot.smooth.smooth_ot_dual(
        np.full(n, 1 / n),
        np.full(n, 1 / n),
        big,
        reg=2 * lam * n * n,
        numItermax=10000,
        stopThr=1e-15,
    )
    assert np.abs(plan.numpy() - pot).sum() / pot.sum() <= 1e-3
