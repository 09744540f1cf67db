"""The training loops: step counting, the log/eval/checkpoint schedule, resume, and one evaluation-seed rule.

Two loops, split as stable-baselines3 splits ``OffPolicyAlgorithm.learn`` (the loop) from ``SAC.train`` (the
update), and as TD-MPC2 splits its trainer from its agent:

- :class:`OnlineLoop` steps a real env: uniform random actions for the first ``random_steps`` env steps, then
  the agent's stochastic policy; it stores each transition with the agent (``observe``), then lets the agent
  learn (``train(step)``: SAC updates, model refits, rollouts, whatever the agent does per env step). Dyna (with
  or without a model), ``train_sac`` and the dataset generator's behaviour run are this loop + SAC.
- :class:`OfflineLoop` counts gradient updates on a fixed dataset: the agent's one-off ``prepare()`` (e.g. fit
  a world model), then ``train_step()`` until ``updates``. RAVL, MOPO and BC are this loop.

Both evaluate the deterministic policy on a separate env every ``eval_every`` steps (and at the end when the
last step was not an evaluation), with episode ``i`` of a run with seed ``s`` reset with
``s + EVAL_SEED_OFFSET + i`` (:func:`eval_seed`), so every agent of seed ``s`` is scored on the same start
states, none of them a training reset. Both write a checkpoint every ``checkpoint_every`` steps and at the end
through a ``save`` callable the agent gives; their counters are part of the agent's checkpoint
(:meth:`OnlineLoop.state`, :meth:`OfflineLoop.state`), so a resumed run continues exactly.

Metric rows: the loop logs ``train/`` and ``time/`` metrics every ``log_every`` steps (per-update numbers:
the latest one stands for the interval); any other namespace an agent returns (``model/``, ``rollout/``) marks
an event (a refit) and is logged at the step it happened; ``eval/`` rows at evaluations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from mbrl.env_snapshot import env_snapshot, restore_env_snapshot
from mbrl.evaluation import evaluate_policy, normalized_score
from mbrl.logging import Logger
from mbrl.metrics import metric_names
from mbrl.types import Metrics

EVAL_SEED_OFFSET = 1_000_003
"""Evaluation episode ``i`` of a run with seed ``s`` resets with ``s + EVAL_SEED_OFFSET + i``."""


def eval_seed(run_seed: int) -> int:
    """The reset seed of a run's first evaluation episode (the one rule every loop uses)."""
    return run_seed + EVAL_SEED_OFFSET


def evaluate(
    env: gym.Env,
    act: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    *,
    seed: int,
    refs: tuple[float, float] | None = None,
) -> Metrics:
    """Returns of the policy ``act`` over ``episodes`` episodes reset from ``seed``: ``eval/return_mean``,
    ``eval/return_std``, ``eval/length_mean`` and, with reference scores ``refs = (random, expert)``,
    ``eval/normalized_score`` (D4RL's 100 * (return - random) / (expert - random))."""
    result = evaluate_policy(env, act, episodes, seed=seed)
    out = {f"eval/{k}": v for k, v in result.as_dict().items()}
    if refs is not None:
        out["eval/normalized_score"] = float(normalized_score(result.return_mean, *refs))
    return out


def _due(every: int, step: int) -> bool:
    return every > 0 and step % every == 0


def _periodic(key: str) -> bool:
    return key.startswith(("train/", "time/"))


