"""D4RL-style offline datasets made here, the way D4RL made its MuJoCo datasets (Fu et al. 2020, "D4RL").

For one env:

1. **Behaviour policy**: SAC trained on the real env for ``sac_steps`` env steps; every ``snapshot_every`` steps
   the actor is kept (a *snapshot*) with its deterministic return over ``snapshot_eval_episodes`` episodes.
   Training checkpoints (learner, replay buffer, RNG, env state) are written every ``checkpoint_every`` steps,
   so an interrupted run resumes exactly.
2. **Snapshot selection** (D4RL's expert is a fully trained policy, its medium one at about a third of the
   expert's return): the ``selection_candidates`` snapshots with the best training-time returns are re-scored
   over ``selection_episodes`` deterministic episodes and the best of them is the *expert* (SAC's last snapshot
   is often not its best: a Hopper run reached 3387 and ended at 1490). The *medium* policy is, among the
   snapshots up to the expert's step, the one whose re-scored return is closest to ``medium_fraction`` (1/3)
   of the expert's (the ``selection_candidates`` nearest by training-time return are re-scored). The choice
   is written to ``selection.json`` in the work dir and into every split's description.
3. **Reference scores** (as Minari/D4RL): ``ref_min_score`` = mean return of the uniform random policy,
   ``ref_max_score`` = mean return of the expert snapshot, deterministic, over ``ref_episodes`` episodes.
4. **Splits**, each ``split_size`` transitions unless said otherwise:

   - ``random``: uniform random actions.
   - ``medium``: the medium snapshot, acting stochastically.
   - ``medium-replay``: the behaviour run's replay buffer up to the medium snapshot's step (all of it; its size
     is that step, not ``split_size``).
   - ``expert``: the expert snapshot, acting stochastically.
   - ``medium-expert``: ``medium`` followed by ``expert``.

   Episodes end by ``terminated`` (``terminals``) or the env's time limit (``timeouts``); the episode cut by the
   end of a split gets ``timeouts = True`` on its last row (it did not terminate).

Each split is written as a local Minari dataset ``<namespace>/<env>/<split>-v<version>`` carrying the reference
scores. Splits already written are skipped, so re-running after an interruption finishes the missing ones.
Everything is deterministic from ``seed`` on one machine with one thread count. Across machines the behaviour
run's floating point can differ and SAC then drifts: two machines of the same kind gave Hopper-v5 expert references
1489.8 and 887.3 from seed 0 (the uniform-random references matched). Compare results on one generation only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mbrl.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from mbrl.data import OfflineDataset, ReplayBuffer, save_minari
from mbrl.envs.registry import get_spec, make_env
from mbrl.evaluation import evaluate_policy
from mbrl.loops import OnlineLoop, OnlineSchedule
from mbrl.rl.policies import TorchPolicy
from mbrl.rl.sac import SAC, SACConfig
from mbrl.rl.train_sac import ReplaySAC
from mbrl.run import write_json_atomic
from mbrl.types import Metrics
from mbrl.utils import set_threads

SPLITS = ("random", "medium", "medium-replay", "expert", "medium-expert")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DatasetGenConfig:
    """How the datasets of one env are made.

    Attributes:
        env_id: a registered env, e.g. ``"Hopper-v5"``.
        seed: seeds everything (behaviour training, collection, reference episodes).
        sac_steps: env steps of behaviour-policy training.
        learning_starts: uniform-random env steps before SAC updates start.
        snapshot_every: env steps between actor snapshots.
        snapshot_eval_episodes: deterministic episodes that score each snapshot.
        checkpoint_every: env steps between resumable training checkpoints.
        split_size: transitions of the random / medium / expert splits.
        ref_episodes: episodes of the reference scores (Minari and D4RL: 100).
        medium_fraction: the medium policy is the snapshot whose return is closest to this fraction of the
            expert's.
        selection_candidates: snapshots re-scored when choosing the expert (and again the medium one).
        selection_episodes: deterministic episodes that re-score each candidate snapshot.
        namespace: Minari namespace of the written datasets.
        version: Minari version suffix.
        num_threads: torch threads.
        sac: the behaviour learner.
    """

    env_id: str = "Hopper-v5"
    seed: int = 0
    sac_steps: int = 150_000
    learning_starts: int = 5_000
    snapshot_every: int = 5_000
    snapshot_eval_episodes: int = 5
    checkpoint_every: int = 25_000
    split_size: int = 100_000
    ref_episodes: int = 100
    medium_fraction: float = 1.0 / 3.0
    selection_candidates: int = 5
    selection_episodes: int = 20
    namespace: str = "mbrl"
    version: int = 0
    num_threads: int = 1
    sac: SACConfig = field(default_factory=SACConfig)

    def __post_init__(self) -> None:
        get_spec(self.env_id)
        if min(self.sac_steps, self.snapshot_every, self.checkpoint_every, self.split_size, self.ref_episodes) < 1:
            raise ValueError("DatasetGenConfig: steps, sizes and episode counts must be >= 1")
        if self.snapshot_eval_episodes < 1 or not 0 < self.medium_fraction < 1:
            raise ValueError("DatasetGenConfig: snapshot_eval_episodes >= 1 and 0 < medium_fraction < 1")
        if self.selection_candidates < 1 or self.selection_episodes < 1:
            raise ValueError("DatasetGenConfig: selection_candidates and selection_episodes must be >= 1")
        if self.learning_starts >= self.sac_steps:
            raise ValueError("DatasetGenConfig: learning_starts must be < sac_steps")


def dataset_preset(env_id: str, preset: Literal["cpu", "quick", "tiny"] = "cpu", **overrides: Any) -> DatasetGenConfig:
    """``"cpu"``: 150k SAC steps and 100k-transition splits (under an hour per env on one core); ``"quick"``:
    a 10k-step behaviour run and 5k-transition splits (minutes); ``"tiny"``: seconds (tests)."""
    if preset == "cpu":
        base = DatasetGenConfig(env_id=env_id)
    elif preset == "quick":
        base = DatasetGenConfig(
            env_id=env_id, sac_steps=10_000, learning_starts=1_000, snapshot_every=1_000, checkpoint_every=5_000,
            split_size=5_000, ref_episodes=10, snapshot_eval_episodes=3, selection_candidates=3,
            selection_episodes=5,
        )
    elif preset == "tiny":
        base = DatasetGenConfig(
            env_id=env_id, sac_steps=600, learning_starts=200, snapshot_every=200, checkpoint_every=300,
            split_size=300, ref_episodes=2, snapshot_eval_episodes=1, selection_candidates=2,
            selection_episodes=2, sac=SACConfig(hidden=32, batch_size=32),
        )
    else:
        raise ValueError(f"dataset_preset: unknown preset {preset!r} (cpu, quick, tiny)")
    return replace(base, **overrides)


def minari_id(config: DatasetGenConfig, split: str) -> str:
    """The Minari id of ``split``: ``<namespace>/<env name>/<split>-v<version>``, e.g. ``mbrl/hopper/medium-v0``."""
    name = config.env_id.split("-")[0].lower()
    return f"{config.namespace}/{name}/{split}-v{config.version}"


@contextmanager
def minari_root(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Temporarily point ``MINARI_DATASETS_PATH`` at ``path`` (no change when ``None``)."""
    if path is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _seed(config: DatasetGenConfig, stream: int) -> int:
    return int(np.random.SeedSequence([config.seed, stream]).generate_state(1)[0])


