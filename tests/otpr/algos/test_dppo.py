"""PPO through the denoising chain (otpr/algos/dppo.py, its chain pieces shared with SODP in
otpr/algos/chain_ppo.py): GAE, DPPO's clip schedule and log-probs, the clipped surrogate, the
recorded chains, and a bandit the update must learn."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from envs.base import TaskSpec
from otpr.algos import Step
from otpr.algos.chain_ppo import clip_schedule, compute_policy_loss, step_log_prob
from otpr.algos.dppo import DPPO, gae
from otpr.config import ConfigError, from_dict

warnings.filterwarnings("ignore")


def _gae_by_hand(r, v, nv, term, done, disc, lam):
    """One env member at a time, scalars only."""
    t_len, n = len(r), len(r[0])
    adv = [[0.0] * n for _ in range(t_len)]
    for i in range(n):
        nxt = 0.0
        for t in reversed(range(t_len)):
            delta = r[t][i] + disc[t][i] * (1 - term[t][i]) * nv[t][i] - v[t][i]
            nxt = delta + disc[t][i] * lam * (1 - done[t][i]) * nxt
            adv[t][i] = nxt
    return adv


def test_gae_matches_a_scalar_reference_through_termination_and_truncation() -> None:
    g = torch.Generator().manual_seed(0)
    t_len, n = 6, 3
    r, v, nv = (torch.rand(t_len, n, generator=g) for _ in range(3))
    disc = torch.full((t_len, n), 0.96)
    disc[2, 1] = 0.99  # a decision cut short (fewer env steps)
    term = torch.zeros(t_len, n)
    done = torch.zeros(t_len, n)
    term[2, 0] = done[2, 0] = 1.0  # member 0 terminates at t = 2
    done[3, 1] = 1.0  # member 1 is truncated at t = 3: bootstraps from V(s'), no carry-over
    adv, ret = gae(r, v, nv, term, done, disc, lam=0.9)
    ref = torch.tensor(_gae_by_hand(r.tolist(), v.tolist(), nv.tolist(), term.tolist(),
                                    done.tolist(), disc.tolist(), 0.9))  # fmt: skip
    assert torch.allclose(adv, ref, atol=1e-6)
    assert torch.allclose(ret, adv + v)
    # at a terminal decision the advantage is r - V(s); at a truncated one r + d V(s') - V(s)
    assert adv[2, 0] == pytest.approx(float(r[2, 0] - v[2, 0]), abs=1e-6)
    assert adv[3, 1] == pytest.approx(float(r[3, 1] + 0.96 * nv[3, 1] - v[3, 1]), abs=1e-6)


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value() -> None:
    r = torch.tensor([[1.0], [2.0], [3.0]])
    v = torch.tensor([[0.5], [0.1], [0.2]])
    nv = torch.tensor([[0.1], [0.2], [4.0]])  # V of the next decision's state, then a bootstrap
    zeros, disc = torch.zeros(3, 1), torch.full((3, 1), 0.5)
    adv, _ = gae(r, v, nv, zeros, zeros, disc, lam=1.0)
    assert adv[0, 0] == pytest.approx(1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4 - 0.5)
    with pytest.raises(ValueError, match="same"):
        gae(r, v, nv[:2], zeros, zeros, disc, lam=1.0)


def test_clip_schedule_runs_from_base_to_final_as_dppo_interpolates() -> None:
    clip = clip_schedule(3, final=0.01, base=0.001, rate=3.0)
    mid = 0.001 + 0.009 * math.expm1(1.5) / math.expm1(3.0)
    assert clip.tolist() == pytest.approx([0.001, mid, 0.01])
    assert clip_schedule(1, 0.01, 0.001, 3.0).tolist() == pytest.approx([0.01])


def test_step_log_prob_is_the_clamped_mean_over_executed_rows() -> None:
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(5, 4, 2, generator=g)
    x = mean + 0.1 * torch.randn(5, 4, 2, generator=g)
    x[0, 0, 0] += 5.0  # far in the tail: clamped at -5
    std = torch.tensor(0.1)
    dens = torch.distributions.Normal(mean, std).log_prob(x).clamp(-5, 2)
    got = step_log_prob(x, mean, std, act_steps=3)
    assert torch.allclose(got, dens[:, :3].flatten(1).mean(1), atol=1e-5)
    changed = x.clone()
    changed[:, 3] += 1.0  # rows that are not executed do not count
    assert torch.equal(step_log_prob(changed, mean, std, act_steps=3), got)


def test_policy_loss_clips_only_in_the_direction_of_the_advantage() -> None:
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    clip = torch.full((4,), 0.1)
    # ratios 1.5 (A > 0: clipped), 0.5 (A > 0: not), 0.5 (A < 0: clipped), 1.5 (A < 0: not)
    new = torch.log(torch.tensor([1.5, 0.5, 0.5, 1.5])).requires_grad_(True)
    loss, info = compute_policy_loss(new, old, adv, clip)
    loss.backward()
    expected_grad = torch.tensor([0.0, -0.5, 0.0, 1.5]) / 4  # d(-A r)/d log r = -A r
    assert torch.allclose(new.grad, expected_grad)
    assert info["ppo/clip_frac"] == 1.0
    at_one = torch.zeros(4, requires_grad=True)
    loss, info = compute_policy_loss(at_one, old, adv, clip)
    assert float(loss.detach()) == pytest.approx(0.0)  # -mean(A) with r = 1
    assert info["ppo/approx_kl"] == 0.0


def _config(**algo):
    return from_dict(
        {
            "task": {"name": "reach-v3", "horizon": 1, "act_steps": 1, "obs_history": 1},
            "algo": {"name": "dppo", "actor_lr": 3e-3, **algo},
            "policy": {"min_std": 0.1, "hidden": [32, 32, 32], "num_steps": 4, "eta": 1.0},
        }
    )


BANDIT = TaskSpec(name="bandit", suite="test", obs_dim=1, action_dim=1, max_episode_steps=1)


def _bandit(seed: int = 0, **algo) -> DPPO:
    """DPPO on a one-step task with 1-D observations and actions (identity normaliser)."""
    torch.manual_seed(seed)
    dppo = DPPO(_config(**algo), BANDIT)
    dppo.policy.normalizer.fit(torch.tensor([[[-1.0]], [[1.0]]]), torch.tensor([[[-1.0]], [[1.0]]]))
    return dppo


def _observe(dppo: DPPO, obs: np.ndarray, reward: np.ndarray) -> None:
    ones = np.ones(len(obs), np.float32)
    dppo.observe(Step(obs, np.zeros((len(obs), 1, 1)), reward, ones, ones, ones, obs))


def test_recorded_log_probs_are_those_the_update_recomputes() -> None:
    """At the first minibatch the ratio is exactly 1: collection and update agree."""
    dppo = _bandit()
    policy = dppo.policy
    obs = np.zeros((6, 1, 1), np.float32)
    actions, _ = dppo.act(obs, explore=True)
    xs, old = dppo.rollout.rows["xs"][0], dppo.rollout.rows["log_prob"][0]
    assert actions.shape == (6, 1, 1)
    assert np.allclose(actions, xs[:, -1].clamp(-1, 1).numpy())  # identity normaliser
    for k in range(4):
        mean, std = policy.step_mean_std(torch.as_tensor(obs), xs[:, k], k)
        assert torch.allclose(step_log_prob(xs[:, k + 1], mean, std, 1), old[:, k], atol=1e-5)
        assert float(std) >= 0.1  # the floor


def test_dppo_learns_a_bandit() -> None:
    """Reward = the (clipped) action, one decision per episode: PPO must push the chunks up."""
    dppo = _bandit(clip=0.2, clip_base=0.2, minibatch_size=256, epochs=4)
    gen = torch.Generator().manual_seed(0)
    obs = np.zeros((128, 1, 1), np.float32)

    def mean_reward() -> float:
        return float(dppo.policy.sample(torch.as_tensor(obs), generator=gen).mean())

    before = mean_reward()
    for _ in range(8):
        for _ in range(2):
            a, _ = dppo.act(obs, explore=True)
            _observe(dppo, obs, a[:, 0, 0])
        info = dppo.rollout.update(train_actor=True)
    after = mean_reward()
    assert after > before + 0.4, (before, after)
    assert info["ppo/samples"] == 256 * 4  # 2 decisions x 128 envs x 4 steps
    assert not dppo.rollout.rows["obs"]  # the rollout is consumed


def test_bc_term_pulls_the_chain_to_the_target_pairs_and_is_off_at_zero() -> None:
    """algo.bc_coef: with reward 0 and V = 0 every advantage is 0 and the clipped surrogate
    has no gradient, so only the behaviour-cloning term can move the policy: towards the target
    chunk (0.8) when on; not at all when off, and then its batch function is never drawn from."""
    obs = np.zeros((64, 1, 1), np.float32)
    target = (torch.zeros(64, 1, 1), torch.full((64, 1, 1), 0.8))
    results = {}
    for coef in (0.0, 1.0):
        dppo = _bandit(bc_coef=coef, minibatch_size=64, epochs=2, norm_advantages=False)
        policy = dppo.policy
        start = {k: v.clone() for k, v in policy.state_dict().items()}
        for p in dppo.rollout.value.parameters():
            p.data.zero_()  # V = 0, and its loss against returns of 0 has no gradient
        draws: list[int] = []

        def bc_batch(draws=draws):
            draws.append(1)
            return target

        for _ in range(6):
            dppo.act(obs, explore=True)
            _observe(dppo, obs, np.zeros(64, np.float32))
            info = dppo.rollout.update(train_actor=True, bc_batch=bc_batch)
        with torch.no_grad():
            det = policy.sample(torch.as_tensor(obs), generator=torch.Generator().manual_seed(1))
        moved = any(not torch.equal(start[k], v) for k, v in policy.state_dict().items())
        results[coef] = (float(det.mean()), moved, len(draws), info)
    mean_off, moved_off, draws_off, info_off = results[0.0]
    mean_on, moved_on, draws_on, info_on = results[1.0]
    assert not moved_off and draws_off == 0 and "ppo/bc_loss" not in info_off
    assert moved_on and draws_on == 6 * 2 * 4  # one draw per minibatch step (4 steps each)
    assert info_on["ppo/bc_loss"] > 0
    assert abs(mean_on - 0.8) < 0.25 and abs(mean_off - 0.8) > abs(mean_on - 0.8) + 0.2, (
        mean_off,
        mean_on,
    )
    dppo.act(obs, explore=True)
    _observe(dppo, obs, np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="bc_batch"):
        dppo.rollout.update(train_actor=True)


def test_dppo_config_is_its_own() -> None:
    """algo=dppo accepts DPPO's keys only, validates them and the groups it needs."""
    with pytest.raises(ConfigError, match="policy.min_std"):
        from_dict({"task": {"name": "can"}, "algo": {"name": "dppo"}})
    assert _config(ema_decay=0.99).algo.ema_decay == 0.99  # an evaluated average is allowed
    with pytest.raises(ConfigError, match="algo.clip_base"):
        _config(clip=0.01, clip_base=0.02)
    with pytest.raises(ConfigError, match="algo.bc_coef"):
        _config(bc_coef=-0.1)
    for foreign in ({"eval_mode": "best"}, {"guidance": "H"}, {"ppo_epochs": 3}):
        with pytest.raises(Exception, match=list(foreign)[0]):
            _config(**foreign)  # OTPR's keys (and the old prefixed names) are not DPPO's
    with pytest.raises(Exception, match="bc_coef"):
        from_dict({"task": {"name": "can"}, "algo": {"name": "otpr", "bc_coef": 1.0}})
