"""Real transitions from the registered envs under uniformly random actions, cached per (env, steps, seed)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mbrl.envs import make_env


@dataclass(frozen=True)
class Rollout:
    """Transitions as float64 tensors (the envs' own precision); ``terminated`` and ``truncated`` as 0/1."""

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor
    truncated: Tensor


@cache
def collect(env_id: str, steps: int, seed: int = 0, action_scale: float = 1.0) -> Rollout:
    """``steps`` env steps with actions ``U(low, high) * action_scale`` (a scale > 1 tests action clipping),
    resetting (unseeded, so episodes differ) after every terminated or truncated step."""
    env = make_env(env_id, seed=seed)
    rng = np.random.default_rng(seed)
    space: Any = env.action_space
    low, high = space.low, space.high
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    }
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = rng.uniform(low, high) * action_scale
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for k, v in zip(rows, (obs, action, reward, next_obs, terminated, truncated)):
            rows[k].append(np.asarray(v, dtype=np.float64))
        obs = env.reset()[0] if (terminated or truncated) else next_obs
    env.close()
    return Rollout(**{k: torch.as_tensor(np.stack(v)) for k, v in rows.items()})


@cache
def collect_ant_dropped(steps: int, seed: int = 0) -> Rollout:
    """Ant-v5 transitions from perturbed starts: after each reset the torso is put at a height ~U(0.1, 1.3)
    with a vertical velocity ~U(-3, 3), then random actions follow for at most 20 steps. Random play alone
    rarely ends an Ant episode (a few per thousand steps); these starts cross both ends of the healthy z range
    [0.2, 1.0] often. Every transition is still a real ``env.step``."""
    env = make_env("Ant-v5", seed=seed)
    u: Any = env.unwrapped
    rng = np.random.default_rng(seed)
    space: Any = env.action_space
    low, high = space.low, space.high
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    }

    def start() -> np.ndarray:
        env.reset()
        qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
        qpos[2] = rng.uniform(0.1, 1.3)
        qvel[2] = rng.uniform(-3.0, 3.0)
        u.set_state(qpos, qvel)
        return np.asarray(u._get_obs())

    env.reset(seed=seed)
    obs = start()
    for t in range(steps):
        action = rng.uniform(low, high)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for k, v in zip(rows, (obs, action, reward, next_obs, terminated, truncated)):
            rows[k].append(np.asarray(v, dtype=np.float64))
        obs = start() if (terminated or truncated or t % 20 == 19) else next_obs
    env.close()
    return Rollout(**{k: torch.as_tensor(np.stack(v)) for k, v in rows.items()})
