import warnings

import numpy as np
import pytest

import envs

warnings.filterwarnings("ignore")


def test_reach_layout_seeding_and_success_flag() -> None:
    env = envs.make_single("reach-v3", seed=3, max_episode_steps=20)
    assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
    obs1, _ = env.reset(seed=11)
    obs2, _ = env.reset(seed=11)
    obs3, _ = env.reset(seed=12)
    np.testing.assert_array_equal(obs1, obs2)
    assert not np.allclose(obs1[36:39], obs3[36:39]) or not np.allclose(obs1, obs3)
    # hand position slice is the simulator's end effector
    np.testing.assert_allclose(obs3[:3], env.sim_env.get_endeff_pos(), atol=1e-5)
    for step in range(20):  # noqa: B007
        obs, reward, term, trunc, info = env.step(np.zeros(4, np.float32))
        assert isinstance(info["success"], bool)
    assert trunc and not term and step == 19


def test_scripted_expert_succeeds_and_sparse_reward_terminates() -> None:
    env = envs.make_single(
        "reach-v3", seed=0, max_episode_steps=150, reward="sparse", terminate_on_success=True
    )
    expert = envs.make_expert("reach-v3")
    obs, _ = env.reset(seed=5)
    expert.reset(env, np.random.default_rng(0))
    for _ in range(150):
        obs, reward, term, trunc, info = env.step(expert.act(obs))
        if term or trunc:
            break
    assert term and info["success"] and reward == 1.0


def test_dense_reward_with_termination_is_refused() -> None:
    with pytest.raises(ValueError, match="terminate_on_success"):
        envs.make_single("reach-v3", seed=0, terminate_on_success=True)


def test_unknown_task_names_the_options() -> None:
    with pytest.raises(ValueError, match="unknown task 'reacher'"):
        envs.suite_of("reacher")
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        envs.make_single("nothing-v3", seed=0)


@pytest.mark.slow
def test_mt10_draws_several_task_classes() -> None:
    env = envs.make_single("mt10", seed=0, max_episode_steps=5, reward="sparse", one_hot=True)
    names = set()
    for s in range(12):
        obs, info = env.reset(seed=s)
        names.add(info["task_name"])
        assert obs.shape == (49,) and obs[39:].sum() == 1.0
    assert len(names) >= 4


@pytest.mark.parametrize("task", ["reach-v3", "pick-place-v3"])
def test_snapshot_restores_the_episode_exactly(task: str) -> None:
    """From a snapshot, the same actions give the same observations, rewards, shaped rewards,
    success flags and time limit bit for bit, and a different probe in between leaves no trace
    (the restore keeps the solver's warm start, which contact-rich pick-place depends on)."""
    env = envs.make_single(task, seed=3, max_episode_steps=12, reward="sparse")
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(4):
        env.step(rng.uniform(-1, 1, 4))
    snap = env.snapshot()
    actions = rng.uniform(-1, 1, (8, 4))

    def play() -> list:
        out = []
        for a in actions:
            obs, reward, term, trunc, info = env.step(a)
            out.append((obs, reward, env.last_shaped_reward, term, trunc, info["success"]))
            if term or trunc:
                break
        return out

    first = play()
    env.restore(snap)
    env.step(-actions[0])  # a probe of another action
    env.restore(snap)
    second = play()
    assert len(first) == len(second) == 8 and first[-1][4]  # the limit still falls at step 12
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    assert len({x[2] for x in first}) > 1  # the shaped reward moves with the actions
