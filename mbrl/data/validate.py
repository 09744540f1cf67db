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
    """Bad dataset input. The message is one line: ``<file>: <key>: <problem>``, or, when a file has several
    problems, ``<file>: N problems: <problem 1>; <problem 2>; ...`` (each also in ``problems``).

    A ``ValueError`` so that the ``mbrl`` command prints it as one line and exits 2.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        # One line always: messages may embed text from h5py/zipfile errors that span lines.
        super().__init__(" ".join(str(message).split()))
        self.problems: list[str] = list(problems) if problems else [" ".join(str(message).split())]


def dtype_problem(key: str, array: np.ndarray) -> str | None:
    """What is wrong with ``array``'s dtype (object, string, other non-numeric), or ``None``."""
    if array.dtype == object:
        return f"key {key!r} is an object array (dtype=object); refusing to load it"
    if not (np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)):
        return f"key {key!r} has non-numeric dtype {array.dtype}"
    return None


def check_dtype(source: str, key: str, array: np.ndarray) -> None:
    """Refuse object, string and other non-numeric arrays (an npz object array is refused, not skipped)."""
    problem = dtype_problem(key, array)
    if problem is not None:
        raise DatasetError(f"{source}: {problem}")


def raise_problems(source: str, problems: list[str]) -> None:
    """Raise one :class:`DatasetError` naming every problem (nothing when ``problems`` is empty)."""
    if len(problems) == 1:
        raise DatasetError(f"{source}: {problems[0]}", problems)
    if problems:
        raise DatasetError(f"{source}: {len(problems)} problems: " + "; ".join(problems), problems)


def array_problems(arrays: Mapping[str, np.ndarray | None], *, required: tuple[str, ...]) -> list[str]:
    """Every problem of raw arrays in the D4RL vocabulary: missing keys, bad dtypes, wrong ndim, an empty
    dataset, length mismatches (against ``observations``), obs dims of ``next_observations``, and NaN/Inf per
    key with their counts and first rows. Checks that need a sound key (length, values) skip keys already
    found broken."""
    present = {k: v for k, v in arrays.items() if v is not None}
    problems: list[str] = []
    missing = [k for k in required if k not in present]
    if missing:
        found = ", ".join(sorted(present)) or "nothing"
        names = ", ".join(repr(k) for k in missing)
        problems.append(f"missing required key{'s' if len(missing) > 1 else ''} {names} (found: {found})")
    sound: dict[str, np.ndarray] = {}
    for key, value in present.items():
        problem = dtype_problem(key, value)
        if problem is None and key in _NDIM and value.ndim != _NDIM[key][0]:
            ndim, meaning = _NDIM[key]
            problem = f"key {key!r} has shape {tuple(value.shape)} (ndim {value.ndim}), expected ndim {ndim} {meaning}"
        if problem is None:
            sound[key] = value
        else:
            problems.append(problem)
    if not present:
        return [*problems, "dataset is empty (no arrays)"]
    ref_key = "observations" if "observations" in sound else next(iter(sound), None)
    if ref_key is not None:
        n = len(sound[ref_key])
        if n == 0:
            return [*problems, f"dataset is empty (key {ref_key!r} has 0 rows)"]
        for key, value in list(sound.items()):
            if len(value) != n:
                problems.append(f"key {key!r} has {len(value)} rows, expected {n} (as {ref_key!r})")
                del sound[key]
    if "observations" in sound and "next_observations" in sound:
        d, d_next = sound["observations"].shape[1:], sound["next_observations"].shape[1:]
        if d != d_next:
            problems.append(f"key 'next_observations' has obs_dim {d_next[0]}, expected {d[0]} (as 'observations')")
    for key, value in sound.items():
        if np.issubdtype(value.dtype, np.floating):
            problem = finite_problem(key, value)
            if problem is not None:
                problems.append(problem)
    return problems


def check_arrays(source: str, arrays: Mapping[str, np.ndarray | None], *, required: tuple[str, ...]) -> None:
    """Validate raw arrays in the D4RL vocabulary before they become an ``OfflineDataset``.

    Args:
        source: file name or dataset id used in messages.
        arrays: key -> array (``None`` or missing = absent).
        required: keys that must be present.

    Raises:
        DatasetError: naming every problem :func:`array_problems` finds, in one message.
    """
    raise_problems(source, array_problems(arrays, required=required))


def finite_problem(key: str, array: np.ndarray, first: int = 3) -> str | None:
    """NaN and Inf in ``array``: their counts and the first ``first`` bad rows, or ``None`` when all finite."""
    finite = np.isfinite(array)
    if finite.all():
        return None
    flat = array.reshape(len(array), -1)
    parts = []
    for kind, mask in (("NaN", np.isnan(flat)), ("Inf", np.isinf(flat))):
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size:
            shown = ", ".join(str(int(r)) for r in rows[:first]) + (", ..." if rows.size > first else "")
            parts.append(f"{int(mask.sum())} {kind} (first at row{'s' if rows.size > 1 else ''} {shown})")
    return f"key {key!r} contains " + " and ".join(parts)


def check_finite(source: str, key: str, array: np.ndarray) -> None:
    """Refuse NaN and Inf, naming their counts and first rows."""
    problem = finite_problem(key, array)
    if problem is not None:
        raise DatasetError(f"{source}: {problem}")


@functools.lru_cache(maxsize=64)
def env_dims(env_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Observation and action shapes of a gymnasium env (built once per id, then cached).

    Raises:
        DatasetError: when gymnasium cannot build the env.
    """
    import mbrl.gym_env  # noqa: F401  (installs the MuJoCo warning filter: no settotalmass noise on stderr)

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
