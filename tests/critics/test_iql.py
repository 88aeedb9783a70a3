"""IQL critic: expectile regression, Polyak targets, bootstrapping, shapes."""

import copy
import pathlib

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from critics import Critic, IQLCritic, expectile_loss


def expectile(values: np.ndarray, tau: float) -> float:
    """Root of sum_i |tau - 1(x_i < e)| (x_i - e) = 0, the tau-expectile of uniform values."""

    def f(e: float) -> float:
        return float((np.abs(tau - (values < e)) * (values - e)).sum())

    return brentq(f, values.min() - 1, values.max() + 1, xtol=1e-12)


def test_expectile_loss_value_and_minimiser():
    diff = torch.tensor([1.0, -2.0, 0.5])
    assert float(expectile_loss(diff, 0.7)) == pytest.approx((0.7 * 1 + 0.3 * 4 + 0.7 * 0.25) / 3)
    x = torch.tensor([0.0, 1.0, 3.0, -2.0, 7.0], dtype=torch.float64)
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([v], max_iter=200, tolerance_grad=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = expectile_loss(x - v, 0.9)
        loss.backward()
        return loss

    opt.step(closure)
    assert float(v.detach()) == pytest.approx(expectile(x.numpy(), 0.9), abs=1e-6)
    with pytest.raises(ValueError, match="tau"):
        expectile_loss(diff, 1.0)


def test_value_converges_to_expectile_of_returns():
    """One state, three actions, terminal rewards r ~ N(mu_a, 0.5^2): Q -> mu_a and
    V -> the tau-expectile of {mu_a} (actions uniform in every batch)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tau, mu = 0.7, torch.tensor([0.0, 1.0, 3.0])
    acts = torch.tensor([[-1.0], [0.0], [1.0]])
    critic = IQLCritic(1, 1, hidden=(64, 64), expectile=tau, lr=1e-3, polyak=0.05)
    g = torch.Generator().manual_seed(1)
    batch_size = 255
    k = torch.arange(batch_size) % 3
    for _ in range(1000):
        batch = {
            "obs": torch.zeros(batch_size, 1),
            "act": acts[k],
            "reward": mu[k] + 0.5 * torch.randn(batch_size, generator=g),
            "next_obs": torch.zeros(batch_size, 1),
            "terminated": torch.ones(batch_size),
        }
        info = critic.update(batch)
    target_q = critic.target_q(torch.zeros(3, 1), acts)
    v = float(critic.value(torch.zeros(1, 1)).detach())
    torch.testing.assert_close(target_q, mu, atol=0.05, rtol=0)
    assert v == pytest.approx(expectile(mu.numpy(), tau), abs=0.05)  # 1.846; the mean is 1.333
    assert v == pytest.approx(expectile(target_q.numpy().astype(np.float64), tau), abs=0.03)
    assert set(info) >= {"critic/v_loss", "critic/q_loss", "critic/q_mean", "critic/v_mean"}


def test_polyak_update_is_exact():
    torch.manual_seed(0)
    critic = IQLCritic(3, 2, hidden=(8, 8), polyak=0.3, lr=1e-2)
    targets_before = [p.clone() for p in critic.q1_target.parameters()]
    targets_before += [p.clone() for p in critic.q2_target.parameters()]
    online_before = [p.clone() for p in critic.q1.parameters()]
    critic.update(_batch(16))
    online = [*critic.q1.parameters(), *critic.q2.parameters()]
    targets = [*critic.q1_target.parameters(), *critic.q2_target.parameters()]
    assert not torch.equal(online_before[0], online[0])  # the Q step moved the online weights
    for tb, p, tp in zip(targets_before, online, targets, strict=True):
        torch.testing.assert_close(tp, 0.7 * tb + 0.3 * p.detach(), rtol=0, atol=1e-7)
        assert not tp.requires_grad


def _batch(b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(b, 3, generator=g),
        "act": torch.randn(b, 2, generator=g),
        "reward": torch.randn(b, generator=g),
        "next_obs": torch.randn(b, 3, generator=g),
        "terminated": torch.zeros(b),
    }


def test_termination_stops_bootstrap_but_truncation_does_not():
    torch.manual_seed(0)
    critic = IQLCritic(3, 2, hidden=(8,), gamma=0.9)
    batch = _batch(6)
    with torch.no_grad():
        q1 = critic.q1(torch.cat([batch["obs"], batch["act"]], -1)).squeeze(-1)
        q2 = critic.q2(torch.cat([batch["obs"], batch["act"]], -1)).squeeze(-1)
        v_next = critic.value(batch["next_obs"])
    terminated = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    discount = torch.tensor([0.9, 0.9, 0.9, 0.5, 0.25, 1.0])  # e.g. gamma**k for k-step chunks

    def expected(target):
        return float((q1 - target).square().mean() + (q2 - target).square().mean())

    loss, info = critic.compute_q_loss(**(batch | {"terminated": terminated}))
    target = batch["reward"] + 0.9 * (1 - terminated) * v_next
    assert float(loss.detach()) == pytest.approx(expected(target), rel=1e-6)
    assert info["critic/target_mean"] == pytest.approx(float(target.mean()), rel=1e-6)
    loss, _ = critic.compute_q_loss(**(batch | {"terminated": terminated, "discount": discount}))
    target = batch["reward"] + discount * (1 - terminated) * v_next
    assert float(loss.detach()) == pytest.approx(expected(target), rel=1e-6)
    assert abs(float(v_next[0])) > 1e-3  # so terminating sample 0 does change its target

    # A "truncated" flag in the batch does not stop bootstrapping: updates are identical.
    a, b = copy.deepcopy(critic), copy.deepcopy(critic)
    a.update(batch)
    b.update(batch | {"truncated": torch.ones(6)})
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = copy.deepcopy(critic)
    c.update(batch | {"terminated": torch.ones(6)})
    assert not torch.equal(next(a.q1.parameters()), next(c.q1.parameters()))


def test_q_is_min_of_twins_and_target_q_has_no_grad():
    torch.manual_seed(0)
    critic = IQLCritic(3, 2, hidden=(8,))
    assert isinstance(critic, Critic)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    x = torch.cat([obs, act], -1)
    ref = torch.minimum(critic.q1(x), critic.q2(x)).squeeze(-1)
    torch.testing.assert_close(critic.q(obs, act), ref)
    torch.testing.assert_close(critic.target_q(obs, act), ref.detach())  # targets start equal
    assert not critic.target_q(obs, act).requires_grad
    # Action chunks [B, Ta, Da] are flattened to action_dim = Ta * Da.
    chunk_critic = IQLCritic(3, 6, hidden=(8,))
    chunk = torch.randn(5, 2, 3)
    torch.testing.assert_close(chunk_critic.q(obs, chunk), chunk_critic.q(obs, chunk.reshape(5, 6)))


def test_bad_inputs_are_named():
    critic = IQLCritic(3, 2, hidden=(8,))
    with pytest.raises(ValueError, match=r"obs must have shape \[B, 3\]"):
        critic.value(torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"act must have shape \[B, 2\]"):
        critic.q(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"reward must have shape \[B\] = \[6\]"):
        critic.compute_q_loss(**(_batch(6) | {"reward": torch.zeros(5)}))
    with pytest.raises(KeyError, match="terminated"):
        critic.update({k: v for k, v in _batch(6).items() if k != "terminated"})
    with pytest.raises(ValueError, match="expectile"):
        IQLCritic(3, 2, expectile=1.5)
    with pytest.raises(ValueError, match="polyak"):
        IQLCritic(3, 2, polyak=0.0)


def test_no_cuda_calls_in_critics():
    root = pathlib.Path(__file__).resolve().parents[2] / "critics"
    for path in root.glob("*.py"):
        assert ".cuda(" not in path.read_text(), path
