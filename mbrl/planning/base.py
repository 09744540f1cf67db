"""Shared machinery of the sampling-based MPC planners: batched trajectory scoring and the planner shell.

Every candidate action sequence of every start state is scored with ONE model call per planning step: the
start observations ``[B, D]`` are repeated ``P * K`` times (population x particles) into a ``[B*P*K, D]``
batch and stepped ``H`` times. Rewards come from a known ``reward_fn(obs, action, next_obs)`` (exact for
the envs in ``envs/``) or, if none is given, from the model's own predicted reward; termination from
``term_fn`` or the model's ``terminated``. No reward is collected after a predicted termination.

A planner keeps a mean action sequence ``[B, H, A]`` between calls and shifts it by one step after each env
step (warm start, as in PETS / MPPI); ``reset()`` forgets it at episode boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, overload

import numpy as np
import torch
from torch import Tensor

from mbrl.models.protocol import WorldModel

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
TermFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@torch.no_grad()
def score_sequences(
    model: WorldModel,
    obs: Tensor,
    actions: Tensor,
    *,
    reward_fn: RewardFn | None = None,
    term_fn: TermFn | None = None,
    discount: float = 1.0,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Predicted discounted return of each action sequence from its start state.

    Args:
        model: any WorldModel.
        obs: ``[N, D]`` start observation of each sequence.
        actions: ``[N, H, A]`` action sequences in env units.
        reward_fn: known reward ``(obs, action, next_obs) -> [N]``; ``None`` uses the model's reward.
        term_fn: known termination ``(obs, action, next_obs) -> [N]``; ``None`` uses the model's.
        discount: per-step discount ``γ`` (return ``Σ_h γ^h r_h``).
        deterministic: passed to ``model.predict`` (mean predictions).
        generator: passed to ``model.predict`` for sampling models.

    Returns:
        ``[N]`` returns; a sequence whose prediction turns non-finite scores ``-inf``.
    """
    if obs.ndim != 2 or actions.ndim != 3 or actions.shape[0] != obs.shape[0]:
        raise ValueError(
            f"score_sequences: expected obs [N, D] and actions [N, H, A], got {tuple(obs.shape)} and "
            f"{tuple(actions.shape)}"
        )
    n, horizon, _ = actions.shape
    total = torch.zeros(n, dtype=obs.dtype, device=obs.device)
    alive = torch.ones(n, dtype=obs.dtype, device=obs.device)
    current = obs
    weight = 1.0
    for h in range(horizon):
        action = actions[:, h]
        step = model.predict(current, action, deterministic=deterministic, generator=generator)
        next_obs = step.next_obs
        reward = step.reward if reward_fn is None else reward_fn(current, action, next_obs)
        terminated = step.terminated if term_fn is None else term_fn(current, action, next_obs)
        total = total + weight * alive * reward.to(total.dtype)
        # Termination ends the episode: the terminating step's reward counts, nothing after it does.
        alive = alive * (1.0 - terminated.to(alive.dtype))
        current = next_obs
        weight *= discount
    return torch.where(torch.isfinite(total), total, torch.full_like(total, -torch.inf))


class PlannerSettings(Protocol):
    """The fields every planner config has (``CEMConfig``, ``MPPIConfig``)."""

    @property
    def horizon(self) -> int: ...
    @property
    def discount(self) -> float: ...
    @property
    def particles(self) -> int: ...
    @property
    def deterministic(self) -> bool: ...


C = TypeVar("C", bound=PlannerSettings)


