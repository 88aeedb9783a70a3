"""DiffusionPolicy: weighted DSM loss, batched candidates, chain log-probs, state, training."""

from pathlib import Path

import pytest
import torch

from policies import VPSDE, DiffusionPolicy, MinMaxNormalizer, ResidualMLPScoreNet

OBS_DIM, ACT_DIM, T_O, H = 3, 2, 2, 4


def make_policy(
    sampler="ddim", eta=1.0, num_steps=5, min_std=0.0, hidden=(32, 32, 32), seed=0, temperature=1.0
):
    torch.manual_seed(seed)
    net = ResidualMLPScoreNet(ACT_DIM, H, T_O * OBS_DIM, hidden=hidden)
    policy = DiffusionPolicy(
        OBS_DIM, ACT_DIM, T_O, H, net, VPSDE(), sampler=sampler, num_steps=num_steps, eta=eta,
        min_std=min_std, temperature=temperature, device="cpu",
    )  # fmt: skip
    g = torch.Generator().manual_seed(123)
    policy.normalizer.fit(
        torch.randn(64, T_O, OBS_DIM, generator=g) * 3,
        torch.rand(64, H, ACT_DIM, generator=g) * 4 - 1,
    )
    return policy


def batch(b=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, T_O, OBS_DIM, generator=g), torch.rand(b, H, ACT_DIM, generator=g) * 4 - 1


def test_dsm_per_sample_loss_matches_manual_reference():
    policy = make_policy()
    obs, act = batch()
    losses = policy.per_sample_dsm_loss(obs, act, generator=torch.Generator().manual_seed(5))
    # redraw t then eps from the same seed and evaluate by hand
    g = torch.Generator().manual_seed(5)
    t = policy.sde.t_min + (policy.sde.T - policy.sde.t_min) * torch.rand(6, generator=g)
    eps = torch.randn(6, H, ACT_DIM, generator=g)
    x0 = policy.normalizer.normalize_action(act)
    x_t = policy.sde.alpha(t)[:, None, None] * x0 + policy.sde.sigma(t)[:, None, None] * eps
    cond = policy.normalizer.normalize_obs(obs).reshape(6, -1)
    ref = ((policy.net(x_t, t, cond) - eps) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(losses, ref)


@pytest.mark.parametrize("weight_norm", ["none", "batch_mean"])
def test_dsm_weighting(weight_norm):
    policy = make_policy()
    obs, act = batch()

    def loss(w):
        gen = torch.Generator().manual_seed(7)
        return policy.compute_dsm_loss(obs, act, w, weight_norm=weight_norm, generator=gen)[0]

    per_sample = policy.per_sample_dsm_loss(obs, act, generator=torch.Generator().manual_seed(7))
    w = torch.tensor([0.0, 1.0, 2.0, 0.5, 3.0, 0.25])
    expected = (w * per_sample).sum() / (w.sum() if weight_norm == "batch_mean" else 6)
    torch.testing.assert_close(loss(w), expected)
    # zero weights: zero loss, not NaN, and zero gradient
    zero = loss(torch.zeros(6))
    assert zero.item() == 0.0
    zero.backward()
    assert all(p.grad is None or (p.grad == 0).all() for p in policy.net.parameters())
    torch.testing.assert_close(loss(None), per_sample.mean())
    if weight_norm == "batch_mean":  # invariant to the scale of the weights
        torch.testing.assert_close(loss(1000.0 * w), loss(w))
    else:
        torch.testing.assert_close(loss(1000.0 * w), 1000.0 * loss(w))


def test_dsm_weight_clip_caps_the_normalised_weights():
    policy = make_policy()
    obs, act = batch()
    per_sample = policy.per_sample_dsm_loss(obs, act, generator=torch.Generator().manual_seed(7))
    # sparse weights: one pair holds the batch's weight; normalised, it would count 6x
    w = torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0, 0.0])

    def loss(clip):
        gen = torch.Generator().manual_seed(7)
        out = policy.compute_dsm_loss(
            obs, act, w, weight_norm="batch_mean", generator=gen, weight_clip=clip
        )
        return out[0]

    torch.testing.assert_close(loss(None), per_sample[2])
    torch.testing.assert_close(loss(2.0), 2.0 * per_sample[2] / 6)
    torch.testing.assert_close(loss(100.0), loss(None))  # a cap above every weight is a no-op
    with pytest.raises(ValueError, match="weight_clip must be > 0"):
        loss(0.0)


