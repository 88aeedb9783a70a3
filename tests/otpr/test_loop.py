"""End-to-end smoke tests of the loop on the embedded default task (debug budgets)."""

import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from otpr.config import apply_debug, from_dict
from otpr.loop import run
from otpr.report import eval_points

warnings.filterwarnings("ignore")


def _cfg(tmp_path: Path, policy: dict | None = None, **algo):
    cfg = from_dict(
        {
            "task": {
                "name": "reach-v3",
                "env_kwargs": {"reward": "sparse", "terminate_on_success": True},
            },
            "algo": algo,
            "policy": policy or {},
            "debug": True,
            "progress": False,
            "tensorboard": False,
        }
    )
    return apply_debug(cfg)


@pytest.mark.parametrize("algo", ["otpr", "otpr_paper"])
def test_otpr_debug_cli_end_to_end(tmp_path: Path, algo: str) -> None:
    """The default (guidance Hc on the policy's candidates) and the paper's OTPR (H of the
    trained potentials) run end to end from the command line."""
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "otpr.cli",
            f"algo={algo}",
            "debug=true",
            "progress=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "curves.png"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tb").glob("events.*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("pretrained_success", "final_success", "env_steps", "wall_time_s"):
        assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), key
    assert summary["env_steps"] > 0 and summary["iterations"] == 3
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*records)
    paper = ("ot/dual", "ot/h_mean")  # only H trains the potentials
    for key in ("critic/q_loss", "actor/dsm", "eval/success", "perf/env_steps_per_s") + paper:
        assert (key in keys) == (algo == "otpr_paper" or key not in paper), key
    assert summary["guidance"] == ("H" if algo == "otpr_paper" else "Hc")
    assert ("perf/time_actor_targets_s" in keys) == (algo == "otpr")  # resampled targets
    for rec in records:
        for k, v in rec.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, v)
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text()
    for name in (
        "policy.safetensors",
        "critic.safetensors",
        "potentials.safetensors",
        "config.yaml",
        "meta.json",
    ):
        assert (ckpt / name).exists(), name
    assert (ckpt / "training_state" / "replay.npz").exists()


