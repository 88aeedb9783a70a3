"""Every data reader refuses every malformed input with its named error, never another one.

Each reader gets a valid small file (the writers of ``tests/otpr/test_data.py`` and
``tests/envs/test_calvin.py``); the named cases below corrupt it in one way each, and the
property tests let hypothesis choose the corruption (drop a key, change a dtype or a shape,
mismatch a length, inject NaN/inf, empty an episode, truncate the file, break an attribute).
The reader must raise ``DatasetError`` (CALVIN's own reader: ``CalvinDatasetError``) with one
line that names the file, the key and what it expected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.calvin import CalvinDatasetError, read_calvin_segments
from otpr.data import (
    DatasetError,
    read_calvin_episodes,
    read_d4rl_hdf5,
    read_minari,
    read_robomimic_hdf5,
    write_robomimic_hdf5,
)
from tests.envs.test_calvin import _step, _write_split
from tests.otpr.test_data import KEYS, _dataset, _make_minari, _write_d4rl

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LENGTHS = (5, 3, 7)  # the robomimic demos' lengths (tests/otpr/test_data.py: _dataset)


def _one_line_error(read: Callable[[], object], error: type, *names: str) -> str:
    """Calls ``read``, which must raise ``error`` with one line that names all ``names``."""
    with pytest.raises(error) as info:
        read()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def _put(f: h5py.File, key: str, value: np.ndarray) -> None:
    del f[key]
    f[key] = value


def _text_like(a: np.ndarray) -> np.ndarray:
    return np.full(a.shape, b"x", dtype="S1")


def _resized(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with ``rows`` rows: cut, or padded with copies of its last row."""
    if rows <= len(a):
        return a[:rows]
    return np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)])


def _with_nonfinite(a: np.ndarray, index: int, value: float) -> np.ndarray:
    out = a.astype(np.float64).copy()
    out.reshape(-1)[index % out.size] = value
    return out


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# ---------------------------------------------------------------------------------- robomimic


@pytest.fixture(scope="module")
def robomimic_valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("robomimic") / "demos.hdf5"
    write_robomimic_hdf5(path, _dataset(LENGTHS), obs_keys=KEYS, filters={"train": [0, 2]})
    return path


def _robomimic_copy(valid: Path, tmp: Path) -> Path:
    path = tmp / "demos.hdf5"
    shutil.copy(valid, path)
    return path


def test_valid_robomimic_file_loads(robomimic_valid: Path) -> None:
    ds = read_robomimic_hdf5(robomimic_valid, action_dim=2)
    assert [len(ep) for ep in ds] == list(LENGTHS)
    assert len(read_robomimic_hdf5(robomimic_valid, filter_key="train")) == 2


ROBOMIMIC_STEP_KEYS = (
    "obs/robot0_eef_pos",
    "obs/object",
    "next_obs/robot0_eef_pos",
    "next_obs/object",
    "actions",
    "rewards",
    "dones",
)


def _robomimic_edit(
    f: h5py.File, kind: str, demo: int, key: str, where: int, value: float
) -> tuple[str, dict]:
    """Corrupts ``data/demo_<demo>/<key>`` by ``kind``; returns the key path the error must
    name and the reader's keyword arguments."""
    g = f[f"data/demo_{demo}"]
    name = f"data/demo_{demo}/{key}"
    a = g[key][()]
    if kind == "drop":
        del g[key]
    elif kind == "text":
        _put(g, key, _text_like(a))
    elif kind in ("longer", "shorter"):
        _put(g, key, _resized(a, len(a) + (1 if kind == "longer" else -1)))
        # obs and next_obs of one key are compared first: either may be the one named
        name = f"data/demo_{demo}/" if "obs" in key else name
    elif kind == "extra_axis":
        _put(g, key, a[..., None])
    elif kind == "scalar":
        _put(g, key, a.reshape(-1)[0])
    elif kind == "nonfinite":
        _put(g, key, _with_nonfinite(a, where, value))
    elif kind == "empty":
        for k in ROBOMIMIC_STEP_KEYS:
            _put(g, k, g[k][()][:0])
        name = f"data/demo_{demo}/"
    else:
        raise AssertionError(kind)
    return name, {}


