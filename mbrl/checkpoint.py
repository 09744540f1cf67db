"""Checkpoints: atomic save, safe load, run-directory checkpoint files and random-state capture.

A checkpoint file is ``torch.save`` of::

    {"config": "<JSON of the run's config>", "state": {name: state_dict}, "extra": {...}, "version": 1}

It holds only what ``torch.load(weights_only=True)`` accepts: tensors, Python scalars and strings, ``None``,
lists, tuples and dicts of these. NumPy arrays and scalars in ``state``/``extra`` are converted on save
(arrays to tensors wrapped in a ``{"__ndarray__": tensor}`` marker, scalars to Python numbers) and arrays are
converted back on load, so a component may keep numpy arrays in its state dict. Anything else (an arbitrary
object) is refused on save, and a file holding one is refused on load, without unpickling it: loading never
runs code from a file.

Writes go to a temp file in the same directory, are fsynced, then renamed over the target (``os.replace`` is
atomic on POSIX and Windows), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl.utils import atomic_write

CHECKPOINT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
_NDARRAY = "__ndarray__"
_REQUIRED = ("config", "state", "version")


class CheckpointError(ValueError):
    """A checkpoint could not be written or read (missing, corrupt, unsafe, wrong version or layout)."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        config: The run's config as a JSON dict (rebuild the dataclass with ``mbrl.run.config_from_dict``).
        state: ``{name: state_dict}``; numpy arrays saved in it come back as numpy arrays.
        extra: Free-form extras (e.g. ``{"step": 1000, "rng": rng_state(...)}``); ``{}`` when none.
        version: The file's layout version (== :data:`CHECKPOINT_VERSION`).
    """

    config: dict[str, Any]
    state: dict[str, Any]
    extra: dict[str, Any]
    version: int


# ---------------------------------------------------------------------------------------------------------
# Config <-> JSON


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (or mapping) as a JSON-ready dict: nested dataclasses to dicts, tuples to lists,
    ``Path`` to ``str``, enums to their values.

    Raises:
        TypeError: A field holds something JSON cannot represent.
    """
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)) and not isinstance(
        config, Mapping
    ):
        raise TypeError(f"config must be a dataclass instance or a mapping, got {type(config).__name__}")
    out = _jsonable(config)
    assert isinstance(out, dict)
    return out


def config_to_json(config: Any) -> str:
    """:func:`config_to_dict` as a JSON string (fields in declaration order)."""
    return json.dumps(config_to_dict(config), indent=2, allow_nan=True)


# ---------------------------------------------------------------------------------------------------------
# weights_only-safe encoding of state


