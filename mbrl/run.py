"""Run directories: one folder per training run, and continuing a run (``--resume``).

Layout::

    RUN_DIR/
      config.json            the run's config (written atomically when the run starts)
      progress.csv           metrics, one row per Logger.log call (mbrl.logging)
      events.out.tfevents.*  TensorBoard event files (mbrl.logging)
      checkpoints/           ckpt_{step:09d}.pt (mbrl.checkpoint)
      plots/                 PNG learning curves (``mbrl plot RUN_DIR``)

A typical loop::

    run = prepare_run_dir(path, config, resume=resume)
    ckpt = run.load_latest()                       # None for a new run
    start = ckpt.extra["step"] if ckpt else 0
    with Logger(run.path, total=config.total_steps, resume_step=start if ckpt else None) as logger:
        ...
        save_run_checkpoint(run.path, step, config=config, state={...}, extra={"rng": rng_state(...)})
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mbrl.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    checkpoint_path,
    config_to_dict,
    latest_checkpoint,
    load_checkpoint,
)
from mbrl.logging import CSV_NAME
from mbrl.utils import atomic_write

CONFIG_NAME = "config.json"
PLOTS_DIR = "plots"

RESUMABLE_FIELDS: frozenset[str] = frozenset(
    {
        "total_steps",
        "num_steps",
        "steps",
        "total_epochs",
        "device",
        "num_threads",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_last",
        "print_every_s",
        "run_dir",
        "resume",
    }
)
"""Config fields that may differ when a run is resumed (matched by leaf name or dotted path): run length,
hardware and bookkeeping, nothing that changes what the algorithm computes."""

T = TypeVar("T")


class RunDirError(ValueError):
    """A run directory cannot be started or resumed as asked."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (see the module docstring for the layout)."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def csv_path(self) -> Path:
        return self.path / CSV_NAME

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files live in the run directory itself (``tensorboard --logdir RUNS``)."""
        return self.path

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    def read_config(self) -> dict[str, Any]:
        """The stored ``config.json`` as a dict.

        Raises:
            RunDirError: Missing or not a JSON object.
        """
        return _read_config(self.config_path)

    def checkpoint_path(self, step: int) -> Path:
        """``checkpoints/ckpt_{step:09d}.pt``."""
        return checkpoint_path(self.path, step)

    def latest_checkpoint(self) -> Path | None:
        """Newest checkpoint, or ``None``."""
        return latest_checkpoint(self.path)

    def load_latest(self) -> Checkpoint | None:
        """Load the newest checkpoint (``None`` when there is none)."""
        latest = self.latest_checkpoint()
        return load_checkpoint(latest) if latest is not None else None


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirError(f"{path} not found: not a run directory")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_json_atomic(path: Path | str, data: Any) -> Path:
    """Write JSON to a temp file beside ``path``, then rename it over ``path``."""
    text = json.dumps(data, indent=2) + "\n"  # serialised first: a value JSON cannot hold leaves path untouched
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(
    stored: Mapping[str, Any], given: Mapping[str, Any], resumable: Collection[str] = RESUMABLE_FIELDS
) -> list[str]:
    """Dotted names of fields that differ between two config dicts, ignoring resumable ones.

    Each entry reads ``"name: stored X, given Y"``; a field present on one side only shows as ``<absent>``.
    """
    a, b = _flatten(stored), _flatten(given)
    diffs = []
    for name in sorted(set(a) | set(b)):
        if name in resumable or name.rsplit(".", 1)[-1] in resumable:
            continue
        left, right = a.get(name, "<absent>"), b.get(name, "<absent>")
        if left != right:
            diffs.append(f"{name}: stored {left!r}, given {right!r}")
    return diffs


def check_run_dir(
    path: Path | str, config: Any, *, resume: bool, resumable: Collection[str] = RESUMABLE_FIELDS
) -> RunDir:
    """The checks of :func:`prepare_run_dir`, writing nothing: call it before validating a run's inputs (a
    dataset, an env), so that a run refused for bad input leaves no directory behind.

    Raises:
        RunDirError: as :func:`prepare_run_dir`.
    """
    run = RunDir(Path(path))
    given = config_to_dict(config)
    if resume:
        if not run.path.is_dir():
            raise RunDirError(f"cannot resume: run directory {run.path} does not exist")
        stored = run.read_config()
        diffs = config_differences(stored, given, resumable)
        if diffs:
            raise RunDirError(
                f"cannot resume {run.path}: config differs from {run.config_path} in {len(diffs)} field(s): "
                + "; ".join(diffs)
            )
    elif run.path.exists():
        if not run.path.is_dir():
            raise RunDirError(f"run directory {run.path} exists and is not a directory")
        if any(run.path.iterdir()):
            raise RunDirError(
                f"run directory {run.path} already exists and is not empty; resume it (--resume) or pick a new one"
            )
    return run


def prepare_run_dir(
    path: Path | str, config: Any, *, resume: bool, resumable: Collection[str] = RESUMABLE_FIELDS
) -> RunDir:
    """Start a new run directory or check one to resume.

    New run: ``path`` must not exist or be empty; creates it, ``checkpoints/`` and ``plots/``, and writes
    ``config.json`` atomically. Resume: ``path`` must hold a ``config.json`` equal to ``config`` on every field
    but the ``resumable`` ones; ``config.json`` is then rewritten with ``config`` (so it shows the settings of
    the latest session).

    Args:
        path: The run directory.
        config: The run's config dataclass (or mapping).
        resume: Continue an existing run instead of starting one.
        resumable: Field names (leaf or dotted) allowed to differ on resume.

    Raises:
        RunDirError: New run into a non-empty directory; resume of a missing directory or one without
            ``config.json``; a config that differs on non-resumable fields (all of them are named).
    """
    run = check_run_dir(path, config, resume=resume, resumable=resumable)
    given = config_to_dict(config)
    run.path.mkdir(parents=True, exist_ok=True)
    run.checkpoints_dir.mkdir(exist_ok=True)
    run.plots_dir.mkdir(exist_ok=True)
    write_json_atomic(run.config_path, given)
    return run


# ---------------------------------------------------------------------------------------------------------
# JSON -> config dataclass


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: {value!r} matches none of {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object for {tp.__name__}, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return tuple(value)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]") if args else v for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        if not args:
            return dict(value)
        return {
            _convert(args[0], k, where): _convert(args[1], v, f"{where}[{k!r}]") for k, v in value.items()
        }
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                raise ValueError(f"{where}: {value!r} is not a {tp.__name__}") from None
        if issubclass(tp, Path):
            if not isinstance(value, str):
                raise ValueError(f"{where}: expected a path string, got {type(value).__name__}")
            return tp(value)
        if tp is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: expected true/false, got {value!r}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: expected an integer, got {value!r}")
            return value
        if tp is float:
            # JSON writes 1.0 as 1.0, but hand-edited files may say 1; NaN/inf come back as floats already.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: expected a number, got {value!r}")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError(f"{where}: expected a string, got {value!r}")
            return value
    return value


def _from_dict(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where or cls.__name__}: missing required field {name!r}")
    return cls(**kwargs)


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild a (frozen, possibly nested) config dataclass from its JSON dict.

    Handles nested dataclasses, ``tuple[X, ...]`` and fixed tuples (JSON lists), ``list``/``dict``,
    ``X | None``, ``Literal``, ``Path`` and enums. Fields absent from ``data`` take their defaults (a config
    saved before a field was added still loads).

    Raises:
        ValueError: An unknown field, a missing required field, or a value of the wrong type (named by its
            dotted path).
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    return _from_dict(cls, data, "")
