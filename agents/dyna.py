"""MBPO-style Dyna: SAC trained on a mix of real transitions and short branched model rollouts.

Follows Janner et al., "When to Trust Your Model: Model-Based Policy Optimization" (NeurIPS 2019):
every ``model_train_every`` env steps the world model is refit (warm-started, capped epochs) on all real
data, then ``rollouts_per_step * model_train_every`` start states are sampled from the real buffer and
rolled out ``h`` steps with the current policy (``h`` follows a linear schedule over epochs); the rollouts go
into a model buffer that keeps the last ``model_retain_refits`` refits; each env step does ``utd`` SAC updates
on batches that mix ``real_ratio`` real data with model data.

The agent reaches its model only through the ``WorldModel`` protocol, so any model plugs in. With
``use_model=False`` the same loop is plain model-free SAC (``mbrl train sac``). The loop checkpoints
everything (policy, critics, optimizers, model, both buffers, RNG and env state, counters) so an interrupted
run resumes exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro

from mbrl.checkpoint import latest_checkpoint, load_checkpoint, restore_rng, rng_state, save_run_checkpoint
from mbrl.data import ReplayBuffer
from mbrl.envs import get_spec, make_env, require_term_fn
from mbrl.logging import Logger
from mbrl.loops import OnlineLoop, OnlineSchedule
from mbrl.metrics import prefixed
from mbrl.models.contract import require_world_model
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.models.losse import LosseConfig, LosseModel
from mbrl.models.protocol import WorldModel, is_single_pass
from mbrl.rl.sac import SAC, SACConfig
from mbrl.rollouts import RolloutBuffer, mixed_batch
from mbrl.types import Metrics, TransitionBatch
from mbrl.utils import set_threads


@dataclass(frozen=True)
class RolloutSchedule:
    """Rollout length ``h`` grows linearly from ``min_length`` to ``max_length`` over epochs
    ``min_epoch`` → ``max_epoch`` (MBPO's ``rollout_schedule = [min_epoch, max_epoch, min_length, max_length]``).
    """

    min_epoch: int = 20
    max_epoch: int = 100
    min_length: int = 1
    max_length: int = 15

    def length(self, epoch: int) -> int:
        if epoch <= self.min_epoch:
            return self.min_length
        frac = min(1.0, (epoch - self.min_epoch) / max(1, self.max_epoch - self.min_epoch))
        return round(self.min_length + frac * (self.max_length - self.min_length))


@dataclass(frozen=True)
class DynaConfig:
    """Configuration of a Dyna (MBPO-style) run.

    Attributes:
        env_id: a registered env (``mbrl.envs.supported_envs()``).
        total_steps: real env steps.
        seed: seeds the env, the buffers' numpy RNG and the learner's torch generator.
        use_model: False gives plain model-free SAC with the same loop (``mbrl train sac``).
        model_training: ``"fit"`` refits on all real data with ``fit()`` (epochs, holdout, early stop: neural
            models); ``"online"`` calls ``model.update`` once on the transitions that arrived since the last
            refit (single pass, no replay: follow-the-leader models such as Losse-FTL).
        init_random_steps: uniform-random actions before the policy acts (MBPO: 5000 on Hopper).
        epoch_length: env steps per "epoch" (the unit of the rollout schedule; MBPO: 1000).
        model_train_every: refit the model every K env steps (MBPO: 250).
        rollouts_per_step: model rollouts started per env step (MBPO: 400; done in one batch per refit).
        rollout: the rollout-length schedule.
        model_retain_refits: the model buffer keeps the rollouts of this many refits.
        utd: SAC updates per env step (MBPO: 20–40).
        real_ratio: fraction of real data in each SAC batch (MBPO: 0.05).
        policy_start_steps: env steps before SAC updates start (default: ``init_random_steps``).
        log_every: env steps between logged training/timing metrics (episode returns, refits and evaluations
            are always logged).
        eval_every: env steps between deterministic evaluations (0 disables).
        eval_episodes: episodes per evaluation.
        checkpoint_every: env steps between checkpoints (0: only at the end).
        keep_checkpoints: how many checkpoints to keep.
        replay_capacity: real replay buffer size.
        num_threads: torch intra-op threads (1 is the safe default on 2 cores).
        sac: the learner.
        model_kind: which model to build when none is passed in: ``"ensemble"`` (``ensemble`` config; one
            member is the single-model setting) or ``"losse"`` (``losse`` config; use with ``model_training="online"``).
        ensemble: the ensemble's config.
        losse: the Losse-FTL model's config.
        fit: model fitting (epochs cap, holdout, patience).
    """

    env_id: Annotated[str, tyro.conf.arg(name="env")] = "InvertedPendulum-v5"
    total_steps: int = 5000
    seed: int = 0
    use_model: bool = True
    model_training: Literal["fit", "online"] = "fit"
    model_kind: Literal["ensemble", "losse"] = "ensemble"
    init_random_steps: int = 500
    epoch_length: int = 250
    model_train_every: int = 250
    rollouts_per_step: int = 400
    rollout: RolloutSchedule = RolloutSchedule(min_epoch=1, max_epoch=1, min_length=1, max_length=1)
    model_retain_refits: int = 4
    utd: int = 10
    real_ratio: float = 0.05
    policy_start_steps: int | None = None
    log_every: int = 250
    eval_every: int = 1000
    eval_episodes: int = 5
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    replay_capacity: int = 1_000_000
    num_threads: Annotated[int, tyro.conf.arg(aliases=("--threads",))] = 1
    sac: SACConfig = field(default_factory=SACConfig)
    ensemble: EnsembleConfig = field(default_factory=lambda: EnsembleConfig(full_info=False))
    losse: LosseConfig = field(default_factory=LosseConfig)
    fit: FitConfig = field(default_factory=lambda: FitConfig(max_epochs=20, max_time_s=60.0))

    def __post_init__(self) -> None:
        if self.use_model and self.model_kind == "losse" and self.model_training != "online":
            raise ValueError(
                "DynaConfig: model_kind='losse' is a single-pass (follow-the-leader) model; it needs "
                "model_training='online' (model_training='fit' would feed it every transition once per epoch)"
            )


@dataclass(frozen=True)
class MBPOEnvConfig:
    """MBPO's released per-env values (jannerm/mbpo ``examples/config/<env>/0.py``, key ``params['kwargs']``;
    ``n_epochs`` from ``examples/development/base.py`` ``NUM_EPOCHS_PER_DOMAIN``)."""

    target_entropy: float | None  # None: -|A|
    rollout: RolloutSchedule
    utd: int
    epoch_length: int = 1000
    init_random_steps: int = 5000
    model_retain_epochs: int = 1
    model_train_every: int = 250
    n_epochs: int = 1000
    model_hidden: int = 200


MBPO_ENVS: dict[str, MBPOEnvConfig] = {
    "Hopper-v5": MBPOEnvConfig(-1.0, RolloutSchedule(20, 150, 1, 15), utd=20, n_epochs=1000),
    "HalfCheetah-v5": MBPOEnvConfig(-3.0, RolloutSchedule(20, 150, 1, 1), utd=40, n_epochs=3000),
    "Walker2d-v5": MBPOEnvConfig(-3.0, RolloutSchedule(20, 150, 1, 1), utd=20, n_epochs=3000),
    "Ant-v5": MBPOEnvConfig(-4.0, RolloutSchedule(20, 100, 1, 25), utd=20, n_epochs=1000),
    "Humanoid-v5": MBPOEnvConfig(
        -2.0, RolloutSchedule(20, 300, 1, 25), utd=20, model_retain_epochs=5, model_train_every=1000, model_hidden=400
    ),
    "InvertedPendulum-v5": MBPOEnvConfig(
        -0.05, RolloutSchedule(1, 15, 1, 1), utd=10, epoch_length=250, init_random_steps=500, n_epochs=80
    ),
    "InvertedDoublePendulum-v5": MBPOEnvConfig(
        -0.5, RolloutSchedule(1, 15, 1, 1), utd=20, epoch_length=250, init_random_steps=500, n_epochs=80
    ),
}
"""Per-env MBPO configs (values and sources: ``docs/presets.md``). Envs MBPO did not release a config for use
:data:`MBPO_DEFAULT_ENV` (ours)."""

MBPO_DEFAULT_ENV = MBPOEnvConfig(target_entropy=None, rollout=RolloutSchedule(20, 100, 1, 1), utd=20)
"""Ours, for envs without a released config: MBPO's constructor defaults for the schedule, UTD 20, retain 1
epoch, target entropy ``-|A|``."""


def mbpo_env(env_id: str) -> MBPOEnvConfig:
    """The released per-env MBPO values for ``env_id`` (or :data:`MBPO_DEFAULT_ENV`)."""
    return MBPO_ENVS.get(env_id, MBPO_DEFAULT_ENV)


def mbpo_preset(env_id: str, **overrides: Any) -> DynaConfig:
    """MBPO as released (Janner et al. 2019, jannerm/mbpo) for ``env_id``: the env's target entropy, rollout
    schedule, UTD, epoch length, random warm-up, model retained for ``model_retain_epochs`` epochs, run length
    ``n_epochs x epoch_length``; 100k rollouts per refit (400 per env step at a refit every 250), real ratio 0.05,
    7 members / 5 elites of 4 x 200 (Humanoid 400), SAC 256 x 256 at lr 3e-4, batch 256. See
    ``docs/presets.md`` for each value's source."""
    env = mbpo_env(env_id)
    refits_per_epoch = max(1, env.epoch_length // env.model_train_every)
    base = DynaConfig(
        env_id=env_id,
        total_steps=env.n_epochs * env.epoch_length,
        init_random_steps=env.init_random_steps,
        epoch_length=env.epoch_length,
        model_train_every=env.model_train_every,
        rollouts_per_step=100_000 // env.model_train_every,  # rollout_batch_size 100e3 per refit
        rollout=env.rollout,
        model_retain_refits=env.model_retain_epochs * refits_per_epoch,
        utd=env.utd,
        real_ratio=0.05,
        eval_every=5 * env.epoch_length,
        sac=SACConfig(
            hidden=256, depth=2, num_critics=2, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, gamma=0.99, tau=5e-3,
            batch_size=256, log_std_min=-20.0, log_std_max=2.0,
            target_entropy=env.target_entropy,
        ),
        ensemble=EnsembleConfig(num_members=7, num_elites=5, hidden=env.model_hidden, depth=4, full_info=False),
        fit=FitConfig(max_epochs=None, max_time_s=None),
    )
    return replace(base, **overrides)


def cpu_preset(env_id: str, **overrides: Any) -> DynaConfig:
    """MBPO's per-env config (:func:`mbpo_preset`: networks, losses, optimisers, target entropy, schedule,
    retention) on a CPU budget, ours: 25k env steps (InvertedPendulum: 5k), a quarter of MBPO's rollouts
    (100 per env step instead of 400), at most 10 SAC updates per env step, model fits capped at 15 epochs / 30 s, warm-up 1000 steps
    (InvertedPendulum keeps MBPO's 500)."""
    env = mbpo_env(env_id)
    base = mbpo_preset(
        env_id,
        total_steps=5000 if env_id == "InvertedPendulum-v5" else 25_000,
        init_random_steps=min(env.init_random_steps, 1000),
        rollouts_per_step=25_000 // env.model_train_every,
        utd=min(env.utd, 10),
        eval_every=1000 if env_id == "InvertedPendulum-v5" else 5000,
        fit=FitConfig(max_epochs=15, max_time_s=30.0),
    )
    return replace(base, **overrides)


def quick_preset(env_id: str, **overrides: Any) -> DynaConfig:
    """Smoke-test sizes (ours): :func:`cpu_preset` with 600 env steps, 200 random, small nets and fits, an
    evaluation and a checkpoint every 200 steps. Seconds per run; not for results."""
    base = cpu_preset(
        env_id, total_steps=600, init_random_steps=200, rollouts_per_step=20, utd=2, log_every=100,
        eval_every=200, eval_episodes=2, checkpoint_every=200,
        sac=replace(cpu_preset(env_id).sac, hidden=64),
        ensemble=EnsembleConfig(num_members=3, num_elites=2, hidden=64, depth=2, full_info=False),
        fit=FitConfig(max_epochs=3, max_time_s=10.0),
    )
    return replace(base, **overrides)


SAC_PAPER = SACConfig(
    hidden=256, depth=2, num_critics=2, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, gamma=0.99, tau=5e-3,
    batch_size=256, target_entropy=None,
)
"""SAC's hyperparameters (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905,
Table 1: Adam 3e-4, 2 x 256 ReLU, batch 256, gamma 0.99, tau 0.005, target entropy -|A|, one gradient step per
env step, replay 1e6)."""


def sac_preset(env_id: str, preset: Literal["paper", "cpu", "quick"] = "cpu", **overrides: Any) -> DynaConfig:
    """Model-free SAC in the Dyna loop (``use_model=False``): :data:`SAC_PAPER` with one update per env step and
    1000 uniform-random steps first (ours; SB3 uses 100). ``paper``: 1M env steps (the paper's MuJoCo runs);
    ``cpu``: the Dyna cpu preset's run length (25k steps, InvertedPendulum 5k); ``quick``: 1000 steps, 200 of
    them random."""
    cpu = cpu_preset(env_id)
    steps = {"paper": 1_000_000, "cpu": cpu.total_steps, "quick": 1000}[preset]
    every = {"paper": 5000, "cpu": cpu.eval_every, "quick": 500}[preset]
    base = replace(
        cpu, use_model=False, total_steps=steps, utd=1,
        init_random_steps=200 if preset == "quick" else min(cpu.init_random_steps, 1000),
        eval_every=every, checkpoint_every=cpu.checkpoint_every if preset == "cpu" else every, sac=SAC_PAPER,
        eval_episodes=2 if preset == "quick" else cpu.eval_episodes,
    )
    return replace(base, **overrides)


def dyna_preset(env_id: str, preset: Literal["paper", "cpu", "quick"] = "cpu", **overrides: Any) -> DynaConfig:
    """The Dyna config for ``--preset``: ``paper`` = :func:`mbpo_preset`, ``cpu`` = :func:`cpu_preset`,
    ``quick`` = :func:`quick_preset`."""
    make = {"paper": mbpo_preset, "cpu": cpu_preset, "quick": quick_preset}[preset]
    return make(env_id, **overrides)


class DynaAgent:
    """MBPO-style Dyna over any ``WorldModel`` (or model-free SAC with ``use_model=False``).

    Args:
        config: the run's configuration.
        model: the world model; ``None`` builds a ``ProbabilisticEnsemble`` from ``config.ensemble``.
        run_dir: where checkpoints, CSV, TensorBoard events go (``None``: nothing is written).
        on_model_refit: optional hook called after each refit with ``(agent, step)``; returns extra metrics
            (e.g. the Lipschitz agent's critic-smoothness diagnostics).
    """

    def __init__(
        self,
        config: DynaConfig,
        *,
        model: WorldModel | None = None,
        run_dir: str | Path | None = None,
        on_model_refit: Callable[[DynaAgent, int], Metrics] | None = None,
    ) -> None:
        set_threads(config.num_threads)
        self.config = config
        self.spec = get_spec(config.env_id)
        if config.use_model:
            require_term_fn(self.spec, "Dyna")
        self.env = make_env(config.env_id)
        self.eval_env = make_env(config.env_id)
        obs_dim = self.spec.obs_dim
        act_space = self.env.action_space
        self.action_low = np.asarray(act_space.low, dtype=np.float32)  # type: ignore[attr-defined]
        self.action_high = np.asarray(act_space.high, dtype=np.float32)  # type: ignore[attr-defined]
        action_dim = int(self.action_low.shape[0])
        self.rng = np.random.default_rng(config.seed)
        self.torch_gen = torch.Generator().manual_seed(config.seed)
        self.sac = SAC(
            obs_dim,
            action_dim,
            self.action_low,
            self.action_high,
            config.sac,
            generator=torch.Generator().manual_seed(config.seed + 1),
        )
        self.model: WorldModel | None = None
        if config.use_model:
            if model is not None:
                require_world_model(model)  # names every missing protocol member of a user's model
                if is_single_pass(model) and config.model_training != "online":
                    raise ValueError(
                        f"DynaAgent: {type(model).__name__} is a single-pass model (single_pass=True); configure "
                        "model_training='online' so each real transition reaches its update() once"
                    )
                self.model = model
            elif config.model_kind == "losse":
                self.model = LosseModel(obs_dim, action_dim, config.losse, seed=config.seed + 2)
            else:
                self.model = ProbabilisticEnsemble(obs_dim, action_dim, config.ensemble, seed=config.seed + 2)
        self.real_buffer = ReplayBuffer(
            config.replay_capacity,
            obs_dim,
            action_dim,
            rng=np.random.default_rng([config.seed, 1]),
            device=self.sac.device,
        )
        self.model_buffer = RolloutBuffer(
            self._model_buffer_capacity(), obs_dim, action_dim, rng=np.random.default_rng([config.seed, 2]),
            device=self.sac.device,
        )
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_model_refit = on_model_refit
        schedule = OnlineSchedule(
            total_steps=config.total_steps,
            random_steps=config.init_random_steps,
            log_every=config.log_every,
            eval_every=config.eval_every,
            eval_episodes=config.eval_episodes,
            checkpoint_every=config.checkpoint_every,
        )
        save = self.save_to_run_dir if self.run_dir is not None else None
        self.env_loop = OnlineLoop(
            self, self.env, self.eval_env, schedule, seed=config.seed, rng=self.rng, reset_seed=config.seed, save=save
        )
        self.model_seen_steps = 0  # real steps the model has been trained on (online mode)
        self.model_time_s = 0.0
        self.rollout_time_s = 0.0
        self.policy_time_s = 0.0

    # -- sizes -------------------------------------------------------------------------------------------------
    def _model_buffer_capacity(self) -> int:
        c = self.config
        per_refit = (
            c.rollouts_per_step * c.model_train_every * max(c.rollout.max_length, c.rollout.min_length)
        )
        return max(1, per_refit * c.model_retain_refits) if c.use_model else 1

    @property
    def policy_start(self) -> int:
        c = self.config
        return c.init_random_steps if c.policy_start_steps is None else c.policy_start_steps

    # -- acting ------------------------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Env-unit action for one ``obs [D]`` or a batch ``[B, D]``."""
        return self.sac.act(obs, deterministic=deterministic)

    def update(self, batch: TransitionBatch) -> Metrics:
        """One SAC update on ``batch``."""
        return self.sac.update(batch)

    # -- the loop ----------------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Env steps taken so far."""
        return self.env_loop.step

    @property
    def obs(self) -> np.ndarray:
        """The training env's current observation."""
        return np.asarray(self.env_loop.obs)

    def observe(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool,
        truncated: bool,
    ) -> None:
        """Store one real transition (called by the loop)."""
        self.real_buffer.add(obs, action, reward, next_obs, terminated, truncated)

    def train(self, step: int) -> Metrics:
        """After env step ``step``: past ``policy_start``, refit the model and refill the model buffer every
        ``model_train_every`` steps, then ``utd`` SAC updates (called by the loop)."""
        c = self.config
        if step < self.policy_start:
            return {}
        refit = self.refit_and_rollout() if c.use_model and step % c.model_train_every == 0 else {}
        metrics = self.train_policy()  # pending on the learner's device until the loop logs it
        metrics.update(refit)
        metrics.update(
            {"time/model_s": self.model_time_s, "time/rollout_s": self.rollout_time_s, "time/policy_s": self.policy_time_s}
        )
        return metrics

    def refit_and_rollout(self) -> Metrics:
        """Refit the model on all real data, then refill the model buffer with fresh branched rollouts."""
        assert self.model is not None
        c = self.config
        t0 = time.perf_counter()
        metrics: Metrics = {}
        if c.model_training == "online":
            new = self.real_buffer.latest(self.step - self.model_seen_steps)
            fit_normalizer = getattr(self.model, "fit_normalizer", None)
            if self.model_seen_steps == 0 and callable(fit_normalizer):
                fit_normalizer(new)
            if self.model_seen_steps > 0:  # the new transitions, before the model learns them: truly held out
                metrics.update({f"model/holdout_{k}": v for k, v in self.model.evaluate(new).items()})
            metrics.update({f"model/{k}": v for k, v in self.model.update(new).items()})
        else:
            # A long refit saves its progress; a run killed inside it replays to this step on resume (same RNG
            # state, so the progress file matches) and continues the fit instead of starting it over.
            progress = self.run_dir / "checkpoints" / "refit_progress.pt" if self.run_dir is not None else None
            report = fit(self.model, self.real_buffer.to_dataset(), c.fit, rng=self.rng, checkpoint=progress)
            if progress is not None:
                progress.unlink(missing_ok=True)
            metrics.update(report.metrics("model/"))  # the offline agents' names (docs/metrics.md)
        self.model_seen_steps = self.step
        t1 = time.perf_counter()
        epoch = self.step // c.epoch_length
        horizon = c.rollout.length(epoch)
        start = self.real_buffer.sample(c.rollouts_per_step * c.model_train_every).obs
        _, stats = self.model_buffer.refill(
            self.model,
            self.sac.as_policy(deterministic=False),
            start,
            horizon,
            term_fn=self.spec.term_fn,
            generator=self.torch_gen,
        )
        t2 = time.perf_counter()
        self.model_time_s += t1 - t0
        self.rollout_time_s += t2 - t1
        metrics.update(stats.metrics("rollout/"))
        metrics.update(
            {
                "model/fit_time_s": t1 - t0,
                "rollout/horizon": float(horizon),
                "rollout/time_s": t2 - t1,
                "rollout/buffer_size": float(len(self.model_buffer)),
            }
        )
        if self.on_model_refit is not None:
            metrics.update(self.on_model_refit(self, self.step))
        return metrics

    def _sample_training_batch(self) -> TransitionBatch:
        c = self.config  # without a model the model buffer stays empty: real rows only
        return mixed_batch(self.real_buffer.sample, self.model_buffer, c.sac.batch_size, c.real_ratio)

    def train_policy(self) -> Metrics:
        metrics: Metrics = {}
        t0 = time.perf_counter()
        for _ in range(self.config.utd):
            metrics = self.sac.update(self._sample_training_batch())
        self.policy_time_s += time.perf_counter() - t0
        return prefixed(metrics, "train/")

    def evaluate(self, episodes: int | None = None, *, seed: int | None = None) -> Metrics:
        """Deterministic-policy returns over ``episodes`` (default: the config's) starting at env seed ``seed``
        (default: the loops' evaluation seed, :func:`mbrl.loops.eval_seed`)."""
        return self.env_loop.evaluate(episodes, seed=seed)

    def learn(self, logger: Logger | None = None) -> Metrics:
        """Run until ``config.total_steps`` env steps (:class:`mbrl.loops.OnlineLoop`); returns the last
        evaluation's metrics."""
        return self.env_loop.run(logger)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors, ints, floats, strings only)."""
        loop = {
            **self.env_loop.state(),
            "rng": rng_state(self.rng, self.torch_gen),
            "model_seen_steps": self.model_seen_steps,
            "times": torch.tensor(
                [self.model_time_s, self.rollout_time_s, self.policy_time_s], dtype=torch.float64
            ),
        }
        state: dict[str, Any] = {
            "sac": self.sac.state_dict(),
            "real_buffer": self.real_buffer.state_dict(),  # numpy arrays: mbrl.checkpoint stores them as tensors
            "model_buffer": self.model_buffer.state_dict(),
            "loop": loop,
        }
        if self.model is not None:
            state["model"] = dict(self.model.state_dict())
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.sac.load_state_dict(state["sac"])
        self.real_buffer.load_state_dict(state["real_buffer"])
        self.model_buffer.load_state_dict(state["model_buffer"])
        if self.model is not None:
            if "model" not in state:
                raise ValueError("checkpoint holds no world model but this run uses one")
            self.model.load_state_dict(state["model"])
        loop = state["loop"]
        self.env_loop.load_state(loop)
        restore_rng(loop["rng"], self.rng, self.torch_gen)
        self.model_seen_steps = int(loop["model_seen_steps"])
        times = loop["times"].tolist()
        self.model_time_s, self.rollout_time_s, self.policy_time_s = times

    def save(self, path: str | Path) -> None:
        from mbrl.checkpoint import save_checkpoint

        save_checkpoint(Path(path), config=asdict(self.config), state=self.state())

    def load(self, path: str | Path) -> None:
        self.load_state(load_checkpoint(Path(path)).state)

    def save_to_run_dir(self) -> Path:
        assert self.run_dir is not None
        return save_run_checkpoint(
            self.run_dir,
            self.step,
            config=asdict(self.config),
            state=self.state(),
            keep_last=self.config.keep_checkpoints,
        )

    def resume(self) -> bool:
        """Load the latest checkpoint of ``run_dir`` if there is one; returns whether one was loaded."""
        if self.run_dir is None:
            return False
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        self.load(path)
        return True
