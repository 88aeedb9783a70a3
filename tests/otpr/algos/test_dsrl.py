"""DSRL (otpr/algos/dsrl.py): SAC's losses against hand computations, the tanh-Gaussian noise
actor against torch's own transformed distribution, the frozen deterministic decoder, DSRL-NA's
distillation, a contextual bandit both variants must learn, and the loop end to end."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from safetensors.torch import load_file

import otpr.loop
from envs.base import TaskSpec
from otpr import checkpoint as ckpt_io
from otpr import cli  # noqa: F401  registers the schemas
from otpr.algos import Step
from otpr.algos.dsrl import (
    DSRL,
    compute_actor_loss,
    compute_critic_loss,
    compute_distill_loss,
    compute_temperature_loss,
)
from otpr.buffer import ReplayBuffer, TrainingData
from otpr.config import ConfigError, apply_debug, from_dict
from policies.tanh_gaussian import TanhGaussianActor

warnings.filterwarnings("ignore")
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are small: one intra-op thread, as the loop runs them (``threads=1``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- the losses
def test_critic_loss_is_the_soft_td_error_of_both_heads() -> None:
    """y = r + d (1 - term) (min_i Q'_i(s', w') - alpha log pi(w'|s')); 1/2 sum_i mse."""
    q = torch.tensor([[2.0, 1.0], [3.0, 0.0]], requires_grad=True)  # heads x samples
    reward = torch.tensor([1.0, 0.5])
    discount = torch.tensor([0.9, 0.81])
    terminated = torch.tensor([0.0, 1.0])  # sample 0 bootstraps (a truncation would too)
    next_q = torch.tensor([[2.0, 1.5], [3.0, -1.0]], requires_grad=True)
    next_log_prob = torch.tensor([-0.5, 2.0])
    loss, info = compute_critic_loss(q, reward, discount, terminated, next_q, next_log_prob, 0.2)
    # sample 0: min(2, 3) - 0.2 * (-0.5) = 2.1, y = 1 + 0.9 * 2.1 = 2.89; sample 1: y = 0.5
    # head 1: ((2 - 2.89)^2 + (1 - 0.5)^2) / 2 = (0.7921 + 0.25) / 2 = 0.52105
    # head 2: ((3 - 2.89)^2 + (0 - 0.5)^2) / 2 = (0.0121 + 0.25) / 2 = 0.13105
    assert float(loss.detach()) == pytest.approx(0.5 * (0.52105 + 0.13105), abs=1e-6)
    assert info["critic/target_mean"] == pytest.approx((2.89 + 0.5) / 2, abs=1e-6)
    loss.backward()
    assert next_q.grad is None  # the target carries no gradient
    # d loss / d q_ij = (q_ij - y_j) / B  (the 1/2 cancels the square's 2)
    expected = torch.tensor([[2.0 - 2.89, 1.0 - 0.5], [3.0 - 2.89, 0.0 - 0.5]]) / 2
    assert torch.allclose(q.grad, expected, atol=1e-6)


def test_actor_loss_is_alpha_log_pi_minus_the_smaller_head() -> None:
    q = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    log_prob = torch.tensor([-1.0, 0.4])
    loss, info = compute_actor_loss(q, log_prob, alpha=0.5)
    # (0.5 * -1 - 0.5) = -1.0 and (0.5 * 0.4 - (-2)) = 2.2: mean 0.6
    assert float(loss) == pytest.approx(0.6, abs=1e-6)
    assert info["actor/entropy"] == pytest.approx(0.3, abs=1e-6)


def test_temperature_loss_raises_alpha_only_below_the_entropy_target() -> None:
    log_prob = torch.tensor([-1.0, 0.4])  # entropy estimate -mean = 0.3
    for target, grad_sign in ((0.0, 1.0), (1.0, -1.0)):
        log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
        loss, info = compute_temperature_loss(log_alpha, log_prob, target)
        # -log(0.5) * mean(log_prob + target)
        assert float(loss.detach()) == pytest.approx(-math.log(0.5) * (-0.3 + target), abs=1e-6)
        loss.backward()
        # gradient -mean(log_prob + target): positive (alpha falls) when the entropy 0.3
        # exceeds the target 0, negative (alpha grows) below the target 1
        assert float(log_alpha.grad) == pytest.approx(-(-0.3 + target), abs=1e-6)
        assert math.copysign(1.0, float(log_alpha.grad)) == grad_sign
        assert info["actor/alpha"] == pytest.approx(0.5)


def test_distill_loss_pairs_the_heads() -> None:
    q_noise = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    q_action = torch.tensor([[1.5, 2.0], [1.0, -1.0]], requires_grad=True)
    loss, _ = compute_distill_loss(q_noise, q_action)
    # head 1: (0.25 + 0) / 2 = 0.125; head 2: (1 + 4) / 2 = 2.5; loss 0.5 * 2.625
    assert float(loss) == pytest.approx(1.3125, abs=1e-6)
    loss.backward()
    assert q_action.grad is None


def test_noise_actor_is_a_bounded_tanh_gaussian() -> None:
    """Samples are b tanh(m + s z); log pi is torch's TanhTransform density of tanh(u)."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 4, hidden=[16], bound=1.5)
    with torch.no_grad():
        actor.net[-1].weight.normal_(0, 0.2)  # away from the near-zero start
    obs = torch.randn(6, 3)
    noise, log_prob = actor(obs, generator=torch.Generator().manual_seed(5))
    mean, log_std = actor.distribution(obs)
    u = mean + log_std.exp() * torch.randn(6, 4, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(noise, 1.5 * torch.tanh(u), atol=1e-6)
    assert float(noise.abs().max()) < 1.5
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    )
    assert torch.allclose(log_prob, dist.log_prob(torch.tanh(u)).sum(-1), atol=1e-4)
    assert torch.allclose(actor.mean_action(obs), 1.5 * torch.tanh(mean))
    fresh = TanhGaussianActor(3, 4, hidden=[16], bound=1.5)
    assert float(fresh.mean_action(obs).abs().max()) < 0.05  # starts near x_T = 0


# ---------------------------------------------------------------------- the algorithm
SPEC = TaskSpec(name="bandit", suite="test", obs_dim=1, action_dim=1, max_episode_steps=1)


def _config(**algo):
    return from_dict(
        {
            "task": {"name": "reach-v3", "horizon": 2, "act_steps": 1, "obs_history": 1},
            "algo": {"name": "dsrl", "batch_size": 128, "actor_hidden": [64, 64],
                     "critic_hidden": [64, 64], "warmup_iterations": 1, **algo},
            "policy": {"hidden": [64, 64, 64], "num_steps": 5},  # eta 1: DSRL must not use it
        }
    )  # fmt: skip


_PRETRAINED: dict[str, dict[str, torch.Tensor]] = {}


def _dsrl(seed: int = 0, **algo) -> DSRL:
    """DSRL on a one-step task (1-D obs and actions, 2-step chunks), its frozen policy
    pretrained on chunks spread uniformly over [-1, 1] whatever the observation."""
    torch.manual_seed(seed)
    dsrl = DSRL(_config(**algo), SPEC)
    lim = torch.tensor([[[-1.0]], [[1.0]]])
    dsrl.policy.normalizer.fit(lim, lim.expand(2, 2, 1))
    if "policy" not in _PRETRAINED:
        torch.manual_seed(123)  # the DSM times and noises draw from the global generator
        g = torch.Generator().manual_seed(123)
        opt = torch.optim.Adam(dsrl.policy.parameters(), lr=2e-3)
        for _ in range(600):
            obs = torch.randint(0, 2, (256, 1, 1), generator=g).float() * 2 - 1
            act = (torch.rand(256, 1, 1, generator=g) * 2 - 1).expand(256, 2, 1).contiguous()
            dsrl.pretrain_step(obs, act, opt)
        _PRETRAINED["policy"] = {k: v.clone() for k, v in dsrl.policy.state_dict().items()}
    dsrl.policy.load_state_dict(_PRETRAINED["policy"])
    return dsrl


def _data(buffer: ReplayBuffer | None = None) -> TrainingData:
    buffer = buffer or ReplayBuffer(10_000, (1, 1), (2, 1))
    empty = np.zeros((1, 1, 1), np.float32)
    return TrainingData(buffer, empty, np.zeros((1, 2, 1), np.float32), np.random.default_rng(0))


def _targets(obs: np.ndarray) -> np.ndarray:
    return 0.4 * obs[:, 0, 0]  # the rewarded action of each context s in {-1, 1}


def _collect(dsrl: DSRL, data: TrainingData, n: int, rng: np.random.Generator) -> float:
    """One decision in each of n one-step episodes, as the loop records it; mean reward."""
    obs = rng.choice([-1.0, 1.0], size=(n, 1, 1)).astype(np.float32)
    chunks, _ = dsrl.act(obs, explore=True)
    reward = -np.abs(chunks[:, 0, 0] - _targets(obs)).astype(np.float32)
    ones = np.ones(n, np.float32)
    step = Step(obs, chunks, reward, ones * 0.99, ones, ones, obs)
    dsrl.observe(step)
    data.buffer.add(obs=obs, actions=chunks, reward=reward, discount=ones * 0.99,
                    next_obs=obs, terminated=ones)  # fmt: skip
    return float(reward.mean())


def _eval_error(dsrl: DSRL) -> float:
    """Largest distance of the evaluated (mean-noise) action from each context's target."""
    obs = np.array([[[-1.0]], [[1.0]]], np.float32)
    chunks, _ = dsrl.act(obs, explore=False)
    return float(np.abs(chunks[:, 0, 0] - _targets(obs)).max())


def test_the_frozen_policy_decodes_noise_deterministically() -> None:
    dsrl = _dsrl()
    assert dsrl.policy.eta == 1.0  # the configured sampler is stochastic; decoding is not
    obs = torch.tensor([[[-1.0]], [[1.0]], [[1.0]]])
    noise = torch.tensor([[0.3, -1.2], [0.3, -1.2], [-1.0, 0.5]])
    first, again = dsrl.decode(obs, noise), dsrl.decode(obs, noise)
    assert torch.equal(first, again)
    assert first.shape == (3, 2, 1)
    assert not torch.allclose(first[1], first[2])  # another noise, another chunk
    # the same (obs, noise) through the policy's own sampler under deterministic()
    with dsrl.policy.deterministic():
        own = dsrl.policy.sample(obs, 1, x_T=noise.view(3, 1, 2, 1))[:, 0]
    assert torch.equal(first, own)
    # and the evaluation action is the decoded mean noise: the same on every call
    np_obs = obs.numpy()
    a1, _ = dsrl.act(np_obs, explore=False, generator=torch.Generator().manual_seed(1))
    a2, _ = dsrl.act(np_obs, explore=False, generator=torch.Generator().manual_seed(2))
    assert np.array_equal(a1, a2)


@pytest.mark.parametrize("variant", ["sac", "na"])
def test_updates_leave_the_diffusion_policy_untouched(variant: str) -> None:
    dsrl = _dsrl(variant=variant, updates_per_iter=5, distill_updates_per_iter=5)
    before = {k: v.clone() for k, v in dsrl.policy.state_dict().items()}
    actor_before = {k: v.clone() for k, v in dsrl.actor.state_dict().items()}
    data, rng = _data(), np.random.default_rng(0)
    for it in range(3):
        _collect(dsrl, data, 32, rng)
        info = dsrl.update(data, it)
    after = dsrl.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in dsrl.policy.parameters())
    assert any(not torch.equal(actor_before[k], v) for k, v in dsrl.actor.state_dict().items())
    assert all(math.isfinite(v) for v in info.values())
    assert ("distill/loss" in info) == (variant == "na")


