"""Conditional noise-prediction networks eps_theta(x, t, cond) for action chunks.

Both networks map x [B, H, action_dim], t [B] (continuous, in [0, 1]; embedded as 1000 t so the
sinusoidal frequencies match discrete-step DDPM models) and cond [B, cond_dim] (the flattened
last T_o normalised observations, or encoder features) to eps_hat with x's shape.

* ``ResidualMLPScoreNet``: DPPO's ``DiffusionMLP`` (Ren et al. 2024): a sinusoidal time
  embedding, the flattened chunk and the condition concatenated into a residual MLP.
* ``TemporalUnet1D``: Chi et al. 2023's ``ConditionalUnet1D``: Conv1d residual blocks over the
  horizon, FiLM-conditioned on [time embedding, cond], with down/up sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIME_SCALE = 1000.0
ACTIVATIONS = {"mish": nn.Mish, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of a scalar per sample: [B] -> [B, dim] (dim even)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb: dim must be an even int >= 2, got {dim}")
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / max(half - 1, 1)
        freqs = torch.exp(torch.arange(half, device=x.device, dtype=x.dtype) * -scale)
        arg = x[:, None] * freqs[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


def _check_inputs(name: str, x: Tensor, t: Tensor, cond: Tensor, shape: tuple, cond_dim: int):
    if x.dim() != 3 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{name}: x must have shape [B, {shape[0]}, {shape[1]}], got {list(x.shape)}"
        )
    b = x.shape[0]
    if t.shape != (b,):
        raise ValueError(f"{name}: t must have shape [B={b}], got {list(t.shape)}")
    if cond.shape != (b, cond_dim):
        raise ValueError(
            f"{name}: cond must have shape [B={b}, {cond_dim}], got {list(cond.shape)}"
        )


class TwoLayerPreActResidual(nn.Module):
    """h + W2 act(LN(W1 act(LN(h)))): DPPO's ``TwoLayerPreActivationResNetLinear``."""

    def __init__(self, dim: int, activation: str = "mish", use_layernorm: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim) if use_layernorm else nn.Identity()
        self.norm2 = nn.LayerNorm(dim) if use_layernorm else nn.Identity()
        self.l1 = nn.Linear(dim, dim)
        self.l2 = nn.Linear(dim, dim)
        self.act = _activation(activation)

    def forward(self, h: Tensor) -> Tensor:
        out = self.l1(self.act(self.norm1(h)))
        out = self.l2(self.act(self.norm2(out)))
        return h + out


class ResidualMLPScoreNet(nn.Module):
    """DPPO-style residual MLP eps_theta(x, t, cond) over a flattened action chunk.

    Layout for hidden=(w,) * (2n + 1): Linear(in, w), n residual blocks of two w x w layers,
    act, Linear(w, H * action_dim); in = H * action_dim + time_dim + cond_dim. All hidden widths
    must be equal and their count odd (DPPO's ``ResidualMLP`` constraint), e.g. (256, 256, 256)
    is one input layer plus one two-layer residual block.
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        cond_dim: int,
        hidden: tuple[int, ...] = (256, 256, 256),
        time_dim: int = 16,
        activation: str = "mish",
        use_layernorm: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)
        if len(hidden) == 0 or len(set(hidden)) != 1 or len(hidden) % 2 == 0:
            raise ValueError(
                f"ResidualMLPScoreNet: hidden={hidden}; expected an odd number of equal widths, "
                "e.g. (256, 256, 256) = input layer + one two-layer residual block"
            )
        for key, v in (("action_dim", action_dim), ("horizon", horizon), ("time_dim", time_dim)):
            if v < 1:
                raise ValueError(f"ResidualMLPScoreNet: {key} must be >= 1, got {v}")
        if cond_dim < 0:
            raise ValueError(f"ResidualMLPScoreNet: cond_dim must be >= 0, got {cond_dim}")
        self.action_dim, self.horizon, self.cond_dim = action_dim, horizon, cond_dim
        width = hidden[0]
        self.time_embedding = nn.Sequential(
            SinusoidalPosEmb(time_dim),
            nn.Linear(time_dim, time_dim * 2),
            _activation(activation),
            nn.Linear(time_dim * 2, time_dim),
        )
        in_dim = horizon * action_dim + time_dim + cond_dim
        self.input_layer = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(
            *[
                TwoLayerPreActResidual(width, activation, use_layernorm)
                for _ in range((len(hidden) - 1) // 2)
            ]
        )
        self.out_act = _activation(activation)
        self.output_layer = nn.Linear(width, horizon * action_dim)
        self.to(device)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        _check_inputs(
            "ResidualMLPScoreNet", x, t, cond, (self.horizon, self.action_dim), self.cond_dim
        )
        emb = self.time_embedding(t * TIME_SCALE)
        h = self.input_layer(torch.cat((x.flatten(1), emb, cond), dim=-1))
        h = self.output_layer(self.out_act(self.blocks(h)))
        return h.view_as(x)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_ch),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1d blocks with FiLM in between: out = scale(c) * block1(x) + bias(c) (Chi et al.)."""

    def __init__(
        self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int
    ) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.out_ch = out_ch
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.residual_conv = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        out = self.block1(x)
        scale, bias = self.cond_encoder(cond).unsqueeze(-1).chunk(2, dim=1)
        out = self.block2(scale * out + bias)
        return out + self.residual_conv(x)


