"""Seeding, device and thread utilities. Randomness is always passed in explicitly."""

from __future__ import annotations

import platform
import random
from pathlib import Path

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