@pytest.mark.parametrize("guidance", ["Q", "A"])
def test_loop_is_guidance_agnostic(tmp_path: Path, guidance: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    summary = run(_cfg(tmp_path, guidance=guidance), tmp_path / guidance)
    assert summary["guidance"] == guidance and summary["iterations"] == 3
    records = [
        json.loads(x) for x in (tmp_path / guidance / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("actor/dsm" in r for r in records)
    assert not any("ot/dual" in r for r in records)  # no potentials without H guidance


def test_resume_continues_from_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.algo.iterations, cfg.algo.checkpoint_every = 2, 1
    first = run(cfg, tmp_path / "r")
    assert first["evals_under_other_settings"] == []
    meta = ckpt_io.read_meta(tmp_path / "r")
    assert meta["iteration"] == 2
    cfg.algo.iterations = 3  # a longer run in the same dir picks up at iteration 2
    cfg.task.eval_seed += 1  # ... and evaluates on other episodes from there on
    summary = run(cfg, tmp_path / "r")
    assert summary["iterations"] == 3 and summary["env_steps"] > meta["env_steps"]
    earlier = [r["env_steps"] for r in eval_points(tmp_path / "r", summary)][:-1]
    assert earlier and summary["evals_under_other_settings"] == earlier  # flagged, in the summary
    trainer = Trainer(cfg, tmp_path / "r")
    trainer.restore(tmp_path / "r")
    assert trainer.state.iteration == 3 and len(trainer.buffer) > 0
    policy = ckpt_io.load_policy(tmp_path / "r")  # the policy loads from the checkpoint alone
    np.testing.assert_array_equal(
        policy.normalizer.state_dict()["obs_min"].numpy(),
        trainer.algo.policy.normalizer.state_dict()["obs_min"].numpy(),
    )
    trainer.close()


def test_evaluation_is_a_function_of_the_weights(tmp_path: Path, monkeypatch) -> None:
    """Policy noise in evaluation comes from task.eval_seed, not the training stream: two
    evaluations of the same weights take the same actions and leave training's RNG alone."""
    import torch

    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.task.eval_episodes = cfg.task.eval_num_envs  # one episode per eval env
    trainer = Trainer(cfg, tmp_path / "e")
    taken: list[np.ndarray] = []
    act = trainer.algo.act

    def recording_act(obs, explore, generator=None):
        actions, info = act(obs, explore, generator)
        taken.append(actions)
        return actions, info

    monkeypatch.setattr(trainer.algo, "act", recording_act)
    training_rng = trainer.algo.generator.get_state().clone()
    trainer.evaluate()
    first, taken[:] = list(taken), []
    trainer.evaluate()
    assert torch.equal(trainer.algo.generator.get_state(), training_rng)
    assert len(first) == len(taken)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(taken))
    trainer.cfg.task.eval_seed += 1  # the noise does come from the seed
    taken[:] = []
    trainer.eval_env.close()
    trainer._eval_env = None
    trainer.evaluate()
    assert not np.array_equal(np.concatenate(first)[:4], np.concatenate(taken)[:4])
    trainer.close()


def _member_zero_follows_the_expert(trainer, monkeypatch) -> None:
    """Collection acts by reach's scripted expert in env member 0; the others stand still."""
    import envs

    expert = envs.make_expert("reach-v3")
    h = trainer.cfg.task.horizon

    def scripted(obs, explore, generator=None):
        chunk = np.stack([expert.act(o[-1]) for o in obs])[:, None].repeat(h, 1)
        chunk[1:] = 0.0  # member 0 follows the expert, the others stand still and fail
        return chunk, {}

    monkeypatch.setattr(trainer.algo, "act", scripted)


def test_successful_episodes_join_the_demos(tmp_path: Path, monkeypatch) -> None:
    """With algo.success_to_demos, the replay rows of successful episodes (and only those)
    become demo pairs for the actor; a failing env member contributes none."""
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, success_to_demos=True)
    cfg.algo.steps_per_iter = 40  # apply_debug caps it at 10
    cfg.task.max_episode_steps = 150
    trainer = Trainer(cfg, tmp_path / "s")
    n = cfg.task.num_envs

    _member_zero_follows_the_expert(trainer, monkeypatch)
    first_online = trainer.buffer.total_added
    out = trainer.collect()
    ids = np.asarray(trainer.state.success_ids)
    assert len(ids) > 0
    assert set((ids - first_online) % n) == {0}  # only member 0's rows
    terminated = trainer.buffer.data["terminated"][ids % trainer.buffer.capacity]
    assert terminated.sum() >= 1
    # the ids split into the episodes that ended in success (a member's rows are n apart)
    ends = (np.diff(ids) != n) | (terminated[:-1] > 0)
    episodes = np.split(ids, np.flatnonzero(ends) + 1)
    assert len(episodes) == round(out["train/success"] * out["train/episodes"]) >= 2
    assert np.array_equal(np.concatenate(episodes), ids)
    # each successful episode's rows end with its own terminal decision (the one that solved it)
    assert [bool(terminated[ids == e[-1]][0]) for e in episodes] == [True] * len(episodes)
    # the actor's demo part now draws those rows as well as the demo windows
    obs, act = trainer.data.demo_batch(2000)
    own = trainer.buffer.data["actions"][ids % trainer.buffer.capacity]
    drawn = act.numpy()
    from_replay = [any(np.array_equal(a, b) for b in own) for a in drawn[:200]]
    assert 0 < sum(from_replay) < 200
    trainer.close()


def test_failed_starts_are_retried_and_counted_apart(tmp_path: Path, monkeypatch) -> None:
    """With algo.retry_failed_starts, failing members replay their start; the first-try success
    counts fresh starts only."""
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, retry_failed_starts=2)
    cfg.algo.steps_per_iter = 60  # 240 env steps: the standing member fails twice
    cfg.task.max_episode_steps = 100  # the standing members fail every 100 steps
    trainer = Trainer(cfg, tmp_path / "r")

    _member_zero_follows_the_expert(trainer, monkeypatch)
    out = trainer.collect()
    assert out["train/first_try_episodes"] < out["train/episodes"]
    assert out["train/first_try_success"] > out["train/success"] > 0
    trainer.close()


