"""One-line errors: what is a refusal, how it is printed, and that a refused console command
exits with status 2, prints one line and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from envs.calvin import INSTALL_HINT, CalvinDatasetError, CalvinUnavailableError
from envs.render import RenderError
from otpr import cli  # noqa: F401  registers the config schemas
from otpr.checkpoint import CheckpointError
from otpr.config import ConfigError
from otpr.data import DatasetError, DatasetNotFoundError
from otpr.errors import DEBUG_ENV, ArgumentParser, UsageError, refusal, run_command

BIN = Path(sys.executable).parent


def _kitchen_import_error() -> ImportError:
    """An ImportError that already says what to install, raised from the missing module (as
    envs/kitchen.py does)."""
    try:
        try:
            raise ModuleNotFoundError(
                "No module named 'gymnasium_robotics'", name="gymnasium_robotics"
            )
        except ModuleNotFoundError as e:
            raise ImportError("Franka Kitchen needs gymnasium-robotics (pip install ...)") from e
    except ImportError as err:
        return err


@pytest.mark.parametrize(
    ("err", "line"),
    [
        (DatasetError("d.hdf5: data/demo_0/obs: expected 3 rows, got 2"), "d.hdf5: data/demo_0"),
        (DatasetNotFoundError("x.hdf5: no such dataset file"), "x.hdf5: no such dataset file"),
        (CalvinDatasetError("episode_0000001.npz: robot_obs: expected"), "episode_0000001.npz"),
        (ConfigError("algo.iterations: must be >= 0, got -3"), "algo.iterations: must be >= 0"),
        (CheckpointError("c/meta.json: format_version: expected 2, got 1"), "format_version"),
        (UsageError("checkpoint: required"), "checkpoint: required"),
        (FileNotFoundError(2, "No such file or directory", "a.yaml"), "a.yaml: No such file"),
        (FileNotFoundError("run: no checkpoint here"), "run: no checkpoint here"),
        (ModuleNotFoundError("No module named 'robosuite'", name="robosuite"), "otpr[robomimic]"),
        (ModuleNotFoundError("No module named 'timm.x'", name="timm.x"), "otpr[pixels]"),
        (CalvinUnavailableError(INSTALL_HINT), "calvin_env"),
        (_kitchen_import_error(), "Franka Kitchen needs gymnasium-robotics"),
        (ConfigError("a: first line\n  second line"), "a: first line second line"),
        (FloatingPointError("non-finite training metrics at iteration 2"), "iteration 2"),
        (RenderError("MUJOCO_GL=egl: rendering failed (x)\n  y"), "MUJOCO_GL=egl: rendering"),
    ],
)
def test_refusals_have_one_line(err: Exception, line: str) -> None:
    message = refusal(err)
    assert message is not None and "\n" not in message and line in message, message


@pytest.mark.parametrize(
    "err",
    [
        RuntimeError("a bug"),
        ValueError("a bug"),
        KeyError("a bug"),
        TypeError("a bug"),
        ModuleNotFoundError("No module named 'torch'", name="torch"),  # a broken install
        ImportError("cannot import name 'x' from 'otpr'"),
    ],
)
def test_bugs_are_not_refusals(err: Exception) -> None:
    assert refusal(err) is None


def _compose_error(*overrides: str) -> Exception:
    with initialize_config_module("configs", version_base="1.3"):
        with pytest.raises(Exception) as info:
            compose("config", overrides=list(overrides))
    return info.value


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (("algo.guidence=Q",), ("algo.guidence", "OTPRConfig")),
        (("task=nosuch",), ("task=nosuch", "expected one of", "reach")),
        (("algo.iterations=abc",), ("algo.iterations", "abc", "Integer")),
        (("algo.iterations=[",), ("algo.iterations=[",)),
    ],
)
def test_hydra_config_errors_name_the_key(overrides: tuple[str, ...], words) -> None:
    message = refusal(_compose_error(*overrides))
    assert message is not None and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


def test_appended_keys_that_nothing_reads_are_refused() -> None:
    with initialize_config_module("configs", version_base="1.3"):
        for override, key in (("+foo=1", "foo"), ("+task.demos.pth=x", "task.demos.pth")):
            with pytest.raises(ConfigError, match=f"^{key}: not a setting"):
                cli._to_config(compose("config", overrides=[override]))
        cfg = cli._to_config(compose("config", overrides=["+task.env_kwargs.foo=1"]))
    assert cfg.task.env_kwargs["foo"] == 1  # a free-form dict takes any key


def test_run_command_prints_one_line_and_returns_2(capsys: pytest.CaptureFixture) -> None:
    def refused() -> None:
        raise DatasetError("d.hdf5: actions: expected [3, dim], got (2, 7)")

    assert run_command("otpr-x", refused) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "otpr-x: error: d.hdf5: actions: expected [3, dim], got (2, 7)\n"
    assert run_command("otpr-x", lambda: None) == 0
    assert run_command("otpr-x", lambda: 3) == 3


def test_run_command_keeps_a_bugs_traceback() -> None:
    def bug() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_command("otpr-x", bug)


def test_debug_switch_prints_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def refused() -> None:
        raise ConfigError("algo.iterations: must be >= 0, got -3")

    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run_command("otpr", refused) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in refused" in err
    assert err.rstrip().endswith("otpr.config.ConfigError: algo.iterations: must be >= 0, got -3")
    monkeypatch.setenv(DEBUG_ENV, "0")
    assert run_command("otpr", refused) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_argument_parser_usage_errors_are_refusals() -> None:
    parser = ArgumentParser(prog="otpr-x")
    parser.add_argument("--n", type=int, required=True)
    with pytest.raises(UsageError, match="--n"):
        parser.parse_args([])
    with pytest.raises(UsageError, match="invalid int value"):
        parser.parse_args(["--n", "x"])


# ------------------------------------------------------------------ the real console commands


def _command(cwd: Path, command: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / command), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OTPR_DEBUG": "", **env},
    )


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def _assert_refused(done: subprocess.CompletedProcess, command: str, *words: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        ("otpr", ["algo.iterations=-3"], ["algo.iterations", "got -3"]),
        ("otpr", ["algo.guidence=Q"], ["algo.guidence"]),
        ("otpr", ["+algo.guidence=Q"], ["algo.guidence", "not a setting of OTPRConfig"]),
        ("otpr", ["task=nosuch"], ["task=nosuch", "reach"]),
        ("otpr", ["task.name=nosuch"], ["task.name", "nosuch"]),
        ("otpr", ["video=-1"], ["video", "int >= 0", "got -1"]),
        ("otpr-eval", ["checkpoint=/nonexistent", "video=abc"], ["video", "abc"]),
        ("otpr-pretrain", ["task.demos.path=missing.hdf5"], ["missing.hdf5"]),
        ("otpr-finetune", [], ["checkpoint"]),
        ("otpr-finetune", ["checkpoint=nowhere"], ["nowhere", "no checkpoint"]),
        ("otpr-eval", ["checkpoint=/nonexistent"], ["/nonexistent", "no checkpoint"]),
        ("otpr-demos", ["num_episodes=0"], ["num_episodes", "got 0"]),
        ("otpr-report", ["run_dir=nowhere"], ["nowhere"]),
        ("otpr-bench", ["bench.algos=[bc,sac]"], ["bench.algos", "'sac'"]),
        ("otpr-bench", ["bench=nosuch"], ["bench=nosuch"]),
        ("otpr-failures", [], ["--checkpoint"]),
        ("otpr-average", ["--out", "soup", "nowhere"], ["nowhere"]),
        ("otpr-diagnose", ["--checkpoint", "nowhere"], ["nowhere"]),
    ],
)
def test_a_refused_command_prints_one_line_and_writes_nothing(
    tmp_path: Path, command: str, args: list[str], words: list[str]
) -> None:
    done = _command(tmp_path, command, *args)
    _assert_refused(done, command, *words)
    assert _files(tmp_path) == set()  # no run directory, no cli.log, no data/


def test_a_missing_optional_package_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['robosuite'] = None; "  # as if robosuite were not installed
        "sys.argv = ['otpr-demos', 'task=can', 'num_episodes=1']; "
        "from otpr.cli import demos_main; demos_main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    _assert_refused(done, "otpr-demos", "robosuite", "otpr[robomimic]")
    assert _files(tmp_path) == set()


def test_debug_switch_shows_the_traceback_and_still_writes_nothing(tmp_path: Path) -> None:
    done = _command(tmp_path, "otpr-eval", "checkpoint=/nonexistent", **{DEBUG_ENV: "1"})
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert "FileNotFoundError: /nonexistent: no checkpoint here" in done.stderr
    assert _files(tmp_path) == set()


def test_a_refusal_keeps_a_directory_that_existed_as_it_was(tmp_path: Path) -> None:
    run = tmp_path / "run"
    files = {
        "config.yaml": b"task: {name: reach-v3}\n",
        "cli.log": b"[2026] an earlier run\n",
        ".hydra/config.yaml": b"seed: 0\n",
        "checkpoints/last": b"step_00000010",
    }
    for name, data in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    done = _command(tmp_path, "otpr", f"hydra.run.dir={run}", "task.demos.path=missing.hdf5")
    _assert_refused(done, "otpr", "missing.hdf5")
    assert {str(p) for p in _files(run) if (run / p).is_file()} == set(files)
    for name, data in files.items():
        assert (run / name).read_bytes() == data, name

    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_refused(_command(tmp_path, "otpr", f"hydra.run.dir={empty}", "seed=-1"), "otpr")
    assert empty.is_dir() and _files(empty) == set()


def test_a_bug_keeps_its_traceback_and_its_run_directory(tmp_path: Path) -> None:
    code = (
        "import sys, otpr.loop\n"
        "def run(*args, **kwargs):\n"
        "    raise RuntimeError('a bug in the loop')\n"
        "otpr.loop.run = run\n"
        "sys.argv = ['otpr', 'hydra.run.dir=bugrun']\n"
        "from otpr.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "RuntimeError: a bug in the loop" in done.stderr
    assert "error:" not in done.stderr
    assert (tmp_path / "bugrun" / ".hydra" / "config.yaml").is_file()  # its evidence stays


def test_help_names_the_debug_switch(capsys: pytest.CaptureFixture) -> None:
    from otpr import average, diagnose, failures

    for command in cli.HELP:
        assert f"{DEBUG_ENV}=1" in cli._help(command), command
    for module in (average, diagnose, failures):
        with pytest.raises(SystemExit) as exit_:
            module.main(["--help"])
        assert exit_.value.code == 0 and f"{DEBUG_ENV}=1" in capsys.readouterr().out, module


def test_help_lists_every_algo_config() -> None:
    line = next(x for x in cli._help("otpr").splitlines() if "algo=<name>" in x)
    assert "otpr_paper" in line and "dppo" in line  # a named config as well as the registry
