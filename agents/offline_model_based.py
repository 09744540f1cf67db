"""Offline model-based RL with MBPO-style rollouts from dataset states: the code RAVL (``agents/ravl.py``) and MOPO
(``agents/mopo.py``) share. They differ in their learner and their model chain only.

A world model is fitted once on the dataset; every ``updates_per_epoch`` updates, ``rollouts_per_epoch`` start
states are drawn from the dataset and rolled out ``rollout_length`` (k) steps with the current stochastic policy
through the model chain (:mod:`mbrl.models.chain`: dynamics -> known termination -> filter -> penalty); a model
buffer keeps the rollouts of the last ``retain_epochs`` epochs; each SAC update draws ``real_ratio`` of its batch
from the dataset and the rest from the model buffer.

The model chain's fields sit flat in the config (``dynamics``, ``ensemble``, ``filter``, ``morec``,
``dynamics_reward``, ``penalty``, ``penalty_coef``), so flags and a run directory's ``config.json`` read as they
always have; :attr:`OfflineModelBasedConfig.model_chain` gathers them into the chain's own config.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
import tyro

from mbrl.agents.offline import OfflineAgent, OfflineLoopConfig, torch_generator
from mbrl.data import OfflineDataset
from mbrl.envs import get_spec, require_term_fn
from mbrl.models.chain import ModelChainConfig, build_model_chain
from mbrl.models.dynamics_reward import dynamics_reward_preset, train_dynamics_reward
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.models.morec import MorecConfig
from mbrl.models.protocol import WorldModel
from mbrl.rl.sac import SAC, SACConfig
from mbrl.rollouts import RolloutBuffer, mixed_batch
from mbrl.types import Metrics, TransitionBatch
from mbrl.utils import native_bf16


@dataclass(frozen=True)
class OfflineModelBasedConfig:
    """An offline model-based run; :class:`~mbrl.agents.ravl.RAVLConfig` and :class:`~mbrl.agents.mopo.MOPOConfig` set its
    defaults and name the algorithm.

    Attributes:
        loop: dataset, updates, evaluation, checkpoints.
        sac: the learner.
        ensemble: the learned world model (MOPO's penalty needs ``full_info=True``).
        fit: how the model is fitted on the dataset (once, before the first update).
        dynamics: ``"learned"`` (fit ``ensemble``) or ``"true"`` (:class:`TrueDynamicsModel`, zero uncertainty).
        penalty: ``"none"`` (RAVL) or ``"uncertainty"`` (MOPO: ``reward - penalty_coef * uncertainty``).
        penalty_coef: MOPO's lambda.
        rollout_length: k, steps per model rollout.
        rollouts_per_epoch: start states rolled out every epoch.
        updates_per_epoch: SAC updates between rollout refills.
        retain_epochs: the model buffer holds the rollouts of this many epochs.
        real_ratio: fraction of each SAC batch drawn from the dataset.
        clip_obs: clamp predicted observations into the dataset's observation range.
        filter: ``"none"`` or ``"morec"`` (the reward-consistent filter on the learned ensemble).
        dynamics_reward: a learned dynamics reward to reuse (``dynamics_reward.pt`` or a directory holding one,
            e.g. from ``mbrl model train-dynamics-reward``); ``None`` learns one after fitting the ensemble.
        morec: the filter's settings and how the dynamics reward is learned.
        bc_warm_start: ours (not in RAVL's or MOPO's papers; 0 = off, as released): the first this many updates
            draw their batches from the dataset only and the actor clones the dataset's actions (CQL's
            ``policy_eval_start`` objective, :meth:`SAC.update` ``clone_actions``) while the critics and alpha
            learn as usual; model rollouts start after it.
    """

    algo: ClassVar[str] = "offline-model-based"
    """The run's algorithm name (``config.json``'s ``algo``)."""

    loop: Annotated[OfflineLoopConfig, tyro.conf.arg(name="")] = field(default_factory=OfflineLoopConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    ensemble: EnsembleConfig = field(default_factory=lambda: EnsembleConfig(num_members=7, num_elites=5))
    fit: FitConfig = field(default_factory=FitConfig)
    dynamics: Literal["learned", "true"] = "learned"
    penalty: Literal["none", "uncertainty"] = "none"
    penalty_coef: float = 1.0
    rollout_length: int = 5
    rollouts_per_epoch: int = 50_000
    updates_per_epoch: int = 1000
    retain_epochs: int = 5
    real_ratio: float = 0.05
    clip_obs: bool = False
    filter: Literal["none", "morec"] = "none"
    dynamics_reward: str | None = None
    morec: MorecConfig = field(default_factory=MorecConfig)
    bc_warm_start: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.bc_warm_start < 0:
            raise ValueError(f"{name}: bc_warm_start must be >= 0, got {self.bc_warm_start}")
        if self.rollout_length < 1 or self.rollouts_per_epoch < 1 or self.updates_per_epoch < 1:
            raise ValueError(f"{name}: rollout_length, rollouts_per_epoch and updates_per_epoch must be >= 1")
        if self.retain_epochs < 1:
            raise ValueError(f"{name}: retain_epochs must be >= 1, got {self.retain_epochs}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"{name}: real_ratio must be in [0, 1], got {self.real_ratio}")
        try:
            _ = self.model_chain  # built, so checked: the chain's own rules
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

    @property
    def model_chain(self) -> ModelChainConfig:
        """The model chain this run rolls out through (its fields, gathered)."""
        return ModelChainConfig(
            dynamics=self.dynamics,
            ensemble=self.ensemble,
            filter=self.filter,
            morec=self.morec,
            dynamics_reward=self.dynamics_reward,
            penalty=self.penalty,
            penalty_coef=self.penalty_coef,
        )


# -- presets ----------------------------------------------------------------------------------------------------
Preset = Literal["paper", "cpu", "quick"]

# Per preset: (updates, rollouts_per_epoch, updates_per_epoch, eval_every, eval_episodes, fit)
_BUDGETS: dict[str, tuple[int, int, int, int, int, FitConfig]] = {
    "paper": (3_000_000, 50_000, 1000, 10_000, 10, FitConfig(max_epochs=None, max_time_s=None)),
    "cpu": (50_000, 5_000, 1000, 5_000, 10, FitConfig(max_epochs=100, max_time_s=600.0)),
    "quick": (300, 200, 100, 150, 2, FitConfig(max_epochs=3, max_time_s=20.0, max_holdout=500)),
}

C = TypeVar("C", bound=OfflineModelBasedConfig)


def preset_config(
    kind: type[C],
    dataset: str,
    preset: Preset,
    overrides: Mapping[str, Any],
    *,
    sac: SACConfig,
    full_info: bool,
    paper_updates: int,
    **algorithm: Any,
) -> C:
    """A ``kind`` config on ``dataset`` with the ``preset``'s budget (``paper``: ``paper_updates`` updates),
    learner (:func:`sac_for_preset` of ``sac``) and ensemble (``full_info``: every member's sigma in ``info``);
    ``algorithm`` sets the algorithm's own fields (rollout length, real ratio, penalty, ...). ``overrides``
    replace fields of the config, or of the loop when named ``loop_<field>``."""
    if preset not in _BUDGETS:
        raise ValueError(f"unknown preset {preset!r} (paper, cpu, quick)")
    updates, rollouts, per_epoch, evals, episodes, fit_config = _BUDGETS[preset]
    if preset == "paper":
        updates = paper_updates
    loop = OfflineLoopConfig(
        dataset=dataset,
        updates=updates,
        eval_every=evals,
        eval_episodes=episodes,
        checkpoint_every=evals,
        log_every=min(1000, per_epoch),
    )
    loop = replace(loop, **{k[5:]: v for k, v in overrides.items() if k.startswith("loop_")})
    base = kind(
        loop=loop,
        sac=sac_for_preset(sac, preset),
        ensemble=ensemble_for_preset(preset, full_info),
        fit=fit_config,
        rollouts_per_epoch=rollouts,
        updates_per_epoch=per_epoch,
        morec=MorecConfig(reward=dynamics_reward_preset(preset)),
        **algorithm,
    )
    return replace(base, **{k: v for k, v in overrides.items() if not k.startswith("loop_")})


def sac_for_preset(sac: SACConfig, preset: Preset) -> SACConfig:
    """The paper learner on a preset: ``cpu`` adds bf16 autocast where the CPU runs bf16 natively (ours: measured
    3.4x faster RAVL updates on an AMX machine, 10 -> 35 updates/s; EDAC's term under bf16 is within 2 % of fp32,
    tests/rl/test_sac.py) and stays fp32 on CPUs without it (AVX2 only: emulated bf16 ran the critics' matmuls
    ~45x slower than fp32, ``mbrl.utils.native_bf16``); ``quick`` shrinks everything for smoke tests."""
    if preset == "cpu":
        return replace(sac, use_bf16=native_bf16("cpu"))
    if preset == "quick":
        return replace(sac, hidden=64, depth=2, num_critics=min(sac.num_critics, 4), batch_size=64)
    return sac


def ensemble_for_preset(preset: Preset, full_info: bool) -> EnsembleConfig:
    """7 members / 5 elites (RAVL's and MOPO's release), or a small 3 / 2 for ``quick``."""
    if preset == "quick":
        return EnsembleConfig(num_members=3, num_elites=2, hidden=64, depth=2, full_info=full_info)
    return EnsembleConfig(num_members=7, num_elites=5, full_info=full_info)


# -- the agent --------------------------------------------------------------------------------------------------
class OfflineModelBasedAgent(OfflineAgent):
    """RAVL or MOPO (per its config's type and model chain) on an offline dataset.

    Args:
        config: the run (:class:`~mbrl.agents.ravl.RAVLConfig` or :class:`~mbrl.agents.mopo.MOPOConfig`).
        dataset: the data (default: loaded from ``config.loop.dataset``).
        model: a world model to use instead of the one ``config.dynamics`` names (any ``WorldModel``). It is
            fitted on the dataset before training unless ``fit_model=False``.
        fit_model: fit the dynamics (learned dynamics or a model passed in only).
        run_dir: where checkpoints go.
    """

    def __init__(
        self,
        config: OfflineModelBasedConfig,
        *,
        dataset: OfflineDataset | None = None,
        model: WorldModel | None = None,
        fit_model: bool = True,
        run_dir: str | Path | None = None,
    ) -> None:
        super().__init__(config, dataset=dataset, run_dir=run_dir)
        self.config: OfflineModelBasedConfig = config
        seed = config.loop.seed
        self.spec = get_spec(self.env_id)
        require_term_fn(self.spec, config.algo.upper())
        self.sac = SAC(
            self.obs_dim,
            self.action_dim,
            self.action_low,
            self.action_high,
            config.sac,
            generator=torch_generator(seed, 1),
        )
        self.torch_gen = torch_generator(seed, 2)
        chain = build_model_chain(
            config.model_chain,
            obs_dim=self.obs_dim,
            action_dim=self.action_dim,
            env_id=self.env_id,
            term_fn=self.spec.term_fn,
            ensemble_seed=int(np.random.SeedSequence([seed, 3]).generate_state(1)[0]),
            dynamics=model,
        )
        self.base_model: WorldModel = chain.dynamics
        self.fit_model = fit_model and (model is not None or config.dynamics == "learned")
        self.dynamics_reward = chain.dynamics_reward
        self.model: WorldModel = chain.model
        self._term_fn = chain.rollout_term_fn
        capacity = config.rollouts_per_epoch * config.rollout_length * config.retain_epochs
        self.model_buffer = RolloutBuffer(
            capacity, self.obs_dim, self.action_dim, rng=np.random.default_rng([seed, 4]), device=self.sac.device
        )
        obs = self.dataset.observations
        device = self.sac.device
        self._clip = (
            (torch.from_numpy(obs.min(0)).to(device), torch.from_numpy(obs.max(0)).to(device)) if config.clip_obs else None
        )
        self.rollout_time_s = 0.0
        self.rollouts_started = 0  # over the whole run (MOREC's stop fraction is cumulative)
        self.rollouts_stopped = 0
        self.last_rollout: Metrics = {}

    # -- model ------------------------------------------------------------------------------------------------
    def _prepare(self) -> Metrics:
        metrics: Metrics = {}
        if self.fit_model:
            progress = self.fit_progress_path() if self.run_dir is not None else None
            report = fit(self.base_model, self.dataset, self.config.fit, rng=self.rng, checkpoint=progress)
            metrics.update(report.metrics("model/"))
        if self.config.model_chain.learns_dynamics_reward:
            metrics.update(self._learn_dynamics_reward())
        return metrics

    def _learn_dynamics_reward(self) -> Metrics:
        """Learn the filter's dynamics reward on the dataset against the fitted ensemble."""
        assert self.dynamics_reward is not None
        if not isinstance(self.base_model, ProbabilisticEnsemble):
            raise ValueError(
                f"{type(self.config).__name__}.filter='morec': learning the dynamics reward needs the agent's "
                f"ProbabilisticEnsemble (got {type(self.base_model).__name__}); pass a learned one with "
                "dynamics_reward=PATH"
            )
        seed = int(np.random.SeedSequence([self.config.loop.seed, 5]).generate_state(1)[0])
        progress = (
            self.fit_progress_path().with_name("dynamics_reward_progress.pt") if self.run_dir is not None else None
        )
        learned, history = train_dynamics_reward(
            self.dataset, self.base_model, self.config.morec.reward, seed=seed, checkpoint=progress
        )
        self.dynamics_reward.load_state_dict(learned.state_dict())
        return {f"model/{k}": v for k, v in history[-1].items() if k != "iteration"}

    def rollout_epoch(self) -> Metrics:
        """Refill the model buffer with ``rollouts_per_epoch`` k-step rollouts from dataset states."""
        c = self.config
        t0 = time.perf_counter()
        rows = self.rng.integers(0, len(self.dataset), size=c.rollouts_per_epoch)
        start = torch.from_numpy(self.dataset.observations[rows]).to(self.sac.device)
        batch, stats = self.model_buffer.refill(
            self.model,
            self.sac.as_policy(deterministic=False),
            start,
            c.rollout_length,
            term_fn=self._term_fn,
            generator=self.torch_gen,
            clip_obs=self._clip,
        )
        self.rollout_time_s += time.perf_counter() - t0
        out = stats.metrics("rollout/")
        out["rollout/buffer_size"] = float(len(self.model_buffer))
        self.rollouts_started += stats.n_start
        if self.dynamics_reward is not None:
            # A rollout the filter stopped ends in terminated = 1 where the env's termination says it goes on.
            stopped = batch.terminated.cpu() > 0
            env_term = self.spec.term_fn
            if env_term is not None and len(batch) > 0:
                b = batch.to("cpu")
                stopped = stopped & ~(env_term(b.obs, b.action, b.next_obs) > 0)
            self.rollouts_stopped += int(stopped.sum())
            # Fraction of all rollouts started so far (every epoch, not only this one) that the filter stopped
            # before k steps.
            out["rollout/morec_stopped_fraction"] = self.rollouts_stopped / max(self.rollouts_started, 1)
        out["rollout/time_s"] = self.rollout_time_s
        return out

    def sample_batch(self) -> TransitionBatch:
        """A SAC batch: ``round(real_ratio * B)`` dataset rows, the rest from the model buffer."""
        c = self.config
        return mixed_batch(
            lambda n: self.dataset.sample(n, self.rng, self.sac.device), self.model_buffer, c.sac.batch_size, c.real_ratio
        )

    # -- OfflineAgent -----------------------------------------------------------------------------------------
    def _train_step(self) -> Metrics:
        c = self.config
        since_warm_start = self.num_updates - c.bc_warm_start
        if since_warm_start < 0:  # behaviour-cloning warm start: dataset batches, no rollouts yet
            return self.sac.update(self.dataset.sample(c.sac.batch_size, self.rng, self.sac.device), clone_actions=True)
        if since_warm_start % c.updates_per_epoch == 0:
            self.last_rollout = self.rollout_epoch()
        anchor = self.dataset.sample(c.sac.batch_size, self.rng, self.sac.device) if c.sac.bc_weight > 0 else None
        metrics = self.sac.update(self.sample_batch(), bc_batch=anchor)
        metrics.update(self.last_rollout)
        return metrics

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.asarray(self.sac.act(obs, deterministic=deterministic))

    def _learner_state(self) -> dict[str, Any]:
        return {
            "sac": self.sac.state_dict(),
            "model": dict(self.base_model.state_dict()),
            "dynamics_reward": self.dynamics_reward.state_dict() if self.dynamics_reward is not None else {},
            "model_buffer": self.model_buffer.state_dict(),
            "rollout": {
                "torch_gen": self.torch_gen.get_state(),
                "time_s": self.rollout_time_s,
                "started": self.rollouts_started,
                "stopped": self.rollouts_stopped,
                "last": dict(self.last_rollout),
            },
        }

    def _load_learner_state(self, state: dict[str, Any]) -> None:
        self.sac.load_state_dict(state["sac"])
        if state["model"]:
            self.base_model.load_state_dict(state["model"])
        if self.dynamics_reward is not None and state.get("dynamics_reward"):
            self.dynamics_reward.load_state_dict(state["dynamics_reward"])
        self.model_buffer.load_state_dict(state["model_buffer"])
        self.torch_gen.set_state(state["rollout"]["torch_gen"])
        self.rollout_time_s = float(state["rollout"]["time_s"])
        self.rollouts_started = int(state["rollout"].get("started", 0))
        self.rollouts_stopped = int(state["rollout"].get("stopped", 0))
        self.last_rollout = {k: float(v) for k, v in state["rollout"]["last"].items()}

    def config_dict(self) -> dict[str, Any]:
        """The run's config with its algorithm: the config's own (``RAVLConfig`` -> ravl, ``MOPOConfig`` ->
        mopo)."""
        return {**super().config_dict(), "algo": self.config.algo}