def test_pretrained_level_is_reused_only_if_measured_the_same_way(tmp_path: Path, monkeypatch):
    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.algo.iterations = 0
    run(cfg, tmp_path / "bc")  # pretrain + its evaluation
    same = Trainer(cfg, tmp_path / "a")
    same.restore(tmp_path / "bc", weights_only=True)
    assert [e["env_steps"] for e in same.state.evals] == [0]
    same.close()
    cfg.task.eval_seed += 1  # another evaluation range: the level must be re-measured
    other = Trainer(cfg, tmp_path / "b")
    other.restore(tmp_path / "bc", weights_only=True)
    assert other.state.evals == []
    other.close()
    cfg.task.eval_seed -= 1
    cfg.policy.temperature = 0.5  # the same weights sampled nearer the mode: re-measured too
    colder = Trainer(cfg, tmp_path / "c")
    assert colder.algo.policy.temperature == 0.5
    colder.restore(tmp_path / "bc", weights_only=True)
    assert colder.state.evals == []
    colder.close()
    cfg.policy.temperature = 1.0
    # From a fine-tuned checkpoint, its own evaluation is the starting level, not the BC's;
    # from one whose point was not evaluated (iteration 1 of 2, evaluated every 2), none is.
    cfg.checkpoint = str(tmp_path / "bc")
    cfg.algo.iterations, cfg.algo.eval_every, cfg.algo.checkpoint_every = 2, 2, 1
    run(cfg, tmp_path / "ft")
    ft = ckpt_io.resolve(tmp_path / "ft")
    loop = ckpt_io.read_loop_state(ft)
    assert loop["evals"][-1]["env_steps"] == loop["env_steps"] > 0
    assert loop["evals"][0]["env_steps"] == 0
    for e, level in zip(loop["evals"], (0.25, 0.75), strict=True):  # tell the two apart
        e["eval/success"] = level
    (ft / "training_state" / "loop.json").write_text(json.dumps(loop))
    later = Trainer(cfg, tmp_path / "d")
    later.restore(ft, weights_only=True)
    assert later.state.evals == [dict(loop["evals"][-1], env_steps=0, iteration=0)]
    first = ckpt_io.resolve(ft.parent / sorted(p.name for p in ft.parent.glob("step_*"))[0])
    assert ckpt_io.read_loop_state(first)["iteration"] == 1
    later.restore(first, weights_only=True)
    assert later.state.evals == []
    later.close()


def test_a_stopped_run_still_gets_a_report(tmp_path: Path, monkeypatch) -> None:
    from otpr.cli import _checkpoint_is_newer, _summary_of_stopped_run

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.algo.iterations, cfg.algo.checkpoint_every = 2, 1
    finished = run(cfg, tmp_path / "r")
    assert not _checkpoint_is_newer(tmp_path / "r", finished)
    # the summary of an earlier finish, before the run was extended and then killed
    assert _checkpoint_is_newer(tmp_path / "r", dict(finished, iterations=1))
    (tmp_path / "r" / "summary.json").unlink()  # as if killed before writing it
    rebuilt = _summary_of_stopped_run(tmp_path / "r")
    for key in ("pretrained_success", "final_success", "env_steps", "iterations", "num_demos"):
        assert rebuilt[key] == finished[key], key
    assert rebuilt["stopped_early"] is False and rebuilt["wall_time_s"] > 0