def test_the_noise_record_pairs_each_step_with_the_noise_that_made_it() -> None:
    dsrl = _dsrl()
    obs = np.array([[[1.0]], [[-1.0]], [[1.0]]], np.float32)
    chunks, _ = dsrl.act(obs, explore=True)
    ones = np.ones(3, np.float32)
    dsrl.observe(Step(obs, chunks, ones * 2, ones * 0.9, ones * 0, ones, obs))
    rec = dsrl.noise_replay.buffer.data
    assert len(dsrl.noise_replay) == 3 and float(np.abs(rec["actions"][:3]).max()) < 1.5
    decoded = dsrl.decode(torch.as_tensor(obs), torch.as_tensor(rec["actions"][:3]))
    assert np.allclose(decoded.numpy(), chunks)  # the recorded noise is the one acted with
    assert rec["reward"][:3].tolist() == [2.0] * 3 and rec["terminated"][:3].tolist() == [0] * 3
    assert np.allclose(rec["discount"][:3], 0.9)
    with pytest.raises(RuntimeError, match="last collection act"):
        dsrl.observe(Step(obs, chunks, ones, ones, ones, ones, obs))  # no act before it
    # the record survives a checkpoint's state round trip
    other = _dsrl()
    other.noise_replay.load_state_dict(dsrl.noise_replay.state_dict())
    assert np.array_equal(other.noise_replay.buffer.data["actions"][:3], rec["actions"][:3])


