"""IDQL-Imp (otpr/algos/idql.py): the implicit policy's weights by hand, the selection they
give, the unweighted DSM, a contextual bandit it must learn, and a run end to end."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.base import TaskSpec
from otpr.algos.idql import IDQL, compute_actor_loss, compute_selection_weights
from otpr.buffer import ReplayBuffer, TrainingData
from otpr.config import ConfigError, apply_debug, from_dict

warnings.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _one_thread():
    """These small networks run several times faster on one thread of the 2 shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


BANDIT = TaskSpec(name="bandit", suite="test", obs_dim=1, action_dim=1, max_episode_steps=1)


def _config(**algo):
    return from_dict(
        {
            "task": {"name": "reach-v3", "horizon": 1, "act_steps": 1, "obs_history": 1},
            "algo": {"name": "idql", **algo},
            "policy": {"hidden": [64, 64, 64], "num_steps": 5},
        }
    )


def _agent(seed: int = 0, **algo) -> IDQL:
    """IDQL on a one-step task with 1-D observations and actions (identity normaliser)."""
    torch.manual_seed(seed)
    agent = IDQL(_config(**algo), BANDIT)
    span = torch.tensor([[[-1.0]], [[1.0]]])
    agent.policy.normalizer.fit(span, span)
    return agent


def test_selection_weights_match_a_hand_computation() -> None:
    q = torch.tensor([[1.0, 2.0, 0.5, 1.5], [0.0, -1.0, 3.0, 0.1]])
    v = torch.tensor([1.5, 0.0])
    # A = [[-0.5, 0.5, -1, 0], [0, -1, 3, 0.1]]; tau = 0.7 above V, 0.3 below; |A| >= 1e-3
    w = compute_selection_weights(q, v, "expectile", expectile=0.7, beta=1.0, adv_floor=1e-3)
    expected = [[0.3 / 0.5, 0.7 / 0.5, 0.3 / 1.0, 0.7 / 1e-3], [0.7 / 1e-3, 0.3, 0.7 / 3, 7.0]]
    torch.testing.assert_close(w, torch.tensor(expected))
    # exp(beta A) up to a factor per row: exp(2 (A - max A))
    w = compute_selection_weights(q, v, "exp", expectile=0.7, beta=2.0, adv_floor=1e-3)
    expected = [
        [math.exp(-2.0), 1.0, math.exp(-3.0), math.exp(-1.0)],
        [math.exp(-6.0), math.exp(-8.0), 1.0, math.exp(-5.8)],
    ]
    torch.testing.assert_close(w, torch.tensor(expected))
    assert torch.equal(compute_selection_weights(q, v, "greedy", 0.7, 1.0, 1e-3), q)
    with pytest.raises(ValueError, match="selection"):
        compute_selection_weights(q, v, "best", 0.7, 1.0, 1e-3)


