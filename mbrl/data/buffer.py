"""``ReplayBuffer``: a preallocated numpy ring buffer of transitions with an explicit RNG.

Storage is numpy (float32 data, bool flags); ``sample`` returns a float32 torch ``TransitionBatch``.
Saving writes plain arrays (the RNG state is JSON-encoded into a uint8 array), so loading never unpickles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl.data.dataset import OfflineDataset
from mbrl.types import TransitionBatch
from mbrl.utils import atomic_write

_DATA_KEYS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


class ReplayBuffer:
    """Fixed-capacity FIFO store of transitions; the oldest rows are overwritten once full.

    Args:
        capacity: maximum number of transitions.
        obs_dim: ``D``.
        action_dim: ``A``.
        rng: generator used by ``sample`` (its state is part of ``state_dict`` so resume is exact).
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, *, rng: np.random.Generator) -> None:
        if capacity < 1 or obs_dim < 1 or action_dim < 1:
            raise ValueError(
                f"ReplayBuffer: capacity, obs_dim and action_dim must be >= 1, got {capacity}, {obs_dim}, {action_dim}"
            )
        self.capacity = int(capacity)
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.rng = rng
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros((capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.truncated = np.zeros(capacity, dtype=bool)
        self._ptr = 0  # next row to write
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray | float,
        next_obs: np.ndarray,
        terminated: np.ndarray | bool,
        truncated: np.ndarray | bool,
    ) -> None:
        """Store one transition (``obs [D]``, scalars) or a batch (``obs [B, D]``, ``reward [B]`` ...) in O(B).

        A batch larger than the capacity keeps only its last ``capacity`` rows.
        """
        obs_a = np.asarray(obs, dtype=np.float32)
        single = obs_a.ndim == 1
        batch = {
            "obs": obs_a,
            "action": np.asarray(action, dtype=np.float32),
            "reward": np.asarray(reward, dtype=np.float32),
            "next_obs": np.asarray(next_obs, dtype=np.float32),
            "terminated": np.asarray(terminated, dtype=bool),
            "truncated": np.asarray(truncated, dtype=bool),
        }
        if single:
            batch = {k: v[None] for k, v in batch.items()}
        b = batch["obs"].shape[0]
        expected = {
            "obs": (b, self.obs_dim),
            "action": (b, self.action_dim),
            "reward": (b,),
            "next_obs": (b, self.obs_dim),
            "terminated": (b,),
            "truncated": (b,),
        }
        for key, shape in expected.items():
            if batch[key].shape != shape:
                raise ValueError(f"ReplayBuffer.add: {key} has shape {batch[key].shape}, expected {shape}")
        if b == 0:
            return
        if b > self.capacity:
            # Only the newest `capacity` rows survive; write them as if added in order.
            self._ptr = (self._ptr + b - self.capacity) % self.capacity
            batch = {k: v[-self.capacity :] for k, v in batch.items()}
            b = self.capacity
        rows = (self._ptr + np.arange(b)) % self.capacity
        for key, value in batch.items():
            getattr(self, key)[rows] = value
        self._ptr = (self._ptr + b) % self.capacity
        self._size = min(self._size + b, self.capacity)

    def _order(self) -> np.ndarray:
        """Row indices oldest first."""
        if self._size < self.capacity:
            return np.arange(self._size)
        return (self._ptr + np.arange(self.capacity)) % self.capacity

    def _batch(self, rows: np.ndarray, device: torch.device | str) -> TransitionBatch:
        return TransitionBatch.from_numpy(
            self.obs[rows],
            self.action[rows],
            self.reward[rows],
            self.next_obs[rows],
            self.terminated[rows],
            self.truncated[rows],
            device=device,
        )

    def sample(self, batch_size: int, *, device: torch.device | str = "cpu") -> TransitionBatch:
        """``batch_size`` stored transitions drawn uniformly with replacement (using ``self.rng``).

        Raises:
            ValueError: when the buffer is empty.
        """
        if self._size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        # Filled rows are always 0.._size-1 (the ring only wraps once full), so one draw suffices.
        return self._batch(self.rng.integers(0, self._size, size=batch_size), device)

    def all(self, *, device: torch.device | str = "cpu") -> TransitionBatch:
        """Every stored transition, oldest first."""
        return self._batch(self._order(), device)

    def latest(self, n: int, *, device: torch.device | str = "cpu") -> TransitionBatch:
        """The ``n`` most recently added transitions, oldest first (``n`` is capped at ``len(self)``)."""
        n = min(int(n), self._size)
        rows = (self._ptr - n + np.arange(n)) % self.capacity
        return self._batch(rows, device)

    def to_dataset(self, *, env_id: str | None = None, source: str = "<replay buffer>") -> OfflineDataset:
        """The stored transitions as an ``OfflineDataset``, oldest first.

        Episodes end at ``terminated | truncated``, at the newest row, and wherever next_obs does not continue
        into the next row's obs. Once the ring has wrapped, the oldest row may start mid-episode.

        Raises:
            ValueError: when the buffer is empty.
        """
        if self._size == 0:
            raise ValueError("ReplayBuffer.to_dataset: the buffer is empty")
        rows = self._order()
        return OfflineDataset(
            self.obs[rows],
            self.action[rows],
            self.reward[rows],
            self.next_obs[rows],
            self.terminated[rows],
            self.truncated[rows],
            env_id=env_id,
            source=source,
        )

    # ------------------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, np.ndarray | int]:
        """Plain arrays and ints: stored rows, ring position, dims and the RNG state (JSON in a uint8 array)."""
        rng_json = json.dumps(self.rng.bit_generator.state).encode()
        state: dict[str, np.ndarray | int] = {
            "capacity": self.capacity,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "ptr": self._ptr,
            "size": self._size,
            "rng_state": np.frombuffer(rng_json, dtype=np.uint8).copy(),
        }
        for key in _DATA_KEYS:
            state[key] = getattr(self, key)[: self._size].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` output (dims must match this buffer).

        Raises:
            ValueError: on a missing key or a capacity/dim mismatch.
        """
        missing = [
            k
            for k in ("capacity", "obs_dim", "action_dim", "ptr", "size", "rng_state", *_DATA_KEYS)
            if k not in state
        ]
        if missing:
            raise ValueError(f"ReplayBuffer.load_state_dict: missing keys {missing}")
        for key in ("capacity", "obs_dim", "action_dim"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"ReplayBuffer.load_state_dict: {key} is {int(state[key])} in the state, {getattr(self, key)} here"
                )
        size, ptr = int(state["size"]), int(state["ptr"])
        if not (0 <= size <= self.capacity and 0 <= ptr < self.capacity):
            raise ValueError(
                f"ReplayBuffer.load_state_dict: bad size {size} / ptr {ptr} for capacity {self.capacity}"
            )
        for key in _DATA_KEYS:
            value = np.asarray(state[key])
            if value.shape[0] != size or value.shape[1:] != getattr(self, key).shape[1:]:
                raise ValueError(
                    f"ReplayBuffer.load_state_dict: {key} has shape {value.shape}, expected {size} rows"
                )
            getattr(self, key)[:size] = value
        self._size, self._ptr = size, ptr
        self.rng.bit_generator.state = json.loads(np.asarray(state["rng_state"], dtype=np.uint8).tobytes())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``state_dict()`` to an ``.npz`` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v) for k, v in self.state_dict().items()}

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a file object: np.savez would append ".npz" to a path without it
                np.savez(f, **arrays)  # type: ignore[arg-type]

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str], rng: np.random.Generator) -> ReplayBuffer:
        """Read a buffer written by ``save`` (``allow_pickle=False``); ``rng`` gets the saved RNG state."""
        with np.load(path, allow_pickle=False) as data:
            state: dict[str, Any] = {k: data[k] for k in data.files}
        for key in ("capacity", "obs_dim", "action_dim"):
            if key not in state:
                raise ValueError(f"{Path(path).name}: missing key {key!r}; not a ReplayBuffer file")
        buf = cls(int(state["capacity"]), int(state["obs_dim"]), int(state["action_dim"]), rng=rng)
        buf.load_state_dict(state)
        return buf
