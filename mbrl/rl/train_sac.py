"""Model-free SAC on a real gymnasium env: the reference loop (``mbrl train sac``, learning-parity benchmark).

The loop matches stable-baselines3's ``SAC.learn`` step for step so the two can be compared at equal settings:
uniform random actions for the first ``learning_starts`` env steps, then the stochastic policy; after every env
step past ``learning_starts``, ``utd`` gradient updates on uniform replay batches. ``terminated`` is stored as
such (stops bootstrapping), ``truncated`` (time limit) is not treated as terminal. Every ``eval_every`` env steps
(and at the end) the deterministic policy is evaluated on a separate env. The loop is :class:`mbrl.loops.OnlineLoop`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from mbrl.data import ReplayBuffer
from mbrl.gym_env import make_seeded
from mbrl.logging import Logger
from mbrl.loops import EVAL_SEED_OFFSET, OnlineLoop, OnlineSchedule
from mbrl.metrics import prefixed
from mbrl.rl.runtime import tune_allocator
from mbrl.rl.sac import SAC, SACConfig
from mbrl.types import Metrics
from mbrl.utils import set_threads

__all__ = ["EVAL_SEED_OFFSET", "ReplaySAC", "SACTrainConfig", "train_sac"]


@dataclass(frozen=True)
class SACTrainConfig:
    """Settings of :func:`train_sac`.

    Attributes:
        total_steps: env steps.
        learning_starts: env steps with uniform random actions before the first update (SB3's learning_starts).
        utd: gradient updates per env step after ``learning_starts`` (update-to-data ratio).
        replay_capacity: replay buffer size (capped at ``total_steps``).
        eval_every: env steps between deterministic evaluations (0: only at the end).
        eval_episodes: episodes per evaluation.
        log_every: env steps between ``train/`` metric rows.
        checkpoint: write ``run_dir/checkpoints/ckpt_<step>.pt`` (learner state) at the end when a run_dir is given.
        num_threads: torch intra-op threads (set once at the start).
        sac: the learner's hyperparameters.
    """

    total_steps: int = 20_000
    learning_starts: int = 1_000
    utd: int = 1
    replay_capacity: int = 1_000_000
    eval_every: int = 5_000
    eval_episodes: int = 10
    log_every: int = 1_000
    checkpoint: bool = True
    num_threads: int = 1
    sac: SACConfig = field(default_factory=SACConfig)

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.utd < 0 or self.learning_starts < 0 or self.eval_episodes < 1:
            raise ValueError(
                "SACTrainConfig: total_steps and eval_episodes must be >= 1, utd and learning_starts >= 0"
            )
        if self.eval_every < 0 or self.log_every < 1 or self.replay_capacity < 1:
            raise ValueError("SACTrainConfig: eval_every must be >= 0, log_every and replay_capacity >= 1")


def _box_bounds(env: gym.Env, env_id: str) -> tuple[np.ndarray, np.ndarray, int]:
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"train_sac: {env_id} needs a 1-D Box action space, got {space}")
    obs_space = env.observation_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"train_sac: {env_id} needs a 1-D Box observation space, got {obs_space}")
    return space.low.astype(np.float32), space.high.astype(np.float32), int(obs_space.shape[0])


class ReplaySAC:
    """SAC + a replay buffer as an :class:`mbrl.loops.OnlineAgent`: every transition is stored, and every env step
    past ``learning_starts`` does ``utd`` updates on uniform batches (SB3's ``SAC.learn``). ``train`` returns the
    last update's metrics under ``train/`` (pending until read)."""

    def __init__(self, sac: SAC, buffer: ReplayBuffer, *, learning_starts: int, utd: int = 1) -> None:
        self.sac, self.buffer, self.learning_starts, self.utd = sac, buffer, learning_starts, utd
        self.update_time = 0.0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.sac.act(obs, deterministic=deterministic)

    def observe(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool,
        truncated: bool,
    ) -> None:
        self.buffer.add(obs, action, reward, next_obs, terminated, truncated)

    def train(self, step: int) -> Metrics:
        if step <= self.learning_starts:
            return {}
        t0 = time.perf_counter()
        metrics: Metrics = {}
        for _ in range(self.utd):
            metrics = self.sac.update(self.buffer.sample(self.sac.config.batch_size))
        self.update_time += time.perf_counter() - t0
        return prefixed(metrics, "train/")


def train_sac(
    env_id: str,
    config: SACTrainConfig | None = None,
    *,
    seed: int,
    logger: Logger | None = None,
    run_dir: str | Path | None = None,
) -> tuple[SAC, Metrics]:
    """Train :class:`SAC` model-free on ``env_id``.

    Args:
        env_id: a gymnasium id with Box observation and action spaces.
        config: loop settings and the learner's hyperparameters.
        seed: seeds the env resets, the random warm-up actions, the replay sampling and the learner.
        logger: receives ``train/`` (every ``log_every`` steps and per episode), ``eval/`` and ``time/`` metrics
            at env-step x-values; if None and ``run_dir`` is given, a Logger on ``run_dir`` is made (and closed).
        run_dir: where the created Logger writes and the final checkpoint goes (optional).

    Returns:
        ``(agent, metrics)``: the trained learner and the final ``eval/return_mean``, ``eval/return_std``,
        ``time/total_s``, ``time/updates_per_s``, ``train/episodes``, ``train/updates``.
    """
    c = config if config is not None else SACTrainConfig()
    set_threads(c.num_threads)
    tune_allocator()
    env = make_seeded(env_id)
    eval_env = make_seeded(env_id)
    low, high, obs_dim = _box_bounds(env, env_id)
    action_dim = low.shape[0]
    rng = np.random.default_rng(seed)
    agent = SAC(obs_dim, action_dim, low, high, c.sac, generator=torch.Generator().manual_seed(seed))
    buffer = ReplayBuffer(
        min(c.replay_capacity, c.total_steps), obs_dim, action_dim, rng=np.random.default_rng([seed, 1]),
        device=agent.device,
    )
    own_logger = logger is None and run_dir is not None
    if own_logger:
        logger = Logger(run_dir, total=c.total_steps, desc=f"sac {env_id}")
    learner = ReplaySAC(agent, buffer, learning_starts=c.learning_starts, utd=c.utd)

    def save() -> None:
        from mbrl.checkpoint import save_run_checkpoint

        assert run_dir is not None
        save_run_checkpoint(
            run_dir, c.total_steps, config={"env_id": env_id, "seed": seed, "train": c},
            state={"sac": agent.state_dict()},
        )

    schedule = OnlineSchedule(
        total_steps=c.total_steps, random_steps=c.learning_starts, log_every=c.log_every, eval_every=c.eval_every,
        eval_episodes=c.eval_episodes,
    )
    start = time.perf_counter()
    try:
        loop = OnlineLoop(
            learner, env, eval_env, schedule, seed=seed, rng=rng, reset_seed=seed,
            save=save if run_dir is not None and c.checkpoint else None,
        )
        final = dict(loop.run(logger))
        total_s = time.perf_counter() - start
        final.update({
            "time/total_s": total_s,
            "time/updates_per_s": agent.num_updates / learner.update_time if learner.update_time > 0 else 0.0,
            "train/episodes": float(loop.episode),
            "train/updates": float(agent.num_updates),
        })
        if logger is not None:
            logger.log({k: v for k, v in final.items() if k.startswith("time/")}, c.total_steps)
    finally:
        env.close()
        eval_env.close()
        if own_logger and logger is not None:
            logger.close()
    return agent, final
