"""Readers and writers for offline datasets: D4RL-layout HDF5, ``.npz`` and Minari.

``load_dataset(source)`` dispatches on ``source``: an existing ``.hdf5``/``.h5`` or ``.npz`` file, otherwise
a Minari dataset id under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``). Every reader refuses
bad input with a ``DatasetError`` naming the file, the key and the problem. Writers are atomic: a temp file
renamed into place, or for Minari a dataset folder deleted again when writing fails.

Floats are stored as float32 and flags as bool, so round trips between the formats are exact.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mbrl.data.dataset import OfflineDataset
from mbrl.data.validate import (
    ARRAY_KEYS,
    REQUIRED_KEYS,
    DatasetError,
    array_problems,
    check_env_dims,
    dtype_problem,
    is_registered_env,
    raise_problems,
)
from mbrl.utils import atomic_write

HDF5_SUFFIXES = (".hdf5", ".h5")
NPZ_SUFFIXES = (".npz",)
_META_KEYS = ("env_id", "metadata_json")  # npz keys that carry metadata as 0-d unicode arrays


def load_dataset(source: str | os.PathLike[str], *, env_id: str | None = None) -> OfflineDataset:
    """Load an offline dataset from an HDF5 file, an npz file or a local Minari dataset id.

    Args:
        source: path to ``.hdf5``/``.h5``/``.npz``, or a Minari id such as ``"mujoco/hopper/medium-v0"``.
        env_id: gymnasium env id to validate dims against. It overrides an env id found in the source
            (and must be buildable); an env id found in the source is checked when gymnasium knows it.

    Raises:
        DatasetError: unreadable source or invalid content (message: ``<file>: <key>: <problem>``).
    """
    path = Path(source)
    name = path.name or str(source)
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix in HDF5_SUFFIXES:
            ds = _read_hdf5(path)
        elif suffix in NPZ_SUFFIXES:
            ds = _read_npz(path)
        else:
            raise DatasetError(
                f"{name}: unknown dataset format {suffix!r} (expected .hdf5, .h5, .npz or a Minari id)"
            )
    elif suffix in HDF5_SUFFIXES + NPZ_SUFFIXES or path.is_dir():
        raise DatasetError(f"{source}: no such file")
    else:
        ds = _read_minari(str(source))
    return _attach_env(ds, env_id)


def _attach_env(ds: OfflineDataset, env_id: str | None) -> OfflineDataset:
    """Validate dims against the explicit env id, or the source's env id when gymnasium knows it."""
    if env_id is not None:
        check_env_dims(ds.source, env_id, ds.obs_dim, ds.action_dim if ds.has_actions else None)
        ds.env_id = env_id
    elif ds.env_id is not None and is_registered_env(ds.env_id):
        check_env_dims(ds.source, ds.env_id, ds.obs_dim, ds.action_dim if ds.has_actions else None)
    return ds


def derive_next_observations(
    source: str,
    observations: np.ndarray,
    actions: np.ndarray | None,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray | None,
) -> dict[str, np.ndarray | None]:
    """Build transitions from a D4RL file that lacks ``next_observations``, as D4RL's ``qlearning_dataset``.

    For ``i < N - 1``: ``next_obs[i] = observations[i + 1]``; step ``i`` is dropped when ``timeouts[i]`` (the
    last step of a timed-out episode has no next observation in the file), and the very last row is dropped
    (its next observation is not in the file). Terminals are kept (at a terminal step ``next_obs`` is the next
    episode's first obs, as in D4RL; it is never bootstrapped from) and marked ``next_obs_known = False``, so
    that models of the transition (inverse dynamics) never learn the jump to another episode's reset state.
    Beyond D4RL, the kept step just before a dropped timeout step gets ``timeouts = True``, since its episode
    ends there by truncation.

    Returns:
        The D4RL arrays of the kept rows (``actions`` ``None`` when absent) and ``next_obs_known``.
    """
    n = len(observations)
    to = np.zeros(n, dtype=bool) if timeouts is None else np.asarray(timeouts).astype(bool)
    term = np.asarray(terminals).astype(bool)
    keep = ~to
    keep[-1] = False
    new_timeouts = np.zeros(n, dtype=bool)
    new_timeouts[:-1] = to[1:] & ~term[:-1]
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise DatasetError(
            f"{source}: dataset is empty (no transition left after deriving next_observations)"
        )
    return {
        "observations": observations[rows],
        "actions": None if actions is None else actions[rows],
        "rewards": rewards[rows],
        "next_observations": observations[rows + 1],
        "terminals": term[rows],
        "timeouts": new_timeouts[rows],
        "next_obs_known": ~term[rows],
    }


