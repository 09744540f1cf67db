"""WorldModels that wrap a WorldModel.

:class:`KnownFunctionsModel` replaces a model's ``terminated`` (and optionally ``reward``) with functions known
exactly for the env (``mbrl.envs.get_spec(env_id).term_fn`` / ``.reward_fn``). MBPO and MOPO do the same: the
model learns the dynamics, termination comes from a hand-written function of ``next_obs``.

:class:`UncertaintyPenalty` is MOPO's pessimism: the wrapped model's reward minus ``coef`` times its
``info["uncertainty"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from mbrl.models.protocol import WorldModel
from mbrl.types import EnvInfo, Metrics, ModelStep, TransitionBatch

TransitionFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class DelegatingModel:
    """Mixin of the models that wrap another ``WorldModel`` in ``self.model`` and change only its predictions:
    learning, evaluation and the weights are the wrapped model's."""

    model: WorldModel

    def update(self, batch: TransitionBatch) -> Metrics:
        return self.model.update(batch)

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return self.model.evaluate(batch)

    def state_dict(self) -> Mapping[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Any:
        return self.model.load_state_dict(state_dict)


class KnownFunctionsModel(DelegatingModel):
    """``model`` with ``terminated = term_fn(obs, action, next_obs)`` and/or ``reward = reward_fn(...)``.

    Everything else (``update``, ``evaluate``, ``state_dict``, ensemble capabilities such as ``elites``,
    ``predict_members`` or ``update_members``) is delegated to ``model`` unchanged, so the wrapper is an
    ``Ensemble`` exactly when ``model`` is. ``predict_with_members`` is wrapped too when ``model`` has it.

    Args:
        model: the wrapped WorldModel.
        term_fn: ``(obs [B, D], action [B, A], next_obs [B, D]) -> terminated [B]`` float 0/1, or ``None``
            (keep the model's).
        reward_fn: same signature ``-> reward [B]``, or ``None`` (keep the model's).
    """

    def __init__(
        self, model: WorldModel, *, term_fn: TransitionFn | None = None, reward_fn: TransitionFn | None = None
    ) -> None:
        self.model = model
        self.term_fn = term_fn
        self.reward_fn = reward_fn
        self.obs_dim = model.obs_dim
        self.action_dim = model.action_dim

    @classmethod
    def for_env(cls, model: WorldModel, spec: EnvInfo, *, use_reward_fn: bool = True) -> KnownFunctionsModel:
        """Wrap ``model`` with the termination (and reward, when known) functions of the env ``spec``
        (e.g. ``mbrl.envs.get_spec("Hopper-v5")``)."""
        return cls(model, term_fn=spec.term_fn, reward_fn=spec.reward_fn if use_reward_fn else None)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally: delegate capabilities to the wrapped model.
        if name == "model":  # not yet set (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def _apply(self, obs: Tensor, action: Tensor, step: ModelStep) -> ModelStep:
        if self.term_fn is None and self.reward_fn is None:
            return step
        obs_t = obs.to(step.next_obs.device, step.next_obs.dtype)
        action_t = action.to(step.next_obs.device, step.next_obs.dtype)
        terminated, reward = step.terminated, step.reward
        if self.term_fn is not None:
            terminated = self.term_fn(obs_t, action_t, step.next_obs).to(step.next_obs.dtype)
        if self.reward_fn is not None:
            reward = self.reward_fn(obs_t, action_t, step.next_obs).to(step.next_obs.dtype)
        return ModelStep(step.next_obs, reward, terminated, step.info)

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        step = self.model.predict(obs, action, deterministic=deterministic, generator=generator)
        return self._apply(obs, action, step)

    def predict_with_members(
        self,
        obs: Tensor,
        action: Tensor,
        members: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        inner = getattr(self.model, "predict_with_members", None)
        if not callable(inner):
            raise AttributeError(f"{type(self.model).__name__} has no predict_with_members")
        step = inner(obs, action, members, deterministic=deterministic, generator=generator)
        return self._apply(obs, action, step)

    def __repr__(self) -> str:
        parts = [repr(self.model)]
        if self.term_fn is not None:
            parts.append(f"term_fn={getattr(self.term_fn, '__name__', self.term_fn)}")
        if self.reward_fn is not None:
            parts.append(f"reward_fn={getattr(self.reward_fn, '__name__', self.reward_fn)}")
        return f"KnownFunctionsModel({', '.join(parts)})"


class UncertaintyPenalty(DelegatingModel):
    """A ``WorldModel`` wrapping another one with MOPO's penalised reward ``r - coef * info["uncertainty"]``
    (Yu et al., "MOPO: Model-based Offline Policy Optimization", NeurIPS 2020); ``info["raw_reward"]`` keeps
    the unpenalised reward.

    Args:
        model: the wrapped model; its ``predict`` must give ``info["uncertainty"] [B]``.
        coef: lambda.
    """

    def __init__(self, model: WorldModel, coef: float) -> None:
        self.model = model
        self.coef = float(coef)
        self.obs_dim = model.obs_dim
        self.action_dim = model.action_dim

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        step = self.model.predict(obs, action, deterministic=deterministic, generator=generator)
        unc = step.info.get("uncertainty")
        if unc is None:
            raise ValueError(
                f"{type(self.model).__name__}.predict gives no info['uncertainty'] for the MOPO penalty "
                "(a ProbabilisticEnsemble needs full_info=True; a model without one runs with penalty='none', "
                "e.g. RAVL as released)"
            )
        info = dict(step.info)
        info["raw_reward"] = step.reward
        return ModelStep(step.next_obs, step.reward - self.coef * unc.to(step.reward), step.terminated, info)
