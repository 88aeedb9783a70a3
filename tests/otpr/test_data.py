"""Readers, writers, windows and splits of ``otpr.data`` against hand-built files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from otpr.data import (
    DatasetError,
    DatasetNotFoundError,
    DemoDataset,
    Episode,
    dataset_stats,
    make_windows,
    read_d4rl_hdf5,
    read_minari,
    read_robomimic_hdf5,
    split_episodes,
    window_indices,
    write_robomimic_hdf5,
)

# Key order that is NOT sorted: the reader must keep it (sorted would put "object" first).
KEYS = {"robot0_eef_pos": 3, "object": 4}


def _episode(i: int, T: int, rng: np.random.Generator, images: bool = False) -> Episode:
    return Episode(
        obs=rng.normal(size=(T, 7)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(T, 2)).astype(np.float32),
        rewards=np.r_[np.zeros(T - 1), 1.0].astype(np.float32),
        dones=np.r_[np.zeros(T - 1, bool), True],
        success=bool(i % 2 == 0),
        final_obs=rng.normal(size=7).astype(np.float32),
        images={"agentview_image": rng.integers(0, 255, (T, 4, 4, 3), dtype=np.uint8)}
        if images
        else {},
    )


def _dataset(lengths=(5, 3, 7), images: bool = False) -> DemoDataset:
    rng = np.random.default_rng(0)
    eps = [_episode(i, T, rng, images) for i, T in enumerate(lengths)]
    return DemoDataset(
        episodes=eps,
        env_args={"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}},
        obs_keys=tuple(KEYS),
        obs_key_dims=tuple(KEYS.values()),
    )


@pytest.fixture
def robomimic_file(tmp_path: Path) -> Path:
    path = tmp_path / "demos.hdf5"
    write_robomimic_hdf5(
        path,
        _dataset(),
        obs_keys=KEYS,
        generation={"expert": "scripted", "noise": 0.3},
        filters={"train": [0, 2], "valid": [1]},
    )
    return path


# ---------------------------------------------------------------------------------- robomimic


def test_robomimic_round_trip_values_and_key_order(robomimic_file: Path) -> None:
    ref = _dataset()
    got = read_robomimic_hdf5(robomimic_file)
    assert got.obs_keys == ("robot0_eef_pos", "object")
    assert got.obs_key_dims == (3, 4)
    assert got.env_args == ref.env_args
    assert got.metadata["generation"] == {"expert": "scripted", "noise": 0.3}
    assert [ep.name for ep in got] == ["demo_0", "demo_1", "demo_2"]
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        np.testing.assert_array_equal(a.dones, b.dones)
        np.testing.assert_array_equal(a.final_obs, b.final_obs)
        assert a.success == b.success
        assert a.obs.dtype == np.float32 and a.dones.dtype == bool
    # Explicit keys in another order concatenate in that order.
    swapped = read_robomimic_hdf5(robomimic_file, obs_keys=["object", "robot0_eef_pos"])
    np.testing.assert_array_equal(
        swapped[1].obs, np.concatenate([ref[1].obs[:, 3:], ref[1].obs[:, :3]], 1)
    )
    only = read_robomimic_hdf5(robomimic_file, obs_keys=["object"])
    np.testing.assert_array_equal(only[2].obs, ref[2].obs[:, 3:])


def test_robomimic_layout_follows_robomimic_conventions(robomimic_file: Path) -> None:
    ref = _dataset()
    with h5py.File(robomimic_file, "r") as f:
        assert sorted(f["data"].keys()) == ["demo_0", "demo_1", "demo_2"]
        assert int(f["data"].attrs["total"]) == 15
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "Lift"
        g = f["data/demo_2"]
        assert int(g.attrs["num_samples"]) == 7
        np.testing.assert_array_equal(g["obs/robot0_eef_pos"][()], ref[2].obs[:, :3])
        np.testing.assert_array_equal(g["obs/object"][()], ref[2].obs[:, 3:])
        # next_obs is obs shifted by one, ending in the final observation.
        np.testing.assert_array_equal(g["next_obs/object"][:-1], ref[2].obs[1:, 3:])
        np.testing.assert_array_equal(g["next_obs/object"][-1], ref[2].final_obs[3:])
        assert list(f["mask/train"][()]) == [b"demo_0", b"demo_2"]
        assert list(f["mask/valid"][()]) == [b"demo_1"]
    assert os.listdir(robomimic_file.parent) == ["demos.hdf5"]  # no temp file left behind


def test_robomimic_filters_and_default_split(tmp_path: Path, robomimic_file: Path) -> None:
    ref = _dataset()
    train = read_robomimic_hdf5(robomimic_file, filter_key="train")
    valid = read_robomimic_hdf5(robomimic_file, filter_key="valid")
    assert [ep.name for ep in train] == ["demo_0", "demo_2"]
    assert [ep.name for ep in valid] == ["demo_1"]
    np.testing.assert_array_equal(valid[0].actions, ref[1].actions)
    # Default masks come from split_episodes(val_fraction, split_seed).
    path = tmp_path / "default.hdf5"
    ds = _dataset(lengths=(2,) * 10)
    write_robomimic_hdf5(path, ds, obs_keys=KEYS, val_fraction=0.3, split_seed=5)
    _, val = split_episodes(ds, 0.3, seed=5)
    names = [ep.name for ep in read_robomimic_hdf5(path, filter_key="valid")]
    assert names == [f"demo_{i}" for i in val.metadata["episode_indices"]]
    assert len(names) == 3


def test_robomimic_images_and_sorted_default_keys(tmp_path: Path) -> None:
    ref = _dataset(images=True)
    path = tmp_path / "img.hdf5"
    write_robomimic_hdf5(path, ref, obs_keys=KEYS)
    got = read_robomimic_hdf5(path, image_keys=["agentview_image"])
    np.testing.assert_array_equal(
        got[1].images["agentview_image"], ref[1].images["agentview_image"]
    )
    # A file without our key-order attribute: sorted low-dim keys, image keys left out.
    with h5py.File(path, "a") as f:
        del f["data"].attrs["otpr_obs_keys"]
    plain = read_robomimic_hdf5(path)
    assert plain.obs_keys == ("object", "robot0_eef_pos")
    np.testing.assert_array_equal(
        plain[0].obs, np.concatenate([ref[0].obs[:, 3:], ref[0].obs[:, :3]], 1)
    )


def _corrupt(path: Path, edit) -> None:
    with h5py.File(path, "a") as f:
        edit(f)


def _replace(f: h5py.File, key: str, value: np.ndarray) -> None:
    del f[key]
    f[key] = value


@pytest.mark.parametrize(
    ("edit", "key", "kwargs"),
    [
        (lambda f: f.__delitem__("data/demo_1/actions"), "data/demo_1/actions", {}),
        (lambda f: f.__delitem__("data/demo_0/obs/object"), "data/demo_0/obs/object", {}),
        (
            lambda f: _replace(f, "data/demo_2/actions", np.zeros((6, 2), np.float32)),
            "data/demo_2/actions",
            {},
        ),
        (
            lambda f: _replace(f, "data/demo_1/obs/object", np.zeros((2, 4), np.float32)),
            "data/demo_1/obs/object",
            {},
        ),
        (
            lambda f: _replace(f, "data/demo_0/obs/object", np.full((5, 4), np.nan, np.float32)),
            "data/demo_0/obs/object",
            {},
        ),
        (
            lambda f: _replace(f, "data/demo_2/actions", np.full((7, 2), np.inf, np.float32)),
            "data/demo_2/actions",
            {},
        ),
        (
            lambda f: [
                _replace(f, f"data/demo_1/{k}", np.zeros((0,) + f[f"data/demo_1/{k}"].shape[1:]))
                for k in ("obs/robot0_eef_pos", "obs/object", "actions", "rewards", "dones")
            ],
            "data/demo_1/obs",
            {},
        ),
        (lambda f: None, "data/demo_0/actions", {"action_dim": 7}),
        (lambda f: None, "mask/test", {"filter_key": "test"}),
        (
            lambda f: f["data"].attrs.__setitem__("env_args", "{not json"),
            "data.attrs[env_args]",
            {},
        ),
        (
            lambda f: f["data/demo_1"].attrs.__setitem__("num_samples", 4),
            "data/demo_1.attrs[num_samples]",
            {},
        ),
        (lambda f: f["data"].attrs.__setitem__("total", 16), "data.attrs[total]", {}),
    ],
    ids=[
        "missing-actions",
        "missing-obs-key",
        "actions-vs-obs-length",
        "obs-keys-length",
        "nan-obs",
        "inf-actions",
        "empty-episode",
        "action-dim",
        "missing-filter",
        "env-args-json",
        "num-samples",
        "total",
    ],
)
def test_robomimic_malformed_files_raise_one_line(robomimic_file: Path, edit, key, kwargs) -> None:
    _corrupt(robomimic_file, edit)
    with pytest.raises(DatasetError) as err:
        read_robomimic_hdf5(robomimic_file, **kwargs)
    msg = str(err.value)
    assert "demos.hdf5" in msg and key in msg and "\n" not in msg, msg


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    for reader in (read_robomimic_hdf5, read_d4rl_hdf5):
        with pytest.raises(DatasetNotFoundError, match="nope.hdf5"):
            reader(tmp_path / "nope.hdf5")
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    assert issubclass(DatasetError, ValueError)


def test_writer_rejects_wrong_key_widths(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="obs_dim 7"):
        write_robomimic_hdf5(tmp_path / "x.hdf5", _dataset(), obs_keys={"a": 3, "b": 3})
    with pytest.raises(DatasetError, match=r"mask/valid: expected episode indices in \[0, 3\)"):
        write_robomimic_hdf5(tmp_path / "x.hdf5", _dataset(), KEYS, filters={"valid": [3]})
    assert not (tmp_path / "x.hdf5").exists()


# --------------------------------------------------------------------------------------- D4RL


def _write_d4rl(path: Path, N: int = 10, drop: str | None = None, **override) -> dict:
    arrays = {
        "observations": np.arange(N * 2, dtype=np.float32).reshape(N, 2),
        "actions": np.arange(N, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
        "rewards": np.arange(N, dtype=np.float32) / 10,
        "terminals": np.isin(np.arange(N), [2]),
        "timeouts": np.isin(np.arange(N), [6]),
        "next_observations": np.arange(N * 2, dtype=np.float32).reshape(N, 2) + 1000,
    }
    arrays.update(override)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if k != drop:
                f[k] = v
    return arrays


def test_d4rl_splits_at_terminals_and_timeouts(tmp_path: Path) -> None:
    ref = _write_d4rl(tmp_path / "d4rl.hdf5")
    ds = read_d4rl_hdf5(tmp_path / "d4rl.hdf5", action_dim=3)
    # terminal at step 2, timeout at 6, then an unfinished tail 7..9.
    assert [len(ep) for ep in ds] == [3, 4, 3]
    np.testing.assert_array_equal(ds[1].obs, ref["observations"][3:7])
    np.testing.assert_array_equal(ds[2].actions, ref["actions"][7:10])
    np.testing.assert_array_equal(ds[0].rewards, ref["rewards"][0:3])
    assert ds[0].dones.tolist() == [False, False, True]
    assert ds[1].dones.tolist() == [False] * 4  # a timeout is not a terminal
    assert ds[1].extra["truncations"].tolist() == [False, False, False, True]
    assert not ds[2].dones.any() and not ds[2].extra["truncations"].any()
    np.testing.assert_array_equal(ds[1].final_obs, ref["next_observations"][6])


@pytest.mark.parametrize(
    ("drop", "override", "key", "kwargs"),
    [
        ("timeouts", {}, "timeouts", {}),
        (None, {"rewards": np.zeros(9, np.float32)}, "rewards", {}),
        (
            None,
            {"observations": np.where(np.arange(20).reshape(10, 2) == 9, np.nan, 0.0)},
            "observations[3:7]",
            {},
        ),
        (None, {"observations": np.zeros((0, 2), np.float32)}, "observations", {}),
        (None, {}, "actions[0:3]", {"action_dim": 4}),
    ],
    ids=["missing-timeouts", "rewards-length", "nan-obs", "empty", "action-dim"],
)
def test_d4rl_malformed_files_raise_one_line(tmp_path: Path, drop, override, key, kwargs) -> None:
    path = tmp_path / "bad_d4rl.hdf5"
    _write_d4rl(path, drop=drop, **override)
    with pytest.raises(DatasetError) as err:
        read_d4rl_hdf5(path, **kwargs)
    msg = str(err.value)
    assert "bad_d4rl.hdf5" in msg and key in msg and "\n" not in msg, msg


# ------------------------------------------------------------------------------------- Minari


def _make_minari(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """Two tiny datasets under ``root``: Pendulum rollouts (Box obs) and a Kitchen-like Dict."""
    import gymnasium as gym
    import minari
    from gymnasium import spaces
    from minari.data_collector.episode_buffer import EpisodeBuffer

    # minari's DataCollector needs jax (minari[create]); buffers are minari's other writer.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    env = gym.make("Pendulum-v1", max_episode_steps=6)
    rng = np.random.default_rng(1)
    box_bufs = []
    for i in range(3):
        o, _ = env.reset(seed=i)
        obs, acts, rews, terms, truncs = [o], [], [], [], []
        done = False
        while not done:
            a = rng.uniform(-2, 2, size=1).astype(np.float32)
            o, r, te, tr, _ = env.step(a)
            obs.append(o), acts.append(a), rews.append(r), terms.append(te), truncs.append(tr)
            done = te or tr
        box_bufs.append(
            EpisodeBuffer(
                id=i,
                observations=np.array(obs),
                actions=np.array(acts),
                rewards=np.array(rews),
                terminations=np.array(terms),
                truncations=np.array(truncs),
                infos={},
            )
        )
    minari.create_dataset_from_buffers("test/pendulum/tiny-v0", box_bufs, env=env)

    goal = spaces.Dict({"kettle": spaces.Box(-1, 1, (2,), np.float64)})
    obs_space = spaces.Dict(
        {
            "observation": spaces.Box(-1e3, 1e3, (3,), np.float64),
            "achieved_goal": goal,
            "desired_goal": goal,
        }
    )
    dict_bufs = []
    for i, T in enumerate((4, 5)):
        dict_bufs.append(
            EpisodeBuffer(
                id=i,
                observations={
                    "observation": np.arange((T + 1) * 3, dtype=np.float64).reshape(T + 1, 3)
                    + 100 * i,
                    "achieved_goal": {"kettle": np.full((T + 1, 2), -0.5)},
                    "desired_goal": {"kettle": np.full((T + 1, 2), 0.5)},
                },
                actions=np.full((T, 2), i, np.float32),
                rewards=np.arange(T, dtype=np.float64),
                terminations=np.r_[np.zeros(T - 1, bool), i == 0],
                truncations=np.r_[np.zeros(T - 1, bool), i == 1],
                infos={"success": np.r_[np.zeros(T - 1, bool), i == 0]},
            )
        )
    minari.create_dataset_from_buffers(
        "test/kitchenlike/tiny-v0",
        dict_bufs,
        observation_space=obs_space,
        action_space=spaces.Box(-1, 1, (2,), np.float32),
    )
    return box_bufs, dict_bufs


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "minari"
    box_bufs, dict_bufs = _make_minari(root, monkeypatch)
    monkeypatch.setenv("MINARI_DATASETS_PATH", "/somewhere/else")

    box = read_minari("test/pendulum/tiny-v0", root, action_dim=1)
    assert os.environ["MINARI_DATASETS_PATH"] == "/somewhere/else"  # restored
    assert len(box) == 3 and [len(ep) for ep in box] == [6, 6, 6]
    for ep, buf in zip(box, box_bufs):
        np.testing.assert_allclose(ep.obs, buf.observations[:-1], rtol=1e-6)
        np.testing.assert_allclose(ep.final_obs, buf.observations[-1], rtol=1e-6)
        np.testing.assert_allclose(ep.actions, buf.actions)
        np.testing.assert_allclose(ep.rewards, buf.rewards, rtol=1e-6)
        assert ep.extra["truncations"].tolist() == [False] * 5 + [True]
        assert ep.success is None
    assert box.env_args["env_name"] == "Pendulum-v1"

    kitchen = read_minari("test/kitchenlike/tiny-v0", root)
    assert kitchen.obs_keys == ("observation",) and kitchen.obs_dim == 3
    np.testing.assert_array_equal(kitchen[1].obs, dict_bufs[1].observations["observation"][:-1])
    assert kitchen[0].dones.tolist() == [False, False, False, True]
    assert not kitchen[1].dones.any() and kitchen[1].extra["truncations"][-1]
    assert [ep.success for ep in kitchen] == [True, False]
    # obs_key=None: every entry, sorted keys, nested dicts flattened.
    full = read_minari("test/kitchenlike/tiny-v0", root, obs_key=None)
    assert full.obs_keys == ("achieved_goal", "desired_goal", "observation")
    np.testing.assert_array_equal(full[0].obs[0], [-0.5, -0.5, 0.5, 0.5, 0.0, 1.0, 2.0])

    with pytest.raises(DatasetError, match="episode_0/observations/robot_state"):
        read_minari("test/kitchenlike/tiny-v0", root, obs_key="robot_state")
    with pytest.raises(DatasetError, match="expected action dimension 9"):
        read_minari("test/kitchenlike/tiny-v0", root, action_dim=9)
    with pytest.raises(DatasetNotFoundError, match="test/missing-v0"):
        read_minari("test/missing-v0", root)
    assert os.environ["MINARI_DATASETS_PATH"] == "/somewhere/else"


# ------------------------------------------------------------------------ windows and splits


def _indexed(lengths=(3, 5)) -> DemoDataset:
    """obs[t] = [100 e + t], actions[t] = [-(100 e + t)]: values name episode and step."""
    eps = []
    for e, T in enumerate(lengths):
        v = (100 * e + np.arange(T, dtype=np.float32))[:, None]
        eps.append(Episode(obs=v, actions=-v, rewards=np.zeros(T), dones=np.zeros(T, bool)))
    return DemoDataset(episodes=eps)


def test_windows_match_the_timeline() -> None:
    obs, act = make_windows(_indexed(), obs_horizon=2, horizon=3)
    assert obs.shape == (8, 2, 1) and act.shape == (8, 3, 1)
    o, a = obs[..., 0], -act[..., 0]
    # Episode 0 (T=3): first obs repeated at t=0, last action repeated at the end.
    assert o[0].tolist() == [0, 0] and a[0].tolist() == [0, 1, 2]
    assert o[1].tolist() == [0, 1] and a[1].tolist() == [1, 2, 2]
    assert o[2].tolist() == [1, 2] and a[2].tolist() == [2, 2, 2]
    # Episode 1 (T=5) never reaches back into episode 0.
    assert o[3].tolist() == [100, 100] and a[3].tolist() == [100, 101, 102]
    assert o[5].tolist() == [101, 102] and a[5].tolist() == [102, 103, 104]
    assert o[7].tolist() == [103, 104] and a[7].tolist() == [104, 104, 104]
    obs_idx, act_idx = window_indices(_indexed(), 2, 3)
    assert obs_idx[3].tolist() == [3, 3] and act_idx[2].tolist() == [2, 2, 2]
    # T_o = 1, H = 1 is plain (obs, action) pairs.
    obs1, act1 = make_windows(_indexed(), 1, 1)
    np.testing.assert_array_equal(obs1[:, 0, 0], -act1[:, 0, 0])
    with pytest.raises(ValueError, match="obs_horizon"):
        make_windows(_indexed(), 0, 3)


def test_split_is_deterministic_and_disjoint() -> None:
    ds = _indexed(lengths=tuple(range(1, 21)))
    tr1, va1 = split_episodes(ds, 0.25, seed=3)
    tr2, va2 = split_episodes(ds, 0.25, seed=3)
    _, va3 = split_episodes(ds, 0.25, seed=4)
    assert va1.metadata["episode_indices"] == va2.metadata["episode_indices"]
    assert va1.metadata["episode_indices"] != va3.metadata["episode_indices"]
    assert len(va1) == 5 and len(tr1) == 15
    idx = tr1.metadata["episode_indices"] + va1.metadata["episode_indices"]
    assert sorted(idx) == list(range(20))
    assert va1[0] is ds[va1.metadata["episode_indices"][0]]
    assert len(split_episodes(ds, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(ds, 1.0, seed=0)


def test_dataset_stats() -> None:
    stats = dataset_stats(_indexed())
    assert stats["obs_min"].tolist() == [0] and stats["obs_max"].tolist() == [104]
    assert stats["act_min"].tolist() == [-104] and stats["act_max"].tolist() == [0]


@pytest.mark.parametrize("reader", [read_robomimic_hdf5, read_d4rl_hdf5])
def test_a_file_that_is_not_hdf5_gets_a_named_error(tmp_path: Path, reader) -> None:
    path = tmp_path / "demos.hdf5"
    path.write_text("not an hdf5 file")
    with pytest.raises(DatasetError, match=r"demos\.hdf5: not a readable hdf5 file"):
        reader(path)