ROBOMIMIC_ATTRS: dict[str, tuple[Callable[[h5py.File], None], str, dict]] = {
    "env_args-not-json": (
        lambda f: f["data"].attrs.__setitem__("env_args", "{not json"),
        "data.attrs[env_args]",
        {},
    ),
    "env_args-a-list": (
        lambda f: f["data"].attrs.__setitem__("env_args", "[1, 2]"),
        "data.attrs[env_args]",
        {},
    ),
    "obs_keys-not-json": (
        lambda f: f["data"].attrs.__setitem__("otpr_obs_keys", "robot0_eef_pos,object"),
        "data.attrs[otpr_obs_keys]",
        {},
    ),
    "obs_keys-not-names": (
        lambda f: f["data"].attrs.__setitem__("otpr_obs_keys", "[1, 2]"),
        "data.attrs[otpr_obs_keys]",
        {},
    ),
    "obs_keys-name-missing": (
        lambda f: f["data"].attrs.__setitem__("otpr_obs_keys", '["gripper"]'),
        "data/demo_0/obs/gripper",
        {},
    ),
    "total-wrong": (lambda f: f["data"].attrs.__setitem__("total", 99), "data.attrs[total]", {}),
    "total-text": (lambda f: f["data"].attrs.__setitem__("total", "15"), "data.attrs[total]", {}),
    "num_samples-wrong": (
        lambda f: f["data/demo_2"].attrs.__setitem__("num_samples", 6),
        "data/demo_2.attrs[num_samples]",
        {},
    ),
    "num_samples-text": (
        lambda f: f["data/demo_1"].attrs.__setitem__("num_samples", "three"),
        "data/demo_1.attrs[num_samples]",
        {},
    ),
    "success-text": (
        lambda f: f["data/demo_0"].attrs.__setitem__("success", "yes"),
        "data/demo_0.attrs[success]",
        {},
    ),
    "filter-names-a-missing-demo": (
        lambda f: _put(f, "mask/train", np.array([b"demo_0", b"demo_9"])),
        "mask/train",
        {"filter_key": "train"},
    ),
    "filter-not-names": (
        lambda f: _put(f, "mask/train", np.array([[0.5, 1.5]])),
        "mask/train",
        {"filter_key": "train"},
    ),
    "filter-missing": (
        lambda f: f.__delitem__("mask/train"),
        "mask/train",
        {"filter_key": "train"},
    ),
    "no-data-group": (lambda f: f.__delitem__("data"), "data", {}),
    "data-not-a-group": (lambda f: _put(f, "data", np.zeros(3)), "data", {}),
    "demo-not-a-group": (lambda f: _put(f, "data/demo_1", np.zeros(3)), "data/demo_1", {}),
    "obs-not-a-dataset": (
        lambda f: (f.__delitem__("data/demo_0/actions"), f.create_group("data/demo_0/actions")),
        "data/demo_0/actions",
        {},
    ),
}


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("empty", "actions"),  # today's IndexError: Index (-1) out of range for empty dimension
        ("text", "obs/object"),  # today's TypeError: ufunc 'isfinite' not supported
        ("text", "actions"),
        ("text", "next_obs/object"),
        ("extra_axis", "obs/object"),
        ("extra_axis", "rewards"),
        ("scalar", "dones"),
        ("shorter", "rewards"),
        ("longer", "dones"),
        ("shorter", "next_obs/robot0_eef_pos"),
        ("longer", "obs/robot0_eef_pos"),
        ("nonfinite", "actions"),
        ("nonfinite", "dones"),
        ("nonfinite", "next_obs/object"),
        ("drop", "rewards"),
        ("drop", "obs/robot0_eef_pos"),
    ],
)
def test_robomimic_malformed_step_data(
    robomimic_valid: Path, tmp_path: Path, kind: str, key: str
) -> None:
    path = _robomimic_copy(robomimic_valid, tmp_path)
    with h5py.File(path, "a") as f:
        name, kwargs = _robomimic_edit(f, kind, 1, key, 2, np.nan)
    msg = _one_line_error(lambda: read_robomimic_hdf5(path, **kwargs), DatasetError, name)
    assert msg.startswith("demos.hdf5: ") and "expected" in msg, msg