def _bounds(env_id: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    env = make_env(env_id)
    space = env.action_space
    low = np.asarray(space.low, dtype=np.float32)  # type: ignore[attr-defined]
    high = np.asarray(space.high, dtype=np.float32)  # type: ignore[attr-defined]
    obs_dim = int(np.prod(env.observation_space.shape))  # type: ignore[arg-type]
    env.close()
    return low, high, obs_dim, int(low.shape[0])


# ----------------------------------------------------------------------------------------- behaviour policy
class BehaviourTrainer(ReplaySAC):
    """Model-free SAC on the real env (:class:`~mbrl.rl.train_sac.ReplaySAC` on an ``OnlineLoop``) with actor
    snapshots and exact resume (step 1 of the module docstring).

    Args:
        config: the generation config.
        work_dir: where ``behaviour.pt`` (the resumable state) is written.
    """

    def __init__(self, config: DatasetGenConfig, work_dir: str | Path) -> None:
        self.config = c = config
        self.path = Path(work_dir) / "behaviour.pt"
        self.low, self.high, self.obs_dim, self.action_dim = _bounds(c.env_id)
        self.env = make_env(c.env_id)
        self.eval_env = make_env(c.env_id)
        sac = SAC(
            self.obs_dim, self.action_dim, self.low, self.high, c.sac,
            generator=torch.Generator().manual_seed(_seed(c, 1)),
        )
        self.rng = np.random.default_rng([c.seed, 2])
        buffer = ReplayBuffer(
            c.sac_steps, self.obs_dim, self.action_dim, rng=np.random.default_rng([c.seed, 3]), device=sac.device
        )
        super().__init__(sac, buffer, learning_starts=c.learning_starts)
        self.snapshots: list[dict[str, Any]] = []
        self._progress: Progress | None = None
        schedule = OnlineSchedule(total_steps=c.sac_steps, random_steps=c.learning_starts, eval_episodes=0)
        self.loop = OnlineLoop(self, self.env, None, schedule, seed=c.seed, rng=self.rng, reset_seed=_seed(c, 4))

    @property
    def step(self) -> int:
        """Env steps taken so far."""
        return self.loop.step

    @property
    def done(self) -> bool:
        return self.step >= self.config.sac_steps

    def _snapshot(self) -> None:
        c = self.config
        result = evaluate_policy(
            self.eval_env, lambda o: self.sac.act(o, deterministic=True), c.snapshot_eval_episodes, seed=_seed(c, 5)
        )
        actor = {k: v.detach().clone() for k, v in self.sac.actor.state_dict().items()}
        self.snapshots.append({"step": self.step, "return": result.return_mean, "actor": actor})

    def train(self, step: int) -> Metrics:
        """After env step ``step`` (called by the loop): one SAC update past ``learning_starts``; a snapshot
        every ``snapshot_every`` steps and a checkpoint every ``checkpoint_every`` steps (and at the end)."""
        c = self.config
        super().train(step)
        if step % c.snapshot_every == 0 or step == c.sac_steps:
            self._snapshot()
            if self._progress is not None:
                self._progress(f"behaviour {c.env_id}: step {step}/{c.sac_steps}, return {self.snapshots[-1]['return']:.1f}")
        if step % c.checkpoint_every == 0 or step == c.sac_steps:
            self.save()
        return {}

    def run(self, progress: Progress | None = None, *, until: int | None = None) -> None:
        """Run (or continue) training to ``sac_steps`` (or to step ``until``), checkpointing on the way."""
        self._progress = progress
        try:
            self.loop.run(until=until)
        finally:
            self._progress = None

    def state(self) -> dict[str, Any]:
        return {
            "sac": self.sac.state_dict(),
            "buffer": self.buffer.state_dict(),
            "snapshots": {str(i): s for i, s in enumerate(self.snapshots)},
            "loop": {**self.loop.state(), "rng": rng_state(self.rng)},
        }

    def save(self) -> None:
        save_checkpoint(self.path, config=asdict(self.config), state=self.state())

    def resume(self) -> bool:
        """Load ``behaviour.pt`` if present (its config must match); returns whether one was loaded."""
        if not self.path.is_file():
            return False
        ckpt = load_checkpoint(self.path)
        if ckpt.config != json.loads(json.dumps(asdict(self.config))):
            raise ValueError(f"{self.path}: written with a different dataset config; use another --work-dir")
        state = ckpt.state
        self.sac.load_state_dict(state["sac"])
        self.buffer.load_state_dict(state["buffer"])
        self.snapshots = [state["snapshots"][str(i)] for i in range(len(state["snapshots"]))]
        self.loop.load_state(state["loop"])
        restore_rng(state["loop"]["rng"], self.rng)
        return True

    def policy(self, snapshot: dict[str, Any], seed: int, *, deterministic: bool = False) -> TorchPolicy:
        """An env-unit policy (stochastic unless ``deterministic``) with the snapshot's actor weights and its own
        generator."""
        actor = type(self.sac.actor)(
            self.obs_dim, self.action_dim, self.config.sac.hidden, self.config.sac.depth,
            self.config.sac.log_std_min, self.config.sac.log_std_max, generator=torch.Generator().manual_seed(0),
        )
        actor.load_state_dict(snapshot["actor"])
        return TorchPolicy(
            actor, self.sac.action_scale, self.sac.action_bias, deterministic=deterministic,
            generator=torch.Generator().manual_seed(seed),
        )

    def rescore(self, index: int, episodes: int, seed: int) -> float:
        """Mean deterministic return of snapshot ``index`` over ``episodes`` episodes (resets from ``seed``)."""
        env = make_env(self.config.env_id)
        result = evaluate_policy(env, self.policy(self.snapshots[index], 0, deterministic=True), episodes, seed=seed)
        env.close()
        return result.return_mean

    def select_snapshots(self) -> dict[str, Any]:
        """Choose the expert and medium snapshots (step 2 of the module docstring).

        Returns:
            ``{"expert": {"index", "step", "return", "train_return"}, "medium": {...}, "candidates": [...]}``
            where ``return`` is the re-scored mean over ``selection_episodes`` and ``train_return`` the
            training-time score; ``candidates`` lists every re-scored snapshot.
        """
        c = self.config
        seed = _seed(c, 13)
        scores: dict[int, float] = {}

        def score(i: int) -> float:
            if i not in scores:
                scores[i] = self.rescore(i, c.selection_episodes, seed)
            return scores[i]

        train = [float(s["return"]) for s in self.snapshots]
        best_first = sorted(range(len(train)), key=lambda i: (-train[i], i))[: c.selection_candidates]
        expert = max(best_first, key=lambda i: (score(i), -i))
        target = c.medium_fraction * score(expert)
        earlier = range(expert + 1)
        nearest = sorted(earlier, key=lambda i: (abs(train[i] - target), i))[: c.selection_candidates]
        medium = min(nearest, key=lambda i: (abs(score(i) - target), i))

        def entry(i: int) -> dict[str, Any]:
            return {"index": i, "step": int(self.snapshots[i]["step"]), "return": scores[i], "train_return": train[i]}

        return {
            "expert": entry(expert),
            "medium": entry(medium),
            "medium_target": target,
            "candidates": [entry(i) for i in sorted(scores)],
        }


# ----------------------------------------------------------------------------------------------- collection
def collect(
    env_id: str, act: Callable[[np.ndarray], np.ndarray], n: int, *, seed: int, source: str = "<collected>"
) -> OfflineDataset:
    """``n`` transitions of ``act`` (obs ``[D]`` -> env-unit action) in ``env_id``; episode ``i`` resets with
    ``seed + i``. ``terminals`` = terminated; ``timeouts`` = truncated, and True on the last row when the split
    ends mid-episode."""
    env = make_env(env_id)
    obs_dim = int(np.prod(env.observation_space.shape))  # type: ignore[arg-type]
    action_dim = int(np.prod(env.action_space.shape))  # type: ignore[arg-type]
    o = np.empty((n, obs_dim), np.float32)
    a = np.empty((n, action_dim), np.float32)
    r = np.empty(n, np.float32)
    nx = np.empty((n, obs_dim), np.float32)
    te = np.zeros(n, bool)
    tr = np.zeros(n, bool)
    episode = 0
    obs, _ = env.reset(seed=seed)
    for i in range(n):
        action = np.asarray(act(obs), dtype=np.float32)
        nxt, reward, terminated, truncated, _ = env.step(action)
        o[i], a[i], r[i], nx[i], te[i], tr[i] = obs, action, reward, nxt, terminated, truncated
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
        else:
            obs = nxt
    if not te[-1]:
        tr[-1] = True
    env.close()
    return OfflineDataset(o, a, r, nx, te, tr, env_id=env_id, source=source)


def uniform_random_dataset(env_id: str, n: int, *, seed: int = 0) -> OfflineDataset:
    """``n`` transitions of the uniform random policy in ``env_id`` (actions drawn from ``seed``, episodes reset
    from ``seed`` as :func:`collect` does): a small stand-in dataset for benchmarks and smoke runs."""
    env = make_env(env_id)
    low, high = np.asarray(env.action_space.low, np.float32), np.asarray(env.action_space.high, np.float32)  # type: ignore[attr-defined]
    env.close()
    rng = np.random.default_rng(seed)
    return collect(env_id, lambda _o: rng.uniform(low, high).astype(np.float32), n, seed=seed)


def reference_returns(trainer: BehaviourTrainer, expert: int, episodes: int, seed: int) -> tuple[float, float]:
    """``(random policy mean return, expert snapshot's deterministic mean return)`` over ``episodes`` episodes
    each; ``expert`` indexes ``trainer.snapshots``."""
    env = make_env(trainer.config.env_id)
    rng = np.random.default_rng(seed)
    random_result = evaluate_policy(
        env, lambda _o: rng.uniform(trainer.low, trainer.high).astype(np.float32), episodes, seed=seed
    )
    env.close()
    return random_result.return_mean, trainer.rescore(expert, episodes, seed)


def make_datasets(
    config: DatasetGenConfig,
    work_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    splits: tuple[str, ...] = SPLITS,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Make (or finish making) the D4RL-style splits of ``config.env_id``; see the module docstring.

    Args:
        config: what to make.
        work_dir: resumable intermediate state (``behaviour.pt``, ``refs.json``).
        out_dir: Minari root to write into (default ``$MINARI_DATASETS_PATH`` / ``~/.minari/datasets``).
        splits: which splits to write.
        progress: called with one-line progress messages.

    Returns:
        ``{split: minari id}`` of the requested splits (written now or before).
    """
    set_threads(config.num_threads)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"make_datasets: unknown splits {unknown}; known: {', '.join(SPLITS)}")
    say = progress or (lambda _m: None)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with minari_root(out_dir):
        root = Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
        ids = {s: minari_id(config, s) for s in splits}
        todo = [s for s in splits if not (root / ids[s] / "data").is_dir()]
        for s in splits:
            if s not in todo:
                say(f"{ids[s]}: already written, skipped")
        if not todo:
            return ids
        trainer = BehaviourTrainer(config, work)
        if trainer.resume():
            say(f"behaviour {config.env_id}: resumed at step {trainer.step}")
        trainer.run(say)
        selection_path = work / "selection.json"
        if selection_path.is_file():
            selection = json.loads(selection_path.read_text())
        else:
            selection = trainer.select_snapshots()
            write_json_atomic(selection_path, selection)
        chosen = {k: selection[k] for k in ("expert", "medium")}
        for k, v in chosen.items():
            say(
                f"{k} snapshot {config.env_id}: step {v['step']}, return {v['return']:.1f} over "
                f"{config.selection_episodes} episodes (training-time {v['train_return']:.1f})"
            )
        refs_path = work / "refs.json"
        if refs_path.is_file():
            refs = json.loads(refs_path.read_text())
        else:
            lo, hi = reference_returns(trainer, chosen["expert"]["index"], config.ref_episodes, _seed(config, 6))
            refs = {"ref_min_score": lo, "ref_max_score": hi}
            write_json_atomic(refs_path, refs)
        say(f"reference scores {config.env_id}: random {refs['ref_min_score']:.1f}, expert {refs['ref_max_score']:.1f}")
        medium = trainer.snapshots[chosen["medium"]["index"]]
        expert = trainer.snapshots[chosen["expert"]["index"]]
        cache: dict[str, OfflineDataset] = {}

        def split_data(name: str) -> OfflineDataset:
            if name in cache:
                return cache[name]
            env_id, n = config.env_id, config.split_size
            if name == "random":
                rng = np.random.default_rng(_seed(config, 7))
                ds = collect(env_id, lambda _o: rng.uniform(trainer.low, trainer.high).astype(np.float32), n, seed=_seed(config, 8))
            elif name == "medium":
                pol = trainer.policy(medium, _seed(config, 9))
                ds = collect(env_id, pol, n, seed=_seed(config, 10))
            elif name == "expert":
                pol = trainer.policy(expert, _seed(config, 11))
                ds = collect(env_id, pol, n, seed=_seed(config, 12))
            elif name == "medium-replay":
                full = trainer.buffer.to_dataset(env_id=env_id)
                rows = slice(0, int(medium["step"]))
                timeouts = full.timeouts[rows].copy()
                if not full.terminals[rows][-1]:
                    timeouts[-1] = True
                ds = OfflineDataset(
                    full.observations[rows], full.actions[rows] if full.actions is not None else None,
                    full.rewards[rows], full.next_observations[rows], full.terminals[rows], timeouts, env_id=env_id,
                )
            else:  # medium-expert
                ds = OfflineDataset.concat([split_data("medium"), split_data("expert")])
            cache[name] = ds
            return ds

        for name in todo:
            ds = split_data(name)
            description = (
                f"D4RL-style {name} split of {config.env_id} made by mbrl (envs/datasets.py): behaviour SAC "
                f"{config.sac_steps} steps, seed {config.seed}; expert snapshot at step {chosen['expert']['step']} "
                f"(return {chosen['expert']['return']:.1f}), medium snapshot at step {chosen['medium']['step']} "
                f"(return {chosen['medium']['return']:.1f}, target {selection['medium_target']:.1f}), each over "
                f"{config.selection_episodes} deterministic episodes; final snapshot's training-time return "
                f"{trainer.snapshots[-1]['return']:.1f}."
            )
            save_minari(
                ds, ids[name], env_id=config.env_id, ref_min_score=refs["ref_min_score"],
                ref_max_score=refs["ref_max_score"], algorithm_name=f"SAC ({name})", description=description,
            )
            returns = ds.episode_returns()
            say(f"{ids[name]}: {len(ds)} transitions, {ds.n_episodes} episodes, mean return {returns.mean():.1f}")
    return ids
