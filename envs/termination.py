"""Batched torch termination functions that reproduce each supported env's own ``terminated`` flag.

Every function has the signature ``term_fn(obs [B, D], action [B, A], next_obs [B, D]) -> terminated [B]``
(float 0/1 in ``next_obs``'s dtype) and reproduces gymnasium 1.4's env with its **default** v5 constructor
arguments (``exclude_current_positions_from_observation=True`` etc.). The envs decide termination *after* the
physics step, from the new state, so these functions read ``next_obs``; ``obs`` and ``action`` are accepted
for a uniform signature.

The envs compare in float64. Pass float64 tensors for bit-for-bit agreement; float32 inputs agree except
for states within float32 rounding (~1e-7 relative) of a threshold.

Comparisons follow the envs' exact inequalities (strict ``<`` for Hopper/Walker2d, inclusive ``<=`` for Ant),
and NaN handling falls out the same way: a NaN fails every healthy comparison (terminated), while
InvertedDoublePendulum's ``y <= 1`` with a NaN ``y`` is False (not terminated), as in the env.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

TermFn = Callable[[Tensor, Tensor, Tensor], Tensor]

# InvertedDoublePendulum geometry (gymnasium's inverted_double_pendulum.xml): both hinges act about the y
# axis; the first hinge sits on the cart at height 0, the second 0.6 up the first pole, and the "tip" site
# 0.6 up the second pole. tests/envs/test_termination.py checks these against the compiled MuJoCo model.
IDP_POLE_LENGTHS: tuple[float, float] = (0.6, 0.6)
IDP_HINGE_HEIGHT: float = 0.0


def _check(next_obs: Tensor, obs_dim: int, name: str) -> None:
    if next_obs.ndim != 2 or next_obs.shape[1] != obs_dim:
        raise ValueError(f"{name}: expected next_obs of shape [B, {obs_dim}], got {tuple(next_obs.shape)}")


def _as_flag(terminated: Tensor, like: Tensor) -> Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return terminated.to(dtype)


def never_terminates(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """HalfCheetah-v5 and Pendulum-v1: ``terminated`` is always False (episodes end only by time limit)."""
    return _as_flag(torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device), next_obs)


def hopper_term_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper-v5 (obs 11 = qpos[1:6], clip(qvel, ±10)).

    Healthy iff, strictly, every element of ``state_vector()[2:]`` (= qpos[2:], qvel) is in (-100, 100),
    ``z = qpos[1] = obs[0]`` is in (0.7, inf) and ``angle = qpos[2] = obs[1]`` is in (-0.2, 0.2).
    ``state_vector()[2:]`` is ``next_obs[:, 1:]`` except that the observation clips velocities to ±10, so a
    joint speed of 100 or more (which the clipped observation cannot show) terminates the env but not this
    function. No such step occurred in our test data (random actions); a model fit on env data never sees
    an observed speed above 10.
    """
    _check(next_obs, 11, "hopper_term_fn")
    z, angle, state = next_obs[:, 0], next_obs[:, 1], next_obs[:, 1:]
    healthy_state = ((state > -100.0) & (state < 100.0)).all(dim=1)
    healthy_z = (z > 0.7) & (z < math.inf)
    healthy_angle = (angle > -0.2) & (angle < 0.2)
    return _as_flag(~(healthy_state & healthy_z & healthy_angle), next_obs)


def walker2d_term_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Walker2d-v5 (obs 17): healthy iff ``z = obs[0]`` in (0.8, 2.0) and ``angle = obs[1]`` in (-1, 1), strictly."""
    _check(next_obs, 17, "walker2d_term_fn")
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return _as_flag(~healthy, next_obs)


def ant_term_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Ant-v5 (obs 105 = qpos[2:15], qvel[0:14], clipped cfrc_ext[1:] (78)).

    Healthy iff the state vector is finite and ``0.2 <= z <= 1.0`` (inclusive) with ``z = qpos[2] = obs[0]``.
    The env checks finiteness of the full ``state_vector()`` (qpos, qvel); the observation holds all of it
    except the torso's x/y (qpos[0:2]), which cannot become non-finite while the rest stays finite, so we
    check ``next_obs[:, :27]``. Works for ``include_cfrc_ext_in_observation=False`` (obs 27) too.
    """
    if next_obs.ndim != 2 or next_obs.shape[1] not in (27, 105):
        raise ValueError(
            f"ant_term_fn: expected next_obs of shape [B, 105] (or [B, 27]), got {tuple(next_obs.shape)}"
        )
    z = next_obs[:, 0]
    healthy = torch.isfinite(next_obs[:, :27]).all(dim=1) & (z >= 0.2) & (z <= 1.0)
    return _as_flag(~healthy, next_obs)


def inverted_pendulum_term_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5 (obs 4 = qpos, qvel): terminated iff obs not all finite or ``|pole angle obs[1]| > 0.2``."""
    _check(next_obs, 4, "inverted_pendulum_term_fn")
    terminated = ~torch.isfinite(next_obs).all(dim=1) | (next_obs[:, 1].abs() > 0.2)
    return _as_flag(terminated, next_obs)


def idp_tip(next_obs: Tensor) -> tuple[Tensor, Tensor]:
    """Tip position ``(x, y)`` [B] of InvertedDoublePendulum-v5 from its observation.

    obs 9 = ``[cart x, sin θ1, sin θ2, cos θ1, cos θ2, clip(qvel, ±10) (3), clip(qfrc_constraint[0], ±10)]``,
    θ2 relative to the first pole. The tip is not in the observation; forward kinematics give
    ``x = cart_x + l1 sin θ1 + l2 sin(θ1+θ2)`` and ``y = h + l1 cos θ1 + l2 cos(θ1+θ2)``.

    The env reads ``data.site_xpos`` after ``mj_step``, i.e. the kinematics of the last RK4 stage, which lag
    the final ``qpos`` of the step by O(h³): measured |Δy| <= 6e-5 on random-policy data. The termination
    test ``y <= 1`` agrees on every step of our test data; rewards built on ``(x, y)`` are approximate.
    """
    l1, l2 = IDP_POLE_LENGTHS
    s1, s2, c1, c2 = next_obs[:, 1], next_obs[:, 2], next_obs[:, 3], next_obs[:, 4]
    s12 = s1 * c2 + c1 * s2  # sin(θ1 + θ2)
    c12 = c1 * c2 - s1 * s2  # cos(θ1 + θ2)
    x = next_obs[:, 0] + l1 * s1 + l2 * s12
    y = IDP_HINGE_HEIGHT + l1 * c1 + l2 * c12
    return x, y


def inverted_double_pendulum_term_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedDoublePendulum-v5: terminated iff the tip height ``y <= 1`` (see :func:`idp_tip`)."""
    _check(next_obs, 9, "inverted_double_pendulum_term_fn")
    _, y = idp_tip(next_obs)
    return _as_flag(y <= 1.0, next_obs)
