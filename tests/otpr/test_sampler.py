import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from otpr.sampler import (
    CompatibilitySampler,
    conditional_plan,
    exp_q,
    exp_q_weights,
    expectile_advantage_weights,
    select,
    uniform_weights,
)


def _candidates(obs: torch.Tensor, n: int) -> torch.Tensor:
    # candidate l of state b is the number 10 * b + l, shape [B, n, 1]
    b = torch.arange(obs.shape[0])[:, None]
    return (10 * b + torch.arange(n)[None]).float()[..., None]


def test_choice_frequencies_match_normalised_weights() -> None:
    weights = torch.tensor([0.5, 1.0, 2.0, 0.0, 4.5])
    gen = torch.Generator().manual_seed(0)
    sampler = CompatibilitySampler(
        _candidates, lambda obs, a: weights.expand(obs.shape[0], -1), num_samples=5, generator=gen
    )
    obs = torch.zeros(4000, 3)
    chosen, info = sampler(obs)
    index = (chosen[:, 0] - 10 * torch.arange(4000)).long()
    counts = np.bincount(index.numpy(), minlength=5)
    expected = (weights / weights.sum()).numpy() * len(obs)
    assert counts[3] == 0  # zero weight is never chosen
    nz = expected > 0
    _, p = chisquare(counts[nz], expected[nz])
    assert p > 1e-3, (counts, expected)
    assert info["sampler/uniform_fallback"] == 0


def test_chi_square_detects_wrong_frequencies() -> None:
    # the same statistic rejects a sampler that ignores the weights (the test above can fail)
    counts = np.array([800, 800, 800, 800])
    expected = np.array([0.1, 0.2, 0.3, 0.4]) * counts.sum()
    assert chisquare(counts, expected).pvalue < 1e-6


def test_all_zero_weights_fall_back_to_uniform_and_are_counted() -> None:
    w = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(500, 1)
    idx, info = select(w, "sample", generator=torch.Generator().manual_seed(1))
    assert info["sampler/uniform_fallback"] == 500
    zero_rows = idx[0::2].numpy()
    assert set(np.unique(zero_rows)) == {0, 1, 2}
    assert (idx[1::2] == 1).all()


def test_argmax_and_softmax_modes() -> None:
    w = torch.tensor([[0.1, 3.0, 2.0], [-5.0, -1.0, -2.0]])
    idx, _ = select(w, "argmax")
    assert idx.tolist() == [1, 1]
    big = w.repeat(3000, 1)
    idx, _ = select(big, "softmax", temperature=1.0, generator=torch.Generator().manual_seed(2))
    freq = np.bincount(idx[0::2].numpy(), minlength=3) / 3000
    np.testing.assert_allclose(freq, torch.softmax(w[0], 0).numpy(), atol=0.03)


def test_invalid_weights_raise() -> None:
    with pytest.raises(ValueError, match="negative"):
        select(torch.tensor([[1.0, -1.0]]), "sample")
    with pytest.raises(ValueError, match="non-finite"):
        select(torch.tensor([[1.0, float("nan")]]), "sample")
    with pytest.raises(ValueError, match="mode"):
        CompatibilitySampler(_candidates, uniform_weights(), 4, mode="best")


def test_one_batched_sample_call_per_decision() -> None:
    calls = []

    def sample_fn(obs: torch.Tensor, n: int) -> torch.Tensor:
        calls.append(n)
        return _candidates(obs, n)

    sampler = CompatibilitySampler(sample_fn, uniform_weights(), num_samples=16)
    chosen, _ = sampler(torch.zeros(7, 2))
    assert calls == [16] and chosen.shape == (7, 1)


def test_q_and_advantage_weights() -> None:
    q_fn = lambda s, a: a[:, 0]  # noqa: E731  Q = the candidate's value
    v_fn = lambda s: torch.full((s.shape[0],), 1.5)  # noqa: E731
    obs, acts = torch.zeros(2, 3), torch.tensor([[[1.0], [2.0]], [[0.0], [3.0]]])
    w = exp_q_weights(q_fn, temperature=1.0)(obs, acts)
    torch.testing.assert_close(
        w, torch.tensor([[np.exp(-1.0), 1.0], [np.exp(-3.0), 1.0]], dtype=torch.float32)
    )
    w = expectile_advantage_weights(q_fn, v_fn, expectile=0.8)(obs, acts)
    torch.testing.assert_close(w, torch.tensor([[0.2, 0.8], [0.2, 0.8]]))


def test_q_guidance_temperature_in_units_of_the_within_state_spread() -> None:
    """exp((Q - max Q) / (T std)) per state: the same weights whatever Q's scale, so a state
    whose candidates differ by 0.01 is ranked as sharply as one whose differ by 1."""
    q = torch.tensor([[0.00, 0.01, 0.02], [0.0, 1.0, 2.0]])
    w = exp_q(q, 0.5, "within_state")
    torch.testing.assert_close(w[0], w[1])
    torch.testing.assert_close(w[0], torch.exp(torch.tensor([-4.0, -2.0, 0.0])))  # std 0.01 x 0.5
    absolute = exp_q(q, 0.5, "absolute")
    assert absolute[0].min() > 0.95 and absolute[1].min() < 0.02  # the old, scale-bound weights
    paired = exp_q(torch.tensor([[1.0, 3.0]]), 1.0, "within_state")  # OTPR's paired rows
    torch.testing.assert_close(paired[0], torch.exp(torch.tensor([-2.0, 0.0]) / 2**0.5))
    assert exp_q(torch.tensor([[5.0]]), 1.0, "within_state").item() == 1.0


def test_conditional_plan_is_the_l2_plan_with_the_action_marginal_relaxed() -> None:
    """Guidance Hc: per state, p = H / L is the Euclidean projection of z = -c / (2 lam) onto
    the simplex (KKT: where p > 0, z - p is one constant tau; where p = 0, z <= tau), with the
    cost standardised over the state's candidates, so the weights do not depend on Q's scale."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(64, 8, generator=gen) * torch.rand(64, 1, generator=gen) * 10
    for lam in (0.05, 0.5, 5.0):
        w = conditional_plan(q, lam)
        torch.testing.assert_close(w.mean(dim=1), torch.ones(64))
        p = w / 8
        z = (q - q.mean(1, keepdim=True)) / q.std(1, keepdim=True) / (2 * lam)
        for zi, pi in zip(z, p):
            tau = (zi - pi)[pi > 0]
            assert tau.max() - tau.min() < 1e-5 and (zi[pi == 0] <= tau.mean() + 1e-5).all()
        order = torch.argsort(q, dim=1)
        ranked = torch.gather(w, 1, order)  # never decreasing along increasing Q
        assert (ranked.diff(dim=1) >= -1e-6).all()
        shifted = conditional_plan(q.double() * 1e-3 + 7, lam).float()
        torch.testing.assert_close(shifted, w, atol=1e-4, rtol=1e-4)  # scale-free
    assert (conditional_plan(q, 0.05) == 0).float().mean() > 0.6  # small lam: the best only
    assert (conditional_plan(q, 50.0) > 0).all()  # large lam: every candidate keeps some
    torch.testing.assert_close(conditional_plan(torch.ones(2, 4), 0.5), torch.ones(2, 4))
    assert conditional_plan(torch.tensor([[2.0]]), 0.5).item() == 1.0  # one candidate
