import torch

from envs.metaworld import metaworld_spec
from otpr.algos.otpr import OTPR
from otpr.config import from_dict


def _agent(**algo) -> OTPR:
    cfg = from_dict(
        {"task": {"name": "reach-v3", "obs_history": 1, "horizon": 4, "act_steps": 2}, "algo": algo}
    )
    cfg.policy.num_steps = 2
    agent = OTPR(cfg, metaworld_spec("reach-v3"))
    agent.policy.normalizer.fit(torch.randn(50, 39), torch.rand(50, 4) * 2 - 1)
    return agent


def test_resampled_targets_normalise_weights_per_state() -> None:
    agent = _agent(num_samples=4)
    fixed = torch.tensor([[1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    agent.candidate_weights = lambda obs, cand: fixed  # a known guidance
    obs = torch.randn(3, 1, 39)
    t_obs, t_act, w = agent.resampled_targets(obs)
    assert t_obs.shape == (12, 1, 39) and t_act.shape == (12, 4, 4)
    torch.testing.assert_close(t_obs[4], obs[1])  # candidates of state 1 carry state 1
    w = w.reshape(3, 4)
    torch.testing.assert_close(w[0], torch.tensor([1.0, 3.0, 0.0, 0.0]))  # mean 1 per state
    torch.testing.assert_close(w[1], torch.ones(4))  # all-zero state -> uniform
    torch.testing.assert_close(w[2], torch.ones(4))


def test_executed_part_and_guidance_shapes() -> None:
    agent = _agent(guidance="A", num_samples=3)
    obs = torch.randn(5, 1, 39)
    cand = agent.policy.sample(obs, num_samples=3)
    assert agent.executed(cand).shape == (5, 3, 2 * 4)  # only the T_a executed steps
    w = agent.candidate_weights(obs, cand)
    assert w.shape == (5, 3)
    assert torch.isclose(w[:, :, None], torch.tensor([0.3, 0.7])).any(-1).all()


def test_actor_ignores_pairs_outside_the_data_span() -> None:
    agent = _agent(guidance="uniform", actor_obs_bound=1.5)
    lo, hi = agent.policy.normalizer.obs_min, agent.policy.normalizer.obs_max
    inside = ((lo + hi) / 2).expand(4, 1, 39).clone()
    outside = inside.clone()
    outside[:, 0, 7] = hi[7] + 2.0 * (hi[7] - lo[7])  # normalised ~ 5 in one dim
    assert agent.in_support(torch.cat([inside, outside])).tolist() == [1.0] * 4 + [0.0] * 4
    # a step on out-of-span pairs only changes nothing: their weight is zero
    before = [p.clone() for p in agent.policy.parameters()]
    info = agent.update_actor(outside, torch.rand(4, 4, 4) * 2 - 1)
    assert info["actor/in_support_frac"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    info = agent.update_actor(inside, torch.rand(4, 4, 4) * 2 - 1)
    assert not all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    # bound 0 keeps every pair
    agent.cfg.algo.actor_obs_bound = 0.0
    assert agent.in_support(outside).tolist() == [1.0] * 4


def test_q_guidance_temperature_in_units_of_the_within_state_spread() -> None:
    """exp((Q - max Q) / (T std)) per state: the same weights whatever Q's scale, so a state
    whose candidates differ by 0.01 is ranked as sharply as one whose differ by 1."""
    from otpr.algos.otpr import exp_q_weights

    q = torch.tensor([[0.00, 0.01, 0.02], [0.0, 1.0, 2.0]])
    w = exp_q_weights(q, 0.5, "within_state")
    torch.testing.assert_close(w[0], w[1])
    torch.testing.assert_close(w[0], torch.exp(torch.tensor([-4.0, -2.0, 0.0])))  # std 0.01 x 0.5
    absolute = exp_q_weights(q, 0.5, "absolute")
    assert absolute[0].min() > 0.95 and absolute[1].min() < 0.02  # the old, scale-bound weights
    paired = exp_q_weights(torch.tensor([[1.0], [3.0]]), 1.0, "within_state")
    torch.testing.assert_close(paired[:, 0], torch.exp(torch.tensor([-2.0, 0.0]) / 2**0.5))
    assert exp_q_weights(torch.tensor([[5.0]]), 1.0, "within_state").item() == 1.0


def test_conditional_plan_is_the_l2_plan_with_the_action_marginal_relaxed() -> None:
    """Guidance Hc: per state, p = H / L is the Euclidean projection of z = -c / (2 lam) onto
    the simplex (KKT: where p > 0, z - p is one constant tau; where p = 0, z <= tau), with the
    cost standardised over the state's candidates, so the weights do not depend on Q's scale."""
    from otpr.algos.otpr import conditional_plan

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
