"""otpr.average: the element-wise mean of the acting weights, refusing a mismatch; the
``otpr-average`` command writes a weights-only checkpoint or fails with one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from otpr.average import average, main
from otpr.checkpoint import acting_weights, resolve


def _ckpt(root: Path, name: str, tensors: dict[str, torch.Tensor], ema: bool = False) -> Path:
    d = root / name
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({}))
    (d / "config.yaml").write_text(f"task:\n  name: {name}\n")
    save_file({k: v * 100 for k, v in tensors.items()}, str(d / "policy.safetensors"))
    if ema:  # the acting weights are the average's; the trained ones must not enter the mean
        save_file(tensors, str(d / "policy_ema.safetensors"))
        (d / "training_state").mkdir()
        (d / "training_state" / "loop.json").write_text("{}")
    else:
        save_file(tensors, str(d / "policy.safetensors"))
    return d


def _one_error_line(err: str, prog: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def test_average_is_the_mean_of_the_acting_weights(tmp_path: Path) -> None:
    a = _ckpt(tmp_path, "a", {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])})
    b = _ckpt(tmp_path, "b", {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([3])}, ema=True)
    out = average([a, b])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].tolist() == [3]  # integer buffers are copied, not averaged
    trained = average([a, b], weights="trained")  # b's trained weights are 100x its average
    torch.testing.assert_close(trained["w"], torch.tensor([150.5, 301.0]))
    c = _ckpt(tmp_path, "c", {"w": torch.tensor([1.0, 2.0, 3.0]), "n": torch.tensor([3])})
    with pytest.raises(ValueError, match="do not match"):
        average([a, c])


def test_main_writes_a_weights_only_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = _ckpt(tmp_path, "b", {"w": torch.tensor([3.0, 6.0])}, ema=True)
    a = _ckpt(tmp_path, "a", {"w": torch.tensor([1.0, 2.0])})
    out = tmp_path / "soups" / "soup"
    assert main(["--out", str(out), str(b), str(a)]) == 0
    assert resolve(out) == out
    # the first checkpoint's config, its EMA and training state left behind: the mean acts
    assert (out / "config.yaml").read_text() == (b / "config.yaml").read_text()
    assert acting_weights(out) == "policy"
    assert not (out / "training_state").exists()
    torch.testing.assert_close(
        load_file(str(out / "policy.safetensors"))["w"], torch.tensor([2.0, 4.0])
    )
    assert (out / "sources.txt").read_text().split() == [str(b), str(a)]
    assert sorted(p.name for p in out.parent.iterdir()) == ["soup"]  # no temporary left
    assert "mean of 2 checkpoints" in capsys.readouterr().out


def test_help_says_what_it_does_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "element-wise" in text and "--out OUT" in text
    assert "example:\n  otpr-average --out " in text


def test_errors_are_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _ckpt(tmp_path, "a", {"w": torch.tensor([1.0, 2.0])})
    c = _ckpt(tmp_path, "c", {"w": torch.tensor([1.0, 2.0, 3.0])})
    out = tmp_path / "soup"
    assert main(["--out", str(out), str(a), str(tmp_path / "missing")]) == 2
    assert "missing" in _one_error_line(capsys.readouterr().err, "otpr-average")
    assert main(["--out", str(out), str(a), str(c)]) == 2
    assert "do not match" in _one_error_line(capsys.readouterr().err, "otpr-average")
    assert not out.exists() and not list(tmp_path.glob(".soup*"))
    out.mkdir()
    assert main(["--out", str(out), str(a), str(a)]) == 2
    assert "exists" in _one_error_line(capsys.readouterr().err, "otpr-average")


def test_the_installed_command_fails_with_one_line(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "otpr-average"
    if not command.exists():
        pytest.skip("otpr-average is not installed (pip install -e .)")
    done = subprocess.run(
        [str(command), "--out", str(tmp_path / "soup"), str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no checkpoint here" in _one_error_line(done.stderr, "otpr-average")
