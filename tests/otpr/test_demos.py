import json
import warnings

import h5py
import numpy as np
import pytest

from otpr.data import DatasetError, DemoDataset, Episode, read_robomimic_hdf5, write_robomimic_hdf5
from otpr.demos import Quality, demo_transitions, generate_demos, success_by_task

warnings.filterwarnings("ignore")
SPARSE = {"reward": "sparse", "terminate_on_success": True}


def test_metaworld_demos_round_trip_and_are_deterministic(tmp_path) -> None:
    a = generate_demos(
        "reach-v3", 2, "noisy", seed=7, out=tmp_path / "a.hdf5", env_kwargs=SPARSE, progress=False
    )
    b = generate_demos(
        "reach-v3", 2, "noisy", seed=7, out=tmp_path / "b.hdf5", env_kwargs=SPARSE, progress=False
    )
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea.actions, eb.actions)  # deterministic per seed
    back = read_robomimic_hdf5(tmp_path / "a.hdf5")
    assert len(back) == 2 and back.obs_dim == 39 and back.action_dim == 4
    np.testing.assert_array_equal(back[0].obs, a[0].obs)
    with h5py.File(tmp_path / "a.hdf5") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        gen = json.loads(f["data"].attrs["otpr_generation"])
    assert env_args["env_name"] == "reach-v3" and env_args["env_kwargs"]["reward"] == "sparse"
    assert gen["quality"] == "noisy" and gen["seeds"] == [7, 8] and len(gen["success"]) == 2
    assert gen["knobs"]["action_noise"] == 0.3


def test_quality_knobs() -> None:
    assert Quality.preset("expert").action_noise == 0.0
    assert Quality.preset("noisy", action_noise=0.6).action_noise == 0.6
    with pytest.raises(ValueError, match="quality must be one of"):
        Quality.preset("perfect")


def test_noise_lowers_demo_quality() -> None:
    clean = generate_demos("reach-v3", 3, "expert", seed=3, env_kwargs=SPARSE, progress=False)
    noisy = generate_demos("reach-v3", 3, "suboptimal", seed=3, env_kwargs=SPARSE, progress=False)
    assert all(ep.success for ep in clean)
    mean_len = lambda d: np.mean([len(ep) for ep in d])  # noqa: E731
    assert mean_len(noisy) > mean_len(clean)  # noise and detours slow the expert down


def test_dart_executes_the_noisy_action_and_records_the_clean_one() -> None:
    import envs

    noisy = generate_demos("reach-v3", 2, "noisy", seed=5, env_kwargs=SPARSE, progress=False)
    dart = generate_demos("reach-v3", 2, "dart", seed=5, env_kwargs=SPARSE, progress=False)
    for en, ed in zip(noisy, dart):
        np.testing.assert_array_equal(en.obs, ed.obs)  # the same noisy execution
        assert not np.allclose(en.actions, ed.actions)
    # the recorded action is the expert's own (stateless for Meta-World) at each visited state
    env = envs.make_single("reach-v3", 5, **SPARSE)
    expert = envs.make_expert("reach-v3")
    env.reset(seed=5)
    expert.reset(env, np.random.default_rng(5))
    low, high = env.action_space.low, env.action_space.high
    for obs, recorded in zip(dart[0].obs, dart[0].actions):
        np.testing.assert_allclose(recorded, np.clip(expert.act(obs), low, high), atol=1e-6)
    env.close()


@pytest.mark.robosuite
def test_robomimic_demos_keep_the_key_layout(tmp_path) -> None:
    pytest.importorskip("robosuite")
    generate_demos(
        "lift",
        1,
        "expert",
        seed=0,
        out=tmp_path / "lift.hdf5",
        env_kwargs={"terminate_on_success": True},
        progress=False,
    )
    back = read_robomimic_hdf5(tmp_path / "lift.hdf5")
    assert back.obs_keys == ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
    assert back.obs_dim == 19 and back[0].success and back[0].dones[-1]


def test_kitchen_demos_round_trip_with_the_key_layout(tmp_path) -> None:
    """Kitchen's four observation keys are written with their widths and read back as the
    same flat observation (a file holding one 59-wide key under the first name failed to load)."""
    pytest.importorskip("gymnasium_robotics")
    made = generate_demos(
        "kitchen-complete", 1, "expert", seed=0, out=tmp_path / "k.hdf5", progress=False
    )
    back = read_robomimic_hdf5(tmp_path / "k.hdf5")
    assert back.obs_keys == ("robot_qpos", "robot_qvel", "object_qpos", "object_qvel")
    assert back.obs_key_dims == (9, 9, 21, 20)
    with h5py.File(tmp_path / "k.hdf5") as f:
        assert f["data/demo_0/obs/object_qvel"].shape[1] == 20
    np.testing.assert_array_equal(back[0].obs, made[0].obs)


