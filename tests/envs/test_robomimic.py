"""Robomimic tasks on robosuite (envs/robomimic.py) and their waypoint experts."""

import numpy as np
import pytest

import envs
from envs.experts.robomimic import (
    TURN_RANGE,
    SquareExpert,
    _down_rotation,
    _rotvec,
    _wrap,
    make_robomimic_expert,
)
from envs.robomimic import ROBOMIMIC_TASKS, make_robomimic_env

try:
    import robosuite  # noqa: F401

    HAVE_ROBOSUITE = True
except ImportError:
    HAVE_ROBOSUITE = False

needs_robosuite = [
    pytest.mark.robosuite,
    pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])"),
]
TASKS = ("lift", "can", "square")
OBJECT_POS_KEY = {"lift": "cube_pos", "can": "Can_pos", "square": "SquareNut_pos"}


def _object_body(env, task: str) -> int:
    sim_env = env.sim_env
    if task == "lift":
        return sim_env.cube_body_id
    return sim_env.obj_body_id["Can" if task == "can" else "SquareNut"]


def _slice(task: str, key: str) -> slice:
    start, stop = ROBOMIMIC_TASKS[task].extra["obs_slices"][key]
    return slice(start, stop)


# -- specs and pure helpers (no simulator) ---------------------------------------------------
def test_task_specs_layout() -> None:
    expected_dims = {"lift": 19, "can": 23, "square": 23}
    for task, spec in ROBOMIMIC_TASKS.items():
        assert spec.obs_dim == expected_dims[task] and spec.action_dim == 7
        assert spec.obs_keys == (
            "object",
            "robot0_eef_pos",
            "robot0_eef_quat",
            "robot0_gripper_qpos",
        )
        dims = spec.extra["obs_key_dims"]
        assert sum(dims.values()) == spec.obs_dim
        assert sum(spec.extra["object_keys"].values()) == dims["object"]
        assert spec.extra["obs_slices"]["robot0_gripper_qpos"] == (spec.obs_dim - 2, spec.obs_dim)
    assert [ROBOMIMIC_TASKS[t].max_episode_steps for t in TASKS] == [200, 300, 400]


def test_rotation_helpers_closed_forms() -> None:
    for yaw in (-2.0, 0.3, 1.5):
        r = _down_rotation(yaw)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(r), 1.0) and np.allclose(r[:, 2], [0, 0, -1])
        # turning a down-pointing frame by d about world z is the rotation vector (0, 0, d)
        d = 0.7
        np.testing.assert_allclose(_rotvec(_down_rotation(yaw + d) @ r.T), [0, 0, d], atol=1e-9)
    assert _wrap(3 * np.pi / 2) == pytest.approx(-np.pi / 2)


def test_square_turn_plan_grasps_handle_and_squares_nut() -> None:
    expert = SquareExpert()
    # the reset yaw of the closing axis is pi/2 up to the robot's joint noise (~0.05 rad)
    for home in (np.pi / 2 - 0.15, np.pi / 2, np.pi / 2 + 0.15):
        expert._home_yaw = home
        for nut_yaw in np.linspace(-np.pi, np.pi, 73):
            grasp, place = expert._plan_turns(nut_yaw)
            assert TURN_RANGE[0] <= grasp <= TURN_RANGE[1]
            assert TURN_RANGE[0] <= place <= TURN_RANGE[1]
            # fingers close across the handle: closing axis = nut's local y (mod pi)
            assert abs(_wrap(2 * (home + grasp - nut_yaw - np.pi / 2))) < 1e-9
            # the nut turns with the gripper and ends with its handle at -x (towards the robot)
            assert abs(_wrap(nut_yaw + place - grasp - np.pi)) < 1e-9
    # a reset yaw far off pi/2 falls back to a sideways handle, still square to the peg
    expert._home_yaw = np.pi / 2 - 0.5
    grasp, place = expert._plan_turns(0.0)
    assert (
        abs(_wrap(place - grasp - np.pi / 2)) < 1e-9 or abs(_wrap(place - grasp + np.pi / 2)) < 1e-9
    )


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown robomimic task"):
        make_robomimic_env("stack", seed=0)
    with pytest.raises(ValueError, match="no robomimic expert"):
        make_robomimic_expert("transport")
    with pytest.raises(ValueError, match="jitter"):
        make_robomimic_expert("lift", jitter=-0.1)