def test_distillation_targets_are_the_action_critic_at_the_decoded_chunks() -> None:
    dsrl = _dsrl(variant="na")
    obs = torch.tensor([[[1.0]], [[-1.0]], [[1.0]]])
    noise = dsrl.distill_noises(3)
    assert noise.shape == (3, 2) and float(noise.abs().max()) <= 1.5
    with dsrl.policy.deterministic():
        chunk = dsrl.policy.sample(obs, 1, x_T=noise.view(3, 1, 2, 1))[:, 0]
    executed = dsrl.policy.normalizer.normalize_action(chunk[:, :1]).flatten(1)
    expected = dsrl.action_critic(dsrl.policy.normalizer.normalize_obs(obs).flatten(1), executed)
    assert torch.allclose(dsrl.distill_targets(obs, noise), expected)
    # one distillation step moves Q^W towards those targets at those noises
    gen_state = dsrl.sac_generator.get_state()
    w = dsrl.distill_noises(3)
    dsrl.sac_generator.set_state(gen_state)
    states = dsrl.state(obs)
    target = dsrl.distill_targets(obs, w)
    before, _ = compute_distill_loss(dsrl.noise_critic(states, w / 1.5), target)
    dsrl.sac_generator.set_state(gen_state)
    info = dsrl.update_distill(obs)
    assert info["distill/loss"] == pytest.approx(float(before), rel=1e-5)
    after, _ = compute_distill_loss(dsrl.noise_critic(states, w / 1.5), target)
    assert float(after) < float(before)


