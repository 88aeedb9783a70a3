"""Offscreen rendering (envs/render.py) and the frame recorder (envs.wrappers.RecordFrames)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import render
from envs.render import RenderError, check_gl, choose_gl, render_failure
from envs.wrappers import ChunkedEnv, RecordFrames


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """What each backend's probe answers (None: it renders); MUJOCO_GL unset, restored after."""
    answers: dict[str, str | None] = {}
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(render, "_probe", lambda backend: answers.get(backend, "not tried"))
    return answers


def test_unset_mujoco_gl_becomes_egl_else_osmesa(probes: dict, monkeypatch) -> None:
    import os

    probes.update(egl=None, osmesa=None)
    assert choose_gl() == "egl" and os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.delenv("MUJOCO_GL")
    probes.update(egl="EGLError: no display")
    assert choose_gl() == "osmesa" and os.environ["MUJOCO_GL"] == "osmesa"


def test_no_backend_is_one_line_naming_mujoco_gl(probes: dict) -> None:
    probes.update(egl="EGLError: no display", osmesa="ImportError: libOSMesa.so.8")
    with pytest.raises(RenderError) as info:
        choose_gl()
    line = str(info.value)
    assert "\n" not in line and line.startswith("MUJOCO_GL:") and "video=0" in line
    assert "libOSMesa.so.8" in line and "no display" in line


def test_a_set_backend_is_kept_and_checked(probes: dict, monkeypatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    assert choose_gl() == "glfw"  # kept as set, untried
    probes.update(glfw="GLFWError: X11: The DISPLAY environment variable is missing")
    with pytest.raises(RenderError, match=r"^MUJOCO_GL=glfw: cannot render offscreen .*DISPLAY"):
        check_gl()
    probes.update(glfw=None)
    assert check_gl() == "glfw"


def test_a_render_failure_names_the_setting(monkeypatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "egl")
    err = render_failure(RuntimeError("eglInitialize failed\n  more detail"))
    line = str(err)
    assert "\n" not in line and line.startswith("MUJOCO_GL=egl: rendering failed (RuntimeError")
    assert "MUJOCO_GL=osmesa" in line and "video=0" in line


class Painted(gym.Env):
    """obs = step index; each frame is filled with the step index; time limit 3."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self) -> None:
        self.t, self.renders = 0, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 0.0, False, self.t >= 3, {"success": False}

    def render(self) -> np.ndarray:
        self.renders += 1
        return np.full((4, 4, 3), self.t, np.uint8)


def test_record_frames_films_the_first_episodes_only() -> None:
    raw = Painted()
    env = ChunkedEnv(RecordFrames(raw, film_episodes=2), obs_history=1, act_steps=2)
    rec = env.env
    env.reset(seed=0)
    for _ in range(2):  # episode 0: steps 1-2, then 3 (the limit)
        env.step(np.zeros((2, 1), np.float32))
    frames = rec.pop_frames()
    assert [(e, int(f[0, 0, 0])) for e, f in frames] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    for _ in range(2):  # an autoreset (no seed) starts episode 1, then episode 2 is not filmed
        env.reset()
        env.step(np.zeros((2, 1), np.float32))
        env.step(np.zeros((2, 1), np.float32))
    assert [e for e, _ in rec.pop_frames()] == [1] * 4 and rec.pop_frames() == []
    assert raw.renders == 8  # episode 2 rendered nothing
    env.reset(seed=5)  # a seeded reset starts the count over
    assert [e for e, _ in rec.pop_frames()] == [0]


def test_vector_env_members_film_their_own_episodes() -> None:
    """In a SAME_STEP vector env, the step that ends an episode also renders the next one's
    first frame: the frames carry their episode."""
    venv = gym.vector.SyncVectorEnv(
        [lambda: ChunkedEnv(RecordFrames(Painted()), 1, 3) for _ in range(2)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    venv.set_attr("film_episodes", [2, 1])
    venv.reset(seed=0)
    venv.step(np.zeros((2, 3, 1), np.float32))  # every member's episode 0 ends
    member0, member1 = venv.call("pop_frames")
    assert [e for e, _ in member0] == [0, 0, 0, 0, 1] and [e for e, _ in member1] == [0] * 4
    venv.close()


def test_make_puts_the_recorder_under_the_chunks() -> None:
    venv = envs.make("reach-v3", num_envs=1, seed=0, act_steps=2, record_frames=True)
    member = venv.envs[0]
    assert isinstance(member, ChunkedEnv) and isinstance(member.env, RecordFrames)
    assert venv.call("pop_frames") == ([],)  # films nothing until asked
    venv.close()