@pytest.mark.parametrize("case", list(ROBOMIMIC_ATTRS))
def test_robomimic_malformed_attributes_and_groups(
    robomimic_valid: Path, tmp_path: Path, case: str
) -> None:
    edit, name, kwargs = ROBOMIMIC_ATTRS[case]
    path = _robomimic_copy(robomimic_valid, tmp_path)
    with h5py.File(path, "a") as f:
        edit(f)
    msg = _one_line_error(lambda: read_robomimic_hdf5(path, **kwargs), DatasetError, name)
    assert msg.startswith("demos.hdf5: ") and "expected" in msg, msg


def test_robomimic_truncated_file(robomimic_valid: Path, tmp_path: Path) -> None:
    path = _robomimic_copy(robomimic_valid, tmp_path)
    _truncate(path, 0.6)
    _one_line_error(lambda: read_robomimic_hdf5(path), DatasetError, "demos.hdf5")


STEP_KINDS = ("drop", "text", "longer", "shorter", "extra_axis", "scalar", "nonfinite", "empty")
NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@PROPERTY
@given(data=st.data())
def test_robomimic_property(
    robomimic_valid: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = _robomimic_copy(robomimic_valid, tmp_path_factory.mktemp("robomimic"))
    corruption = data.draw(st.sampled_from(STEP_KINDS + ("attribute", "truncate")))
    if corruption == "truncate":
        _truncate(path, data.draw(st.floats(0.0, 0.99)))
        name, kwargs = "demos.hdf5", {}
    elif corruption == "attribute":
        edit, name, kwargs = ROBOMIMIC_ATTRS[data.draw(st.sampled_from(sorted(ROBOMIMIC_ATTRS)))]
        with h5py.File(path, "a") as f:
            edit(f)
    else:
        keys = ROBOMIMIC_STEP_KEYS
        if corruption == "drop":  # next_obs is optional
            keys = tuple(k for k in keys if not k.startswith("next_obs"))
        key = data.draw(st.sampled_from(keys))
        demo = data.draw(st.integers(0, len(LENGTHS) - 1))
        with h5py.File(path, "a") as f:
            name, kwargs = _robomimic_edit(
                f, corruption, demo, key, data.draw(st.integers(0, 100)), data.draw(NONFINITE)
            )
    # a changed obs width shows where it first disagrees with another key or demo
    names = (name,) if corruption not in ("extra_axis", "scalar") else ("demos.hdf5",)
    _one_line_error(lambda: read_robomimic_hdf5(path, **kwargs), DatasetError, *names)


# --------------------------------------------------------------------------------------- D4RL

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def _d4rl_edit(f: h5py.File, kind: str, key: str, where: int, value: float) -> str:
    a = f[key][()]
    if kind == "drop":
        del f[key]
    elif kind == "text":
        _put(f, key, _text_like(a))
    elif kind == "longer":
        _put(f, key, _resized(a, len(a) + 1))
    elif kind == "shorter":
        _put(f, key, _resized(a, len(a) - 1))
    elif kind == "extra_axis":
        _put(f, key, a[..., None])
    elif kind == "scalar":
        _put(f, key, a.reshape(-1)[0])
    elif kind == "nonfinite":
        _put(f, key, _with_nonfinite(a, where, value))
    elif kind == "empty":
        for k in D4RL_KEYS:
            _put(f, k, f[k][()][:0])
        return "observations"
    else:
        raise AssertionError(kind)
    return key


@pytest.fixture(scope="module")
def d4rl_valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("d4rl") / "d4rl.hdf5"
    _write_d4rl(path)
    assert [len(ep) for ep in read_d4rl_hdf5(path, action_dim=3)] == [3, 4, 3]  # loads
    return path


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("empty", "observations"),
        ("text", "observations"),
        ("text", "terminals"),
        ("extra_axis", "observations"),
        ("extra_axis", "actions"),
        ("scalar", "rewards"),
        ("shorter", "timeouts"),
        ("longer", "next_observations"),
        ("nonfinite", "terminals"),
        ("nonfinite", "next_observations"),
        ("drop", "actions"),
    ],
)
def test_d4rl_malformed(d4rl_valid: Path, tmp_path: Path, kind: str, key: str) -> None:
    path = tmp_path / "d4rl.hdf5"
    shutil.copy(d4rl_valid, path)
    with h5py.File(path, "a") as f:
        name = _d4rl_edit(f, kind, key, 5, np.inf)
    msg = _one_line_error(lambda: read_d4rl_hdf5(path), DatasetError, "d4rl.hdf5", name)
    assert "expected" in msg, msg


