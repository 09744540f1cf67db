"""Fixtures for the data-layer tests: real Hopper-v5 random-action episodes and a private Minari root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium
import h5py
import numpy as np
import pytest


@dataclass(frozen=True)
class Episodes:
    """Real episodes in Minari's shape: ``observations[k]`` has one row more than ``actions[k]``."""

    observations: list[np.ndarray]  # [T_k + 1, 11] float64
    actions: list[np.ndarray]  # [T_k, 3] float32
    rewards: list[np.ndarray]  # [T_k] float64
    terminations: list[np.ndarray]  # [T_k] bool
    truncations: list[np.ndarray]  # [T_k] bool

    def transitions(self) -> dict[str, np.ndarray]:
        """The D4RL arrays (with next_observations) these episodes should load as (float32, bool)."""
        return {
            "observations": np.concatenate([o[:-1] for o in self.observations]).astype(np.float32),
            "actions": np.concatenate(self.actions).astype(np.float32),
            "rewards": np.concatenate(self.rewards).astype(np.float32),
            "next_observations": np.concatenate([o[1:] for o in self.observations]).astype(np.float32),
            "terminals": np.concatenate(self.terminations),
            "timeouts": np.concatenate(self.truncations),
        }


@pytest.fixture(scope="session")
def hopper_episodes() -> Episodes:
    """8 Hopper-v5 episodes under uniform random actions, time limit 40 (so some end by truncation)."""
    env = gymnasium.make("Hopper-v5", max_episode_steps=40)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "term", "trunc")}
    for ep in range(8):
        obs, _ = env.reset(seed=ep)
        o, a, r, te, tr = [obs], [], [], [], []
        while True:
            action = rng.uniform(low, high).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            o.append(obs)
            a.append(action)
            r.append(reward)
            te.append(terminated)
            tr.append(truncated)
            if terminated or truncated:
                break
        out["obs"].append(np.array(o))
        out["act"].append(np.array(a))
        out["rew"].append(np.array(r, dtype=np.float64))
        out["term"].append(np.array(te, dtype=bool))
        out["trunc"].append(np.array(tr, dtype=bool))
    env.close()
    eps = Episodes(out["obs"], out["act"], out["rew"], out["term"], out["trunc"])
    # The data must exercise both episode endings.
    assert any(t[-1] for t in eps.terminations) and any(t[-1] for t in eps.truncations)
    return eps


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``MINARI_DATASETS_PATH`` for one test."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def write_d4rl_hdf5(
    path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, object] | None = None
) -> Path:
    """Write arrays at the top level of an HDF5 file, as D4RL files are laid out."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for name, attr in (attrs or {}).items():
            f.attrs[name] = attr
    return path


# A hand-built classic D4RL file (no next_observations), 8 rows, 3 episodes:
# rows 0-2 end by a terminal (row 2), rows 3-5 end by a timeout (row 5), rows 6-7 are cut by the end of file.
# observations[i] = [i, 10 i], actions[i] = [-i], rewards[i] = i + 1.
THREE_EPISODES = {
    "observations": np.array(
        [[0, 0], [1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60], [7, 70]], np.float32
    ),
    "actions": np.array([[0], [-1], [-2], [-3], [-4], [-5], [-6], [-7]], np.float32),
    "rewards": np.array([1, 2, 3, 4, 5, 6, 7, 8], np.float32),
    "terminals": np.array([0, 0, 1, 0, 0, 0, 0, 0], bool),
    "timeouts": np.array([0, 0, 0, 0, 0, 1, 0, 0], bool),
}


@pytest.fixture
def three_episode_file(tmp_path: Path) -> Path:
    return write_d4rl_hdf5(tmp_path / "three.hdf5", THREE_EPISODES)
