"""Sampler timings: L candidates in one batched call, and our DDIM loop against diffusers'.

Prints (does not assert), as ratios of median wall times after warm-up:

1. one ``sample(obs, L)`` call over one ``sample(obs, 1)`` call (the GPU target is <= 1.5x), and
   the same call against L sequential ``sample(obs, 1)`` calls and against the FLOP bound (L x):
   on a CPU a batched network call is compute-bound, so "L x" is the honest ceiling there.
2. our DDIM loop (``policies.samplers.ddim_sample``) over diffusers' ``DDIMScheduler`` loop on
   the same network and number of steps (target <= 1.0x). The discrete scheduler drives the
   network with t = timestep / 1000; both loops clip x0 to [-1, 1] and include their per-call
   set-up (our time grid and coefficients, diffusers' ``set_timesteps``).

Run: ``.venv/bin/python -m benchmarks.bench_sampler --threads 1``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from policies import VPSDE, DiffusionPolicy, ResidualMLPScoreNet
from policies.samplers import ddim_sample


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def diffusers_ddim_loop(scheduler, net, x_T: torch.Tensor, cond: torch.Tensor, num_steps: int):
    """diffusion_policy-style loop: set_timesteps, then a network call + scheduler.step per step."""
    scheduler.set_timesteps(num_steps, device=x_T.device)
    x = x_T
    n = x.shape[0]
    for ts in scheduler.timesteps:
        t = (ts.to(x.dtype) / scheduler.config.num_train_timesteps).expand(n)
        eps = net(x, t, cond)
        x = scheduler.step(eps, ts, x, eta=0.0).prev_sample
    return x


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--obs-dim", type=int, default=40)
    parser.add_argument("--obs-horizon", type=int, default=1)
    parser.add_argument("--horizon", type=int, default=4)
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=16, help="L candidates per state")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    L, steps = args.num_samples, args.num_steps
    cond_dim = args.obs_horizon * args.obs_dim
    net = ResidualMLPScoreNet(
        args.action_dim, args.horizon, cond_dim, hidden=(args.width,) * 3, device=device
    ).eval()
    policy = DiffusionPolicy(
        args.obs_dim, args.action_dim, args.obs_horizon, args.horizon, net, VPSDE(),
        sampler="ddim", num_steps=steps, eta=0.0, clip_sample=True, device=device,
    )  # fmt: skip
    policy.normalizer.fit(torch.randn(256, args.obs_dim), torch.rand(256, args.action_dim) * 2 - 1)
    obs = torch.randn(1, args.obs_horizon, args.obs_dim, device=device)

    def rep(fn):
        return median_time(fn, args.repeats, args.warmup, device)

    print(
        f"# device={device} threads={args.threads} net=ResidualMLP {args.width}x3 "
        f"obs={args.obs_horizon}x{args.obs_dim} chunk={args.horizon}x{args.action_dim} "
        f"DDIM {steps} steps, L={L}, median of {args.repeats} after {args.warmup} warm-up"
    )
    with torch.inference_mode():
        t_one = rep(lambda: policy.sample(obs, 1))
        t_batched = rep(lambda: policy.sample(obs, L))
        t_sequential = rep(lambda: [policy.sample(obs, 1) for _ in range(L)])
    print(f"sample(obs, 1)              {1e3 * t_one:8.3f} ms")
    print(f"sample(obs, {L})             {1e3 * t_batched:8.3f} ms")
    print(f"{L} x sample(obs, 1)         {1e3 * t_sequential:8.3f} ms")
    print(
        f"(1) L={L} batched / L=1:                 {t_batched / t_one:6.2f}x  (GPU target <= 1.5x)"
    )
    print(f"    L={L} batched / {L} sequential L=1:  {t_batched / t_sequential:6.2f}x")
    print(f"    L={L} batched / FLOP bound ({L}x L=1): {t_batched / (L * t_one):6.2f}x")

    try:
        from diffusers import DDIMScheduler
    except ImportError:
        print("(2) skipped: diffusers is not installed (pip install otpr[bench])")
        return
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        clip_sample=True, set_alpha_to_one=True,
    )  # fmt: skip
    sde = policy.sde
    for n in (1, L):
        cond = policy.normalizer.normalize_obs(obs).flatten(1).repeat_interleave(n, 0)
        x_T = torch.randn(n, args.horizon, args.action_dim, device=device)

        def eps_fn(x, t, cond=cond):
            return net(x, t, cond)

        with torch.inference_mode():
            t_ours = rep(lambda x_T=x_T: ddim_sample(eps_fn, sde, x_T, steps, clip_x0=1.0))
            t_theirs = rep(
                lambda x_T=x_T, cond=cond: diffusers_ddim_loop(scheduler, net, x_T, cond, steps)
            )
        print(
            f"(2) batch {n:3d}: ours {1e3 * t_ours:7.3f} ms, diffusers {1e3 * t_theirs:7.3f} ms, "
            f"ours / diffusers = {t_ours / t_theirs:5.2f}x  (target <= 1.0x)"
        )


if __name__ == "__main__":
    main()
