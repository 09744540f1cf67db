"""Behaviour cloning: regress the dataset's actions from its observations (the offline baseline of RAVL/MOPO).

Two losses on the same Tanh-Gaussian network as SAC's actor (``mbrl.rl.networks.TanhGaussianActor``):

- ``"mse"``: deterministic BC, ``mean_b |tanh(mean(s_b)) - a_b|^2`` in ``[-1, 1]`` action units.
- ``"nll"``: maximum likelihood, ``-mean_b log pi(a_b | s_b)`` under the squashed Gaussian.

Actions are env units at the boundary (``update`` batches, ``act``), ``[-1, 1]`` inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from mbrl.rl.networks import TanhGaussianActor
from mbrl.rl.policies import TorchPolicy
from mbrl.types import Metrics, TransitionBatch
from mbrl.utils import resolve_device


@dataclass(frozen=True)
class BCConfig:
    """Hyperparameters of :class:`BC`.

    Attributes:
        hidden: hidden width.
        depth: number of hidden layers.
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        batch_size: batch size the callers sample.
        loss: "mse" (deterministic) or "nll" (Gaussian likelihood of the squashed policy).
        device: "cpu", "cuda" or "auto".
    """

    hidden: int = 256
    depth: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    loss: Literal["mse", "nll"] = "mse"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "nll"):
            raise ValueError(f"BCConfig: loss must be 'mse' or 'nll', got {self.loss!r}")
        if self.lr <= 0 or self.hidden < 1 or self.depth < 1 or self.batch_size < 1:
            raise ValueError("BCConfig: lr, hidden, depth and batch_size must be positive")


class BC:
    """Behaviour cloning learner.

    Args:
        obs_dim: D.
        action_dim: A.
        action_low: ``[A]`` finite lower bounds (env units).
        action_high: ``[A]`` finite upper bounds.
        config: hyperparameters.
        generator: initialisation and sampling RNG.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: np.ndarray | Tensor | list[float],
        action_high: np.ndarray | Tensor | list[float],
        config: BCConfig | None = None,
        *,
        generator: torch.Generator,
    ):
        self.config = c = config if config is not None else BCConfig()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.device = resolve_device(c.device)
        low = torch.as_tensor(np.asarray(action_low, dtype=np.float32).reshape(-1))
        high = torch.as_tensor(np.asarray(action_high, dtype=np.float32).reshape(-1))
        if low.shape != (self.action_dim,) or high.shape != (self.action_dim,):
            raise ValueError(f"BC: action bounds must have shape ({self.action_dim},)")
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
            raise ValueError(f"BC: action bounds must be finite with high > low, got {low.tolist()}, {high.tolist()}")
        self.action_scale = ((high - low) / 2).to(self.device)
        self.action_bias = ((high + low) / 2).to(self.device)
        self.generator = generator
        self.actor = TanhGaussianActor(obs_dim, action_dim, c.hidden, c.depth, generator=generator).to(self.device)
        self.device = next(self.actor.parameters()).device  # with its index ("cuda:0")
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.lr, weight_decay=c.weight_decay, foreach=True)
        self.num_updates = 0

    def update(self, batch: TransitionBatch) -> Metrics:
        """One gradient step on ``batch`` (only ``obs`` and ``action`` are used).

        Returns:
            ``bc_loss`` (the optimised loss) and ``action_mse`` (deterministic action vs dataset, env units).
        """
        if batch.obs.device != self.device:
            batch = batch.to(self.device)
        if batch.obs_dim != self.obs_dim or batch.action_dim != self.action_dim:
            raise ValueError(
                f"BC.update: batch has obs/action dims {batch.obs_dim}/{batch.action_dim}, "
                f"learner expects {self.obs_dim}/{self.action_dim}"
            )
        target = (batch.action - self.action_bias) / self.action_scale
        if self.config.loss == "mse":
            pred = self.actor.deterministic(batch.obs)
            loss = (pred - target).pow(2).sum(-1).mean()
        else:
            loss = -self.actor.log_prob(batch.obs, target).mean()
            with torch.no_grad():
                pred = self.actor.deterministic(batch.obs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        with torch.no_grad():
            mse = ((pred.detach() - target) * self.action_scale).pow(2).mean()
        values = torch.stack([loss.detach(), mse]).tolist()
        return {"bc_loss": values[0], "action_mse": values[1]}

    def as_policy(self, deterministic: bool = True, generator: torch.Generator | None = None) -> TorchPolicy:
        """A :class:`mbrl.types.Policy` (env units) over the live network."""
        return TorchPolicy(
            self.actor, self.action_scale, self.action_bias, deterministic=deterministic,
            generator=generator if generator is not None else self.generator,
        )

    def act(self, obs: np.ndarray | Tensor, deterministic: bool = True) -> Any:
        """Env-unit actions for ``obs [D]`` or ``[B, D]`` (numpy in -> numpy out, torch in -> torch out)."""
        return self.as_policy(deterministic)(obs)

    def state_dict(self) -> dict[str, Any]:
        """Network, optimizer, RNG and update count (weights_only-safe)."""
        return {
            "actor": self.actor.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "num_updates": torch.tensor(self.num_updates, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        missing = [k for k in ("actor", "optimizer", "generator", "num_updates") if k not in state]
        if missing:
            raise KeyError(f"BC.load_state_dict: missing entries {missing}")
        self.actor.load_state_dict(state["actor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.num_updates = int(state["num_updates"])
