"""HyperCRL: continual model-based RL with a task-conditioned hypernetwork, and its baselines, in one loop.

Follows Huang et al., "Continual Model-Based Reinforcement Learning with Hypernetworks" (ICRA 2021). The agent
meets a sequence of tasks (``mbrl.envs.task_families``) whose dynamics differ; for each task it

1. acts with uniformly random actions for ``random_steps`` env steps, then with MPC (MPPI or CEM over the
   current task's model and the family's known reward/termination functions) for the rest of the task's
   ``steps_per_task``;
2. trains the dynamics model every ``train_every`` env steps (first at the end of the random phase) with
   ``train_iters`` gradient steps on batches of the data its method may use;
3. after the task, evaluates EVERY task seen so far: the return of the planner using that task's model in that
   task's env, and the one-step model error on that task's held-out transitions.

The ``method`` field picks what is trained on what (same loop, same planner, same budget):

- ``"hypercrl"``: :class:`~mbrl.models.hypernet.HyperNetworkModel`; one task embedding per task; trained on
  the current task's most recent ``recent_capacity`` transitions only, with von Oswald's output regulariser
  keeping earlier tasks' generated weights; each task is planned/evaluated with its own weights.
- ``"finetune"``: one :class:`~mbrl.models.multihead.MLPDynamicsModel` trained on each new task's recent data
  only (catastrophic forgetting expected).
- ``"coreset"``: the same MLP; each gradient step adds to the current task's batch loss one replayed batch
  from the kept random subset (``coreset_size`` transitions) of every earlier task, each weighted like the
  current batch (HyperCRL's coreset baseline).
- ``"multitask"``: the same MLP; each step replays one batch from ALL data of every earlier task (full
  replay). The upper reference.

As in HyperCRL's code, the baselines' MLP has a shared trunk and one output layer per task (``mlp.multi_head``,
default), the task id choosing the head; with ``multi_head=False`` it is one plain MLP without any task
information (then no single model can represent, e.g., a reversed actuator next to a normal one).

Outputs: :class:`ContinualResult` with the return matrix ``R[i, j]`` (task ``i`` evaluated after training task
``j``; NaN for ``i > j``), the model-error matrix of the same layout, each task's random-policy return, and
forgetting. Because Pendulum returns are negative, "final return ÷ return right after learning" is computed
on returns shifted so that the random policy scores 0: ``retention_i = (R[i, T-1] - rand_i) / (R[i, i] -
rand_i)`` (1: nothing forgotten; 0: back to random); the raw ratio ``R[i, T-1] / R[i, i]`` is also reported
(for negative returns it is > 1 when the task got worse).

Held-out data: every ``holdout_every``-th transition of a task is kept aside for measuring its model error and
is never trained on, by any method. Randomness: one seed drives the numpy Generator (random actions, batch
sampling, coreset choice), the torch Generators (model init, planner sampling) and the env seeds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from mbrl.checkpoint import load_checkpoint, save_checkpoint
from mbrl.envs.task_families import TaskFamily, get_family, make_task_env
from mbrl.logging import Logger
from mbrl.loops import OnlineLoop, OnlineSchedule
from mbrl.models.hypernet import HyperNetConfig, HyperNetworkModel
from mbrl.models.multihead import MLPDynamicsConfig, MLPDynamicsModel
from mbrl.models.protocol import WorldModel
from mbrl.planning import CEMConfig, CEMPlanner, MPCPlanner, MPPIConfig, MPPIPlanner
from mbrl.types import Metrics, TransitionBatch

Method = Literal["hypercrl", "finetune", "coreset", "multitask"]
METHODS: tuple[str, ...] = ("hypercrl", "finetune", "coreset", "multitask")


@dataclass(frozen=True)
class HyperCRLConfig:
    """Settings of the continual loop (defaults: a CPU-sized version of HyperCRL's Pendulum setting).

    HyperCRL's Pendulum run used 10k env steps per task, 400 random steps, training every 400 steps with 1000
    gradient steps (batch 20) and MPPI (horizon 15, 100 samples, 10 iterations). The defaults here keep the
    models, planner horizon and population and shrink the step budget ~10x so that four methods x three seeds
    run well within half an hour on one core (see ``scripts/hypercrl_experiment.py``). With ~10x fewer gradient
    steps, the hypernetwork's Adam learning rate is 1e-3 here instead of the paper's ``lr_hyper`` = 1e-4 (with
    1e-4 the generated models are ~2x less accurate at this budget); the baselines use the paper's 1e-3.

    Attributes:
        method: ``"hypercrl"``, ``"finetune"``, ``"coreset"`` or ``"multitask"`` (see the module doc).
        family: task family name (``mbrl.envs.task_families.FAMILIES``).
        num_tasks: how many tasks of the family's sequence to learn (``None``: all).
        seed: master seed.
        steps_per_task: env steps collected per task (random + planned).
        random_steps: leading env steps per task with uniformly random actions.
        train_every: env steps between training sessions after the random phase.
        train_iters: gradient steps per training session.
        batch_size: transitions per gradient step.
        recent_capacity: the current task's most recent transitions kept for training (HyperCRL, finetune,
            coreset's current part).
        coreset_size: transitions kept per finished task for the ``"coreset"`` method (HyperCRL Pendulum
            ``M`` = 50).
        holdout_every: every k-th transition of a task is held out for the model-error measurement.
        eval_episodes: evaluation episodes per (task, checkpoint).
        eval_every: also evaluate the current task every this many of its env steps while it is learned, logged
            as ``eval/return_task<i>`` (ours; 0 = only after each task, as the experiment runs it). Evaluations
            plan with their own generator, so they do not change training.
        eval_seed: base seed of the evaluation episodes (episode ``e`` of task ``i`` uses ``eval_seed + 1000
            i + e``; identical for every method and after every task).
        planner: ``"mppi"`` or ``"cem"``.
        mppi: MPPI settings (HyperCRL Pendulum: horizon 15, population 100; here 5 iterations instead of 10 and
            temperature 0.5).
        cem: CEM settings.
        hypernet: :class:`HyperNetConfig` for ``"hypercrl"`` (paper defaults except ``lr`` = 1e-3, see above).
        mlp: :class:`MLPDynamicsConfig` for the baselines.
        device: torch device.
    """

    method: Method = "hypercrl"
    family: str = "pendulum"
    num_tasks: int | None = None
    seed: int = 0
    steps_per_task: int = 1000
    random_steps: int = 200
    train_every: int = 200
    train_iters: int = 400
    batch_size: int = 32
    recent_capacity: int = 1000
    coreset_size: int = 50
    holdout_every: int = 5
    eval_episodes: int = 1
    eval_every: int = 0
    eval_seed: int = 100_000
    planner: Literal["mppi", "cem"] = "mppi"
    mppi: MPPIConfig = field(
        default_factory=lambda: MPPIConfig(horizon=15, population=100, iterations=5, temperature=0.5)
    )
    cem: CEMConfig = field(
        default_factory=lambda: CEMConfig(horizon=15, population=100, elites=10, iterations=5)
    )
    hypernet: HyperNetConfig = field(default_factory=lambda: HyperNetConfig(lr=1e-3))
    mlp: MLPDynamicsConfig = field(default_factory=MLPDynamicsConfig)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"HyperCRLConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.planner not in ("mppi", "cem"):
            raise ValueError(f"HyperCRLConfig.planner must be 'mppi' or 'cem', got {self.planner!r}")
        if not 1 <= self.random_steps < self.steps_per_task:
            raise ValueError(
                f"HyperCRLConfig: need 1 <= random_steps < steps_per_task, got {self.random_steps}, {self.steps_per_task}"
            )
        for name in (
            "train_every",
            "train_iters",
            "batch_size",
            "recent_capacity",
            "holdout_every",
            "eval_episodes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"HyperCRLConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.holdout_every < 2:
            raise ValueError(
                f"HyperCRLConfig.holdout_every must be >= 2 (some data must be trained on), got {self.holdout_every}"
            )
        if self.coreset_size < 0:
            raise ValueError(f"HyperCRLConfig.coreset_size must be >= 0, got {self.coreset_size}")
        if self.num_tasks is not None and self.num_tasks < 1:
            raise ValueError(f"HyperCRLConfig.num_tasks must be >= 1, got {self.num_tasks}")


@dataclass
class ContinualResult:
    """What one continual run measured.

    Attributes:
        method: the method.
        seed: the run's seed.
        task_names: names of the tasks, in order.
        returns: ``[T, T]`` mean eval return of task ``i`` after training task ``j`` (NaN for ``i > j``).
        model_mse: ``[T, T]`` one-step next_obs MSE on task ``i``'s held-out data after task ``j``.
        random_returns: ``[T]`` mean return of uniformly random actions on each task (same eval seeds).
        wall_time: seconds the run took.
    """

    method: str
    seed: int
    task_names: list[str]
    returns: np.ndarray
    model_mse: np.ndarray
    random_returns: np.ndarray
    wall_time: float = 0.0

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def retention(self) -> np.ndarray:
        """``[T]`` ``(R[i, T-1] - rand_i) / (R[i, i] - rand_i)``: 1 = nothing forgotten, 0 = random policy."""
        t = self.num_tasks
        final = self.returns[:, t - 1]
        learned = np.diag(self.returns)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (final - self.random_returns) / (learned - self.random_returns)

    def forgetting_ratio(self) -> np.ndarray:
        """``[T]`` raw ``R[i, T-1] / R[i, i]`` (for negative returns > 1 means worse)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.returns[:, -1] / np.diag(self.returns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> ``None``)."""

        def clean(a: np.ndarray) -> Any:
            return (
                [clean(x) for x in a] if a.ndim > 0 else (None if not math.isfinite(float(a)) else float(a))
            )

        return {
            "method": self.method,
            "seed": self.seed,
            "task_names": list(self.task_names),
            "returns": clean(np.asarray(self.returns)),
            "model_mse": clean(np.asarray(self.model_mse)),
            "random_returns": clean(np.asarray(self.random_returns)),
            "retention": clean(self.retention()),
            "forgetting_ratio": clean(self.forgetting_ratio()),
            "wall_time": self.wall_time,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ContinualResult:
        def arr(x: Any) -> np.ndarray:
            return np.array(x, dtype=float)  # None -> nan

        return ContinualResult(
            method=str(data["method"]),
            seed=int(data["seed"]),
            task_names=list(data["task_names"]),
            returns=arr(data["returns"]),
            model_mse=arr(data["model_mse"]),
            random_returns=arr(data["random_returns"]),
            wall_time=float(data.get("wall_time", 0.0)),
        )


class _TaskData:
    """Transitions of one task: a training stream (numpy, append-only) and a held-out set."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.train: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, float]] = []
        self.holdout: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, float]] = []
        self.coreset: TransitionBatch | None = None

    @staticmethod
    def _batch(rows: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, float]]) -> TransitionBatch:
        obs, action, reward, next_obs, terminated = zip(*rows)
        return TransitionBatch.from_numpy(
            np.stack(obs), np.stack(action), np.asarray(reward), np.stack(next_obs), np.asarray(terminated)
        )

    def recent(self, capacity: int) -> TransitionBatch:
        return self._batch(self.train[-capacity:])

    def all_train(self) -> TransitionBatch:
        return self._batch(self.train)

    def holdout_batch(self) -> TransitionBatch:
        return self._batch(self.holdout)


