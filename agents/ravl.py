"""RAVL and MOPO: offline model-based RL (MBPO-style rollouts from dataset states) with two kinds of pessimism.

RAVL — Sims, Lu, Foerster & Teh, "The Edge-of-Reach Problem in Offline Model-Based Reinforcement Learning"
(NeurIPS 2024). A world model is fitted once on the dataset; every ``updates_per_epoch`` updates,
``rollouts_per_epoch`` start states are drawn from the dataset and rolled out ``rollout_length`` (k) steps with
the current stochastic policy (each step uses a random elite of the ensemble); a model buffer keeps the rollouts
of the last ``retain_epochs`` epochs; each SAC update draws ``real_ratio`` of its batch from the dataset and the
rest from the model buffer. RAVL uses NO dynamics-uncertainty penalty: its pessimism is SAC-N's (N=10 critics,
target = min over all critics) plus the EDAC diversity term (eta), which detects the "edge-of-reach" states
(reached only as the last state of a truncated rollout, so their values are never trained) through the
critics' disagreement there. Released defaults (anyasims/edge-of-reach): N=10, eta=1, k=5, real_ratio 0.05,
50k rollouts per epoch of 1000 updates, 5 retained epochs, 3000 epochs, 3 x 256 nets (:data:`RAVL_SAC`).

MOPO — Yu et al., "MOPO: Model-based Offline Policy Optimization" (NeurIPS 2020): same loop, 2 critics, and the
reward of every model transition is penalised by ``penalty_coef * u(s, a)`` where ``u`` is the ensemble's
``max_e ||sigma_e(s, a)||`` over all members (``info["uncertainty"]`` of ``ProbabilisticEnsemble`` with
``full_info=True``); lambda and k per dataset from the released configs (:data:`MOPO_TASKS`).

Every preset value and its source: ``docs/presets.md`` (checked by ``tests/test_presets.py``).

MOREC — Luo et al., "Reward-Consistent Dynamics Models are Strongly Generalizable for Offline RL" (ICLR 2024):
with ``filter="morec"`` the rollouts go through :class:`~mbrl.models.morec.RewardConsistentFilter` (per step the
candidate with the highest learned dynamics reward among elites x 2 samples; rollouts stop where that reward is
below 0.6). The dynamics reward is learned after the ensemble is fitted (``morec.reward``) or loaded from
``dynamics_reward``. Model chain: ``ensemble -> KnownFunctionsModel(env term_fn) -> filter [-> MOPO penalty]``;
the env's termination is applied to every candidate inside the chain (so ``rollout`` gets no ``term_fn``, which
would override the filter's stops).

The edge-of-reach contrast: with the TRUE dynamics (``dynamics="true"``, :class:`TrueDynamicsModel`) the
uncertainty is zero, MOPO's penalty vanishes and its Q-values explode, while RAVL's critic ensemble still
penalises the edge-of-reach states. ``scripts/edge_of_reach.py`` runs that experiment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro
from torch import Tensor

from agents.offline import OfflineAgent, OfflineLoopConfig, torch_generator
from envs import get_spec, require_term_fn
from mbrl.data import OfflineDataset
from mbrl.models.contract import require_world_model
from mbrl.models.dynamics_reward import DynamicsReward, dynamics_reward_preset, train_dynamics_reward
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.models.morec import MorecConfig, RewardConsistentFilter
from mbrl.models.protocol import Ensemble, WorldModel
from mbrl.models.wrappers import DelegatingModel, KnownFunctionsModel
from mbrl.rl.sac import SAC, SACConfig
from mbrl.rollouts import RolloutBuffer, mixed_batch
from mbrl.types import Metrics, ModelStep, TransitionBatch


@dataclass(frozen=True)
class RAVLConfig:
    """An offline model-based run (RAVL, or MOPO with ``penalty="uncertainty"``).

    Attributes:
        loop: dataset, updates, evaluation, checkpoints.
        sac: the learner (RAVL: ``num_critics=10, edac_eta=1.0``; MOPO: 2 critics, no EDAC).
        ensemble: the learned world model (7 members, 5 elites; MOPO needs ``full_info=True``).
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

    loop: Annotated[OfflineLoopConfig, tyro.conf.arg(name="")] = field(default_factory=OfflineLoopConfig)
    sac: SACConfig = field(default_factory=lambda: SACConfig(num_critics=10, edac_eta=1.0))
    ensemble: EnsembleConfig = field(
        default_factory=lambda: EnsembleConfig(num_members=7, num_elites=5, full_info=False)
    )
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
        if self.bc_warm_start < 0:
            raise ValueError(f"RAVLConfig: bc_warm_start must be >= 0, got {self.bc_warm_start}")
        if self.dynamics not in ("learned", "true"):
            raise ValueError(f"RAVLConfig: dynamics must be 'learned' or 'true', got {self.dynamics!r}")
        if self.penalty not in ("none", "uncertainty"):
            raise ValueError(f"RAVLConfig: penalty must be 'none' or 'uncertainty', got {self.penalty!r}")
        if self.rollout_length < 1 or self.rollouts_per_epoch < 1 or self.updates_per_epoch < 1:
            raise ValueError(
                "RAVLConfig: rollout_length, rollouts_per_epoch and updates_per_epoch must be >= 1"
            )
        if self.retain_epochs < 1:
            raise ValueError(f"RAVLConfig: retain_epochs must be >= 1, got {self.retain_epochs}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"RAVLConfig: real_ratio must be in [0, 1], got {self.real_ratio}")
        if self.penalty == "uncertainty" and self.dynamics == "learned" and not self.ensemble.full_info:
            raise ValueError(
                "RAVLConfig: the MOPO penalty needs ensemble.full_info=True (info['uncertainty'])"
            )
        if self.filter not in ("none", "morec"):
            raise ValueError(f"RAVLConfig: filter must be 'none' or 'morec', got {self.filter!r}")
        if self.filter == "morec" and self.dynamics == "true":
            raise ValueError("RAVLConfig: filter='morec' filters a learned ensemble; it needs dynamics='learned'")
        if self.dynamics_reward is not None and self.filter != "morec":
            raise ValueError("RAVLConfig: dynamics_reward is only used with filter='morec'")


Preset = Literal["paper", "cpu", "quick"]

# Per preset: (updates, rollouts_per_epoch, updates_per_epoch, eval_every, eval_episodes, fit)
_BUDGETS: dict[str, tuple[int, int, int, int, int, FitConfig]] = {
    "paper": (3_000_000, 50_000, 1000, 10_000, 10, FitConfig(max_epochs=None, max_time_s=None)),
    "cpu": (50_000, 5_000, 1000, 5_000, 10, FitConfig(max_epochs=100, max_time_s=600.0)),
    "quick": (300, 200, 100, 150, 2, FitConfig(max_epochs=3, max_time_s=20.0, max_holdout=500)),
}

RAVL_SAC = SACConfig(
    hidden=256, depth=3, num_critics=10, edac_eta=1.0, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, gamma=0.99,
    tau=5e-3, batch_size=256, target_entropy=None, log_std_min=-5.0, log_std_max=2.0, init="edac",
    update_order="alpha_actor_critic",
)
"""RAVL's learner as released (anyasims/edge-of-reach ``train_ravl_agent.py`` / ``agent_training/agent.py``,
adapted from CORL's ``edac.py``): 10 critics and actor of 3 x 256, EDAC eta 1, lr 3e-4 for actor, critics and
alpha, gamma 0.99, tau 5e-3, batch 256, target entropy -|A|, log-std in [-5, 2], EDAC's initialisation, update
order alpha -> actor -> critic. Provenance per value: ``docs/presets.md``."""

MOPO_SAC = SACConfig(
    hidden=256, depth=2, num_critics=2, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, gamma=0.99, tau=5e-3,
    batch_size=256, target_entropy=-3.0, log_std_min=-20.0, log_std_max=2.0,
)
"""MOPO's learner as released (tianheyu927/mopo, softlearning's SAC): 2 critics and actor of 2 x 256, lr 3e-4,
gamma 0.99, tau 5e-3, batch 256, log-std in [-20, 2], target entropy -3 for every D4RL dataset
(``examples/config/d4rl/base.py``). Provenance per value: ``docs/presets.md``."""

# MOPO's per-dataset (penalty coefficient lambda, rollout length h): tianheyu927/mopo examples/config/d4rl/<task>.py
# (D4RL v0; "mixed" = medium-replay). Datasets not listed (e.g. expert) use MOPO_DEFAULT_TASK, which is ours.
MOPO_TASKS: dict[tuple[str, str], tuple[float, int]] = {
    ("hopper", "random"): (1.0, 5),
    ("hopper", "medium"): (5.0, 5),
    ("hopper", "medium-replay"): (1.0, 5),
    ("hopper", "medium-expert"): (1.0, 5),
    ("halfcheetah", "random"): (0.5, 5),
    ("halfcheetah", "medium"): (1.0, 1),
    ("halfcheetah", "medium-replay"): (1.0, 5),
    ("halfcheetah", "medium-expert"): (5.0, 5),
}
MOPO_DEFAULT_TASK = (1.0, 5)
"""Ours, for datasets MOPO released no config for: lambda 1 and h 5, the most common values of its table."""

_ENVS = ("halfcheetah", "hopper", "walker2d", "ant", "humanoid", "invertedpendulum", "inverteddoublependulum")
_SPLITS = ("medium-replay", "medium-expert", "full-replay", "random", "medium", "expert")


def dataset_task(dataset: str) -> tuple[str | None, str | None]:
    """``(env, split)`` named by a dataset id or path, e.g. ``"mbrl/hopper/medium-replay-v0"`` or
    ``"data/hopper-medium.hdf5"`` -> ``("hopper", "medium-replay")`` / ``("hopper", "medium")``; ``None`` where
    the name does not say. MOPO's "mixed" is medium-replay."""
    name = dataset.lower().replace("_", "-").replace("mixed", "medium-replay")
    env = next((e for e in sorted(_ENVS, key=len, reverse=True) if e in name.replace("-", "")), None)
    split = next((sp for sp in _SPLITS if sp in name), None)
    return env, split


def _budget(
    dataset: str, preset: Preset, overrides: Mapping[str, Any], *, paper_updates: int = 3_000_000
) -> tuple[OfflineLoopConfig, int, int, FitConfig, dict[str, Any]]:
    """The loop, rollouts per epoch, updates per epoch and fit of ``preset`` (``paper_updates``: the paper's
    run length); returns the non-loop overrides."""
    if preset not in _BUDGETS:
        raise ValueError(f"unknown preset {preset!r} (paper, cpu, quick)")
    updates, rollouts, per_epoch, evals, episodes, fit_config = _BUDGETS[preset]
    if preset == "paper":
        updates = paper_updates
    loop_kw = {k[5:]: v for k, v in overrides.items() if k.startswith("loop_")}
    rest = {k: v for k, v in overrides.items() if not k.startswith("loop_")}
    loop = OfflineLoopConfig(
        dataset=dataset,
        updates=updates,
        eval_every=evals,
        eval_episodes=episodes,
        checkpoint_every=evals,
        log_every=min(1000, per_epoch),
    )
    return replace(loop, **loop_kw), rollouts, per_epoch, fit_config, rest


def _for_preset(sac: SACConfig, preset: Preset) -> SACConfig:
    """The paper learner on a preset: ``cpu`` adds bf16 autocast (ours: measured 3.4x faster RAVL updates on
    an AMX machine, 10 -> 35 updates/s; EDAC's term under bf16 is within 2 % of fp32, tests/rl/test_sac.py);
    ``quick`` shrinks everything for smoke tests."""
    if preset == "cpu":
        return replace(sac, use_bf16=True)
    if preset == "quick":
        return replace(sac, hidden=64, depth=2, num_critics=min(sac.num_critics, 4), batch_size=64)
    return sac


def _ensemble(preset: Preset, full_info: bool) -> EnsembleConfig:
    if preset == "quick":
        return EnsembleConfig(num_members=3, num_elites=2, hidden=64, depth=2, full_info=full_info)
    return EnsembleConfig(num_members=7, num_elites=5, full_info=full_info)


def ravl_preset(dataset: str, preset: Preset = "cpu", **overrides: Any) -> RAVLConfig:
    """RAVL as released (:data:`RAVL_SAC`; N=10, eta=1, k=5, real_ratio 0.05, 50k rollouts per epoch of 1000
    updates, 5 retained epochs, 7 members / 5 elites) with the ``preset``'s budget: ``"paper"`` 3M updates,
    ``"cpu"`` 50k updates and 5k rollouts per epoch with bf16 matmuls, ``"quick"`` a few hundred updates on
    small nets (smoke tests). ``overrides`` replace fields of :class:`RAVLConfig`, or of the loop when named
    ``loop_<field>``."""
    loop, rollouts, per_epoch, fit_config, rest = _budget(dataset, preset, overrides)
    base = RAVLConfig(
        loop=loop,
        sac=_for_preset(RAVL_SAC, preset),
        ensemble=_ensemble(preset, full_info=False),
        fit=fit_config,
        rollout_length=5,
        rollouts_per_epoch=rollouts,
        updates_per_epoch=per_epoch,
        retain_epochs=5,
        real_ratio=0.05,
        morec=MorecConfig(reward=dynamics_reward_preset(preset)),
    )
    return replace(base, **rest)


def mopo_preset(dataset: str, preset: Preset = "cpu", **overrides: Any) -> RAVLConfig:
    """MOPO as released (:data:`MOPO_SAC`; per-dataset lambda and h from :data:`MOPO_TASKS`, named from the
    dataset id or file name by :func:`dataset_task`; 50k rollouts per epoch of 1000 updates, 5 retained epochs,
    real_ratio 0.05, penalty ``max over all members of ||sigma||``) with the ``preset``'s budget (``paper``:
    MOPO's 1000 epochs = 1M updates)."""
    loop, rollouts, per_epoch, fit_config, rest = _budget(dataset, preset, overrides, paper_updates=1_000_000)
    coef, length = MOPO_TASKS.get(dataset_task(dataset), MOPO_DEFAULT_TASK)  # type: ignore[arg-type]
    base = RAVLConfig(
        loop=loop,
        sac=_for_preset(MOPO_SAC, preset),
        ensemble=_ensemble(preset, full_info=True),
        fit=fit_config,
        penalty="uncertainty",
        penalty_coef=coef,
        rollout_length=length,
        rollouts_per_epoch=rollouts,
        updates_per_epoch=per_epoch,
        retain_epochs=5,
        real_ratio=0.05,
        morec=MorecConfig(reward=dynamics_reward_preset(preset)),
    )
    return replace(base, **rest)


class UncertaintyPenalty(DelegatingModel):
    """A ``WorldModel`` wrapping another one with MOPO's penalised reward ``r - coef * info["uncertainty"]``.

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
                "(a ProbabilisticEnsemble needs full_info=True)"
            )
        info = dict(step.info)
        info["raw_reward"] = step.reward
        return ModelStep(step.next_obs, step.reward - self.coef * unc.to(step.reward), step.terminated, info)


class RAVLAgent(OfflineAgent):
    """RAVL (or MOPO, per ``config.penalty``) on an offline dataset.

    Args:
        config: the run.
        dataset: the data (default: loaded from ``config.loop.dataset``).
        model: a world model to use instead of the one ``config.dynamics`` names (any ``WorldModel``). It is
            fitted on the dataset before training unless ``fit_model=False``.
        fit_model: fit ``model`` (learned dynamics only).
        run_dir: where checkpoints go.
    """

    algo = "ravl"

    def __init__(
        self,
        config: RAVLConfig,
        *,
        dataset: OfflineDataset | None = None,
        model: WorldModel | None = None,
        fit_model: bool = True,
        run_dir: str | Path | None = None,
    ) -> None:
        super().__init__(config, dataset=dataset, run_dir=run_dir)
        self.config: RAVLConfig = config
        seed = config.loop.seed
        self.spec = get_spec(self.env_id)
        require_term_fn(self.spec, "MOPO" if config.penalty == "uncertainty" else "RAVL")
        self.sac = SAC(
            self.obs_dim,
            self.action_dim,
            self.action_low,
            self.action_high,
            config.sac,
            generator=torch_generator(seed, 1),
        )
        self.torch_gen = torch_generator(seed, 2)
        if model is None:
            if config.dynamics == "true":
                from mbrl.models.true_dynamics import TrueDynamicsModel

                model = TrueDynamicsModel(self.env_id)
                fit_model = False
            else:
                model = ProbabilisticEnsemble(
                    self.obs_dim,
                    self.action_dim,
                    config.ensemble,
                    seed=int(np.random.SeedSequence([seed, 3]).generate_state(1)[0]),
                )
        require_world_model(model)  # a model passed in that misses the protocol fails here, by name
        if (model.obs_dim, model.action_dim) != (self.obs_dim, self.action_dim):
            raise ValueError(
                f"{type(model).__name__} has obs/action dims {model.obs_dim}/{model.action_dim}, the dataset "
                f"{self.obs_dim}/{self.action_dim}: a model fitted on another env's data?"
            )
        self.base_model: WorldModel = model
        self.fit_model = fit_model
        self.dynamics_reward: DynamicsReward | None = None
        rollout_model: WorldModel = model
        # The env's termination function goes to rollout() unless the filter is on: there it is applied to
        # every candidate inside the model chain, and a term_fn in rollout() would override the filter's stops.
        self._term_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = self.spec.term_fn
        if config.filter == "morec":
            if not isinstance(model, Ensemble):
                raise ValueError(
                    f"RAVLConfig.filter='morec': {type(model).__name__} has no Ensemble capability (elites, "
                    "predict_members) to draw candidates from"
                )
            if config.dynamics_reward is not None:
                self.dynamics_reward = DynamicsReward.load(config.dynamics_reward)
                if (self.dynamics_reward.obs_dim, self.dynamics_reward.action_dim) != (self.obs_dim, self.action_dim):
                    raise ValueError(
                        f"{config.dynamics_reward}: dynamics reward dims (obs {self.dynamics_reward.obs_dim}, action "
                        f"{self.dynamics_reward.action_dim}) differ from the dataset's ({self.obs_dim}, {self.action_dim})"
                    )
            else:  # learned in _prepare (after the ensemble is fitted); restored from checkpoints on resume
                self.dynamics_reward = DynamicsReward(self.obs_dim, self.action_dim, config.morec.reward)
            known = KnownFunctionsModel(model, term_fn=self.spec.term_fn)
            rollout_model = RewardConsistentFilter.from_config(known, self.dynamics_reward, config.morec)
            self._term_fn = None
        self.model: WorldModel = (
            UncertaintyPenalty(rollout_model, config.penalty_coef)
            if config.penalty == "uncertainty"
            else rollout_model
        )
        capacity = config.rollouts_per_epoch * config.rollout_length * config.retain_epochs
        self.model_buffer = RolloutBuffer(
            capacity, self.obs_dim, self.action_dim, rng=np.random.default_rng([seed, 4])
        )
        obs = self.dataset.observations
        self._clip = (torch.from_numpy(obs.min(0)), torch.from_numpy(obs.max(0))) if config.clip_obs else None
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
        if self.config.filter == "morec" and self.config.dynamics_reward is None:
            assert self.dynamics_reward is not None
            if not isinstance(self.base_model, ProbabilisticEnsemble):
                raise ValueError(
                    f"RAVLConfig.filter='morec': learning the dynamics reward needs the agent's ProbabilisticEnsemble "
                    f"(got {type(self.base_model).__name__}); pass a learned one with dynamics_reward=PATH"
                )
            seed = int(np.random.SeedSequence([self.config.loop.seed, 5]).generate_state(1)[0])
            progress = (
                self.fit_progress_path().with_name("dynamics_reward_progress.pt") if self.run_dir is not None else None
            )
            learned, history = train_dynamics_reward(
                self.dataset, self.base_model, self.config.morec.reward, seed=seed, checkpoint=progress
            )
            self.dynamics_reward.load_state_dict(learned.state_dict())
            metrics.update({f"model/{k}": v for k, v in history[-1].items() if k != "iteration"})
        return metrics

    def rollout_epoch(self) -> Metrics:
        """Refill the model buffer with ``rollouts_per_epoch`` k-step rollouts from dataset states."""
        c = self.config
        t0 = time.perf_counter()
        rows = self.rng.integers(0, len(self.dataset), size=c.rollouts_per_epoch)
        start = torch.from_numpy(self.dataset.observations[rows])
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
            lambda n: self.dataset.sample(n, self.rng), self.model_buffer, c.sac.batch_size, c.real_ratio
        )

    # -- OfflineAgent -----------------------------------------------------------------------------------------
    def _train_step(self) -> Metrics:
        c = self.config
        since_warm_start = self.num_updates - c.bc_warm_start
        if since_warm_start < 0:  # behaviour-cloning warm start: dataset batches, no rollouts yet
            return self.sac.update(self.dataset.sample(c.sac.batch_size, self.rng), clone_actions=True)
        if since_warm_start % c.updates_per_epoch == 0:
            self.last_rollout = self.rollout_epoch()
        anchor = self.dataset.sample(c.sac.batch_size, self.rng) if c.sac.bc_weight > 0 else None
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
        out = super().config_dict()
        out["algo"] = "mopo" if self.config.penalty == "uncertainty" else "ravl"
        return out
