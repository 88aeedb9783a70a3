"""SODP (otpr/algos/sodp.py): the target buffer's selection rule on hand-built returns, the
episodes it receives, the KL and PL terms against hand computations, the BC term as DPPO's, a
bandit the update must learn with each regulariser, and, end to end, a multi-task pretraining
``debug=true`` run on MT10 data whose checkpoint each variant fine-tunes on reach."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.base import TaskSpec
from otpr.algos import Step
from otpr.algos.chain_ppo import ChainBatch, bc_regulariser
from otpr.algos.sodp import (
    SODP,
    TargetBuffer,
    _Progress,
    compute_kl_loss,
    compute_pl_loss,
)
from otpr.config import ConfigError, from_dict

warnings.filterwarnings("ignore")
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _one_thread():
    """These small networks run several times faster on one thread of the 2 shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------- the target buffer
def _episode(value: float, length: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """An episode whose windows and chunks are filled with ``value`` (to recognise it)."""
    return torch.full((length, 1, 3), value), torch.full((length, 2, 1), value)


def test_target_buffer_keeps_the_best_of_the_recent_episodes() -> None:
    buf = TargetBuffer(size=2, window=4)
    assert buf.selected() == [] and len(buf.pairs()[0]) == 0
    for ret in (5.0, 1.0, 7.0, 3.0):
        buf.add(*_episode(ret), ret)
    assert [(ep.ret, ep.order) for ep in buf.selected()] == [(7.0, 2), (5.0, 0)]
    buf.add(*_episode(2.0), 2.0)  # the window drops the oldest episode, the 5
    assert [ep.ret for ep in buf.selected()] == [7.0, 3.0]
    buf.add(*_episode(7.5), 7.0)  # a tie on return: the newer comes first
    assert [(ep.ret, ep.order) for ep in buf.selected()] == [(7.0, 5), (7.0, 2)]
    obs, chunks = buf.pairs()
    assert obs.shape == (4, 1, 3) and chunks.shape == (4, 2, 1)
    assert obs[:2].eq(7.5).all() and chunks[2:].eq(7.0).all()  # the newer 7 first
    for _ in range(4):  # four newer failures push every good episode out of the window
        buf.add(*_episode(0.0), 0.0)
    assert [(ep.ret, ep.order) for ep in buf.selected()] == [(0.0, 9), (0.0, 8)]
    assert buf.seen == 10
    back = TargetBuffer(2, 4)
    back.load_state_dict(buf.state_dict())
    assert [(ep.ret, ep.order) for ep in back.recent] == [(ep.ret, ep.order) for ep in buf.recent]
    assert back.seen == 10
    with pytest.raises(ValueError, match="size <= window"):
        TargetBuffer(size=5, window=4)


def _step(obs: np.ndarray, chunks: np.ndarray, reward: list[float], done: list[bool]) -> Step:
    n = len(done)
    ones = np.ones(n, np.float32)
    return Step(obs, chunks, np.asarray(reward, np.float32), ones, ones, np.asarray(done), obs)


def test_finished_episodes_enter_the_target_with_the_sum_of_their_chunk_rewards() -> None:
    """Two members; member 0 ends after two decisions, member 1 after three. A state saved
    mid-episode and loaded elsewhere continues the same episodes."""
    progress = _Progress(TargetBuffer(2, 5), num_envs=2)
    obs = [np.full((2, 1, 3), t, np.float32) for t in range(3)]
    chunks = [np.full((2, 2, 1), 10 + t, np.float32) for t in range(3)]
    progress.observe(_step(obs[0], chunks[0], [1.0, 0.5], [False, False]))
    progress.observe(_step(obs[1], chunks[1], [2.0, 0.5], [True, False]))
    assert progress.target.seen == 1
    first = progress.target.recent[0]
    assert first.ret == 3.0 and first.obs[:, 0, 0].tolist() == [0.0, 1.0]
    assert first.chunks[:, 0, 0].tolist() == [10.0, 11.0]
    saved = progress.state_dict()
    copy = _Progress(TargetBuffer(2, 5), num_envs=2)
    copy.load_state_dict(saved)
    for p in (progress, copy):
        p.observe(_step(obs[2], chunks[2], [4.0, 1.0], [False, True]))
        second = p.target.recent[1]
        assert second.ret == 2.0 and second.obs[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
        assert len(p.running[0]["reward"]) == 1  # member 0's next episode has begun
    with pytest.raises(ValueError, match="env members"):
        progress.observe(_step(obs[0][:1], chunks[0][:1], [0.0], [False]))


# ---------------------------------------------------------------------- the loss terms
def test_kl_term_is_the_gaussian_kl_per_element() -> None:
    mean = torch.tensor([[[1.0], [0.0]]])
    ref = torch.tensor([[[0.0], [0.0]]])
    # element 0: (1 - 0)^2 / (2 * 0.5^2) = 2; element 1: 0; mean over the 2 elements: 1
    assert float(compute_kl_loss(mean, ref, torch.tensor(0.5))) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    mean, ref = torch.randn(5, 4, 3, generator=g), torch.randn(5, 4, 3, generator=g)
    std = torch.tensor(0.3)
    exact = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std), torch.distributions.Normal(ref, std)
    )
    torch.testing.assert_close(compute_kl_loss(mean, ref, std), exact.mean())
    assert float(compute_kl_loss(ref, ref, std)) == 0.0


