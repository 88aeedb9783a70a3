import numpy as np
import pytest
import torch

from envs.metaworld import metaworld_spec
from otpr.algos.chain_ppo import floored_std, step_log_prob
from otpr.algos.otpr import OTPR
from otpr.config import from_dict


def _agent(**algo) -> OTPR:
    torch.manual_seed(0)  # the networks and the normaliser's data, whatever ran before
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


class _Data:
    """The part of ``TrainingData`` that OTPR's update reads: random replay and demo pairs."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def batch(self, size: int, recent: int = 0) -> dict[str, torch.Tensor]:
        return {"obs": torch.randn(size, 1, 39) * 0.1, "actions": torch.rand(size, 4, 4) - 0.5}

    def demo_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(size, 1, 39) * 0.1, torch.rand(size, 4, 4) - 0.5


@pytest.mark.parametrize("targets", ["resampled", "replay"])
def test_demo_pairs_weigh_one_each_when_uniform(targets: str) -> None:
    seen = {}
    for demo_weights in ("uniform", "guidance"):
        agent = _agent(
            guidance="Hc",
            actor_targets=targets,
            demo_weights=demo_weights,
            demo_fraction=0.5,
            actor_batch_size=32,
            actor_updates_per_iter=1,
            actor_target_states=8,
            critic_updates_per_iter=0,
            warmup_iterations=0,
        )
        calls = []

        def record(obs, act, w=None, num_demo=0, agent=agent, calls=calls):
            # replay targets under the guidance leave the weights to update_actor
            w = agent.pair_weights(obs, act) if w is None else w
            calls.append((w, num_demo))
            return {}

        agent.update_actor = record
        agent.update(_Data(), iteration=0)
        ((weights, num_demo),) = calls
        assert num_demo == 16 and weights.shape == (32,)
        seen[demo_weights] = weights
    demo = seen["uniform"][16:]
    torch.testing.assert_close(demo, torch.ones(16))
    own = seen["uniform"][:16]
    assert (own == 0).any() and own.max() > 1  # the own pairs are still ranked by Hc
    # under the guidance, the demos form one Hc row: most of them weigh 0
    assert (seen["guidance"][16:] == 0).sum() > 8


def test_ppo_candidates_advantage_is_the_plan_weight_minus_one_per_state() -> None:
    agent = _agent(ppo_num_candidates=4, actor_update="ppo", ppo_min_std=0.1, actor_obs_bound=0.0)
    fixed = torch.tensor([[1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    agent.candidate_weights = lambda obs, cand: fixed
    obs = torch.randn(3, 1, 39)
    batch = agent.ppo_candidates(obs)
    assert batch.obs.shape == (12, 1, 39) and batch.xs.shape == (12, 3, 4, 4)
    torch.testing.assert_close(batch.obs[4], obs[1])
    raw = torch.tensor([0.0, 2.0, -1.0, -1.0] + [0.0] * 8)  # w / mean(w) - 1 per state
    torch.testing.assert_close(batch.advantage, raw / raw.std())
    assert agent.policy.min_std == 0.0  # the floor only held while drawing
    # the recorded log-probabilities are those of the floored chain under the same network
    with floored_std(agent.policy, 0.1):
        mean, std = agent.policy.step_mean_std(batch.obs, batch.xs[:, 1], 1)
    assert float(std) >= 0.1
    torch.testing.assert_close(
        step_log_prob(batch.xs[:, 2], mean, std, 2), batch.old_log_prob[:, 1]
    )


def test_ppo_actor_moves_towards_kept_candidates_and_away_from_dropped_ones() -> None:
    """A guidance that keeps the candidates whose first action coordinate is above the state's
    median: the dsm update could only pull towards them; PPO must move the samples up."""
    agent = _agent(
        ppo_num_candidates=8,
        actor_update="ppo",
        actor_lr=1e-3,
        ppo_clip=0.2,
        ppo_clip_base=0.2,
        ppo_epochs=4,
        ppo_minibatch_size=256,
        actor_obs_bound=0.0,
    )

    def keep_high(obs, cand):
        x = cand[..., 0, 0]
        return (x > x.median(dim=1, keepdim=True).values).float()

    agent.candidate_weights = keep_high
    obs = torch.zeros(64, 1, 39)
    gen = torch.Generator().manual_seed(0)

    def mean_first() -> float:
        return float(agent.policy.sample(obs, num_samples=4, generator=gen)[..., 0, 0].mean())

    before = mean_first()
    infos = [agent.update_actor_ppo(obs, demo_batch=lambda: None) for _ in range(10)]
    assert mean_first() > before + 0.2, (before, mean_first())
    assert infos[0]["actor/ppo_dropped_frac"] == 0.5  # half of each state's candidates


def test_ppo_actor_update_runs_end_to_end(tmp_path, monkeypatch) -> None:
    """``otpr algo.actor_update=ppo algo.ppo_bc_coef=0.1 debug=true`` (otpr.loop.run): the
    actor takes PPO steps through the chain with the demo term, not DSM steps, and every
    logged number is finite."""
    import json
    import math

    from otpr import cli  # noqa: F401  registers the schemas
    from otpr.config import apply_debug
    from otpr.loop import run

    monkeypatch.chdir(tmp_path)
    cfg = apply_debug(
        from_dict(
            {
                "task": {"name": "reach-v3"},
                "algo": {"name": "otpr", "actor_update": "ppo", "ppo_bc_coef": 0.1},
                "debug": True,
                "progress": False,
                "tensorboard": False,
            }
        )
    )
    run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["actor_update"] == "ppo" and math.isfinite(saved["final_success"])
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    keys = {k for r in records for k in r}
    assert {"ppo/policy_loss", "ppo/bc_loss", "actor/ppo_dropped_frac"} <= keys
    assert "actor/dsm" not in keys
    numbers = [v for r in records for v in r.values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in numbers)
