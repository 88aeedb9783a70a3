"""Franka Kitchen task sets (envs/kitchen.py) and the scripted kitchen expert."""

import numpy as np
import pytest

from envs.experts.kitchen import KitchenExpert, _compose, _inverse, _rotvec, make_kitchen_expert
from envs.kitchen import KITCHEN_TASKS, OBS_SLICES, make_kitchen_env

try:
    import gymnasium_robotics  # noqa: F401

    HAVE_ROBOTICS = True
except ImportError:
    HAVE_ROBOTICS = False

needs_robotics = pytest.mark.skipif(
    not HAVE_ROBOTICS, reason="gymnasium_robotics is not importable (otpr[kitchen])"
)
TASKS = tuple(KITCHEN_TASKS)

# qpos addresses of the goal joints in FrankaKitchen-v1 (OBS_ELEMENT_INDICES)
MICROWAVE, SLIDE, LIGHT, KETTLE = 22, 19, (17, 18), slice(23, 30)


def test_task_sets_follow_d4rl() -> None:
    # d4rl/kitchen/__init__.py: complete and partial both use KitchenMicrowaveKettleLightSliderV0,
    # mixed uses KitchenMicrowaveKettleBottomBurnerLightV0.
    mkls = ("microwave", "kettle", "light switch", "slide cabinet")
    assert KITCHEN_TASKS["kitchen-complete"].extra["subtasks"] == mkls
    assert KITCHEN_TASKS["kitchen-partial"].extra["subtasks"] == mkls
    assert KITCHEN_TASKS["kitchen-mixed"].extra["subtasks"] == (
        "microwave",
        "kettle",
        "bottom burner",
        "light switch",
    )
    datasets = {t: s.extra["d4rl_dataset"] for t, s in KITCHEN_TASKS.items()}
    assert len(set(datasets.values())) == 3
    for spec in KITCHEN_TASKS.values():
        assert (spec.obs_dim, spec.action_dim, spec.max_episode_steps) == (59, 9, 280)
    bounds = sorted(OBS_SLICES.values())
    assert bounds[0][0] == 0 and bounds[-1][1] == 59
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_pose_helpers_exact() -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(_rotvec(rz), [0.0, 0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(_rotvec(rz.T), [0.0, 0.0, -0.3], atol=1e-12)
    pose = (np.array([0.1, -0.2, 0.3]), rz)
    p, r = _compose(_inverse(pose), pose)
    np.testing.assert_allclose(p, 0.0, atol=1e-12)
    np.testing.assert_allclose(r, np.eye(3), atol=1e-12)


def test_bad_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="kitchen-complete"):
        make_kitchen_env("kitchen-everything", 0)
    with pytest.raises(ValueError, match="kitchen-complete"):
        make_kitchen_expert("kitchen-everything")
    with pytest.raises(ValueError, match="hinge cabinet"):
        KitchenExpert(["microwave", "hinge cabinet"])
    with pytest.raises(ValueError, match="jitter"):
        KitchenExpert(["microwave"], jitter=-0.1)


@pytest.mark.kitchen
@needs_robotics
@pytest.mark.parametrize("task", TASKS)
def test_env_contract(task: str) -> None:
    env = make_kitchen_env(task, seed=0)
    obs, info = env.reset()
    assert obs.shape == (59,) and obs.dtype == np.float32
    assert env.observation_space.shape == (59,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (9,)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    assert info["success"] is False and info["num_subtasks"] == 0
    obs, reward, terminated, truncated, info = env.step(np.zeros(9, dtype=np.float32))
    assert obs.shape == (59,) and obs.dtype == np.float32
    assert reward == 0.0 and not terminated and not truncated
    assert info["success"] is False and info["num_subtasks"] == 0
    # The layout: robot qpos (noise amplitude 1e-3) and the kettle position (object noise).
    qpos = env.data.qpos
    np.testing.assert_allclose(obs[0:9], qpos[0:9], atol=1.5e-3)
    np.testing.assert_allclose(obs[18:39], qpos[9:30], atol=1e-3)
    np.testing.assert_allclose(obs[32:35], [-0.269, 0.35, 1.619], atol=5e-3)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7))
    env.close()


