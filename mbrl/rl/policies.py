"""Policy adapters: anything that maps ``obs [B, D]`` to env-unit ``action [B, A]`` (``mbrl.types.Policy``).

- :class:`TorchPolicy`: our Tanh-Gaussian actor (SAC, BC) with the ``[-1, 1] -> env units`` conversion.
- :class:`SB3Policy`: a stable-baselines3 model (``predict`` already returns env units for Box action spaces:
  squashing policies such as SAC/TD3 are unscaled from ``[-1, 1]``, others are clipped to the bounds).
- :class:`RandomPolicy`: uniform actions in the bounds from an explicit generator.

Every adapter accepts numpy or torch input, ``[D]`` or ``[B, D]``, and returns the same kind and rank.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mbrl.rl.networks import TanhGaussianActor


def _as_batch(obs: np.ndarray | Tensor, device: torch.device) -> tuple[Tensor, bool, bool]:
    """``obs`` as a float32 ``[B, D]`` tensor on ``device``; flags (was numpy, was a single ``[D]`` obs)."""
    is_numpy = not isinstance(obs, Tensor)
    t = torch.as_tensor(np.asarray(obs, dtype=np.float32) if is_numpy else obs, device=device).float()
    single = t.ndim == 1
    if single:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise ValueError(f"policy: expected obs of shape [D] or [B, D], got {tuple(t.shape)}")
    return t, is_numpy, single


def _restore(action: Tensor, is_numpy: bool, single: bool, out_device: torch.device | None) -> Any:
    if single:
        action = action.squeeze(0)
    if is_numpy:
        return action.detach().cpu().numpy()
    return action if out_device is None else action.to(out_device)


class TorchPolicy:
    """Our Tanh-Gaussian actor as a :class:`mbrl.types.Policy` in env units.

    Args:
        actor: the live actor (not copied: the policy follows its training).
        action_scale: ``[A]`` ``(high - low) / 2``.
        action_bias: ``[A]`` ``(high + low) / 2``.
        deterministic: ``tanh(mean)`` instead of a sample.
        generator: RNG of the samples (required when not deterministic).
        use_bf16: run the actor under bf16 autocast (large rollout batches).
    """

    def __init__(
        self,
        actor: TanhGaussianActor,
        action_scale: Tensor,
        action_bias: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        use_bf16: bool = False,
    ):
        if not deterministic and generator is None:
            raise ValueError("TorchPolicy: a stochastic policy needs a generator")
        self.actor = actor
        self.action_scale = action_scale
        self.action_bias = action_bias
        self.deterministic = deterministic
        self.generator = generator
        self.use_bf16 = use_bf16

    def __call__(self, obs: Any) -> Any:
        device = self.action_scale.device
        in_device = obs.device if isinstance(obs, Tensor) else None
        x, is_numpy, single = _as_batch(obs, device)
        autocast: contextlib.AbstractContextManager[Any] = (
            torch.autocast(device.type, dtype=torch.bfloat16) if self.use_bf16 else contextlib.nullcontext()
        )
        with torch.no_grad(), autocast:
            if self.deterministic:
                a = self.actor.deterministic(x)
            else:
                assert self.generator is not None
                shape = (x.shape[0], self.actor.action_dim)
                if self.generator.device == device or device.type == "meta":  # drawn where it is used
                    noise = torch.empty(shape, device=device).normal_(generator=self.generator)
                else:  # a host generator driving a GPU actor: draw on the host, copy over
                    noise = torch.randn(shape, generator=self.generator, device=self.generator.device).to(device)
                a = self.actor.sample(x, noise)[0]
        return _restore(a.float() * self.action_scale + self.action_bias, is_numpy, single, in_device)


class RandomPolicy:
    """Uniform random actions in ``[low, high]`` drawn from an explicit ``torch.Generator``.

    Args:
        low: ``[A]`` lower bounds (finite).
        high: ``[A]`` upper bounds (finite).
        generator: the RNG.
    """

    def __init__(self, low: np.ndarray | list[float], high: np.ndarray | list[float], generator: torch.Generator):
        self.low = torch.as_tensor(np.asarray(low, dtype=np.float32).reshape(-1))
        self.high = torch.as_tensor(np.asarray(high, dtype=np.float32).reshape(-1))
        if self.low.shape != self.high.shape or not (torch.isfinite(self.low).all() and torch.isfinite(self.high).all()):
            raise ValueError("RandomPolicy: low and high must be finite and of the same shape")
        self.generator = generator

    def __call__(self, obs: Any) -> Any:
        in_device = obs.device if isinstance(obs, Tensor) else None
        x, is_numpy, single = _as_batch(obs, torch.device("cpu"))
        u = torch.rand((x.shape[0], self.low.shape[0]), generator=self.generator)
        return _restore(self.low + u * (self.high - self.low), is_numpy, single, in_device)


class SB3Policy:
    """A stable-baselines3 model (``BaseAlgorithm`` or ``BasePolicy``, anything with ``predict``) as a Policy.

    ``predict`` returns env-unit actions for Box spaces (SB3 unscales squashed policies from ``[-1, 1]`` and
    clips the others), so no conversion happens here. Stochastic prediction uses SB3's (global) torch RNG.

    Args:
        model: the SB3 model.
        deterministic: passed to ``predict``.
    """

    def __init__(self, model: Any, deterministic: bool = True):
        if not hasattr(model, "predict"):
            raise TypeError(f"SB3Policy: {type(model).__name__} has no predict()")
        self.model = model
        self.deterministic = deterministic

    def __call__(self, obs: Any) -> Any:
        in_device = obs.device if isinstance(obs, Tensor) else None
        is_numpy = not isinstance(obs, Tensor)
        x = np.asarray(obs, dtype=np.float32) if is_numpy else obs.detach().cpu().numpy().astype(np.float32)
        single = x.ndim == 1
        batch = x[None] if single else x
        action, _ = self.model.predict(batch, deterministic=self.deterministic)
        a = torch.as_tensor(np.asarray(action, dtype=np.float32).reshape(batch.shape[0], -1))
        return _restore(a, is_numpy, single, in_device)
