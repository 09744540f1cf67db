"""Validation of offline datasets: every refusal names the file, the key and the problem.

Checks (in this order, so the first message is the most basic problem):
missing required key, object/non-numeric dtype, wrong ndim, empty, length mismatch between arrays,
NaN/Inf, and obs/action dims that do not match the named gymnasium env.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import gymnasium
import numpy as np

# D4RL vocabulary. ``timeouts`` may be absent from files (then all False); ``actions`` is absent from
# action-free datasets only (never from files in the D4RL layout).
REQUIRED_KEYS: tuple[str, ...] = ("observations", "actions", "rewards", "terminals")
ARRAY_KEYS: tuple[str, ...] = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
    "proxy_actions",
    "next_obs_known",
)
# Expected ndim per key and what the shape means (for the message).
_NDIM: dict[str, tuple[int, str]] = {
    "observations": (2, "[N, obs_dim]"),
    "actions": (2, "[N, action_dim]"),
    "rewards": (1, "[N]"),
    "next_observations": (2, "[N, obs_dim]"),
    "terminals": (1, "[N]"),
    "timeouts": (1, "[N]"),
    "proxy_actions": (1, "[N]"),
    "next_obs_known": (1, "[N]"),
}


class DatasetError(ValueError):
    """Bad dataset input. The message is one line: ``<file>: <key>: <problem>``.

    A ``ValueError`` so that the ``mbrl`` command prints it as one line and exits 2.
    """

    def __init__(self, message: str) -> None:
        # One line always: messages may embed text from h5py/zipfile errors that span lines.
        super().__init__(" ".join(str(message).split()))


def check_dtype(source: str, key: str, array: np.ndarray) -> None:
    """Refuse object, string and other non-numeric arrays (an npz object array is refused, not skipped)."""
    if array.dtype == object:
        raise DatasetError(f"{source}: key {key!r} is an object array (dtype=object); refusing to load it")
    if not (np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)):
        raise DatasetError(f"{source}: key {key!r} has non-numeric dtype {array.dtype}")


def check_arrays(source: str, arrays: Mapping[str, np.ndarray | None], *, required: tuple[str, ...]) -> None:
    """Validate raw arrays in the D4RL vocabulary before they become an ``OfflineDataset``.

    Args:
        source: file name or dataset id used in messages.
        arrays: key -> array (``None`` or missing = absent).
        required: keys that must be present.

    Raises:
        DatasetError: on a missing key, a bad dtype, wrong ndim, an empty dataset, a length mismatch
            (reported against ``observations``), or a NaN/Inf value.
    """
    present = {k: v for k, v in arrays.items() if v is not None}
    for key in required:
        if key not in present:
            found = ", ".join(sorted(present)) or "nothing"
            raise DatasetError(f"{source}: missing required key {key!r} (found: {found})")
    for key, value in present.items():
        check_dtype(source, key, value)
        if key in _NDIM:
            ndim, meaning = _NDIM[key]
            if value.ndim != ndim:
                raise DatasetError(
                    f"{source}: key {key!r} has shape {tuple(value.shape)} (ndim {value.ndim}), "
                    f"expected ndim {ndim} {meaning}"
                )
    ref_key = "observations" if "observations" in present else next(iter(present), None)
    if ref_key is None:
        raise DatasetError(f"{source}: dataset is empty (no arrays)")
    n = len(present[ref_key])
    if n == 0:
        raise DatasetError(f"{source}: dataset is empty (key {ref_key!r} has 0 rows)")
    for key, value in present.items():
        if len(value) != n:
            raise DatasetError(f"{source}: key {key!r} has {len(value)} rows, expected {n} (as {ref_key!r})")
    if "observations" in present and "next_observations" in present:
        d, d_next = present["observations"].shape[1:], present["next_observations"].shape[1:]
        if d != d_next:
            raise DatasetError(
                f"{source}: key 'next_observations' has obs_dim {d_next[0]}, expected {d[0]} (as 'observations')"
            )
    for key, value in present.items():
        if not np.issubdtype(value.dtype, np.floating):
            continue
        check_finite(source, key, value)


def check_finite(source: str, key: str, array: np.ndarray) -> None:
    """Refuse NaN and Inf, naming the first bad row."""
    finite = np.isfinite(array)
    if finite.all():
        return
    flat = array.reshape(len(array), -1)
    row = int(np.argmax(~np.isfinite(flat).all(axis=1)))
    bad = flat[row]
    kind = "NaN" if np.isnan(bad).any() else "Inf"
    count = int((~finite).sum())
    raise DatasetError(
        f"{source}: key {key!r} contains {kind} (first at row {row}; {count} non-finite values)"
    )


@functools.lru_cache(maxsize=64)
def env_dims(env_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Observation and action shapes of a gymnasium env (built once per id, then cached).

    Raises:
        DatasetError: when gymnasium cannot build the env.
    """
    import envs.registry  # noqa: F401  (installs the MuJoCo warning filter: no settotalmass noise on stderr)

    try:
        env = gymnasium.make(env_id)
    except Exception as exc:  # gymnasium raises several error types (NameNotFound, DependencyNotInstalled...)
        raise DatasetError(f"cannot build env {env_id!r} to check dataset dims: {exc}") from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
        obs_shape = obs_space.shape if obs_space.shape else (gymnasium.spaces.flatdim(obs_space),)
        act_shape = act_space.shape if act_space.shape else (gymnasium.spaces.flatdim(act_space),)
        return tuple(obs_shape), tuple(act_shape)
    finally:
        env.close()


def is_registered_env(env_id: str) -> bool:
    """Whether gymnasium knows ``env_id`` (without building it)."""
    return env_id in gymnasium.registry


def check_env_dims(source: str, env_id: str, obs_dim: int, action_dim: int | None) -> None:
    """Compare dataset dims with the spaces of ``env_id``.

    Args:
        source: file name or dataset id used in messages.
        env_id: a gymnasium env id, e.g. ``"Hopper-v5"``.
        obs_dim: ``D`` of ``observations [N, D]``.
        action_dim: ``A`` of ``actions [N, A]``, ``None`` for action-free datasets.

    Raises:
        DatasetError: when the env cannot be built or a dim differs.
    """
    try:
        obs_shape, act_shape = env_dims(env_id)
    except DatasetError as exc:
        raise DatasetError(f"{source}: {exc}") from exc
    if (obs_dim,) != obs_shape:
        raise DatasetError(
            f"{source}: key 'observations' has obs_dim {obs_dim} but env {env_id!r} has observation shape {obs_shape}"
        )
    if action_dim is not None and (action_dim,) != act_shape:
        raise DatasetError(
            f"{source}: key 'actions' has action_dim {action_dim} but env {env_id!r} has action shape {act_shape}"
        )
