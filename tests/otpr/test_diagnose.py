"""Guidance diagnostics: the statistics against hand computations, and otpr-diagnose on a
real (tiny) OTPR checkpoint."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from otpr.diagnose import actor_weight_stats, load_guided, main, rank_stats, weight_spread

try:
    import robosuite  # noqa: F401

    HAVE_ROBOSUITE = True
except ImportError:
    HAVE_ROBOSUITE = False

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]
Z = 1.5 / np.sqrt(1.25)  # z of the best of 4 equally spaced scores


def test_rank_stats_by_hand() -> None:
    weights = np.array([[3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    oracle = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]])
    out = rank_stats(weights, oracle)
    assert out["states"] == 2  # the third state's oracle cannot rank anything
    assert out["spearman"] == pytest.approx(0.5)  # 1 and 0 (constant weights rank nothing)
    assert out["top1_z"] == pytest.approx((Z - Z) / 2)  # ties go to the first candidate
    z0 = np.array([Z, Z / 3, -Z / 3, -Z])
    sampled0 = (np.array([3, 2, 1, 0]) / 6 * z0).sum()
    assert out["sampled_z"] == pytest.approx(sampled0 / 2)  # the uniform state adds 0
    assert out["best_z"] == pytest.approx(Z)
    # weights [3 2 1 0 | 1 1 1 1]: total variance 0.6875, within-state 0.625
    assert out["within_share"] == pytest.approx(0.625 / 0.6875)
    assert out["all_zero_frac"] == 0.0
    reverse = rank_stats(-weights[:1] + 3, oracle[:1])
    assert reverse["spearman"] == pytest.approx(-1.0) and reverse["top1_z"] == pytest.approx(-Z)


def test_weight_spread_and_actor_stats_by_hand() -> None:
    spread = weight_spread(torch.tensor([[0.0, 0.0], [1.0, 3.0]]))
    assert spread["all_zero_frac"] == 0.5
    # values 0 0 1 3: variance 1.5; within-state variances 0 and 1
    assert spread["within_share"] == pytest.approx(0.5 / 1.5)
    assert weight_spread(torch.ones(3, 4))["within_share"] == 0.0
    stats = actor_weight_stats(torch.tensor([1.0, 1.0, 2.0, 0.0]), num_demo=2)
    assert stats["ess_frac"] == pytest.approx(16 / (4 * 6))
    assert stats["demo_weight_share"] == pytest.approx(0.5)
    assert actor_weight_stats(torch.ones(4), num_demo=0)["demo_weight_share"] == 0.0


def _critic_ranking():
    spec = importlib.util.spec_from_file_location(
        "critic_ranking", ROOT / "scripts" / "critic_ranking.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mc_returns_follow_each_env_stream_by_hand() -> None:
    """Two envs interleaved (rows A0 B0 A1 B1 A2 B2): A succeeds at its third decision; B is
    reset after its first (its next row starts elsewhere: a time limit) and its last row
    ends the replay: the rest of a cut-off episode counts 0."""
    obs = np.array([0, 10, 1, 99, 2, 100], np.float32)[:, None]
    next_obs = np.array([1, 11, 2, 100, 3, 101], np.float32)[:, None]
    reward = np.array([0.0, 0.0, 0.0, 0.0, 0.9, 0.0])
    discount = np.full(6, 0.5)
    terminated = np.array([0, 0, 0, 0, 1, 0], np.float32)
    g = _critic_ranking().mc_returns(reward, discount, terminated, obs, next_obs, streams=2)
    # A: 0.9 at A2, 0.45 at A1, 0.225 at A0; B: 0 everywhere
    assert g == pytest.approx([0.225, 0.0, 0.45, 0.0, 0.9, 0.0])
    reward[5] = 1.0  # B's last row: its own reward only
    reward[3] = 0.2  # B1 continues into B2 (obs 100 = next_obs 100): 0.2 + 0.5 * 1.0
    g = _critic_ranking().mc_returns(reward, discount, terminated, obs, next_obs, streams=2)
    assert g[3] == pytest.approx(0.7) and g[5] == pytest.approx(1.0) and g[1] == 0.0


class _ExpertAsPolicy(torch.nn.Module):
    """Meta-World's scripted reach expert behind the policy's ``sample``: each chunk repeats
    its action for the last observation."""

    def __init__(self) -> None:
        super().__init__()
        import envs

        self.expert = envs.make_expert("reach-v3")
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device to read

    def sample(self, obs: torch.Tensor, num_samples: int, generator=None) -> torch.Tensor:
        action = torch.as_tensor(self.expert.act(obs[0, -1].numpy()))
        return action.expand(1, num_samples, 4, action.shape[0]).clone()


def test_return_to_go_is_the_discounted_sparse_return_and_replays_from_a_snapshot() -> None:
    """Reach pays 1 at the success that ends the episode: an expert continuation from a
    snapshot returns gamma^k (k its steps), the same again after a restore, and a chunk that
    first stands still for 4 steps reaches the goal no sooner."""
    import envs
    from otpr.diagnose import _return_to_go

    env = envs.make_single(
        "reach-v3", 5, max_episode_steps=80, reward="sparse", terminate_on_success=True
    )
    obs, _ = env.reset(seed=5)
    policy = _ExpertAsPolicy()
    policy.expert.reset(env, np.random.default_rng(0))
    history = deque([obs], maxlen=1)
    chunk = policy.sample(torch.as_tensor(obs[None, None]), 1)[0, 0].numpy()
    snap = env.snapshot()
    first = _return_to_go(env, policy, history, chunk, 4, 0.99, torch.Generator())
    env.restore(snap)
    again = _return_to_go(env, policy, history, chunk, 4, 0.99, torch.Generator())
    env.restore(snap)
    still = _return_to_go(env, policy, history, np.zeros_like(chunk), 4, 0.99, torch.Generator())
    assert 0 < first <= 1 and again == first
    k = np.log(first) / np.log(0.99)
    assert k == pytest.approx(round(k), abs=1e-6) and 0 <= round(k) < 80
    assert still <= first * 0.99**4 + 1e-9


def _run(tmp_path: Path, *overrides: str) -> Path:
    run = tmp_path / overrides[0].split("=")[-1]
    out = subprocess.run(
        [str(BIN / "otpr"), "debug=true", "progress=false", "tensorboard=false",
         f"hydra.run.dir={run}", *overrides],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return run


@pytest.mark.slow
def test_otpr_diagnose_on_a_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path, "algo=otpr", "algo.guidance=A")  # A weighs every pair > 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").open()]
    logged = [r for r in records if "guidance/within_share" in r]
    assert logged and all(0 <= r["guidance/within_share"] <= 1 for r in logged)
    actor = [r for r in records if "actor/ess_frac" in r]
    assert actor and all(0 < r["actor/ess_frac"] <= 1 for r in actor)
    assert all(0 < r["actor/demo_weight_share"] < 1 for r in actor)  # demo_fraction 0.25
    out_json, saved = tmp_path / "diag.json", tmp_path / "probe.npz"
    argv = ["--checkpoint", str(run), "--episodes", "1", "--out", str(out_json)]
    assert main([*argv, "--save", str(saved)]) == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "uniform" in printed
    result = json.loads(out_json.read_text())
    assert result["decisions"] >= 5 and set(result["rank"]) == {"H", "Hc", "Q", "A", "uniform"}
    uniform = result["rank"]["uniform"]
    assert uniform["spearman"] == 0.0 and abs(uniform["sampled_z"]) < 1e-9
    for stats in result["rank"].values():
        assert stats["best_z"] >= stats["top1_z"] - 1e-9 and stats["best_z"] > 0
    # the saved probe: raw windows and candidates from which the checkpoint's algorithm gives
    # back each guidance's weights, and the printed statistics
    arrays = np.load(saved)
    d = result["decisions"]
    assert arrays["obs"].shape[0] == arrays["candidates"].shape[0] == arrays["oracle"].shape[0] == d
    assert arrays["candidates"].shape[1] == 8
    _, cfg, algo = load_guided(run)
    for guidance in ("Q", "A"):
        w = algo.candidate_weights(
            torch.as_tensor(arrays["obs"]), torch.as_tensor(arrays["candidates"]), guidance
        )
        np.testing.assert_allclose(w.numpy(), arrays[guidance], rtol=1e-5, atol=1e-6)
        stats = rank_stats(arrays[guidance], arrays["oracle"])
        assert stats["spearman"] == pytest.approx(result["rank"][guidance]["spearman"])
    # scripts/critic_ranking.py on the saved probe: the run's own critic ranks as guidance Q
    ranking = tmp_path / "ranking.json"
    argv = ["--checkpoint", str(run), "--probe", str(saved), "--steps", "5", "--seeds", "2"]
    assert _critic_ranking().main([*argv, "--out", str(ranking)]) == 0
    scored = json.loads(ranking.read_text())
    own = scored["iql checkpoint"][0][str(saved)]
    assert own["spearman"] == pytest.approx(result["rank"]["Q"]["spearman"])
    assert own["top1_z"] == pytest.approx(result["rank"]["Q"]["top1_z"])
    for name in ("iql refit", "mc", "mc recent"):
        assert len(scored[name]) == 2 and all(
            -1 <= r[str(saved)]["spearman"] <= 1 for r in scored[name]
        )
    # the return oracle at every 3rd decision (scores: discounted returns of a reward <= 1)
    ret = tmp_path / "return.npz"
    argv = ["--checkpoint", str(run), "--episodes", "2", "--oracle", "return", "--every", "3"]
    assert main([*argv, "--save", str(ret), "--out", str(out_json)]) == 0
    assert "oracle return (1 rollouts)" in capsys.readouterr().out
    scores = np.load(ret)["oracle"]
    assert json.loads(out_json.read_text())["decisions"] == len(scores) >= 2
    assert np.all((scores >= 0) & (scores <= 1.0))
    # another algorithm's checkpoint has no guidance: one line, exit 2
    dppo = _run(tmp_path, "algo=dppo")
    assert main(["--checkpoint", str(dppo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("otpr-diagnose: error:") and "algo=dppo" in err[0]


@pytest.mark.slow
def test_otpr_diagnose_on_an_otpr_gae_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    """algo=otpr_gae checkpoints are probed with the guidances that algorithm has (its plan
    Hc, the same critic's A, uniform); the saved weights are the ones its term uses."""
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path, "algo=otpr_gae", "algo.ot_term=advantage", "algo.ot_scale=fitted")
    records = [json.loads(x) for x in (run / "metrics.jsonl").open()]
    fitted = [r for r in records if "guidance/adv_rank_corr" in r]
    assert fitted and all(-1 <= r["guidance/adv_rank_corr"] <= 1 for r in fitted)
    assert all(r["guidance/bonus_scale"] == max(r["guidance/adv_slope"], 0.0) for r in fitted)
    out_json, saved = tmp_path / "diag.json", tmp_path / "probe.npz"
    argv = ["--checkpoint", str(run), "--episodes", "1", "--out", str(out_json)]
    assert main([*argv, "--save", str(saved)]) == 0
    assert "guidance trained with: Hc" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert set(result["rank"]) == {"Hc", "A", "uniform"} and result["decisions"] >= 5
    arrays = np.load(saved)
    _, _, algo = load_guided(run)
    obs, cand = torch.as_tensor(arrays["obs"]), torch.as_tensor(arrays["candidates"])
    np.testing.assert_allclose(algo.plan_weights(obs, cand).numpy(), arrays["Hc"], atol=1e-6)
    hc = arrays["Hc"]
    kept = hc.sum(axis=1) > 0
    np.testing.assert_allclose(hc[kept].mean(axis=1), 1.0, atol=1e-5)  # a plan: mean 1
    with pytest.raises(ValueError, match="guidance"):
        algo.candidate_weights(obs, cand, "H")


@pytest.mark.slow
@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_otpr_diagnose_on_a_robosuite_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    """robosuite tasks are probed too: candidates from one snapshot, scored by the staged
    shaped reward, which differs between the candidates of a state."""
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path, "task=lift")
    out_json = tmp_path / "diag.json"
    assert main(["--checkpoint", str(run), "--episodes", "1", "--out", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["task"] == "lift" and result["decisions"] >= 5
    uniform = result["rank"]["uniform"]
    assert uniform["spearman"] == 0.0 and uniform["best_z"] > 0  # candidates' scores differ
