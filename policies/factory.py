"""A fresh diffusion policy from the settings of the ``policy`` config group."""

from __future__ import annotations

from typing import Any

from policies.diffusion import DiffusionPolicy
from policies.networks import ResidualMLPScoreNet, TemporalUnet1D
from policies.sde import VPSDE


def build_policy(
    cfg: Any, obs_dim: int, action_dim: int, obs_horizon: int, horizon: int, device: str
) -> DiffusionPolicy:
    """A fresh diffusion policy. ``cfg`` carries the ``policy`` group's fields (``name``:
    mlp | unet, widths, schedule, sampler, ...; ``otpr.config.PolicyConfig``)."""
    cond_dim = obs_dim * obs_horizon
    if cfg.name == "mlp":
        net = ResidualMLPScoreNet(
            action_dim=action_dim,
            horizon=horizon,
            cond_dim=cond_dim,
            hidden=tuple(cfg.hidden),
            time_dim=cfg.time_emb_dim,
            device=device,
        )
    elif cfg.name == "unet":
        net = TemporalUnet1D(
            action_dim=action_dim,
            horizon=horizon,
            cond_dim=cond_dim,
            down_dims=tuple(cfg.unet_down_dims),
            kernel_size=cfg.unet_kernel_size,
            time_dim=cfg.time_emb_dim,
            device=device,
        )
    else:
        raise ValueError(f"policy.name: must be one of ['mlp', 'unet'], got {cfg.name!r}")
    sde = VPSDE(
        schedule=cfg.schedule, beta_min=cfg.beta_min, beta_max=cfg.beta_max, t_min=cfg.t_min
    )
    return DiffusionPolicy(
        obs_dim=obs_dim,
        action_dim=action_dim,
        obs_horizon=obs_horizon,
        horizon=horizon,
        net=net,
        sde=sde,
        sampler=cfg.sampler,
        num_steps=cfg.num_steps,
        eta=cfg.eta,
        min_std=cfg.min_std,
        temperature=cfg.temperature,
        device=device,
    )
