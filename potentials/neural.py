"""Neural dual potentials u(s), v(a) trained by stochastic ascent on the L2-regularised OT dual.

Follows OTPR (paper 004) eq. 5 (unmasked) and eq. 14 (masked), with u, v parametrised by MLPs as
in Seguy et al. 2018. Unlike the published code, which rebuilds the networks every iteration, the
networks and their optimiser persist across calls (warm start); :meth:`reset_parameters` gives the
rebuild-from-scratch baseline.

Cost and units
--------------
The critic cost reaches the potentials as ``cost_fn(states [k, ds], actions [k, da]) -> [k]``
(e.g. ``-critic.target_q``). With ``cost_normalization="running"`` the critic part is divided by
s, an exponential moving average of its batch standard deviation kept as a buffer (so it is in
the ``state_dict``, and the H used at sampling time is the one the potentials were trained
against). This changes no plan: with lam,

    H = (u + v - c/s)_+ / (2 lam) = (s u + s v - c)_+ / (2 lam s),

which is the plan of the raw cost with regularisation lam * s and potentials s u, s v. (The mean
is not subtracted: a shift is absorbed by the potentials anyway, and a noisy running mean would
move every H at once by shift / (2 lam).)

So ``lam`` is in units of the normalised cost (a cost standard deviation): lam = 0.1 means "one
tenth of the typical spread of -Q in a batch", whatever the reward scale. With
``cost_normalization="none"`` lam is in raw cost units.

Masked OT
---------
With ``masked=True`` every :meth:`update` appends ``num_keypoints`` expert pairs (sampled from
:meth:`set_keypoints`) to both the states and the actions, masks the plan so each keypoint state
only sends mass to its own keypoint action (Gu et al. 2022), and adds the guiding cost
``alpha * JS(R_s, R_a)`` (OTPR eqs. 12-14). The relation vectors R are taken against a FIXED set
of ``num_anchors`` keypoints (evenly spaced through the stored ones), so training and sampling use
the same g. Because a keypoint pair must carry equal mass 1/(n+K) on both sides, masked updates
need as many states as actions (n == m); otherwise the masked dual is unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nets import mlp
from potentials.base import CostFn, Potentials
from potentials.dual import compatibility as _compatibility
from potentials.dual import dual_loss
from potentials.masked import (
    DISTANCES,
    Distance,
    guided_cost,
    guided_cost_paired,
    keypoint_mask,
)

COST_NORMALIZATIONS: tuple[str, ...] = ("running", "none")


class NeuralPotentials(Potentials, nn.Module):
    """MLP potentials u(s), v(a) for the (masked) L2-regularised OT dual.

    Args:
        state_dim: flattened state (observation) size ds.
        action_dim: flattened action (chunk) size da.
        hidden: hidden widths of both MLPs.
        lam: L2 regularisation, in units of the (normalised) cost; see the module docstring.
        lr: Adam learning rate of both potentials.
        masked: use keypoint-masked OT with the guiding cost (needs :meth:`set_keypoints`).
        alpha: weight of the keypoint guiding cost in the total cost, in [0, 1]. The default 0.5
            mixes the normalised critic cost (spread ~1) with g in [0, ln 2]; the published code
            uses alpha = 1 (g only, critic ignored), alpha = 0 is the unguided critic cost.
        rho: relation-vector softmax temperature.
        distance: relation-vector distance, "l2" (squared Euclidean) or "cosine".
        num_keypoints: keypoint pairs appended to each side per masked update.
        num_anchors: keypoints the relation vectors are taken against.
        cost_normalization: "running" (divide the critic cost by an EMA of its batch std) or
            "none".
        norm_momentum: EMA weight of the newest batch in the running cost statistics.
        seed: seed of the keypoint sampler.
        device: torch device.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        lam: float = 0.1,
        lr: float = 1e-4,
        masked: bool = False,
        alpha: float = 0.5,
        rho: float = 0.1,
        distance: Distance = "l2",
        num_keypoints: int = 16,
        num_anchors: int = 32,
        cost_normalization: str = "running",
        norm_momentum: float = 0.01,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        for name, val in (("state_dim", state_dim), ("action_dim", action_dim)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"NeuralPotentials: {name} must be a positive int, got {val!r}")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"NeuralPotentials: lam must be > 0, got {lam!r}")
        if not lr > 0:
            raise ValueError(f"NeuralPotentials: lr must be > 0, got {lr!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"NeuralPotentials: alpha must be in [0, 1], got {alpha!r}")
        if not rho > 0:
            raise ValueError(f"NeuralPotentials: rho must be > 0, got {rho!r}")
        if distance not in DISTANCES:
            raise ValueError(
                f"NeuralPotentials: distance must be one of {DISTANCES}, got {distance!r}"
            )
        if num_keypoints < 1 or num_anchors < 1:
            raise ValueError(
                f"NeuralPotentials: num_keypoints and num_anchors must be >= 1, got "
                f"{num_keypoints!r} and {num_anchors!r}"
            )
        if cost_normalization not in COST_NORMALIZATIONS:
            raise ValueError(
                f"NeuralPotentials: cost_normalization must be one of {COST_NORMALIZATIONS}, got "
                f"{cost_normalization!r}"
            )
        if not 0.0 < norm_momentum <= 1.0:
            raise ValueError(
                f"NeuralPotentials: norm_momentum must be in (0, 1], got {norm_momentum!r}"
            )
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.hidden = tuple(hidden)
        self.lam = float(lam)
        self.lr = float(lr)
        self.masked = masked
        self.alpha = float(alpha)
        self.rho = float(rho)
        self.distance: Distance = distance
        self.num_keypoints = num_keypoints
        self.num_anchors = num_anchors
        self.cost_normalization = cost_normalization
        self.norm_momentum = float(norm_momentum)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

        self.u_net = mlp(state_dim, self.hidden)
        self.v_net = mlp(action_dim, self.hidden)
        self.register_buffer("cost_std", torch.ones(()))
        self.register_buffer("norm_count", torch.zeros((), dtype=torch.long))
        # Expert data, not model state: set again from the demos after loading a checkpoint.
        self.register_buffer("key_states", torch.empty(0, state_dim), persistent=False)
        self.register_buffer("key_actions", torch.empty(0, action_dim), persistent=False)
        self.to(self.device)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)

    # ------------------------------------------------------------------ setup
    def reset_parameters(self) -> None:
        """Re-initialise u, v and the optimiser (the "rebuild every iteration" baseline).

        The running cost statistics and the keypoints are kept.
        """
        for net in (self.u_net, self.v_net):
            for layer in net:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)

    def set_keypoints(self, states: Tensor, actions: Tensor) -> None:
        """Store expert (state, action) pairs: row k of ``states`` [K, ds] pairs row k of
        ``actions`` [K, da]."""
        states = self._check_2d(states, self.state_dim, "set_keypoints: states")
        actions = self._check_2d(actions, self.action_dim, "set_keypoints: actions")
        if states.shape[0] != actions.shape[0] or states.shape[0] == 0:
            raise ValueError(
                f"set_keypoints: need K >= 1 paired rows, got states {tuple(states.shape)} and "
                f"actions {tuple(actions.shape)}"
            )
        self.key_states = states.detach().clone()
        self.key_actions = actions.detach().clone()

    @property
    def anchor_index(self) -> Tensor:
        """Indices of the fixed keypoints the relation vectors are taken against."""
        k = self.key_states.shape[0]
        n = min(k, self.num_anchors)
        return torch.linspace(0, k - 1, n, device=self.device).round().long()

    # ------------------------------------------------------------------ potentials
    def u(self, states: Tensor) -> Tensor:
        return self.u_net(states).squeeze(-1)

    def v(self, actions: Tensor) -> Tensor:
        return self.v_net(actions).squeeze(-1)

    # ------------------------------------------------------------------ cost
    def _normalize(self, raw: Tensor) -> Tensor:
        if self.cost_normalization == "none":
            return raw
        return raw / self.cost_std

    @torch.no_grad()
    def _update_cost_stats(self, raw: Tensor) -> None:
        """EMA of the batch std of the critic cost, weight max(1/count, norm_momentum) on the
        newest batch (an exact running average for the first 1/norm_momentum batches)."""
        if self.cost_normalization == "none":
            return
        std = raw.std().clamp_min(1e-6) if raw.numel() > 1 else torch.ones((), device=raw.device)
        self.norm_count += 1
        b = max(1.0 / float(self.norm_count), self.norm_momentum)
        self.cost_std.mul_(1.0 - b).add_(b * std)

    def _raw_pairwise(self, states: Tensor, actions: Tensor, cost_fn: CostFn) -> Tensor:
        n, m = states.shape[0], actions.shape[0]
        s = states.repeat_interleave(m, dim=0)
        a = actions.repeat(n, 1)
        return self._call_cost(cost_fn, s, a).reshape(n, m)

    @staticmethod
    def _call_cost(cost_fn: CostFn, states: Tensor, actions: Tensor) -> Tensor:
        c = cost_fn(states, actions)
        if not isinstance(c, Tensor) or c.shape != (states.shape[0],):
            shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
            raise ValueError(
                f"cost_fn(states [k, ds], actions [k, da]) must return a tensor of shape "
                f"[k] = [{states.shape[0]}], got {shape}"
            )
        return c.detach().to(states.dtype)

    def _add_guide(self, q_cost: Tensor, states: Tensor, actions: Tensor) -> Tensor:
        if not self.masked:
            return q_cost
        self._require_keypoints()
        idx = self.anchor_index
        return guided_cost(
            q_cost,
            states,
            actions,
            self.key_states[idx],
            self.key_actions[idx],
            self.alpha,
            self.rho,
            self.distance,
        )

    @torch.no_grad()
    def pairwise_cost(self, states: Tensor, actions: Tensor, cost_fn: CostFn) -> Tensor:
        """Total cost on all pairs, states [n, ds] x actions [m, da] -> [n, m].

        One batched ``cost_fn`` call on the n*m pairs, normalised with the running statistics,
        plus the keypoint guiding term when ``masked``. Does not update the statistics.
        """
        states = self._check_2d(states, self.state_dim, "pairwise_cost: states")
        actions = self._check_2d(actions, self.action_dim, "pairwise_cost: actions")
        q_cost = self._normalize(self._raw_pairwise(states, actions, cost_fn))
        return self._add_guide(q_cost, states, actions)

    # ------------------------------------------------------------------ training
    def compute_dual_loss(
        self, states: Tensor, actions: Tensor, cost: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Negative dual (OTPR eq. 5 / 14) on a batch: states [n, ds], actions [m, da],
        cost [n, m], optional mask [n, m]. Returns (loss, metrics)."""
        u = self.u(states)
        v = self.v(actions)
        loss = dual_loss(u, v, cost, self.lam, mask)
        with torch.no_grad():
            h = _compatibility(u[:, None], v[None, :], cost, self.lam)
            if mask is not None:
                h = h * mask
            info = {
                "ot/dual": float(-loss),
                "ot/h_mean": float(h.mean()),
                "ot/h_nonzero_frac": float((h > 0).float().mean()),
            }
        return loss, info

    def update(
        self, states: Tensor, actions: Tensor, cost_fn: CostFn, steps: int = 1
    ) -> dict[str, float]:
        """``steps`` Adam steps on the dual for a batch of states [n, ds] and actions [m, da].

        The cost matrix is evaluated once (cost_fn is fixed during the call) and the running cost
        statistics are updated with it first. When masked, ``num_keypoints`` sampled keypoint
        pairs are appended to both sides and the keypoint mask is applied.
        """
        states = self._check_2d(states, self.state_dim, "update: states")
        actions = self._check_2d(actions, self.action_dim, "update: actions")
        if steps < 1:
            raise ValueError(f"update: steps must be >= 1, got {steps!r}")
        mask = None
        if self.masked:
            self._require_keypoints()
            n, m = states.shape[0], actions.shape[0]
            if n != m:
                raise ValueError(
                    f"update: masked OT needs as many states as actions (got {n} and {m}); a "
                    "keypoint pair carries mass 1/(n+K) on one side and 1/(m+K) on the other"
                )
            num_kp = self.key_states.shape[0]
            k = min(self.num_keypoints, num_kp)
            ids = torch.randperm(num_kp, generator=self.generator)[:k].to(self.device)
            states = torch.cat([states, self.key_states[ids]])
            actions = torch.cat([actions, self.key_actions[ids]])
            ordinary = torch.full((n,), -1, dtype=torch.long, device=self.device)
            mask = keypoint_mask(torch.cat([ordinary, ids]), torch.cat([ordinary, ids]))
        with torch.no_grad():
            raw = self._raw_pairwise(states, actions, cost_fn)
            self._update_cost_stats(raw)
            cost = self._add_guide(self._normalize(raw), states, actions)
        info: dict[str, float] = {}
        for _ in range(steps):
            loss, info = self.compute_dual_loss(states, actions, cost, mask)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        info["ot/cost_std"] = float(self.cost_std)
        return info

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def compatibility(self, states: Tensor, actions: Tensor, cost_fn: CostFn) -> Tensor:
        """H(s, a) for PAIRED inputs: states [B, ds] with actions [B, L, da] -> [B, L], or
        actions [B, da] -> [B]. Same cost as training (normalised, guided when masked)."""
        states = self._check_2d(states, self.state_dim, "compatibility: states")
        single = actions.dim() == 2
        if single:
            actions = actions[:, None, :]
        actions = actions.to(self.device, torch.float32)
        if (
            actions.dim() != 3
            or actions.shape[0] != states.shape[0]
            or actions.shape[2] != self.action_dim
        ):
            raise ValueError(
                f"compatibility: actions must be [B, L, {self.action_dim}] or "
                f"[B, {self.action_dim}] with B = {states.shape[0]}, got {tuple(actions.shape)}"
            )
        b, l, _ = actions.shape
        s = states[:, None, :].expand(b, l, self.state_dim).reshape(b * l, self.state_dim)
        a = actions.reshape(b * l, self.action_dim)
        q_cost = self._normalize(self._call_cost(cost_fn, s, a))
        if self.masked:
            self._require_keypoints()
            idx = self.anchor_index
            cost = guided_cost_paired(
                q_cost,
                s,
                a,
                self.key_states[idx],
                self.key_actions[idx],
                self.alpha,
                self.rho,
                self.distance,
            )
        else:
            cost = q_cost
        h = _compatibility(
            self.u(states)[:, None], self.v(a).reshape(b, l), cost.reshape(b, l), self.lam
        )
        return h[:, 0] if single else h

    # ------------------------------------------------------------------ checks
    def _check_2d(self, x: Tensor, dim: int, name: str) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a tensor of shape [n, {dim}], got {shape}")
        return x.to(self.device, torch.float32)

    def _require_keypoints(self) -> None:
        if self.key_states.shape[0] == 0:
            raise RuntimeError(
                "NeuralPotentials(masked=True) has no keypoints: call set_keypoints(states, "
                "actions) with expert pairs first"
            )
