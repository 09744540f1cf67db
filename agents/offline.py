"""The shared loop of offline agents (RAVL, MOPO, BC, ...): a fixed dataset, a number of gradient updates,
periodic evaluation in the real env with the D4RL normalized score, checkpoints and exact resume.

An offline agent subclasses :class:`OfflineAgent` and supplies four things: ``_train_step()`` (one update,
returns metrics), ``act``, ``_learner_state()`` / ``_load_learner_state()`` (its own tensors). Optionally
``_prepare()`` runs once before the first update (e.g. fitting the world model); its result is part of the
learner state, so a resumed run does not redo it.

The loop itself (counting, the log/eval/checkpoint schedule, the evaluation-seed rule) is
:class:`mbrl.loops.OfflineLoop`; this base class gives it the agent's ``prepare``/``train_step``/``evaluate``.

Data never changes during training, so the loop's random state is: the numpy generator that samples the
dataset (and whatever else the subclass draws from it), the learners' torch generators, and the counters.
Evaluation episodes reset with fixed seeds and draw nothing from these, so evaluating does not perturb training:
an interrupted and resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import tyro

from mbrl.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    save_run_checkpoint,
)
from mbrl.data import OfflineDataset, load_dataset
from mbrl.envs import make_env
from mbrl.evaluation import resolve_reference_scores
from mbrl.logging import Logger
from mbrl.loops import EVAL_SEED_OFFSET, OfflineLoop, OfflineSchedule, eval_seed, evaluate
from mbrl.types import Metrics
from mbrl.utils import set_threads

__all__ = ["EVAL_SEED_OFFSET", "OfflineAgent", "OfflineLoopConfig", "torch_generator"]


@dataclass(frozen=True)
class OfflineLoopConfig:
    """Settings shared by every offline agent.

    Attributes:
        dataset: the data source: an ``.hdf5`` / ``.npz`` path or a local Minari id (``mbrl.data.load_dataset``).
        env_id: the gymnasium env to evaluate in; ``None`` uses the dataset's own env id.
        seed: seeds dataset sampling, the learners' generators and the evaluation resets.
        updates: gradient updates in total.
        eval_every: updates between evaluations (0: only at the end).
        eval_episodes: episodes per evaluation.
        log_every: updates between ``train/`` metric rows.
        checkpoint_every: updates between checkpoints (0: only at the end).
        keep_checkpoints: how many checkpoints a run directory keeps.
        ref_min_score: reference return of a random policy (overrides the dataset metadata / D4RL constants).
        ref_max_score: reference return of an expert (give both or neither).
        num_threads: torch intra-op threads.
    """

    dataset: str = ""
    env_id: Annotated[str | None, tyro.conf.arg(name="env")] = None
    seed: int = 0
    updates: int = 10_000
    eval_every: int = 5_000
    eval_episodes: int = 10
    log_every: int = 1_000
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 2
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    num_threads: Annotated[int, tyro.conf.arg(aliases=("--threads",))] = 1

    def __post_init__(self) -> None:
        if self.updates < 1 or self.eval_episodes < 1 or self.log_every < 1 or self.keep_checkpoints < 1:
            raise ValueError(
                "OfflineLoopConfig: updates, eval_episodes, log_every and keep_checkpoints must be >= 1"
            )
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError("OfflineLoopConfig: eval_every and checkpoint_every must be >= 0")
        if (self.ref_min_score is None) != (self.ref_max_score is None):
            raise ValueError("OfflineLoopConfig: give both ref_min_score and ref_max_score, or neither")


class OfflineAgent:
    """Base of the offline agents: the loop, evaluation, checkpoints (see the module docstring).

    Args:
        config: the agent's frozen config; it must have a ``loop: OfflineLoopConfig`` field.
        dataset: the data (default: ``load_dataset(config.loop.dataset)``).
        run_dir: where checkpoints go (``None``: nothing is written).
    """

    algo: ClassVar[str] = "offline"

    def __init__(
        self, config: Any, *, dataset: OfflineDataset | None = None, run_dir: str | Path | None = None
    ):
        loop: OfflineLoopConfig = config.loop
        set_threads(loop.num_threads)
        self.config = config
        self.loop = loop
        self.dataset = dataset if dataset is not None else load_dataset(loop.dataset, env_id=loop.env_id)
        if not self.dataset.has_actions:
            raise ValueError(f"{self.dataset.source}: offline agents need a dataset with actions")
        env_id = loop.env_id or self.dataset.env_id
        if env_id is None:
            raise ValueError(f"{self.dataset.source}: the dataset names no env; pass --env")
        self.env_id: str = env_id
        self.eval_env = make_env(env_id)
        space = self.eval_env.action_space
        self.action_low = np.asarray(space.low, dtype=np.float32)  # type: ignore[attr-defined]
        self.action_high = np.asarray(space.high, dtype=np.float32)  # type: ignore[attr-defined]
        self.obs_dim = self.dataset.obs_dim
        self.action_dim = self.dataset.action_dim
        self.refs, self.refs_source = resolve_reference_scores(
            env_id, self.dataset.metadata, ref_min=loop.ref_min_score, ref_max=loop.ref_max_score
        )
        self.rng = np.random.default_rng([loop.seed, 0])
        self.run_dir = Path(run_dir) if run_dir is not None else None
        schedule = OfflineSchedule(loop.updates, loop.log_every, loop.eval_every, loop.checkpoint_every)
        self.update_loop = OfflineLoop(self, schedule, save=self.save_to_run_dir if self.run_dir is not None else None)

    @property
    def num_updates(self) -> int:
        """Gradient updates done so far."""
        return self.update_loop.num_updates

    @num_updates.setter
    def num_updates(self, value: int) -> None:  # e.g. a benchmark placing the agent between refills
        self.update_loop.num_updates = value

    @property
    def train_time_s(self) -> float:
        """Seconds spent in updates so far."""
        return self.update_loop.train_time_s

    @property
    def prepared(self) -> bool:
        """Whether the one-off ``_prepare`` stage has run."""
        return self.update_loop.prepared

    # -- what subclasses provide ------------------------------------------------------------------------------
    def _prepare(self) -> Metrics:
        """Work done once before the first update (e.g. fit a world model); returns metrics to log. A long
        stage saves its own progress to :meth:`fit_progress_path` (or another ``*_progress.pt`` beside it) when
        there is a run dir, so that a killed run continues it; ``learn`` saves a checkpoint as soon as the stages
        end and removes those files."""
        return {}

    def fit_progress_path(self) -> Path:
        """Where a long ``_prepare`` stage keeps its progress (inside the run dir)."""
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "prepare_progress.pt"

    def _train_step(self) -> Metrics:
        """One learning update; returns un-prefixed metrics."""
        raise NotImplementedError

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Env-unit action for ``obs [D]`` or ``[B, D]``."""
        raise NotImplementedError

    def _learner_state(self) -> dict[str, Any]:
        """``{name: state_dict}`` of the subclass's learners."""
        raise NotImplementedError

    def _load_learner_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, episodes: int | None = None, seed: int | None = None) -> Metrics:
        """Deterministic policy in the real env: ``eval/return_mean``, ``eval/return_std``, ``eval/length_mean``,
        and ``eval/normalized_score`` (mean over episodes) when reference scores are known. ``seed``: of the
        first episode (default: the run's seed + a fixed offset, so the in-training evaluations repeat)."""
        return evaluate(
            self.eval_env,
            lambda o: self.act(o, deterministic=True),
            episodes or self.loop.eval_episodes,
            seed=eval_seed(self.loop.seed) if seed is None else seed,
            refs=self.refs,
        )

    # -- the loop ---------------------------------------------------------------------------------------------
    def prepare(self) -> Metrics:
        """The one-off stage (``_prepare``), run by the loop before the first update."""
        return self._prepare()

    def train_step(self) -> Metrics:
        """One update (``_train_step``), run by the loop."""
        return self._train_step()

    def learn(self, logger: Logger | None = None) -> Metrics:
        """Run until ``loop.updates`` updates (:class:`mbrl.loops.OfflineLoop`); returns the final evaluation's
        metrics."""
        return self.update_loop.run(logger)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (learners, sampling RNG, counters)."""
        return {**self._learner_state(), "loop": {**self.update_loop.state(), "rng": rng_state(self.rng)}}

    def load_state(self, state: dict[str, Any]) -> None:
        if "loop" not in state:
            raise KeyError("checkpoint state has no 'loop' entry")
        self._load_learner_state(state)
        loop = state["loop"]
        self.update_loop.load_state(loop)
        restore_rng(loop["rng"], self.rng)

    def config_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, **asdict(self.config)}

    def save(self, path: str | Path) -> None:
        save_checkpoint(Path(path), config=self.config_dict(), state=self.state())

    def load(self, path: str | Path) -> None:
        self.load_state(dict(load_checkpoint(Path(path)).state))

    def save_to_run_dir(self) -> Path:
        """A checkpoint at the current update; once ``_prepare`` is done its progress files go."""
        assert self.run_dir is not None
        path = save_run_checkpoint(
            self.run_dir,
            self.num_updates,
            config=self.config_dict(),
            state=self.state(),
            keep_last=self.loop.keep_checkpoints,
        )
        if self.prepared:
            for stage in self.fit_progress_path().parent.glob("*_progress.pt"):
                stage.unlink()
        return path

    def resume(self) -> bool:
        """Load the latest checkpoint of ``run_dir`` if there is one; returns whether one was loaded."""
        if self.run_dir is None:
            return False
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        self.load(path)
        return True


def torch_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU torch generator for stream ``stream`` of run seed ``seed`` (distinct streams never collide)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))
