"""Reward functions against the real envs' rewards, and evidence for the envs that get none."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mbrl.envs import get_spec, make_env, supported_envs
from mbrl.envs.rewards import PENDULUM_MAX_TORQUE
from tests.envs.rollout_data import collect

STEPS = 3000


def test_which_envs_have_reward_fns() -> None:
    with_fn = {e for e in supported_envs() if get_spec(e).reward_fn is not None}
    assert with_fn == {"Pendulum-v1", "InvertedPendulum-v5", "InvertedDoublePendulum-v5"}
    for env_id in supported_envs():
        note = get_spec(env_id).reward_note
        assert note.split(":")[0] in ({"none"} if env_id not in with_fn else {"exact", "approximate"}), note


def test_pendulum_reward_exact_with_clipped_actions() -> None:
    pendulum: Any = make_env("Pendulum-v1").unwrapped
    assert pendulum.max_torque == PENDULUM_MAX_TORQUE
    data = collect("Pendulum-v1", STEPS, action_scale=1.5)  # actions up to ±3: a third beyond the ±2 clip
    assert (data.action.abs() > PENDULUM_MAX_TORQUE).float().mean() > 0.2
    pred = get_spec("Pendulum-v1").reward_fn(data.obs, data.action, data.next_obs)  # type: ignore[misc]
    # The env's observation is float32 (θ̇ rounded): that is the only difference.
    torch.testing.assert_close(pred, data.reward, rtol=1e-6, atol=1e-6)
    unclipped = get_spec("Pendulum-v1").reward_fn(data.obs, data.action.clamp(-2, 2), data.next_obs)  # type: ignore[misc]
    torch.testing.assert_close(pred, unclipped, rtol=0, atol=0)


def test_inverted_pendulum_reward_exact() -> None:
    data = collect("InvertedPendulum-v5", STEPS)
    assert 0 < data.terminated.sum() < len(data.reward)
    pred = get_spec("InvertedPendulum-v5").reward_fn(data.obs, data.action, data.next_obs)  # type: ignore[misc]
    assert torch.equal(pred, data.reward)


def test_inverted_double_pendulum_reward_approximate() -> None:
    data = collect("InvertedDoublePendulum-v5", STEPS)
    pred = get_spec("InvertedDoublePendulum-v5").reward_fn(data.obs, data.action, data.next_obs)  # type: ignore[misc]
    clipped = (data.next_obs[:, 5:8].abs() >= 10).any(dim=1)
    assert clipped.float().mean() < 0.01
    err = (pred - data.reward).abs()[~clipped]
    # The tip kinematics lag one RK4 stage in the env (|Δy| <= ~6e-5): the error is small but not float-exact.
    assert err.max() < 5e-4, err.max()
    assert err.median() < 1e-4
    # alive bonus (10) agrees on every row, including terminal ones
    assert ((pred < 0) == (data.terminated > 0))[~clipped].all()


@pytest.mark.parametrize(
    ("env_id", "ctrl_weight"), [("HalfCheetah-v5", 0.1), ("Hopper-v5", 1e-3), ("Walker2d-v5", 1e-3)]
)
def test_forward_reward_is_not_a_function_of_the_observation(env_id: str, ctrl_weight: float) -> None:
    """The best observation-based guess (observed end-of-step x velocity qvel[0] instead of the env's
    finite difference of x over the step) is off by far more than float error: hence reward_fn is None."""
    data = collect(env_id, 1000)
    x_velocity_index = {"HalfCheetah-v5": 8, "Hopper-v5": 5, "Walker2d-v5": 8}[env_id]
    healthy = 1.0 - data.terminated if env_id != "HalfCheetah-v5" else torch.zeros_like(data.reward)
    guess = data.next_obs[:, x_velocity_index] + healthy - ctrl_weight * (data.action**2).sum(dim=1)
    err = (guess - data.reward).abs()
    assert err.median() > 1e-3, err.median()
    assert get_spec(env_id).reward_fn is None
