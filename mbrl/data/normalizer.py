"""Per-feature standardisation ``(x - mean) / std`` as a tiny ``nn.Module``.

A module with buffers so that a model that owns one saves and loads it with its own ``state_dict``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """Standardise features of ``x [..., D]`` with statistics fitted on data.

    Features whose std is below ``min_std`` (constant features) get std 1 instead: dividing by a tiny std
    would blow up any later input that differs from the constant (the MBPO scaler does the same).

    Args:
        dim: feature size ``D``.
        min_std: stds below this are replaced by 1.

    Attributes:
        mean: ``[D]`` float32 buffer (0 before ``fit``).
        std: ``[D]`` float32 buffer (1 before ``fit``).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int, min_std: float = 1e-6) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"Normalizer: dim must be >= 1, got {dim}")
        self.dim = dim
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: Tensor | np.ndarray) -> Normalizer:
        """Set ``mean``/``std`` from data ``x [N, D]`` (statistics computed in float64). Returns ``self``."""
        data = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).detach().to(torch.float64)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"Normalizer.fit: expected shape [N, {self.dim}], got {tuple(data.shape)}")
        if data.shape[0] == 0:
            raise ValueError("Normalizer.fit: no rows to fit on")
        mean = data.mean(0)
        std = data.std(0, unbiased=False)
        std = torch.where(std < self.min_std, torch.ones_like(std), std)
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std))
        return self

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` for ``x [..., D]``."""
        return (x - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        """Inverse of ``normalize``: ``x * std + mean``."""
        return x * self.std + self.mean

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(x)
