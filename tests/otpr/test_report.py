"""Run reports: the evaluation points a curve is drawn from."""

import json
from pathlib import Path

from otpr.report import compare, eval_points, write_report


def _run(path: Path, evals: list[tuple[int, float]], pretrained: float | None) -> dict:
    path.mkdir()
    lines = [
        {"env_steps": s, "iteration": i, "critic/q_loss": 0.1} for i, (s, _) in enumerate(evals)
    ]
    lines += [{"env_steps": s, "eval/success": v, "eval/return": v} for s, v in evals]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return {"pretrained_success": pretrained, "pretrained_return": pretrained, "seed": 0}


def test_a_reused_pretrained_level_is_the_first_point(tmp_path: Path) -> None:
    """A fine-tune that reused its checkpoint's pretrained evaluation logged none at step 0;
    its curve still starts from the summary's level, and a logged one is not doubled."""
    reused = _run(tmp_path / "reused", [(300, 0.8), (100, 0.6)], pretrained=0.5)
    points = eval_points(tmp_path / "reused", reused)
    assert [(r["env_steps"], r["eval/success"]) for r in points] == [
        (0, 0.5),
        (100, 0.6),
        (300, 0.8),
    ]
    logged = _run(tmp_path / "logged", [(0, 0.4), (100, 0.6)], pretrained=0.4)
    assert [r["env_steps"] for r in eval_points(tmp_path / "logged", logged)] == [0, 100]
    bare = _run(tmp_path / "bare", [(100, 0.6)], pretrained=None)
    assert [r["env_steps"] for r in eval_points(tmp_path / "bare", bare)] == [100]
    plain = write_report(tmp_path / "reused", reused)["curves"].read_bytes()
    assert plain == write_report(tmp_path / "reused", reused)["curves"].read_bytes()  # stable
    flagged = dict(reused, evals_under_other_settings=[0, 100])  # resumed with other settings
    assert write_report(tmp_path / "reused", flagged)["curves"].read_bytes() != plain
    assert compare([tmp_path / "reused", tmp_path / "logged"], tmp_path / "c.png").exists()


def test_only_runs_with_ot_guidance_are_labelled_with_it() -> None:
    """A summary names the variant its algorithm describes (``AlgoConfig.describe``): OTPR's
    guidance and OT, nothing for DPPO."""
    from otpr.config import from_dict
    from otpr.report import _title

    for name, described in (("dppo", {}), ("bc", {})):
        cfg = from_dict(
            {"task": {"name": "can"}, "algo": {"name": name}, "policy": {"min_std": 0.1}}
        )
        assert cfg.algo.describe(cfg) == described
    dppo = {"task": "can", "algo": "dppo", "seed": 0}
    assert _title(dppo) == "can / dppo, seed 0"
    otpr_cfg = from_dict({"task": {"name": "can"}, "ot": {"masked": False}})
    described = otpr_cfg.algo.describe(otpr_cfg)
    assert described == {
        "guidance": "H",
        "masked": False,
        "actor_targets": "replay",
        "actor_update": "dsm",
    }
    assert _title(dict(dppo, algo="otpr", **described)) == (
        "can / otpr (guidance H, unmasked OT), seed 0"
    )
    ppo = dict(dppo, algo="otpr", **dict(described, actor_update="ppo"))
    assert _title(ppo) == "can / otpr (guidance H, unmasked OT, PPO actor update), seed 0"
