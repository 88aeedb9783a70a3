"""OTPR on executed advantages (otpr/algos/otpr_gae.py): DPPO's update plus the plan-weighted
DSM term on the policy's own candidates. With the term off it is DPPO bit for bit; on its own the
term pulls the policy towards the candidates the critic ranks high."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from envs.base import TaskSpec
from otpr.algos import Step
from otpr.algos.dppo import DPPO
from otpr.algos.otpr_gae import OTPRGAE
from otpr.buffer import ReplayBuffer, TrainingData
from otpr.config import ConfigError, from_dict
from otpr.diagnose import rank_corr

warnings.filterwarnings("ignore")

BANDIT = TaskSpec(name="bandit", suite="test", obs_dim=1, action_dim=1, max_episode_steps=1)


def _config(name: str, **algo):
    return from_dict(
        {
            "task": {"name": "reach-v3", "horizon": 1, "act_steps": 1, "obs_history": 1},
            "algo": {"name": name, "actor_lr": 3e-3, "minibatch_size": 64, "epochs": 2, **algo},
            "policy": {"min_std": 0.1, "hidden": [32, 32, 32], "num_steps": 4, "eta": 1.0},
        }
    )


def _agent(cls, name: str, **algo):
    torch.manual_seed(0)
    agent = cls(_config(name, **algo), BANDIT)
    agent.policy.normalizer.fit(
        torch.tensor([[[-1.0]], [[1.0]]]), torch.tensor([[[-1.0]], [[1.0]]])
    )
    return agent


def _data(seed: int) -> TrainingData:
    """A replay of 64 uniform actions whose reward is the action, demos alike."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((64, 1, 1), np.float32)
    act = rng.uniform(-1, 1, (64, 1, 1)).astype(np.float32)
    ones = np.ones(64, np.float32)
    buf = ReplayBuffer(1000, (1, 1), (1, 1))
    buf.add(obs=obs, actions=act, reward=act[:, 0, 0], discount=ones, next_obs=obs,
            terminated=ones)  # fmt: skip
    return TrainingData(buf, obs, act, rng)


def _rollout(agent, obs: np.ndarray, reward_is_action: bool = True) -> None:
    """One decision per env, the episode ending there."""
    actions, _ = agent.act(obs, explore=True)
    reward = actions[:, 0, 0] if reward_is_action else np.zeros(len(obs), np.float32)
    ones = np.ones(len(obs), np.float32)
    agent.observe(Step(obs, actions, reward, ones, ones, ones, obs))


def test_ot_coef_zero_is_dppo_bit_for_bit() -> None:
    """algo.ot_coef=0: the critic learns, but the policy and V follow DPPO's exactly; with the
    term on (same rollouts' seeds) the policy ends elsewhere."""
    obs = np.zeros((32, 1, 1), np.float32)
    dppo = _agent(DPPO, "dppo")
    agents = {c: _agent(OTPRGAE, "otpr_gae", ot_coef=c, critic_updates_per_iter=5) for c in (0, 1)}
    for it in range(3):
        for agent in (dppo, *agents.values()):
            _rollout(agent, obs)
        dppo.update(_data(it), iteration=5)
        info = {c: a.update(_data(it), iteration=5) for c, a in agents.items()}
    assert "ppo/ot_loss" not in info[0] and info[1]["ppo/ot_loss"] > 0
    assert "critic/q_loss" in info[0] or any(k.startswith("critic/") for k in info[0])
    for name in ("policy", "value"):
        ref = dppo.modules()[name].state_dict()
        for key, value in agents[0].modules()[name].state_dict().items():
            assert torch.equal(value, ref[key]), (name, key)
    moved = agents[1].policy.state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in dppo.policy.state_dict().items())


def test_the_plan_term_pulls_towards_the_candidates_the_critic_ranks_high() -> None:
    """Reward 0 and V = 0 make every advantage 0, so only the term moves the policy. With a
    critic whose Q rises with the action, the plan gives each state's candidates weights of mean
    1 that rise with Q, the lowest exactly 0, and the policy's chunks move up."""
    agent = _agent(OTPRGAE, "otpr_gae", critic_updates_per_iter=0, norm_advantages=False)
    agent.critic.target_q = lambda s, a: a.sum(dim=-1)  # Q(s, a) = a
    for p in agent.rollout.value.parameters():
        p.data.zero_()
    obs = np.zeros((64, 1, 1), np.float32)
    obs_t, gen = torch.as_tensor(obs), torch.Generator().manual_seed(1)
    before = float(agent.policy.sample(obs_t, generator=gen).mean())

    t_obs, chunks, w = agent.plan_targets(obs_t[:16])
    w, q = w.view(16, -1), chunks.view(16, -1)
    assert torch.allclose(w.mean(dim=1), torch.ones(16), atol=1e-5)
    order = q.argsort(dim=1)
    ranked = w.gather(1, order)
    assert torch.all(ranked[:, 0] == 0)  # the lowest-Q candidate of every state is dropped
    assert torch.all(ranked[:, 1:] >= ranked[:, :-1] - 1e-6)  # weight rises with Q
    assert t_obs.shape == (16 * agent.cfg.algo.num_samples, 1, 1)

    data = _data(0)
    for _ in range(8):
        _rollout(agent, obs, reward_is_action=False)
        info = agent.update(data, iteration=5)
    after = float(agent.policy.sample(obs_t, generator=gen).mean())
    assert info["ppo/ot_loss"] > 0 and info["guidance/all_zero_frac"] == 0
    assert after > before + 0.2, (before, after)


