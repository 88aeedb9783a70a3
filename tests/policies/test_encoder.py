"""The image encoder (policies/encoder.py) and the timm import workaround."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="needs timm (otpr[pixels])"
)


def _encoder(**kwargs):
    from policies.encoder import ImageEncoder

    torch.manual_seed(0)
    return ImageEncoder(64, num_keypoints=4, **kwargs)


def test_spatial_softmax_finds_a_bright_spot() -> None:
    """The expected coordinates of a map peaked at one cell are that cell's (x, y) in [-1, 1]."""
    from policies.encoder import SpatialSoftmax

    head = SpatialSoftmax(1, 1)
    with torch.no_grad():
        head.proj.weight.fill_(1.0)
        head.proj.bias.zero_()
    fmap = torch.zeros(1, 1, 3, 5)
    fmap[0, 0, 2, 1] = 50.0  # row 2 of 3 (y = 1), column 1 of 5 (x = -0.5)
    torch.testing.assert_close(head(fmap), torch.tensor([[-0.5, 1.0]]))


def test_features_are_bounded_and_crops_random_only_while_training() -> None:
    enc = _encoder(crop=0.75).eval()
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, b = enc(frames), enc(frames)
    assert a.shape == (3, 8) and (a.abs() <= 1).all()
    torch.testing.assert_close(a, b)  # centred crop: deterministic
    x = frames.permute(0, 3, 1, 2).float()
    assert enc.crop(x).shape[-2:] == (48, 48)
    torch.testing.assert_close(enc.crop(x), x[..., 8:56, 8:56])
    enc.train()
    g = torch.Generator().manual_seed(0)
    crops = [enc.crop(x, g) for _ in range(4)]
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_weights_load_from_a_local_file(tmp_path: Path) -> None:
    """ImageNet weights: a local resnet18 state dict (classifier included) sets the trunk; a
    file of other weights is refused in one line naming it."""
    from safetensors.torch import save_file

    from policies.timm_import import import_timm

    timm = import_timm()
    torch.manual_seed(1)
    full = timm.create_model("resnet18", pretrained=False)  # with its fc classifier
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    enc = _encoder(weights=path)
    for key, value in enc.trunk.state_dict().items():
        torch.testing.assert_close(value, full.state_dict()[key])
    assert not torch.equal(enc.trunk.conv1.weight, _encoder().trunk.conv1.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"^policy.encoder.weights: .*other.pt: not resnet18"):
        _encoder(weights=tmp_path / "other.pt")


def test_timm_import_handles_only_the_missing_nms_error() -> None:
    from policies.timm_import import _MISSING_OP, import_timm

    assert _MISSING_OP.match("operator torchvision::nms does not exist")
    assert _MISSING_OP.match("operator torchvision::qnms does not exist")
    assert not _MISSING_OP.match("operator torchvision::nms does not exist; and more")
    assert not _MISSING_OP.match("CUDA error: no kernel image")
    assert hasattr(import_timm(), "create_model")
