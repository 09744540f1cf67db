"""Test helpers that watch every tensor op: which devices the tensors live on, and which ops make the host wait.

:class:`OpRecorder` is a ``TorchDispatchMode``: each aten op run under it (forward, backward, in-place updates) is
recorded with the devices of its tensor inputs and outputs. Running a learner's update with its modules on the
``meta`` device turns "a tensor landed on another device" into a CPU tensor among meta ones (a stray
``torch.zeros(...)`` without ``device=``, a draw from a host generator, a ``.cpu()``), which a plain run would
not notice: a 0-dim CPU tensor mixes silently with tensors of any device. Ops that need the device's result on
the host (``.item()``, ``float(t)``, ``bool(t)``, data-dependent shapes) are recorded as syncs; on a GPU each one
stalls the host until the device has caught up and breaks CUDA-graph capture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# Ops whose result the host must wait for: scalars read back, outputs whose shape depends on the data.
SYNC_OPS = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten.equal.default,
    aten.unique_consecutive.default,
    aten._unique2.default,
}


class OpRecorder(TorchDispatchMode):
    """Records ``(op, device)`` for every tensor an op reads or writes, and the ops that sync with the host.

    Args:
        skip_optimizer_steps: leave out the ops inside ``torch.optim`` steps (on ``meta`` the optimizers fall back
            to the foreach kernel, which keeps its step counts on the host; on CPU and CUDA they run fused, with
            every state tensor on the parameters' device).
    """

    def __init__(self, skip_optimizer_steps: bool = True) -> None:
        super().__init__()
        self.skip_optimizer_steps = skip_optimizer_steps
        self.devices: list[tuple[str, torch.device]] = []
        self.syncs: list[str] = []
        self._in_optimizer = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self._in_optimizer and self.skip_optimizer_steps:
            return out
        name = str(func)
        if func in SYNC_OPS:
            self.syncs.append(name)
        for value in tree_flatten((args, kwargs, out))[0]:
            if isinstance(value, torch.Tensor):
                self.devices.append((name, value.device))
        return out

    def off_device(self, device: torch.device | str) -> list[tuple[str, str]]:
        """The recorded ``(op, device)`` pairs whose tensor is not on ``device`` (deduplicated, in order)."""
        device = torch.device(device)
        seen: dict[tuple[str, str], None] = {}
        for name, d in self.devices:
            if d.type != device.type:
                seen[(name, str(d))] = None
        return list(seen)


@contextmanager
def recording(skip_optimizer_steps: bool = True) -> Iterator[OpRecorder]:
    """``with recording() as rec:`` runs the block under an :class:`OpRecorder`."""
    rec = OpRecorder(skip_optimizer_steps)

    def enter(*_: Any) -> None:
        rec._in_optimizer += 1

    def leave(*_: Any) -> None:
        rec._in_optimizer -= 1

    pre, post = register_optimizer_step_pre_hook(enter), register_optimizer_step_post_hook(leave)
    try:
        with rec:
            yield rec
    finally:
        pre.remove()
        post.remove()
