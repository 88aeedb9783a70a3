"""Compatibility-based resampling (OTPR Algorithm 1), usable in any RL loop.

For each state, draw ``L`` candidate action chunks in one batched call, weigh them, and pick one::

    sampler = CompatibilitySampler(sample_fn, weight_fn, num_samples=8, mode="sample")
    actions, info = sampler(obs)           # actions: [B, *action_shape]

``sample_fn(obs, n) -> [B, n, *action_shape]`` and ``weight_fn(obs, actions) -> [B, n]``
(non-negative). Ready-made weight functions are below: the compatibility ``H`` of fitted OT
potentials, ``exp(Q / temperature)``, expectile advantage weights and uniform; the pure
per-row forms :func:`exp_q` and :func:`conditional_plan` (guidance Hc) act on Q values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from policies.sde import generator_device

SampleFn = Callable[[torch.Tensor, int], torch.Tensor]
WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("sample", "argmax", "softmax")


class CompatibilitySampler:
    """Draw ``num_samples`` candidates per state and select one by weight.

    Modes:
      - ``sample``: categorical with probability ``w_l / sum_j w_j`` (OTPR's resampling);
      - ``argmax``: the best candidate (ties go to the first);
      - ``softmax``: categorical with probability ``softmax(w / temperature)`` (use with raw
        scores such as Q, which may be negative).

    A state whose weights are all zero (``sample`` mode) falls back to a uniform choice; the
    count is returned as ``info["uniform_fallback"]``. Negative or non-finite weights raise.
    """

    def __init__(
        self,
        sample_fn: SampleFn,
        weight_fn: WeightFn,
        num_samples: int = 8,
        mode: str = "sample",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.sample_fn = sample_fn
        self.weight_fn = weight_fn
        self.num_samples = num_samples
        self.mode = mode
        self.temperature = temperature
        self.generator = generator

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        candidates = self.sample_fn(obs, self.num_samples)
        batch = obs.shape[0]
        if candidates.shape[:2] != (batch, self.num_samples):
            raise ValueError(
                f"sample_fn returned shape {tuple(candidates.shape)}, expected "
                f"({batch}, {self.num_samples}, ...)"
            )
        if self.num_samples == 1:
            return candidates[:, 0], {"sampler/uniform_fallback": 0.0, "sampler/weight_mean": 1.0}
        weights = self.weight_fn(obs, candidates)
        index, info = select(weights, self.mode, self.temperature, self.generator)
        chosen = candidates[torch.arange(batch, device=candidates.device), index]
        return chosen, info


def select(
    weights: torch.Tensor,
    mode: str = "sample",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pick one index per row of ``weights`` [B, L]; see :class:`CompatibilitySampler`."""
    if weights.ndim != 2:
        raise ValueError(f"weights must have shape [B, L], got {tuple(weights.shape)}")
    if not torch.isfinite(weights).all():
        raise ValueError("weight_fn returned non-finite weights")
    info: dict[str, float] = {"sampler/weight_mean": float(weights.mean())}
    if mode == "argmax":
        index = weights.argmax(dim=1)
        info["sampler/uniform_fallback"] = 0.0
        return index, info
    if mode == "softmax":
        probs = torch.softmax(weights.double() / temperature, dim=1)
        info["sampler/uniform_fallback"] = 0.0
    else:
        if (weights < 0).any():
            raise ValueError("weight_fn returned negative weights; use mode='softmax' for scores")
        total = weights.double().sum(dim=1, keepdim=True)
        zero = total.squeeze(1) <= 0
        probs = torch.where(
            zero[:, None], torch.ones_like(weights, dtype=torch.double), weights.double()
        )
        probs = probs / probs.sum(dim=1, keepdim=True)
        info["sampler/uniform_fallback"] = float(zero.sum())
    # drawn where the generator lives (a CPU generator serves weights on any device)
    where = generator_device(generator, probs.device)
    index = torch.multinomial(probs.to(where, torch.float32), 1, generator=generator)
    return index.squeeze(1).to(weights.device), info


# ---------------------------------------------------------------- ready-made weight functions


def uniform_weights() -> WeightFn:
    """Every candidate weighs 1 (plain L-sample behaviour policy)."""
    return lambda obs, actions: torch.ones(actions.shape[:2], device=actions.device)


def exp_q(q: torch.Tensor, temperature: float = 1.0, units: str = "absolute") -> torch.Tensor:
    """``exp((Q - max_l Q) / T)`` along each row (a state's L candidates) of ``q`` [B, L]; the
    row-max shift changes no choice. ``units="within_state"``: T = temperature x the row's std
    of Q, so a state whose candidates differ by 0.01 in Q is ranked as sharply as one whose
    differ by 1 (a row of one candidate weighs 1)."""
    if units not in ("absolute", "within_state"):
        raise ValueError(f"units must be 'absolute' or 'within_state', got {units!r}")
    scale = torch.as_tensor(temperature, dtype=q.dtype, device=q.device)
    if units == "within_state" and q.shape[1] > 1:
        scale = scale * q.std(dim=1, keepdim=True).clamp_min(1e-8)
    return torch.exp((q - q.max(dim=1, keepdim=True).values) / scale)


def conditional_plan(q: torch.Tensor, lam: float) -> torch.Tensor:
    """OTPR's L2-regularised plan between a state and its L candidates with the action
    marginal relaxed (guidance Hc), for Q values ``q`` [B, L]: weights with mean 1 per row.

    With only the state's marginal kept, the dual has a closed form per state:
    ``pi(a_l | s) = (u(s) - c(s, a_l))_+ / (2 lam)`` with u(s) the threshold that makes the
    plan sum to 1, i.e. the Euclidean projection of ``-c / (2 lam)`` onto the simplex
    (sparsemax). The cost is standardised over the row, ``c = -(Q - mean Q) / std Q``, so lam
    is in units of the within-state spread: the candidates that Q ranks low get weight exactly
    0, and lam sets how many keep some (a row of one candidate weighs 1). Why not H: with the
    action marginal kept, every candidate must be transported somewhere, so v(a) raises the
    actions no state wants and the within-state order stops following Q (docs/results.md)."""
    if q.shape[1] == 1:
        return torch.ones_like(q)
    spread = q.std(dim=1, keepdim=True).clamp_min(1e-8)
    z = (q - q.mean(dim=1, keepdim=True)) / spread / (2.0 * lam)
    srt, _ = torch.sort(z, dim=1, descending=True)
    k = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype)
    cum = srt.cumsum(dim=1)
    support = (1.0 + k * srt) > cum  # the sorted candidates that keep weight
    size = support.sum(dim=1, keepdim=True)
    tau = (cum.gather(1, size - 1) - 1.0) / size.to(z.dtype)
    return (z - tau).clamp_min(0.0) * z.shape[1]