def test_dsm_info_and_errors():
    policy = make_policy()
    obs, act = batch()
    _, info = policy.compute_dsm_loss(obs, act, torch.full((6,), 2.0))
    assert info["actor/weight_mean"] == 2.0 and info["actor/dsm"] == pytest.approx(
        2.0 * info["actor/dsm_unweighted"], rel=1e-6
    )
    with pytest.raises(ValueError, match=r"obs must be a tensor \[B, T_o=2, obs_dim=3\]"):
        policy.compute_dsm_loss(obs[:, :1], act)
    with pytest.raises(ValueError, match=r"actions must be a tensor \[B=6, H=4, action_dim=2\]"):
        policy.compute_dsm_loss(obs, act[:, :3])
    with pytest.raises(ValueError, match=r"weights must be a tensor \[B=6\]"):
        policy.compute_dsm_loss(obs, act, torch.ones(5))
    with pytest.raises(ValueError, match="weight_norm"):
        policy.compute_dsm_loss(obs, act, weight_norm="sum")
    with pytest.raises(ValueError, match="weights >= 0"):
        policy.compute_dsm_loss(obs, act, -torch.ones(6), weight_norm="batch_mean")


@pytest.mark.parametrize("sampler", ["ddim", "euler_maruyama", "dpm_solver_pp_2m"])
def test_candidates_share_one_network_call_per_step(sampler):
    policy = make_policy(sampler=sampler, num_steps=7)
    batch_sizes = []
    policy.net.register_forward_hook(lambda m, inp, out: batch_sizes.append(inp[0].shape[0]))
    obs, _ = batch(b=3)
    for n in (1, 16):
        batch_sizes.clear()
        actions = policy.sample(obs, num_samples=n, generator=torch.Generator().manual_seed(0))
        assert batch_sizes == [3 * n] * 7
        assert actions.shape == (3, n, H, ACT_DIM)
    # clipped in normalised space: raw actions lie inside the fitted action range
    lo, hi = policy.normalizer.action_min, policy.normalizer.action_max
    assert (actions >= lo - 1e-5).all() and (actions <= hi + 1e-5).all()
    assert policy.predict_action(obs).shape == (3, H, ACT_DIM)


