"""Runs killed with SIGKILL and resumed reproduce the uninterrupted run exactly; a non-finite
loss stops a run and leaves its last checkpoint loadable; checkpoint files never execute code
on load; an unreadable newest checkpoint falls back to the previous one.

The kill points are ``otpr/faults.py``'s (``OTPR_KILL_AT``); runs use debug budgets on the
default Meta-World reach task, with 7 decisions per iteration so that episodes (10 decisions)
are in progress at every checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from otpr import checkpoint as ckpt_io
from otpr.config import apply_debug, from_dict
from otpr.loop import Trainer, run

SETTINGS = [
    "debug=true",
    "progress=false",
    "tensorboard=false",
    "algo.steps_per_iter=7",
    "algo.checkpoint_every=1",
    "algo.eval_every=2",
]
ALGO_SETTINGS = {
    "otpr": ["algo=otpr"],
    # DPPO records its rollout across an iteration's decisions; with retried starts the
    # members' RetryFailedStarts counters are training state too
    "dppo": ["algo=dppo", "algo.retry_failed_starts=1"],
    # SODP carries its target buffer, each member's episode so far and (kl) the frozen
    # reference planner between iterations
    "sodp": ["algo=sodp", "algo.regularizer=kl"],
}
# where each chain of runs is killed, in order; every kill is followed by a resume
KILLS = {
    "otpr": [
        "write:step_000000000000_it00000",  # the pretrained checkpoint half written
        "saved:1",  # right after a checkpoint
        "collect:2:3",  # mid-collection
        "write:*_it00003",  # a checkpoint half written
    ],
    "dppo": ["saved:1", "collect:2:3", "write:*_it00003"],
    "sodp": ["saved:1", "collect:2:3", "write:*_it00003"],
}


def _cli(cwd: Path, run_dir: Path, args: list[str], kill_at: str | None = None):
    env = dict(os.environ)
    env.pop("OTPR_KILL_AT", None)
    if kill_at is not None:
        env["OTPR_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "otpr.cli", *SETTINGS, *args, f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields, which may differ."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(x).items() if not k.startswith("perf/") and k != "wall_time_s"}
        for x in lines
    ]


def _weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = ckpt_io.resolve(run_dir)
    return {p.stem: load_file(str(p)) for p in sorted(ckpt.glob("*.safetensors"))}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["otpr", "dppo", "sodp"])
def test_a_killed_run_resumes_exactly(tmp_path: Path, algo: str) -> None:
    args = ALGO_SETTINGS[algo]
    whole = _cli(tmp_path, tmp_path / "whole", args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = tmp_path / "killed"
    replayed_chunks = 0
    for point in KILLS[algo]:
        out = _cli(tmp_path, killed, args, kill_at=point)
        assert out.returncode == -signal.SIGKILL, (point, out.returncode, out.stderr[-3000:])
        if point.startswith("saved:"):  # the checkpoint just written holds episodes under way
            ckpt = ckpt_io.resolve(killed)
            episodes = json.loads((ckpt / "training_state" / "episodes.json").read_text())
            replayed_chunks = sum(len(m["actions"]) for m in episodes["members"])
    assert replayed_chunks > 0  # a resume re-created episodes in progress, not fresh ones
    out = _cli(tmp_path, killed, args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not list((killed / "checkpoints").glob(".tmp_*"))  # the half-written one is gone

    ours, theirs = _records(killed), _records(tmp_path / "whole")
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"record {k} differs"
    mine, full = _weights(killed), _weights(tmp_path / "whole")
    assert mine.keys() == full.keys() and "policy" in mine
    for name in full:
        for key, value in full[name].items():
            assert torch.equal(mine[name][key], value), f"{name}.{key}"
    assert _summary(killed) == _summary(tmp_path / "whole")
    if algo != "otpr":
        return
    # An unreadable newest checkpoint: the command warns once on stderr naming the file,
    # resumes from the one before, redoes the last iteration and ends as the whole run did.
    newest = ckpt_io.resolve(killed)
    bad = newest / "policy.safetensors"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = _cli(tmp_path, killed, args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count(f"{bad}: not a readable safetensors file") == 1, out.stderr[-3000:]
    assert ckpt_io.resolve(killed).name == newest.name  # written again
    assert _records(killed) == theirs
    assert _summary(killed) == _summary(tmp_path / "whole")


def _summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k != "wall_time_s"}


# ---------------------------------------------------------------------------- in-process runs
def _cfg(**algo):
    cfg = from_dict(
        {
            "task": {
                "name": "reach-v3",
                "env_kwargs": {"reward": "sparse", "terminate_on_success": True},
            },
            "algo": dict({"steps_per_iter": 7, "checkpoint_every": 1, "eval_every": 2}, **algo),
            "debug": True,
            "progress": False,
            "tensorboard": False,
        }
    )
    return apply_debug(cfg)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished debug run (3 iterations, a checkpoint after each); copy before changing."""
    root = tmp_path_factory.mktemp("finished")
    cwd = os.getcwd()
    os.chdir(root)  # demos are cached under ./data
    try:
        run(_cfg(), root / "run")
    finally:
        os.chdir(cwd)
    return root