# ---------------------------------------------------------------------------------------------------- online
class OnlineAgent(Protocol):
    """What :class:`OnlineLoop` needs from an agent."""

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Env-unit action for ``obs [D]``."""
        ...

    def observe(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool,
        truncated: bool,
    ) -> None:
        """Store one real transition."""
        ...

    def train(self, step: int) -> Metrics:
        """Learn after env step ``step`` (1-based); returns namespaced metrics (``train/``, ``model/``, ...)."""
        ...


@dataclass(frozen=True)
class OnlineSchedule:
    """When :class:`OnlineLoop` does what, in env steps.

    Attributes:
        total_steps: env steps of the run.
        random_steps: env steps with uniform random actions before the policy acts.
        log_every: steps between ``train/``/``time/`` rows.
        eval_every: steps between evaluations (0: only at the end).
        eval_episodes: episodes per evaluation (0: never evaluate).
        checkpoint_every: steps between checkpoints (0: only at the end).
    """

    total_steps: int
    random_steps: int = 0
    log_every: int = 1_000
    eval_every: int = 0
    eval_episodes: int = 10
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.log_every < 1:
            raise ValueError("OnlineSchedule: total_steps and log_every must be >= 1")
        if min(self.random_steps, self.eval_every, self.eval_episodes, self.checkpoint_every) < 0:
            raise ValueError("OnlineSchedule: random_steps, eval_every, eval_episodes, checkpoint_every must be >= 0")


class OnlineLoop:
    """The env-step loop of an online agent (see the module docstring).

    Args:
        agent: acts, stores transitions, learns (:class:`OnlineAgent`).
        env: the training env; reset here with ``seed``.
        eval_env: the evaluation env (``None``: no evaluation).
        schedule: the step counts.
        seed: the run's seed (the evaluation resets, :func:`eval_seed`).
        rng: draws the random warm-up actions (the agent's, so its stream stays where it was).
        reset_seed: the seed of the first training reset (``None``: unseeded, the env's own stream).
        save: writes the agent's checkpoint (``None``: nothing is written).
        refs: reference scores for ``eval/normalized_score``.
        step_offset: the log x-value of this loop's step 0 (a run made of several loops, e.g. one per task).
    """

    def __init__(
        self,
        agent: OnlineAgent,
        env: gym.Env,
        eval_env: gym.Env | None,
        schedule: OnlineSchedule,
        *,
        seed: int,
        rng: np.random.Generator,
        reset_seed: int | None,
        save: Callable[[], Any] | None = None,
        refs: tuple[float, float] | None = None,
        step_offset: int = 0,
    ) -> None:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"OnlineLoop: needs a Box action space, got {space}")
        self.agent, self.env, self.eval_env, self.schedule = agent, env, eval_env, schedule
        self.seed, self.rng, self.save, self.refs, self.step_offset = seed, rng, save, refs, step_offset
        self.low = np.asarray(space.low, dtype=np.float32)
        self.high = np.asarray(space.high, dtype=np.float32)
        self.step = 0
        self.episode = 0
        self.episode_return = 0.0
        self.episode_length = 0
        self.obs, _ = env.reset(seed=reset_seed)

    def evaluate(self, episodes: int | None = None, *, seed: int | None = None) -> Metrics:
        """The deterministic policy over ``episodes`` (default: the schedule's) from :func:`eval_seed`."""
        if self.eval_env is None:
            raise ValueError("OnlineLoop: no evaluation env")
        return evaluate(
            self.eval_env,
            lambda o: self.agent.act(o, deterministic=True),
            episodes or self.schedule.eval_episodes,
            seed=eval_seed(self.seed) if seed is None else seed,
            refs=self.refs,
        )

    def env_step(self) -> Metrics:
        """One real env step (random during warm-up, else the stochastic policy); episode metrics at its end."""
        if self.step < self.schedule.random_steps:
            action = self.rng.uniform(self.low, self.high).astype(np.float32)
        else:
            action = np.asarray(self.agent.act(self.obs, deterministic=False), dtype=np.float32)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.agent.observe(self.obs, action, float(reward), next_obs, bool(terminated), bool(truncated))
        self.episode_return += float(reward)
        self.episode_length += 1
        self.step += 1
        if not (terminated or truncated):
            self.obs = next_obs
            return {}
        metrics = {"train/episode_return": self.episode_return, "train/episode_length": float(self.episode_length)}
        self.episode += 1
        self.episode_return, self.episode_length = 0.0, 0
        self.obs, _ = self.env.reset()
        return metrics

    def run(self, logger: Logger | None = None, *, until: int | None = None) -> Metrics:
        """Step to ``schedule.total_steps`` (or to ``until``); returns the last evaluation's metrics. The final
        step (of the run, not of ``until``) is always evaluated and checkpointed."""
        s = self.schedule
        stop = s.total_steps if until is None else min(until, s.total_steps)
        last_eval: Metrics = {}
        last_eval_at = -1
        t_start, start_step = time.perf_counter(), self.step
        while self.step < stop:
            row = self.env_step()
            log_due = self.step % s.log_every == 0
            learned = self.agent.train(self.step)
            if log_due:  # per-update metrics are read (a device sync) only here
                row.update(learned)
                elapsed = time.perf_counter() - t_start
                row["time/env_steps_per_s"] = (self.step - start_step) / max(elapsed, 1e-9)
            else:
                row.update({k: learned[k] for k in metric_names(learned) if not _periodic(k)})
            if self.eval_env is not None and s.eval_episodes and _due(s.eval_every, self.step):
                last_eval, last_eval_at = self.evaluate(), self.step
                row.update(last_eval)
            if logger is not None:
                logger.advance(1)
                if row:
                    logger.log(row, self.step_offset + self.step)
            if self.save is not None and _due(s.checkpoint_every, self.step):
                self.save()
        if self.step < s.total_steps:
            return last_eval
        if self.eval_env is not None and s.eval_episodes and last_eval_at != self.step:
            last_eval = self.evaluate()
            if logger is not None:
                logger.log(last_eval, self.step_offset + self.step)
        if self.save is not None:
            self.save()
        return last_eval

    def state(self) -> dict[str, Any]:
        """The loop's part of a checkpoint: counters, the current observation and the env's state."""
        return {
            "step": self.step,
            "episode": self.episode,
            "episode_return": self.episode_return,
            "episode_length": self.episode_length,
            "obs": torch.from_numpy(np.asarray(self.obs, dtype=np.float32)),
            "env": json.dumps(env_snapshot(self.env)),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.episode = int(state.get("episode", 0))
        self.episode_return = float(state.get("episode_return", 0.0))
        self.episode_length = int(state.get("episode_length", 0))
        obs = state["obs"]
        self.obs = (obs.numpy() if isinstance(obs, torch.Tensor) else np.asarray(obs, dtype=np.float32)).copy()
        restore_env_snapshot(self.env, json.loads(state["env"]))


# --------------------------------------------------------------------------------------------------- offline
class OfflineLearner(Protocol):
    """What :class:`OfflineLoop` needs from an agent."""

    def prepare(self) -> Metrics:
        """One-off work before the first update (e.g. fit a world model); returns namespaced metrics."""
        ...

    def train_step(self) -> Metrics:
        """One gradient update; returns metrics (plain keys go under ``train/``)."""
        ...

    def evaluate(self) -> Metrics:
        """The deterministic policy's ``eval/`` metrics."""
        ...


@dataclass(frozen=True)
class OfflineSchedule:
    """When :class:`OfflineLoop` does what, in gradient updates (``eval_every``/``checkpoint_every`` 0: only at
    the end)."""

    updates: int
    log_every: int = 1_000
    eval_every: int = 5_000
    checkpoint_every: int = 10_000


class OfflineLoop:
    """The update loop of an offline agent (see the module docstring).

    Args:
        learner: prepares, updates, evaluates (:class:`OfflineLearner`).
        schedule: the update counts.
        save: writes the agent's checkpoint (``None``: nothing is written); called once right after
            ``prepare`` too, so a resumed run does not redo it.
    """

    def __init__(
        self, learner: OfflineLearner, schedule: OfflineSchedule, *, save: Callable[[], Any] | None = None
    ) -> None:
        self.learner, self.schedule, self.save = learner, schedule, save
        self.num_updates = 0
        self.prepared = False
        self.train_time_s = 0.0

    def run(self, logger: Logger | None = None) -> Metrics:
        """Prepare (once), update to ``schedule.updates``; returns the final evaluation's metrics."""
        s = self.schedule
        if not self.prepared:
            metrics = self.learner.prepare()
            self.prepared = True
            if logger is not None and metrics:
                logger.log(metrics, self.num_updates)
            if self.save is not None:
                self.save()
        last_eval: Metrics = {}
        last_eval_at = -1
        while self.num_updates < s.updates:
            t0 = time.perf_counter()
            metrics = self.learner.train_step()
            self.train_time_s += time.perf_counter() - t0
            self.num_updates += 1
            row: Metrics = {}
            if self.num_updates % s.log_every == 0:
                # Keys with a namespace (``rollout/...``) keep it; the learner's plain keys go under ``train/``.
                row.update({k if "/" in k else f"train/{k}": v for k, v in metrics.items()})
                row["time/updates_per_s"] = self.num_updates / max(self.train_time_s, 1e-9)
            if _due(s.eval_every, self.num_updates):
                last_eval, last_eval_at = self.learner.evaluate(), self.num_updates
                row.update(last_eval)
            if logger is not None:
                logger.advance(1)
                if row:
                    logger.log(row, self.num_updates)
            if self.save is not None and _due(s.checkpoint_every, self.num_updates):
                self.save()
        if last_eval_at != self.num_updates:  # the final policy is always evaluated
            last_eval = self.learner.evaluate()
            if logger is not None:
                logger.log(last_eval, self.num_updates)
        if self.save is not None:
            self.save()
        return last_eval

    def state(self) -> dict[str, Any]:
        """The loop's part of a checkpoint (counters)."""
        return {"num_updates": self.num_updates, "prepared": self.prepared, "train_time_s": self.train_time_s}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self.prepared = bool(state["prepared"])
        self.train_time_s = float(state["train_time_s"])
