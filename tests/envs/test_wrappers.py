import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.wrappers import ChunkedEnv, ResumableEpisodes, RetryFailedStarts


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


class Drift(gym.Env):
    """A random walk from a seeded start: obs_t = start + sum of actions and of noise drawn
    from the env's own generator; time limit 6."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, float(self.np_random.normal())
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.t += 1
        self.x += float(action[0]) + 0.1 * float(self.np_random.normal())
        return np.array([self.x], np.float32), self.x, False, self.t >= 6, {"success": False}


def test_resumable_episodes_replay_an_episode_in_a_fresh_env() -> None:
    def member() -> gym.Env:
        return ResumableEpisodes(ChunkedEnv(Drift(), obs_history=2, act_steps=1))

    env = member()
    env.reset(seed=3)
    acts = [np.full((1, 1), 0.1 * k, np.float32) for k in range(20)]
    for a in acts[:8]:  # one whole episode (an autoreset-like unseeded reset) and 2 chunks
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            obs, _ = env.reset()  # unseeded: the seed comes from the wrapper's generator
    state = env.episode_state()
    assert len(state["actions"]) == 2 and state["seed"] != 3
    fresh = member()
    out = fresh.restore_episode(state)
    assert out["ended_at"] is None and np.array_equal(out["obs"], obs)
    for a in acts[8:]:  # and both go on alike, through resets
        x, y = env.step(a), fresh.step(a)
        assert np.array_equal(x[0], y[0]) and x[1:4] == y[1:4]
        if x[2] or x[3]:
            assert np.array_equal(env.reset()[0], fresh.reset()[0])
    # a replay that ends the episode early is reported, not hidden
    state["actions"] = [a.tolist() for a in acts[:7]]
    assert member().restore_episode(state)["ended_at"] == 6


def _replays_exactly(task: str, vectorization: str = "sync", **kwargs) -> None:
    """A vector env stepped through autoresets and retried starts, its members' episodes
    saved, a freshly built one restored: the same observations now and on every later step."""

    def build():
        return envs.make(
            task,
            num_envs=2,
            seed=5,
            obs_history=2,
            act_steps=4,
            max_episode_steps=20,
            vectorization=vectorization,
            retry_failed_starts=1,
            resumable=True,
            **kwargs,
        )

    rng = np.random.default_rng(0)
    ran = build()
    try:
        acts = [rng.uniform(-1, 1, ran.action_space.shape).astype(np.float32) for _ in range(24)]
        obs, _ = ran.reset(seed=5)
        for a in acts[:13]:  # 5 chunks per episode: two resets and 3 chunks into the third
            obs, *_ = ran.step(a)
        states = envs.episode_states(ran)
        assert [len(s["actions"]) for s in states] == [3, 3]
        assert all(s["retry"]["attempt"] in (0, 1) for s in states)
        again = build()
        try:
            out = envs.restore_episodes(again, states)
            for i, got in enumerate(out):
                assert got["ended_at"] is None and np.array_equal(got["obs"], obs[i])
            for a in acts[13:]:
                x, y = ran.step(a), again.step(a)
                for k in range(3):
                    assert np.array_equal(x[k], y[k])
        finally:
            again.close()
    finally:
        ran.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_metaworld_members_replay_exactly(vectorization: str) -> None:
    _replays_exactly("reach-v3", vectorization, reward="sparse", terminate_on_success=True)


@pytest.mark.slow
@pytest.mark.robosuite
def test_robosuite_members_replay_exactly() -> None:
    pytest.importorskip("robosuite")
    _replays_exactly("lift")


@pytest.mark.kitchen
def test_kitchen_members_replay_exactly() -> None:
    pytest.importorskip("gymnasium_robotics")
    _replays_exactly("kitchen-complete")


def test_pixel_observation_is_the_rendered_frame_and_the_proprio_slice() -> None:
    """``envs.make(..., pixel_obs=True)``: each member observes its frame, flattened, then the
    suite's proprio slice of the low-dim state; ``split_pixel_obs`` gives both back, the frame
    exactly as ``render()`` draws it."""
    spec = envs.task_spec("reach-v3")
    lo, hi = spec.extra["proprio"]
    venv = envs.make(
        "reach-v3", num_envs=1, seed=3, pixel_obs=True, proprio=(lo, hi), image_size=32
    )
    state = envs.make("reach-v3", num_envs=1, seed=3)
    try:
        obs, _ = venv.reset(seed=3)
        low, _ = state.reset(seed=3)
        assert obs.shape == (1, 1, 32 * 32 * 3 + hi - lo)
        frames, proprio = envs.split_pixel_obs(obs, 32)
        assert frames.dtype == np.uint8 and frames.shape == (1, 1, 32, 32, 3)
        np.testing.assert_array_equal(proprio, low[..., lo:hi])
        (drawn,) = venv.call("render")
        np.testing.assert_array_equal(frames[0, 0], drawn)
        assert frames.std() > 0  # a scene, not a blank frame
        action = np.zeros((1, 1, 4), np.float32)
        action[..., 0] = 1.0
        obs, *_ = venv.step(action)
        low, *_ = state.step(action)
        moved, proprio = envs.split_pixel_obs(obs, 32)
        np.testing.assert_array_equal(proprio, low[..., lo:hi])
        assert not np.array_equal(moved, frames)
    finally:
        venv.close()
        state.close()
