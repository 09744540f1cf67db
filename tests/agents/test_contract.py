"""The agent contract, over a tiny configuration of every agent that trains from a run directory (Dyna, model-free
SAC, the Lipschitz arm, RAVL, MOPO, BC) and the parts that apply to HyperCRL:

1. actions: one observation ``[D] -> [A]``, a batch ``[B, D] -> [B, A]``, inside the action bounds, and the
   deterministic action repeatable;
2. training: every logged update metric is finite and the parameters move;
3. save -> load into a fresh agent of the same config gives the same deterministic actions;
4. the same seed gives the same metrics and actions, another seed other actions;
5. a run continued from its mid-run checkpoint ends with the same actions and final evaluation as the
   uninterrupted run.

HyperCRL keeps its model only (no run-directory checkpoints): it is checked for 1, 3 and 4.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mbrl.agents.bc import BCAgent, bc_preset
from mbrl.agents.dyna import DynaAgent
from mbrl.agents.hypercrl import HyperCRLAgent, HyperCRLConfig
from mbrl.agents.lipschitz import lipschitz_preset, make_lipschitz_agent
from mbrl.agents.mopo import mopo_preset
from mbrl.agents.ravl import RAVLAgent, ravl_preset
from mbrl.data import OfflineDataset
from mbrl.logging import Logger, read_csv
from mbrl.planning import MPPIConfig
from mbrl.types import Agent, Resumable
from tests.agents.test_dyna import tiny_config
from tests.agents.test_offline import _random_hopper


@dataclass(frozen=True)
class Kind:
    """How to build one agent: ``make(seed, run_dir)``; the checkpoint interval of its loop; its obs dim."""

    make: Callable[[int, Path | None], Any]
    obs_dim: int
    half: int  # a checkpoint is written here (half the run)


_DATA: dict[str, OfflineDataset] = {}


def _hopper() -> OfflineDataset:
    if "hopper" not in _DATA:
        _DATA["hopper"] = _random_hopper(800, seed=3)
    return _DATA["hopper"]


def _dyna(seed: int, run_dir: Path | None, **kw: Any) -> DynaAgent:
    return DynaAgent(tiny_config(seed=seed, checkpoint_every=200, **kw), run_dir=run_dir)


def _lipschitz(seed: int, run_dir: Path | None) -> DynaAgent:
    cfg, tiny = lipschitz_preset("InvertedPendulum-v5", seed=seed), tiny_config()
    cfg = replace(
        cfg, total_steps=400, init_random_steps=200, epoch_length=100, model_train_every=100, rollouts_per_step=4,
        rollout=tiny.rollout, utd=2, eval_every=0, eval_episodes=1, checkpoint_every=200, fit=tiny.fit,
        sac=replace(cfg.sac, hidden=32, batch_size=32), ensemble=replace(cfg.ensemble, hidden=32, depth=2),
    )
    return make_lipschitz_agent(cfg, run_dir=None if run_dir is None else str(run_dir), diag_states=16)


def _offline(make: Callable[..., Any]) -> Callable[[int, Path | None], Any]:
    def build(seed: int, run_dir: Path | None) -> Any:
        loop = {"loop_updates": 40, "loop_eval_every": 20, "loop_checkpoint_every": 20, "loop_log_every": 10,
                "loop_seed": seed}
        return RAVLAgent(make("mem", "quick", updates_per_epoch=20, **loop), dataset=_hopper(), run_dir=run_dir)

    return build


def _bc(seed: int, run_dir: Path | None) -> BCAgent:
    cfg = bc_preset("mem", "quick", updates=40, eval_every=20, checkpoint_every=20, log_every=10, seed=seed)
    return BCAgent(cfg, dataset=_hopper(), run_dir=run_dir)


KINDS = {
    "dyna": Kind(_dyna, 4, 200),
    "sac": Kind(lambda seed, run_dir: _dyna(seed, run_dir, use_model=False), 4, 200),
    "lipschitz": Kind(_lipschitz, 4, 200),
    "ravl": Kind(_offline(ravl_preset), 11, 20),
    "mopo": Kind(_offline(mopo_preset), 11, 20),
    "bc": Kind(_bc, 11, 20),
}


def _obs(kind: Kind, n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, kind.obs_dim)).astype(np.float32) * 0.1


def _bounds(agent: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(agent.action_low), np.asarray(agent.action_high)


def documented_keys() -> list[re.Pattern[str]]:
    """The metric names of ``docs/metrics.md`` (first column; ``*`` and ``<m>`` are wildcards)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    names = [n for line in doc.splitlines() if line.startswith("| `")
             for n in re.findall(r"`([^`]+)`", line.split(" | ")[0])]
    return [re.compile(re.escape(n).replace(r"\*", ".*").replace("<m>", ".*")) for n in names]


def _learn(agent: Any, run_dir: Path | None) -> dict[str, float]:
    if run_dir is None:
        return dict(agent.learn())
    with Logger(run_dir, console=False) as logger:
        return dict(agent.learn(logger))