class HyperCRLAgent:
    """The continual loop for one (method, seed). ``learn()`` runs every task and returns summary metrics.

    Args:
        config: :class:`HyperCRLConfig`.

    Attributes:
        result: the :class:`ContinualResult` after :meth:`learn`.
        model: the dynamics model (hypernetwork or MLP).
        current_task: index of the task being learned.
    """

    def __init__(self, config: HyperCRLConfig) -> None:
        self.config = config
        self.family: TaskFamily = get_family(config.family)
        self.num_tasks = len(self.family.sequence) if config.num_tasks is None else config.num_tasks
        if self.num_tasks > len(self.family.sequence):
            raise ValueError(
                f"HyperCRLConfig.num_tasks={self.num_tasks} but family {config.family!r} has "
                f"{len(self.family.sequence)} tasks"
            )
        self.task_names = self.family.sequence.names[: self.num_tasks]
        self.device = torch.device(config.device)
        self.rng = np.random.default_rng(config.seed)
        self.torch_gen = torch.Generator().manual_seed(config.seed)
        obs_dim, action_dim = self.family.obs_dim, self.family.action_dim
        self.obs_dim, self.action_dim = obs_dim, action_dim
        model_gen = torch.Generator().manual_seed(config.seed + 1)
        self.model: HyperNetworkModel | MLPDynamicsModel
        if config.method == "hypercrl":
            self.model = HyperNetworkModel(
                obs_dim, action_dim, config.hypernet, generator=model_gen, device=self.device
            )
        else:
            self.model = MLPDynamicsModel(
                obs_dim, action_dim, config.mlp, generator=model_gen, device=self.device
            )
        probe = make_task_env(config.family, 0)
        space = probe.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"family {config.family!r}: MPC needs a Box action space, got {space}")
        self.action_low = np.asarray(space.low, dtype=np.float32)
        self.action_high = np.asarray(space.high, dtype=np.float32)
        probe.close()
        self.planner = self._make_planner(torch.Generator().manual_seed(config.seed + 2))
        self.data = [_TaskData(obs_dim, action_dim) for _ in range(self.num_tasks)]
        self.current_task = 0
        self._fitted = [False] * self.num_tasks
        self.env_steps = 0
        self.result: ContinualResult | None = None

    # -- pieces -----------------------------------------------------------------------------------------

    def _make_planner(self, generator: torch.Generator) -> MPCPlanner:
        cfg = self.config
        common: dict[str, Any] = {
            "reward_fn": self.family.reward_fn,
            "term_fn": self.family.term_fn,
            "generator": generator,
            "device": self.device,
        }
        if cfg.planner == "mppi":
            return MPPIPlanner(self.task_model(0), cfg.mppi, self.action_low, self.action_high, **common)
        return CEMPlanner(self.task_model(0), cfg.cem, self.action_low, self.action_high, **common)

    def task_model(self, task: int) -> WorldModel:
        """The WorldModel used to plan and evaluate ``task``: the model's view of that task."""
        return self.model.for_task(task)

    def _sample(self, data: TransitionBatch) -> TransitionBatch:
        n = len(data)
        return data.index(torch.as_tensor(self.rng.integers(0, n, size=min(self.config.batch_size, n))))

    def _replay_sources(self) -> list[tuple[int, TransitionBatch]]:
        """``(task, data)`` pairs a training step draws one batch from each of; the current task first."""
        cfg, t = self.config, self.current_task
        if cfg.method in ("hypercrl", "finetune"):
            return [(t, self.data[t].recent(cfg.recent_capacity))]
        if cfg.method == "coreset":
            sources = [(t, self.data[t].recent(cfg.recent_capacity))]
            return sources + [(j, d.coreset) for j, d in enumerate(self.data[:t]) if d.coreset is not None]
        return [(j, self.data[j].all_train()) for j in (t, *range(t))]

    def update(self, batch: TransitionBatch) -> Metrics:
        """One gradient step of the model on ``batch`` of the current task (no replay)."""
        return self.model.update(batch)

    def train_model(self) -> Metrics:
        """One training session: (fit normalisers on first use,) then ``train_iters`` gradient steps."""
        cfg, t = self.config, self.current_task
        sources = self._replay_sources()
        # HyperCRL: per-task normalisers, fitted on each task's first training data. The baselines' MLP: one
        # global normaliser, fitted on the first task's first data and then frozen (see mbrl.models.multihead).
        fit_key = t if cfg.method == "hypercrl" else 0
        if not self._fitted[fit_key]:
            self.model.fit_normalizer(sources[0][1])
            self._fitted[fit_key] = True
        sums: dict[str, float] = {}
        for _ in range(cfg.train_iters):
            if isinstance(self.model, MLPDynamicsModel) and len(sources) > 1:
                metrics = self.model.update_replay([(j, self._sample(d)) for j, d in sources])
            else:
                metrics = self.model.update(self._sample(sources[0][1]))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        return {k: v / cfg.train_iters for k, v in sums.items()}

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """MPC action for ``obs [D]`` on the current task (env units)."""
        return np.asarray(self.planner.plan(np.asarray(obs, dtype=np.float32)))

    def _episode_return(self, task: int, policy: Any, seed: int) -> float:
        return self._episode(task, policy, seed)[0]

    def _episode(self, task: int, policy: Any, seed: int) -> tuple[float, int]:
        """``(return, length)`` of one episode of ``task`` under ``policy`` from ``reset(seed=seed)``."""
        env = make_task_env(self.config.family, task)
        obs, _ = env.reset(seed=seed)
        total, length = 0.0, 0
        while True:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            length += 1
            if terminated or truncated:
                break
        env.close()
        return total, length

    def evaluate(self, episodes: int | None = None, *, seed: int | None = None) -> Metrics:
        """Plan on the current task's model for ``episodes`` episodes (default ``eval_episodes``), episode ``e``
        reset with ``seed + e`` (default: the task's evaluation seeds), with a planner of its own generator:
        ``eval/return_mean``, ``eval/return_std``, ``eval/length_mean``, ``eval/episodes`` (as the other agents)."""
        cfg, task = self.config, self.current_task
        count = cfg.eval_episodes if episodes is None else episodes
        first = cfg.eval_seed + 1000 * task if seed is None else seed
        planner = self._make_planner(torch.Generator().manual_seed(cfg.eval_seed + task))
        planner.set_model(self.task_model(task))
        runs = []
        for e in range(count):
            planner.reset()
            runs.append(self._episode(task, planner.plan, first + e))
        returns = np.array([r for r, _ in runs])
        return {"eval/return_mean": float(returns.mean()), "eval/return_std": float(returns.std()),
                "eval/length_mean": float(np.mean([n for _, n in runs])), "eval/episodes": float(count)}

    def evaluate_task(self, task: int) -> tuple[float, float]:
        """``(mean return with the planner on task's model, one-step next_obs MSE on task's held-out data)``."""
        cfg = self.config
        planner = self._make_planner(torch.Generator().manual_seed(cfg.eval_seed + task))
        planner.set_model(self.task_model(task))
        returns = []
        for e in range(cfg.eval_episodes):
            planner.reset()
            returns.append(self._episode_return(task, planner.plan, cfg.eval_seed + 1000 * task + e))
        holdout = self.data[task].holdout_batch()
        mse = self.task_model(task).evaluate(holdout)["mse"]
        return float(np.mean(returns)), float(mse)

    def random_return(self, task: int) -> float:
        """Mean return of uniformly random actions on ``task`` over the evaluation seeds."""
        cfg = self.config
        rng = np.random.default_rng(cfg.eval_seed + task)

        def policy(obs: np.ndarray) -> np.ndarray:
            return rng.uniform(self.action_low, self.action_high).astype(np.float32)

        return float(
            np.mean(
                [
                    self._episode_return(task, policy, cfg.eval_seed + 1000 * task + e)
                    for e in range(cfg.eval_episodes)
                ]
            )
        )

    # -- the loop ---------------------------------------------------------------------------------------

    def learn_task(self, task: int, logger: Logger | None = None) -> Metrics:
        """Collect ``steps_per_task`` transitions of ``task`` (random, then planned), training periodically
        (the env steps are :class:`mbrl.loops.OnlineLoop`'s; this task's learning is :class:`_TaskStream`)."""
        cfg = self.config
        self.current_task = task
        # HyperCRL: new embedding and normalisers, stores the regulariser's targets; MLP: a new head.
        self.model.start_task(task)
        self.planner.set_model(self.task_model(task))
        self.planner.reset()
        env = make_task_env(cfg.family, task, seed=int(self.rng.integers(2**31)))
        learner = _TaskStream(self, task, evaluate=logger is not None)
        schedule = OnlineSchedule(total_steps=cfg.steps_per_task, random_steps=cfg.random_steps, eval_episodes=0)
        # The env was reset with its seed when built; the loop's first reset continues its stream (unseeded).
        loop = OnlineLoop(learner, env, None, schedule, seed=cfg.seed, rng=self.rng, reset_seed=None,
                          step_offset=self.env_steps)
        loop.run(logger)
        last_train, episode_returns = learner.last_train, learner.episode_returns
        env.close()
        if cfg.method == "coreset" and cfg.coreset_size > 0:
            stream = self.data[task].all_train()
            keep = self.rng.choice(len(stream), size=min(cfg.coreset_size, len(stream)), replace=False)
            self.data[task].coreset = stream.index(torch.as_tensor(np.sort(keep)))
        out = {f"model/{k}": v for k, v in last_train.items()}
        if episode_returns:
            out["train/episode_return"] = float(np.mean(episode_returns))
        return out

    def learn(self, logger: Logger | None = None) -> Metrics:
        """Run the whole task sequence; fills :attr:`result`; returns final summary metrics (``eval/...``)."""
        start = time.monotonic()
        t_count = self.num_tasks
        returns = np.full((t_count, t_count), np.nan)
        mse = np.full((t_count, t_count), np.nan)
        random_returns = np.array([self.random_return(i) for i in range(t_count)])
        for t in range(t_count):
            self.learn_task(t, logger)
            for i in range(t + 1):
                returns[i, t], mse[i, t] = self.evaluate_task(i)
            if logger is not None:
                metrics: dict[str, float] = {}
                for i in range(t + 1):
                    metrics[f"eval/return_task{i}"] = returns[i, t]
                    metrics[f"eval/model_mse_task{i}"] = mse[i, t]
                logger.log(metrics, self.env_steps)
        self.result = ContinualResult(
            method=self.config.method,
            seed=self.config.seed,
            task_names=self.task_names,
            returns=returns,
            model_mse=mse,
            random_returns=random_returns,
            wall_time=time.monotonic() - start,
        )
        final = {f"eval/return_task{i}": float(returns[i, -1]) for i in range(t_count)}
        final["eval/mean_final_return"] = float(np.mean(returns[:, -1]))
        final["eval/mean_retention"] = float(np.nanmean(self.result.retention()))
        final["eval/mean_model_mse"] = float(np.mean(mse[:, -1]))
        return final

    # -- checkpoints ------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the model's state (tensors only) and the config atomically to ``path``."""
        save_checkpoint(
            path,
            config=self.config,
            state={"model": self.model.state_dict()},
            extra={"current_task": self.current_task, "env_steps": self.env_steps},
        )

    def load(self, path: str | Path) -> None:
        """Restore the model saved by :meth:`save` (predictions identical; data buffers are not saved)."""
        ckpt = load_checkpoint(path)
        if "model" not in ckpt.state:
            raise KeyError(f"{path}: checkpoint has no 'model' state")
        self.model.load_state_dict(ckpt.state["model"])
        self.current_task = int(ckpt.extra.get("current_task", 0))
        self.env_steps = int(ckpt.extra.get("env_steps", 0))
        self.planner.set_model(self.task_model(self.current_task))


