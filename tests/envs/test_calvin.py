"""CALVIN without the simulator: install error, the gym wrapper on a fake sim, npz reader."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import envs.calvin as calvin
from envs.calvin import (
    CALVIN_TASKS,
    OBS_DIM,
    CalvinTaskEnv,
    CalvinUnavailableError,
    calvin_available,
    calvin_spec,
    make_calvin_env,
)
from otpr.data import DatasetError, DatasetNotFoundError, read_calvin_episodes

# ------------------------------------------------------------------------------ availability


def test_missing_calvin_env_raises_one_line_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert calvin_available() == (importlib.util.find_spec("calvin_env") is not None)
    monkeypatch.setattr(calvin, "calvin_available", lambda: False)
    with pytest.raises(CalvinUnavailableError) as err:
        make_calvin_env("calvin-open_drawer", seed=0)
    msg = str(err.value)
    assert isinstance(err.value, ImportError) and "\n" not in msg
    assert msg.startswith("CALVIN needs calvin_env, which is not on PyPI")
    assert "git clone --recurse-submodules https://github.com/mees/calvin" in msg
    assert "pip install -e calvin/calvin_env" in msg


def test_spec_and_task_names() -> None:
    assert len(CALVIN_TASKS) == 34  # CALVIN's new_playtable_tasks.yaml
    spec = calvin_spec("calvin-open_drawer")
    assert (spec.obs_dim, spec.action_dim, spec.max_episode_steps) == (39, 7, 360)
    assert spec.extra["subtask"] == "open_drawer" and spec.obs_keys == ("robot_obs", "scene_obs")
    assert calvin_spec("calvin").extra["subtask"] is None
    with pytest.raises(ValueError, match="unknown subtask 'open_door'"):
        calvin_spec("calvin-open_door")


# -------------------------------------------------------------------- the wrapper, fake sim


class FakeSim:
    """PlayTableSimEnv's old-gym API: the drawer (scene_obs[1]) follows the x action."""

    def __init__(self) -> None:
        self.robot = np.arange(15, dtype=np.float64)
        self.scene = np.zeros(24)
        self.actions: list[np.ndarray] = []
        self.resets: list[tuple] = []

    def _obs(self) -> dict:
        frame = np.full((4, 4, 3), len(self.actions), np.uint8)
        return {"robot_obs": self.robot.copy(), "scene_obs": self.scene.copy(),
                "rgb_obs": {"rgb_static": frame}, "depth_obs": {}}  # fmt: skip

    def reset(self, robot_obs=None, scene_obs=None) -> dict:
        self.resets.append((robot_obs, scene_obs))
        if robot_obs is not None:
            self.robot = np.array(robot_obs, dtype=np.float64)
        self.scene = np.zeros(24) if scene_obs is None else np.array(scene_obs, dtype=np.float64)
        return self._obs()

    def get_info(self) -> dict:
        return {"scene_info": {"doors": {"base__drawer": {"current_state": self.scene[1]}}}}

    def step(self, action: np.ndarray):
        self.actions.append(action.copy())
        action[:3] *= 0.025  # the real robot scales the relative action in place (by 0.02)
        self.scene[1] += action[0]
        return self._obs(), 0, False, self.get_info()

    def close(self) -> None:
        pass


class FakeOracle:
    """``Tasks.move_door_rel('base__drawer', 0.12)`` for open_drawer, as CALVIN defines it."""

    def get_task_info_for_set(self, start_info: dict, end_info: dict, task_filter: set) -> set:
        delta = (
            end_info["scene_info"]["doors"]["base__drawer"]["current_state"]
            - start_info["scene_info"]["doors"]["base__drawer"]["current_state"]
        )
        return {"open_drawer"} & task_filter if delta > 0.12 else set()


