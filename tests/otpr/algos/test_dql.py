"""Diffusion-QL (otpr/algos/dql.py): the TD and actor losses by hand, the differentiable chain,
a contextual bandit it must learn, and a run end to end."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.base import TaskSpec
from otpr.algos.dql import DQL, compute_actor_loss, compute_critic_loss
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
            "algo": {"name": "dql", **algo},
            "policy": {"hidden": [64, 64, 64], "num_steps": 5},
        }
    )


def _agent(seed: int = 0, **algo) -> DQL:
    """DQL on a one-step task with 1-D observations and actions (identity normaliser)."""
    torch.manual_seed(seed)
    agent = DQL(_config(**algo), BANDIT)
    span = torch.tensor([[[-1.0]], [[1.0]]])
    agent.policy.normalizer.fit(span, span)
    return agent


def test_critic_loss_matches_a_hand_computation() -> None:
    q = torch.tensor([[1.0, 2.0], [0.5, 3.0]], requires_grad=True)  # [heads, B]
    next_q = torch.tensor([[2.0, 4.0], [1.0, 5.0]], requires_grad=True)
    reward, discount = torch.tensor([0.5, 1.0]), torch.tensor([0.9, 0.5])
    terminated = torch.tensor([0.0, 1.0])
    # y = [0.5 + 0.9 min(2, 1), 1.0 (terminal)] = [1.4, 1.0]
    loss, info = compute_critic_loss(q, next_q, reward, discount, terminated)
    expected = ((1 - 1.4) ** 2 + (2 - 1) ** 2) / 2 + ((0.5 - 1.4) ** 2 + (3 - 1) ** 2) / 2
    assert float(loss.detach()) == pytest.approx(expected) == pytest.approx(2.985)
    assert info["critic/target_mean"] == pytest.approx(1.2)
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([[-0.4, 1.0], [-0.9, 2.0]]))
    assert next_q.grad is None  # the target is not trained


def test_actor_loss_matches_a_hand_computation() -> None:
    """dsm - eta mean(Q) / mean|Q| with the normaliser detached: each Q gets the gradient
    -eta / (B mean|Q|) (a normaliser that was not detached would cancel it for Q > 0)."""
    dsm = torch.tensor(0.5, requires_grad=True)
    q_pi = torch.tensor([1.0, 3.0, 2.0], requires_grad=True)
    loss, info = compute_actor_loss(dsm, q_pi, eta=2.0)
    assert float(loss) == pytest.approx(0.5 - 2.0 * 2.0 / 2.0)
    assert info["actor/q_scale"] == pytest.approx(2.0)
    loss.backward()
    torch.testing.assert_close(q_pi.grad, torch.full((3,), -2.0 / (3 * 2.0)))
    assert float(dsm.grad) == 1.0
    loss, _ = compute_actor_loss(torch.tensor(0.5), torch.tensor([-1.0, -3.0]), eta=2.0)
    assert float(loss) == pytest.approx(0.5 + 2.0)  # mean Q = -2, mean |Q| = 2
    loss, _ = compute_actor_loss(torch.tensor(0.5), torch.tensor([1.0, 3.0]), eta=0.0)
    assert float(loss) == 0.5  # eta 0: behaviour cloning


def test_the_chain_is_differentiable_and_draws_what_sample_draws() -> None:
    agent = _agent()
    policy = agent.policy
    obs = torch.rand(16, 1, 1) * 2 - 1
    chunk = policy.rsample(obs, generator=torch.Generator().manual_seed(0))
    same = policy.sample(obs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(chunk.detach(), same)
    chunk.sum().backward()
    grads = [p.grad for p in policy.net.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    short = policy.rsample(obs, num_steps=2)
    assert short.shape == (16, 1, 1, 1) and short.requires_grad


def _reward(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """Best action a*(s) = -0.7 s; reward -(a - a*)^2."""
    return -((act[:, 0, 0] + 0.7 * obs[:, 0, 0]) ** 2)


def _store(buf: ReplayBuffer, obs: np.ndarray, act: np.ndarray) -> None:
    ones = np.ones(len(obs), np.float32)
    buf.add(obs=obs, actions=act, reward=_reward(obs, act), discount=ones, next_obs=obs,
            terminated=ones)  # fmt: skip


def test_dql_learns_a_contextual_bandit() -> None:
    """From a behaviour model of uniform actions, the Q term pulls the policy's own chunks to
    the best action a*(s) = -0.7 s (the DSM term on the uniform demos holds it back)."""
    agent = _agent(
        eta=1.0,
        chain_steps=3,
        ema_decay=0.0,
        critic_hidden=[64, 64],
        critic_lr=1e-3,
        critic_updates_per_iter=100,
        actor_updates_per_iter=40,
        actor_batch_size=128,
        demo_fraction=0.25,
        warmup_iterations=1,
        actor_lr=1e-3,
    )
    rng = np.random.default_rng(0)
    demo_obs = rng.uniform(-1, 1, (2048, 1, 1)).astype(np.float32)
    demo_act = rng.uniform(-1, 1, (2048, 1, 1)).astype(np.float32)
    buf = ReplayBuffer(100_000, (1, 1), (1, 1))
    _store(buf, demo_obs, demo_act)
    data = TrainingData(buf, demo_obs, demo_act, rng)
    pretrain = torch.optim.Adam(agent.policy.parameters(), lr=1e-3)
    for _ in range(200):  # behaviour cloning on the uniform demos
        idx = rng.integers(0, 2048, 256)
        agent.pretrain_step(torch.as_tensor(demo_obs[idx]), torch.as_tensor(demo_act[idx]),
                            pretrain)  # fmt: skip
    test_obs = torch.linspace(-1, 1, 512).reshape(-1, 1, 1)
    gen = torch.Generator().manual_seed(1)

    def error() -> float:
        chunks = agent.policy.sample(test_obs, generator=gen)[:, 0, 0, 0]
        return float((chunks + 0.7 * test_obs[:, 0, 0]).abs().mean())

    start = error()
    for it in range(6):
        obs = rng.uniform(-1, 1, (256, 1, 1)).astype(np.float32)
        act, _ = agent.act(obs, explore=True)
        _store(buf, obs, act)
        info = agent.update(data, it)
    end = error()
    # measured: 0.43 -> 0.19; with eta = 0 (DSM alone) it stays at 0.40-0.44
    assert start > 0.35 and end < 0.5 * start, (start, end)
    assert info["actor/q_scale"] > 0 and math.isfinite(info["critic/q_loss"])


def test_dql_config_is_its_own() -> None:
    cfg = _config(eta=2.5, chain_steps=0)
    assert cfg.algo.eta == 2.5 and cfg.algo.ema_decay == 0.995  # the paper's average
    assert DQL(cfg, BANDIT).chain_steps == 5  # 0: policy.num_steps
    with pytest.raises(ConfigError, match="algo.eta"):
        _config(eta=-1.0)
    with pytest.raises(ConfigError, match="algo.chain_steps"):
        _config(chain_steps=-1)
    with pytest.raises(Exception, match="selection"):
        _config(selection="greedy")  # IDQL's key


def test_dql_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """``otpr algo=dql debug=true`` as the command line runs it (otpr.loop.run): a summary
    with finite successes, finite metrics of both learners, a checkpoint of the policy, its
    average and the twin Q."""
    from otpr import cli  # noqa: F401  registers the schemas
    from otpr.loop import run

    monkeypatch.chdir(tmp_path)
    cfg = apply_debug(
        from_dict(
            {
                "task": {"name": "reach-v3"},
                "algo": {"name": "dql"},
                "debug": True,
                "progress": False,
                "tensorboard": False,
            }
        )
    )
    summary = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["algo"] == "dql" and saved["eta"] == 0.05 and saved["chain_steps"] == 5
    assert summary["iterations"] == 3
    for key in ("pretrained_success", "final_success"):
        assert math.isfinite(saved[key]), key
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    numbers = [v for r in records for v in r.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    keys = {k for r in records for k in r}
    assert {"critic/q_loss", "actor/dsm", "actor/q_pi", "eval/success"} <= keys
    ckpt = tmp_path / "run" / "checkpoints" / (tmp_path / "run/checkpoints/last").read_text()
    stored = sorted(p.stem for p in ckpt.glob("*.safetensors"))
    assert stored == ["critic", "policy", "policy_ema"]
