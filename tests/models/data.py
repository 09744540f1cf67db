"""Real MuJoCo transitions as an ``OfflineDataset`` for model tests (cached per arguments)."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from mbrl.data.dataset import OfflineDataset
from mbrl.envs import make_env


@cache
def random_dataset(env_id: str, steps: int, episode_len: int = 200, seed: int = 0) -> OfflineDataset:
    """``steps`` real env steps under uniformly random actions, in episodes of at most ``episode_len`` steps
    (a shorter limit than the env's own gives more episodes for an episode-wise holdout split)."""
    env = make_env(env_id, seed=seed)
    rng = np.random.default_rng(seed)
    space: Any = env.action_space
    rows: dict[str, list[Any]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "timeout")}
    obs, _ = env.reset(seed=seed)
    t = 0
    for _ in range(steps):
        action = rng.uniform(space.low, space.high).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        t += 1
        timeout = bool(truncated) or t >= episode_len
        for k, v in zip(rows, (obs, action, reward, next_obs, terminated, timeout and not terminated)):
            rows[k].append(v)
        if terminated or timeout:
            obs, _ = env.reset()
            t = 0
        else:
            obs = next_obs
    env.close()
    return OfflineDataset(
        np.array(rows["obs"]),
        np.array(rows["action"]),
        np.array(rows["reward"]),
        np.array(rows["next_obs"]),
        np.array(rows["terminated"]),
        np.array(rows["timeout"]),
        env_id=env_id,
        source=f"random:{env_id}:{steps}:{seed}",
    )


def chain_dataset(n_episodes: int, length: int, *, scale: float = 0.5, seed: int = 0) -> OfflineDataset:
    """Episodes of ``next_obs = obs + scale * sum(action)`` (DummyModel's dynamics), each a continuous chain."""
    rng = np.random.default_rng(seed)
    obs, act, nxt = [], [], []
    for _ in range(n_episodes):
        o = rng.normal(size=3)
        for _ in range(length):
            a = rng.uniform(-1, 1, size=2)
            n = o + scale * a.sum()
            obs.append(o)
            act.append(a)
            nxt.append(n)
            o = n
    n_rows = n_episodes * length
    timeouts = np.zeros(n_rows, bool)
    timeouts[length - 1 :: length] = True
    return OfflineDataset(
        np.array(obs), np.array(act), np.array(obs)[:, 0], np.array(nxt), np.zeros(n_rows, bool), timeouts
    )
