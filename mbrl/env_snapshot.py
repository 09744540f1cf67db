"""Exact snapshots of a running gymnasium env, so a training loop can resume mid-episode.

Covers MuJoCo envs (qpos, qvel, time, warm-start and actuator state), classic-control envs that keep
``unwrapped.state``, the env's ``np_random`` state, and the ``TimeLimit`` step counter.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv


def _time_limit(env: gym.Env) -> Any:
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.TimeLimit):
            return e
        e = e.env
    return None


def env_snapshot(env: gym.Env) -> dict[str, Any]:
    """A JSON-able snapshot of ``env``'s full state (call between steps)."""
    u: Any = env.unwrapped
    snap: dict[str, Any] = {"np_random": json.dumps(u.np_random.bit_generator.state)}
    tl = _time_limit(env)
    if tl is not None:
        snap["elapsed_steps"] = int(tl._elapsed_steps or 0)
    if isinstance(u, MujocoEnv):
        d = u.data
        snap.update(
            qpos=d.qpos.tolist(),
            qvel=d.qvel.tolist(),
            act=d.act.tolist(),
            qacc_warmstart=d.qacc_warmstart.tolist(),
            time=float(d.time),
        )
    elif hasattr(u, "state"):
        snap["state"] = np.asarray(u.state, dtype=np.float64).tolist()
    else:
        raise TypeError(f"env_snapshot: do not know how to snapshot {type(u).__name__}")
    return snap


def restore_env_snapshot(env: gym.Env, snap: dict[str, Any]) -> None:
    """Restore a snapshot from :func:`env_snapshot` into an env of the same id that has been reset once."""
    u: Any = env.unwrapped
    u.np_random.bit_generator.state = json.loads(snap["np_random"])
    tl = _time_limit(env)
    if tl is not None and "elapsed_steps" in snap:
        tl._elapsed_steps = snap["elapsed_steps"]
    if isinstance(u, MujocoEnv):
        import mujoco

        d = u.data
        d.qpos[:] = snap["qpos"]
        d.qvel[:] = snap["qvel"]
        d.act[:] = snap["act"]
        d.qacc_warmstart[:] = snap["qacc_warmstart"]
        d.time = snap["time"]
        mujoco.mj_forward(u.model, d)
    else:
        u.state = np.asarray(snap["state"], dtype=np.float64)
