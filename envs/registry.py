"""Registry of the supported gymnasium environments with their termination and reward functions.

``get_spec(env_id)`` returns an :class:`EnvSpec`; ``make_env(env_id, seed=...)`` builds the env. The
functions in a spec reproduce the env built with gymnasium 1.4's **default** constructor arguments; passing
kwargs to :func:`make_env` that change the observation, termination or reward (e.g.
``terminate_when_unhealthy=False``) makes them wrong for that env.

Importing this module installs a MuJoCo warning handler (:mod:`mbrl.gym_env`) (only if none is installed yet): MuJoCo otherwise
appends every warning to ``MUJOCO_LOG.TXT`` in the working directory and prints it. The handler drops
HalfCheetah's known ``settotalmass`` XML deprecation and turns any other MuJoCo warning into a Python
``RuntimeWarning``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from mbrl.envs import rewards, termination
from mbrl.envs.rewards import RewardFn
from mbrl.envs.termination import TermFn
from mbrl.gym_env import make_seeded


@dataclass(frozen=True)
class EnvSpec:
    """What the toolkit knows about one supported environment.

    Attributes:
        env_id: gymnasium id, e.g. ``"Hopper-v5"``.
        obs_dim: observation size D (default constructor arguments).
        action_dim: action size A.
        term_fn: ``(obs [B, D], action [B, A], next_obs [B, D]) -> terminated [B]`` float 0/1, reproducing the
            env's own termination (see :mod:`mbrl.envs.termination`); ``None`` for an env registered without one
            (model-free agents run on it; model-based agents refuse it until one is registered).
        reward_fn: ``(obs, action, next_obs) -> reward [B]`` where the reward is a function of the observed
            transition, else ``None`` (the model must learn the reward). See :mod:`mbrl.envs.rewards`.
        reward_note: how exact ``reward_fn`` is, or why there is none.
        max_episode_steps: the ``TimeLimit`` gymnasium registers (steps after which ``truncated``).
        d4rl_name: the env's name in D4RL dataset ids (``"hopper"`` in ``hopper-medium-v2``), or ``None``.
    """

    env_id: str
    obs_dim: int
    action_dim: int
    term_fn: TermFn | None
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


def register_env(
    env_id: str,
    term_fn: TermFn | None = None,
    reward_fn: RewardFn | None = None,
    *,
    reward_note: str = "none: the model learns the reward",
    d4rl_name: str | None = None,
    **make_kwargs: Any,
) -> EnvSpec:
    """Register any gymnasium env with a flat ``Box`` observation and a ``Box`` action space.

    Args:
        env_id: a gymnasium id (``gymnasium.make`` must know it, e.g. after importing the package that
            registers it).
        term_fn: the env's termination as a batched torch function of ``(obs, action, next_obs)``; ``None``: the
            toolkit does not know it (model-free SAC runs; Dyna, RAVL and MOPO refuse the env by name).
            ``mbrl.envs.termination.never_terminates`` for an env that only truncates.
        reward_fn: the reward as such a function, when it is one of the observed transition.
        reward_note: how exact ``reward_fn`` is, or why there is none.
        d4rl_name: the env's name in D4RL dataset ids, if any.
        **make_kwargs: passed to ``gymnasium.make`` to read the spaces.

    Returns:
        The new :class:`EnvSpec` (it replaces an earlier registration of ``env_id``).

    Raises:
        ValueError: gymnasium cannot build the env, or its spaces are not flat ``Box`` spaces.
    """
    try:
        env = gym.make(env_id, **make_kwargs)
    except Exception as exc:  # gymnasium raises several error types (NameNotFound, DependencyNotInstalled...)
        raise ValueError(f"register_env: gymnasium cannot build {env_id!r}: {exc}") from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
            raise ValueError(f"register_env: {env_id!r} needs a 1-d Box action space, has {act_space}")
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ValueError(f"register_env: {env_id!r} needs a flat Box observation space, has {obs_space}")
        limit = env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()
    spec = EnvSpec(
        env_id, int(obs_space.shape[0]), int(act_space.shape[0]), term_fn, reward_fn, reward_note,
        int(limit) if limit is not None else 0, d4rl_name,
    )
    _SPECS[env_id] = spec
    return spec


def get_spec(env_id: str) -> EnvSpec:
    """The :class:`EnvSpec` of ``env_id``. A gymnasium env the registry does not know yet is registered on first
    use without termination or reward functions (:func:`register_env`); an id gymnasium does not know either
    is a ``ValueError`` naming the registered ones."""
    if env_id in _SPECS:
        return _SPECS[env_id]
    if env_id in gym.registry:
        return register_env(env_id)
    raise ValueError(
        f"unknown env id {env_id!r}: gymnasium does not know it (registered here: {', '.join(_SPECS)}; "
        "import the package that registers it, then mbrl.envs.register_env)"
    )


def require_term_fn(spec: EnvSpec, who: str) -> TermFn:
    """``spec.term_fn``, or a ``ValueError`` saying that model-based ``who`` needs one registered."""
    if spec.term_fn is None:
        raise ValueError(
            f"{who}: {spec.env_id} has no registered termination function, which model rollouts need; register "
            f"one with mbrl.envs.register_env({spec.env_id!r}, term_fn=...) (mbrl.envs.termination.never_terminates if "
            "the env only truncates), or train model-free SAC"
        )
    return spec.term_fn


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
    return make_seeded(env_id, seed=seed, **kwargs)
