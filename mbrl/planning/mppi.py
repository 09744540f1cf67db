"""Model-predictive path integral (MPPI) control over any WorldModel.

Follows Williams et al. ("Information Theoretic MPC for Model-Based Reinforcement Learning", ICRA 2017) in
the sampling form used by HyperCRL's Pendulum experiments (Huang et al., 2021): each iteration perturbs the
(warm-started) mean sequence with Gaussian noise, scores the ``population`` perturbed sequences with the
model (one batched model call per planning step), and moves the mean to their average weighted by
``softmax(return / temperature)``. Optional temporal smoothing of the noise (PDDM's ``beta``; Nagabandi et
al., 2019) makes the sampled sequences less jittery.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl.planning.base import MPCPlanner


@dataclass(frozen=True)
class MPPIConfig:
    """MPPI planner settings (defaults: HyperCRL's Pendulum setting, horizon 15, 100 samples, 10 iterations).

    Attributes:
        horizon: planning horizon ``H``.
        population: sampled sequences per iteration ``P``.
        iterations: refinement iterations per env step.
        temperature: ``λ`` of the weights ``exp((R - max R) / λ)``, in the units of the return; smaller is
            greedier.
        noise_std: std of the perturbations, in units of half the action range.
        noise_beta: temporal smoothing of the noise, ``n_h = β n_{h-1} + (1 - β) ε_h`` (0: white noise).
        discount: per-step discount of the predicted return.
        particles: model samples per candidate (score = mean return over them).
        deterministic: plan with the model's mean predictions.
    """

    horizon: int = 15
    population: int = 100
    iterations: int = 10
    temperature: float = 1.0
    noise_std: float = 0.5
    noise_beta: float = 0.0
    discount: float = 1.0
    particles: int = 1
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.population < 1 or self.iterations < 1:
            raise ValueError(
                f"MPPIConfig: population and iterations must be >= 1, got {self.population}, {self.iterations}"
            )
        if self.temperature <= 0 or self.noise_std <= 0:
            raise ValueError(
                f"MPPIConfig: temperature and noise_std must be > 0, got {self.temperature}, {self.noise_std}"
            )
        if not 0.0 <= self.noise_beta < 1.0:
            raise ValueError(f"MPPIConfig: noise_beta must be in [0, 1), got {self.noise_beta}")


class MPPIPlanner(MPCPlanner[MPPIConfig]):
    """MPPI-MPC. ``plan(obs) -> action`` in env units; also a Policy (``planner(obs)``).

    Args:
        model: WorldModel to plan with.
        config: :class:`MPPIConfig`.
        action_low: ``[A]`` lower bounds (env units).
        action_high: ``[A]`` upper bounds.
        reward_fn: known reward ``(obs, action, next_obs) -> [N]``; ``None`` uses the model's reward.
        term_fn: known termination; ``None`` uses the model's.
        generator: torch.Generator for sampling (and the model's noise).
        device: device of the planning tensors.
    """

    def _noise(self, b: int) -> Tensor:
        cfg = self.config
        eps = self._normal((b, cfg.population, self.horizon, self.action_dim))
        if cfg.noise_beta > 0:
            smooth = torch.empty_like(eps)
            smooth[:, :, 0] = eps[:, :, 0]
            for h in range(1, self.horizon):
                smooth[:, :, h] = cfg.noise_beta * smooth[:, :, h - 1] + (1 - cfg.noise_beta) * eps[:, :, h]
            eps = smooth
        return eps * (cfg.noise_std * self.half_range)

    def _optimize(self, obs: Tensor, mean: Tensor) -> Tensor:
        cfg = self.config
        b = obs.shape[0]
        for _ in range(cfg.iterations):
            samples = torch.clamp(mean.unsqueeze(1) + self._noise(b), self.low, self.high)  # [B, P, H, A]
            returns = self.score(obs, samples)  # [B, P]
            finite = torch.isfinite(returns)
            # Sequences whose prediction blew up get zero weight; if all did, keep the mean unchanged.
            best = (
                torch.where(finite, returns, torch.full_like(returns, -torch.inf))
                .max(dim=1, keepdim=True)
                .values
            )
            logits = torch.where(
                finite, (returns - best) / cfg.temperature, torch.full_like(returns, -torch.inf)
            )
            weights = torch.softmax(logits, dim=1)
            new_mean = (weights[:, :, None, None] * samples).sum(dim=1)
            ok = finite.any(dim=1)[:, None, None]
            mean = torch.where(ok, new_mean, mean)
        return mean
