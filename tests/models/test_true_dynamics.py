"""TrueDynamicsModel reproduces the real env step for step (next_obs, reward, terminated)."""

from __future__ import annotations

import math

import pytest
import torch

from mbrl.models.protocol import WorldModel
from mbrl.models.true_dynamics import TrueDynamicsModel
from mbrl.types import TransitionBatch
from tests.envs.rollout_data import collect

ENVS = ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "InvertedDoublePendulum-v5"]
STEPS = 400
# obs columns of the velocities (clipped at ±10 except in HalfCheetah); the pendulum's last column is a force
VELOCITY_COLS = {"Hopper-v5": slice(5, None), "Walker2d-v5": slice(8, None), "InvertedDoublePendulum-v5": slice(5, 8)}


def _clipped_rows(env_id: str, obs: torch.Tensor) -> torch.Tensor:
    """Rows whose observation shows a velocity at the ±10 clip (HalfCheetah does not clip)."""
    if env_id == "HalfCheetah-v5":
        return torch.zeros(len(obs), dtype=torch.bool)
    return (obs[:, VELOCITY_COLS[env_id]].abs() >= 10).any(dim=1)


# Walker2d's legs spin past 10 rad/s on ~80 % of steps under full-range random actions, so its main check
# uses actions scaled by 0.2 (clipped rows ~2 %); test_walker2d_full_range_actions covers the full range.
@pytest.mark.parametrize(
    ("env_id", "action_scale"),
    [("HalfCheetah-v5", 1.0), ("Hopper-v5", 1.0), ("Walker2d-v5", 0.2), ("InvertedDoublePendulum-v5", 1.0)],
)
def test_predictions_equal_real_env(env_id: str, action_scale: float) -> None:
    data = collect(env_id, STEPS, seed=1, action_scale=action_scale)  # random actions, resets included
    model = TrueDynamicsModel(env_id)
    step = model.predict(data.obs, data.action)
    assert step.next_obs.dtype == torch.float64  # float64 in -> float64 out

    clipped = _clipped_rows(env_id, data.obs)
    assert torch.equal(step.info["approximate"] > 0, clipped)
    assert clipped.float().mean() <= 0.05, clipped.float().mean()
    exact = ~clipped
    torch.testing.assert_close(step.next_obs[exact], data.next_obs[exact], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(step.reward[exact], data.reward[exact], rtol=1e-6, atol=1e-6)
    assert torch.equal(step.terminated[exact], data.terminated[exact])
    if env_id != "HalfCheetah-v5":
        assert data.terminated[exact].sum() >= 5  # terminal steps are among the compared ones
    assert torch.equal(step.info["uncertainty"], torch.zeros(STEPS, dtype=torch.float64))


def test_walker2d_full_range_actions() -> None:
    data = collect("Walker2d-v5", STEPS, seed=1)
    step = TrueDynamicsModel("Walker2d-v5").predict(data.obs, data.action)
    clipped = _clipped_rows("Walker2d-v5", data.obs)
    assert torch.equal(step.info["approximate"] > 0, clipped)
    assert 50 <= int((~clipped).sum()) <= STEPS - 50  # both kinds are common here
    torch.testing.assert_close(step.next_obs[~clipped], data.next_obs[~clipped], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(step.reward[~clipped], data.reward[~clipped], rtol=1e-6, atol=1e-6)
    # the flag is meaningful: rebuilt from a clipped velocity, most predictions are visibly off
    err = (step.next_obs[clipped] - data.next_obs[clipped]).abs().amax(dim=1)
    assert (err > 1e-3).float().mean() > 0.5


def test_float32_inputs_give_float32_and_close() -> None:
    data = collect("HalfCheetah-v5", STEPS, seed=1)
    step = TrueDynamicsModel("HalfCheetah-v5").predict(data.obs.float(), data.action.float())
    assert step.next_obs.dtype == step.reward.dtype == step.terminated.dtype == torch.float32
    # Rounding the state to float32 perturbs it by ~1e-7 relative; contacts amplify that a little.
    err = (step.next_obs.double() - data.next_obs).abs() / (1 + data.next_obs.abs())
    assert err.median() < 1e-5 and err.max() < 1e-2, (err.median(), err.max())


def test_x_position_does_not_matter() -> None:
    data = collect("Hopper-v5", 100, seed=2)
    a = TrueDynamicsModel("Hopper-v5").predict(data.obs, data.action)
    b = TrueDynamicsModel("Hopper-v5", x_position=37.5).predict(data.obs, data.action)
    torch.testing.assert_close(a.next_obs, b.next_obs, rtol=0, atol=1e-9)
    torch.testing.assert_close(a.reward, b.reward, rtol=0, atol=1e-6)


def test_predictions_do_not_depend_on_history_or_row_order() -> None:
    data = collect("Walker2d-v5", 200, seed=3)
    model = TrueDynamicsModel("Walker2d-v5")
    first = model.predict(data.obs, data.action)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    again = model.predict(data.obs[perm], data.action[perm])
    assert torch.equal(again.next_obs, first.next_obs[perm])
    assert torch.equal(again.reward, first.reward[perm])


def test_nonfinite_or_unstable_rows_are_nan_and_others_unaffected() -> None:
    data = collect("HalfCheetah-v5", 4, seed=4)
    obs = data.obs.clone()
    obs[1, 0] = math.nan
    obs[2, 10] = 1e12  # MuJoCo flags this velocity as unstable
    model = TrueDynamicsModel("HalfCheetah-v5")
    with pytest.warns(RuntimeWarning, match="MuJoCo"):
        step = model.predict(obs, data.action)
    assert torch.isnan(step.next_obs[1:3]).all() and torch.isnan(step.reward[1:3]).all()
    torch.testing.assert_close(step.next_obs[[0, 3]], data.next_obs[[0, 3]], rtol=1e-6, atol=1e-6)


def test_world_model_protocol_and_no_op_learning() -> None:
    model = TrueDynamicsModel("Hopper-v5")
    assert isinstance(model, WorldModel)
    assert (model.obs_dim, model.action_dim) == (11, 3)
    data = collect("Hopper-v5", 200, seed=5)
    batch = TransitionBatch(
        data.obs.float(),
        data.action.float(),
        data.reward.float(),
        data.next_obs.float(),
        data.terminated.float(),
        data.truncated.float(),
    )
    assert model.update(batch) == {}
    metrics = model.evaluate(batch)
    assert metrics["loss"] == metrics["mse"] and 0 <= metrics["mse"] < 1e-8 and metrics["reward_mse"] < 1e-8
    shifted = TransitionBatch(
        batch.obs, batch.action, batch.reward, batch.next_obs + 0.1, batch.terminated, batch.truncated
    )
    assert model.evaluate(shifted)["mse"] == pytest.approx(0.01, rel=1e-3)
    assert model.state_dict() == {}
    model.load_state_dict({})
    with pytest.raises(ValueError, match="no parameters"):
        model.load_state_dict({"w": torch.zeros(1)})


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported env id 'Ant-v5'"):
        TrueDynamicsModel("Ant-v5")
    model = TrueDynamicsModel("HalfCheetah-v5")
    with pytest.raises(ValueError, match=r"expected obs \[B, 17\]"):
        model.predict(torch.zeros(2, 11), torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"expected action \[2, 6\]"):
        model.predict(torch.zeros(2, 17), torch.zeros(2, 3))