# -- simulator tests -------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_env_layout_seeding_and_time_limit(task: str) -> None:
    env = envs.make_single(task, seed=0, max_episode_steps=3)
    spec = ROBOMIMIC_TASKS[task]
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (7,)
    np.testing.assert_array_equal(env.action_space.low, -np.ones(7))
    np.testing.assert_array_equal(env.action_space.high, np.ones(7))

    obs, info = env.reset(seed=5)
    assert obs.dtype == np.float32 and obs.shape == (spec.obs_dim,)
    assert info["success"] is False
    sim = env.sim_env.sim
    site = env.sim_env.robots[0].eef_site_id["right"]
    np.testing.assert_allclose(
        obs[_slice(task, "robot0_eef_pos")], sim.data.site_xpos[site], atol=1e-6
    )
    body = _object_body(env, task)
    np.testing.assert_allclose(
        obs[_slice(task, OBJECT_POS_KEY[task])], sim.data.body_xpos[body], atol=1e-6
    )
    # the relative sensors are filled on reset (robosuite's first pass leaves them at 0)
    rel = (
        "gripper_to_cube_pos"
        if task == "lift"
        else OBJECT_POS_KEY[task][:-4] + "_to_robot0_eef_pos"
    )
    assert np.linalg.norm(obs[_slice(task, rel)]) > 0.05

    rng = np.random.default_rng(0)
    flags = []
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7))
        assert isinstance(info["success"], bool) and reward == float(info["success"])
        flags.append((terminated, truncated))
    assert flags == [(False, False), (False, False), (False, True)]
    # observations are the state at the end of the step (not robosuite's first-substep sample)
    np.testing.assert_allclose(
        obs[_slice(task, "robot0_eef_pos")], sim.data.site_xpos[site], atol=1e-6
    )
    np.testing.assert_allclose(
        obs[_slice(task, "robot0_gripper_qpos")],
        sim.data.qpos[env.sim_env.robots[0]._ref_gripper_joint_pos_indexes["right"]],
        atol=1e-6,
    )

    # same seed -> same initial state after any history (soft reset); other seed -> other state
    first, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first, env.reset(seed=5)[0])
    other, _ = env.reset(seed=6)
    pose = np.r_[
        _slice(task, OBJECT_POS_KEY[task]), _slice(task, OBJECT_POS_KEY[task][:-3] + "quat")
    ]
    assert np.abs(first[pose] - other[pose]).max() > 1e-2  # placement xy and yaw are random
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    env.close()


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_seeded_episode_replays_exactly() -> None:
    """A soft-reset env that has run a full grasp-and-place episode (contacts, a closed
    gripper, the can in its bin) replays a seeded episode bit for bit like a fresh env."""

    def expert_episode(env, seed: int, steps: int) -> tuple[np.ndarray, bool]:
        obs, _ = env.reset(seed=seed)
        expert = make_robomimic_expert("can")
        expert.reset(env, np.random.default_rng(0))
        traj, success = [obs], False
        for _ in range(steps):
            obs, _, _, _, info = env.step(expert.act(obs))
            traj.append(obs)
            success = success or info["success"]
        return np.stack(traj), success

    env = make_robomimic_env("can", seed=0)
    other = make_robomimic_env("can", seed=123)  # construction seed does not matter for can
    _, placed = expert_episode(env, seed=5, steps=250)
    assert placed  # the episode before the replay did reach the state a soft reset must undo
    replay, _ = expert_episode(env, seed=9, steps=60)
    fresh, _ = expert_episode(other, seed=9, steps=60)
    np.testing.assert_array_equal(replay, fresh)
    env.close()
    other.close()


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_success_flag_reward_and_terminate_on_success() -> None:
    env = envs.make_single("lift", seed=0, terminate_on_success=True)
    env.reset(seed=0)
    sim_env = env.sim_env
    joint = sim_env.cube.joints[0]
    qpos = sim_env.sim.data.get_joint_qpos(joint).copy()
    qpos[2] += 0.15  # cube 15 cm up: Lift's success is the cube 4 cm above the table
    sim_env.sim.data.set_joint_qpos(joint, qpos)
    sim_env.sim.forward()
    _, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert info["success"] is True and reward == 1.0 and terminated and not truncated
    env.close()


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_pixels_agentview_right_side_up() -> None:
    env = make_robomimic_env("lift", seed=0, pixels=True, image_size=32)
    _, info = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    assert frame is info["agentview"]
    # agentview looks at the robot over the table: the robot (dark) is at the top of an upright
    # image, the bright table fills the bottom rows
    assert frame[:4].mean() < frame[-4:].mean() - 40
    env.close()
    with pytest.raises(RuntimeError, match="pixels=True"):
        make_robomimic_env("lift", seed=0).render()


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
@pytest.mark.parametrize("hard_reset", [False, True])
def test_frames_are_drawn_without_reflections_unless_asked(hard_reset: bool) -> None:
    """By default a frame is drawn with reflections and multisampling off (the same scene, a
    little flatter; robosuite's lights cast no shadows); ``fast_render=False`` keeps its look.
    A hard reset's new model is drawn the same way."""
    fast = make_robomimic_env("lift", seed=0, pixels=True, image_size=32, hard_reset=hard_reset)
    full = make_robomimic_env("lift", seed=0, pixels=True, image_size=32, fast_render=False)
    for _ in range(2):  # the second reset of a hard-reset env draws a rebuilt model
        _, info_fast = fast.reset(seed=3)
    _, info_full = full.reset(seed=3)
    assert not fast.sim_env.sim.model.mat_reflectance.any()
    assert fast.sim_env.sim.model.vis.quality.offsamples == 0
    assert full.sim_env.sim.model.mat_reflectance.any()  # robosuite's reflective floor/table
    assert full.sim_env.sim.model.vis.quality.offsamples > 0
    diff = np.abs(info_fast["agentview"].astype(int) - info_full["agentview"].astype(int))
    assert 0 < diff.mean() < 8  # shading differs, the scene does not
    fast.close()
    full.close()


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_render_mode_draws_the_agentview_on_demand() -> None:
    """``render_mode="rgb_array"`` renders nothing per step (a video films only its frames),
    and ``render()`` draws the frame that ``pixels=True`` renders every step; the episode is the
    same."""
    lazy = make_robomimic_env("lift", seed=0, render_mode="rgb_array", image_size=32)
    eager = make_robomimic_env("lift", seed=0, pixels=True, image_size=32)
    obs_lazy, _ = lazy.reset(seed=3)
    obs_eager, _ = eager.reset(seed=3)
    action = np.array([0.5, 0.0, -0.3, 0.0, 0.0, 0.0, -1.0])
    for _ in range(2):
        obs_lazy, _, _, _, info_lazy = lazy.step(action)
        obs_eager, _, _, _, info_eager = eager.step(action)
    assert "agentview" not in info_lazy
    np.testing.assert_array_equal(obs_lazy, obs_eager)
    frame = lazy.render()
    assert frame is lazy.render()  # drawn once per state
    np.testing.assert_array_equal(frame, info_eager["agentview"])
    lazy.close()
    eager.close()


