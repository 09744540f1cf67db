"""Termination functions against the real envs: every step of thousands of real transitions, plus the envs'
own health predicates on hand-set states at the thresholds."""

from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np
import pytest
import torch

from mbrl.envs import get_spec, make_env
from mbrl.envs.termination import IDP_HINGE_HEIGHT, IDP_POLE_LENGTHS, idp_tip
from tests.envs.rollout_data import Rollout, collect, collect_ant_dropped

STEPS = 3000
# Envs whose random-action episodes end by termination often; the least we require to have seen in STEPS.
MIN_TERMINAL = {
    "Hopper-v5": 50,
    "Walker2d-v5": 50,
    "InvertedPendulum-v5": 200,
    "InvertedDoublePendulum-v5": 200,
}


def _data(env_id: str) -> Rollout:
    if env_id == "Ant-v5":
        a, b = collect(env_id, STEPS), collect_ant_dropped(1000)
        return Rollout(*(torch.cat([x, y]) for x, y in zip(a.__dict__.values(), b.__dict__.values())))
    return collect(env_id, STEPS)


@pytest.mark.parametrize(
    "env_id",
    [
        "HalfCheetah-v5",
        "Hopper-v5",
        "Walker2d-v5",
        "Ant-v5",
        "InvertedPendulum-v5",
        "InvertedDoublePendulum-v5",
        "Pendulum-v1",
    ],
)
def test_term_fn_agrees_with_env_on_every_step(env_id: str) -> None:
    data = _data(env_id)
    term_fn = get_spec(env_id).term_fn
    n_terminal = int(data.terminated.sum())
    if env_id in ("HalfCheetah-v5", "Pendulum-v1"):
        assert n_terminal == 0
    else:
        assert n_terminal >= MIN_TERMINAL.get(env_id, 50), f"{env_id}: only {n_terminal} terminal steps seen"
    for dtype in (torch.float64, torch.float32):
        pred = term_fn(data.obs.to(dtype), data.action.to(dtype), data.next_obs.to(dtype))
        assert pred.shape == (len(data.obs),) and pred.dtype == dtype
        assert set(pred.unique().tolist()) <= {0.0, 1.0}
        wrong = torch.nonzero(pred.double() != data.terminated).flatten()
        assert len(wrong) == 0, (
            f"{env_id} ({dtype}): {len(wrong)} disagreements, first rows {wrong[:5].tolist()}"
        )


def _env_health(env_id: str, qpos: np.ndarray, qvel: np.ndarray) -> tuple[bool, torch.Tensor]:
    """(env says terminated, observation) for a hand-set state, using the env's own ``is_healthy``."""
    u: Any = make_env(env_id).unwrapped
    u.data.qpos[:] = qpos
    u.data.qvel[:] = qvel
    mujoco.mj_forward(u.model, u.data)
    return (not u.is_healthy), torch.as_tensor(u._get_obs(), dtype=torch.float64)[None]


@pytest.mark.parametrize(
    ("env_id", "index", "values"),
    [
        # Hopper: z = qpos[1] in (0.7, inf), angle = qpos[2] in (-0.2, 0.2), other state in (-100, 100).
        ("Hopper-v5", ("qpos", 1), [0.7, math.nextafter(0.7, 1), 0.69, 1.5, math.inf, math.nan]),
        (
            "Hopper-v5",
            ("qpos", 2),
            [-0.2, math.nextafter(-0.2, 0), 0.0, math.nextafter(0.2, 0), 0.2, 0.3, math.nan],
        ),
        ("Hopper-v5", ("qpos", 4), [-100.0, -99.99, 99.99, 100.0, math.nan]),
        ("Hopper-v5", ("qvel", 3), [-9.5, 9.99, math.nan]),
        # Walker2d: z in (0.8, 2.0), angle in (-1, 1).
        ("Walker2d-v5", ("qpos", 1), [0.8, math.nextafter(0.8, 1), 1.99, 2.0, math.nan]),
        ("Walker2d-v5", ("qpos", 2), [-1.0, -0.99, 0.99, 1.0, math.nan]),
        # Ant: z = qpos[2] in [0.2, 1.0] (inclusive) and every state entry finite.
        ("Ant-v5", ("qpos", 2), [0.2, math.nextafter(0.2, 0), 0.5, 1.0, math.nextafter(1.0, 2), math.nan]),
        ("Ant-v5", ("qvel", 7), [1.0, math.inf, math.nan]),
    ],
)
def test_term_fn_matches_env_health_predicate_at_thresholds(
    env_id: str, index: tuple[str, int], values: list[float]
) -> None:
    u: Any = make_env(env_id, seed=0).unwrapped
    base_qpos, base_qvel = u.data.qpos.copy(), u.data.qvel.copy()
    term_fn = get_spec(env_id).term_fn
    seen = set()
    for value in values:
        qpos, qvel = base_qpos.copy(), base_qvel.copy()
        (qpos if index[0] == "qpos" else qvel)[index[1]] = value
        env_terminated, obs = _env_health(env_id, qpos, qvel)
        pred = term_fn(obs, torch.zeros(1, get_spec(env_id).action_dim, dtype=torch.float64), obs)
        assert pred.item() == float(env_terminated), (
            f"{env_id} {index}={value}: env {env_terminated}, term_fn {pred.item()}"
        )
        seen.add(env_terminated)
    assert seen == {True, False}  # each case list straddles its threshold


def test_idp_geometry_matches_model_and_kinematics() -> None:
    u: Any = make_env("InvertedDoublePendulum-v5").unwrapped
    m, d = u.model, u.data
    pole = m.body("pole").id
    pole2 = m.body("pole2").id
    assert m.body_pos[pole][2] == IDP_HINGE_HEIGHT and m.body_pos[m.body("cart").id][2] == 0.0
    assert m.body_pos[pole2][2] == IDP_POLE_LENGTHS[0]
    assert m.site_pos[m.site("tip").id][2] == IDP_POLE_LENGTHS[1]
    rng = np.random.default_rng(0)
    for _ in range(50):
        d.qpos[:] = rng.uniform([-1, -np.pi, -np.pi], [1, np.pi, np.pi])
        mujoco.mj_kinematics(m, d)
        x, y = idp_tip(torch.as_tensor(u._get_obs())[None])
        assert x.item() == pytest.approx(d.site_xpos[0][0], abs=1e-12)
        assert y.item() == pytest.approx(d.site_xpos[0][2], abs=1e-12)


def test_inverted_pendulum_thresholds() -> None:
    term_fn = get_spec("InvertedPendulum-v5").term_fn
    obs = torch.tensor(
        [
            [0, 0.2, 0, 0],
            [0, -0.2, 0, 0],
            [0, math.nextafter(0.2, 1), 0, 0],
            [0, -0.3, 0, 0],
            [math.nan, 0, 0, 0],
            [0, 0, math.inf, 0],
        ],
        dtype=torch.float64,
    )
    assert term_fn(obs, torch.zeros(6, 1), obs).tolist() == [0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "env_id", ["Hopper-v5", "Walker2d-v5", "InvertedPendulum-v5", "InvertedDoublePendulum-v5"]
)
def test_wrong_obs_dim_is_refused(env_id: str) -> None:
    bad = torch.zeros(4, get_spec(env_id).obs_dim + 1)
    with pytest.raises(ValueError, match=r"expected next_obs of shape \[B, "):
        get_spec(env_id).term_fn(bad, torch.zeros(4, 1), bad)
