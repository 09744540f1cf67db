"""Batched building blocks: E independent linear layers / MLPs as ONE module with stacked weights.

Used by the probabilistic ensemble (members) and the SAC-N critic ensemble (critics): one ``baddbmm``
per layer for all members instead of a Python loop over ``nn.Module``s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn


class EnsembleLinear(nn.Module):
    """``E`` independent affine maps ``[E, B, in] -> [E, B, out]`` with stacked weights ``[E, in, out]``.

    Each member is initialised like ``torch.nn.Linear`` (Kaiming-uniform weight, uniform bias).
    A ``[B, in]`` input is broadcast to every member.
    """

    def __init__(self, num_members: int, in_features: int, out_features: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        w = torch.empty(num_members, in_features, out_features)
        b = torch.empty(num_members, 1, out_features)
        # nn.Linear's default init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in)); bias likewise.
        w.uniform_(-bound, bound, generator=generator)
        b.uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.num_members, -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in={self.in_features}, out={self.out_features}"


class EnsembleMLP(nn.Module):
    """``E`` independent MLPs ``in -> hidden x depth -> out`` as stacked ``EnsembleLinear`` layers.

    Args:
        num_members: E.
        in_features: input width.
        out_features: output width.
        hidden: hidden width.
        depth: number of hidden layers.
        activation: factory of the hidden activation (default SiLU).
    """

    def __init__(
        self,
        num_members: int,
        in_features: int,
        out_features: int,
        hidden: int = 200,
        depth: int = 4,
        activation: Callable[[], nn.Module] = nn.SiLU,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        widths = [in_features] + [hidden] * depth
        self.hidden_layers = nn.ModuleList(
            EnsembleLinear(num_members, a, b, generator=generator) for a, b in itertools.pairwise(widths)
        )
        self.activation = activation()
        self.output_layer = EnsembleLinear(num_members, widths[-1], out_features, generator=generator)
        self.num_members = num_members

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden_layers:
            x = self.activation(layer(x))
        return self.output_layer(x)
