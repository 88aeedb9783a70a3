import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.wrappers import ChunkedEnv, RetryFailedStarts


class Counter(gym.Env):
    """obs = step index; reward = action; success at step 3; time limit 5."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.t], np.float32)
        return obs, float(action[0]), False, self.t >= 5, {"success": self.t == 3}


def test_history_padding_chunk_execution_and_sticky_success() -> None:
    env = ChunkedEnv(Counter(), obs_history=3, act_steps=2)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs[:, 0], [0, 0, 0])  # first obs repeated
    obs, r, term, trunc, info = env.step(np.array([[0.5], [0.25]], np.float32))
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2])
    assert r == 0.75 and info["steps"] == 2 and not info["success"]
    obs, r, term, trunc, info = env.step(np.array([[1.0], [1.0]], np.float32))
    assert info["success"]  # success at step 3
    obs, r, term, trunc, info = env.step(np.array([[1.0], [1.0]], np.float32))
    assert trunc and info["steps"] == 1 and info["success"]  # stops at the limit, sticky
    np.testing.assert_array_equal(info["rewards"], [1.0, 0.0])
    with pytest.raises(ValueError, match="action chunk has shape"):
        env.step(np.zeros((3, 1), np.float32))


def test_vector_env_same_step_autoreset_exposes_final_obs() -> None:
    venv = envs.make(
        "reach-v3", num_envs=2, seed=0, obs_history=2, act_steps=5, max_episode_steps=10
    )
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 2, 39)
    venv.step(np.zeros((2, 5, 4), np.float32))
    obs, reward, term, trunc, info = venv.step(np.zeros((2, 5, 4), np.float32))
    assert trunc.all() and info["_final_obs"].all()
    assert info["final_obs"][0].shape == (2, 39)
    assert info["final_info"]["steps"][0] == 5
    # after an autoreset the history is the new episode's first obs, repeated
    np.testing.assert_array_equal(obs[0, 0], obs[0, 1])
    venv.close()


class SeededStart(gym.Env):
    """One-step episodes: the start is drawn from the reset seed; success iff action > 0."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(12345)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.start = np.array([self.rng.random()], np.float32)
        return self.start, {}

    def step(self, action):
        return self.start, 0.0, True, False, {"success": bool(action[0] > 0)}


def test_retry_failed_starts_replays_a_failed_start_then_moves_on() -> None:
    env = RetryFailedStarts(ChunkedEnv(SeededStart()), retries=2)
    fail, win = -np.ones((1, 1), np.float32), np.ones((1, 1), np.float32)
    first, info = env.reset(seed=7)
    assert info["attempt"] == 0
    starts, attempts = [first[0, 0]], [0]
    for action in (fail, fail, fail, fail, win, fail, win):
        *_, info = env.step(action)
        assert info["attempt"] == attempts[-1]
        obs, info = env.reset()
        starts.append(obs[0, 0])
        attempts.append(info["attempt"])
    # a failed start is replayed twice (retries=2), then a fresh one; a success moves on at once
    assert attempts == [0, 1, 2, 0, 1, 0, 1, 0]
    same = [starts[k] == starts[k + 1] for k in range(len(starts) - 1)]
    assert same == [True, True, False, True, False, True, False]
    # an explicit seed starts from that seed's state, like the unwrapped env
    env.step(fail)
    obs, info = env.reset(seed=7)
    assert info["attempt"] == 0 and obs[0, 0] == first[0, 0]
    # the stream of fresh starts is a function of the seed
    again = RetryFailedStarts(ChunkedEnv(SeededStart()), retries=2)
    again.reset(seed=7)
    replay = [again.reset()[0][0, 0] for _ in range(3)]  # no step: nothing failed
    env.reset(seed=7)
    assert replay == [env.reset()[0][0, 0] for _ in range(3)]
    with pytest.raises(ValueError, match="retries must be an int >= 1"):
        RetryFailedStarts(ChunkedEnv(SeededStart()), retries=0)