def test_a_key_without_its_own_width_is_refused(tmp_path) -> None:
    ep = Episode(
        obs=np.zeros((3, 5), np.float32),
        actions=np.zeros((3, 2), np.float32),
        rewards=np.zeros(3, np.float32),
        dones=np.zeros(3, bool),
    )
    ds = DemoDataset(episodes=[ep], obs_keys=("a", "b"), obs_key_dims=(5,))
    with pytest.raises(DatasetError, match=r"one width per key of \['a', 'b'\]"):
        write_robomimic_hdf5(tmp_path / "x.hdf5", ds)


def test_demo_transitions_discount_and_terminal() -> None:
    T = 7
    ep = Episode(
        obs=np.arange(T, dtype=np.float32)[:, None],
        actions=np.arange(T, dtype=np.float32)[:, None],
        rewards=np.array([0, 0, 0, 0, 0, 0, 1], np.float32),
        dones=np.array([0, 0, 0, 0, 0, 0, 1], bool),
    )
    tr = demo_transitions(DemoDataset([ep]), obs_horizon=2, horizon=4, act_steps=3, gamma=0.9)
    assert len(tr["obs"]) == 3  # decisions at t = 0, 3, 6
    np.testing.assert_array_equal(tr["obs"][1][:, 0], [2, 3])
    np.testing.assert_array_equal(tr["actions"][1][:, 0], [3, 4, 5, 6])
    np.testing.assert_array_equal(tr["next_obs"][0][:, 0], [2, 3])
    np.testing.assert_allclose(tr["discount"], [0.9**3, 0.9**3, 0.9])
    np.testing.assert_allclose(tr["reward"], [0, 0, 1])
    np.testing.assert_array_equal(tr["terminated"], [0, 0, 1])
    # a time-limit ending without final_obs drops the last chunk instead of guessing s'
    ep.dones[:] = False
    tr = demo_transitions(DemoDataset([ep]), obs_horizon=2, horizon=4, act_steps=3, gamma=0.9)
    assert len(tr["obs"]) == 2 and not tr["terminated"].any()


def test_success_by_task_counts_each_episodes_task() -> None:
    def ep(task: str, success: bool) -> Episode:
        z = np.zeros((2, 1), np.float32)
        return Episode(z, z, np.zeros(2), np.zeros(2, bool), success=success, extra={"task": task})

    data = DemoDataset([ep("b", True), ep("a", False), ep("b", False), ep("b", True)])
    assert success_by_task(data) == {
        "a": {"episodes": 1, "success_rate": 0.0},
        "b": {"episodes": 3, "success_rate": pytest.approx(2 / 3)},
    }
    plain = ep("b", True)
    plain.extra = {}  # a single-task file written before tasks were recorded
    assert list(success_by_task(DemoDataset([plain], env_args={"env_name": "x"}))) == ["x"]


@pytest.mark.slow
def test_mt10_demos_keep_each_episodes_task_out_of_the_observation(tmp_path) -> None:
    """task=mt10: each reset draws a class and that class's shipped expert acts (the expert
    succeeds); the task and success of each episode are stored beside the data, and the training
    windows are the same whatever that metadata says."""
    from envs.metaworld import multi_task_names
    from otpr.data import make_windows

    path = tmp_path / "mt10.hdf5"
    made = generate_demos("mt10", 4, "expert", seed=11, out=path, env_kwargs=SPARSE, progress=False)
    tasks = [ep.extra["task"] for ep in made]
    assert set(tasks) <= set(multi_task_names("mt10")) and len(set(tasks)) > 1
    assert all(ep.success for ep in made)  # the expert of the drawn class, not another's
    back = read_robomimic_hdf5(path)
    assert back.obs_dim == 39 and [ep.extra["task"] for ep in back] == tasks
    assert [ep.success for ep in back] == [True] * 4
    gen = back.metadata["generation"]
    assert gen["episode_task"] == tasks and gen["success_by_task"] == success_by_task(back)
    obs, act = make_windows(back, 2, 12)
    for ep in back:
        ep.extra, ep.success = {"task": "reach-v3"}, False
    obs2, act2 = make_windows(back, 2, 12)
    np.testing.assert_array_equal(obs, obs2)
    np.testing.assert_array_equal(act, act2)
    assert obs.shape[-1] == 39  # no task id column