def test_ema_weights_act_and_persist(tmp_path: Path, monkeypatch) -> None:
    """With algo.ema_decay the averaged copy acts, is saved as policy_ema and is what
    load_policy returns; a fine-tune from a checkpoint without an average starts one there."""
    import torch

    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    plain = _cfg(tmp_path, iterations=0)
    run(plain, tmp_path / "bc")  # pretrained, no average
    cfg = _cfg(tmp_path, ema_decay=0.9, iterations=2, checkpoint_every=1)
    trainer = Trainer(cfg, tmp_path / "ft")
    trainer.restore(tmp_path / "bc", weights_only=True)
    agent = trainer.algo
    for avg, p in zip(agent.ema.model.parameters(), agent.policy.parameters(), strict=True):
        torch.testing.assert_close(avg, p)  # started from the pretrained weights
    assert agent.acting_policy is agent.ema.model
    assert agent.ema.current_decay() == 0.9  # trained weights: no warm-up that forgets them
    trainer.close()
    cfg.checkpoint = str(tmp_path / "bc")
    run(cfg, tmp_path / "ft")
    ckpt = ckpt_io.resolve(tmp_path / "ft")
    assert (ckpt / "policy_ema.safetensors").exists()
    resumed = Trainer(cfg, tmp_path / "ft")
    resumed.restore(tmp_path / "ft")
    assert resumed.algo.ema.num_updates > 0  # the warm-up counter is training state
    loaded = ckpt_io.load_policy(tmp_path / "ft")
    avg = dict(resumed.algo.ema.model.named_parameters())
    trained = dict(resumed.algo.policy.named_parameters())
    differs = False
    for name, p in loaded.named_parameters():
        torch.testing.assert_close(p, avg[name])
        differs |= not torch.equal(p, trained[name])
    assert differs  # the average is not the trained network
    resumed.close()
    # a fine-tune without an average starts from the weights that acted
    plain_ft = Trainer(_cfg(tmp_path, iterations=2), tmp_path / "ft_plain")
    plain_ft.restore(tmp_path / "ft", weights_only=True)
    for name, p in plain_ft.algo.policy.named_parameters():
        torch.testing.assert_close(p, avg[name])
    plain_ft.close()


def test_dppo_trains_the_policy_and_resumes_with_its_value_network(tmp_path: Path, monkeypatch):
    """algo=dppo end to end: V and PPO steps run, the policy moves, V is checkpointed and
    restored on resume, and a pretrained checkpoint (no V) starts a fresh V."""
    import torch

    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, {"min_std": 0.1}, name="dppo", ema_decay=0.0, minibatch_size=8)
    cfg.algo.iterations, cfg.algo.checkpoint_every = 2, 1
    summary = run(cfg, tmp_path / "d")
    assert summary["algo"] == "dppo" and "guidance" not in summary  # no OT guidance to report
    records = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert any("ppo/approx_kl" in r for r in records)  # the actor trained after the warm-up
    assert any("value/loss" in r for r in records)
    assert not any("critic/q_loss" in r or "ot/dual" in r for r in records)
    ckpt = ckpt_io.resolve(tmp_path / "d")
    first = ckpt_io.resolve(ckpt.parent / sorted(p.name for p in ckpt.parent.glob("step_*"))[0])
    moved = Trainer(cfg, tmp_path / "x")
    moved.restore(first)  # after iteration 1 (warm-up: V only)
    pretrained = {k: v.clone() for k, v in moved.algo.policy.state_dict().items()}
    moved.restore(ckpt)
    assert any(not torch.equal(pretrained[k], v) for k, v in moved.algo.policy.state_dict().items())
    saved_v = {k: v.clone() for k, v in moved.algo.rollout.value.state_dict().items()}
    moved.close()
    cfg.algo.iterations = 3
    resumed = Trainer(cfg, tmp_path / "d")
    resumed.restore(tmp_path / "d")
    for k, v in resumed.algo.rollout.value.state_dict().items():
        assert torch.equal(v, saved_v[k])
    rng = ckpt_io.load_training_state(tmp_path / "d")["rng"]
    assert torch.equal(
        resumed.algo.rollout.generator.get_state(), rng["gen/ppo"]
    )  # minibatch order
    resumed.close()
    fresh = Trainer(cfg, tmp_path / "f")
    fresh.restore(tmp_path / "d", weights_only=True)  # as otpr-finetune from a BC run
    assert any(
        not torch.equal(v, saved_v[k]) for k, v in fresh.algo.rollout.value.state_dict().items()
    )
    fresh.close()