def _copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished / "run", tmp_path / "run")
    shutil.copytree(finished / "data", tmp_path / "data")
    return tmp_path / "run"


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    from otpr.algos.otpr import OTPR

    monkeypatch.chdir(tmp_path)
    update = OTPR.update

    def poisoned(self, data, iteration):
        out = update(self, data, iteration)
        if iteration == 1:  # the second iteration
            out["critic/q_loss"] = float("nan")
        return out

    monkeypatch.setattr(OTPR, "update", poisoned)
    with pytest.raises(FloatingPointError) as err:
        run(_cfg(), tmp_path / "r")
    msg = str(err.value)
    assert "critic/q_loss=nan" in msg and "iteration 2" in msg, msg
    assert "_it00001, is left as it was" in msg  # the last checkpoint, named
    meta = ckpt_io.read_meta(tmp_path / "r")
    assert meta["iteration"] == 1
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["iteration"] for r in records) == 1  # nothing of the poisoned iteration logged
    monkeypatch.setattr(OTPR, "update", update)
    summary = run(_cfg(), tmp_path / "r")  # it loads and resumes
    assert summary["iterations"] == 3


def test_non_finite_weights_are_never_saved(tmp_path: Path, monkeypatch) -> None:
    from otpr.algos.otpr import OTPR

    monkeypatch.chdir(tmp_path)
    update = OTPR.update

    def poisoned(self, data, iteration):
        out = update(self, data, iteration)  # finite metrics ...
        if iteration == 2:
            with torch.no_grad():
                next(self.critic.parameters()).fill_(float("inf"))  # ... but weights that are not
        return out

    monkeypatch.setattr(OTPR, "update", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite weights at iteration 3: critic\."):
        run(_cfg(), tmp_path / "r")
    assert ckpt_io.read_meta(tmp_path / "r")["iteration"] == 2
    trainer = Trainer(_cfg(), tmp_path / "r")
    try:
        trainer.restore(tmp_path / "r")
        assert all(torch.isfinite(p).all() for p in trainer.algo.critic.parameters())
    finally:
        trainer.close()


class _Payload:
    """A pickle that would create ``path`` when loaded (what a tampered file can do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_file_that_would_run_code_is_refused(
    finished: Path, tmp_path: Path, monkeypatch
) -> None:
    run_dir = _copy(finished, tmp_path)
    monkeypatch.chdir(tmp_path)
    ckpt = ckpt_io.resolve(run_dir)
    marker = tmp_path / "marker"
    target = ckpt / "training_state" / "optimizers.pt"
    states = torch.load(target, weights_only=True)
    states["actor"]["payload"] = _Payload(marker)
    torch.save(states, target)
    with pytest.raises(ckpt_io.CheckpointError, match="optimizers.pt: refused") as err:
        ckpt_io.load_training_state(ckpt)
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # a resume skips it for the previous checkpoint, still without running it
    only = tmp_path / "only"
    shutil.copytree(ckpt, only / "checkpoints" / ckpt.name)
    (only / "checkpoints" / "last").write_text(ckpt.name)
    trainer = Trainer(_cfg(), only)
    try:
        with pytest.raises(ckpt_io.CheckpointError, match="no older readable checkpoint"):
            trainer.restore(only)
    finally:
        trainer.close()
    assert not marker.exists()
    # plain pickles are refused too, wherever a training-state file is read
    (ckpt / "training_state" / "optimizers.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ckpt_io.CheckpointError, match="optimizers.pt"):
        ckpt_io.load_training_state(ckpt)
    assert not marker.exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(max(64, path.stat().st_size)))


CORRUPTIONS = {
    "policy.safetensors": _truncate,
    "critic.safetensors": _garbage,
    "training_state/optimizers.pt": _truncate,
    "training_state/replay.npz": _garbage,
    "training_state/rng.json": lambda p: p.write_text('{"python": [3, [1, 2'),
    "training_state/episodes.json": lambda p: p.unlink(),
    "meta.json": lambda p: p.write_text("not json"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(
    finished: Path, tmp_path: Path, monkeypatch, name: str
) -> None:
    run_dir = _copy(finished, tmp_path)
    monkeypatch.chdir(tmp_path)
    newest = ckpt_io.resolve(run_dir)
    full = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert len(full) == 2 and full[-1] == newest.name  # retention keeps one to fall back to
    CORRUPTIONS[name](newest / name)
    trainer = Trainer(_cfg(), run_dir)
    try:
        with pytest.warns(ckpt_io.CheckpointWarning) as caught:
            trainer.restore(run_dir)
        assert len(caught) == 1
        assert str(newest / name) in str(caught[0].message)
        assert trainer.state.iteration == 2  # the previous checkpoint
    finally:
        trainer.close()
    assert (run_dir / "checkpoints" / "last").read_text() == full[0]
    assert (run_dir / "checkpoints" / f"corrupt_{newest.name}").is_dir()  # kept, aside


def test_metrics_are_cut_back_to_the_checkpoint(tmp_path: Path) -> None:
    from otpr.logger import MetricsLogger

    log = MetricsLogger(tmp_path, tensorboard=False)
    for steps in (0, 0, 10, 20):
        log.log({"env_steps": steps, "x": 1.0}, step=steps)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"env_steps": 30, "x"')  # a kill mid-line
    log.truncate_after(10)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["env_steps"] for x in lines] == [0, 0, 10]
    log.truncate_after(-1)
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    log.close()


def test_rng_states_round_trip_through_json() -> None:
    gens = {"a": torch.Generator().manual_seed(3)}
    torch.randn(3, generator=gens["a"])
    np.random.seed(5)
    np.random.normal()  # a cached gaussian in numpy's legacy state
    state = ckpt_io.rng_state(gens)
    state["loop_numpy"] = np.random.default_rng(9).bit_generator.state
    text = json.dumps(ckpt_io._rng_to_json(state))
    back = ckpt_io._rng_from_json(json.loads(text))
    expect = (np.random.normal(), torch.rand(2), torch.randn(2, generator=gens["a"]))
    first = random.random()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt_io.set_rng_state(back, gens)
    assert np.random.normal() == expect[0]
    torch.rand(2)  # python's draw came after these; replay their order
    torch.randn(2, generator=gens["a"])
    assert random.random() == first
    ckpt_io.set_rng_state(back, gens)
    assert torch.equal(torch.rand(2), expect[1])
    assert torch.equal(torch.randn(2, generator=gens["a"]), expect[2])
    assert back["loop_numpy"] == state["loop_numpy"]


def test_an_episode_that_replays_differently_is_an_error_naming_the_member(
    finished: Path, tmp_path: Path, monkeypatch
) -> None:
    run_dir = _copy(finished, tmp_path)
    monkeypatch.chdir(tmp_path)
    path = ckpt_io.resolve(run_dir) / "training_state" / "episodes.json"
    episodes = json.loads(path.read_text())
    assert all(m["actions"] for m in episodes["members"])  # episodes under way
    episodes["obs"][1][0][0] += 1e-3  # what member 1 was seeing, not what its replay gives
    path.write_text(json.dumps(episodes))
    trainer = Trainer(_cfg(), run_dir)
    try:
        with pytest.raises(ckpt_io.CheckpointError, match="training env member 1: replaying"):
            trainer.restore(run_dir)
    finally:
        trainer.close()


def test_format_2_weights_load_but_its_training_state_is_refused(
    finished: Path, tmp_path: Path, monkeypatch
) -> None:
    run_dir = _copy(finished, tmp_path)
    monkeypatch.chdir(tmp_path)
    for ckpt in (run_dir / "checkpoints").glob("step_*"):
        meta = json.loads((ckpt / "meta.json").read_text())
        (ckpt / "meta.json").write_text(json.dumps(dict(meta, format_version=2)))
    assert ckpt_io.load_policy(run_dir) is not None  # safetensors, unchanged since format 2
    trainer = Trainer(_cfg(), run_dir)
    try:
        with pytest.raises(ckpt_io.CheckpointError) as err:
            trainer.restore(run_dir)
    finally:
        trainer.close()
    assert "format_version: expected 3 to resume, got 2" in str(err.value)
    assert "\n" not in str(err.value)