def _term_only(ot_weights: str, q_fn) -> tuple[float, float, bool]:
    """Mean chunk before and after 6 updates in which only the term can move the policy
    (reward 0, V = 0), under the critic ``q_fn``; and whether any weight changed."""
    agent = _agent(
        OTPRGAE, "otpr_gae", critic_updates_per_iter=0, norm_advantages=False, ot_weights=ot_weights
    )
    agent.critic.target_q = q_fn
    for p in agent.rollout.value.parameters():
        p.data.zero_()
    start = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    obs = np.zeros((64, 1, 1), np.float32)
    obs_t = torch.as_tensor(obs)
    before = float(agent.policy.sample(obs_t, generator=torch.Generator().manual_seed(1)).mean())
    for _ in range(6):
        _rollout(agent, obs, reward_is_action=False)
        agent.update(_data(0), iteration=5)
    after = float(agent.policy.sample(obs_t, generator=torch.Generator().manual_seed(1)).mean())
    moved = any(not torch.equal(start[k], v) for k, v in agent.policy.state_dict().items())
    return before, after, moved


def test_centred_weights_move_nothing_without_a_ranking_and_follow_one() -> None:
    """ot_weights=centred: a critic that ranks nothing (Q constant: every weight 1) leaves the
    policy exactly as it was, where the pull term still fits the policy's own samples; a critic
    whose Q rises with the action moves the chunks up."""
    flat = lambda s, a: torch.zeros(a.shape[0])  # noqa: E731
    rising = lambda s, a: a.sum(dim=-1)  # noqa: E731
    assert _term_only("centred", flat)[2] is False
    assert _term_only("pull", flat)[2] is True
    before, after, _ = _term_only("centred", rising)
    assert after > before + 0.2, (before, after)


def test_candidates_are_drawn_with_the_terms_own_floor() -> None:
    """algo.ot_min_std is the std floor while the candidates are drawn; the policy's own floor
    (collection's) is back afterwards, also when the draw fails."""
    agent = _agent(OTPRGAE, "otpr_gae", ot_min_std=0.0)
    agent.critic.target_q = lambda s, a: a.sum(dim=-1)
    sample, seen = agent.policy.sample, []

    def recording(*args, **kwargs):
        seen.append(agent.policy.min_std)
        return sample(*args, **kwargs)

    agent.policy.sample = recording
    agent.plan_targets(torch.zeros(4, 1, 1))
    assert seen == [0.0] and agent.policy.min_std == 0.1

    def failing(*args, **kwargs):
        raise RuntimeError("draw failed")

    agent.policy.sample = failing
    with pytest.raises(RuntimeError):
        agent.plan_targets(torch.zeros(4, 1, 1))
    assert agent.policy.min_std == 0.1


def test_the_advantage_term_credits_executed_chunks_the_critic_ranks_high() -> None:
    """ot_term=advantage: with reward 0 and V = 0 the GAE advantages are 0 and only the plan's
    bonus on the executed chunks moves the policy; Q rising with the action moves it up. The
    bonus is standardised and scaled by ot_coef; with ot_coef=0 no chunk is even kept."""
    agent = _agent(
        OTPRGAE, "otpr_gae", critic_updates_per_iter=0, norm_advantages=False, ot_term="advantage",
        ot_coef=2.0, clip=0.2, clip_base=0.2,
    )  # fmt: skip
    agent.critic.target_q = lambda s, a: a.sum(dim=-1)
    for p in agent.rollout.value.parameters():
        p.data.zero_()
    obs = np.zeros((64, 1, 1), np.float32)
    obs_t = torch.as_tensor(obs)
    bonus, _ = agent.executed_bonus(
        obs_t, torch.linspace(-1, 1, 64).view(64, 1, 1), torch.zeros(64)
    )
    assert float(bonus.std()) == pytest.approx(2.0, rel=1e-4)
    assert float(bonus[-8:].mean()) > float(bonus[:8].mean())  # higher chunks, higher bonus
    before = float(agent.policy.sample(obs_t, generator=torch.Generator().manual_seed(1)).mean())
    for _ in range(6):
        _rollout(agent, obs, reward_is_action=False)
        info = agent.update(_data(0), iteration=5)
    after = float(agent.policy.sample(obs_t, generator=torch.Generator().manual_seed(1)).mean())
    assert after > before + 0.2, (before, after)
    assert "guidance/within_share" in info and "ppo/ot_loss" not in info
    off = _agent(OTPRGAE, "otpr_gae", ot_term="advantage", ot_coef=0.0)
    _rollout(off, obs)
    assert off._executed == []


