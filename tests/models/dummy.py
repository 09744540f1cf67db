"""A closed-form WorldModel for exact checks of rollouts, masking, ModelEnv and fit.

Dynamics (every output is computable by hand):
    next_obs = obs + scale * sum(action) (added to every dimension) [+ noise_std * N(0, 1) when sampling]
    reward = obs[:, 0]
    terminated = next_obs[:, 0] > threshold
    info["uncertainty"] = |obs[:, 0]|
Rows with ``obs[:, 0] > nan_above`` predict NaN next_obs (a "diverging model").
``scale`` is the one learnable parameter: ``update`` is a gradient step on the next_obs MSE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mbrl.types import Metrics, ModelStep, TransitionBatch


class DummyModel:
    """See the module docstring. ``obs_dim``/``action_dim`` are free; ``scale`` starts at ``scale``."""

    def __init__(
        self,
        obs_dim: int = 3,
        action_dim: int = 2,
        *,
        scale: float = 1.0,
        threshold: float = math.inf,
        nan_above: float = math.inf,
        noise_std: float = 0.0,
        learning_rate: float = 0.1,
    ) -> None:
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.scale = torch.tensor(float(scale))
        self.threshold = threshold
        self.nan_above = nan_above
        self.noise_std = noise_std
        self.learning_rate = learning_rate
        self.n_predict_calls = 0

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        self.n_predict_calls += 1
        obs = obs.float()
        next_obs = obs + self.scale * action.float().sum(dim=1, keepdim=True)
        if self.noise_std > 0 and not deterministic:
            next_obs = next_obs + self.noise_std * torch.randn(next_obs.shape, generator=generator)
        next_obs = torch.where((obs[:, :1] > self.nan_above), torch.full_like(next_obs, math.nan), next_obs)
        reward = obs[:, 0].clone()
        terminated = (next_obs[:, 0] > self.threshold).float()
        return ModelStep(next_obs, reward, terminated, {"uncertainty": obs[:, 0].abs()})

    def update(self, batch: TransitionBatch) -> Metrics:
        s = batch.action.sum(dim=1, keepdim=True)
        err = batch.obs + self.scale * s - batch.next_obs
        grad = 2.0 * (err * s).mean()
        self.scale = self.scale - self.learning_rate * grad
        return {"loss": float((err**2).mean()), "scale": float(self.scale)}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        pred = batch.obs + self.scale * batch.action.sum(dim=1, keepdim=True)
        mse = float(((pred - batch.next_obs) ** 2).mean())
        return {"loss": mse, "mse": mse}

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale.clone()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.scale = state_dict["scale"].clone()
