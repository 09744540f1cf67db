"""Plain gymnasium helpers for the core (no registry: ``envs/`` adds the termination and reward functions).

``make_seeded(env_id, seed=...)`` is ``gymnasium.make`` with the toolkit's seeding convention; importing this
module installs the MuJoCo warning handler (only if none is installed yet): MuJoCo otherwise appends every
warning to ``MUJOCO_LOG.TXT`` in the working directory and prints it. The handler drops HalfCheetah's known
``settotalmass`` XML deprecation and turns any other MuJoCo warning into a Python ``RuntimeWarning``.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import mujoco


def _mujoco_warning(message: str) -> None:
    if "settotalmass" in message:
        return  # gymnasium's half_cheetah.xml uses a deprecated compiler attribute; harmless
    warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


if mujoco.get_mju_user_warning() is None:
    mujoco.set_mju_user_warning(_mujoco_warning)


def make_seeded(env_id: str, *, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` (``TimeLimit`` included); with ``seed``, the env is reset once with it
    (seeding its ``np_random``) and its action and observation spaces are seeded with it, so later unseeded
    resets are reproducible."""
    env = gym.make(env_id, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env