@pytest.mark.kitchen
@needs_robotics
def test_truncated_at_limit() -> None:
    env = make_kitchen_env("kitchen-complete", seed=0, max_episode_steps=3)
    env.reset()
    flags = [env.step(np.zeros(9))[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.reset()
    assert env.step(np.zeros(9))[3] is False  # the counter restarts on reset
    env.close()


@pytest.mark.kitchen
@needs_robotics
def test_seeding_reproducible() -> None:
    def rollout(env, seed: int) -> np.ndarray:
        obs, _ = env.reset(seed=seed)
        acts = np.random.default_rng(123).uniform(-1, 1, (15, 9))
        return np.stack([obs] + [env.step(a)[0] for a in acts])

    a, b = make_kitchen_env("kitchen-mixed", seed=0), make_kitchen_env("kitchen-mixed", seed=99)
    first = rollout(a, 7)
    np.testing.assert_array_equal(first, rollout(b, 7))  # another env, same reset seed
    np.testing.assert_array_equal(first, rollout(a, 7))  # the same env again
    assert not np.array_equal(first, rollout(a, 8))  # the observation noise depends on the seed
    # the first reset without a seed uses the factory's seed
    c = make_kitchen_env("kitchen-mixed", seed=7)
    np.testing.assert_array_equal(c.reset()[0], first[0])
    for env in (a, b, c):
        env.close()


@pytest.mark.kitchen
@needs_robotics
def test_reward_counts_each_subtask_once() -> None:
    env = make_kitchen_env("kitchen-complete", seed=0)
    env.reset()
    qpos = env.data.qpos
    qpos[MICROWAVE] = -0.75  # the goal value of D4RL
    _, reward, terminated, _, info = env.step(np.zeros(9))
    assert reward == 1.0 and not terminated
    assert info["num_subtasks"] == 1 and info["step_subtasks"] == ("microwave",)
    assert info["num_subtasks_now"] == 1 and info["success"] is False
    qpos[MICROWAVE] = 0.0  # undone: D4RL still counts it, the simultaneous count does not
    _, reward, _, _, info = env.step(np.zeros(9))
    assert reward == 0.0 and info["num_subtasks"] == 1 and info["num_subtasks_now"] == 0
    qpos[MICROWAVE] = -0.75
    qpos[SLIDE] = 0.37
    qpos[list(LIGHT)] = (-0.69, -0.05)
    qpos[KETTLE] = (-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06)
    _, reward, terminated, truncated, info = env.step(np.zeros(9))
    assert reward == 3.0  # microwave is not paid twice
    assert info["success"] is True and info["num_subtasks"] == 4 and terminated and not truncated
    env.close()


@pytest.mark.kitchen
@needs_robotics
def test_expert_opens_the_microwave() -> None:
    env = make_kitchen_env("kitchen-complete", seed=0)
    expert = make_kitchen_expert("kitchen-complete")
    obs, info = env.reset(seed=0)
    expert.reset(env, np.random.default_rng(0))
    for _ in range(80):
        action = expert.act(obs)
        assert action.shape == (9,) and np.all(np.abs(action) <= 1.0)
        obs, _, _, _, info = env.step(action)
        if info["num_subtasks"]:
            break
    assert info["completed_subtasks"] == ("microwave",)
    assert env.data.qpos[MICROWAVE] < -0.45  # within 0.3 of the goal -0.75
    env.close()


@pytest.mark.kitchen
@pytest.mark.slow
@needs_robotics
def test_expert_solves_kitchen_complete() -> None:
    env = make_kitchen_env("kitchen-complete", seed=3)
    expert = make_kitchen_expert("kitchen-complete", jitter=0.005)
    obs, info = env.reset(seed=3)
    expert.reset(env, np.random.default_rng(3))
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
    assert info["success"] and terminated
    assert set(info["completed_subtasks"]) == set(
        KITCHEN_TASKS["kitchen-complete"].extra["subtasks"]
    )
    env.close()


@pytest.mark.kitchen
@needs_robotics
def test_pixels_render() -> None:
    env = make_kitchen_env("kitchen-complete", seed=0, pixels=True, image_size=32)
    env.reset()
    frame = env.render()
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    assert frame.std() > 5.0  # a scene, not a blank buffer
    assert not env.model.light_castshadow.any() and not env.model.mat_reflectance.any()
    env.close()
    with pytest.raises(RuntimeError, match="pixels=True"):
        make_kitchen_env("kitchen-complete", seed=0).render()


@pytest.mark.kitchen
@needs_robotics
def test_render_mode_renders_without_pixels() -> None:
    env = make_kitchen_env("kitchen-complete", seed=0, render_mode="rgb_array", image_size=32)
    env.reset()
    frame = env.render()
    assert frame.shape == (32, 32, 3) and frame.std() > 5.0
    assert not env.model.light_castshadow.any()  # the cheap scene, as with pixels=True
    env.close()