def exp_q_weights(
    q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    temperature: float = 1.0,
    units: str = "absolute",
) -> WeightFn:
    """A weight function: :func:`exp_q` of ``q_fn`` over each state's candidates."""

    def weight(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return exp_q(_paired(q_fn, obs, actions), temperature, units)

    return weight


def expectile_advantage_weights(
    q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    v_fn: Callable[[torch.Tensor], torch.Tensor],
    expectile: float = 0.7,
) -> WeightFn:
    """The expectile weights ``|tau - 1(A < 0)|`` with ``A = Q(s, a) - V(s)``: which side of V an
    action lies on, not how far. IDQL's implicit policy divides this by ``|A|``
    (``otpr.algos.idql``); without that factor it is the sign-only weighting of OTPR's
    ``algo.guidance=A``."""

    def weight(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        adv = _paired(q_fn, obs, actions) - v_fn(obs)[:, None]
        return torch.where(adv < 0, 1.0 - expectile, expectile).to(adv.dtype)

    return weight


def _paired(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    obs: torch.Tensor,
    actions: torch.Tensor,
) -> torch.Tensor:
    """Evaluate ``fn(obs_i, action_il)`` for all candidates in one call -> [B, L]."""
    batch, num = actions.shape[:2]
    obs_rep = (
        obs.unsqueeze(1).expand(batch, num, *obs.shape[1:]).reshape(batch * num, *obs.shape[1:])
    )
    return fn(obs_rep, actions.reshape(batch * num, *actions.shape[2:])).reshape(batch, num)
