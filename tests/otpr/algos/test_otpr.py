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