def test_deterministic_evaluation_is_the_noise_free_sampler(tmp_path: Path, monkeypatch) -> None:
    """algo.eval_deterministic evaluates as DDIM eta = 0 without the floor would (same actions,
    same recorded settings, so a pretrained level is shared), and collection keeps its noise."""
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    taken: dict[str, list[np.ndarray]] = {}
    settings = {}
    for name, policy, det in (
        ("det", {"eta": 1.0, "min_std": 0.1}, True),
        ("eta0", {"eta": 0.0, "min_std": 0.0}, False),
        ("noisy", {"eta": 1.0, "min_std": 0.1}, False),
    ):
        cfg = _cfg(tmp_path, policy, eval_deterministic=det)
        cfg.task.eval_episodes = cfg.task.eval_num_envs
        trainer = Trainer(cfg, tmp_path / name)
        act, taken[name] = trainer.algo.act, []

        def recording_act(obs, explore, generator=None, act=act, out=taken[name]):
            actions, info = act(obs, explore, generator)
            out.append(actions)
            return actions, info

        monkeypatch.setattr(trainer.algo, "act", recording_act)
        trainer.evaluate()
        settings[name] = trainer.state.evals[-1]["eval_settings"]
        assert (trainer.algo.policy.eta, trainer.algo.policy.min_std) == (
            policy["eta"],
            policy["min_std"],
        )
        trainer.close()
    first = min(len(taken["det"]), len(taken["noisy"]))
    np.testing.assert_allclose(np.concatenate(taken["det"]), np.concatenate(taken["eta0"]))
    assert not np.allclose(
        np.concatenate(taken["det"][:first]), np.concatenate(taken["noisy"][:first])
    )
    assert settings["det"] == settings["eta0"] != settings["noisy"]
    assert settings["det"]["sampler"][2] == 0.0 and "min_std" not in settings["det"]


def test_every_evaluated_point_keeps_its_weights(tmp_path: Path, monkeypatch) -> None:
    """checkpoints/evaluated/ holds the weights of each evaluation after rolling retention has
    dropped the full checkpoints: re-evaluating them gives the curve's numbers back; they are
    not resume points, and say so."""
    import torch

    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.algo.iterations, cfg.algo.eval_every, cfg.algo.checkpoint_every = 3, 1, 1
    run(cfg, tmp_path / "r")
    full = sorted(p.name for p in (tmp_path / "r" / "checkpoints").glob("step_*"))
    kept = sorted(p.name for p in (tmp_path / "r" / "checkpoints" / "evaluated").iterdir())
    # the pretrained point and 3 iterations; the newest two full checkpoints are left
    assert len(full) == 2 and len(kept) == 4 and full == kept[2:]
    root = tmp_path / "r" / "checkpoints"
    same = ckpt_io.load_policy(root / "evaluated" / kept[-1]).state_dict()
    assert all(
        torch.equal(v, same[k])
        for k, v in ckpt_io.load_policy(root / full[-1]).state_dict().items()
    )
    early = ckpt_io.load_policy(root / "evaluated" / kept[0]).state_dict()
    assert any(not torch.equal(v, same[k]) for k, v in early.items())  # other weights, kept
    curve = {e["env_steps"]: e for e in ckpt_io.read_loop_state(tmp_path / "r")["evals"]}
    first = tmp_path / "r" / "checkpoints" / "evaluated" / kept[0]
    trainer = Trainer(cfg, tmp_path / "again")
    trainer.restore(first, weights_only=True)
    steps = ckpt_io.read_meta(first)["env_steps"]
    assert trainer.evaluate() == {k: v for k, v in curve[steps].items() if k.startswith("eval/")}
    with pytest.raises(ckpt_io.CheckpointError, match="weights only"):
        trainer.restore(first)
    trainer.close()