def test_a_fitted_scale_adds_the_plan_as_far_as_the_returns_confirm_it() -> None:
    """ot_scale=fitted: the bonus is multiplied by the slope of the advantages on it (clipped
    at 0). Advantages that follow the critic's order keep the term; advantages against it or
    unrelated to it switch it off; ot_scale=fixed ignores them. The rank correlation is logged."""
    agent = _agent(OTPRGAE, "otpr_gae", ot_term="advantage", ot_scale="fitted", ot_coef=1.0)
    agent.critic.target_q = lambda s, a: a.sum(dim=-1)
    obs = torch.zeros(256, 1, 1)
    executed = torch.linspace(-1, 1, 256).view(256, 1, 1)
    plain, _ = agent.executed_bonus(obs, executed, torch.zeros(256))  # slope 0: nothing added
    assert float(plain.abs().max()) == 0.0
    fixed = _agent(OTPRGAE, "otpr_gae", ot_term="advantage", ot_coef=1.0)
    fixed.critic.target_q = agent.critic.target_q
    ranked, _ = fixed.executed_bonus(obs, executed, torch.zeros(256))
    assert float(ranked.std()) == pytest.approx(1.0, rel=1e-4)  # standardised
    agent.generator.manual_seed(0)
    confirmed, stats = agent.executed_bonus(obs, executed, 0.5 * ranked)
    # the draws differ from ``ranked``'s, so the fit is close to, not exactly, 0.5
    assert 0.25 < stats["bonus_scale"] < 0.75 and stats["adv_rank_corr"] > 0.5
    assert float((confirmed * ranked).sum()) > 0  # the same order as the plan's
    against, stats = agent.executed_bonus(obs, executed, -ranked)
    assert float(against.abs().max()) == 0.0 and stats["adv_rank_corr"] < -0.5
    noise = torch.randn(256, generator=torch.Generator().manual_seed(3))
    small, stats = agent.executed_bonus(obs, executed, noise)
    assert stats["bonus_scale"] < 0.2 and float(small.std()) < 0.2
    with pytest.raises(ConfigError, match="algo.ot_scale"):
        _config("otpr_gae", ot_scale="fitted")  # needs ot_term=advantage
    with pytest.raises(ConfigError, match="algo.ot_scale"):
        _config("otpr_gae", ot_term="advantage", ot_scale="learned")


def test_rank_corr_counts_ties_and_constants() -> None:
    x = torch.tensor([0.0, 0.0, 1.0, 2.0])
    assert rank_corr(x, x * 3 + 1) == pytest.approx(1.0)
    assert rank_corr(x, -x) == pytest.approx(-1.0)
    assert rank_corr(x, torch.ones(4)) == 0.0


def test_the_plan_ignores_states_outside_the_data_span() -> None:
    """actor_obs_bound: candidates of a state beyond it weigh 0 (algo=otpr's rule)."""
    agent = _agent(OTPRGAE, "otpr_gae")
    agent.critic.target_q = lambda s, a: a.sum(dim=-1)
    obs = torch.tensor([[[0.0]], [[5.0]]])
    _, _, w = agent.plan_targets(obs)
    w = w.view(2, -1)
    assert float(w[0].sum()) > 0 and float(w[1].abs().sum()) == 0


def test_otpr_gae_config_is_its_own() -> None:
    with pytest.raises(ConfigError, match="algo.ot_coef"):
        _config("otpr_gae", ot_coef=-1.0)
    with pytest.raises(ConfigError, match="algo.ot_weights"):
        _config("otpr_gae", ot_weights="push")
    with pytest.raises(ConfigError, match="algo.ot_min_std"):
        _config("otpr_gae", ot_min_std=-0.1)
    with pytest.raises(ConfigError, match="algo.ot_term"):
        _config("otpr_gae", ot_term="both")
    with pytest.raises(ConfigError, match="algo.num_samples"):
        _config("otpr_gae", num_samples=1)
    with pytest.raises(ConfigError, match="policy.min_std"):
        from_dict({"task": {"name": "can"}, "algo": {"name": "otpr_gae"}})
