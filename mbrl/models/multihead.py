"""The plain MLP dynamics model of HyperCRL's baselines (fine-tune, coreset, multi-task): the hypernetwork's target
architecture (:mod:`mbrl.models.hypernet`) with directly learned weights; as in HyperCRL's code, a shared trunk
with one output layer per task (``multi_head``; or one plain MLP for all tasks), and ONE global normaliser (fitted
once, on the first task's first training data, by the caller). It shares the dynamics head and the per-task view
with the hypernetwork (:mod:`mbrl.models.task_dynamics`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mbrl.data.normalizer import Normalizer
from mbrl.models.task_dynamics import (
    CurrentTaskModel,
    Forward,
    _activation,
    _check_batch,
    _targets,
)
from mbrl.types import Metrics, ModelStep, TransitionBatch

# ---------------------------------------------------------------------------------------------------------
# The baselines' MLP: shared trunk, one output head per task (as HyperCRL's baselines)


@dataclass(frozen=True)
class MLPDynamicsConfig:
    """Settings of :class:`MLPDynamicsModel` (the fine-tune / coreset / multi-task baselines).

    Attributes:
        hidden: hidden widths (HyperCRL's baselines use the same ``h_dims`` as the generated net: 32x32).
        activation: hidden activation.
        multi_head: one output layer per task on a shared trunk, as HyperCRL's baselines (the task id picks
            the head); ``False``: one plain MLP for every task (no task information at all).
        lr: Adam learning rate (HyperCRL Pendulum ``lr`` = 1e-3).
        grad_clip: max gradient norm; 0 disables.
        weight_decay: Adam ``weight_decay`` (HyperCRL Pendulum ``reg_lambda`` = 0).
        learn_reward: also predict the reward.
        learn_std: also predict a log-std (Gaussian NLL).
    """

    hidden: tuple[int, ...] = (32, 32)
    activation: str = "relu"
    multi_head: bool = True
    lr: float = 1e-3
    grad_clip: float = 5.0
    weight_decay: float = 0.0
    learn_reward: bool = True
    learn_std: bool = False

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"MLPDynamicsConfig.hidden must be non-empty positive widths, got {self.hidden}")
        if self.lr <= 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(
                f"MLPDynamicsConfig: need lr > 0, grad_clip >= 0, weight_decay >= 0; got {self.lr}, "
                f"{self.grad_clip}, {self.weight_decay}"
            )
        _activation(self.activation)


def _linear(a: int, b: int, generator: torch.Generator | None) -> nn.Linear:
    """``nn.Linear(a, b)`` with its default init U(±1/sqrt(a)) drawn from ``generator``."""
    layer = nn.Linear(a, b)
    bound = 1.0 / a**0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class MLPDynamicsModel(CurrentTaskModel):
    """MLP ``(obs, action) -> (Δobs, reward)``: shared trunk + one head per task (or one head for all).

    One global normaliser (fit it once, on the first task's first training data). Tasks arrive in order via
    :meth:`start_task` (adds a head when ``multi_head``); :meth:`for_task` gives a WorldModel view that uses
    that task's head (``TaskConditioned``). :meth:`update` trains the current task; :meth:`update_replay` takes
    one gradient step on the sum of per-task losses (current batch plus replayed batches of earlier tasks,
    each weighted like one batch, as HyperCRL's coreset and multi-task baselines).

    Args:
        obs_dim: D.
        action_dim: A.
        config: :class:`MLPDynamicsConfig`.
        generator: torch.Generator for the initial weights (trunk and every new head).
        device: device of the parameters.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: MLPDynamicsConfig = MLPDynamicsConfig(),
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(obs_dim, action_dim, config.learn_reward, config.learn_std, generator=generator, device=device)
        self.config = config
        widths = [self.head.in_dim, *config.hidden]
        self.trunk = nn.ModuleList(_linear(a, b, generator) for a, b in itertools.pairwise(widths)).to(
            self.device
        )
        self.heads = nn.ModuleList([_linear(widths[-1], self.head.out_dim, generator)]).to(self.device)
        self._act = _activation(config.activation)
        self.in_norm = Normalizer(self.head.in_dim).to(self.device)
        self.out_norm = Normalizer(self.head.target_dim).to(self.device)
        self.current_task = 0
        self.num_tasks = 1
        self._optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Adam:
        params = [*self.trunk.parameters(), *self.heads.parameters()]
        return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _parameters(self) -> list[Tensor]:
        return [*self.trunk.parameters(), *self.heads.parameters()]

    # -- tasks --------------------------------------------------------------------------------------------

    def start_task(self, task_index: int) -> None:
        """Switch to ``task_index`` (the current one: no-op; the next new one: add its head if ``multi_head``)."""
        if task_index == self.current_task:
            return
        if task_index != self.num_tasks:
            raise ValueError(
                f"MLPDynamicsModel.start_task: tasks arrive in order; next new task is {self.num_tasks}, got {task_index}"
            )
        if self.config.multi_head:
            self.heads.append(
                _linear(self.config.hidden[-1], self.head.out_dim, self._generator).to(self.device)
            )
        self.num_tasks += 1
        self.current_task = task_index
        self._optimizer = self._make_optimizer()

    def _forward(self, task: int) -> Forward:
        head = self.heads[task if self.config.multi_head else 0]

        def forward(x: Tensor) -> Tensor:
            for layer in self.trunk:
                x = self._act(layer(x))
            return head(x)  # type: ignore[no-any-return]

        return forward

    # -- WorldModel ---------------------------------------------------------------------------------------

    def fit_normalizer(self, batch: TransitionBatch) -> None:
        """Fit the global input and target standardisers on ``batch``."""
        _check_batch(batch, self.obs_dim, self.action_dim, "MLPDynamicsModel.fit_normalizer")
        self.in_norm.fit(torch.cat([batch.obs, batch.action], dim=1))
        self.out_norm.fit(_targets(batch, self.config.learn_reward))

    def predict_task(
        self,
        task: int,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        """``predict`` with ``task``'s head."""
        self._check_task(task)
        with torch.no_grad():
            return self.head.predict(
                self._forward(task), self.in_norm, self.out_norm, obs, action, deterministic, generator
            )

    def update(self, batch: TransitionBatch) -> Metrics:
        """One Adam step on a batch of the current task; returns ``loss``, ``mse_norm``, ``grad_norm``."""
        return self.update_replay([(self.current_task, batch)])

    def update_replay(self, parts: Sequence[tuple[int, TransitionBatch]]) -> Metrics:
        """One Adam step on ``Σ_k loss(task_k's head, batch_k)`` (each part's mean loss, equal weights).

        Returns ``loss`` (the sum), ``mse_norm`` (of the first part) and ``grad_norm``.
        """
        if not parts:
            raise ValueError("MLPDynamicsModel.update_replay: no batches")
        self._optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        first_mse = torch.zeros(())
        for k, (task, batch) in enumerate(parts):
            self._check_task(task)
            _check_batch(batch, self.obs_dim, self.action_dim, "MLPDynamicsModel.update")
            loss, mse_norm = self.head.loss(self._forward(task), self.in_norm, self.out_norm, batch)
            total = total + loss
            if k == 0:
                first_mse = mse_norm
        total.backward()
        params = [p for p in self._parameters() if p.grad is not None]
        if self.config.grad_clip > 0:
            grad_norm = float(nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        else:
            grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        self._optimizer.step()
        return {"loss": float(total.detach()), "mse_norm": float(first_mse.detach()), "grad_norm": grad_norm}

    def evaluate_task(self, task: int, batch: TransitionBatch) -> Metrics:
        """Holdout metrics with ``task``'s head: ``loss``, ``mse`` (next_obs, env units), ``mse_norm``, ..."""
        self._check_task(task)
        _check_batch(batch, self.obs_dim, self.action_dim, "MLPDynamicsModel.evaluate")
        with torch.no_grad():
            return self.head.evaluate(self._forward(task), self.in_norm, self.out_norm, batch)

    # -- state ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: trunk and head weights, normaliser statistics, task counters (no optimizer moments)."""
        state: dict[str, Tensor] = {
            f"trunk.{k}": v.detach().clone() for k, v in self.trunk.state_dict().items()
        }
        state.update({f"heads.{k}": v.detach().clone() for k, v in self.heads.state_dict().items()})
        state["in_norm.mean"] = self.in_norm.mean.clone()
        state["in_norm.std"] = self.in_norm.std.clone()
        state["out_norm.mean"] = self.out_norm.mean.clone()
        state["out_norm.std"] = self.out_norm.std.clone()
        state["current_task"] = torch.tensor(self.current_task)
        state["num_tasks"] = torch.tensor(self.num_tasks)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (same config); errors name the missing or mismatched key."""
        for key in (
            "current_task",
            "num_tasks",
            "in_norm.mean",
            "in_norm.std",
            "out_norm.mean",
            "out_norm.std",
        ):
            if key not in state_dict:
                raise KeyError(f"MLPDynamicsModel.load_state_dict: missing key {key!r}")
        num_tasks = int(state_dict["num_tasks"])
        n_heads = num_tasks if self.config.multi_head else 1
        heads = nn.ModuleList(
            nn.Linear(self.config.hidden[-1], self.head.out_dim) for _ in range(n_heads)
        ).to(self.device)
        try:
            self.trunk.load_state_dict(
                {k[len("trunk.") :]: v for k, v in state_dict.items() if k.startswith("trunk.")}
            )
            heads.load_state_dict(
                {k[len("heads.") :]: v for k, v in state_dict.items() if k.startswith("heads.")}
            )
        except RuntimeError as exc:
            raise ValueError(f"MLPDynamicsModel.load_state_dict: weights do not match: {exc}") from None
        self.heads = heads
        self.in_norm.mean.copy_(state_dict["in_norm.mean"])
        self.in_norm.std.copy_(state_dict["in_norm.std"])
        self.out_norm.mean.copy_(state_dict["out_norm.mean"])
        self.out_norm.std.copy_(state_dict["out_norm.std"])
        self.num_tasks = num_tasks
        self.current_task = int(state_dict["current_task"])
        self._optimizer = self._make_optimizer()

    def update_task(self, task: int, batch: TransitionBatch) -> Metrics:
        """One step on ``task``'s head (and the shared trunk)."""
        return self.update_replay([(task, batch)])
