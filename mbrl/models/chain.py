"""The world model the offline model-based agents (RAVL, MOPO) roll out: one chain, built by one function.

    dynamics (learned | true) -> known termination -> filter (none | MOREC) -> penalty (none | uncertainty)

- dynamics: a :class:`~mbrl.models.ensemble.ProbabilisticEnsemble` fitted on the dataset (``"learned"``), the
  simulator itself (``"true"``, :class:`~mbrl.models.true_dynamics.TrueDynamicsModel`, zero uncertainty), or any
  ``WorldModel`` the caller passes in.
- known termination: the env's termination function replaces the model's ``terminated``.
- filter: MOREC's reward-consistent filter (Luo et al., ICLR 2024; :class:`RewardConsistentFilter`), which keeps
  the candidate transition with the highest learned dynamics reward and stops rollouts where it is low.
- penalty: MOPO's ``reward - penalty_coef * info["uncertainty"]`` (Yu et al., NeurIPS 2020;
  :class:`UncertaintyPenalty`).

Every link is a ``WorldModel`` wrapping the previous one (``mbrl/models/protocol.py``), so an agent sees one model.
Where the termination is applied: without a filter, :func:`mbrl.rollouts.rollout` applies it
(:attr:`ModelChain.rollout_term_fn`), after clamping ``next_obs`` into the data's range; with the filter it is
applied inside the chain to every candidate (a ``term_fn`` in ``rollout`` would then override the filter's stops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mbrl.models.contract import require_world_model
from mbrl.models.dynamics_reward import DynamicsReward
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.morec import MorecConfig, RewardConsistentFilter
from mbrl.models.protocol import Ensemble, WorldModel
from mbrl.models.wrappers import KnownFunctionsModel, TransitionFn, UncertaintyPenalty

Dynamics = Literal["learned", "true"]
Filter = Literal["none", "morec"]
Penalty = Literal["none", "uncertainty"]


@dataclass(frozen=True)
class ModelChainConfig:
    """The links of the chain (see the module docstring) and their settings.

    Attributes:
        dynamics: ``"learned"`` (fit ``ensemble``) or ``"true"`` (the simulator, zero uncertainty).
        ensemble: the learned dynamics (MOPO's penalty needs ``full_info=True``: every member's sigma).
        filter: ``"none"`` or ``"morec"`` (the reward-consistent filter on the learned ensemble).
        morec: the filter's settings and how its dynamics reward is learned.
        dynamics_reward: a learned dynamics reward for the filter (``dynamics_reward.pt`` or a directory holding
            one); ``None`` learns one after the ensemble is fitted.
        penalty: ``"none"`` or ``"uncertainty"`` (MOPO's ``reward - penalty_coef * uncertainty``).
        penalty_coef: MOPO's lambda.
    """

    dynamics: Dynamics = "learned"
    ensemble: EnsembleConfig = field(default_factory=lambda: EnsembleConfig(num_members=7, num_elites=5))
    filter: Filter = "none"
    morec: MorecConfig = field(default_factory=MorecConfig)
    dynamics_reward: str | None = None
    penalty: Penalty = "none"
    penalty_coef: float = 1.0

    def __post_init__(self) -> None:
        if self.dynamics not in ("learned", "true"):
            raise ValueError(f"dynamics must be 'learned' or 'true', got {self.dynamics!r}")
        if self.filter not in ("none", "morec"):
            raise ValueError(f"filter must be 'none' or 'morec', got {self.filter!r}")
        if self.penalty not in ("none", "uncertainty"):
            raise ValueError(f"penalty must be 'none' or 'uncertainty', got {self.penalty!r}")
        if self.penalty == "uncertainty" and self.dynamics == "learned" and not self.ensemble.full_info:
            raise ValueError("the MOPO penalty needs ensemble.full_info=True (info['uncertainty'])")
        if self.filter == "morec" and self.dynamics == "true":
            raise ValueError("filter='morec' filters a learned ensemble; it needs dynamics='learned'")
        if self.dynamics_reward is not None and self.filter != "morec":
            raise ValueError("dynamics_reward is only used with filter='morec'")

    @property
    def learns_dynamics_reward(self) -> bool:
        """Whether the filter's dynamics reward is learned by the run (after the ensemble is fitted)."""
        return self.filter == "morec" and self.dynamics_reward is None


@dataclass(frozen=True)
class ModelChain:
    """A built chain.

    Attributes:
        dynamics: the first link: the model fitted on the dataset and saved in checkpoints.
        dynamics_reward: the filter's scorer (``None`` without the filter); learned by the run when
            ``config.learns_dynamics_reward``, else loaded.
        model: the whole chain, what rollouts query.
        rollout_term_fn: the termination function :func:`mbrl.rollouts.rollout` must apply (``None`` when the
            chain applies it itself).
    """

    dynamics: WorldModel
    dynamics_reward: DynamicsReward | None
    model: WorldModel
    rollout_term_fn: TransitionFn | None


def build_model_chain(
    config: ModelChainConfig,
    *,
    obs_dim: int,
    action_dim: int,
    env_id: str,
    term_fn: TransitionFn | None,
    ensemble_seed: int,
    dynamics: WorldModel | None = None,
) -> ModelChain:
    """The chain of ``config`` for an env with ``obs_dim`` / ``action_dim``.

    Args:
        config: the links.
        obs_dim: the data's observation size.
        action_dim: the data's action size.
        env_id: the env (the true dynamics simulate it).
        term_fn: the env's termination function (``None``: keep the model's ``terminated``).
        ensemble_seed: seeds a learned ensemble's initial weights.
        dynamics: a world model to use as the first link instead of the one ``config.dynamics`` names.

    Raises:
        ValueError: a model of other dims than the data's; a filter on a model without ``Ensemble`` capability;
            a loaded dynamics reward of other dims.
    """
    first = dynamics if dynamics is not None else _dynamics(config, obs_dim, action_dim, env_id, ensemble_seed)
    require_world_model(first)  # a model passed in that misses the protocol fails here, by name
    if (first.obs_dim, first.action_dim) != (obs_dim, action_dim):
        raise ValueError(
            f"{type(first).__name__} has obs/action dims {first.obs_dim}/{first.action_dim}, the dataset "
            f"{obs_dim}/{action_dim}: a model fitted on another env's data?"
        )
    model: WorldModel = first
    rollout_term_fn = term_fn
    dynamics_reward = None
    if config.filter == "morec":
        if not isinstance(first, Ensemble):
            raise ValueError(
                f"filter='morec': {type(first).__name__} has no Ensemble capability (elites, predict_members) to "
                "draw candidates from"
            )
        dynamics_reward = _dynamics_reward(config, obs_dim, action_dim)
        known = KnownFunctionsModel(first, term_fn=term_fn)
        model = RewardConsistentFilter.from_config(known, dynamics_reward, config.morec)
        rollout_term_fn = None
    if config.penalty == "uncertainty":
        model = UncertaintyPenalty(model, config.penalty_coef)
    return ModelChain(first, dynamics_reward, model, rollout_term_fn)


def _dynamics(config: ModelChainConfig, obs_dim: int, action_dim: int, env_id: str, seed: int) -> WorldModel:
    if config.dynamics == "true":
        from mbrl.models.true_dynamics import TrueDynamicsModel

        return TrueDynamicsModel(env_id)
    return ProbabilisticEnsemble(obs_dim, action_dim, config.ensemble, seed=seed)


def _dynamics_reward(config: ModelChainConfig, obs_dim: int, action_dim: int) -> DynamicsReward:
    """The filter's dynamics reward: loaded from ``config.dynamics_reward``, or a fresh one the run learns (or
    restores from its checkpoints on resume)."""
    if config.dynamics_reward is None:
        return DynamicsReward(obs_dim, action_dim, config.morec.reward)
    loaded = DynamicsReward.load(config.dynamics_reward)
    if (loaded.obs_dim, loaded.action_dim) != (obs_dim, action_dim):
        raise ValueError(
            f"{config.dynamics_reward}: dynamics reward dims (obs {loaded.obs_dim}, action {loaded.action_dim}) "
            f"differ from the dataset's ({obs_dim}, {action_dim})"
        )
    return loaded
