"""Batched torch reward functions ``reward_fn(obs [B, D], action [B, A], next_obs [B, D]) -> reward [B]``.

Only envs whose reward is a function of ``(obs, action, next_obs)`` get one; the registry sets
``EnvSpec.reward_fn = None`` for the others and says why in ``EnvSpec.reward_note`` (a model must then learn
the reward). Defaults of gymnasium 1.4's constructors are assumed throughout.

Which rewards are (not) functions of the observed transition:

- Pendulum-v1: ``-(θ² + 0.1 θ̇² + 0.001 u²)`` from the state *before* the step and the action clipped to
  ±2: exact (up to the float32 rounding of the env's own observation).
- InvertedPendulum-v5: ``1 - terminated``: exact.
- InvertedDoublePendulum-v5: ``10 (1 - terminated) - 0.01 x_tip² - (y_tip - 2)² - 1e-3 v1² - 5e-3 v2²``.
  The tip comes from forward kinematics of ``next_obs`` (one RK4 stage later than the env's
  ``site_xpos``, see :func:`mbrl.envs.termination.idp_tip`) and the velocities from ``next_obs``, which clips them
  to ±10: approximate, error about 1e-4 on unclipped rows.
- HalfCheetah/Hopper/Walker2d/Ant-v5: the forward reward is ``(x_after - x_before) / dt``, a finite
  difference of the torso's x position over ``frame_skip`` physics substeps. The x position is not in the
  observation, and the observed x velocity (``qvel[0]``, present for all four) is the instantaneous velocity
  at the end of the step, not that average: no exact function exists, so none is given.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mbrl.envs.termination import idp_tip, inverted_double_pendulum_term_fn, inverted_pendulum_term_fn

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]

PENDULUM_MAX_TORQUE = 2.0  # gymnasium PendulumEnv.max_torque (checked in tests/envs/test_rewards.py)
IDP_HEALTHY_REWARD = 10.0


def _check(obs: Tensor, action: Tensor, obs_dim: int, action_dim: int, name: str) -> None:
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"{name}: expected obs of shape [B, {obs_dim}], got {tuple(obs.shape)}")
    if action.ndim != 2 or action.shape[1] != action_dim or action.shape[0] != obs.shape[0]:
        raise ValueError(
            f"{name}: expected action of shape [{obs.shape[0]}, {action_dim}], got {tuple(action.shape)}"
        )


def pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Pendulum-v1 reward from ``obs = [cos θ, sin θ, θ̇]`` before the step and the clipped torque.

    The env normalises θ to [-π, π) before squaring; ``atan2`` returns (-π, π], same square.
    """
    _check(obs, action, 3, 1, "pendulum_reward")
    theta = torch.atan2(obs[:, 1], obs[:, 0])
    theta_dot = obs[:, 2]
    u = action[:, 0].clamp(-PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    return -(theta**2 + 0.1 * theta_dot**2 + 0.001 * u**2)


def inverted_pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5 reward: ``int(not terminated)``, exact."""
    _check(next_obs, action, 4, 1, "inverted_pendulum_reward")
    return 1.0 - inverted_pendulum_term_fn(obs, action, next_obs)


def inverted_double_pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedDoublePendulum-v5 reward, approximate (see the module docstring).

    ``alive - 0.01 x² - (y - 2)² - 1e-3 v1² - 5e-3 v2²`` with the tip ``(x, y)`` from :func:`idp_tip` and
    the hinge velocities ``v1, v2 = next_obs[:, 6:8]`` (clipped to ±10 by the env's observation; the env
    uses the unclipped ones).
    """
    _check(next_obs, action, 9, 1, "inverted_double_pendulum_reward")
    x, y = idp_tip(next_obs)
    v1, v2 = next_obs[:, 6], next_obs[:, 7]
    alive = IDP_HEALTHY_REWARD * (1.0 - inverted_double_pendulum_term_fn(obs, action, next_obs))
    return alive - (0.01 * x**2 + (y - 2.0) ** 2) - (1e-3 * v1**2 + 5e-3 * v2**2)