class _TaskStream:
    """One task of a HyperCRL run as an :class:`mbrl.loops.OnlineAgent`: the planner acts, each transition goes to
    the task's training or held-out data (every ``holdout_every``-th), the model trains every ``train_every`` steps
    after the random phase, and (with ``evaluate``) the task is evaluated every ``eval_every`` steps."""

    def __init__(self, agent: HyperCRLAgent, task: int, *, evaluate: bool) -> None:
        self.agent, self.task, self.evaluate = agent, task, evaluate
        self.steps = 0
        self.episode_return = 0.0
        self.episode_returns: list[float] = []
        self.last_train: Metrics = {}

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.agent.act(obs)

    def observe(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool,
        truncated: bool,
    ) -> None:
        a, cfg = self.agent, self.agent.config
        row = (
            np.asarray(obs, np.float32),
            np.asarray(action, np.float32),
            float(reward),
            np.asarray(next_obs, np.float32),
            float(terminated),
        )
        self.steps += 1
        held_out = self.steps % cfg.holdout_every == 0
        (a.data[self.task].holdout if held_out else a.data[self.task].train).append(row)
        self.episode_return += float(reward)
        a.env_steps += 1
        if terminated or truncated:
            self.episode_returns.append(self.episode_return)
            self.episode_return = 0.0
            a.planner.reset()

    def train(self, step: int) -> Metrics:
        a, cfg = self.agent, self.agent.config
        out: Metrics = {}
        if step >= cfg.random_steps and (step - cfg.random_steps) % cfg.train_every == 0:
            self.last_train = a.train_model()
            out.update({f"model/{k}": v for k, v in self.last_train.items()})
        if self.evaluate and cfg.eval_every and step % cfg.eval_every == 0:
            ret, mse = a.evaluate_task(self.task)
            out.update({f"eval/return_task{self.task}": ret, f"eval/model_mse_task{self.task}": mse})
        return out