class TemporalUnet1D(nn.Module):
    """Chi et al. (2023) ``ConditionalUnet1D`` over the horizon axis of an action chunk.

    Channels are the action dims; levels are ``down_dims``. Each level has two FiLM residual
    blocks then a stride-2 downsample (none at the last level); the decoder mirrors it with skip
    connections. The global condition of every block is [time embedding(1000 t), cond].

    Horizon: the len(down_dims) - 1 downsamplings need H divisible by 2^(len(down_dims) - 1). Any
    other H is zero-padded at the end to the next multiple and the output cropped back to H, so
    e.g. H = 10 with three levels runs on 12 steps (``padded_horizon``).
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        cond_dim: int,
        down_dims: tuple[int, ...] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        time_dim: int = 128,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        down_dims = tuple(down_dims)
        if len(down_dims) < 1:
            raise ValueError("TemporalUnet1D: down_dims must name at least one level")
        bad = [d for d in down_dims if d % n_groups]
        if bad:
            raise ValueError(
                f"TemporalUnet1D: every down_dims entry must be divisible by n_groups={n_groups} "
                f"(GroupNorm); {bad} are not"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TemporalUnet1D: kernel_size must be odd >= 1, got {kernel_size}")
        self.action_dim, self.horizon, self.cond_dim = action_dim, horizon, cond_dim
        multiple = 2 ** (len(down_dims) - 1)
        self.padded_horizon = math.ceil(horizon / multiple) * multiple
        self.time_embedding = nn.Sequential(
            SinusoidalPosEmb(time_dim),
            nn.Linear(time_dim, time_dim * 4),
            nn.Mish(),
            nn.Linear(time_dim * 4, time_dim),
        )
        film_dim = time_dim + cond_dim
        k = kernel_size
        all_dims = (action_dim, *down_dims)
        in_out = list(zip(all_dims[:-1], all_dims[1:]))
        self.down_modules = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            is_last = i == len(in_out) - 1
            self.down_modules.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1D(d_in, d_out, film_dim, k, n_groups),
                        ConditionalResidualBlock1D(d_out, d_out, film_dim, k, n_groups),
                        nn.Identity() if is_last else nn.Conv1d(d_out, d_out, 3, 2, 1),
                    ]
                )
            )
        mid = all_dims[-1]
        self.mid_modules = nn.ModuleList(
            [ConditionalResidualBlock1D(mid, mid, film_dim, k, n_groups) for _ in range(2)]
        )
        self.up_modules = nn.ModuleList()
        for d_in, d_out in reversed(in_out[1:]):
            self.up_modules.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1D(d_out * 2, d_in, film_dim, k, n_groups),
                        ConditionalResidualBlock1D(d_in, d_in, film_dim, k, n_groups),
                        nn.ConvTranspose1d(d_in, d_in, 4, 2, 1),
                    ]
                )
            )
        self.final_conv = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], k, n_groups),
            nn.Conv1d(down_dims[0], action_dim, 1),
        )
        self.to(device)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        _check_inputs("TemporalUnet1D", x, t, cond, (self.horizon, self.action_dim), self.cond_dim)
        film = torch.cat((self.time_embedding(t * TIME_SCALE), cond), dim=-1)
        h = x.transpose(1, 2)  # [B, action_dim, H]
        if self.padded_horizon != self.horizon:
            h = F.pad(h, (0, self.padded_horizon - self.horizon))
        skips = []
        for res1, res2, down in self.down_modules:
            h = res2(res1(h, film), film)
            skips.append(h)
            h = down(h)
        for res in self.mid_modules:
            h = res(h, film)
        for res1, res2, up in self.up_modules:
            h = torch.cat((h, skips.pop()), dim=1)
            h = up(res2(res1(h, film), film))
        h = self.final_conv(h)[..., : self.horizon]
        return h.transpose(1, 2)
