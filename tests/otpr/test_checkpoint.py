"""Run-directory locking: one training process per run directory."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from otpr.checkpoint import CheckpointError, RunLock


def _lock_file(run_dir: Path, pid: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".lock").write_text(f"{pid} {socket.gethostname()}")


def test_a_live_holder_is_refused_by_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path, holder.pid)
        with pytest.raises(CheckpointError, match=str(holder.pid)):
            RunLock(tmp_path).acquire()
        assert (tmp_path / ".lock").exists()  # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holder_is_taken_over_and_released(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _lock_file(tmp_path, gone.pid)  # a run killed without cleaning up
    lock = RunLock(tmp_path)
    lock.acquire()
    assert (tmp_path / ".lock").read_text().split()[0] != str(gone.pid)
    with pytest.raises(CheckpointError, match="in use"):
        other_host = tmp_path / "other"
        other_host.mkdir()
        (other_host / ".lock").write_text("1 some-other-machine")
        RunLock(other_host).acquire()  # another host's lock cannot be checked: refused
    lock.release()
    assert not (tmp_path / ".lock").exists()