def _config(**algo):
    return from_dict(
        {
            "task": {"name": "reach-v3", "horizon": 1, "act_steps": 1, "obs_history": 1},
            "algo": {"name": "sodp", "actor_lr": 3e-3, "n_init": 0, **algo},
            "policy": {"min_std": 0.1, "hidden": [32, 32, 32], "num_steps": 4, "eta": 1.0},
        }
    )


BANDIT = TaskSpec(name="bandit", suite="test", obs_dim=1, action_dim=1, max_episode_steps=1)


def _bandit(seed: int = 0, num_envs: int = 64, **algo) -> SODP:
    """SODP on a one-step task with 1-D observations and actions (identity normaliser)."""
    torch.manual_seed(seed)
    cfg = _config(**algo)
    cfg.task.num_envs = num_envs
    sodp = SODP(cfg, BANDIT)
    span = torch.tensor([[[-1.0]], [[1.0]]])
    sodp.policy.normalizer.fit(span, span)
    return sodp


def _observe(sodp: SODP, obs: np.ndarray, chunks: np.ndarray, reward: np.ndarray) -> None:
    """One decision per episode: every member is done after it."""
    sodp.observe(_step(obs, chunks, list(reward), [True] * len(obs)))


def test_pl_term_is_the_dsm_loss_on_the_rollouts_own_chunks() -> None:
    """compute_pl_loss by hand: x_t = alpha_t x0 + sigma_t eps on the normalised chunk, the
    squared error of the network's epsilon; and SODP's PL term is it on the executed chunks."""
    sodp = _bandit(regularizer="pl", reg_coef=0.5, num_envs=6)
    policy = sodp.policy
    obs = np.zeros((6, 1, 1), np.float32)
    chunks, _ = sodp.act(obs, explore=True)
    obs_t, chunks_t = torch.as_tensor(obs), torch.as_tensor(chunks)
    got = compute_pl_loss(policy, obs_t, chunks_t, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = policy.sde.t_min + (policy.sde.T - policy.sde.t_min) * torch.rand(6, generator=g)
    eps = torch.randn(6, 1, 1, generator=g)
    x0 = chunks_t  # the identity normaliser
    x_t = policy.sde.alpha(t)[:, None, None] * x0 + policy.sde.sigma(t)[:, None, None] * eps
    with torch.no_grad():
        hand = ((policy.net(x_t, t, obs_t.flatten(1)) - eps) ** 2).mean()
    torch.testing.assert_close(got.detach(), hand)
    # SODP's regulariser draws its pairs from the rollout: the chunks act() returned
    _observe(sodp, obs, chunks, np.zeros(6, np.float32))
    rows = {k: torch.stack(v) for k, v in sodp._rows.items()}
    assert torch.equal(rows["chunks"][0], chunks_t)
    batch = ChainBatch(obs_t, rows["xs"][0], rows["log_prob"][0], torch.zeros(6))
    term = sodp.regulariser(batch, rows["chunks"][0], np.random.default_rng(0))
    b, k = torch.tensor([0, 2, 5]), torch.tensor([1, 0, 3])
    torch.manual_seed(7)
    value, info = term(b, k, None, None)
    torch.manual_seed(7)
    expected = compute_pl_loss(policy, obs_t[b], chunks_t[b])
    torch.testing.assert_close(value, 0.5 * expected)
    assert info["sodp/pl_loss"] == pytest.approx(float(expected.detach()))


def test_kl_term_compares_each_step_with_the_planner_as_fine_tuning_began() -> None:
    sodp = _bandit(regularizer="kl", reg_coef=2.0, num_envs=8)
    policy = sodp.policy
    obs = np.zeros((8, 1, 1), np.float32)
    chunks, _ = sodp.act(obs, explore=True)  # the first collection takes the reference
    assert sodp.progress.reference_ready
    ref_state = {k: v.clone() for k, v in sodp.reference.state_dict().items()}
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the trained planner moves away
    sodp.act(obs, explore=True)  # later collections leave the reference as it was
    assert all(torch.equal(v, sodp.reference.state_dict()[k]) for k, v in ref_state.items())
    xs = sodp._rows["xs"][0]
    batch = ChainBatch(torch.as_tensor(obs), xs, sodp._rows["log_prob"][0], torch.zeros(8))
    term = sodp.regulariser(batch, torch.as_tensor(chunks), np.random.default_rng(0))
    b, k = torch.arange(8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    mean, std = policy.step_mean_std(batch.obs[b], xs[b, k], k)
    value, info = term(b, k, mean, std)
    with torch.no_grad():
        ref_mean, ref_std = sodp.reference.step_mean_std(batch.obs[b], xs[b, k], k)
    assert torch.equal(ref_std, std)  # the schedule's std: the same for both networks
    hand = ((mean.detach() - ref_mean) ** 2 / (2 * std**2)).mean()
    torch.testing.assert_close(value.detach(), 2.0 * hand)
    assert info["sodp/kl"] == pytest.approx(float(hand)) and float(hand) > 0
    value.backward()  # the gradient reaches the trained planner only
    assert all(p.grad is None for p in sodp.reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())


def test_bc_term_is_dppos_on_the_target_buffer() -> None:
    """One implementation: SODP's BC regulariser is chain_ppo.bc_regulariser (DPPO's
    algo.bc_coef term) drawing from the target set; nothing while the target is empty."""
    sodp = _bandit(regularizer="bc", num_envs=4)
    obs = np.zeros((4, 1, 1), np.float32)
    chunks, _ = sodp.act(obs, explore=True)
    xs, old = sodp._rows["xs"][0], sodp._rows["log_prob"][0]
    batch = ChainBatch(torch.as_tensor(obs), xs, old, torch.zeros(4))
    assert sodp.regulariser(batch, torch.as_tensor(chunks), np.random.default_rng(0)) is None
    _observe(sodp, obs, chunks, np.arange(4, dtype=np.float32))
    term = sodp.regulariser(batch, torch.as_tensor(chunks), np.random.default_rng(0))
    assert term.__qualname__ == bc_regulariser(sodp.policy, lambda: None, 1.0).__qualname__
    t_obs, t_act = sodp.target.pairs()
    assert len(t_obs) == 4  # 4 one-decision episodes, all within the target size of 10
    torch.manual_seed(1)
    value, info = term(None, None, None, None)
    rng = np.random.default_rng(0)
    idx = torch.as_tensor(rng.integers(0, 4, sodp.cfg.algo.bc_batch_size))
    torch.manual_seed(1)
    expected, _ = sodp.policy.compute_dsm_loss(t_obs[idx], t_act[idx])
    torch.testing.assert_close(value, expected)
    assert set(info) == {"ppo/bc_loss"}


# ---------------------------------------------------------------------- learning
def _learn_bandit(regularizer: str, reg_coef: float = 1.0) -> tuple[float, float]:
    """Reward = the (clipped) action, one decision per episode, 8 iterations of 2 decisions x
    128 members; returns the mean sampled action before and after."""
    sodp = _bandit(
        regularizer=regularizer,
        reg_coef=reg_coef,
        clip=0.2,
        minibatch_size=256,
        epochs=4,
        num_envs=128,
        n_init=128,
    )
    gen = torch.Generator().manual_seed(0)
    obs = np.zeros((128, 1, 1), np.float32)

    def mean_reward() -> float:
        return float(sodp.policy.sample(torch.as_tensor(obs), generator=gen).mean())

    before = mean_reward()
    rng = np.random.default_rng(0)
    for it in range(8):
        for _ in range(2):
            a, _ = sodp.act(obs, explore=True)
            _observe(sodp, obs, a, a[:, 0, 0])
        info = sodp.update_rollout(train_actor=sodp.target.seen >= 128, rng=rng)
        if it == 0:
            assert info["ppo/samples"] == 2 * 128 * 4  # seeded after the first decision
    assert not sodp._rows["obs"]  # the rollout is consumed
    return before, mean_reward()


@pytest.mark.parametrize(("regularizer", "reg_coef"), [("bc", 1.0), ("none", 1.0), ("pl", 1.0),
                                                       ("kl", 0.01)])  # fmt: skip
def test_sodp_learns_a_bandit(regularizer: str, reg_coef: float) -> None:
    """The chunk's own return pushes the chunks up under every regulariser: BC holds the
    planner near the best episodes, PL near its own samples, both of which move up; a weak KL
    lets it leave the start."""
    before, after = _learn_bandit(regularizer, reg_coef)
    assert after > before + 0.3, (regularizer, before, after)


def test_kl_at_the_papers_weight_holds_the_planner_at_its_start() -> None:
    """lambda = 1 on the per-element KL (std >= policy.min_std = 0.1) keeps the bandit's
    planner where it began, as the paper reports of SODP_kl (sec. 5.4, "almost unchanged")."""
    before, after = _learn_bandit("kl", 1.0)
    assert abs(after - before) < 0.1, (before, after)


def test_no_update_before_n_init_episodes_of_the_pretrained_planner() -> None:
    from otpr.buffer import ReplayBuffer, TrainingData

    sodp = _bandit(n_init=6, num_envs=4)
    start = {k: v.clone() for k, v in sodp.policy.state_dict().items()}
    obs = np.zeros((4, 1, 1), np.float32)
    data = TrainingData(ReplayBuffer(4, (1, 1), (1, 1)), obs, obs, np.random.default_rng(0))
    a, _ = sodp.act(obs, explore=True)
    _observe(sodp, obs, a, a[:, 0, 0])
    out = sodp.update(data, iteration=0)  # 4 episodes < N_init = 6: the rollout is dropped
    assert "ppo/policy_loss" not in out and out["sodp/episodes_seen"] == 4
    assert all(torch.equal(v, sodp.policy.state_dict()[k]) for k, v in start.items())
    assert not sodp._rows["obs"]
    a, _ = sodp.act(obs, explore=True)
    _observe(sodp, obs, a, a[:, 0, 0])
    out = sodp.update(data, iteration=1)
    assert "ppo/policy_loss" in out and "ppo/bc_loss" in out
    assert out["sodp/target_return"] == pytest.approx(
        float(np.mean(sorted([ep.ret for ep in sodp.target.recent])[-8:]))
    )


def test_learning_rate_decays_per_iteration() -> None:
    from otpr.buffer import ReplayBuffer, TrainingData

    sodp = _bandit(num_envs=4, actor_lr=1e-3, lr_decay=0.5)
    obs = np.zeros((4, 1, 1), np.float32)
    data = TrainingData(ReplayBuffer(4, (1, 1), (1, 1)), obs, obs, np.random.default_rng(0))
    for it in (0, 3):
        a, _ = sodp.act(obs, explore=True)
        _observe(sodp, obs, a, a[:, 0, 0])
        out = sodp.update(data, iteration=it)
        assert out["sodp/lr"] == pytest.approx(1e-3 * 0.5**it)
        assert sodp.actor_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**it)
    with pytest.raises(ConfigError, match="algo.lr_decay"):
        _config(lr_decay=0.0)


def test_sodp_config_is_its_own() -> None:
    with pytest.raises(ConfigError, match="policy.min_std"):
        from_dict({"task": {"name": "reach-v3"}, "algo": {"name": "sodp"}})
    with pytest.raises(ConfigError, match="algo.regularizer"):
        _config(regularizer="l2")
    with pytest.raises(ConfigError, match="algo.target_window"):
        _config(target_episodes=20, target_window=10)
    with pytest.raises(ConfigError, match="algo.reg_coef"):
        _config(reg_coef=-1.0)
    with pytest.raises(Exception, match="gae_lambda"):
        _config(gae_lambda=0.9)  # DPPO's critic settings are not SODP's
    assert _config().algo.describe(None) == {"regularizer": "bc"}


# ---------------------------------------------------------------------- end to end
def _cli(command: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / command), *args, "progress=false", "tensorboard=false"],
        capture_output=True, text=True, timeout=900, cwd=cwd,
    )  # fmt: skip