def test_wrapper_obs_actions_success_and_truncation() -> None:
    sim = FakeSim()
    env = CalvinTaskEnv(sim, "open_drawer", FakeOracle(), max_episode_steps=10)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (OBS_DIM,)
    np.testing.assert_array_equal(obs[:15], np.arange(15))
    assert info == {"success": False, "task_name": "open_drawer"}
    action = np.array([2.0, 0, 0, 0, 0, 0, -0.3], np.float32)
    for _ in range(3):
        obs, r, term, trunc, info = env.step(action)
        # 0.025 per step after clipping x to 1: the drawer passes 0.12 on step 5.
        assert (r, term, trunc, info["success"]) == (0.0, False, False, False)
    np.testing.assert_array_equal(
        action, np.float32([2, 0, 0, 0, 0, 0, -0.3])
    )  # caller's array untouched
    np.testing.assert_array_equal(sim.actions[0], [1.0, 0, 0, 0, 0, 0, -1.0])
    assert obs[15 + 1] == pytest.approx(0.075)
    assert env.render()[0, 0, 0] == 3
    results = [env.step(action)[1:4] for _ in range(2)]
    assert results == [(0.0, False, False), (1.0, True, False)]
    env.step(np.array([0, 0, 0, 0, 0, 0, 0.2]))
    assert sim.actions[-1][-1] == 1.0  # gripper binarised by sign

    # No success: truncated exactly on step max_episode_steps.
    env.reset(seed=0)
    still = np.zeros(7)
    flags = [env.step(still)[2:4] for _ in range(10)]
    assert flags == [(False, False)] * 9 + [(False, True)]
    with pytest.raises(ValueError, match=r"expected shape \(7,\)"):
        env.step(np.zeros(4))


def test_wrapper_start_states() -> None:
    states = np.stack([np.full(OBS_DIM, i, np.float64) for i in range(5)])
    sim = FakeSim()
    env = CalvinTaskEnv(sim, "open_drawer", FakeOracle(), initial_states=states)
    draws = [env.reset(seed=s)[0][0] for s in (3, 3, 4)]
    expect = [np.random.default_rng(s).integers(5) for s in (3, 3, 4)]
    assert draws == expect
    obs, _ = env.reset(options={"robot_obs": np.full(15, 7.0), "scene_obs": np.full(24, 8.0)})
    assert obs[0] == 7.0 and obs[-1] == 8.0
    with pytest.raises(ValueError, match=r"initial_states: expected shape \[K, 39\]"):
        CalvinTaskEnv(sim, "open_drawer", FakeOracle(), initial_states=np.zeros((2, 15)))
    with pytest.raises(ValueError, match="unknown CALVIN subtask"):
        CalvinTaskEnv(sim, "open_door", FakeOracle())


# -------------------------------------------------------------------------------- npz reader


def _step(i: int) -> dict[str, np.ndarray]:
    return {
        "robot_obs": np.full(15, i, np.float64) + np.arange(15) / 100,
        "scene_obs": np.full(24, -i, np.float64),
        "actions": np.full(7, i / 10, np.float64),
        "rel_actions": np.r_[np.full(6, i / 100), 1.0 if i % 2 else -1.0],
        "rgb_static": np.full((6, 6, 3), i, np.uint8),
        "rgb_gripper": np.full((3, 3, 3), i, np.uint8),
    }


