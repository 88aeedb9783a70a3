"""scripts.average_weights: the element-wise mean of the acting weights, refusing a mismatch."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scripts.average_weights import average


def _ckpt(root: Path, name: str, tensors: dict[str, torch.Tensor], ema: bool = False) -> Path:
    d = root / name
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({}))
    save_file({k: v * 100 for k, v in tensors.items()}, str(d / "policy.safetensors"))
    if ema:  # the acting weights are the average's; the trained ones must not enter the mean
        save_file(tensors, str(d / "policy_ema.safetensors"))
    else:
        save_file(tensors, str(d / "policy.safetensors"))
    return d


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
