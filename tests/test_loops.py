"""The loop layer (mbrl/loops.py): schedule, warm-up, the evaluation-seed rule, resume, on a real env."""

from __future__ import annotations

import csv
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mbrl.evaluation import evaluate_policy
from mbrl.logging import Logger
from mbrl.loops import EVAL_SEED_OFFSET, OfflineLoop, OfflineSchedule, OnlineLoop, OnlineSchedule, eval_seed
from mbrl.metrics import LazyMetrics
from mbrl.types import Metrics


class LinearAgent:
    """A fixed linear policy plus stochastic noise from its own generator; records what the loop asks of it."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng([seed, 7])
        self.observed: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.stochastic_calls = 0
        self.trained_at: list[int] = []

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        action = np.clip(-0.5 * np.asarray(obs, dtype=np.float32)[..., 1:2], -2.0, 2.0)
        if deterministic:
            return action
        self.stochastic_calls += 1
        return np.clip(action + self.rng.normal(0, 0.3, action.shape), -2.0, 2.0).astype(np.float32)

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool,
                truncated: bool) -> None:
        self.observed.append((np.asarray(obs).copy(), np.asarray(action).copy(), reward))

    def train(self, step: int) -> Metrics:
        self.trained_at.append(step)
        out: Metrics = {"train/step_seen": float(step), "time/fake_s": 0.0}
        if step % 70 == 0:
            out["model/refit_at"] = float(step)
        return out


def _loop(agent: LinearAgent, schedule: OnlineSchedule, saves: list[int] | None = None) -> OnlineLoop:
    loop: OnlineLoop

    def save() -> None:
        if saves is not None:
            saves.append(loop.step)

    loop = OnlineLoop(agent, gym.make("Pendulum-v1"), gym.make("Pendulum-v1"), schedule, seed=3, reset_seed=3,
                      rng=np.random.default_rng(11), save=save)
    return loop


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


def test_online_schedule_warm_up_and_metric_rows(tmp_path: Path) -> None:
    schedule = OnlineSchedule(total_steps=250, random_steps=30, log_every=50, eval_every=100, eval_episodes=2,
                              checkpoint_every=120)
    agent, saves = LinearAgent(), []
    loop = _loop(agent, schedule, saves)
    logger = Logger(tmp_path, total=250)
    final = loop.run(logger)
    logger.close()
    assert loop.step == 250 and agent.trained_at == list(range(1, 251))
    assert agent.stochastic_calls == 250 - 30  # the first 30 actions are the loop's uniform draws
    warm = np.random.default_rng(11).uniform(-2.0, 2.0, (30, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.stack([a for _, a, _ in agent.observed[:30]]), warm)
    assert saves == [120, 240, 250]
    rows = _rows(tmp_path)
    train_steps = sorted({int(r["step"]) for r in rows if r.get("train/step_seen")})
    assert train_steps == [50, 100, 150, 200, 250]  # per-update metrics only at log steps
    assert sorted({int(r["step"]) for r in rows if r.get("model/refit_at")}) == [70, 140, 210]  # events: when
    eval_steps = sorted({int(r["step"]) for r in rows if r.get("eval/return_mean")})
    assert eval_steps == [100, 200, 250]  # every eval_every, and the final policy
    assert {int(r["step"]) for r in rows if r.get("train/episode_return")} == {200}  # Pendulum: 200-step episodes
    expected = evaluate_policy(gym.make("Pendulum-v1"), lambda o: agent.act(o, deterministic=True), 2,
                               seed=3 + EVAL_SEED_OFFSET)
    assert final["eval/return_mean"] == pytest.approx(expected.return_mean, abs=0)
    assert eval_seed(3) == 3 + EVAL_SEED_OFFSET


def test_online_loop_resumes_mid_episode_exactly() -> None:
    schedule = OnlineSchedule(total_steps=180, random_steps=20, eval_episodes=0)
    straight_agent = LinearAgent()
    _loop(straight_agent, schedule).run()
    first_agent = LinearAgent()
    first = _loop(first_agent, schedule)
    first.run(until=77)  # mid-episode
    state = first.state()
    rng_state = first.rng.bit_generator.state
    agent_rng = first_agent.rng.bit_generator.state
    resumed_agent = LinearAgent()
    resumed_agent.rng.bit_generator.state = agent_rng
    resumed = _loop(resumed_agent, schedule)
    resumed.load_state(state)
    resumed.rng.bit_generator.state = rng_state
    resumed.run()
    joined = first_agent.observed + resumed_agent.observed
    assert len(joined) == len(straight_agent.observed) == 180
    for (o1, a1, r1), (o2, a2, r2) in zip(straight_agent.observed, joined):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(a1, a2)
        assert r1 == r2


class CountingLearner:
    def __init__(self) -> None:
        self.prepared = 0
        self.updates = 0
        self.evaluated_at: list[int] = []

    def prepare(self) -> Metrics:
        self.prepared += 1
        return {"model/fitted": 1.0}

    def train_step(self) -> Metrics:
        self.updates += 1
        return {"loss": float(self.updates), "rollout/size": 5.0}

    def evaluate(self) -> Metrics:
        self.evaluated_at.append(self.updates)
        return {"eval/return_mean": float(self.updates)}


def test_offline_loop_prepares_once_and_evaluates_the_final_policy(tmp_path: Path) -> None:
    learner, saves = CountingLearner(), []
    loop = OfflineLoop(learner, OfflineSchedule(updates=45, log_every=10, eval_every=20, checkpoint_every=25),
                       save=lambda: saves.append(loop.num_updates))
    logger = Logger(tmp_path, total=45)
    final = loop.run(logger)
    logger.close()
    assert learner.prepared == 1 and learner.updates == 45
    assert saves == [0, 25, 45]  # right after prepare, every checkpoint_every, at the end
    assert learner.evaluated_at == [20, 40, 45] and final == {"eval/return_mean": 45.0}
    rows = _rows(tmp_path)
    assert sorted(int(r["step"]) for r in rows if r.get("train/loss")) == [10, 20, 30, 40]
    assert all(r.get("rollout/size") for r in rows if r.get("train/loss"))  # namespaced keys keep their name
    again = OfflineLoop(learner, OfflineSchedule(updates=60, eval_every=0))
    again.load_state(loop.state())
    again.run()
    assert learner.prepared == 1 and learner.updates == 60  # a resumed loop does not prepare again
    assert learner.evaluated_at[-1] == 60


def test_online_loop_refuses_a_discrete_env() -> None:
    with pytest.raises(ValueError, match="Box action space"):
        OnlineLoop(LinearAgent(), gym.make("CartPole-v1"), None, OnlineSchedule(total_steps=5), seed=0, reset_seed=0,
                   rng=np.random.default_rng(0))


class LazyAgent(LinearAgent):
    """Returns per-update metrics as pending LazyMetrics (as SAC does), plus an event key every 7 steps."""

    def __init__(self) -> None:
        super().__init__()
        self.returned: list[tuple[int, LazyMetrics]] = []

    def train(self, step: int) -> Metrics:
        metrics = LazyMetrics(["loss", "q"], torch.tensor([float(step), 2.0 * step])).with_prefix("train/")
        self.returned.append((step, metrics))
        if step % 7 == 0:
            metrics["model/refit"] = 1.0  # a write: stays pending
        return metrics


def test_online_loop_reads_per_update_metrics_only_at_log_steps(tmp_path: Path) -> None:
    agent = LazyAgent()
    logger = Logger(tmp_path, total=25)
    _loop(agent, OnlineSchedule(total_steps=25, log_every=10, eval_episodes=0)).run(logger)
    logger.close()
    read = [step for step, m in agent.returned if m.materialised]
    assert read == [7, 10, 14, 20, 21]  # log steps, and steps whose event key was read (one sync each)
    rows = _rows(tmp_path)
    assert [(r["step"], r["train/loss"], r["train/q"]) for r in rows if r.get("train/loss")] == [
        ("10", "10.0", "20.0"), ("20", "20.0", "40.0")]
