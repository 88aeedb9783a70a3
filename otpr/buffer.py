"""Preallocated ring-buffer replay of chunk transitions.

One transition is one policy decision: the stacked observation, the predicted action chunk
(all H steps, in raw action units), the discounted reward of the executed ``k <= T_a`` env
steps, the discount ``gamma ** k`` for bootstrapping, the next stacked observation, and
``terminated`` (a true terminal state). Time-limit truncation is *not* termination: the next
observation stored for a truncated step is the true final one, and the critic bootstraps
through it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FIELDS = ("obs", "actions", "reward", "discount", "next_obs", "terminated")


class ReplayBuffer:
    """Fixed-capacity ring arrays; no per-iteration copies."""

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...]
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.obs_shape = tuple(obs_shape)
        self.action_shape = tuple(action_shape)
        self.data: dict[str, np.ndarray] = {
            "obs": np.zeros((capacity, *obs_shape), np.float32),
            "actions": np.zeros((capacity, *action_shape), np.float32),
            "reward": np.zeros((capacity,), np.float32),
            "discount": np.zeros((capacity,), np.float32),
            "next_obs": np.zeros((capacity, *obs_shape), np.float32),
            "terminated": np.zeros((capacity,), np.float32),
        }
        self.ptr = 0
        self.size = 0
        self.total_added = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **batch: np.ndarray) -> None:
        """Append a batch of transitions (each field with a leading batch dim)."""
        missing = set(FIELDS) - set(batch)
        if missing:
            raise KeyError(f"replay add() is missing fields {sorted(missing)}")
        n = len(batch["obs"])
        for key in FIELDS:
            value = np.asarray(batch[key], np.float32)
            expected = (n, *self.data[key].shape[1:])
            if value.shape != expected:
                raise ValueError(
                    f"replay field {key!r} has shape {value.shape}, expected {expected}"
                )
            if not np.isfinite(value).all():
                raise ValueError(f"replay field {key!r} contains NaN or inf")
        idx = (self.ptr + np.arange(n)) % self.capacity
        for key in FIELDS:
            self.data[key][idx] = batch[key]
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))
        self.total_added += n

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        return rng.integers(0, self.size, size=batch_size)

    def recent_indices(self, batch_size: int, rng: np.random.Generator, window: int) -> np.ndarray:
        """Uniform indices among the ``window`` most recently added transitions."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        window = min(window, self.size)
        return (self.ptr - 1 - rng.integers(0, window, size=batch_size)) % self.capacity

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        device: torch.device | str = "cpu",
        recent: int = 0,
    ) -> dict[str, torch.Tensor]:
        """A batch as tensors; ``recent > 0`` draws only from the newest ``recent`` transitions."""
        if recent > 0:
            idx = self.recent_indices(batch_size, rng, recent)
        else:
            idx = self.sample_indices(batch_size, rng)
        return {k: torch.as_tensor(v[idx], device=device) for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the buffer exactly (arrays trimmed to the filled part)."""
        return {
            "arrays": {k: v[: self.size].copy() for k, v in self.data.items()},
            "ptr": self.ptr,
            "size": self.size,
            "total_added": self.total_added,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"saved replay holds {size} transitions, capacity is {self.capacity}")
        for key, value in state["arrays"].items():
            if value.shape[1:] != self.data[key].shape[1:]:
                raise ValueError(
                    f"saved replay field {key!r} has shape {value.shape[1:]}, "
                    f"expected {self.data[key].shape[1:]}"
                )
            self.data[key][:size] = value
        self.ptr, self.size, self.total_added = int(state["ptr"]), size, int(state["total_added"])
