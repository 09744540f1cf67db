"""Labelled / unlabelled splits (SS-ORL's data setup): fractions, return-based selection, action-free rest."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl.data import OfflineDataset
from mbrl.data.splitting import labelled_episode_indices, split_labelled


def _dataset(n_episodes: int = 40, length: int = 5) -> OfflineDataset:
    """Episodes of distinct returns (episode ``i`` has return ``length * r_i`` with a shuffled ``r``)."""
    rng = np.random.default_rng(0)
    per_ep_reward = rng.permutation(n_episodes).astype(np.float32)
    obs, nxt, act, rew, term = [], [], [], [], []
    for i in range(n_episodes):
        s = rng.normal(size=(length + 1, 3)).astype(np.float32)
        obs.append(s[:-1])
        nxt.append(s[1:])
        act.append(rng.uniform(-1, 1, size=(length, 2)).astype(np.float32))
        rew.append(np.full(length, per_ep_reward[i], np.float32))
        t = np.zeros(length, bool)
        t[-1] = True
        term.append(t)
    return OfflineDataset(np.concatenate(obs), np.concatenate(act), np.concatenate(rew), np.concatenate(nxt),
                          np.concatenate(term))


def test_fraction_and_low_return_pool() -> None:
    ds = _dataset()
    returns = ds.episode_returns()
    idx = labelled_episode_indices(returns, 0.1, np.random.default_rng(1), selection="low-return")
    assert len(idx) == 4  # 10 % of 40 episodes
    # every labelled episode is in the lower half of returns
    threshold = np.sort(returns)[19]
    assert np.all(returns[idx] <= threshold)
    # and over many draws the whole lower half is used, never the upper half
    seen = set()
    for seed in range(200):
        seen |= set(labelled_episode_indices(returns, 0.1, np.random.default_rng(seed)).tolist())
    assert seen == set(np.argsort(returns)[:20].tolist())


def test_uniform_selection_reaches_high_returns_and_quantile() -> None:
    returns = _dataset().episode_returns()
    top = set(np.argsort(returns)[20:].tolist())
    hits = sum(bool(top & set(labelled_episode_indices(returns, 0.1, np.random.default_rng(s),
                                                       selection="uniform").tolist())) for s in range(50))
    assert hits > 25
    idx = labelled_episode_indices(returns, 0.1, np.random.default_rng(0), return_quantile=0.1)
    assert set(idx.tolist()) == set(np.argsort(returns)[:4].tolist())  # pool of 4 = all of it


def test_split_labelled_parts() -> None:
    ds = _dataset()
    lab, free = split_labelled(ds, 0.25, np.random.default_rng(3))
    assert lab.n_episodes == 10 and free.n_episodes == 30
    assert len(lab) + len(free) == len(ds)
    assert lab.has_actions and not free.has_actions
    assert lab.episode_returns().max() <= np.sort(ds.episode_returns())[19]
    # same rng seed -> same split; another seed -> (almost surely) another
    lab2, _ = split_labelled(ds, 0.25, np.random.default_rng(3))
    np.testing.assert_array_equal(lab.observations, lab2.observations)
    lab3, _ = split_labelled(ds, 0.25, np.random.default_rng(4))
    assert not np.array_equal(lab.observations, lab3.observations)
    # the labelled actions are the recorded ones
    rows = [np.flatnonzero((ds.observations == o).all(1))[0] for o in lab.observations]
    np.testing.assert_array_equal(lab.actions, ds.actions[rows])  # type: ignore[index]


def test_split_errors() -> None:
    ds = _dataset()
    with pytest.raises(ValueError, match="fraction must be in"):
        split_labelled(ds, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="from a pool of"):
        split_labelled(ds, 0.6, np.random.default_rng(0))  # 24 episodes from the lower 20
    with pytest.raises(ValueError, match="action-free"):
        split_labelled(ds.without_actions(), 0.1, np.random.default_rng(0))
