"""Behaviour cloning recovers a linear expert on synthetic data."""

import io

import numpy as np
import pytest
import torch

from mbrl.rl.bc import BC, BCConfig
from mbrl.types import TransitionBatch

LOW, HIGH = np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 4.0], dtype=np.float32)


def expert_data(n: int, seed: int) -> TransitionBatch:
    """A linear expert a = M s + c that stays strictly inside the asymmetric bounds for s in [-1, 1]^3."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    m = np.array([[0.5, -0.4, 0.3], [0.2, 0.6, -0.5]], dtype=np.float32)
    action = obs @ m.T + np.array([0.1, 2.0], dtype=np.float32)
    zeros = np.zeros(n, dtype=np.float32)
    return TransitionBatch.from_numpy(obs, action, zeros, obs, zeros, zeros)


@pytest.mark.parametrize("loss", ["mse", "nll"])
def test_bc_recovers_a_linear_expert(loss: str) -> None:
    data = expert_data(4096, 0)
    test = expert_data(512, 1)
    bc = BC(3, 2, LOW, HIGH, BCConfig(hidden=64, depth=2, lr=3e-3, loss=loss), generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    rng = np.random.default_rng(2)
    before = float(((bc.act(test.obs, deterministic=True) - test.action) ** 2).mean())
    for _ in range(1500):
        m = bc.update(data.index(torch.as_tensor(rng.integers(0, 4096, 128))))
    pred = bc.act(test.obs, deterministic=True)
    assert isinstance(pred, torch.Tensor)
    mse = float(((pred - test.action) ** 2).mean())
    variance = float(test.action.var(0).mean())
    assert mse < 0.02 * variance, (mse, variance)
    assert mse < 0.05 * before
    assert set(m) == {"bc_loss", "action_mse"} and np.isfinite(m["bc_loss"])
    obs_np = test.obs.numpy()
    out = bc.act(obs_np)
    assert isinstance(out, np.ndarray) and (out >= LOW).all() and (out <= HIGH).all()


def test_bc_state_dict_round_trip() -> None:
    data = expert_data(256, 0)
    a = BC(3, 2, LOW, HIGH, BCConfig(hidden=16), generator=torch.Generator().manual_seed(0))
    a.update(data)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = BC(3, 2, LOW, HIGH, BCConfig(hidden=16), generator=torch.Generator().manual_seed(5))
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert a.update(data) == b.update(data)
    assert torch.equal(a.act(data.obs), b.act(data.obs))
    with pytest.raises(ValueError, match="loss"):
        BCConfig(loss="l1")  # type: ignore[arg-type]