class MPCPlanner(Generic[C]):
    """Base of CEM and MPPI: bounds, warm start, the batched scoring and the Policy interface.

    Subclasses implement :meth:`_optimize` (improve the mean sequence ``[B, H, A]`` for start states
    ``[B, D]``). Use :meth:`plan` for one observation ``[D]`` (or a batch ``[B, D]``) per env step; the first
    action of the optimised sequence is returned in env units, clipped to the bounds, and the sequence is
    shifted by one step for the next call.

    Args:
        model: the WorldModel to plan with; may be swapped with :meth:`set_model` (e.g. a task view).
        config: the planner's config; its ``horizon`` (``H``), ``discount`` (per-step discount of the predicted
            return), ``particles`` (model samples per candidate sequence, scored by their mean return; 1 for a
            deterministic model) and ``deterministic`` (ask the model for mean predictions) are used here.
        action_low: ``[A]`` lower action bounds (env units).
        action_high: ``[A]`` upper action bounds.
        reward_fn: known reward function, or ``None`` for the model's reward.
        term_fn: known termination function, or ``None`` for the model's.
        generator: the planner's torch.Generator (sampling and model noise); default a fresh one seeded 0.
        device: device of the planning tensors.
    """

    def __init__(
        self,
        model: WorldModel,
        config: C,
        action_low: np.ndarray | Tensor,
        action_high: np.ndarray | Tensor,
        *,
        reward_fn: RewardFn | None = None,
        term_fn: TermFn | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        horizon, discount = config.horizon, config.discount
        particles, deterministic = config.particles, config.deterministic
        if horizon < 1:
            raise ValueError(f"planner horizon must be >= 1, got {horizon}")
        if particles < 1:
            raise ValueError(f"planner particles must be >= 1, got {particles}")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"planner discount must be in (0, 1], got {discount}")
        self.device = torch.device(device)
        self.low = torch.as_tensor(np.asarray(action_low, dtype=np.float32), device=self.device).reshape(-1)
        self.high = torch.as_tensor(np.asarray(action_high, dtype=np.float32), device=self.device).reshape(-1)
        if self.low.shape != self.high.shape or not bool(torch.all(self.low < self.high)):
            raise ValueError(
                f"planner: need action_low < action_high elementwise, got {self.low} and {self.high}"
            )
        if not bool(torch.isfinite(self.low).all() and torch.isfinite(self.high).all()):
            raise ValueError("planner: action bounds must be finite")
        self.action_dim = int(self.low.shape[0])
        self.horizon = horizon
        self.model = model
        self.reward_fn = reward_fn
        self.term_fn = term_fn
        self.discount = discount
        self.particles = particles
        self.deterministic = deterministic
        self.generator = (
            generator if generator is not None else torch.Generator(device=self.device).manual_seed(0)
        )
        self._mean: Tensor | None = None  # [B, H, A] warm-start sequence
        self.last_sequence: Tensor | None = None  # [B, H, A] the sequence optimised by the last plan()

    # -- public -----------------------------------------------------------------------------------------

    def set_model(self, model: WorldModel) -> None:
        """Plan with ``model`` from now on (the warm start is kept; call :meth:`reset` to drop it)."""
        self.model = model

    def reset(self) -> None:
        """Forget the warm-start sequence (call at the start of each episode)."""
        self._mean = None
        self.last_sequence = None

    @property
    def mean(self) -> Tensor | None:
        """The kept warm-start sequence ``[B, H, A]`` (``None`` after :meth:`reset`)."""
        return self._mean

    @property
    def center(self) -> Tensor:
        """``[A]`` middle of the action box, the initial mean."""
        return (self.low + self.high) / 2

    @property
    def half_range(self) -> Tensor:
        """``[A]`` half the width of the action box, the unit of the sampling std."""
        return (self.high - self.low) / 2

    def optimize(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Optimise action sequences from start states ``obs [B, D]`` (warm-started if a mean is kept).

        Returns:
            ``(sequence [B, H, A], predicted_return [B])``: the optimised mean sequence and its predicted
            return (one extra scoring pass). The kept warm start becomes ``sequence``, NOT shifted (``plan``
            shifts it).
        """
        obs = obs.to(self.device, torch.float32)
        mean = self._optimize_kept(obs)
        return mean, self.score(obs, mean)

    def _optimize_kept(self, obs: Tensor) -> Tensor:
        b = obs.shape[0]
        if self._mean is None or self._mean.shape[0] != b:
            self._mean = self.center.expand(b, self.horizon, self.action_dim).clone()
        self._mean = self._optimize(obs, self._mean)
        return self._mean

    @overload
    def plan(self, obs: np.ndarray) -> np.ndarray: ...

    @overload
    def plan(self, obs: Tensor) -> Tensor: ...

    def plan(self, obs: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """First action of the optimised sequence for ``obs`` ``[D]`` or ``[B, D]`` (numpy or torch).

        Returns the action ``[A]`` (or ``[B, A]``) in env units clipped to the bounds, of the same kind
        (numpy/torch) as ``obs``; shifts the kept sequence by one step (warm start for the next env step).
        """
        is_numpy = isinstance(obs, np.ndarray)
        x: Tensor = torch.as_tensor(np.asarray(obs, dtype=np.float32)) if is_numpy else torch.as_tensor(obs)
        single = x.ndim == 1
        if single:
            x = x.unsqueeze(0)
        if x.ndim != 2:
            raise ValueError(f"plan: expected obs [D] or [B, D], got shape {tuple(x.shape)}")
        mean = self._optimize_kept(x.to(self.device, torch.float32))
        self.last_sequence = mean
        action = torch.clamp(mean[:, 0], self.low, self.high)
        # Warm start: the rest of this plan, then the box centre for the new last step.
        self._mean = torch.cat([mean[:, 1:], self.center.expand(mean.shape[0], 1, self.action_dim)], dim=1)
        out = action[0] if single else action
        if isinstance(obs, np.ndarray):
            return out.cpu().numpy()
        return out.to(obs.device)

    def __call__(self, obs: Tensor) -> Tensor:
        """Policy interface: ``obs [B, D] -> action [B, A]`` (numpy in, numpy out also works)."""
        return self.plan(obs)

    def score(self, obs: Tensor, sequences: Tensor) -> Tensor:
        """Predicted returns of ``sequences [B, N, H, A]`` (or ``[B, H, A]``) from ``obs [B, D]``.

        One model call per planning step for all ``B * N * particles`` rollouts; a candidate's score is the
        mean return over its particles.
        """
        squeeze = sequences.ndim == 3
        seqs = sequences.unsqueeze(1) if squeeze else sequences
        b, n = seqs.shape[:2]
        k = self.particles
        d = obs.shape[-1]
        start = obs[:, None, None, :].expand(b, n, k, d).reshape(b * n * k, d)
        flat = seqs.unsqueeze(2).expand(b, n, k, self.horizon, self.action_dim)
        returns = score_sequences(
            self.model,
            start,
            flat.reshape(b * n * k, self.horizon, self.action_dim),
            reward_fn=self.reward_fn,
            term_fn=self.term_fn,
            discount=self.discount,
            deterministic=self.deterministic,
            generator=self.generator,
        )
        returns = returns.reshape(b, n, k).mean(dim=2)
        return returns[:, 0] if squeeze else returns

    # -- for subclasses -------------------------------------------------------------------------------

    def _optimize(self, obs: Tensor, mean: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _normal(self, shape: tuple[int, ...]) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)
