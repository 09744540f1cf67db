"""The seams between agents and world models.

Agents reach models only through these protocols; no agent imports a concrete model class.
A new model plugs into every agent by satisfying ``WorldModel``; the contract tests in
``tests/models/test_contract.py`` check it (and can be pointed at a model from outside the package).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mbrl.types import Metrics, ModelStep, TransitionBatch


@runtime_checkable
class WorldModel(Protocol):
    """A learned (or exact) transition model ``(obs, action) -> (next_obs, reward, terminated)``.

    Contract:
        predict(obs [B, D], action [B, A] in env units, *, deterministic, generator) -> ModelStep with
            ``next_obs [B, D]``, ``reward [B]``, ``terminated [B]`` (float 0/1), all float32, finite for
            in-distribution inputs; ``info`` may hold ``"uncertainty" [B]`` (non-negative; MOPO penalises it)
            and ``"members" [E, B, D]``. ``deterministic=True`` returns the mean prediction. Sampling uses only
            ``generator`` (same generator state -> same output). Must not require grad from the caller.
        update(batch) -> metrics: one learning step on ``batch`` (a gradient step for nets, an incremental
            solve for linear models). Metrics are floats keyed without namespace (callers add ``model/``).
        evaluate(batch) -> metrics: holdout metrics; must include ``"loss"`` (lower is better, used for early
            stopping) and ``"mse"`` (one-step squared error of the mean next_obs prediction).
        state_dict() / load_state_dict(): tensors only (no pickled objects); save -> load -> identical predict.
        obs_dim, action_dim: ints.
    Optional hooks a fitter uses if present: ``fit_normalizer(batch)`` (fit input/target statistics on the
    training data before the first update); ``select_elites(batch)`` (``Ensemble`` only).
    Optional attribute ``single_pass: bool``: True for models whose ``update`` accumulates every transition it
    is given (follow-the-leader, e.g. Losse-FTL), so each transition must reach ``update`` exactly once; such a
    model is trained online, and ``fit()`` (epochs over all data) refuses it (:func:`is_single_pass`).
    """

    obs_dim: int
    action_dim: int

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep: ...

    def update(self, batch: TransitionBatch) -> Metrics: ...

    def evaluate(self, batch: TransitionBatch) -> Metrics: ...

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class Ensemble(Protocol):
    """Capability: a model made of ``num_members`` members, of which ``elites`` are used to sample.

    ``predict(...).info["members"]`` holds the per-member means ``[E, B, D]`` and ``info["uncertainty"]`` ``[B]``.
    ``predict_members(obs, action)`` returns ``(mean [E, B, D+1], logvar [E, B, D+1])`` of next_obs and reward.
    """

    num_members: int

    @property
    def elites(self) -> list[int]: ...

    def predict_members(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class TaskConditioned(Protocol):
    """Capability: a model that holds one set of dynamics per task."""

    def for_task(self, task: int) -> WorldModel: ...


@runtime_checkable
class InverseDynamics(Protocol):
    """Capability: ``predict_action(obs [B, D], next_obs [B, D]) -> action [B, A]`` in env units."""

    def predict_action(self, obs: Tensor, next_obs: Tensor) -> Tensor: ...


def is_single_pass(model: object) -> bool:
    """Whether ``model`` declares ``single_pass = True`` (see :class:`WorldModel`): its ``update`` must see each
    transition once, so it is trained online and never by epochs over all data."""
    return bool(getattr(model, "single_pass", False))