def _run_expert(task: str, seeds: list[int], jitter: float = 0.0) -> list[bool]:
    env = make_robomimic_env(task, seed=0)
    expert = envs.make_expert(task, jitter=jitter)
    rng = np.random.default_rng(0)
    outcomes = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        expert.reset(env, rng)
        success = False
        while not success:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            success = info["success"]
            if terminated or truncated:
                break
        outcomes.append(success)
    env.close()
    return outcomes


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_lift_expert_succeeds() -> None:
    assert sum(_run_expert("lift", [100, 101, 102])) >= 2


@pytest.mark.slow
@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
@pytest.mark.parametrize("task", ["can", "square"])
def test_can_and_square_experts_succeed(task: str) -> None:
    assert all(_run_expert(task, [200]))


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_can_failure_classes_read_the_goal_where_success_does() -> None:
    """otpr.failures: the can's quarter of the goal bin is where robosuite's success
    holds (gripper away), another quarter is in the bin but not the goal; and each class."""
    from otpr.failures import CLASSES, classify, goal_regions

    env = envs.make_single("can", seed=0)
    env.reset(seed=0)
    sim_env = env.sim_env
    in_quarter, in_goal_bin = goal_regions(sim_env)
    can = next(o for o in sim_env.objects if o.name == "Can")
    bin_x, bin_y, bin_z = sim_env.bin2_pos
    quarter_x, quarter_y = sim_env.bin_size[0] / 4, sim_env.bin_size[1] / 4
    placements = {  # (x, y) -> the can's quarter?
        (bin_x + quarter_x, bin_y + quarter_y): True,
        (bin_x - quarter_x, bin_y + quarter_y): False,
        (bin_x + quarter_x, bin_y - quarter_y): False,
    }
    for (x, y), own in placements.items():
        qpos = sim_env.sim.data.get_joint_qpos(can.joints[0]).copy()
        qpos[:3] = (x, y, bin_z + 0.06)
        sim_env.sim.data.set_joint_qpos(can.joints[0], qpos)
        sim_env.sim.forward()
        pos = sim_env.sim.data.body_xpos[sim_env.obj_body_id["Can"]].copy()
        assert bool(sim_env._check_success()) is own
        assert in_quarter(pos) is own and in_goal_bin(pos)
    assert not in_goal_bin(np.array([0.1, -0.25, 0.86]))  # the start bin
    env.close()
    cases = {  # lift, tilt, final gap to the gripper, in its quarter, in the goal bin
        CLASSES[0]: (0.01, 80.0, 0.3, False, False),
        CLASSES[1]: (0.01, 5.0, 0.01, False, False),
        CLASSES[2]: (0.15, 5.0, 0.01, True, True),
        CLASSES[3]: (0.15, 5.0, 0.01, False, True),
        CLASSES[4]: (0.15, 5.0, 0.01, False, False),
        CLASSES[5]: (0.15, 5.0, 0.4, False, False),
    }
    for name, args in cases.items():
        assert classify(*args) == name