def _build(
    source: str,
    arrays: dict[str, np.ndarray | None],
    *,
    refused: Mapping[str, str] | None = None,
    env_id: str | None,
    metadata: dict[str, Any],
    action_free: bool = False,
) -> OfflineDataset:
    """Validate raw file arrays, derive ``next_observations`` when absent, and build the dataset.

    ``refused``: keys the reader could not take (unreadable, pickled, a group), with their problem; they are
    reported together with every problem of the other arrays, in one error. ``env_id`` (found in the file) is
    attached unchecked; ``load_dataset`` checks it when gymnasium knows it.
    """
    # A plain D4RL-layout file with every other required key but no ``actions`` key at all is clearly an
    # action-free dataset (states and rewards only, as in semi-supervised offline RL), marker or not.
    if arrays.get("actions") is None and all(arrays.get(k) is not None for k in REQUIRED_KEYS if k != "actions"):
        action_free = True
    required = tuple(k for k in REQUIRED_KEYS if not (action_free and k == "actions"))
    refused = dict(refused or {})
    problems = list(refused.values())
    problems += array_problems(arrays, required=tuple(k for k in required if k not in refused))
    raise_problems(source, problems)
    if arrays.get("next_observations") is None:
        derived = derive_next_observations(
            source,
            arrays["observations"],  # type: ignore[arg-type]
            arrays.get("actions"),
            arrays["rewards"],  # type: ignore[arg-type]
            arrays["terminals"],  # type: ignore[arg-type]
            arrays.get("timeouts"),
        )
        proxy = arrays.get("proxy_actions")
        if proxy is not None:
            raise DatasetError(f"{source}: key 'proxy_actions' needs 'next_observations' in the file")
        arrays = dict(derived)
    ds = OfflineDataset(
        arrays["observations"],  # type: ignore[arg-type]
        arrays.get("actions"),
        arrays["rewards"],  # type: ignore[arg-type]
        arrays["next_observations"],  # type: ignore[arg-type]
        arrays["terminals"],  # type: ignore[arg-type]
        arrays.get("timeouts"),
        metadata=metadata,
        source=source,
        proxy_actions=arrays.get("proxy_actions"),
        next_obs_known=arrays.get("next_obs_known"),
    )
    ds.env_id = env_id
    return ds


def _plain(value: Any) -> Any:
    """numpy scalars/bytes/arrays from HDF5 attrs -> JSON-able Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _metadata_to_json(metadata: dict[str, Any]) -> str:
    try:
        return json.dumps(metadata, default=_plain)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"dataset metadata is not JSON-serialisable: {exc}") from exc


# ------------------------------------------------------------------------------------------------- HDF5
def _read_hdf5(path: Path) -> OfflineDataset:
    import h5py

    source = path.name
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{source}: not a readable HDF5 file ({exc})") from exc
    with f:
        arrays: dict[str, np.ndarray | None] = {}
        refused: dict[str, str] = {}  # key -> problem; every key is read and checked before anything is raised
        for key in ARRAY_KEYS:
            if key not in f:
                continue
            node = f[key]
            if not isinstance(node, h5py.Dataset):
                refused[key] = f"key {key!r} is a group, expected an array"
                continue
            try:
                arrays[key] = np.asarray(node[()])
            except (OSError, TypeError, ValueError) as exc:
                refused[key] = f"key {key!r} cannot be read ({exc})"
        metadata: dict[str, Any] = {}
        for key, value in f.attrs.items():
            metadata[key] = _plain(value)
        group = f.get("metadata")
        if isinstance(group, h5py.Group):
            for key, value in group.attrs.items():
                metadata[key] = _plain(value)
            # D4RL files keep scalars such as metadata/algorithm as datasets; policy weights are skipped.
            for key, node in group.items():
                if isinstance(node, h5py.Dataset) and node.shape == ():
                    metadata.setdefault(key, _plain(node[()]))
    if "metadata_json" in metadata:
        try:
            stored = json.loads(str(metadata.pop("metadata_json")))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{source}: key 'metadata/metadata_json' is not valid JSON ({exc})") from exc
        metadata = {**metadata, **stored}
    env_id = metadata.pop("env_id", None)
    action_free = bool(metadata.pop("action_free", False))
    return _build(
        source,
        arrays,
        refused=refused,
        env_id=None if env_id is None else str(env_id),
        metadata=metadata,
        action_free=action_free,
    )


def _arrays_of(ds: OfflineDataset) -> dict[str, np.ndarray]:
    arrays = {
        "observations": ds.observations,
        "actions": ds.actions,
        "rewards": ds.rewards,
        "next_observations": ds.next_observations,
        "terminals": ds.terminals,
        "timeouts": ds.timeouts,
        "proxy_actions": ds.proxy_actions,
        "next_obs_known": ds.next_obs_known,
    }
    return {k: v for k, v in arrays.items() if v is not None}


def save_hdf5(ds: OfflineDataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` in the D4RL HDF5 layout (with ``next_observations``), atomically.

    Top-level arrays use the D4RL keys; group ``metadata`` holds attrs ``env_id``, ``ref_min_score``,
    ``ref_max_score`` (when known), ``action_free`` and ``metadata_json`` (the whole metadata dict).
    """
    import h5py

    meta_json = _metadata_to_json(ds.metadata)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for key, value in _arrays_of(ds).items():
                f.create_dataset(key, data=value)
            group = f.create_group("metadata")
            if ds.env_id is not None:
                group.attrs["env_id"] = ds.env_id
            for key in ("ref_min_score", "ref_max_score"):
                if isinstance(ds.metadata.get(key), (int, float)):
                    group.attrs[key] = float(ds.metadata[key])
            group.attrs["action_free"] = not ds.has_actions
            group.attrs["metadata_json"] = meta_json

    atomic_write(Path(path), write)