def test_timeout_is_terminal_changes_only_what_the_learners_see(tmp_path: Path, monkeypatch):
    """task.timeout_is_terminal marks time-limit ends terminated in the replay and in DPPO's
    rollout; everything collected is otherwise the same, and true terminations stay marked."""
    import torch

    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    seen = {}
    for flag in (False, True):
        cfg = _cfg(tmp_path, {"min_std": 0.1}, name="dppo", minibatch_size=8)
        cfg.task.max_episode_steps = 8  # 2 decisions: every member times out in the rollout
        cfg.task.timeout_is_terminal = flag
        trainer = Trainer(cfg, tmp_path / str(flag))
        trainer.collect()
        size = trainer.buffer.size
        seen[flag] = {k: v[:size].copy() for k, v in trainer.buffer.data.items()}
        seen[flag]["ppo"] = torch.stack(trainer.algo.rollout.rows["terminated"]).numpy()
        seen[flag]["done"] = torch.stack(trainer.algo.rollout.rows["done"]).numpy()
        trainer.close()
    off, on = seen[False], seen[True]
    for key in ("obs", "actions", "reward", "next_obs"):
        np.testing.assert_array_equal(off[key], on[key])
    timeouts = (off["done"] == 1) & (off["ppo"] == 0)
    assert timeouts.sum() >= 8
    np.testing.assert_array_equal(on["ppo"], np.maximum(off["ppo"], timeouts))
    assert off["terminated"].sum() < on["terminated"].sum() == on["ppo"].sum()


def test_dppo_average_is_evaluated_while_the_trained_weights_collect(tmp_path: Path, monkeypatch):
    """algo=dppo with algo.ema_decay: the trained network collects (its log-probabilities are
    the ones PPO's ratio needs), the average follows every policy step and is what acts in
    evaluation and what load_policy returns."""
    import torch

    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, {"min_std": 0.1}, name="dppo", ema_decay=0.5, minibatch_size=8)
    cfg.algo.warmup_iterations = 0
    trainer = Trainer(cfg, tmp_path / "d")
    agent = trainer.algo
    collected_by = []
    for net in (agent.policy, agent.ema.model):
        chain = net.sample_chain
        monkeypatch.setattr(
            net,
            "sample_chain",
            lambda *a, net=net, f=chain, **k: collected_by.append(net) or f(*a, **k),
        )
    trainer.collect()
    assert collected_by and all(p is agent.policy for p in collected_by)
    before = agent.ema.num_updates
    out = trainer.algo.update(trainer.data, trainer.state.iteration)
    steps = agent.ema.num_updates - before
    assert steps >= 2 and out["ppo/samples"] > 0
    old = {k: v.clone() for k, v in agent.ema.model.state_dict().items()}
    agent.after_policy_step()  # one more fold moves the average towards the trained weights
    moved = [not torch.equal(old[k], v) for k, v in agent.ema.model.state_dict().items()]
    assert any(moved)
    assert any(
        not torch.equal(a, p)
        for a, p in zip(agent.ema.model.parameters(), agent.policy.parameters(), strict=True)
    )
    assert agent.acting_policy is agent.ema.model
    trainer.save()
    loaded = ckpt_io.load_policy(tmp_path / "d")
    for name, p in loaded.named_parameters():
        torch.testing.assert_close(p, dict(agent.ema.model.named_parameters())[name])
    loaded = ckpt_io.load_policy(tmp_path / "d", weights="trained")
    for name, p in loaded.named_parameters():
        torch.testing.assert_close(p, dict(agent.policy.named_parameters())[name])
    trainer.state.evals = [{"env_steps": trainer.state.env_steps, "eval/success": 0.5}]
    trainer.state.evals[0]["eval_settings"] = trainer.eval_settings()
    trainer.save()
    trainer.close()

    # weights=trained: a new run (with or without an average of its own) starts from the
    # trained weights, and does not take the average's evaluation as their starting level
    for decay in (0.0, 0.5):
        for weights in ("acting", "trained"):
            cfg.algo.ema_decay, cfg.weights = decay, weights
            start = Trainer(cfg, tmp_path / f"s{decay}{weights}")
            start.restore(tmp_path / "d", weights_only=True)
            source = agent.ema.model if weights == "acting" else agent.policy
            pairs = [(start.algo.acting_policy, source)]
            # the network that trains: the trained one, unless it is all this run loads
            trains = agent.ema.model if (weights, decay) == ("acting", 0.0) else agent.policy
            pairs.append((start.algo.policy, trains))
            for net, want in pairs:
                for a, b in zip(net.parameters(), want.parameters(), strict=True):
                    assert torch.equal(a, b)
            # kept only for the weights it measured, under the same settings (ema_decay is one)
            kept = weights == "acting" and decay == 0.5
            assert len(start.state.evals) == int(kept)
            start.close()

    # weights alone (no training_state, as otpr-average writes): no level to keep
    shutil.copytree(ckpt_io.resolve(tmp_path / "d"), tmp_path / "bare")
    shutil.rmtree(tmp_path / "bare" / "training_state")
    bare = Trainer(cfg, tmp_path / "b")
    bare.restore(tmp_path / "bare", weights_only=True)
    assert bare.state.evals == [] and bare.state.phase == "pretrained"
    bare.close()


