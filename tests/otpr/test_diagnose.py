"""Guidance diagnostics: the statistics against hand computations, and otpr-diagnose on a
real (tiny) OTPR checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from otpr.diagnose import actor_weight_stats, main, rank_stats, weight_spread

try:
    import robosuite  # noqa: F401

    HAVE_ROBOSUITE = True
except ImportError:
    HAVE_ROBOSUITE = False

BIN = Path(sys.executable).parent
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
    out_json = tmp_path / "diag.json"
    assert main(["--checkpoint", str(run), "--episodes", "1", "--out", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "uniform" in printed
    result = json.loads(out_json.read_text())
    assert result["decisions"] >= 5 and set(result["rank"]) == {"H", "Hc", "Q", "A", "uniform"}
    uniform = result["rank"]["uniform"]
    assert uniform["spearman"] == 0.0 and abs(uniform["sampled_z"]) < 1e-9
    for stats in result["rank"].values():
        assert stats["best_z"] >= stats["top1_z"] - 1e-9 and stats["best_z"] > 0
    # another algorithm's checkpoint has no guidance: one line, exit 2
    dppo = _run(tmp_path, "algo=dppo")
    assert main(["--checkpoint", str(dppo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("otpr-diagnose: error:") and "algo=dppo" in err[0]


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
