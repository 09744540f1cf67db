"""What the continual-learning dynamics models share: a target MLP as a pure function of a flat weight vector,
the dynamics head (normalised loss, ``next_obs = obs + Δobs`` prediction, reward, uncertainty), and the per-task
WorldModel view. The models: :mod:`mbrl.models.hypernet` (HyperCRL's hypernetwork) and
:mod:`mbrl.models.multihead` (its baselines' MLP).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mbrl.data.normalizer import Normalizer
from mbrl.types import Metrics, ModelStep, TransitionBatch

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "silu": F.silu,
    "elu": F.elu,
    "tanh": torch.tanh,
}


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}") from None


# ---------------------------------------------------------------------------------------------------------
# The target network as a pure function of a flat weight vector


class TargetMLP:
    """Shapes and functional forward of an MLP whose weights come as ONE flat vector.

    Layer ``i`` has ``weight [out_i, in_i]`` and ``bias [out_i]`` (``torch.nn.Linear`` layout), stored in the
    flat vector in the order ``layers.0.weight, layers.0.bias, layers.1.weight, ...``.

    Args:
        in_dim: input width.
        out_dim: output width.
        hidden: hidden widths.
        activation: hidden activation name (``relu``, ``silu``, ``elu``, ``tanh``).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, ...], activation: str = "relu") -> None:
        if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"TargetMLP: widths must be >= 1, got in={in_dim}, out={out_dim}, hidden={hidden}"
            )
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.hidden = tuple(hidden)
        self.activation = _activation(activation)
        widths = [in_dim, *hidden, out_dim]
        self.shapes: list[tuple[str, tuple[int, ...]]] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            self.shapes.append((f"layers.{i}.weight", (b, a)))
            self.shapes.append((f"layers.{i}.bias", (b,)))
        self.num_params = sum(int(torch.Size(s).numel()) for _, s in self.shapes)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Views of ``theta [num_params]`` with the target shapes, keyed ``layers.i.weight|bias``."""
        if theta.shape != (self.num_params,):
            raise ValueError(
                f"TargetMLP: expected a flat weight vector of {self.num_params}, got {tuple(theta.shape)}"
            )
        out: dict[str, Tensor] = {}
        offset = 0
        for name, shape in self.shapes:
            n = int(torch.Size(shape).numel())
            out[name] = theta[offset : offset + n].view(shape)
            offset += n
        return out

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """``x [B, in] -> [B, out]`` with the weights in ``theta [num_params]``."""
        params = self.unflatten(theta)
        n_layers = len(self.hidden) + 1
        for i in range(n_layers):
            x = F.linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < n_layers - 1:
                x = self.activation(x)
        return x


# ---------------------------------------------------------------------------------------------------------
# Shared dynamics head: normalisation, loss and prediction from a flat weight vector


def _targets(batch: TransitionBatch, learn_reward: bool) -> Tensor:
    delta = batch.next_obs - batch.obs
    return torch.cat([delta, batch.reward[:, None]], dim=1) if learn_reward else delta


Forward = Callable[[Tensor], Tensor]
"""A network's raw forward: normalised input ``[B, D + A]`` -> raw output ``[B, out]``."""


