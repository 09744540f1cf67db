"""Registry of the supported gymnasium environments with their termination and reward functions.

``get_spec(env_id)`` returns an :class:`EnvSpec`; ``make_env(env_id, seed=...)`` builds the env. The
functions in a spec reproduce the env built with gymnasium 1.4's **default** constructor arguments; passing
kwargs to :func:`make_env` that change the observation, termination or reward (e.g.
``terminate_when_unhealthy=False``) makes them wrong for that env.

Importing this module installs a MuJoCo warning handler (only if none is installed yet): MuJoCo otherwise
appends every warning to ``MUJOCO_LOG.TXT`` in the working directory and prints it. The handler drops
HalfCheetah's known ``settotalmass`` XML deprecation and turns any other MuJoCo warning into a Python
``RuntimeWarning``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco

from envs import rewards, termination
from envs.rewards import RewardFn
from envs.termination import TermFn


def _mujoco_warning(message: str) -> None:
    if "settotalmass" in message:
        return  # gymnasium's half_cheetah.xml uses a deprecated compiler attribute; harmless
    warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


if mujoco.get_mju_user_warning() is None:
    mujoco.set_mju_user_warning(_mujoco_warning)


@dataclass(frozen=True)
class EnvSpec:
    """What the toolkit knows about one supported environment.

    Attributes:
        env_id: gymnasium id, e.g. ``"Hopper-v5"``.
        obs_dim: observation size D (default constructor arguments).
        action_dim: action size A.
        term_fn: ``(obs [B, D], action [B, A], next_obs [B, D]) -> terminated [B]`` float 0/1, reproducing the
            env's own termination (see :mod:`envs.termination`).
        reward_fn: ``(obs, action, next_obs) -> reward [B]`` where the reward is a function of the observed
            transition, else ``None`` (the model must learn the reward). See :mod:`envs.rewards`.
        reward_note: how exact ``reward_fn`` is, or why there is none.
        max_episode_steps: the ``TimeLimit`` gymnasium registers (steps after which ``truncated``).
        d4rl_name: the env's name in D4RL dataset ids (``"hopper"`` in ``hopper-medium-v2``), or ``None``.
    """

    env_id: str
    obs_dim: int
    action_dim: int
    term_fn: TermFn
    reward_fn: RewardFn | None
    reward_note: str
    max_episode_steps: int
    d4rl_name: str | None


def _forward_note(name: str) -> str:
    return (
        f"none: {name}'s forward reward is (x_after - x_before)/dt over frame_skip substeps; x is not in the "
        "observation and the observed x velocity is the end-of-step velocity, not that average. Learn it."
    )


_SPECS: dict[str, EnvSpec] = {
    s.env_id: s
    for s in (
        EnvSpec(
            "HalfCheetah-v5",
            17,
            6,
            termination.never_terminates,
            None,
            _forward_note("HalfCheetah"),
            1000,
            "halfcheetah",
        ),
        EnvSpec(
            "Hopper-v5", 11, 3, termination.hopper_term_fn, None, _forward_note("Hopper"), 1000, "hopper"
        ),
        EnvSpec(
            "Walker2d-v5",
            17,
            6,
            termination.walker2d_term_fn,
            None,
            _forward_note("Walker2d"),
            1000,
            "walker2d",
        ),
        EnvSpec(
            "Ant-v5",
            105,
            8,
            termination.ant_term_fn,
            None,
            _forward_note("Ant") + " (The contact cost is computable from the observed clipped cfrc_ext.)",
            1000,
            "ant",
        ),
        EnvSpec(
            "InvertedPendulum-v5",
            4,
            1,
            termination.inverted_pendulum_term_fn,
            rewards.inverted_pendulum_reward,
            "exact: 1 - terminated",
            1000,
            None,
        ),
        EnvSpec(
            "InvertedDoublePendulum-v5",
            9,
            1,
            termination.inverted_double_pendulum_term_fn,
            rewards.inverted_double_pendulum_reward,
            "approximate: tip position from next_obs kinematics (the env's lags one RK4 stage, |error| ~1e-4) "
            "and hinge velocities clipped to ±10 in the observation (large error on the rare clipped rows)",
            1000,
            None,
        ),
        EnvSpec(
            "Pendulum-v1",
            3,
            1,
            termination.never_terminates,
            rewards.pendulum_reward,
            "exact: from obs before the step and the action clipped to ±2",
            200,
            None,
        ),
    )
}


def supported_envs() -> list[str]:
    """The ids of all registered envs, in registry order."""
    return list(_SPECS)


def get_spec(env_id: str) -> EnvSpec:
    """The :class:`EnvSpec` of ``env_id``; a ``ValueError`` listing the supported ids for an unknown one."""
    try:
        return _SPECS[env_id]
    except KeyError:
        raise ValueError(f"unknown env id {env_id!r}; supported: {', '.join(_SPECS)}") from None


def make_env(env_id: str, *, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """Build a registered env with ``gymnasium.make`` (``TimeLimit`` included).

    Args:
        env_id: a registered id (see :func:`supported_envs`).
        seed: if given, the env is reset once with it (seeding its ``np_random``) and its action and
            observation spaces are seeded with it, so later unseeded resets are reproducible.
        **kwargs: passed to ``gymnasium.make`` (e.g. ``render_mode``). Arguments that change observation,
            termination or reward make the spec's functions wrong for this env.
    """
    get_spec(env_id)
    env = gym.make(env_id, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env