def test_dppo_average_does_not_change_the_trained_weights(tmp_path: Path, monkeypatch):
    """With algo=dppo the average only watches: a run with algo.ema_decay ends with the same
    trained weights, bit for bit, as the run without it (evaluations in between included), so
    its trained weights are that run's result."""
    import torch

    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    pre = _cfg(tmp_path, {"min_std": 0.1}, name="dppo", ema_decay=0.0)
    run(pre, tmp_path / "bc", stages=("pretrain",))
    trained = {}
    for decay in (0.0, 0.5):
        cfg = _cfg(tmp_path, {"min_std": 0.1}, name="dppo", ema_decay=decay, minibatch_size=8)
        cfg.algo.iterations, cfg.algo.warmup_iterations, cfg.algo.eval_every = 2, 0, 1
        cfg.checkpoint = str(tmp_path / "bc")
        run(cfg, tmp_path / str(decay))
        trainer = Trainer(cfg, tmp_path / "x")
        trainer.restore(tmp_path / str(decay))
        trained[decay] = {k: v.clone() for k, v in trainer.algo.policy.state_dict().items()}
        if decay:
            assert trainer.algo.acting_policy is trainer.algo.ema.model
            averaged = trainer.algo.ema.model.state_dict()
            assert any(not torch.equal(averaged[k], v) for k, v in trained[decay].items())
        trainer.close()
    bc = ckpt_io.load_policy(tmp_path / "bc").state_dict()
    assert any(not torch.equal(bc[k], v) for k, v in trained[0.0].items())  # PPO moved them
    for k, v in trained[0.0].items():
        assert torch.equal(v, trained[0.5][k]), k


def test_evaluating_a_checkpoint_acts_with_all_of_its_networks(tmp_path: Path, monkeypatch):
    """otpr-eval's path (restore the policy, then load_acting_networks): IDQL's evaluation
    selects candidates by its critic, so the critic is the checkpoint's and the evaluation is
    the one the run itself measures; a checkpoint of another algorithm is refused."""
    import torch

    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, name="idql")
    trained = Trainer(cfg, tmp_path / "a")
    with torch.no_grad():
        for p in trained.algo.critic.parameters():
            p.add_(torch.randn_like(p))
    ckpt = trained.save()
    measured = trained.evaluate()
    trained.close()
    fresh = Trainer(cfg, tmp_path / "b")
    fresh.restore(ckpt, weights_only=True)  # the policy alone, as a fine-tune starts
    saved = ckpt_io._read_tensors(ckpt / "critic.safetensors")
    assert any(not torch.equal(v, saved[k]) for k, v in fresh.algo.critic.state_dict().items())
    fresh.load_acting_networks(ckpt)
    for k, v in fresh.algo.critic.state_dict().items():
        assert torch.equal(v, saved[k])
    assert fresh.evaluate() == measured
    fresh.close()
    other = Trainer(_cfg(tmp_path), tmp_path / "c")  # algo=otpr
    with pytest.raises(ckpt_io.CheckpointError, match="written by algo=idql"):
        other.load_acting_networks(ckpt)
    other.close()
