"""InverseDynamicsModel: windows, exact recovery on a linear system, save/load, capability, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mbrl.data import OfflineDataset
from mbrl.models.inverse_dynamics import (
    IDMConfig,
    InverseDynamicsModel,
    action_errors,
    episode_windows,
    pair_windows,
)
from mbrl.models.protocol import InverseDynamics

OBS_DIM, ACT_DIM = 4, 2


def linear_system(n_episodes: int, length: int, seed: int) -> OfflineDataset:
    """``s' = A s + B a`` with ``B`` of full column rank, ``a ~ U(-0.9, 0.9)`` (the box is [-1, 1])."""
    rng = np.random.default_rng(seed)
    a_mat = np.array([[0.9, 0.1, 0, 0], [0, 0.9, 0.1, 0], [0, 0, 0.9, 0.1], [0.1, 0, 0, 0.9]], np.float32)
    b_mat = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5], [0.3, 0.7]], np.float32)
    obs, nxt, act = [], [], []
    for _ in range(n_episodes):
        s = rng.normal(size=OBS_DIM).astype(np.float32)
        for _ in range(length):
            a = rng.uniform(-0.9, 0.9, size=ACT_DIM).astype(np.float32)
            s2 = a_mat @ s + b_mat @ a
            obs.append(s)
            act.append(a)
            nxt.append(s2)
            s = s2
    n = len(obs)
    timeouts = np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    return OfflineDataset(np.stack(obs), np.stack(act), np.zeros(n, np.float32), np.stack(nxt),
                          np.zeros(n, bool), timeouts)


def _model(config: IDMConfig, seed: int = 0) -> InverseDynamicsModel:
    return InverseDynamicsModel(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM), config,
                                generator=torch.Generator().manual_seed(seed))


def test_episode_windows_repeat_edges_within_episodes() -> None:
    ds = linear_system(3, 4, 0)
    w = episode_windows(ds, 1)
    assert w.shape == (12, 3, OBS_DIM)
    np.testing.assert_array_equal(w[:, 1], ds.observations)  # centre = s_t
    np.testing.assert_array_equal(w[:, 2], ds.next_observations)  # last = s_{t+1}
    np.testing.assert_array_equal(w[0, 0], ds.observations[0])  # episode start: s_0 repeated
    np.testing.assert_array_equal(w[4, 0], ds.observations[4])  # second episode: not the first's state
    np.testing.assert_array_equal(w[5, 0], ds.observations[4])  # s_{t-1}
    w2 = episode_windows(ds, 2)
    np.testing.assert_array_equal(w2[3, 4], ds.next_observations[3])  # past the end: s_T repeated
    np.testing.assert_array_equal(w2[2, 4], ds.next_observations[3])  # s_{t+2} = s_4 = last next obs
    starts = [0, 4, 8]
    pw = pair_windows(torch.as_tensor(ds.observations[starts]), torch.as_tensor(ds.next_observations[starts]), 1)
    np.testing.assert_array_equal(pw.numpy(), w[starts])  # at an episode start the two rules agree
    mid = pair_windows(torch.as_tensor(ds.observations[[1]]), torch.as_tensor(ds.next_observations[[1]]), 1)
    np.testing.assert_array_equal(mid.numpy()[0, 0], ds.observations[1])  # no past: s_t repeated
    assert not np.array_equal(mid.numpy()[0, 0], w[1, 0])  # episode windows see s_{t-1}


def test_recovers_linear_system_actions_almost_exactly() -> None:
    train = linear_system(40, 50, 0)
    test = linear_system(5, 50, 1)
    idm = _model(IDMConfig(hidden=64, depth=2, dropout=0.0, lr=3e-3, weight_decay=0.0, max_epochs=60, patience=0,
                           batch_size=128))
    before = action_errors(idm.label(test), test.actions)  # type: ignore[arg-type]
    metrics = idm.fit(train, np.random.default_rng(0))
    after = action_errors(idm.label(test), test.actions)  # type: ignore[arg-type]
    assert before["r2"] < 0.5
    assert after["r2_0"] > 0.99 and after["r2_1"] > 0.99, after
    assert after["mse"] < 3e-3, after
    assert metrics["val_r2"] > 0.99 and 1 <= metrics["best_epoch"] <= metrics["epochs"]
    # the capability: pairs alone suffice for a Markov system
    assert isinstance(idm, InverseDynamics)
    pred = idm.predict_action(torch.as_tensor(test.observations), torch.as_tensor(test.next_observations))
    assert action_errors(pred.numpy(), test.actions)["r2"] > 0.98  # type: ignore[arg-type]


def test_save_load_same_labels_and_seed_determinism(tmp_path: Path) -> None:
    ds = linear_system(6, 20, 0)
    cfg = IDMConfig(hidden=32, max_epochs=2, patience=0)
    a = _model(cfg, 1)
    a.fit(ds, np.random.default_rng(0))
    a.save(tmp_path)
    b = InverseDynamicsModel.load(tmp_path)
    np.testing.assert_array_equal(a.label(ds), b.label(ds))
    c = _model(cfg, 1)
    c.fit(ds, np.random.default_rng(0))  # dropout 0.1 included: same seed, same weights
    np.testing.assert_array_equal(a.label(ds), c.label(ds))
    d = _model(cfg, 2)
    d.fit(ds, np.random.default_rng(0))
    assert not np.array_equal(a.label(ds), d.label(ds))
    labels = a.label(ds)
    assert labels.shape == (len(ds), ACT_DIM) and np.all(np.abs(labels) < 1.0)  # inside the action box