def test_candidates_are_independent_draws_per_state():
    policy = make_policy()
    obs, _ = batch(b=2)
    a = policy.sample(obs, num_samples=4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a[:, 0], a[:, 1])
    b = policy.sample(obs, num_samples=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # the generator makes sampling reproducible


def test_given_starting_noise_replaces_the_draw():
    """x_T given: the chunk the generator's own draw of x_T gives; with DDIM eta = 0 a function
    of (obs, x_T), whatever the generator."""
    policy = make_policy(eta=0.0)
    obs, _ = batch(b=2)
    z = torch.randn(2, 3, H, ACT_DIM, generator=torch.Generator().manual_seed(0))
    drawn = policy.sample(obs, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(policy.sample(obs, 3, x_T=z), drawn)
    again = policy.sample(obs, 3, generator=torch.Generator().manual_seed(9), x_T=z)
    assert torch.allclose(again, drawn)
    assert not torch.allclose(policy.sample(obs, 3, x_T=-z), drawn)
    with pytest.raises(ValueError, match=r"x_T has shape \(2, 3, 2\), expected \(2, 3, 4, 2\)"):
        policy.sample(obs, 3, x_T=z[:, :, 0])


@pytest.mark.parametrize("sampler, eta, min_std, temperature",
                         [("ddim", 1.0, 0.0, 1.0), ("ddim", 0.0, 0.05, 1.0),
                          ("euler_maruyama", 0.0, 0.0, 1.0), ("ddim", 1.0, 0.0, 0.5)])  # fmt: skip
def test_chain_log_probs(sampler, eta, min_std, temperature):
    policy = make_policy(sampler, eta, num_steps=6, min_std=min_std, temperature=temperature)
    obs, _ = batch(b=3)
    chain = policy.sample_chain(obs, num_samples=2, generator=torch.Generator().manual_seed(0))
    k_steps = 6
    assert chain.xs.shape == (3, 2, k_steps + 1, H, ACT_DIM)
    assert chain.log_probs.shape == (3, 2, k_steps) and chain.stds.shape == (k_steps,)
    if min_std > 0:
        assert torch.allclose(chain.stds, torch.full((k_steps,), min_std, dtype=torch.float64))
    if temperature != 1.0:  # the recorded stds are the scaled ones the chain was drawn with
        warm = make_policy(sampler, eta, num_steps=6, min_std=min_std).sample_chain(obs)
        torch.testing.assert_close(chain.stds, warm.stds * temperature)
    # recorded log-prob == torch Normal log_prob summed over the chunk
    for k in range(k_steps):
        normal = torch.distributions.Normal(chain.means[:, :, k], chain.stds[k].float())
        ref = normal.log_prob(chain.xs[:, :, k + 1]).sum(dim=(-2, -1))
        torch.testing.assert_close(chain.log_probs[:, :, k], ref)
    # recomputation under the current network, with a different step index per row
    n = 3 * 2
    rows = torch.arange(n)
    ks = torch.arange(n) % k_steps
    xs = chain.xs.reshape(n, k_steps + 1, H, ACT_DIM)
    lp = policy.step_log_prob(obs.repeat_interleave(2, 0), xs[rows, ks], xs[rows, ks + 1], ks)
    torch.testing.assert_close(lp, chain.log_probs.reshape(n, k_steps)[rows, ks])
    # final actions are the unnormalised, clipped last chain state
    final = policy.normalizer.unnormalize_action(chain.xs[:, :, -1].clamp(-1, 1))
    torch.testing.assert_close(chain.actions, final)


def test_step_log_prob_is_differentiable_and_moves_with_the_network():
    policy = make_policy()
    obs, _ = batch(b=2)
    chain = policy.sample_chain(obs, generator=torch.Generator().manual_seed(0))
    x_k, x_next = chain.xs[:, 0, 2], chain.xs[:, 0, 3]
    lp = policy.step_log_prob(obs, x_k, x_next, 2)
    lp.sum().backward()
    assert policy.net.output_layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        policy.net.output_layer.bias.add_(0.5)
    assert not torch.allclose(policy.step_log_prob(obs, x_k, x_next, 2), lp)


def test_deterministic_samplers_have_no_step_log_prob():
    obs, _ = batch(b=2)
    with pytest.raises(ValueError, match="eta=0.0, temperature=1.0 has a deterministic step"):
        make_policy(eta=0.0).sample_chain(obs)
    with pytest.raises(ValueError, match="eta=1.0, temperature=0.0 has a deterministic step"):
        make_policy(temperature=0.0).sample_chain(obs)
    with pytest.raises(ValueError, match="dpm_solver_pp_2m"):
        make_policy(sampler="dpm_solver_pp_2m").sample_chain(obs)
    with pytest.raises(ValueError, match=r"k must lie in \[0, 5\)"):
        p = make_policy()
        p.step_log_prob(obs, torch.zeros(2, H, ACT_DIM), torch.zeros(2, H, ACT_DIM), 5)


def test_state_dict_round_trip_restores_normalizer_and_sampling():
    policy = make_policy()
    obs, _ = batch(b=2)
    net = ResidualMLPScoreNet(ACT_DIM, H, T_O * OBS_DIM, hidden=(32, 32, 32))
    fresh = DiffusionPolicy(OBS_DIM, ACT_DIM, T_O, H, net, VPSDE(), num_steps=5, eta=1.0)
    with pytest.raises(RuntimeError, match="before fit"):
        fresh.sample(obs)
    fresh.load_state_dict(policy.state_dict())
    for key in ("obs_min", "obs_max", "action_min", "action_max"):
        assert torch.equal(getattr(fresh.normalizer, key), getattr(policy.normalizer, key))
    a = policy.sample(obs, 3, generator=torch.Generator().manual_seed(1))
    b = fresh.sample(obs, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_set_normalizer_copies_statistics():
    policy = make_policy()
    other = MinMaxNormalizer(OBS_DIM, ACT_DIM).fit(
        torch.ones(4, OBS_DIM), torch.arange(8.0).view(4, 2)
    )
    policy.set_normalizer(other)
    assert torch.equal(policy.normalizer.action_max, torch.tensor([6.0, 7.0]))
    with pytest.raises(ValueError, match="expects"):
        policy.set_normalizer(MinMaxNormalizer(5, ACT_DIM).fit(torch.ones(2, 5), torch.ones(2, 2)))


def test_constructor_rejects_bad_settings():
    net = ResidualMLPScoreNet(ACT_DIM, H, T_O * OBS_DIM, hidden=(8,))
    with pytest.raises(ValueError, match="sampler"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, T_O, H, net, VPSDE(), sampler="heun")
    with pytest.raises(ValueError, match="eta"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, T_O, H, net, VPSDE(), eta=-0.1)
    with pytest.raises(ValueError, match="num_steps"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, T_O, H, net, VPSDE(), num_steps=0)
    with pytest.raises(ValueError, match="temperature"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, T_O, H, net, VPSDE(), temperature=1.5)


class GaussianEps(torch.nn.Module):
    """Exact eps of the VP-perturbed N(m, s^2) per action entry (the condition is ignored)."""

    def __init__(self, sde, m, s):
        super().__init__()
        self.sde, self.m, self.s = sde, m, s

    def forward(self, x, t, cond):
        a, sg = self.sde.alpha(t)[:, None, None], self.sde.sigma(t)[:, None, None]
        return sg * (x - a * self.m) / (a**2 * self.s**2 + sg**2)


@pytest.mark.parametrize("sampler", ["ddim", "euler_maruyama", "dpm_solver_pp_2m"])
def test_temperature_draws_nearer_the_mode(sampler):
    """Data N(0.3, 0.1^2): at temperature tau the probability-flow ODE maps x_T ~ N(0, tau^2)
    linearly, so DPM-Solver's spread is tau * 0.1; the stochastic samplers narrow too (their own
    spread at tau = 1 is off 0.1 at 50 steps: DDIM eta = 1 gives 0.07, Euler-Maruyama 0.12),
    and at tau = 0 every sampler returns one chunk whatever the seed."""
    sde, m, s = VPSDE(), 0.3, 0.1
    obs = torch.zeros(2000, T_O, OBS_DIM)

    def draw(temperature, seed):
        kw = {"eta": 1.0} if sampler == "ddim" else {}
        policy = DiffusionPolicy(
            OBS_DIM, ACT_DIM, T_O, H, GaussianEps(sde, m, s), sde, sampler=sampler,
            num_steps=50, temperature=temperature, **kw,
        )  # fmt: skip
        # the identity normaliser: the exact eps is written in action units
        bounds = torch.tensor([-1.0, 1.0])[:, None, None]
        policy.normalizer.fit(bounds.expand(2, 1, OBS_DIM), bounds.expand(2, 1, ACT_DIM))
        return policy.sample(obs, generator=torch.Generator().manual_seed(seed)).double()

    warm, half = draw(1.0, 0), draw(0.5, 0)
    for x in (warm, half):
        assert abs(float(x.mean()) - m) < 0.01
    ratio = float(half.std()) / float(warm.std())
    if sampler == "dpm_solver_pp_2m":
        assert abs(float(warm.std()) - s) < 0.005 and abs(ratio - 0.5) < 0.03
    else:
        assert 0.3 < ratio < 0.8
    cold = draw(0.0, 1)
    assert torch.equal(cold, draw(0.0, 2)) and float(cold.std()) == 0.0
    assert abs(float(cold.mean()) - m) < 0.02


def test_tiny_policy_learns_the_mode_of_each_condition():
    """Two-mode 1-D data: condition c = +1 -> actions near +0.6, c = -1 -> near -0.6."""
    torch.manual_seed(0)
    net = ResidualMLPScoreNet(1, 2, 1, hidden=(64, 64, 64))
    policy = DiffusionPolicy(1, 1, 1, 2, net, VPSDE(), sampler="ddim", num_steps=10)
    g = torch.Generator().manual_seed(0)
    cond = torch.randint(0, 2, (2048, 1, 1), generator=g).float() * 2 - 1
    actions = 0.6 * cond.expand(2048, 2, 1) + 0.03 * torch.randn(2048, 2, 1, generator=g)
    policy.normalizer.fit(cond, actions)
    opt = torch.optim.Adam(policy.net.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(0, 2048, (128,), generator=g)
        loss, _ = policy.compute_dsm_loss(cond[idx], actions[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_obs = torch.tensor([[[1.0]], [[-1.0]]])
    samples = policy.sample(test_obs, num_samples=200, generator=torch.Generator().manual_seed(1))
    for i, target in enumerate((0.6, -0.6)):
        near = ((samples[i] - target).abs() < 0.15).float().mean()
        assert near > 0.9, (target, near)


def test_no_cuda_calls_in_policies():
    root = Path(__file__).resolve().parents[2] / "policies"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 6
    offenders = [f.name for f in files if ".cuda(" in f.read_text()]
    assert offenders == []


def test_policy_runs_with_the_unet_on_an_odd_horizon():
    from policies import TemporalUnet1D

    torch.manual_seed(0)
    net = TemporalUnet1D(ACT_DIM, 6, T_O * OBS_DIM, down_dims=(16, 32), n_groups=4, time_dim=16)
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, T_O, 6, net, VPSDE("cosine"), num_steps=3)
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(8, T_O, OBS_DIM, generator=g), torch.randn(8, 6, ACT_DIM, generator=g)
    policy.normalizer.fit(obs, act)
    loss, _ = policy.compute_dsm_loss(obs, act)
    loss.backward()
    assert net.final_conv[1].weight.grad.abs().sum() > 0
    actions = policy.sample(obs[:2], num_samples=3)
    assert actions.shape == (2, 3, 6, ACT_DIM) and torch.isfinite(actions).all()


def test_deterministic_block_samples_without_noise_and_restores_the_sampler():
    """Inside ``deterministic()`` the chunk is a function of (obs, x_T): other generators give
    the same chunk, and it is the eta = 0, no-floor DDIM chunk. Outside, the noisy sampler is
    back. Euler-Maruyama has no noise-free form and refuses."""
    policy = make_policy("ddim", eta=1.0, min_std=0.1)
    obs, _ = batch(4)
    x_T = torch.randn(4, 1, H, ACT_DIM, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        noisy = [
            policy.sample(obs, x_T=x_T, generator=torch.Generator().manual_seed(s)) for s in (1, 2)
        ]
        with policy.deterministic():
            quiet = [
                policy.sample(obs, x_T=x_T, generator=torch.Generator().manual_seed(s))
                for s in (1, 2)
            ]
        assert (policy.eta, policy.min_std) == (1.0, 0.1)
        reference = make_policy("ddim", eta=0.0, min_std=0.0)
        expected = reference.sample(obs, x_T=x_T)
    assert not torch.allclose(noisy[0], noisy[1])
    assert not policy.sample(obs).requires_grad  # sampling builds no graph
    assert torch.equal(quiet[0], quiet[1])
    assert torch.allclose(quiet[0], expected)
    em = make_policy("euler_maruyama", min_std=0.1)
    with pytest.raises(ValueError, match="euler_maruyama"):
        with em.deterministic():
            pass
    assert em.min_std == 0.1
