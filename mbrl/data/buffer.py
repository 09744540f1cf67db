"""``ReplayBuffer``: a preallocated ring buffer of transitions with an explicit RNG.

Storage is numpy (float32 data, bool flags) by default, the fastest on a CPU; with ``device`` set to an
accelerator (``"cuda"``) it is float32 torch tensors on that device, so ``sample`` gathers the batch there (the
row indices still come from the numpy RNG: the same rows on every device, and one small host-to-device copy of
the indices instead of the batch's data). ``sample`` returns a float32 torch ``TransitionBatch``.
Saving writes plain arrays (the RNG state is JSON-encoded into a uint8 array), so loading never unpickles, and
a state saved from either storage loads into either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mbrl.data.dataset import OfflineDataset
from mbrl.types import TransitionBatch
from mbrl.utils import atomic_write, resolve_device

_DATA_KEYS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


class ReplayBuffer:
    """Fixed-capacity FIFO store of transitions; the oldest rows are overwritten once full.

    Args:
        capacity: maximum number of transitions.
        obs_dim: ``D``.
        action_dim: ``A``.
        rng: generator used by ``sample`` (its state is part of ``state_dict`` so resume is exact).
        device: where the storage lives and batches are returned: ``None`` or ``"cpu"``: numpy on the host
            (batches on CPU unless ``sample(device=...)`` says otherwise); ``"auto"``: CUDA when available, else
            CPU; any other device (``"cuda"``, ``"meta"``): torch tensors on it, sampled there.
        storage: ``"auto"`` (numpy on CPU, torch tensors on any other device), ``"numpy"`` (CPU only) or
            ``"torch"`` (tensors on ``device``, also on CPU: the storage a GPU uses, testable on a CPU).
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        action_dim: int,
        *,
        rng: np.random.Generator,
        device: torch.device | str | None = None,
        storage: Literal["auto", "numpy", "torch"] = "auto",
    ) -> None:
        if capacity < 1 or obs_dim < 1 or action_dim < 1:
            raise ValueError(
                f"ReplayBuffer: capacity, obs_dim and action_dim must be >= 1, got {capacity}, {obs_dim}, {action_dim}"
            )
        self.capacity = int(capacity)
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.rng = rng
        self.device = torch.device("cpu") if device is None else resolve_device(str(device))
        if storage not in ("auto", "numpy", "torch"):
            raise ValueError(f"ReplayBuffer: storage must be 'auto', 'numpy' or 'torch', got {storage!r}")
        if storage == "numpy" and self.device.type != "cpu":
            raise ValueError(f"ReplayBuffer: numpy storage lives on the host, not on {self.device}")
        # ``on_device``: the storage is torch tensors on ``self.device`` (sampled there, written there).
        self.on_device = storage == "torch" or (storage == "auto" and self.device.type != "cpu")
        self.obs: Any
        self.action: Any
        self.reward: Any
        self.next_obs: Any
        self.terminated: Any
        self.truncated: Any
        if self.on_device:  # flags as float32 too: a batch is a gather, no conversion
            for key, shape in self._shapes().items():
                setattr(self, key, torch.zeros(shape, dtype=torch.float32, device=self.device))
        else:
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

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.capacity
        return {
            "obs": (c, self.obs_dim), "action": (c, self.action_dim), "reward": (c,),
            "next_obs": (c, self.obs_dim), "terminated": (c,), "truncated": (c,),
        }

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
        self._write(batch, b)

    def add_batch(self, batch: TransitionBatch) -> None:
        """Store a ``TransitionBatch`` (any device); on device storage the rows never pass through the host."""
        if not self.on_device:
            a = batch.as_numpy()
            self.add(a["obs"], a["action"], a["reward"], a["next_obs"], a["terminated"] > 0, a["truncated"] > 0)
            return
        if batch.obs_dim != self.obs_dim or batch.action_dim != self.action_dim:
            raise ValueError(
                f"ReplayBuffer.add_batch: batch has obs/action dims {batch.obs_dim}/{batch.action_dim}, "
                f"expected {self.obs_dim}/{self.action_dim}"
            )
        b = len(batch)
        if b == 0:
            return
        data = {key: getattr(batch, key) for key in _DATA_KEYS}
        if b > self.capacity:
            self._ptr = (self._ptr + b - self.capacity) % self.capacity
            data = {k: v[-self.capacity :] for k, v in data.items()}
            b = self.capacity
        self._write(data, b)

    def _write(self, batch: dict[str, Any], b: int) -> None:
        """Write ``b`` rows at the ring position (as two slices: no index array, no host copy on device)."""
        first = min(b, self.capacity - self._ptr)
        for key, value in batch.items():
            store = getattr(self, key)
            if self.on_device:
                value = torch.as_tensor(value).to(self.device, torch.float32)
            store[self._ptr : self._ptr + first] = value[:first]
            if first < b:
                store[: b - first] = value[first:]
        self._ptr = (self._ptr + b) % self.capacity
        self._size = min(self._size + b, self.capacity)

    def _order(self) -> np.ndarray:
        """Row indices oldest first."""
        if self._size < self.capacity:
            return np.arange(self._size)
        return (self._ptr + np.arange(self.capacity)) % self.capacity

    def _batch(self, rows: np.ndarray, device: torch.device | str | None) -> TransitionBatch:
        if self.on_device:
            idx = torch.from_numpy(rows).to(self.device, non_blocking=True)
            batch = TransitionBatch(*(getattr(self, key).index_select(0, idx) for key in _DATA_KEYS))
            return batch if device is None or torch.device(device) == self.device else batch.to(device)
        return TransitionBatch.from_numpy(
            self.obs[rows],
            self.action[rows],
            self.reward[rows],
            self.next_obs[rows],
            self.terminated[rows],
            self.truncated[rows],
            device="cpu" if device is None else device,
        )

    def sample(self, batch_size: int, *, device: torch.device | str | None = None) -> TransitionBatch:
        """``batch_size`` stored transitions drawn uniformly with replacement (using ``self.rng``), on ``device``
        (default: the buffer's).

        Raises:
            ValueError: when the buffer is empty.
        """
        if self._size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        # Filled rows are always 0.._size-1 (the ring only wraps once full), so one draw suffices.
        return self._batch(self.rng.integers(0, self._size, size=batch_size), device)

    def all(self, *, device: torch.device | str | None = None) -> TransitionBatch:
        """Every stored transition, oldest first."""
        return self._batch(self._order(), device)

    def latest(self, n: int, *, device: torch.device | str | None = None) -> TransitionBatch:
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
        a = {key: self._host(key, rows) for key in _DATA_KEYS}
        return OfflineDataset(
            a["obs"],
            a["action"],
            a["reward"],
            a["next_obs"],
            a["terminated"],
            a["truncated"],
            env_id=env_id,
            source=source,
        )

    def _host(self, key: str, rows: np.ndarray | slice) -> np.ndarray:
        """Rows of one stored field as numpy, in the numpy storage's dtypes (bool flags)."""
        store = getattr(self, key)
        if not self.on_device:
            return np.asarray(store[rows])
        idx = rows if isinstance(rows, slice) else torch.from_numpy(np.asarray(rows)).to(self.device)
        value = store[idx].cpu().numpy()
        return value > 0 if key in ("terminated", "truncated") else value

    # ------------------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, np.ndarray | int]:
        """Plain arrays and ints: stored rows, ring position, dims and the RNG state (JSON in a uint8 array).

        The same host arrays from either storage (device rows are copied to the host), so it loads into either."""
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
            value = self._host(key, slice(0, self._size))
            state[key] = value.copy() if not self.on_device else value
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
            store = getattr(self, key)
            if self.on_device:
                store[:size] = torch.as_tensor(value.astype(np.float32)).to(self.device)
            else:
                store[:size] = value
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
    def load(
        cls, path: str | os.PathLike[str], rng: np.random.Generator, *, device: torch.device | str | None = None
    ) -> ReplayBuffer:
        """Read a buffer written by ``save`` (``allow_pickle=False``) into storage on ``device`` (see the class);
        ``rng`` gets the saved RNG state."""
        with np.load(path, allow_pickle=False) as data:
            state: dict[str, Any] = {k: data[k] for k in data.files}
        for key in ("capacity", "obs_dim", "action_dim"):
            if key not in state:
                raise ValueError(f"{Path(path).name}: missing key {key!r}; not a ReplayBuffer file")
        buf = cls(int(state["capacity"]), int(state["obs_dim"]), int(state["action_dim"]), rng=rng, device=device)
        buf.load_state_dict(state)
        return buf