@pytest.mark.parametrize("variant", ["sac", "na"])
def test_dsrl_steers_the_frozen_policy_in_a_contextual_bandit(variant: str) -> None:
    """Reward -|a - 0.4 s| for contexts s = -1, 1: the frozen policy's chunks spread over
    [-1, 1] whatever s, so only steering its noise per context can reach both targets."""
    dsrl = _dsrl(variant=variant, updates_per_iter=60, distill_updates_per_iter=60,
                 target_entropy=-1.0, init_alpha=0.1, actor_lr=1e-3, critic_lr=1e-3)  # fmt: skip
    data, rng = _data(), np.random.default_rng(1)
    start_error = _eval_error(dsrl)
    first = _collect(dsrl, data, 64, rng)
    dsrl.update(data, 0)
    for it in range(1, 14):
        last = _collect(dsrl, data, 64, rng)
        dsrl.update(data, it)
    end_error = _eval_error(dsrl)
    assert start_error > 0.3, start_error  # x_T = 0 decodes near 0, far from both targets
    assert end_error < 0.12, (start_error, end_error)
    assert last > first + 0.1, (first, last)


def _collect_until_success(dsrl: DSRL, n: int, rng: np.random.Generator) -> None:
    """One decision in each of n episodes that end only on success (reward 1 within 0.2 of the
    context's target, else reward 0 and the same state again), into DSRL's noise record."""
    obs = rng.choice([-1.0, 1.0], size=(n, 1, 1)).astype(np.float32)
    chunks, _ = dsrl.act(obs, explore=True)
    hit = (np.abs(chunks[:, 0, 0] - _targets(obs)) < 0.2).astype(np.float32)
    discount = np.full(n, 0.9, np.float32)
    dsrl.observe(Step(obs, chunks, hit, discount, hit, hit, obs))