@PROPERTY
@given(data=st.data())
def test_d4rl_property(
    d4rl_valid: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("d4rl") / "d4rl.hdf5"
    shutil.copy(d4rl_valid, path)
    corruption = data.draw(st.sampled_from(STEP_KINDS + ("truncate",)))
    if corruption == "truncate":
        _truncate(path, data.draw(st.floats(0.0, 0.99)))
        name = "d4rl.hdf5"
    else:
        keys = D4RL_KEYS[:-1] if corruption == "drop" else D4RL_KEYS  # next_obs is optional
        key = data.draw(st.sampled_from(keys))
        with h5py.File(path, "a") as f:
            name = _d4rl_edit(
                f, corruption, key, data.draw(st.integers(0, 100)), data.draw(NONFINITE)
            )
    _one_line_error(lambda: read_d4rl_hdf5(path), DatasetError, "d4rl.hdf5", name)


# ------------------------------------------------------------------------------------- Minari

MINARI_ID = "test/pendulum/tiny-v0"  # 3 episodes of 6 steps, Box observations (3), actions (1)
MINARI_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


@pytest.fixture(scope="module")
def minari_valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("minari_valid") / "minari"
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _make_minari(root, mp)
    return root


def _minari_copy(valid: Path, tmp: Path) -> tuple[Path, Path]:
    root = tmp / "minari"
    shutil.copytree(valid, root)
    return root, root / MINARI_ID / "data"


def _read_minari(root: Path, **kwargs) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_minari(MINARI_ID, root, **kwargs)


def _minari_edit(f: h5py.File, kind: str, episode: int, key: str, where: int, value: float):
    g = f[f"episode_{episode}"]
    a = g[key][()]
    if kind == "drop":
        del g[key]
    elif kind == "text":
        _put(g, key, _text_like(a))
    elif kind == "longer":
        _put(g, key, _resized(a, len(a) + 1))
    elif kind == "shorter":
        _put(g, key, _resized(a, len(a) - 1))
    elif kind == "extra_axis":
        _put(g, key, a[..., None])
    elif kind == "scalar":
        _put(g, key, a.reshape(-1)[0])
    elif kind == "nonfinite":
        _put(g, key, _with_nonfinite(a, where, value))
    elif kind == "empty":
        for k in MINARI_KEYS:
            _put(g, k, g[k][()][: 1 if k == "observations" else 0])
    else:
        raise AssertionError(kind)


def test_valid_minari_dataset_loads(minari_valid: Path) -> None:
    assert [len(ep) for ep in _read_minari(minari_valid, action_dim=1)] == [6, 6, 6]


@pytest.mark.parametrize(
    ("kind", "key", "name"),
    [
        ("empty", "actions", "episode_1"),
        ("text", "observations", "episode_1/observations"),
        ("shorter", "rewards", "episode_1"),
        ("longer", "terminations", "episode_1/terminations"),
        ("shorter", "truncations", "episode_1/truncations"),
        ("nonfinite", "observations", "episode_1/observations"),
        ("nonfinite", "actions", "episode_1/actions"),
        ("nonfinite", "terminations", "episode_1/terminations"),
        ("scalar", "rewards", "episode_1"),
    ],
)
def test_minari_malformed(
    minari_valid: Path, tmp_path: Path, kind: str, key: str, name: str
) -> None:
    root, data = _minari_copy(minari_valid, tmp_path)
    with h5py.File(data / "main_data.hdf5", "a") as f:
        _minari_edit(f, kind, 1, key, 4, np.nan)
    msg = _one_line_error(lambda: _read_minari(root), DatasetError, MINARI_ID, name)
    assert "expected" in msg, msg


def test_minari_damaged_files(minari_valid: Path, tmp_path: Path) -> None:
    root, data = _minari_copy(minari_valid, tmp_path / "a")
    _truncate(data / "main_data.hdf5", 0.5)
    _one_line_error(lambda: _read_minari(root), DatasetError, MINARI_ID, "main_data.hdf5")
    root, data = _minari_copy(minari_valid, tmp_path / "b")
    (data / "metadata.json").write_text("{not json")
    _one_line_error(lambda: _read_minari(root), DatasetError, MINARI_ID)
    root, data = _minari_copy(minari_valid, tmp_path / "c")
    meta = json.loads((data / "metadata.json").read_text())
    del meta["total_episodes"]  # an attribute minari relies on
    (data / "metadata.json").write_text(json.dumps(meta))
    _one_line_error(lambda: _read_minari(root), DatasetError, MINARI_ID, "total_episodes")
    root, data = _minari_copy(minari_valid, tmp_path / "d")
    (data / "main_data.hdf5").unlink()
    _one_line_error(lambda: _read_minari(root), DatasetError, MINARI_ID)


@PROPERTY
@given(data=st.data())
def test_minari_property(
    minari_valid: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root, files = _minari_copy(minari_valid, tmp_path_factory.mktemp("minari"))
    corruption = data.draw(st.sampled_from(STEP_KINDS + ("truncate", "metadata")))
    if corruption == "truncate":
        _truncate(files / "main_data.hdf5", data.draw(st.floats(0.0, 0.99)))
    elif corruption == "metadata":
        text = (files / "metadata.json").read_text()
        (files / "metadata.json").write_text(text[: data.draw(st.integers(0, len(text) - 1))])
    else:
        with h5py.File(files / "main_data.hdf5", "a") as f:
            _minari_edit(
                f,
                corruption,
                data.draw(st.integers(0, 2)),
                data.draw(st.sampled_from(MINARI_KEYS)),
                data.draw(st.integers(0, 100)),
                data.draw(NONFINITE),
            )
    _one_line_error(lambda: _read_minari(root), DatasetError, MINARI_ID)


# -------------------------------------------------------------------------------------- CALVIN

CALVIN_STEP_KEYS = ("robot_obs", "scene_obs", "rel_actions")


def _calvin_rewrite(root: Path, i: int, kind: str, key: str, where: int, value: float) -> str:
    """Corrupts ``key`` of step ``i``; returns the file name the error must name."""
    fname = f"episode_{i:07d}.npz"
    step = _step(i)
    a = step[key]
    if kind == "drop":
        del step[key]
    elif kind == "text":
        step[key] = np.full(a.shape, "x")
    elif kind in ("longer", "shorter"):
        step[key] = _resized(a, len(a) + (1 if kind == "longer" else -1))
    elif kind == "extra_axis":
        step[key] = a[None]
    elif kind == "scalar":
        step[key] = a[0]
    elif kind == "nonfinite":
        step[key] = _with_nonfinite(a, where, value)
    elif kind == "object":
        step[key] = np.array([a, None], dtype=object)
    else:
        raise AssertionError(kind)
    np.savez(root / fname, **step)
    return fname


CALVIN_FILES: dict[str, tuple[Callable[[Path], None], str, dict]] = {
    "step-truncated": (lambda r: _truncate(r / "episode_0000012.npz", 0.5), "0000012", {}),
    "step-not-npz": (
        lambda r: np.save(open(r / "episode_0000011.npz", "wb"), np.zeros(3)),
        "episode_0000011.npz",
        {},
    ),
    "step-garbage": (
        lambda r: (r / "episode_0000015.npz").write_bytes(b"PK\x03\x04 not a zip"),
        "episode_0000015.npz",
        {},
    ),
    "step-missing": (lambda r: (r / "episode_0000016.npz").unlink(), "episode_0000016.npz", {}),
    "bounds-missing": (lambda r: (r / "ep_start_end_ids.npy").unlink(), "ep_start_end_ids", {}),
    "bounds-truncated": (lambda r: _truncate(r / "ep_start_end_ids.npy", 0.7), "ep_start_end", {}),
    "bounds-float": (
        lambda r: np.save(r / "ep_start_end_ids.npy", np.array([[10.0, 12.0]])),
        "ep_start_end_ids",
        {},
    ),
    "bounds-three-columns": (
        lambda r: np.save(r / "ep_start_end_ids.npy", np.array([[10, 11, 12]])),
        "ep_start_end_ids",
        {},
    ),
    "bounds-reversed": (
        lambda r: np.save(r / "ep_start_end_ids.npy", np.array([[12, 10]])),
        "ep_start_end_ids",
        {},
    ),
    "bounds-empty": (  # no episode at all
        lambda r: np.save(r / "ep_start_end_ids.npy", np.zeros((0, 2), np.int64)),
        "segments",
        {},
    ),
    "bounds-past-the-steps": (  # lengths that disagree: a segment longer than the steps
        lambda r: np.save(r / "ep_start_end_ids.npy", np.array([[10, 19]])),
        "episode_0000018.npz",
        {},
    ),
    "bounds-object": (
        lambda r: np.save(
            r / "ep_start_end_ids.npy", np.array([[10, None]], dtype=object), allow_pickle=True
        ),
        "ep_start_end_ids",
        {},
    ),
    "lang-truncated": (
        lambda r: _truncate(r / "lang_annotations" / "auto_lang_ann.npy", 0.5),
        "auto_lang_ann.npy",
        {"segments": "lang"},
    ),
    "lang-not-a-dict": (
        lambda r: np.save(r / "lang_annotations" / "auto_lang_ann.npy", np.zeros(3)),
        "auto_lang_ann.npy",
        {"segments": "lang"},
    ),
    "lang-missing-key": (
        lambda r: np.save(
            r / "lang_annotations" / "auto_lang_ann.npy",
            {"info": {"indx": [(11, 13)]}, "language": {"ann": ["open it"]}},
            allow_pickle=True,
        ),
        "language/task",
        {"segments": "lang"},
    ),
    "lang-lengths": (
        lambda r: np.save(
            r / "lang_annotations" / "auto_lang_ann.npy",
            {
                "info": {"indx": [(11, 13), (14, 16)]},
                "language": {"task": ["open_drawer"], "ann": ["a"]},
            },
            allow_pickle=True,
        ),
        "language/task",
        {"segments": "lang"},
    ),
    "lang-task-not-a-list": (
        lambda r: np.save(
            r / "lang_annotations" / "auto_lang_ann.npy",
            {"info": {"indx": [(11, 13)]}, "language": {"task": 3, "ann": ["a"]}},
            allow_pickle=True,
        ),
        "language/task",
        {"segments": "lang"},
    ),
    "image-shapes-differ": (
        lambda r: np.savez(
            r / "episode_0000011.npz", **{**_step(11), "rgb_static": np.zeros((5, 6, 3), np.uint8)}
        ),
        "rgb_static",
        {"image_keys": ["rgb_static"]},
    ),
}


@pytest.fixture(scope="module")
def calvin_valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _write_split(tmp_path_factory.mktemp("calvin_valid") / "validation")
    assert [len(ep) for ep in read_calvin_episodes(root, action_dim=7)] == [3, 5]  # loads
    assert len(read_calvin_episodes(root, segments="lang")) == 2
    return root


def _calvin_copy(valid: Path, tmp: Path) -> Path:
    root = tmp / "validation"
    shutil.copytree(valid, root)
    return root


def _calvin_refuses(root: Path, kwargs: dict, *names: str) -> None:
    """Both readers refuse: CALVIN's own with CalvinDatasetError, otpr's with DatasetError."""
    _one_line_error(lambda: read_calvin_segments(root, **kwargs), CalvinDatasetError, *names)
    _one_line_error(lambda: read_calvin_episodes(root, **kwargs), DatasetError, *names)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("text", "robot_obs"),
        ("object", "scene_obs"),
        ("extra_axis", "rel_actions"),
        ("scalar", "robot_obs"),
        ("shorter", "scene_obs"),
        ("nonfinite", "robot_obs"),
        ("drop", "scene_obs"),
    ],
)
def test_calvin_malformed_step(calvin_valid: Path, tmp_path: Path, kind: str, key: str) -> None:
    root = _calvin_copy(calvin_valid, tmp_path)
    fname = _calvin_rewrite(root, 14, kind, key, 3, -np.inf)
    _calvin_refuses(root, {}, fname, key)