def _write_split(root: Path, frames=range(10, 18), drop: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in frames:
        np.savez(root / f"episode_{i:07d}.npz", **_step(i))
    np.save(root / "ep_start_end_ids.npy", np.array([[10, 12], [13, 17]]))
    (root / "lang_annotations").mkdir(exist_ok=True)
    ann = {
        "info": {"indx": [(11, 13), (14, 16)], "episodes": []},
        "language": {"task": ["open_drawer", "turn_on_led"], "ann": ["open it", "led on"]},
    }
    np.save(root / "lang_annotations" / "auto_lang_ann.npy", ann, allow_pickle=True)
    return root


def test_npz_reader_round_trip(tmp_path: Path) -> None:
    root = _write_split(tmp_path / "validation")
    ds = read_calvin_episodes(root, image_keys=["rgb_static"], action_dim=7)
    assert [len(ep) for ep in ds] == [3, 5]
    assert ds.obs_keys == ("robot_obs", "scene_obs") and ds.obs_key_dims == (15, 24)
    for ep, frames in zip(ds, (range(10, 13), range(13, 18))):
        ref = [_step(i) for i in frames]
        np.testing.assert_array_equal(
            ep.obs, np.float32([np.r_[s["robot_obs"], s["scene_obs"]] for s in ref])
        )
        np.testing.assert_array_equal(ep.actions, np.float32([s["rel_actions"] for s in ref]))
        np.testing.assert_array_equal(ep.images["rgb_static"], [s["rgb_static"] for s in ref])
        assert not ep.dones.any() and not ep.rewards.any() and ep.success is None
    assert ds[1].extra["frame_ids"] == (13, 17)

    absolute = read_calvin_episodes(root, action_key="actions", max_episodes=1)
    assert len(absolute) == 1 and absolute[0].images == {}
    np.testing.assert_allclose(absolute[0].actions[:, 0], [1.0, 1.1, 1.2])

    lang = read_calvin_episodes(root, segments="lang")
    assert [ep.extra["task"] for ep in lang] == ["open_drawer", "turn_on_led"]
    assert lang[0].obs[0, 0] == 11 and lang[0].obs[-1, 0] == 13  # crosses play episodes
    assert lang[1].dones.tolist() == [False, False, True] and lang[1].rewards[-1] == 1.0
    led = read_calvin_episodes(root, segments="lang", subtasks=["turn_on_led"])
    assert len(led) == 1 and led[0].extra["instruction"] == "led on" and led[0].success


def _rewrite(root: Path, i: int, **changes) -> None:
    step = _step(i)
    step.update(changes)
    step = {k: v for k, v in step.items() if v is not None}
    np.savez(root / f"episode_{i:07d}.npz", **step)


@pytest.mark.parametrize(
    ("edit", "file", "key", "kwargs"),
    [
        (lambda r: _rewrite(r, 11, rel_actions=None), "episode_0000011.npz", "rel_actions", {}),
        (
            lambda r: _rewrite(r, 14, robot_obs=np.zeros(16)),
            "episode_0000014.npz",
            "robot_obs",
            {},
        ),
        (
            lambda r: _rewrite(r, 17, rel_actions=np.full(7, np.nan)),
            "episode_0000017.npz",
            "rel_actions",
            {},
        ),
        (
            lambda r: _rewrite(r, 10, rgb_static=None),
            "episode_0000010.npz",
            "rgb_static",
            {"image_keys": ["rgb_static"]},
        ),
        (lambda r: (r / "episode_0000016.npz").unlink(), "episode_0000016.npz", "step 16", {}),
        (lambda r: (r / "ep_start_end_ids.npy").unlink(), "ep_start_end_ids.npy", "", {}),
        (
            lambda r: np.save(r / "ep_start_end_ids.npy", np.array([[10, 12], [15, 13]])),
            "ep_start_end_ids.npy",
            "ep_start_end_ids",
            {},
        ),
        (lambda r: None, "validation", "episode_0000010..0000012/actions", {"action_dim": 6}),
    ],
    ids=[
        "missing-key",
        "obs-shape",
        "nan-action",
        "missing-image",
        "missing-step",
        "missing-bounds",
        "bad-bounds",
        "action-dim",
    ],
)
def test_npz_reader_malformed(tmp_path: Path, edit, file, key, kwargs) -> None:
    root = _write_split(tmp_path / "validation")
    edit(root)
    with pytest.raises(DatasetError) as err:
        read_calvin_episodes(root, **kwargs)
    msg = str(err.value)
    assert file in msg and key in msg and "\n" not in msg, msg


def test_npz_reader_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        read_calvin_episodes(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="auto_lang_ann.npy"):
        root = _write_split(tmp_path / "v")
        (root / "lang_annotations" / "auto_lang_ann.npy").unlink()
        read_calvin_episodes(root, segments="lang")