@pytest.mark.parametrize("backup_entropy", [False, True])
def test_the_entropy_bonus_in_the_target_teaches_avoiding_a_terminal_success(
    backup_entropy: bool,
) -> None:
    """Sparse reward that ends the episode on success (as Meta-World and robosuite here): with
    SAC's bonus in the TD target a continuing decision is worth ~alpha * entropy / (1 -
    discount), more than a success's 1 (tens in Meta-World, discount 0.96 per chunk; here
    0.9), so the actor learns to miss; without it a SAC with a small temperature learns to hit."""
    alpha = 0.5 if backup_entropy else 0.1  # a bonus worth more than a success; a small one
    dsrl = _dsrl(backup_entropy=backup_entropy, updates_per_iter=60, target_entropy=-1.0,
                 init_alpha=alpha, actor_lr=1e-3, critic_lr=1e-3)  # fmt: skip
    data, rng = _data(), np.random.default_rng(1)
    for it in range(24):
        _collect_until_success(dsrl, 64, rng)
        info = dsrl.update(data, it)
    error, q = _eval_error(dsrl), info["critic/q_mean"]
    if backup_entropy:
        assert error > 0.2 and q > 1.2, (error, q)  # misses a target; Q above any return
    else:
        assert error < 0.2 and q < 1.05, (error, q)  # hits both targets; Q within the reward


# ---------------------------------------------------------------------- config
def test_dsrl_config_is_its_own() -> None:
    assert _config().algo.variant == "sac" and _config().algo.noise_bound == 1.5
    for bad, key in (
        ({"variant": "dsrl_na"}, "algo.variant"),
        ({"noise_bound": 0.0}, "algo.noise_bound"),
        ({"eval_deterministic": False}, "algo.eval_deterministic"),
        ({"polyak": 0.0}, "algo.polyak"),
    ):
        with pytest.raises(ConfigError, match=key):
            _config(**bad)
    with pytest.raises(ConfigError, match="policy.sampler"):
        from_dict({"task": {"name": "can"}, "algo": {"name": "dsrl"},
                   "policy": {"sampler": "euler_maruyama"}})  # fmt: skip
    for foreign in ({"guidance": "H"}, {"clip": 0.1}):
        with pytest.raises(Exception, match=list(foreign)[0]):
            _config(**foreign)
    with initialize_config_module("configs", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=["algo=dsrl", "algo.variant=na"]))
    assert cfg.algo.name == "dsrl" and cfg.algo.variant == "na" and cfg.algo.noise_bound == 1.5


