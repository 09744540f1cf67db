"""MOREC's reward-consistent transition filter as a WorldModel that wraps an ensemble WorldModel.

Paper: Luo, Xu, Cao & Yu, "Reward-Consistent Dynamics Models are Strongly Generalizable for Offline
Reinforcement Learning" (ICLR 2024). For each ``(s, a)`` the wrapped ensemble proposes ``N`` candidate
transitions, every elite ``samples_per_elite`` times (a Gaussian sample from that elite), each is scored with the
learned dynamics reward ``r_D(s, a, s')`` (:mod:`mbrl.models.dynamics_reward`), and the candidate with the highest
score is kept (the release's ``select_elite``), or one is drawn from ``softmax(r_D / temperature)``
(``softmax_elite``; its launch script uses temperature 0.1). When the best score is below ``threshold``
(release default 0.6) the transition is marked ``terminated``: the rollout stops there and the learner does not
bootstrap from the untrusted next state (the release sets the terminal flag the same way). Release defaults:
``samples_per_elite=2`` (``resample_num_in_transition``), ``threshold=0.6`` (``terminal_dynamics_reward``).

The candidates come from the wrapped model's own ``predict_with_members`` (one call on the ``N * B`` tiled
batch, row ``c * B + i`` = candidate ``c`` of transition ``i``) when it has one, so its termination function and
reward handling (e.g. :class:`~mbrl.models.wrappers.KnownFunctionsModel`'s ``term_fn``) apply to every
candidate exactly as they do to its ordinary predictions. A model without ``predict_with_members`` is asked for
``N`` independent ``predict`` samples instead (its own sampling, e.g. a random elite per row).

Cost: the wrapped model predicts ``N`` rows per transition and the reward runs ``K`` snapshots over them; a
``ProbabilisticEnsemble`` with ``full_info=True`` (MOPO) evaluates all ``E`` members on the ``N * B`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mbrl.models.contract import require_world_model
from mbrl.models.dynamics_reward import DynamicsRewardConfig
from mbrl.models.protocol import Ensemble, WorldModel
from mbrl.models.wrappers import DelegatingModel
from mbrl.types import ModelStep


@runtime_checkable
class TransitionScorer(Protocol):
    """What the filter needs from a dynamics reward: ``reward(obs [B, D], action [B, A], next_obs [B, D]) -> [B]``
    (higher = more consistent with the data). :class:`DynamicsReward` is one."""

    obs_dim: int
    action_dim: int

    def reward(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class MorecConfig:
    """The reward-consistent filter and how its dynamics reward is learned.

    Attributes:
        samples_per_elite: candidates per elite per transition (release: 2).
        threshold: rollouts stop (``terminated = 1``) where the best candidate's dynamics reward is below this
            (release: 0.6, on the calibrated scale of :class:`DynamicsReward`). ``None``: select only.
        temperature: ``None`` keeps the best candidate; a positive value samples one from
            ``softmax(r_D / temperature)`` (release ``softmax_elite``: 0.1).
        reward: how the dynamics reward is learned when none is loaded.
    """

    samples_per_elite: int = 2
    threshold: float | None = 0.6
    temperature: float | None = None
    reward: DynamicsRewardConfig = field(default_factory=DynamicsRewardConfig)

    def __post_init__(self) -> None:
        if self.samples_per_elite < 1:
            raise ValueError(f"MorecConfig.samples_per_elite must be >= 1, got {self.samples_per_elite}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"MorecConfig.temperature must be > 0 or None, got {self.temperature}")


@dataclass(frozen=True)
class Candidates:
    """The ``N`` candidate transitions of a batch of ``B`` rows and their dynamics rewards.

    Attributes:
        step: the wrapped model's prediction on the tiled ``[N * B]`` batch (row ``c * B + i`` is candidate
            ``c`` of transition ``i``).
        score: ``[N, B]`` dynamics reward of each candidate (``-inf`` for a non-finite candidate).
    """

    step: ModelStep
    score: Tensor

    @property
    def num_candidates(self) -> int:
        return int(self.score.shape[0])


class RewardConsistentFilter(DelegatingModel):
    """A ``WorldModel`` keeping, per transition, the candidate with the highest dynamics reward (see the module
    docstring); ``info["dynamics_reward"]`` ``[B]`` holds the chosen candidate's score and
    ``info["morec_stopped"]`` ``[B]`` is 1.0 where the filter, and not the wrapped model, ended the rollout.

    ``update``, ``evaluate``, ``state_dict`` / ``load_state_dict`` and the fitting hooks (``fit_normalizer``,
    ``update_members``, ``select_elites``, ...) and ``Ensemble`` members are the wrapped model's: fitting the
    filter fits the model; the dynamics reward is fixed and saved on its own. ``predict_with_members`` is not
    passed through (it would bypass the filter).

    Args:
        model: a WorldModel with the ``Ensemble`` capability (``elites``, ``num_members``, ``predict_members``).
        dynamics_reward: the learned reward (a :class:`DynamicsReward` or any :class:`TransitionScorer`; same dims).
        samples_per_elite: candidates per elite.
        threshold: stop threshold on the best score; ``None`` never stops (select only).
        temperature: ``None`` = argmax; ``> 0`` = sample from ``softmax(score / temperature)`` (sampled
            predictions only; ``deterministic=True`` always takes the argmax).

    Raises:
        TypeError: ``model`` is not an ``Ensemble`` or misses WorldModel members.
        ValueError: dims differ, or bad ``samples_per_elite`` / ``temperature``.
    """

    def __init__(
        self,
        model: WorldModel,
        dynamics_reward: TransitionScorer,
        *,
        samples_per_elite: int = 2,
        threshold: float | None = 0.6,
        temperature: float | None = None,
    ) -> None:
        require_world_model(model)
        if not isinstance(model, Ensemble):
            raise TypeError(
                f"RewardConsistentFilter: {type(model).__name__} has no Ensemble capability (elites, num_members, "
                "predict_members); the filter draws candidates from the elites"
            )
        if (dynamics_reward.obs_dim, dynamics_reward.action_dim) != (model.obs_dim, model.action_dim):
            raise ValueError(
                f"RewardConsistentFilter: dynamics reward dims (obs {dynamics_reward.obs_dim}, action "
                f"{dynamics_reward.action_dim}) differ from the model's (obs {model.obs_dim}, action {model.action_dim})"
            )
        if samples_per_elite < 1:
            raise ValueError(f"RewardConsistentFilter: samples_per_elite must be >= 1, got {samples_per_elite}")
        if temperature is not None and temperature <= 0:
            raise ValueError(f"RewardConsistentFilter: temperature must be > 0 or None, got {temperature}")
        self.model = model
        self.dynamics_reward = dynamics_reward
        self.samples_per_elite = int(samples_per_elite)
        self.threshold = None if threshold is None else float(threshold)
        self.temperature = None if temperature is None else float(temperature)
        self.obs_dim = model.obs_dim
        self.action_dim = model.action_dim

    @classmethod
    def from_config(
        cls, model: WorldModel, dynamics_reward: TransitionScorer, config: MorecConfig
    ) -> RewardConsistentFilter:
        """The filter with ``config``'s settings."""
        return cls(
            model,
            dynamics_reward,
            samples_per_elite=config.samples_per_elite,
            threshold=config.threshold,
            temperature=config.temperature,
        )

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally: the wrapped model's capabilities and fitting hooks.
        if name in ("model", "predict_with_members"):
            raise AttributeError(name)
        return getattr(self.model, name)

    # ------------------------------------------------------------------------------------------ prediction
    def candidates(
        self, obs: Tensor, action: Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> Candidates:
        """Every elite x ``samples_per_elite`` candidates for each row and their dynamics rewards.

        Args:
            obs: ``[B, D]``.
            action: ``[B, A]``.
            deterministic: candidates are the elites' means (repeated ``samples_per_elite`` times).
            generator: the candidates' sampling noise.
        """
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"RewardConsistentFilter: expected obs [B, {self.obs_dim}], got {tuple(obs.shape)}")
        elites = [int(i) for i in self.model.elites]  # type: ignore[attr-defined]
        n_cand = len(elites) * self.samples_per_elite
        b = int(obs.shape[0])
        obs_rep = obs.repeat(n_cand, 1)
        action_rep = action.repeat(n_cand, 1)
        inner = getattr(self.model, "predict_with_members", None)
        if callable(inner):
            members = torch.tensor(elites, dtype=torch.long).repeat_interleave(self.samples_per_elite)
            step = inner(
                obs_rep, action_rep, members.repeat_interleave(b), deterministic=deterministic, generator=generator
            )
        else:
            steps = [
                self.model.predict(obs, action, deterministic=deterministic, generator=generator) for _ in range(n_cand)
            ]
            step = _cat_steps(steps, b)
        score = self.dynamics_reward.reward(obs_rep, action_rep, step.next_obs).to(step.next_obs.device)
        finite = torch.isfinite(step.next_obs).all(dim=1) & torch.isfinite(score)
        score = torch.where(finite, score, torch.full_like(score, -torch.inf))
        return Candidates(step=step, score=score.view(n_cand, b))

    def select(self, cand: Candidates, *, deterministic: bool, generator: torch.Generator | None) -> Tensor:
        """``[B]`` index of the kept candidate: argmax, or a softmax draw when ``temperature`` is set."""
        score = cand.score
        if self.temperature is None or deterministic:
            return score.argmax(dim=0)
        # -inf (non-finite candidates) -> a very low finite score: a row with no finite candidate stays drawable.
        logits = torch.nan_to_num(score, neginf=-1e9) / self.temperature
        probs = torch.softmax(logits, dim=0).T  # [B, N]
        gen_device = generator.device if generator is not None else probs.device
        idx = torch.multinomial(probs.to(gen_device), 1, generator=generator).squeeze(1)
        return idx.to(score.device)

    def predict(
        self, obs: Tensor, action: Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> ModelStep:
        """The kept candidate per row (see the class docstring).

        Returns:
            ``ModelStep`` of the kept candidates: the wrapped model's ``next_obs``, ``reward``, ``terminated``
            (or-ed with the filter's stop) and its per-row ``info`` entries (``"members"`` restricted to the kept
            rows), plus ``info["dynamics_reward"]`` and ``info["morec_stopped"]`` ``[B]``.
        """
        cand = self.candidates(obs, action, deterministic=deterministic, generator=generator)
        idx = self.select(cand, deterministic=deterministic, generator=generator)
        step = cand.step
        b = int(obs.shape[0])
        n_rows = cand.num_candidates * b
        rows = torch.arange(b, device=idx.device)
        flat = idx * b + rows
        best = cand.score[idx, rows]
        terminated = step.terminated[flat]
        info: dict[str, Tensor] = {}
        for key, value in step.info.items():
            if key == "members" and value.ndim == 3 and value.shape[1] == n_rows:
                info[key] = value[:, flat]
            elif value.ndim >= 1 and value.shape[0] == n_rows:
                info[key] = value[flat]
        if self.threshold is not None:
            stopped = (best < self.threshold) & (terminated <= 0)
        else:
            stopped = torch.zeros(b, dtype=torch.bool, device=best.device)
        stopped_f = stopped.to(terminated.dtype)
        info["dynamics_reward"] = best.to(step.reward.dtype)
        info["morec_stopped"] = stopped_f
        return ModelStep(
            next_obs=step.next_obs[flat],
            reward=step.reward[flat],
            terminated=torch.maximum(terminated, stopped_f),
            info=info,
        )

    def __repr__(self) -> str:
        mode = "argmax" if self.temperature is None else f"softmax(T={self.temperature})"
        return (
            f"RewardConsistentFilter({self.model!r}, {self.dynamics_reward!r}, samples_per_elite="
            f"{self.samples_per_elite}, threshold={self.threshold}, {mode})"
        )


def _cat_steps(steps: list[ModelStep], b: int) -> ModelStep:
    """Concatenate ``N`` predictions of ``B`` rows candidate-major; per-row info entries only."""
    info: dict[str, Tensor] = {}
    for key, value in steps[0].info.items():
        if key == "members" and value.ndim == 3 and value.shape[1] == b:
            info[key] = torch.cat([s.info[key] for s in steps], dim=1)
        elif value.ndim >= 1 and value.shape[0] == b and all(key in s.info for s in steps):
            info[key] = torch.cat([s.info[key] for s in steps], dim=0)
    return ModelStep(
        next_obs=torch.cat([s.next_obs for s in steps], 0),
        reward=torch.cat([s.reward for s in steps], 0),
        terminated=torch.cat([s.terminated for s in steps], 0),
        info=info,
    )
