"""Videos of evaluation episodes (otpr/video.py): readable mp4 files of the evaluation's own
episodes, named by their outcome, that change no evaluation number; bad settings refused."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from otpr import checkpoint as ckpt_io
from otpr.config import ConfigError, apply_debug, from_dict
from otpr.errors import refusal
from otpr.evaluation import play_episodes
from otpr.video import film_episodes, film_members, video_name

warnings.filterwarnings("ignore")

BIN = Path(sys.executable).parent
SEED = 100  # a seed range where the noisy expert both succeeds and fails in 60 steps
ENV = {
    "obs_history": 1,
    "act_steps": 4,
    "max_episode_steps": 60,
    "reward": "sparse",
    "terminate_on_success": True,
}


def read_mp4(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of an mp4 file (BGR, as OpenCV decodes it) and its frame rate."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def _noisy_expert() -> object:
    """act(obs, generator): Meta-World's reach expert plus noise drawn from the evaluation's
    generator, so that the episodes depend on its stream (as a diffusion policy's do)."""
    from envs.metaworld import MetaWorldExpert

    expert = MetaWorldExpert("reach-v3")

    def act(obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        a = np.stack([expert.act(o[-1]) for o in obs])
        a = np.clip(a + 0.3 * torch.randn(a.shape, generator=generator).numpy(), -1, 1)
        return np.repeat(a[:, None], ENV["act_steps"], 1).astype(np.float32)

    return act


def test_film_members_covers_the_first_episodes() -> None:
    assert film_members(5, 2) == [3, 2]  # episodes 0 2 4 on member 0, 1 3 on member 1
    assert film_members(1, 3) == [1, 0, 0]
    assert film_members(0, 2) == [0, 0]


def test_videos_are_the_evaluations_episodes_and_change_no_number(tmp_path: Path) -> None:
    """Each file is a readable mp4 of one evaluation episode: its place, its outcome in the name,
    one frame per state (steps + 1) of the video size, at the env's control rate; with rendering
    on, the episodes (and so the metrics) are those of the evaluation without it."""
    act = _noisy_expert()
    plain = envs.make("reach-v3", num_envs=2, seed=SEED, **ENV)
    filmed = envs.make(
        "reach-v3", num_envs=2, seed=SEED, record_frames=True, render_mode="rgb_array",
        image_size=32, **ENV,
    )  # fmt: skip
    try:
        want = play_episodes(plain, act, 3, 2, SEED, ENV["act_steps"])
        assert [e.success for e in want[:2]] == [False, True]  # both names are exercised
        paths = film_episodes(filmed, act, 2, 2, SEED, ENV["act_steps"], tmp_path, size=32)
        assert [p.name for p in paths] == ["episode_000_fail.mp4", "episode_001_success.mp4"]
        for path, episode in zip(paths, want, strict=False):
            frames, fps = read_mp4(path)
            assert len(frames) == episode.steps + 1, path.name
            assert {f.shape for f in frames} == {(32, 32, 3)} and fps == 80.0
            assert frames[0].std() > 5.0  # a scene, not an empty buffer
        assert not list(tmp_path.glob(".*"))  # no partial file left
        # rendering (here member 0's first episode) leaves every episode as it was
        filmed.set_attr("film_episodes", [1, 0])
        assert play_episodes(filmed, act, 3, 2, SEED, ENV["act_steps"]) == want
        assert filmed.call("pop_frames")[0]  # it did render
    finally:
        plain.close()
        filmed.close()


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A debug-sized behaviour-cloning run of reach-v3 (one evaluation episode, one member)
    that films its final policy as the ``otpr`` job does."""
    from otpr.loop import run

    root = tmp_path_factory.mktemp("video")
    cfg = from_dict(
        {
            "task": {
                "name": "reach-v3",
                "max_episode_steps": 24,
                "eval_episodes": 1,
                "eval_num_envs": 1,
                "env_kwargs": {"reward": "sparse", "terminate_on_success": True},
            },
            "algo": {"name": "bc"},
            "debug": True,
            "progress": False,
            "tensorboard": False,
            "video_size": 64,
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the generated demos go to root/data
        summary = run(apply_debug(cfg), root / "run", ("pretrain",), video=1)
    return root / "run", summary


def test_the_job_films_its_final_policy_next_to_its_curves(bc_run: tuple[Path, dict]) -> None:
    run_dir, summary = bc_run
    (path,) = run_dir.glob("final_episode_*.mp4")
    assert (run_dir / "curves.png").is_file()
    assert path.name == video_name(0, summary["final_success"] == 1.0, prefix="final_")
    frames, fps = read_mp4(path)
    assert 2 <= len(frames) <= 24 + 1 and {f.shape for f in frames} == {(64, 64, 3)}
    assert fps == 80.0


def test_filming_changes_no_evaluation_and_no_rng(
    bc_run: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluate, film, evaluate: the same numbers, the run's RNGs as they were, and the film's
    outcome is the evaluation's."""
    from otpr.loop import Trainer

    run_dir, summary = bc_run
    monkeypatch.chdir(run_dir.parent)
    cfg = from_dict(ckpt_io.read_config(run_dir))
    trainer = Trainer(cfg, tmp_path / "eval")
    try:
        trainer.restore(run_dir, weights_only=True)
        before = trainer.evaluate()
        rng = ckpt_io.rng_state()
        (path,) = trainer.film(1, tmp_path / "videos")
        after = ckpt_io.rng_state()
        again = trainer.evaluate()
    finally:
        trainer.close()
    assert before == again and before["eval/success"] == summary["final_success"]
    assert path.name == video_name(0, before["eval/success"] == 1.0)
    assert rng["python"] == after["python"] and torch.equal(rng["torch"], after["torch"])
    assert all(np.array_equal(a, b) for a, b in zip(rng["numpy"], after["numpy"], strict=True))


@pytest.mark.slow
def test_otpr_eval_writes_n_videos_and_the_same_numbers(
    bc_run: tuple[Path, dict], tmp_path: Path
) -> None:
    """``otpr-eval checkpoint=<run> video=2``: two files under <run_dir>/videos/, listed in
    eval.json, whose numbers are the run's own evaluation (filming comes after it)."""
    run_dir, summary = bc_run
    out_dir = tmp_path / "eval"
    done = subprocess.run(
        [str(BIN / "otpr-eval"), f"checkpoint={run_dir}", "video=2", "video_size=32",
         "progress=false", f"hydra.run.dir={out_dir}"],
        capture_output=True, text=True, timeout=600, cwd=run_dir.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out_dir / "eval.json").read_text())
    assert result["eval/success"] == summary["final_success"]
    names = sorted(p.name for p in (out_dir / "videos").glob("*.mp4"))
    assert result["videos"] == [f"videos/{n}" for n in names] and len(names) == 2
    assert names[0] == video_name(0, summary["final_success"] == 1.0)
    frames, _ = read_mp4(out_dir / "videos" / names[1])
    assert frames and {f.shape for f in frames} == {(32, 32, 3)}


@pytest.mark.slow
def test_otpr_eval_records_how_it_sampled(bc_run: tuple[Path, dict], tmp_path: Path) -> None:
    """eval.json names its evaluation mode and the sampler as it ran: a noise-free evaluation
    (DDIM eta 0) and a stochastic one (the checkpoint's eta) are told apart by the file."""
    run_dir, _ = bc_run
    recorded = {}
    for det in ("true", "false"):
        out_dir = tmp_path / f"eval_{det}"
        done = subprocess.run(
            [str(BIN / "otpr-eval"), f"checkpoint={run_dir}", f"algo.eval_deterministic={det}",
             "progress=false", f"hydra.run.dir={out_dir}"],
            capture_output=True, text=True, timeout=600, cwd=run_dir.parent,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        recorded[det] = json.loads((out_dir / "eval.json").read_text())
    assert recorded["true"]["eval_deterministic"] is True
    assert recorded["false"]["eval_deterministic"] is False
    sampler, steps, eta = recorded["true"]["eval_settings"]["sampler"]
    assert eta == 0.0 and recorded["false"]["eval_settings"]["sampler"] == [sampler, steps, 1.0]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("video=-1", ("video", "int >= 0", "-1")),
        ("video=abc", ("video", "abc")),
        ("video=1.5", ("video", "1.5")),
        ("video=true", ("video", "True")),
        ("video_size=8", ("video_size", "int >= 16", "8")),
    ],
)
def test_a_bad_video_setting_is_refused_in_one_line_naming_the_key(
    override: str, words: tuple[str, ...]
) -> None:
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from otpr.cli import _to_config

    # a value of another type is refused by Hydra while composing, a bad int by the schema
    with pytest.raises((ConfigError, HydraException)) as info:
        with initialize_config_module("configs", version_base="1.3"):
            _to_config(compose("config", overrides=[override]))
    line = refusal(info.value)
    assert line is not None and "\n" not in line and line.startswith(override.split("=")[0])
    for word in words:
        assert word in line, (word, line)


def test_otpr_eval_films_only_when_asked() -> None:
    """The checkpoint's own ``video`` (its run's) is not otpr-eval's: it films when given."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from otpr.cli import eval_config

    with initialize_config_module("configs", version_base="1.3"):
        trained = OmegaConf.to_object(compose("config", overrides=["video=3"]))
        given = OmegaConf.to_object(compose("config", overrides=["video=2", "video_size=64"]))
    assert eval_config(copy.deepcopy(trained), given, []).video == 0
    cfg = eval_config(trained, given, ["video", "video_size"])
    assert (cfg.video, cfg.video_size) == (2, 64)