@pytest.mark.slow
def test_multitask_pretraining_then_each_variant_fine_tunes_one_task(tmp_path: Path) -> None:
    """``otpr-pretrain task=mt10 experiment=sodp_metaworld debug=true`` on an MT10 set, then
    ``otpr-finetune task=reach algo.regularizer=<each>`` from its checkpoint: a single task
    starts from the multi-task planner (its pretrained level measured anew on reach), and a
    task whose observations differ from the checkpoint's is refused in one line."""
    from otpr.demos import generate_demos

    data = tmp_path / "mt10.hdf5"
    generate_demos(
        "mt10", 4, "suboptimal", seed=5, out=data, action_noise=1.0, max_episode_steps=40,
        env_kwargs={"reward": "sparse", "terminate_on_success": True}, progress=False,
    )  # fmt: skip
    common = ["experiment=sodp_metaworld", "debug=true", f"task.demos.path={data}"]
    pre = tmp_path / "pre"
    out = _cli("otpr-pretrain", tmp_path, "task=mt10", *common, "task.eval_num_envs=1",
               f"hydra.run.dir={pre}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((pre / "checkpoints" / (pre / "checkpoints/last").read_text() / "meta.json")
                      .read_text())  # fmt: skip
    assert meta["task"] == "mt10" and meta["obs_dim"] == 39 and meta["horizon"] == 12
    pretrain = [json.loads(x) for x in (pre / "metrics.jsonl").open()]
    assert any("pretrain/dsm" in r for r in pretrain)
    for variant in ("bc", "none", "kl", "pl"):
        run = tmp_path / variant
        out = _cli("otpr-finetune", tmp_path, "task=reach", *common, f"checkpoint={pre}",
                   f"algo.regularizer={variant}", f"hydra.run.dir={run}")  # fmt: skip
        assert out.returncode == 0, (variant, out.stderr[-3000:])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["task"] == "reach-v3" and summary["regularizer"] == variant
        assert summary["iterations"] == 3 and summary["final_success"] is not None
        records = [json.loads(x) for x in (run / "metrics.jsonl").open()]
        # the pretrained level is reach's, measured by this run (not mt10's, carried over)
        assert any(r["env_steps"] == 0 and "eval/success" in r for r in records)
        trained = [r for r in records if "ppo/policy_loss" in r]
        assert trained and all(r["sodp/episodes_seen"] >= 2 for r in trained)
        terms = {"bc": "ppo/bc_loss", "kl": "sodp/kl", "pl": "sodp/pl_loss"}
        for name, key in terms.items():  # the variant's term is logged, no other one
            assert all((key in r) == (name == variant) for r in trained), (variant, key)
        ckpt = run / "checkpoints" / (run / "checkpoints" / "last").read_text()
        stored = sorted(p.stem for p in ckpt.glob("*.safetensors"))
        assert stored == (["policy", "policy_reference"] if variant == "kl" else ["policy"])
    # another observation width (reach with a one-hot task id: 40 dims) is refused in one line
    out = _cli("otpr-finetune", tmp_path, "task=reach", "experiment=sodp_metaworld",
               "debug=true", "task.demos.path=null", "+task.env_kwargs.one_hot=true",
               f"checkpoint={pre}", f"hydra.run.dir={tmp_path / 'refused'}")  # fmt: skip
    lines = [x for x in out.stderr.splitlines() if x.strip() and "Warning" not in x]
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert any("checkpoint obs_dim=39 does not match task 'reach-v3' (40)" in x for x in lines)
    # so are other horizons
    out = _cli("otpr-finetune", tmp_path, "task=reach", *common, "task.obs_history=1",
               f"checkpoint={pre}", f"hydra.run.dir={tmp_path / 'refused2'}")  # fmt: skip
    assert out.returncode == 2 and "obs_horizon=2 does not match task.obs_history=1" in out.stderr
    assert not (tmp_path / "refused2").exists()
