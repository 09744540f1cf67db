"""Seeding, device and thread utilities. Randomness is always passed in explicitly."""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_threads(num_threads: int = 1) -> None:
    """Set torch's intra-op threads once. Default 1: on 2 cores two threads collapse under any neighbour load."""
    if num_threads > 0 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Seed Python/numpy/torch global RNGs (for third-party code, e.g. SB3) and return explicit generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), to name the machine beside every speed figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write a file so that a reader (or a crash) sees the old file or the new one, never half of one.

    ``write(tmp)`` writes a temp file beside ``path`` (same folder, same suffix, so writers that pick a format
    by it still do); the temp file is fsynced and renamed over ``path`` (``os.replace``), then the folder is
    fsynced so the rename survives a power cut. On any error the temp file is removed and ``path`` is untouched.
    Creates the parent folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def _fsync(path: Path) -> None:
    """fsync a file or folder where the platform allows it (a folder cannot be opened on every platform)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def with_device(config: Any, device: str | None) -> Any:
    """``config`` (a frozen dataclass) with every field named ``device`` (learner, ensemble, dynamics reward, ...),
    at any depth, set to ``device``; ``config`` itself when ``device`` is None (keep the stored devices)."""
    if device is None:
        return config
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "device":
            changes["device"] = device
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[field.name] = with_device(value, device)
    return dataclasses.replace(config, **changes)
