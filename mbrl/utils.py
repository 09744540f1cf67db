"""Seeding, device and thread utilities. Randomness is always passed in explicitly."""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import tempfile
import warnings
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
    """The CPU's model name (``/proc/cpuinfo``) with torch's vector ISA and whether bf16 is native, e.g.
    ``AMD EPYC (AVX2, no native bf16)``, to name the machine beside every speed figure: machines sold under one
    name differ by more than 10x in bf16 speed."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability()
    return f"{name} ({isa}, {'native' if native_bf16('cpu') else 'no native'} bf16)"


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bf16 matmuls in hardware: a CUDA GPU that supports bf16, or a CPU with AVX512-BF16
    or AMX (what oneDNN's bf16 kernels need). Elsewhere bf16 autocast is emulated and slow: on an AVX2 AMD EPYC a
    10 x 256 x 256 batched matmul ran at 1.2 GFLOP/s in bf16 against 53 in fp32 (stop 33)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: read the CPU's flags instead
        try:
            flags = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            return False
        return bool(flags & {"avx512_bf16", "amx_bf16"})


def warn_if_bf16_is_emulated(device: torch.device | str, what: str) -> None:
    """A warning naming ``what`` (e.g. ``"SACConfig.use_bf16"``) when bf16 was asked for on a device without
    native bf16, where it is many times slower than fp32 (``native_bf16``)."""
    if not native_bf16(device):
        where = cpu_name() if torch.device(device).type == "cpu" else str(device)
        warnings.warn(
            f"{what}=True, but {device} has no native bf16 ({where}): "
            "bf16 matmuls are emulated here and run many times slower than fp32 (about 45x for the critics' "
            f"batched matmuls on an AVX2 EPYC); set {what}=False",
            RuntimeWarning,
            stacklevel=3,
        )


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
