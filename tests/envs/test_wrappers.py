import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.wrappers import ChunkedEnv


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