@pytest.mark.robosuite
@pytest.mark.skipif(not HAVE_ROBOSUITE, reason="robosuite is not importable (otpr[robomimic])")
def test_snapshot_restores_the_episode_exactly() -> None:
    """From a snapshot taken mid-grasp (gripper closing, contacts), the same actions give the
    same observations, rewards, shaped rewards and time limit, and a different probe in between
    leaves no trace: the controllers' goals and the gripper's ramp are restored too."""
    env = make_robomimic_env("lift", seed=0, max_episode_steps=60)
    obs, _ = env.reset(seed=4)
    expert = make_robomimic_expert("lift")
    expert.reset(env, np.random.default_rng(0))
    for _ in range(23):  # the gripper has started to close on the cube
        obs, *_ = env.step(expert.act(obs))
    snap = env.snapshot()
    actions = np.random.default_rng(1).uniform(-1, 1, (37, 7))

    def play() -> list:
        out = []
        for a in actions:
            o, reward, term, trunc, info = env.step(a)
            out.append((o, reward, env.last_shaped_reward, term, trunc, info["success"]))
        return out

    first = play()
    env.restore(snap)
    for _ in range(5):
        env.step(-actions[1])  # a probe that moves the arm and flips the gripper
    env.restore(snap)
    second = play()
    assert first[-1][4] and not first[-2][4]  # the time limit still falls at step 60
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    assert len({x[2] for x in first}) > 1  # the shaped reward moves with the actions
    env.close()