class _Critic:
    """Q(s, a) = a (the normalised executed action), V(s) = 0.25."""

    def target_q(self, states: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return acts[:, 0]

    def value(self, states: torch.Tensor) -> torch.Tensor:
        return torch.full((states.shape[0],), 0.25)


def test_act_resamples_by_the_implicit_policy_in_collection_and_evaluation() -> None:
    """Four fixed candidates -0.5, 0, 0.5, 1 with A = -0.75, -0.25, 0.25, 0.75 weigh
    0.3/0.75, 0.3/0.25, 0.7/0.25, 0.7/0.75: probabilities 0.075, 0.225, 0.525, 0.175."""
    agent = _agent(num_samples=4, eval_num_samples=4, expectile=0.7)
    agent.critic = _Critic()
    values = torch.tensor([-0.5, 0.0, 0.5, 1.0])
    drawn = []

    def sample(obs, num_samples=1, generator=None):
        drawn.append(num_samples)
        return values.view(1, 4, 1, 1).expand(obs.shape[0], 4, 1, 1)

    agent.policy.sample = sample
    obs = np.zeros((40_000, 1, 1), np.float32)
    chosen, info = agent.act(obs, explore=True)
    assert chosen.shape == (40_000, 1, 1) and info["sampler/uniform_fallback"] == 0.0
    freq = [(chosen[:, 0, 0] == x).mean() for x in values.tolist()]
    assert freq == pytest.approx([0.075, 0.225, 0.525, 0.175], abs=0.01)
    # evaluation: the same selection, from the evaluation's generator (repeatable)
    first, _ = agent.act(obs[:500], explore=False, generator=torch.Generator().manual_seed(3))
    again, _ = agent.act(obs[:500], explore=False, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(first, again) and len(np.unique(first)) > 1
    agent.cfg.algo.selection = "greedy"
    best, _ = agent.act(obs[:100], explore=False, generator=torch.Generator().manual_seed(3))
    assert (best == 1.0).all()
    assert agent.eval_settings() == {"eval_mode": "greedy", "eval_num_samples": 4}


def test_actor_loss_is_the_plain_mean_of_the_epsilon_errors() -> None:
    """With a network that predicts 0 the DSM loss is the mean of eps^2 over the batch: no
    pair weighs more than another, whatever Q says."""
    agent = _agent()

    class Zero(torch.nn.Module):
        def forward(self, x, t, cond):
            return torch.zeros_like(x)

    agent.policy.net = Zero()
    obs, act = torch.randn(6, 1, 1), torch.rand(6, 1, 1) * 2 - 1
    torch.manual_seed(7)
    agent.policy.sde.sample_time(6)  # the loss draws t first, then eps
    eps = torch.randn(6, 1, 1)
    torch.manual_seed(7)
    loss, _ = compute_actor_loss(agent.policy, obs, act)
    assert float(loss) == pytest.approx(float(eps.square().mean()), rel=1e-6)


def _bandit_data(agent: IDQL, rng: np.random.Generator, n: int) -> TrainingData:
    """Uninformative demos: a ~ U[-1, 1] whatever s; the replay starts with them."""
    obs = rng.uniform(-1, 1, (n, 1, 1)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 1, 1)).astype(np.float32)
    buf = ReplayBuffer(100_000, (1, 1), (1, 1))
    _store(buf, obs, act)
    return TrainingData(buf, obs, act, rng)


def _reward(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """Best action a*(s) = -0.7 s; reward -(a - a*)^2."""
    return -((act[:, 0, 0] + 0.7 * obs[:, 0, 0]) ** 2)


def _store(buf: ReplayBuffer, obs: np.ndarray, act: np.ndarray) -> None:
    ones = np.ones(len(obs), np.float32)
    buf.add(obs=obs, actions=act, reward=_reward(obs, act), discount=ones, next_obs=obs,
            terminated=ones)  # fmt: skip


def test_idql_learns_a_contextual_bandit() -> None:
    """The critic learns Q from uniform actions; the selection then picks better actions than
    the behaviour model, and the behaviour model, refitted on what was selected, moves towards
    the best action a*(s) = -0.7 s. The expectile weight does not aim at argmax Q but at actions
    whose Q is near V, the tau-expectile of Q over the replay's actions, so the error settles at
    a level set by tau (0.27 here with tau = 0.9); greedy selection goes nearer a*."""
    agent = _agent(
        num_samples=16,
        eval_num_samples=16,
        expectile=0.9,
        critic_hidden=[64, 64],
        critic_lr=1e-3,
        critic_updates_per_iter=150,
        actor_updates_per_iter=60,
        actor_batch_size=256,
        actor_recent=1024,
        demo_fraction=0.1,
        warmup_iterations=1,
        actor_lr=1e-3,
    )
    rng = np.random.default_rng(0)
    data = _bandit_data(agent, rng, 2048)
    pretrain = torch.optim.Adam(agent.policy.parameters(), lr=1e-3)
    for _ in range(200):  # behaviour cloning on the uniform demos
        idx = rng.integers(0, 2048, 256)
        agent.pretrain_step(torch.as_tensor(data.demo_obs[idx]),
                            torch.as_tensor(data.demo_act[idx]), pretrain)  # fmt: skip
    test_obs = np.linspace(-1, 1, 512, dtype=np.float32).reshape(-1, 1, 1)
    gen = torch.Generator().manual_seed(1)

    def error(chunks: np.ndarray) -> float:
        return float(np.abs(chunks[:, 0, 0] + 0.7 * test_obs[:, 0, 0]).mean())

    def behaviour() -> float:
        return error(agent.policy.sample(torch.as_tensor(test_obs), generator=gen)[:, 0].numpy())

    start = behaviour()
    for it in range(8):
        obs = rng.uniform(-1, 1, (512, 1, 1)).astype(np.float32)
        act, _ = agent.act(obs, explore=True)
        _store(data.buffer, obs, act)
        info = agent.update(data, it)
        if it == 0:  # critic only (warm-up): selection beats the behaviour model already
            selected = error(agent.act(test_obs, explore=False, generator=gen)[0])
            assert selected < 0.75 * behaviour(), (selected, behaviour())
            agent.cfg.algo.selection = "greedy"  # argmax Q of 16: near a*
            greedy = error(agent.act(test_obs, explore=False, generator=gen)[0])
            agent.cfg.algo.selection = "expectile"
            assert greedy < 0.5 * selected, (greedy, selected)
    end = behaviour()
    # measured: 0.43 -> 0.27 (the expectile policy's level: it puts its mass where Q ~ V)
    assert start > 0.35 and end < 0.75 * start, (start, end)
    assert math.isfinite(info["actor/dsm"]) and math.isfinite(info["critic/q_loss"])


class _Data:
    """Replay pairs are zeros, demo pairs ones."""

    rng = np.random.default_rng(0)

    def batch(self, size: int, recent: int = 0) -> dict[str, torch.Tensor]:
        return {"obs": torch.zeros(size, 1, 1), "actions": torch.zeros(size, 1, 1)}

    def demo_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones(size, 1, 1), torch.ones(size, 1, 1)


def test_actor_batches_mix_in_the_demos() -> None:
    agent = _agent(demo_fraction=0.25, actor_batch_size=8)
    obs, act, n_demo = agent.actor_pairs(_Data(), 8, 0.25)
    assert n_demo == 2 and obs[:, 0, 0].tolist() == [0.0] * 6 + [1.0] * 2
    assert act.shape == (8, 1, 1)


def test_idql_config_is_its_own() -> None:
    assert _config(selection="exp", beta=0.5).algo.beta == 0.5
    with pytest.raises(ConfigError, match="algo.selection"):
        _config(selection="best")
    with pytest.raises(ConfigError, match="algo.adv_floor"):
        _config(adv_floor=0.0)
    with pytest.raises(Exception, match="guidance"):
        _config(guidance="H")  # OTPR's key


def test_idql_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """``otpr algo=idql debug=true`` as the command line runs it (otpr.loop.run): a summary
    with finite successes, finite metrics of both learners, a checkpoint of policy + critic."""
    from otpr import cli  # noqa: F401  registers the schemas
    from otpr.loop import run

    monkeypatch.chdir(tmp_path)
    cfg = apply_debug(
        from_dict(
            {
                "task": {"name": "reach-v3"},
                "algo": {"name": "idql"},
                "debug": True,
                "progress": False,
                "tensorboard": False,
            }
        )
    )
    summary = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["algo"] == "idql" and saved["selection"] == "expectile"
    assert summary["iterations"] == 3
    for key in ("pretrained_success", "final_success"):
        assert math.isfinite(saved[key]), key
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    numbers = [v for r in records for v in r.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    keys = {k for r in records for k in r}
    assert {"critic/q_loss", "critic/v_loss", "actor/dsm", "eval/success"} <= keys
    ckpt = tmp_path / "run" / "checkpoints" / (tmp_path / "run/checkpoints/last").read_text()
    assert sorted(p.stem for p in ckpt.glob("*.safetensors")) == ["critic", "policy"]