class _DynamicsHead:
    """Turns a network's raw output into ``(Δobs, reward)`` predictions and a loss (shared by all models here).

    Every method takes ``forward``: the network (with one task's weights) as a function of the normalised
    input, so the hypernetwork's generated MLP and the baselines' MLPs share this code.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        learn_reward: bool,
        learn_std: bool,
        min_log_std: float = -5.0,
        max_log_std: float = 0.5,
    ) -> None:
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.in_dim = obs_dim + action_dim
        self.learn_reward = learn_reward
        self.learn_std = learn_std
        self.target_dim = obs_dim + (1 if learn_reward else 0)
        self.out_dim = self.target_dim * (2 if learn_std else 1)
        self.min_log_std = min_log_std
        self.max_log_std = max_log_std

    def _split(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.learn_std:
            return raw, None
        mean, log_std = raw.split(self.target_dim, dim=1)
        # Soft bounds (as in PETS) keep the Gaussian NLL from collapsing or exploding.
        log_std = self.max_log_std - F.softplus(self.max_log_std - log_std)
        log_std = self.min_log_std + F.softplus(log_std - self.min_log_std)
        return mean, log_std

    def loss(
        self, forward: Forward, in_norm: Normalizer, out_norm: Normalizer, batch: TransitionBatch
    ) -> tuple[Tensor, Tensor]:
        """``(loss, normalised mse)``: MSE (or Gaussian NLL with ``learn_std``) in normalised target units."""
        y = out_norm.normalize(_targets(batch, self.learn_reward))
        x = in_norm.normalize(torch.cat([batch.obs, batch.action], dim=1))
        mean, log_std = self._split(forward(x))
        mse = ((mean - y) ** 2).mean()
        if log_std is None:
            return mse, mse
        nll = (((mean - y) ** 2) * torch.exp(-2 * log_std) + 2 * log_std).mean()
        return nll, mse

    def predict(
        self,
        forward: Forward,
        in_norm: Normalizer,
        out_norm: Normalizer,
        obs: Tensor,
        action: Tensor,
        deterministic: bool,
        generator: torch.Generator | None,
    ) -> ModelStep:
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"predict: expected obs [B, {self.obs_dim}], got {tuple(obs.shape)}")
        if action.ndim != 2 or action.shape != (obs.shape[0], self.action_dim):
            raise ValueError(
                f"predict: expected action [{obs.shape[0]}, {self.action_dim}], got {tuple(action.shape)}"
            )
        mean, log_std = self._split(forward(in_norm.normalize(torch.cat([obs, action], dim=1))))
        if log_std is not None and not deterministic:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + torch.exp(log_std) * noise
        out = out_norm.denormalize(mean)
        next_obs = obs + out[:, : self.obs_dim]
        reward = out[:, self.obs_dim] if self.learn_reward else torch.zeros_like(obs[:, 0])
        info: dict[str, Tensor] = {}
        if log_std is not None:
            # Norm of the predicted std of Δobs in env units: a per-row uncertainty for penalties.
            std = torch.exp(log_std)[:, : self.obs_dim] * out_norm.std[: self.obs_dim]
            info["uncertainty"] = std.norm(dim=1)
        return ModelStep(next_obs, reward, torch.zeros_like(reward), info)

    def evaluate(
        self, forward: Forward, in_norm: Normalizer, out_norm: Normalizer, batch: TransitionBatch
    ) -> Metrics:
        loss, mse_norm = self.loss(forward, in_norm, out_norm, batch)
        step = self.predict(forward, in_norm, out_norm, batch.obs, batch.action, True, None)
        metrics = {
            "loss": float(loss),
            "mse_norm": float(mse_norm),
            "mse": float(((step.next_obs - batch.next_obs) ** 2).mean()),
        }
        if self.learn_reward:
            metrics["reward_mse"] = float(((step.reward - batch.reward) ** 2).mean())
        return metrics


def _check_batch(batch: TransitionBatch, obs_dim: int, action_dim: int, where: str) -> None:
    if batch.obs_dim != obs_dim or batch.action_dim != action_dim:
        raise ValueError(
            f"{where}: batch has obs/action dims {batch.obs_dim}/{batch.action_dim}, model expects "
            f"{obs_dim}/{action_dim}"
        )
    if len(batch) == 0:
        raise ValueError(f"{where}: empty batch")


class CurrentTaskModel:
    """Base of the multi-task dynamics models: sizes, device, the dynamics head, per-task views, and ``predict`` /
    ``evaluate`` on the current task (``predict_task`` / ``evaluate_task``, which each model defines)."""

    current_task: int

    def __init__(
        self, obs_dim: int, action_dim: int, learn_reward: bool, learn_std: bool, *,
        generator: torch.Generator | None, device: torch.device | str,
    ) -> None:
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.device = torch.device(device)
        self._generator = generator
        self.head = _DynamicsHead(obs_dim, action_dim, learn_reward, learn_std)

    def for_task(self, task: int) -> TaskView:
        """A WorldModel view of ``task`` (its weights and normalisers for every call)."""
        self._check_task(task)
        return TaskView(self, task)

    def _check_task(self, task: int) -> None:
        seen = int(getattr(self, "num_tasks"))  # noqa: B009 (an attribute of one model, a property of the other)
        if not 0 <= task < seen:
            raise ValueError(f"{type(self).__name__}: task {task} not seen; tasks 0..{seen - 1} exist")

    def evaluate_task(self, task: int, batch: TransitionBatch) -> Metrics:
        raise NotImplementedError

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        """Holdout metrics of the current task's model."""
        return self.evaluate_task(self.current_task, batch)

    def predict_task(
        self,
        task: int,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        raise NotImplementedError

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        """One step of the current task's model (the WorldModel protocol)."""
        return self.predict_task(self.current_task, obs, action, deterministic=deterministic, generator=generator)


class TaskView:
    """WorldModel view of one task of a multi-task dynamics model (:class:`~mbrl.models.hypernet.HyperNetworkModel`
    or :class:`~mbrl.models.multihead.MLPDynamicsModel`): ``predict``/``evaluate`` with that task's weights,
    ``update`` through the model's ``update_task`` (which says which tasks may still learn); ``state_dict`` and
    ``load_state_dict`` act on the whole model."""

    def __init__(self, model: Any, task: int) -> None:
        self.model = model
        self.task = task
        self.obs_dim: int = model.obs_dim
        self.action_dim: int = model.action_dim

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        step: ModelStep = self.model.predict_task(
            self.task, obs, action, deterministic=deterministic, generator=generator
        )
        return step

    def update(self, batch: TransitionBatch) -> Metrics:
        metrics: Metrics = self.model.update_task(self.task, batch)
        return metrics

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        metrics: Metrics = self.model.evaluate_task(self.task, batch)
        return metrics

    def state_dict(self) -> dict[str, Tensor]:
        state: dict[str, Tensor] = self.model.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state_dict)
