"""The MuJoCo simulator itself as a :class:`~mbrl.models.protocol.WorldModel` (HalfCheetah, Hopper, Walker2d,
InvertedDoublePendulum v5).

Used as the reference "perfect model": the edge-of-reach experiment (Sims et al., 2024, "The Edge-of-Reach
Problem in Offline Model-Based RL") trains on rollouts of the true dynamics, and rollout error of learned models
is measured against it.

For each batch row the simulator state is rebuilt from the observation and stepped exactly as the env's
``step`` does (``frame_skip`` calls of ``mj_step`` with the action as control); the next observation, reward
and health check are the env's own ``_get_obs`` / ``_get_rew`` / ``is_healthy`` on that state.

Where the reconstruction is exact and where it is not:

- ``qpos[0]`` (the torso's x position) is not in the observation. It does not enter the dynamics (the floor
  is an infinite plane) nor the observation, and the reward only uses its change over the step, so any value
  works; ``x_position`` (default 0) is used.
- Hopper-v5 and Walker2d-v5 clip velocities to ±10 in the observation. A row whose observation holds a
  velocity at ±10 may have had a faster true velocity, so the rebuilt state, and everything predicted from it,
  is approximate for that row. ``info["approximate"]`` flags those rows. HalfCheetah-v5 does not clip:
  exact for every row. Under uniformly random actions Walker2d's joints exceed 10 rad/s often (most rows);
  Hopper's almost never.
- InvertedDoublePendulum-v5 observes the cart position, sin and cos of both hinge angles (the angles are
  recovered with ``atan2``), the velocities clipped to ±10 (rows at the clip are flagged ``approximate``) and one
  constraint force, which is recomputed by the step rather than read. Reward and termination (tip height ≤ 1)
  are the env's own, from the tip site after the step.
- The constraint solver's warm start (``qacc_warmstart``, from the previous step in the real env) is reset
  to zero for every row, so predictions do not depend on call history; its effect is below 1e-13.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from torch import Tensor

from mbrl.gym_env import make_seeded
from mbrl.types import Metrics, ModelStep, TransitionBatch

SUPPORTED = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "InvertedDoublePendulum-v5")
_CLIPPED_VELOCITY_ENVS = {"Hopper-v5": 10.0, "Walker2d-v5": 10.0, "InvertedDoublePendulum-v5": 10.0}
_PENDULUM = "InvertedDoublePendulum-v5"


class TrueDynamicsModel:
    """Exact MuJoCo dynamics for HalfCheetah-v5, Hopper-v5, Walker2d-v5 and InvertedDoublePendulum-v5 (default
    constructor arguments).

    ``predict`` returns the env's next observation, reward and ``terminated`` for each row, in the dtype of
    ``obs`` (float32 in the toolkit; pass float64 for bit-level agreement with the env). ``info`` holds
    ``"uncertainty"`` (zeros ``[B]``) and ``"approximate"`` (``[B]`` 1.0 where the observation's velocity clip
    makes the rebuilt state uncertain; see the module docstring). Rows with non-finite inputs, or on which
    MuJoCo detects an unstable simulation, come back as NaN. Nothing is learned: ``update`` does nothing and
    ``state_dict`` is empty. ``deterministic`` and ``generator`` are ignored (the model is exact).

    Args:
        env_id: one of :data:`SUPPORTED`.
        x_position: the torso x position assumed before each step (unobserved; irrelevant to the dynamics).
    """

    def __init__(self, env_id: str, *, x_position: float = 0.0) -> None:
        if env_id not in SUPPORTED:
            raise ValueError(
                f"TrueDynamicsModel: unsupported env id {env_id!r}; supported: {', '.join(SUPPORTED)}"
            )
        built = make_seeded(env_id)
        self.env_id = env_id
        self.obs_dim = int(built.observation_space.shape[0])  # type: ignore[index]
        self.action_dim = int(built.action_space.shape[0])  # type: ignore[index]
        self.x_position = float(x_position)
        unwrapped = built.unwrapped
        if not isinstance(unwrapped, MujocoEnv):
            raise TypeError(f"TrueDynamicsModel: {env_id} is not a MuJoCo env")
        # Typed Any: _get_obs, _get_rew and is_healthy are defined by the concrete v5 env classes.
        env: Any = unwrapped
        self._env = env
        self._model = env.model
        self._data = env.data
        self._nq = int(self._model.nq)
        self._frame_skip = int(env.frame_skip)
        self._dt = float(env.dt)
        self._ctrl_low = self._model.actuator_ctrlrange[:, 0].copy()
        self._ctrl_high = self._model.actuator_ctrlrange[:, 1].copy()
        self._velocity_clip = _CLIPPED_VELOCITY_ENVS.get(env_id)
        # Observation columns holding (clipped) velocities: after qpos[1:] for the locomotion envs; after
        # x, sin, cos for the pendulum (its last column is a constraint force).
        nv = int(self._model.nv)
        self._velocity_cols = slice(1 + 2 * (self._nq - 1), 1 + 2 * (self._nq - 1) + nv) if env_id == _PENDULUM else slice(self._nq - 1, None)
        self._has_health = hasattr(type(env), "is_healthy")
        self._bad_warnings = (
            int(mujoco.mjtWarning.mjWARN_BADQPOS),
            int(mujoco.mjtWarning.mjWARN_BADQVEL),
            int(mujoco.mjtWarning.mjWARN_BADQACC),
        )

    def _step_row(self, obs: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float, bool] | None:
        """One env step from the state rebuilt from ``obs``; ``None`` if MuJoCo reports instability."""
        m, d, env = self._model, self._data, self._env
        mujoco.mj_resetData(m, d)  # zero warm start, time, warnings: the prediction depends only on the row
        if self.env_id == _PENDULUM:
            k = self._nq - 1  # hinge angles
            d.qpos[0] = obs[0]
            d.qpos[1:] = np.arctan2(obs[1 : 1 + k], obs[1 + k : 1 + 2 * k])
            d.qvel[:] = obs[self._velocity_cols]
        else:
            d.qpos[0] = self.x_position
            d.qpos[1:] = obs[: self._nq - 1]
            d.qvel[:] = obs[self._nq - 1 :]
        # The XMLs declare ctrllimited actuators, so MuJoCo clamps ctrl to ctrlrange itself; clipping here is
        # the same thing made explicit. The env's control cost uses the action as given (unclipped), as below.
        d.ctrl[:] = np.clip(action, self._ctrl_low, self._ctrl_high)
        mujoco.mj_step(m, d, nstep=self._frame_skip)
        mujoco.mj_rnePostConstraint(m, d)  # as MujocoEnv._step_mujoco_simulation does
        if any(d.warning[w].number > 0 for w in self._bad_warnings):
            return None  # MuJoCo reset the state after a blow-up: the step has no meaningful result
        if self.env_id == _PENDULUM:
            x, _, y = d.site_xpos[0]
            tip_down = bool(y <= 1)
            reward, _ = env._get_rew(x, y, tip_down)
            return np.asarray(env._get_obs(), dtype=np.float64), float(reward), tip_down
        x_velocity = (d.qpos[0] - self.x_position) / self._dt
        next_obs = np.asarray(env._get_obs(), dtype=np.float64)
        reward, _ = env._get_rew(x_velocity, action)
        terminated = bool(self._has_health and not env.is_healthy)  # terminate_when_unhealthy=True
        return next_obs, float(reward), terminated

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        """Step the simulator once per row.

        Args:
            obs: ``[B, obs_dim]`` observations.
            action: ``[B, action_dim]`` actions in env units.
            deterministic: ignored (exact model).
            generator: ignored (exact model).

        Returns:
            ``ModelStep`` with ``next_obs [B, obs_dim]``, ``reward [B]``, ``terminated [B]`` (float 0/1) and
            ``info["uncertainty"]``, ``info["approximate"]`` ``[B]``; dtype of ``obs`` (float32 if not floating).
        """
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(
                f"TrueDynamicsModel({self.env_id}): expected obs [B, {self.obs_dim}], got {tuple(obs.shape)}"
            )
        if action.ndim != 2 or action.shape != (obs.shape[0], self.action_dim):
            raise ValueError(
                f"TrueDynamicsModel({self.env_id}): expected action [{obs.shape[0]}, {self.action_dim}], "
                f"got {tuple(action.shape)}"
            )
        o = obs.detach().cpu().to(torch.float64).numpy()
        a = action.detach().cpu().to(torch.float64).numpy()
        n = o.shape[0]
        next_obs = np.full((n, self.obs_dim), np.nan)
        reward = np.full(n, np.nan)
        terminated = np.zeros(n)
        finite = np.isfinite(o).all(axis=1) & np.isfinite(a).all(axis=1)
        for i in np.flatnonzero(finite):
            result = self._step_row(o[i], a[i])
            if result is not None:
                next_obs[i], reward[i], terminated[i] = result
        approximate = np.zeros(n)
        if self._velocity_clip is not None:
            approximate = (np.abs(o[:, self._velocity_cols]) >= self._velocity_clip).any(axis=1).astype(np.float64)

        dtype = obs.dtype if obs.is_floating_point() else torch.float32

        def out(x: np.ndarray) -> Tensor:
            return torch.as_tensor(x, dtype=dtype, device=obs.device)

        return ModelStep(
            next_obs=out(next_obs),
            reward=out(reward),
            terminated=out(terminated),
            info={"uncertainty": out(np.zeros(n)), "approximate": out(approximate)},
        )

    def update(self, batch: TransitionBatch) -> Metrics:
        """Nothing to learn."""
        return {}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        """One-step errors against ``batch``: ``mse`` of next_obs (also ``loss``) and ``reward_mse``."""
        step = self.predict(batch.obs, batch.action)
        mse = float(((step.next_obs - batch.next_obs.to(step.next_obs.dtype)) ** 2).mean())
        reward_mse = float(((step.reward - batch.reward.to(step.reward.dtype)) ** 2).mean())
        return {"loss": mse, "mse": mse, "reward_mse": reward_mse}

    def state_dict(self) -> dict[str, Tensor]:
        """Empty: nothing is learned."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Accept only the empty state dict that :meth:`state_dict` returns."""
        if len(state_dict) > 0:
            raise ValueError(
                f"TrueDynamicsModel has no parameters; refusing a state dict with keys {sorted(state_dict)[:5]}"
            )
