"""Cross-entropy method (CEM) model-predictive control over any WorldModel.

Follows PETS (Chua et al., "Deep Reinforcement Learning in a Handful of Trials using Probabilistic Dynamics
Models", NeurIPS 2018): a Gaussian over action sequences starts at the (warm-started) mean with std
``init_std`` x half the action range; each iteration samples ``population`` sequences (clipped to the action
box), scores them with the model (one batched model call per planning step), and refits mean and std to the
``elites`` best, smoothed by ``momentum`` (PETS' ``alpha`` = 0.1). The first action of the final mean is
executed; the mean is shifted by one step for the next env step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl.planning.base import MPCPlanner


@dataclass(frozen=True)
class CEMConfig:
    """CEM planner settings.

    Attributes:
        horizon: planning horizon ``H`` (env steps).
        population: candidate sequences per iteration ``P``.
        elites: number of best candidates the Gaussian is refit to (``<= population``).
        iterations: refinement iterations per env step.
        init_std: initial std per action dimension, in units of half the action range (PETS: range/4 = 0.5).
        momentum: weight of the previous mean/std in each refit (PETS ``alpha`` = 0.1).
        min_std: floor of the std (half-range units), keeps some exploration in late iterations.
        discount: per-step discount of the predicted return.
        particles: model samples per candidate (score = mean return over them).
        deterministic: plan with the model's mean predictions.
    """

    horizon: int = 15
    population: int = 400
    elites: int = 40
    iterations: int = 5
    init_std: float = 0.5
    momentum: float = 0.1
    min_std: float = 0.0
    discount: float = 1.0
    particles: int = 1
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.population < 1 or self.iterations < 1:
            raise ValueError(
                f"CEMConfig: population and iterations must be >= 1, got {self.population}, {self.iterations}"
            )
        if not 1 <= self.elites <= self.population:
            raise ValueError(
                f"CEMConfig: elites must be in [1, population={self.population}], got {self.elites}"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"CEMConfig: momentum must be in [0, 1), got {self.momentum}")
        if self.init_std <= 0 or self.min_std < 0:
            raise ValueError(
                f"CEMConfig: need init_std > 0 and min_std >= 0, got {self.init_std}, {self.min_std}"
            )


class CEMPlanner(MPCPlanner[CEMConfig]):
    """CEM-MPC. ``plan(obs) -> action`` in env units; also a Policy (``planner(obs)``).

    Args:
        model: WorldModel to plan with.
        config: :class:`CEMConfig`.
        action_low: ``[A]`` lower bounds (env units).
        action_high: ``[A]`` upper bounds.
        reward_fn: known reward ``(obs, action, next_obs) -> [N]``; ``None`` uses the model's reward.
        term_fn: known termination; ``None`` uses the model's.
        generator: torch.Generator for sampling (and the model's noise).
        device: device of the planning tensors.
    """

    def _optimize(self, obs: Tensor, mean: Tensor) -> Tensor:
        cfg = self.config
        b = obs.shape[0]
        std = (cfg.init_std * self.half_range).expand_as(mean).clone()
        floor = cfg.min_std * self.half_range
        for _ in range(cfg.iterations):
            noise = self._normal((b, cfg.population, self.horizon, self.action_dim))
            samples = torch.clamp(mean.unsqueeze(1) + std.unsqueeze(1) * noise, self.low, self.high)
            returns = self.score(obs, samples)  # [B, P]
            top = torch.topk(returns, cfg.elites, dim=1).indices  # [B, K]
            elites = torch.gather(
                samples, 1, top[:, :, None, None].expand(b, cfg.elites, self.horizon, self.action_dim)
            )
            new_mean = elites.mean(dim=1)
            new_std = elites.std(dim=1, unbiased=False) if cfg.elites > 1 else torch.zeros_like(new_mean)
            mean = cfg.momentum * mean + (1 - cfg.momentum) * new_mean
            std = torch.maximum(cfg.momentum * std + (1 - cfg.momentum) * new_std, floor)
        return mean