# -------------------------------------------------------------------------------------------------- npz
def _read_npz(path: Path) -> OfflineDataset:
    import zipfile

    source = path.name
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{source}: not a readable npz file ({exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DatasetError(f"{source}: a single .npy array, expected an npz archive of named arrays")
    arrays: dict[str, np.ndarray | None] = {}
    env_id: str | None = None
    metadata: dict[str, Any] = {}
    action_free = False
    refused: dict[str, str] = {}  # key -> problem; every key is read and checked before anything is raised
    with data:
        # Every member is read (an object array is refused, never unpickled, and never silently skipped).
        for key in data.files:
            try:
                value = data[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    refused[key] = f"key {key!r} is an object array (needs pickle); refusing to load it"
                else:
                    refused[key] = f"key {key!r} cannot be read ({exc})"
                continue
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                refused[key] = f"key {key!r} cannot be read ({exc})"
                continue
            if key in _META_KEYS:
                if value.ndim != 0 or value.dtype.kind != "U":
                    raise DatasetError(
                        f"{source}: key {key!r} must be a 0-d string array, got {value.dtype} {value.shape}"
                    )
                if key == "env_id":
                    env_id = str(value)
                else:
                    try:
                        metadata = json.loads(str(value))
                    except json.JSONDecodeError as exc:
                        raise DatasetError(
                            f"{source}: key 'metadata_json' is not valid JSON ({exc})"
                        ) from exc
            elif key == "action_free":
                problem = dtype_problem(key, value)
                if problem is not None:
                    refused[key] = problem
                else:
                    action_free = bool(value)
            elif key in ARRAY_KEYS:
                arrays[key] = value  # dtype, shape and values are checked with the other keys in _build
            else:
                problem = dtype_problem(key, value)
                if problem is not None:
                    refused[key] = problem
    return _build(source, arrays, refused=refused, env_id=env_id, metadata=metadata, action_free=action_free)


def save_npz(ds: OfflineDataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` as an uncompressed ``.npz`` with the D4RL keys, atomically.

    Metadata travels as 0-d string arrays ``env_id`` and ``metadata_json`` (readable with
    ``allow_pickle=False``); an action-free dataset gets ``action_free = True``.
    """
    arrays: dict[str, np.ndarray] = dict(_arrays_of(ds))
    arrays["metadata_json"] = np.array(_metadata_to_json(ds.metadata))
    if ds.env_id is not None:
        arrays["env_id"] = np.array(ds.env_id)
    if not ds.has_actions:
        arrays["action_free"] = np.array(True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(Path(path), write)


# ----------------------------------------------------------------------------------------------- Minari
def _minari_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def _read_minari(dataset_id: str) -> OfflineDataset:
    import minari

    source = dataset_id
    root = _minari_root()
    if not (root / dataset_id / "data").is_dir():
        raise DatasetError(
            f"{source}: no such file, and no local Minari dataset with this id under {root} (MINARI_DATASETS_PATH). "
            f"Get it with `minari download {dataset_id}` (needs the internet), or make D4RL-style datasets "
            "locally with `mbrl dataset make --env ENV --out-dir DIR` and point MINARI_DATASETS_PATH at DIR"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            md = minari.load_dataset(dataset_id)
    except Exception as exc:  # minari raises ValueError/KeyError/OSError/AssertionError on broken folders
        raise DatasetError(f"{source}: cannot open the Minari dataset ({type(exc).__name__}: {exc})") from exc
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "next_obs", "act", "rew", "term", "trunc", "proxy", "known")
    }
    has_proxy = has_known = False
    for ep in md.iterate_episodes():
        where = f"{source}: episode {ep.id}"
        if not isinstance(ep.observations, np.ndarray) or not isinstance(ep.actions, np.ndarray):
            raise DatasetError(f"{where}: only flat Box observation/action spaces are supported")
        obs, act = np.asarray(ep.observations), np.asarray(ep.actions)
        t = len(ep.rewards)
        if t == 0:
            continue
        if obs.ndim != 2 or act.ndim != 2:
            raise DatasetError(
                f"{where}: observations {obs.shape} / actions {act.shape} must be 2-D (flat Box spaces)"
            )
        if len(obs) != t + 1:
            raise DatasetError(
                f"{where}: key 'observations' has {len(obs)} rows, expected {t + 1} (rewards + 1)"
            )
        for key, value in (
            ("actions", act),
            ("terminations", ep.terminations),
            ("truncations", ep.truncations),
        ):
            if len(value) != t:
                raise DatasetError(f"{where}: key {key!r} has {len(value)} rows, expected {t} (as 'rewards')")
        parts["obs"].append(obs[:-1])
        parts["next_obs"].append(obs[1:])
        parts["act"].append(act)
        parts["rew"].append(np.asarray(ep.rewards))
        parts["term"].append(np.asarray(ep.terminations))
        parts["trunc"].append(np.asarray(ep.truncations))
        proxy = (ep.infos or {}).get("proxy_action")
        has_proxy |= proxy is not None
        parts["proxy"].append(np.zeros(t, bool) if proxy is None else np.asarray(proxy).reshape(-1)[:t])
        known = (ep.infos or {}).get("next_obs_known")
        has_known |= known is not None
        parts["known"].append(np.ones(t, bool) if known is None else np.asarray(known, bool).reshape(-1)[:t])
    if not parts["obs"]:
        raise DatasetError(f"{source}: dataset is empty (no episode with steps)")
    meta = md.storage.metadata
    metadata = {
        k: _plain(meta[k])
        for k in (
            "ref_min_score",
            "ref_max_score",
            "algorithm_name",
            "description",
            "code_permalink",
            "dataset_id",
        )
        if meta.get(k) is not None
    }
    env_spec = md.spec.env_spec
    env_id = None if env_spec is None else str(env_spec.id)
    arrays: dict[str, np.ndarray | None] = {
        "observations": np.concatenate(parts["obs"]),
        "actions": np.concatenate(parts["act"]),
        "rewards": np.concatenate(parts["rew"]),
        "next_observations": np.concatenate(parts["next_obs"]),
        "terminals": np.concatenate(parts["term"]),
        "timeouts": np.concatenate(parts["trunc"]),
        "proxy_actions": np.concatenate(parts["proxy"]) if has_proxy else None,
        "next_obs_known": np.concatenate(parts["known"]) if has_known else None,
    }
    obs_space_shape = getattr(md.observation_space, "shape", None)
    ds = _build(source, arrays, env_id=env_id, metadata=metadata)
    if obs_space_shape is not None and tuple(obs_space_shape) != (ds.obs_dim,):
        raise DatasetError(
            f"{source}: key 'observations' has obs_dim {ds.obs_dim} but the dataset's observation_space "
            f"has shape {tuple(obs_space_shape)}"
        )
    return ds


@contextmanager
def _quiet() -> Iterator[None]:
    # Minari warns about every optional field left None (author, permalink, ...): library code stays quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def save_minari(
    ds: OfflineDataset,
    dataset_id: str,
    *,
    env_id: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``ds`` as a local Minari dataset (under ``$MINARI_DATASETS_PATH``) so it can be shared.

    Each episode becomes one Minari episode holding ``T + 1`` observations (the episode's observations
    then the final next observation); terminals/timeouts become terminations/truncations; proxy-action
    flags go to ``infos["proxy_action"]`` and ``next_obs_known`` to ``infos["next_obs_known"]``. Uses
    ``minari.create_dataset_from_buffers`` (no jax needed).
    On failure the partly written dataset folder is deleted.

    Args:
        ds: the dataset (must have actions).
        dataset_id: Minari id ``(namespace/)name-vN``, e.g. ``"mbrl/hopper/random-v0"``.
        env_id: gymnasium env id recorded in the dataset (default ``ds.env_id``); when ``None`` the spaces
            are unbounded float32 Boxes of the dataset's dims.
        ref_min_score: D4RL-style reference score of a random policy (default from ``ds.metadata``).
        ref_max_score: reference score of an expert (default from ``ds.metadata``). Give both or neither
            (Minari would otherwise roll out 100 random episodes to estimate the minimum); needs an env id.
        algorithm_name: recorded in the Minari metadata.
        author: recorded in the Minari metadata.
        author_email: recorded in the Minari metadata.
        code_permalink: recorded in the Minari metadata.
        description: recorded in the Minari metadata.

    Returns:
        The dataset's folder.

    Raises:
        DatasetError: action-free dataset, malformed or existing id, only one reference score given,
            scores without an env id, or dims that do not match the env.
    """
    import gymnasium
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id

    if not ds.has_actions:
        raise DatasetError(
            f"{ds.source}: cannot write an action-free dataset to Minari (actions are required)"
        )
    try:
        parse_dataset_id(dataset_id)
    except ValueError as exc:
        raise DatasetError(
            f"{dataset_id}: not a valid Minari dataset id (expected (namespace/)name-vN)"
        ) from exc
    env_id = env_id if env_id is not None else ds.env_id
    lo = ref_min_score if ref_min_score is not None else ds.metadata.get("ref_min_score")
    hi = ref_max_score if ref_max_score is not None else ds.metadata.get("ref_max_score")
    if (lo is None) != (hi is None):
        raise DatasetError(f"{dataset_id}: give both ref_min_score and ref_max_score, or neither")
    if lo is not None and env_id is None:
        raise DatasetError(
            f"{dataset_id}: reference scores need an env id (Minari keeps them with its eval env)"
        )
    if env_id is not None:
        check_env_dims(ds.source, env_id, ds.obs_dim, ds.action_dim)
    target = _minari_root() / dataset_id
    if target.exists():
        raise DatasetError(f"{dataset_id}: a Minari dataset with this id already exists at {target}")

    obs, nxt = ds.observations, ds.next_observations
    buffers = []
    for i, (start, stop) in enumerate(ds.episode_slices()):
        infos: dict[str, np.ndarray] = {}
        if ds.proxy_actions is not None:
            infos["proxy_action"] = ds.proxy_actions[start:stop].copy()
        if ds.next_obs_known is not None:  # else a derived next state (D4RL file without it) would become "true"
            infos["next_obs_known"] = ds.next_obs_known[start:stop].copy()
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=np.concatenate([obs[start:stop], nxt[stop - 1 : stop]]),
                actions=ds.actions[start:stop].copy(),  # type: ignore[index]
                rewards=ds.rewards[start:stop].copy(),  # type: ignore[arg-type]
                terminations=ds.terminals[start:stop].copy(),  # type: ignore[arg-type]
                truncations=ds.timeouts[start:stop].copy(),  # type: ignore[arg-type]
                infos=infos or None,
            )
        )
    spaces: dict[str, Any] = {}
    if env_id is None:
        spaces = {
            "observation_space": gymnasium.spaces.Box(-np.inf, np.inf, (ds.obs_dim,), np.float32),
            "action_space": gymnasium.spaces.Box(-np.inf, np.inf, (ds.action_dim,), np.float32),
        }
    try:
        with _quiet():
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=env_id,
                eval_env=env_id,
                algorithm_name=algorithm_name,
                author=author,
                author_email=author_email,
                code_permalink=code_permalink,
                description=description,
                ref_min_score=None if lo is None else float(lo),
                ref_max_score=None if hi is None else float(hi),
                **spaces,
            )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