@pytest.mark.parametrize("name", list(KINDS))
def test_agent_contract(name: str, tmp_path: Path) -> None:
    kind = KINDS[name]
    run = tmp_path / "run"
    obs = _obs(kind)

    # 1. actions before training (on a probe: stochastic actions draw from the learner's own generator):
    # shapes, bounds, repeatable deterministic action
    probe = kind.make(0, None)
    assert isinstance(probe, Agent) and isinstance(probe, Resumable)
    low, high = _bounds(probe)
    single = probe.act(obs[0], deterministic=True)
    batch = probe.act(obs, deterministic=True)
    assert single.shape == low.shape and batch.shape == (len(obs), *low.shape)
    np.testing.assert_allclose(batch[0], single, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(probe.act(obs, deterministic=True), batch)
    stochastic = probe.act(obs, deterministic=False)
    for a in (single[None], batch, stochastic):
        assert np.all(a >= low - 1e-6) and np.all(a <= high + 1e-6)
    agent = kind.make(0, run)

    # 2. training: finite metrics, the policy moves
    final = _learn(agent, run)
    assert np.isfinite(list(final.values())).all()
    log = read_csv(run / "progress.csv")
    train_keys = [k for k in log if k.startswith("train/") and k not in ("train/episode_return", "train/episode_length")]
    assert train_keys, "no update metrics logged"
    for key in train_keys:
        values = log[key][~np.isnan(log[key])]
        assert len(values) and np.isfinite(values).all(), key
    patterns = documented_keys()
    undocumented = [k for k in log if k not in ("step", "wall_time") and not any(p.fullmatch(k) for p in patterns)]
    assert not undocumented, f"keys missing from docs/metrics.md: {undocumented}"
    trained = agent.act(obs, deterministic=True)
    assert not np.array_equal(trained, batch)

    # 3. save -> load into a fresh agent
    agent.save(tmp_path / "agent.pt")
    fresh = kind.make(0, None)
    fresh.load(tmp_path / "agent.pt")
    np.testing.assert_array_equal(fresh.act(obs, deterministic=True), trained)

    # 4. same seed: same metrics and actions; another seed: other actions
    twin = kind.make(0, tmp_path / "twin")
    assert _learn(twin, tmp_path / "twin") == final
    np.testing.assert_array_equal(twin.act(obs, deterministic=True), trained)
    other = kind.make(1, None)
    _learn(other, None)
    assert not np.array_equal(other.act(obs, deterministic=True), trained)

    # 5. continued from the mid-run checkpoint (the later ones removed: as if killed after it)
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    checkpoints = sorted((cut / "checkpoints").glob("ckpt_*.pt"))
    assert len(checkpoints) >= 2, checkpoints
    for path in checkpoints:
        if int(path.stem.split("_")[1]) > kind.half:
            path.unlink()
    resumed = kind.make(0, cut)
    assert resumed.resume()
    start = getattr(resumed, "num_updates", getattr(resumed, "step", None))
    assert start == kind.half
    with Logger(cut, console=False, resume_step=kind.half) as logger:
        again = resumed.learn(logger)
    assert again == final
    np.testing.assert_array_equal(resumed.act(obs, deterministic=True), trained)


TINY_HYPERCRL = HyperCRLConfig(
    num_tasks=2, steps_per_task=60, random_steps=30, train_every=15, train_iters=5, batch_size=16, coreset_size=10,
    eval_episodes=1, mppi=MPPIConfig(horizon=3, population=8, iterations=1),
)


def test_hypercrl_contract(tmp_path: Path) -> None:
    """HyperCRL acts by MPC planning (MPPI): one observation at a time, stateful (the plan is warm-started and
    sampled from the planner's generator, so ``deterministic`` does not make one call repeatable). Its contract:
    shapes and bounds; two agents in the same state plan the same action sequence; save -> load reproduces that
    state; the same seed trains to the same metrics, another seed to others."""
    agent = HyperCRLAgent(TINY_HYPERCRL)
    assert isinstance(agent, Agent) and not isinstance(agent, Resumable)
    final = agent.learn()
    assert np.isfinite(list(final.values())).all()
    obs = np.random.default_rng(0).normal(size=(3, agent.family.obs_dim)).astype(np.float32) * 0.1
    low, high = agent.action_low, agent.action_high
    agent.save(tmp_path / "hypercrl.pt")
    plans = []
    for _ in range(2):
        fresh = HyperCRLAgent(TINY_HYPERCRL)
        fresh.load(tmp_path / "hypercrl.pt")
        plans.append(np.stack([fresh.act(o, deterministic=True) for o in obs]))
    assert plans[0].shape == (3, *low.shape) and np.all(plans[0] >= low - 1e-6) and np.all(plans[0] <= high + 1e-6)
    np.testing.assert_array_equal(plans[0], plans[1])
    twin = HyperCRLAgent(TINY_HYPERCRL)
    assert twin.learn() == final
    other = HyperCRLAgent(replace(TINY_HYPERCRL, seed=1))
    assert other.learn() != final