# ---------------------------------------------------------------------- end to end
@pytest.mark.parametrize("variant", ["sac", "na"])
def test_dsrl_runs_through_the_loop_and_resumes(tmp_path: Path, monkeypatch, variant: str) -> None:
    """``debug=true`` on reach-v3: pretraining, the DSRL iterations, finite metrics and
    summary, a checkpoint of the DSRL networks, and a resume that restores them."""
    monkeypatch.chdir(tmp_path)
    cfg = apply_debug(
        from_dict(
            {
                "task": {"name": "reach-v3"},
                "algo": {"name": "dsrl", "variant": variant},
                "debug": True,
                "progress": False,
                "tensorboard": False,
            }
        )
    )
    run_dir = tmp_path / variant
    trainer = otpr.loop.Trainer(cfg, run_dir)
    trainer.pretrain()
    pretrained = {k: v.clone() for k, v in trainer.algo.policy.state_dict().items()}
    trainer.finetune()
    summary = trainer.summary()
    algo = trainer.algo
    trainer.close()
    assert summary["algo"] == "dsrl" and summary["variant"] == variant
    assert summary["iterations"] == cfg.algo.iterations
    for key in ("pretrained_success", "final_success"):
        assert summary[key] is not None and math.isfinite(summary[key])
    assert all(torch.equal(pretrained[k], v) for k, v in algo.policy.state_dict().items())
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
    trained = [r for r in records if "critic/q_loss" in r]
    assert len(trained) == cfg.algo.iterations
    assert any("actor/loss" in r for r in trained)  # after the warm-up
    for r in trained:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float)), r
        assert ("distill/loss" in r) == (variant == "na")
    assert any("eval/success" in r for r in records)
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text()
    stored = sorted(p.stem for p in ckpt.glob("*.safetensors"))
    extra = ["action_critic"] if variant == "na" else []
    assert stored == sorted(["policy", "noise_actor", "noise_critic", "temperature", *extra])
    resumed = otpr.loop.Trainer(cfg, run_dir)
    resumed.restore(run_dir)
    for name in ("actor", "noise_critic", "temperature"):
        want, got = getattr(algo, name).state_dict(), getattr(resumed.algo, name).state_dict()
        assert all(torch.equal(want[k], got[k]) for k in want), name
    if variant == "sac":
        decisions = cfg.algo.iterations * cfg.algo.steps_per_iter * cfg.task.num_envs
        assert len(resumed.algo.noise_replay) == len(algo.noise_replay) == decisions
    resumed.close()


@pytest.mark.slow
def test_dsrl_runs_from_the_command_line(tmp_path: Path) -> None:
    """``otpr algo=dsrl algo.variant=na debug=true``: a summary with finite numbers."""
    run_dir = tmp_path / "dsrl"
    out = subprocess.run(
        [str(BIN / "otpr"), "algo=dsrl", "algo.variant=na", "debug=true", "progress=false",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algo"] == "dsrl" and summary["variant"] == "na"
    assert math.isfinite(summary["final_success"]) and summary["iterations"] == 3


def _cli(cwd: Path, run_dir: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OTPR_KILL_AT"}
    if kill_at is not None:
        env["OTPR_KILL_AT"] = kill_at
    args = [
        "algo=dsrl",
        "debug=true",
        "progress=false",
        "tensorboard=false",
        "algo.steps_per_iter=7",
        "algo.checkpoint_every=1",
        f"hydra.run.dir={run_dir}",
    ]
    return subprocess.run([sys.executable, "-m", "otpr.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_a_killed_dsrl_run_resumes_exactly(tmp_path: Path) -> None:
    """Killed after a checkpoint and again mid-collection, then resumed: the same metrics and
    weights as the uninterrupted run (the noise record and the SAC state are restored)."""
    whole = _cli(tmp_path, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = tmp_path / "killed"
    for point in ("saved:1", "collect:2:3"):
        out = _cli(tmp_path, killed, kill_at=point)
        assert out.returncode == -signal.SIGKILL, (point, out.stderr[-3000:])
    out = _cli(tmp_path, killed)
    assert out.returncode == 0, out.stderr[-3000:]

    def records(run_dir: Path) -> list[dict]:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items()
                 if not k.startswith("perf/") and k != "wall_time_s"} for x in lines]  # fmt: skip

    assert records(killed) == records(tmp_path / "whole")
    assert any("actor/loss" in r for r in records(killed))
    mine, full = ckpt_io.resolve(killed), ckpt_io.resolve(tmp_path / "whole")
    names = sorted(p.name for p in full.glob("*.safetensors"))
    assert names == sorted(p.name for p in mine.glob("*.safetensors"))
    for name in names:
        a, b = load_file(str(mine / name)), load_file(str(full / name))
        assert all(torch.equal(a[k], b[k]) for k in b), name