def _encode(value: Any, where: str) -> Any:
    """Make ``value`` loadable with ``weights_only=True``; numpy arrays become marked tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "USVMm":
            raise CheckpointError(f"{where}: numpy array of dtype {value.dtype} cannot be stored as a tensor")
        array = np.ascontiguousarray(value)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return {_NDARRAY: torch.from_numpy(array).clone()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return value
    if isinstance(value, Mapping):
        if _NDARRAY in value:
            raise CheckpointError(f"{where}: the key {_NDARRAY!r} is reserved")
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where}: dict key {k!r} is not a str or int")
            out[k] = _encode(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, torch.Size):
        return value
    if isinstance(value, tuple):
        return tuple(_encode(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(
        f"{where}: {type(value).__module__}.{type(value).__name__} cannot go in a checkpoint; "
        "store tensors, numpy arrays, numbers, strings, lists or dicts"
    )


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _NDARRAY in value and isinstance(value[_NDARRAY], torch.Tensor):
            return value[_NDARRAY].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, tuple) and not isinstance(value, torch.Size):
        return tuple(_decode(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Save / load


def save_checkpoint(
    path: Path | str,
    *,
    config: Any,
    state: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically: temp file in the same directory, fsync, ``os.replace``.

    Args:
        path: Target file (its directory is created if missing).
        config: The run's config: a dataclass instance or a mapping (stored as a JSON string).
        state: ``{name: state_dict}`` (e.g. ``{"model": model.state_dict(), "agent": ...}``).
        extra: Anything else loadable with ``weights_only`` (step counters, :func:`rng_state`, ...).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        CheckpointError: ``state``/``extra`` holds an object that cannot be stored safely. Nothing is written.
    """
    path = Path(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, Mapping) for v in state.values()):
        raise CheckpointError(f"{path}: state must be a mapping of name -> state_dict (a mapping)")
    try:
        config_json = config_to_json(config)
    except TypeError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    payload = {
        "config": config_json,
        "state": _encode(dict(state), "state"),
        "extra": _encode(dict(extra or {}), "extra"),
        "version": CHECKPOINT_VERSION,
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(payload: Any, path: Path | str) -> Path:
    """``torch.save(payload)`` with :func:`mbrl.utils.atomic_write`: a reader sees the old file or the new one,
    never half of one. Creates the parent directory."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            torch.save(payload, f)

    return atomic_write(path, write)


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Load a checkpoint with ``torch.load(weights_only=True, map_location="cpu")``.

    A file holding anything but tensors and plain data (e.g. a pickled object whose ``__reduce__`` would run
    code) is refused before any of it is executed.

    Raises:
        CheckpointError: Missing file; non-tensor objects (refused, not loaded); corrupt or truncated file;
            a layout without ``config``/``state``/``version``; another version; a config that is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the weights-only unpickler still guards.
            warnings.simplefilter("ignore")
            raw = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler refused an opcode or a global: nothing in the file was executed.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        names_global = next((line for line in lines if "GLOBAL" in line), None)
        if names_global is not None:
            raise CheckpointError(
                f"{path}: holds non-tensor objects (pickled Python objects or code: {names_global}); "
                "refused and not loaded"
            ) from None
        hint = next((line for line in lines if "Unsupported" in line), lines[-1] if lines else "")
        raise CheckpointError(
            f"{path}: corrupt, or holds non-tensor objects the safe loader rejects ({hint}); refused and not loaded"
        ) from None
    except Exception as exc:  # zip/EOF/Key errors from torch's readers: the bytes are not a checkpoint
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint (top level is {type(raw).__name__}, expected a dict)"
        )
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint: missing key(s) {', '.join(missing)}")
    version = raw["version"]
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {version!r}; this toolkit reads version {CHECKPOINT_VERSION}"
        )
    if not isinstance(raw["config"], str):
        raise CheckpointError(f"{path}: 'config' is {type(raw['config']).__name__}, expected a JSON string")
    try:
        config = json.loads(raw["config"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: 'config' is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: 'config' JSON is {type(config).__name__}, expected an object")
    state = raw["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state' is {type(state).__name__}, expected a dict")
    extra = raw.get("extra") or {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: 'extra' is {type(extra).__name__}, expected a dict")
    return Checkpoint(config=config, state=_decode(state), extra=_decode(extra), version=version)


# ---------------------------------------------------------------------------------------------------------
# Run-directory checkpoints


def checkpoint_path(run_dir: Path | str, step: int) -> Path:
    """``run_dir/checkpoints/ckpt_{step:09d}.pt``."""
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{step:09d}.pt"


def list_checkpoints(run_dir: Path | str) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of the run's checkpoints, oldest first (temp files are ignored)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        match = _CKPT_RE.match(p.name)
        if match and p.is_file():
            found.append((int(match.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The checkpoint with the highest step in ``run_dir/checkpoints``, or ``None``."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_run_checkpoint(
    run_dir: Path | str,
    step: int,
    *,
    config: Any,
    state: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Save ``run_dir/checkpoints/ckpt_{step:09d}.pt`` (``extra["step"] = step``) and prune old ones.

    Args:
        run_dir: The run directory.
        step: The step the state belongs to; resuming continues after it.
        config: The run's config.
        state: ``{name: state_dict}``.
        extra: Extras; ``"step"`` is set to ``step``.
        keep_last: Keep this many newest checkpoints, delete older ones (``None``: keep all). Pruning runs
            after the new file is in place, so a crash never leaves zero checkpoints.

    Returns:
        The path written.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    path = save_checkpoint(
        checkpoint_path(run_dir, step), config=config, state=state, extra={**(extra or {}), "step": int(step)}
    )
    if keep_last is not None:
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------------
# Random state


def load_progress(path: Path | str | None, identity: Mapping[str, Any], what: str) -> Checkpoint | None:
    """The saved progress of a long stage (a fit, an adversarial training) to continue, or ``None`` to start.

    Args:
        path: the stage's progress file (``None`` or missing: nothing to continue).
        identity: what must match for the progress to belong to this stage (data sizes, seed, config, ...); it
            is stored as the checkpoint's config by the stage's ``save_checkpoint``.
        what: names the stage in the error, e.g. ``"IDM fit"``.

    Raises:
        ValueError: the file is the progress of another run of the stage (it names the file and how to go on).
    """
    if path is None or not Path(path).is_file():
        return None
    saved = load_checkpoint(path)
    if saved.config != json.loads(json.dumps(identity)):
        raise ValueError(
            f"{path}: progress of another {what} (data size, holdout, seed or config differ); remove it to start "
            "this one afresh"
        )
    return saved


def rng_state(np_rng: np.random.Generator, torch_gen: torch.Generator | None = None) -> dict[str, Any]:
    """Capture generator states with weights_only-safe types.

    Args:
        np_rng: A numpy Generator; its bit generator's state goes in as a JSON string (Python ints keep the
            128-bit PCG64 words exact).
        torch_gen: An optional torch Generator; its state is a uint8 tensor.

    Returns:
        ``{"numpy": str, "torch": uint8 tensor}`` (``"torch"`` only with a generator). Restoring gives the same
        subsequent draws; the SeedSequence used for ``spawn`` is not part of it.
    """

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):  # MT19937's key
            return {_NDARRAY: obj.tolist(), "dtype": str(obj.dtype)}
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"cannot serialise {type(obj).__name__} in a bit generator state")

    out: dict[str, Any] = {"numpy": json.dumps(np_rng.bit_generator.state, default=default)}
    if torch_gen is not None:
        out["torch"] = torch_gen.get_state().clone()
    return out


def restore_rng(
    state: Mapping[str, Any], np_rng: np.random.Generator, torch_gen: torch.Generator | None = None
) -> None:
    """Put states captured by :func:`rng_state` back into the given generators, in place.

    Raises:
        CheckpointError: The state lacks a part asked for, or was captured from another bit generator type.
    """
    if "numpy" not in state or not isinstance(state["numpy"], str):
        raise CheckpointError("random state has no 'numpy' JSON string")

    def hook(obj: dict[str, Any]) -> Any:
        if _NDARRAY in obj:
            return np.asarray(obj[_NDARRAY], dtype=obj["dtype"])
        return obj

    np_state = json.loads(state["numpy"], object_hook=hook)
    expected = type(np_rng.bit_generator).__name__
    if np_state.get("bit_generator") != expected:
        raise CheckpointError(
            f"random state is from a {np_state.get('bit_generator')!r} bit generator, this Generator uses {expected!r}"
        )
    if torch_gen is not None and ("torch" not in state or not isinstance(state["torch"], torch.Tensor)):
        raise CheckpointError("random state has no 'torch' tensor but a torch Generator was given")
    np_rng.bit_generator.state = np_state
    if torch_gen is not None:
        torch_gen.set_state(state["torch"])
