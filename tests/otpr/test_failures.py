"""otpr.failures: the printed summary of a Can policy's failures, and the ``otpr-failures``
command's refusals (one line, exit status 2) before any simulator starts. The failure classes
against robosuite's own geometry are tested in tests/envs/test_robomimic.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from otpr.failures import CLASSES, main, summary


def _config(root: Path, task: str) -> Path:
    d = root / task
    d.mkdir()
    (d / "meta.json").write_text("{}")
    (d / "config.yaml").write_text(f"task:\n  name: {task}\n  eval_seed: 100000\n")
    return d


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("otpr-failures: error: "), err
    return lines[0]


def _row(success: bool, lift: float, tilt: float, gap: float) -> dict:
    return {
        "success": success,
        "lift": lift,
        "tilt": tilt,
        "closest": 0.01,
        "final": [0.1, 0.2, 0.9],
        "gap": gap,
        "in_quarter": False,
        "in_goal_bin": False,
    }


def test_summary_rates_and_counts_the_failures() -> None:
    rows = [
        _row(True, 0.16, 3.0, 0.2),
        _row(False, 0.01, 80.0, 0.3),
        _row(False, 0.01, 85.0, 0.3),
        _row(False, 0.15, 5.0, 0.01),
    ]
    lines = summary(rows)
    assert lines[0] == "success 0.250 over 4 episodes"
    assert len(lines) == 1 + 3 + 2  # the rate, one line per failure, one per class seen
    assert lines[-2].split() == CLASSES[0].split() + ["2"]
    assert lines[-1].split() == CLASSES[4].split() + ["1"]
    assert "class" not in rows[0] and rows[3]["class"] == CLASSES[4]


def test_help_says_what_it_does_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "failed" in text and "--checkpoint CHECKPOINT" in text
    assert "example:\n  otpr-failures --checkpoint " in text


def test_errors_are_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no checkpoint here" in _one_error_line(capsys.readouterr().err)
    assert main(["--checkpoint", str(_config(tmp_path, "reach-v3"))]) == 2
    assert "'reach-v3'" in _one_error_line(capsys.readouterr().err)
    can = _config(tmp_path, "can")
    assert main(["--checkpoint", str(can), "--out", str(tmp_path / "no" / "f.json")]) == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)


def test_the_installed_command_fails_with_one_line(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "otpr-failures"
    if not command.exists():
        pytest.skip("otpr-failures is not installed (pip install -e .)")
    done = subprocess.run(
        [str(command), "--checkpoint", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no checkpoint here" in _one_error_line(done.stderr)
