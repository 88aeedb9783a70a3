"""The image encoder of pixel policies: a ResNet-18 trunk and a spatial-softmax head.

    frame [B, H, W, 3] uint8
      -> crop to ``crop`` x the side (random while training, centred otherwise; robomimic's
         CropRandomizer)
      -> scale to [0, 1], ImageNet mean/std
      -> timm ``resnet18`` trunk, no pooling or classifier: [B, 512, h, w] (h = side / 32)
      -> 1x1 conv to K keypoint maps, softmax over each map's h*w cells
      -> the expected (x, y) of each map, in [-1, 1]: features [B, 2K]

(Levine et al. 2016's spatial softmax as robomimic's ``VisualCore`` uses it.) The features are
bounded by construction, so a policy can normalise them with a fixed range while the encoder
trains. The trunk starts random, or from a local file of ImageNet weights (timm's or
torchvision's ``resnet18`` keys, ``.safetensors`` or a torch file): nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from policies.timm_import import import_timm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SpatialSoftmax(nn.Module):
    """[B, C, h, w] -> the expected image coordinates of ``num_keypoints`` softmax maps,
    [B, 2 * num_keypoints] in [-1, 1] (x then y per keypoint)."""

    def __init__(self, channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num_keypoints, kernel_size=1)

    def forward(self, fmap: Tensor) -> Tensor:
        maps = self.proj(fmap)
        b, k, h, w = maps.shape
        prob = F.softmax(maps.reshape(b, k, h * w), dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        x = (prob * grid_x.reshape(1, 1, -1)).sum(-1)
        y = (prob * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.stack([x, y], dim=-1).reshape(b, 2 * k)


class ImageEncoder(nn.Module):
    """ResNet-18 trunk and spatial-softmax head (module docstring); ``out_dim = 2 *
    num_keypoints``. ``forward`` takes uint8 (or 0-255 float) frames ``[B, H, W, 3]``."""

    def __init__(
        self,
        image_size: int,
        num_keypoints: int = 32,
        crop: float = 0.9,
        weights: str | Path | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {crop}")
        self.image_size = int(image_size)
        self.crop_size = max(1, int(round(crop * image_size)))
        self.num_keypoints = int(num_keypoints)
        timm = import_timm()
        self.trunk = timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="")
        if weights is not None:
            load_trunk_weights(self.trunk, weights)
        self.head = SpatialSoftmax(self.trunk.num_features, num_keypoints)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))
        self.to(device)

    @property
    def out_dim(self) -> int:
        return 2 * self.num_keypoints

    def crop(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B, 3, H, W] -> [B, 3, c, c]: a random window per image in training mode (drawn from
        ``generator``), the centred one otherwise."""
        c, (h, w) = self.crop_size, images.shape[-2:]
        if c >= min(h, w):
            return images
        if not self.training:
            top, left = (h - c) // 2, (w - c) // 2
            return images[..., top : top + c, left : left + c]
        b = images.shape[0]
        top = torch.randint(0, h - c + 1, (b,), generator=generator).tolist()
        left = torch.randint(0, w - c + 1, (b,), generator=generator).tolist()
        return torch.stack([img[:, t : t + c, s : s + c] for img, t, s in zip(images, top, left)])

    def forward(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if frames.shape[-1] != 3 or frames.dim() != 4:
            raise ValueError(f"ImageEncoder: expected [B, H, W, 3], got {list(frames.shape)}")
        x = frames.to(self.mean.device, torch.float32).permute(0, 3, 1, 2) / 255.0
        x = (self.crop(x, generator) - self.mean) / self.std
        return self.head(self.trunk(x))


def load_trunk_weights(trunk: nn.Module, path: str | Path) -> None:
    """Copy a local ``resnet18`` state dict (``.safetensors`` or a torch file; timm's or
    torchvision's names, the classifier ``fc.*`` ignored) into ``trunk``; a file that lacks
    trunk weights or does not fit raises ``ValueError`` naming it and the first missing key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy.encoder.weights: {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            f"policy.encoder.weights: {path}: not resnet18 weights ({len(missing)} trunk "
            f"tensors missing, e.g. {missing[0]!r})"
        )
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(
            f"policy.encoder.weights: {path}: {wrong[0]} has shape "
            f"{tuple(state[wrong[0]].shape)}, resnet18 has {tuple(own[wrong[0]].shape)}"
        )
    trunk.load_state_dict({k: state[k] for k in own})
