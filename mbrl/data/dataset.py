"""``OfflineDataset``: a fixed set of transitions in the D4RL vocabulary, organised into episodes.

Arrays (numpy; floats stored as float32, flags as bool):
    observations ``[N, D]``, actions ``[N, A]`` or ``None`` (action-free variant, e.g. before inverse-dynamics
    labeling), rewards ``[N]``, next_observations ``[N, D]``, terminals ``[N]``, timeouts ``[N]``,
    proxy_actions ``[N]`` or ``None`` (True where an action was inferred, not recorded), next_obs_known ``[N]``
    or ``None`` (all known; False where ``next_observations`` is not the true next state, e.g. a terminal row of
    a D4RL file without ``next_observations``, whose derived next state is the next episode's reset).

Episode boundaries: an episode ends at a row where ``terminals | timeouts``, at the last row, and wherever
``next_observations[i] != observations[i + 1]`` (so concatenated or derived data, e.g. D4RL's
``qlearning_dataset`` output that drops timed-out steps, never glues two episodes together).

Treat a dataset as immutable: methods return new datasets and cache episode boundaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mbrl.data.normalizer import Normalizer
from mbrl.data.validate import REQUIRED_KEYS, DatasetError, check_arrays, check_env_dims
from mbrl.types import TransitionBatch


class OfflineDataset:
    """Transitions in the D4RL vocabulary with episode structure.

    Args:
        observations: ``[N, D]``.
        actions: ``[N, A]`` in env units, or ``None`` for an action-free dataset.
        rewards: ``[N]``.
        next_observations: ``[N, D]``.
        terminals: ``[N]`` (any dtype; nonzero = True). ``terminated`` in gymnasium words.
        timeouts: ``[N]`` or ``None`` (all False). ``truncated`` in gymnasium words.
        env_id: gymnasium env id the data comes from, if known. When given, dims are checked against it.
        metadata: JSON-able extras, e.g. ``ref_min_score`` / ``ref_max_score`` (D4RL normalised score).
        source: file name or dataset id, used in error messages.
        proxy_actions: ``[N]`` bool or ``None``: True where the action is a proxy (e.g. an IDM label).
        next_obs_known: ``[N]`` bool or ``None`` (all True): False where ``next_observations`` is a placeholder
            rather than the state the action led to. Such rows keep their reward and terminal flag (RL never
            bootstraps from a terminal's next state) but are never a target of a model of the transition.
        validate: check shapes/NaN/env dims (derived datasets of a validated one skip it).

    Raises:
        DatasetError: on a length mismatch, wrong ndim, NaN/Inf, an empty dataset, or dims that do not
            match ``env_id``.
    """

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray | None,
        rewards: np.ndarray,
        next_observations: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray | None = None,
        *,
        env_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        source: str = "<memory>",
        proxy_actions: np.ndarray | None = None,
        next_obs_known: np.ndarray | None = None,
        validate: bool = True,
    ) -> None:
        self.source = source
        self.env_id = env_id
        self.metadata: dict[str, Any] = dict(metadata or {})
        if validate:
            raw = {
                "observations": np.asarray(observations),
                "actions": None if actions is None else np.asarray(actions),
                "rewards": np.asarray(rewards),
                "next_observations": np.asarray(next_observations),
                "terminals": np.asarray(terminals),
                "timeouts": None if timeouts is None else np.asarray(timeouts),
                "proxy_actions": None if proxy_actions is None else np.asarray(proxy_actions),
                "next_obs_known": None if next_obs_known is None else np.asarray(next_obs_known),
            }
            required = tuple(
                k for k in (*REQUIRED_KEYS, "next_observations") if k != "actions" or actions is not None
            )
            check_arrays(source, raw, required=required)
        # float64 values beyond float32's range become Inf here; the check below reports them.
        with np.errstate(over="ignore"):
            self.observations = np.asarray(observations, dtype=np.float32)
            self.actions = None if actions is None else np.asarray(actions, dtype=np.float32)
            self.rewards = np.asarray(rewards, dtype=np.float32)
            self.next_observations = np.asarray(next_observations, dtype=np.float32)
        self.terminals = np.asarray(terminals).astype(bool, copy=False)
        n = len(self.observations)
        self.timeouts = (
            np.zeros(n, dtype=bool) if timeouts is None else np.asarray(timeouts).astype(bool, copy=False)
        )
        self.proxy_actions = (
            None if proxy_actions is None else np.asarray(proxy_actions).astype(bool, copy=False)
        )
        self.next_obs_known = (
            None if next_obs_known is None else np.asarray(next_obs_known).astype(bool, copy=False)
        )
        if self.proxy_actions is not None and self.actions is None:
            raise DatasetError(f"{source}: key 'proxy_actions' given for an action-free dataset")
        if validate:
            # float64 -> float32 can overflow to Inf: check the stored arrays too.
            cast = {
                "observations": self.observations,
                "actions": self.actions,
                "rewards": self.rewards,
                "next_observations": self.next_observations,
            }
            check_arrays(source, cast, required=())
            if env_id is not None:
                check_env_dims(
                    source, env_id, self.obs_dim, self.actions.shape[1] if self.actions is not None else None
                )
        self._slices: list[tuple[int, int]] | None = None

    # ----------------------------------------------------------------------------------------------- shape
    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def __repr__(self) -> str:
        return (
            f"OfflineDataset(source={self.source!r}, env_id={self.env_id!r}, n_transitions={len(self)}, "
            f"n_episodes={self.n_episodes}, obs_dim={self.obs_dim}, "
            f"action_dim={self.action_dim if self.has_actions else None})"
        )

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def has_actions(self) -> bool:
        return self.actions is not None

    @property
    def action_dim(self) -> int:
        """``A``; raises ``DatasetError`` for an action-free dataset."""
        return int(self._require_actions("action_dim").shape[1])

    def _require_actions(self, what: str) -> np.ndarray:
        if self.actions is None:
            raise DatasetError(f"{self.source}: {what} needs actions but this dataset is action-free")
        return self.actions

    # -------------------------------------------------------------------------------------------- episodes
    def episode_ends(self) -> np.ndarray:
        """``[N]`` bool: True where an episode ends (terminal, timeout, next_obs discontinuity, last row)."""
        ends = self.terminals | self.timeouts
        ends[:-1] |= np.any(self.next_observations[:-1] != self.observations[1:], axis=1)
        ends[-1] = True
        return ends

    def episode_slices(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` row ranges of the episodes, in order (``stop`` exclusive)."""
        if self._slices is None:
            stops = np.flatnonzero(self.episode_ends()) + 1
            starts = np.concatenate([[0], stops[:-1]])
            self._slices = [(int(a), int(b)) for a, b in zip(starts, stops)]
        return list(self._slices)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_slices())

    def _arrays(self) -> dict[str, np.ndarray | None]:
        return {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "next_observations": self.next_observations,
            "terminals": self.terminals,
            "timeouts": self.timeouts,
            "proxy_actions": self.proxy_actions,
            "next_obs_known": self.next_obs_known,
        }

    def known_next_obs(self) -> np.ndarray:
        """``[N]`` bool: True where ``next_observations`` is the true next state (see ``next_obs_known``)."""
        if self.next_obs_known is None:
            return np.ones(len(self), dtype=bool)
        return self.next_obs_known

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield each episode as a dict of array views in the D4RL vocabulary (absent keys left out)."""
        arrays = self._arrays()
        for start, stop in self.episode_slices():
            yield {k: v[start:stop] for k, v in arrays.items() if v is not None}

    def episode_lengths(self) -> np.ndarray:
        """``[n_episodes]`` int64 number of transitions per episode."""
        return np.array([b - a for a, b in self.episode_slices()], dtype=np.int64)

    def episode_returns(self) -> np.ndarray:
        """``[n_episodes]`` float64 undiscounted return of each episode."""
        starts = np.array([a for a, _ in self.episode_slices()], dtype=np.int64)
        return np.add.reduceat(self.rewards.astype(np.float64), starts)

    # ------------------------------------------------------------------------------------------- subsets
    def _take(self, rows: np.ndarray | slice) -> OfflineDataset:
        arrays = {k: (None if v is None else v[rows]) for k, v in self._arrays().items()}
        return OfflineDataset(
            arrays["observations"],  # type: ignore[arg-type]
            arrays["actions"],
            arrays["rewards"],  # type: ignore[arg-type]
            arrays["next_observations"],  # type: ignore[arg-type]
            arrays["terminals"],  # type: ignore[arg-type]
            arrays["timeouts"],
            env_id=self.env_id,
            metadata=self.metadata,
            source=self.source,
            proxy_actions=arrays["proxy_actions"],
            next_obs_known=arrays["next_obs_known"],
            validate=False,
        )

    def subset_episodes(self, indices: Sequence[int] | np.ndarray) -> OfflineDataset:
        """A dataset of the episodes ``indices`` (in the given order).

        Raises:
            ValueError: when ``indices`` is empty or out of range.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        slices = self.episode_slices()
        if idx.size == 0:
            raise ValueError(f"{self.source}: subset_episodes needs at least one episode index")
        if idx.min() < 0 or idx.max() >= len(slices):
            raise ValueError(f"{self.source}: episode index out of range [0, {len(slices)})")
        rows = np.concatenate([np.arange(*slices[i]) for i in idx])
        return self._take(rows)

    def split_by_episode(
        self, holdout_fraction: float, rng: np.random.Generator
    ) -> tuple[OfflineDataset, OfflineDataset]:
        """Split whole episodes into ``(train, holdout)``; both keep the original episode order.

        ``round(holdout_fraction * n_episodes)`` episodes, at least 1 and at most ``n_episodes - 1``, go to
        the holdout set, chosen uniformly by ``rng``.

        Raises:
            ValueError: when ``holdout_fraction`` is not in ``(0, 1)`` or there are fewer than 2 episodes.
        """
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"split_by_episode: holdout_fraction must be in (0, 1), got {holdout_fraction}")
        n = self.n_episodes
        if n < 2:
            raise ValueError(f"{self.source}: split_by_episode needs at least 2 episodes, found {n}")
        n_hold = min(max(round(holdout_fraction * n), 1), n - 1)
        perm = rng.permutation(n)
        return self.subset_episodes(np.sort(perm[n_hold:])), self.subset_episodes(np.sort(perm[:n_hold]))

    def subset_fraction(self, fraction: float, rng: np.random.Generator) -> OfflineDataset:
        """A random ``fraction`` of whole episodes (``round(fraction * n_episodes)``, at least 1), in order.

        Raises:
            ValueError: when ``fraction`` is not in ``(0, 1]``.
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"subset_fraction: fraction must be in (0, 1], got {fraction}")
        n = self.n_episodes
        k = max(round(fraction * n), 1)
        return self.subset_episodes(np.sort(rng.choice(n, size=k, replace=False)))

    def without_actions(self) -> OfflineDataset:
        """The action-free variant (actions and proxy flags dropped)."""
        out = self._take(slice(None))
        out.actions = None
        out.proxy_actions = None
        return out

    def with_actions(self, actions: np.ndarray, *, proxy: bool = True) -> OfflineDataset:
        """A copy with ``actions [N, A]`` set; ``proxy_actions`` all ``proxy`` (e.g. labels from an IDM).

        Raises:
            DatasetError: on a shape mismatch or NaN/Inf in ``actions``.
        """
        actions = np.asarray(actions)
        check_arrays(
            self.source, {"observations": self.observations, "actions": actions}, required=("actions",)
        )
        out = self._take(slice(None))
        out.actions = actions.astype(np.float32)
        out.proxy_actions = np.full(len(self), proxy, dtype=bool)
        if self.env_id is not None:
            check_env_dims(self.source, self.env_id, self.obs_dim, out.action_dim)
        return out

    @staticmethod
    def concat(datasets: Sequence[OfflineDataset]) -> OfflineDataset:
        """Concatenate datasets (episodes stay separate through the next_obs discontinuity rule).

        ``env_id`` and ``metadata`` come from the first dataset; ``proxy_actions`` is kept when any part
        has it (False elsewhere).

        Raises:
            ValueError: when no dataset is given, env ids differ, obs/action dims differ, or some parts
                have actions and others do not.
        """
        if not datasets:
            raise ValueError("OfflineDataset.concat: no datasets given")
        first = datasets[0]
        env_ids = {d.env_id for d in datasets if d.env_id is not None}
        if len(env_ids) > 1:
            raise ValueError(f"OfflineDataset.concat: datasets come from different envs {sorted(env_ids)}")
        if len({d.obs_dim for d in datasets}) > 1:
            raise ValueError("OfflineDataset.concat: datasets have different obs_dim")
        if len({d.has_actions for d in datasets}) > 1:
            raise ValueError("OfflineDataset.concat: some datasets have actions and others are action-free")
        if first.has_actions and len({d.action_dim for d in datasets}) > 1:
            raise ValueError("OfflineDataset.concat: datasets have different action_dim")
        proxy = None
        if any(d.proxy_actions is not None for d in datasets):
            proxy = np.concatenate(
                [d.proxy_actions if d.proxy_actions is not None else np.zeros(len(d), bool) for d in datasets]
            )
        known = None
        if any(d.next_obs_known is not None for d in datasets):
            known = np.concatenate([d.known_next_obs() for d in datasets])
        actions = None
        if first.has_actions:
            actions = np.concatenate([d._require_actions("concat") for d in datasets])
        return OfflineDataset(
            np.concatenate([d.observations for d in datasets]),
            actions,
            np.concatenate([d.rewards for d in datasets]),
            np.concatenate([d.next_observations for d in datasets]),
            np.concatenate([d.terminals for d in datasets]),
            np.concatenate([d.timeouts for d in datasets]),
            env_id=next(iter(env_ids), None),
            metadata=first.metadata,
            source="+".join(dict.fromkeys(d.source for d in datasets)),
            proxy_actions=proxy,
            next_obs_known=known,
            validate=False,
        )

    # -------------------------------------------------------------------------------------------- torch
    def to_batch(self, device: torch.device | str = "cpu") -> TransitionBatch:
        """All rows as a float32 ``TransitionBatch`` (terminated = terminals, truncated = timeouts)."""
        return self._batch(slice(None), device)

    def sample(
        self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"
    ) -> TransitionBatch:
        """``batch_size`` rows drawn uniformly with replacement by ``rng``, on ``device``. Off the CPU the rows
        come from a copy of the whole dataset kept on that device (made on first use; the arrays must not change
        afterwards), so a batch is one gather there instead of a host-to-device copy."""
        rows = rng.integers(0, len(self), size=batch_size)
        where = torch.device(device)
        if where.type == "cpu":
            return self._batch(rows, where)
        return self.on_device(where).index(torch.as_tensor(rows, device=where))

    def on_device(self, device: torch.device | str) -> TransitionBatch:
        """All rows as a ``TransitionBatch`` on ``device``, made once per device and kept."""
        key = str(torch.device(device))
        cache: dict[str, TransitionBatch] = self.__dict__.setdefault("_device_rows", {})
        if key not in cache:
            cache[key] = self.to_batch(device)
        return cache[key]

    def _batch(self, rows: np.ndarray | slice, device: torch.device | str) -> TransitionBatch:
        actions = self._require_actions("a TransitionBatch")
        return TransitionBatch.from_numpy(
            self.observations[rows],
            actions[rows],
            self.rewards[rows],
            self.next_observations[rows],
            self.terminals[rows],
            self.timeouts[rows],
            device=device,
        )

    # ------------------------------------------------------------------------------------------ statistics
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of every array's dtype, shape and bytes: two datasets with the same
        fingerprint hold the same transitions, so results from different machines or generations can be compared
        (or refused) on it. Metadata is not part of it."""
        digest = hashlib.sha256()
        for name, array in self._arrays().items():
            if array is not None:
                a = np.ascontiguousarray(array)
                digest.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
                digest.update(a.tobytes())
        return digest.hexdigest()[:16]

    def obs_stats(self, min_std: float = 1e-6) -> Normalizer:
        """A ``Normalizer`` fitted on ``observations``."""
        return Normalizer(self.obs_dim, min_std=min_std).fit(self.observations)

    def summary(self) -> dict[str, Any]:
        """Counts, dims, reward / episode-return / episode-length statistics and the ``fingerprint`` (plain
        Python values).

        Includes ``normalized_return_mean`` (D4RL score ``100 * (R - min) / (max - min)``) when the
        metadata has ``ref_min_score`` and ``ref_max_score``.
        """
        returns = self.episode_returns()
        lengths = self.episode_lengths()
        r = self.rewards.astype(np.float64)
        out: dict[str, Any] = {
            "source": self.source,
            "env_id": self.env_id,
            "n_transitions": len(self),
            "n_episodes": self.n_episodes,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim if self.has_actions else None,
            "has_actions": self.has_actions,
            "n_terminals": int(self.terminals.sum()),
            "n_timeouts": int(self.timeouts.sum()),
            "reward_mean": float(r.mean()),
            "reward_std": float(r.std()),
            "reward_min": float(r.min()),
            "reward_max": float(r.max()),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "episode_length_mean": float(lengths.mean()),
            "episode_length_min": int(lengths.min()),
            "episode_length_max": int(lengths.max()),
            "fingerprint": self.fingerprint(),
        }
        if self.proxy_actions is not None:
            out["n_proxy_actions"] = int(self.proxy_actions.sum())
        lo, hi = self.metadata.get("ref_min_score"), self.metadata.get("ref_max_score")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi != lo:
            out["ref_min_score"], out["ref_max_score"] = float(lo), float(hi)
            out["normalized_return_mean"] = float(100.0 * (returns.mean() - lo) / (hi - lo))
        return out
