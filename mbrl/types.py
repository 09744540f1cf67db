"""Core data types and shape conventions shared by every part of the toolkit.

Shapes: transitions ``[B, D]``, sequences ``[T, B, D]``, ensemble outputs ``[E, B, D]``;
rewards and flags ``[B]``. Learning tensors are float32 torch tensors; storage is numpy.
Actions are in env units everywhere except inside learners that work in ``[-1, 1]``.
Gymnasium vocabulary: ``terminated`` stops bootstrapping, ``truncated`` (time limit or
rollout horizon) does not. The word ``done`` is never used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class TransitionBatch:
    """A batch of transitions as float32 torch tensors.

    Attributes:
        obs: ``[B, D]`` observations.
        action: ``[B, A]`` actions in env units.
        reward: ``[B]`` rewards.
        next_obs: ``[B, D]`` next observations.
        terminated: ``[B]`` float 0/1; 1 stops bootstrapping.
        truncated: ``[B]`` float 0/1; time limit or rollout horizon (does not stop bootstrapping).
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor
    truncated: Tensor

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, Tensor):
                raise TypeError(f"TransitionBatch.{f.name}: expected a torch.Tensor, got {type(value).__name__}")
            if value.shape[0] != n:
                raise ValueError(
                    f"TransitionBatch.{f.name}: batch size {value.shape[0]} does not match obs batch size {n}"
                )
        for name in ("reward", "terminated", "truncated"):
            if getattr(self, name).ndim != 1:
                raise ValueError(f"TransitionBatch.{name}: expected shape [B], got {tuple(getattr(self, name).shape)}")
        for name in ("obs", "action", "next_obs"):
            if getattr(self, name).ndim != 2:
                raise ValueError(f"TransitionBatch.{name}: expected shape [B, D], got {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.action.shape[1])

    def to(self, device: torch.device | str) -> TransitionBatch:
        return TransitionBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, idx: Tensor | slice) -> TransitionBatch:
        """Rows ``idx`` of every field."""
        return TransitionBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def as_numpy(self) -> dict[str, np.ndarray]:
        """Fields as numpy arrays (for storage)."""
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}

    @staticmethod
    def from_numpy(
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> TransitionBatch:
        """Build a float32 batch from numpy arrays (copies)."""

        def t(x: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)

        trunc = np.zeros(len(obs), dtype=np.float32) if truncated is None else truncated
        return TransitionBatch(t(obs), t(action), t(reward), t(next_obs), t(terminated), t(trunc))

    @staticmethod
    def cat(batches: list[TransitionBatch]) -> TransitionBatch:
        """Concatenate batches along the batch dimension."""
        if not batches:
            raise ValueError("TransitionBatch.cat: no batches given")
        return TransitionBatch(
            **{f.name: torch.cat([getattr(b, f.name) for b in batches], 0) for f in fields(TransitionBatch)}
        )


@dataclass(frozen=True)
class ModelStep:
    """One predicted step of a world model.

    Attributes:
        next_obs: ``[B, D]`` predicted next observations.
        reward: ``[B]`` predicted rewards.
        terminated: ``[B]`` float 0/1 predicted termination (models without a termination head return zeros;
            a known termination function from ``envs/`` overrides it through a wrapper).
        info: optional extras, e.g. ``"uncertainty"`` ``[B]`` (MOPO's penalty input), ``"members"`` ``[E, B, D]``.
    """

    next_obs: Tensor
    reward: Tensor
    terminated: Tensor
    info: Mapping[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """A policy: ``obs [B, D] -> action [B, A]`` in env units (numpy or torch in, same kind out)."""

    def __call__(self, obs: Tensor) -> Tensor: ...


Metrics = dict[str, float]


@runtime_checkable
class Agent(Protocol):
    """What every agent of the toolkit is (checked over each of them by ``tests/agents/test_contract.py``).

    ``learn(logger)`` runs the agent's whole loop and returns the final evaluation's metrics; ``act`` maps one
    observation ``[D]`` or a batch ``[B, D]`` to env-unit actions (a planner such as HyperCRL's MPC takes one
    observation at a time); ``save(path)`` writes a checkpoint (see ``mbrl.checkpoint``) and ``load(path)``
    restores it. Agents that train from a run directory are also :class:`Resumable`.
    """

    def learn(self, logger: Any = None) -> Metrics: ...

    def act(self, obs: np.ndarray, deterministic: bool = ...) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...

    def load(self, path: str | Path) -> None: ...


@runtime_checkable
class Resumable(Protocol):
    """An agent with a run directory: ``resume()`` loads its latest checkpoint (``True`` if there was one), and
    ``learn`` then continues to the same end as an uninterrupted run."""

    def resume(self) -> bool: ...


@runtime_checkable
class EnvInfo(Protocol):
    """What the core knows about an env it is handed (``envs.EnvSpec`` is one): its id, termination and reward
    as batched torch functions of ``(obs, action, next_obs)`` (``None`` where unknown) and its time limit. The
    core never looks an env up; the layer above (``envs/``, the agents, the commands) passes this in."""

    @property
    def env_id(self) -> str: ...

    @property
    def term_fn(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None: ...

    @property
    def reward_fn(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None: ...

    @property
    def max_episode_steps(self) -> int: ...