@pytest.mark.parametrize("case", list(CALVIN_FILES))
def test_calvin_malformed_files(calvin_valid: Path, tmp_path: Path, case: str) -> None:
    edit, name, kwargs = CALVIN_FILES[case]
    root = _calvin_copy(calvin_valid, tmp_path)
    edit(root)
    _calvin_refuses(root, kwargs, name)


@PROPERTY
@given(data=st.data())
def test_calvin_property(
    calvin_valid: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = _calvin_copy(calvin_valid, tmp_path_factory.mktemp("calvin"))
    kinds = ("drop", "text", "longer", "shorter", "extra_axis", "scalar", "nonfinite", "object")
    corruption = data.draw(st.sampled_from(kinds + ("file",)))
    if corruption == "file":
        edit, name, kwargs = CALVIN_FILES[data.draw(st.sampled_from(sorted(CALVIN_FILES)))]
        edit(root)
        names: tuple[str, ...] = (name,)
    else:
        step = data.draw(st.integers(10, 17))
        key = data.draw(st.sampled_from(CALVIN_STEP_KEYS))
        fname = _calvin_rewrite(
            root, step, corruption, key, data.draw(st.integers(0, 100)), data.draw(NONFINITE)
        )
        names, kwargs = (fname, key), {}
    _calvin_refuses(root, kwargs, *names)


# ------------------------------------------------------------------- the console command level


def _refuses(cwd: Path, command: str, *settings: str) -> str:
    """``<command> <settings>`` run as a console command in ``cwd``: status 2, one stderr line
    ``<command>: error: ...``, and nothing written; returns the line."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / command), *settings],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OTPR_DEBUG": ""},
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), done.stderr[-3000:]
    assert list(cwd.iterdir()) == [], list(cwd.iterdir())  # no run directory, no log
    return lines[0]


def _robomimic_cli(valid: Path, tmp: Path, edit: Callable[[h5py.File], object]) -> Path:
    path = _robomimic_copy(valid, tmp)
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def _truncated(path: Path) -> Path:
    _truncate(path, 0.5)
    return path


def _d4rl_cli(valid: Path, tmp: Path) -> Path:
    path = tmp / "d4rl.hdf5"
    shutil.copy(valid, path)
    with h5py.File(path, "a") as f:
        _d4rl_edit(f, "nonfinite", "terminals", 4, np.nan)
    return path


def _minari_cli(valid: Path, tmp: Path) -> Path:
    root, data = _minari_copy(valid, tmp)
    with h5py.File(data / "main_data.hdf5", "a") as f:
        _minari_edit(f, "shorter", 2, "actions", 0, 0.0)
    return root / MINARI_ID


def _calvin_cli(valid: Path, tmp: Path) -> Path:
    root = _calvin_copy(valid, tmp)
    _calvin_rewrite(root, 13, "object", "robot_obs", 0, 0.0)
    return root


# (command, how the file is made from the valid ones, settings, what the line must say). The
# task (reach) wants 4-D actions: each corruption sits where the reader looks before that.
CLI_CASES = {
    "robomimic-empty-demo": (
        "otpr",
        lambda v, t: _robomimic_cli(
            v["robomimic"], t, lambda f: _robomimic_edit(f, "empty", 0, "actions", 0, 0.0)
        ),
        [],
        "demos.hdf5: data/demo_0/obs/robot0_eef_pos: expected a non-empty episode, got 0 steps",
    ),
    "robomimic-text-obs": (
        "otpr-pretrain",
        lambda v, t: _robomimic_cli(
            v["robomimic"], t, lambda f: _robomimic_edit(f, "text", 0, "obs/object", 0, 0.0)
        ),
        [],
        "demos.hdf5: data/demo_0/obs/object: expected numbers (bool, int or float), got dtype |S1",
    ),
    "robomimic-filter-names-a-missing-demo": (
        "otpr-pretrain",
        lambda v, t: _robomimic_cli(
            v["robomimic"], t, ROBOMIMIC_ATTRS["filter-names-a-missing-demo"][0]
        ),
        ["task.demos.filter_key=train"],
        "demos.hdf5: mask/train: expected demos in 'data', got 'demo_9'",
    ),
    "robomimic-truncated": (
        "otpr-pretrain",
        lambda v, t: _truncated(_robomimic_copy(v["robomimic"], t)),
        [],
        "demos.hdf5: not a readable hdf5 file",
    ),
    "d4rl-nan-flag": (
        "otpr-pretrain",
        lambda v, t: _d4rl_cli(v["d4rl"], t),
        ["task.demos.format=d4rl"],
        "d4rl.hdf5: terminals: expected finite flags, got NaN/inf at 4",
    ),
    "minari-length": (
        "otpr-pretrain",
        lambda v, t: _minari_cli(v["minari"], t),
        ["task.demos.format=minari"],
        f"{MINARI_ID}: episode_2/actions: expected 6 steps (as rewards), got 5",
    ),
    "calvin-object-array": (
        "otpr-pretrain",
        lambda v, t: _calvin_cli(v["calvin"], t),
        ["task.demos.format=calvin"],
        "episode_0000013.npz: robot_obs: expected a readable array",
    ),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_commands_refuse_malformed_demo_files(
    robomimic_valid: Path,
    d4rl_valid: Path,
    minari_valid: Path,
    calvin_valid: Path,
    tmp_path: Path,
    case: str,
) -> None:
    command, make, settings, expected = CLI_CASES[case]
    valid = {
        "robomimic": robomimic_valid,
        "d4rl": d4rl_valid,
        "minari": minari_valid,
        "calvin": calvin_valid,
    }
    (tmp_path / "file").mkdir()
    path = make(valid, tmp_path / "file")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    line = _refuses(cwd, command, f"task.demos.path={path}", *settings)
    assert expected in line, line
