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


class TrainingData:
    """What an algorithm learns from: the replay and the demo (state, chunk) pairs.

    The loop owns it and passes it to ``Algorithm.update``. With ``algo.success_to_demos`` the
    loop appends the replay rows of successful online episodes to ``success_ids`` (insertion
    order); :meth:`demo_batch` then draws them beside the demo windows.

    Args:
        buffer: the run's replay.
        demo_obs, demo_act: demo windows ``[N, T_o, D]`` and chunks ``[N, H, A]``.
        rng: the loop's numpy generator (every batch draws from it, in call order).
        device: where batches go.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        demo_obs: np.ndarray,
        demo_act: np.ndarray,
        rng: np.random.Generator,
        device: torch.device | str = "cpu",
    ) -> None:
        self.buffer = buffer
        self.demo_obs, self.demo_act = demo_obs, demo_act
        self.rng = rng
        self.device = torch.device(device)
        self.success_ids: list[int] = []

    def batch(self, size: int, recent: int = 0) -> dict[str, torch.Tensor]:
        """A replay batch (``recent > 0``: from the newest ``recent`` transitions only)."""
        return self.buffer.sample(size, self.rng, self.device, recent=recent)

    def demo_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs, chunk) pairs drawn uniformly from the demo windows and the replay rows of
        successful online episodes (``success_ids``)."""
        ids = self.success_ids
        buf = self.buffer
        if ids and buf.total_added - ids[0] > buf.capacity:
            # drop rows the ring buffer has overwritten (ids are in insertion order)
            oldest = buf.total_added - buf.capacity
            self.success_ids = ids = [k for k in ids if k >= oldest]
        num_demo = len(self.demo_obs)
        idx = self.rng.integers(0, num_demo + len(ids), size)
        own = idx >= num_demo
        obs = torch.as_tensor(self.demo_obs[np.where(own, 0, idx)])
        act = torch.as_tensor(self.demo_act[np.where(own, 0, idx)])
        if own.any():
            rows = np.array([ids[k] for k in idx[own] - num_demo]) % buf.capacity
            obs[torch.as_tensor(own)] = torch.as_tensor(buf.data["obs"][rows])
            act[torch.as_tensor(own)] = torch.as_tensor(buf.data["actions"][rows])
        return obs, act
