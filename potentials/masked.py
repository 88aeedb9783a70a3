"""Keypoint-guided (masked) optimal transport pieces: relation vectors, JS divergence, mask.

Follows OTPR (paper 004) section 4.3, eqs. 12-14, which adopt the keypoint-guided OT of
Gu et al. 2022 (KPG-RL). Expert (state, action) pairs are "keypoints": the mask forces each
keypoint state to send its mass only to its own keypoint action, and the guiding cost
g(s, a) = JS(R_s, R_a) asks every other pair to keep the same relation to the keypoints in both
spaces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Distance = Literal["l2", "cosine"]
DISTANCES: tuple[str, ...] = ("l2", "cosine")
LN2 = math.log(2.0)


def _pairwise_distance(x: Tensor, y: Tensor, distance: str) -> Tensor:
    if distance == "l2":
        return torch.cdist(x, y).square()
    if distance == "cosine":
        xn = torch.nn.functional.normalize(x, dim=-1)
        yn = torch.nn.functional.normalize(y, dim=-1)
        return 1.0 - xn @ yn.T
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def relation_vectors(x: Tensor, keypoints: Tensor, rho: float, distance: Distance = "l2") -> Tensor:
    """Relation of each point to the keypoints, R_i = softmax_k(-d(x_i, k) / rho) (OTPR eq. 13).

    Args:
        x: [n, d] points.
        keypoints: [N, d] keypoints in the same space.
        rho: softmax temperature > 0.
        distance: "l2" is the squared Euclidean distance ||x - k||^2 (as in KPG-RL's
            ``cost_matrix``); "cosine" is 1 - cos(x, k), in [0, 2].

    Returns:
        [n, N] rows on the probability simplex.
    """
    if x.dim() != 2 or keypoints.dim() != 2 or x.shape[1] != keypoints.shape[1]:
        raise ValueError(
            f"relation_vectors: x must be [n, d] and keypoints [N, d] with the same d, got "
            f"x {tuple(x.shape)} and keypoints {tuple(keypoints.shape)}"
        )
    if keypoints.shape[0] == 0:
        raise ValueError("relation_vectors: keypoints is empty (need N >= 1)")
    if not rho > 0:
        raise ValueError(f"relation_vectors: rho (temperature) must be > 0, got {rho!r}")
    return torch.softmax(-_pairwise_distance(x, keypoints, distance) / rho, dim=-1)


def _neg_entropy(p: Tensor) -> Tensor:
    """sum_k p_k log p_k with 0 log 0 = 0."""
    return torch.special.xlogy(p, p).sum(-1)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Pairwise Jensen-Shannon divergence (natural log) between rows, [n, N] x [m, N] -> [n, m].

    JS(p, q) = 1/2 KL(p || M) + 1/2 KL(q || M) with M = (p + q)/2, which equals
    1/2 (sum p log p + sum q log q) - sum M log M; zeros are safe (0 log 0 = 0). The result is
    clamped to [0, ln 2] against rounding.
    """
    if p.dim() != 2 or q.dim() != 2 or p.shape[1] != q.shape[1]:
        raise ValueError(
            f"js_divergence: p must be [n, N] and q [m, N] with the same N, got "
            f"p {tuple(p.shape)} and q {tuple(q.shape)}"
        )
    mix = 0.5 * (p[:, None, :] + q[None, :, :])
    js = 0.5 * (_neg_entropy(p)[:, None] + _neg_entropy(q)[None, :]) - _neg_entropy(mix)
    return js.clamp(0.0, LN2)


def js_divergence_paired(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence of paired rows, [n, N] x [n, N] -> [n] (see js_divergence)."""
    if p.shape != q.shape or p.dim() != 2:
        raise ValueError(
            f"js_divergence_paired: p and q must both be [n, N], got {tuple(p.shape)} and "
            f"{tuple(q.shape)}"
        )
    mix = 0.5 * (p + q)
    js = 0.5 * (_neg_entropy(p) + _neg_entropy(q)) - _neg_entropy(mix)
    return js.clamp(0.0, LN2)


def keypoint_mask(row_keypoint: Tensor, col_keypoint: Tensor) -> Tensor:
    """Keypoint mask of Gu et al. 2022 (KPG-RL), used in OTPR eq. 12 and eq. 14.

    Args:
        row_keypoint: [n] long, the keypoint id of each source point or -1 for ordinary points.
        col_keypoint: [m] long, the keypoint id of each target point or -1.

    Returns:
        [n, m] float mask with m_ij = 1 if i and j are the same keypoint pair, 0 if exactly one
        of them is a keypoint or they are different keypoints, 1 if neither is a keypoint.
    """
    if row_keypoint.dim() != 1 or col_keypoint.dim() != 1:
        raise ValueError(
            f"keypoint_mask: row_keypoint and col_keypoint must be 1-D, got "
            f"{tuple(row_keypoint.shape)} and {tuple(col_keypoint.shape)}"
        )
    if row_keypoint.dtype.is_floating_point or col_keypoint.dtype.is_floating_point:
        raise ValueError(
            "keypoint_mask: keypoint ids must be integer tensors (-1 = not a keypoint)"
        )
    if bool((row_keypoint < -1).any()) or bool((col_keypoint < -1).any()):
        raise ValueError("keypoint_mask: keypoint ids must be >= 0, or -1 for ordinary points")
    r = row_keypoint[:, None]
    c = col_keypoint[None, :]
    neither = (r < 0) & (c < 0)
    same = (r >= 0) & (r == c)
    return (neither | same).float()


def guided_cost(
    q_cost: Tensor,
    states: Tensor,
    actions: Tensor,
    key_states: Tensor,
    key_actions: Tensor,
    alpha: float = 0.5,
    rho: float = 0.1,
    distance: Distance = "l2",
) -> Tensor:
    """Total pairwise cost (1 - alpha) c_Q + alpha g, g(s, a) = JS(R_s, R_a) (OTPR eqs. 12-14).

    OTPR's eq. 14 uses g alone inside the masked dual; its published code fixes alpha = 1 and
    ignores the critic. We mix: alpha = 0 is the plain critic cost, alpha = 1 the paper's g.

    Args:
        q_cost: [n, m] critic cost c_Q(s_i, a_j) (e.g. normalised -Q).
        states: [n, ds]; actions: [m, da].
        key_states: [N, ds]; key_actions: [N, da] paired keypoints (row k of each is pair k).
        alpha: weight of the guiding term, in [0, 1].
        rho, distance: see :func:`relation_vectors`.

    Returns:
        [n, m] cost.
    """
    _check_alpha(alpha)
    if q_cost.shape != (states.shape[0], actions.shape[0]):
        raise ValueError(
            f"guided_cost: q_cost must be [n, m] = [{states.shape[0]}, {actions.shape[0]}], got "
            f"{tuple(q_cost.shape)}"
        )
    return _mix(
        q_cost, states, actions, key_states, key_actions, alpha, rho, distance, js_divergence
    )


def guided_cost_paired(
    q_cost: Tensor,
    states: Tensor,
    actions: Tensor,
    key_states: Tensor,
    key_actions: Tensor,
    alpha: float = 0.5,
    rho: float = 0.1,
    distance: Distance = "l2",
) -> Tensor:
    """Paired version of :func:`guided_cost`: q_cost [k], states [k, ds], actions [k, da] -> [k]."""
    _check_alpha(alpha)
    if q_cost.shape != (states.shape[0],) or actions.shape[0] != states.shape[0]:
        raise ValueError(
            f"guided_cost_paired: need q_cost [k], states [k, ds], actions [k, da], got "
            f"{tuple(q_cost.shape)}, {tuple(states.shape)}, {tuple(actions.shape)}"
        )
    return _mix(
        q_cost, states, actions, key_states, key_actions, alpha, rho, distance, js_divergence_paired
    )


def _mix(
    q_cost: Tensor,
    states: Tensor,
    actions: Tensor,
    key_states: Tensor,
    key_actions: Tensor,
    alpha: float,
    rho: float,
    distance: Distance,
    divergence: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """(1 - alpha) c_Q + alpha JS(R_s, R_a), the divergence pairwise or paired."""
    _check_pairs(key_states, key_actions)
    g = divergence(
        relation_vectors(states, key_states, rho, distance),
        relation_vectors(actions, key_actions, rho, distance),
    )
    return (1.0 - alpha) * q_cost + alpha * g.to(q_cost.dtype)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"alpha (weight of the keypoint guiding cost) must be in [0, 1], got {alpha!r}"
        )


def _check_pairs(key_states: Tensor, key_actions: Tensor) -> None:
    if (
        key_states.dim() != 2
        or key_actions.dim() != 2
        or key_states.shape[0] != key_actions.shape[0]
    ):
        raise ValueError(
            f"key_states [N, ds] and key_actions [N, da] must pair up row by row, got "
            f"{tuple(key_states.shape)} and {tuple(key_actions.shape)}"
        )
