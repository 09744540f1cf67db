"""OfflineDataset: episode boundaries, splits/subsets, action-free variant, summary, normaliser, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl.data import DatasetError, Normalizer, OfflineDataset


def make_dataset(**overrides: object) -> OfflineDataset:
    """10 rows, 4 episodes ending by terminal (row 2), timeout (row 4), discontinuity (row 7), end (row 9).

    obs[i] = [i, -i]; next_obs[i] = obs[i + 1] except at row 7, whose next obs is not row 8's obs.
    rewards = i, so the returns are 0+1+2=3, 3+4=7, 5+6+7=18, 8+9=17.
    """
    i = np.arange(10, dtype=np.float32)
    obs = np.stack([i, -i], 1)
    nxt = np.stack([i + 1, -(i + 1)], 1)
    nxt[7] = [50.0, 50.0]
    arrays: dict[str, object] = {
        "observations": obs,
        "actions": (i * 0.1)[:, None],
        "rewards": i,
        "next_observations": nxt,
        "terminals": np.isin(np.arange(10), [2]),
        "timeouts": np.isin(np.arange(10), [4]),
    }
    arrays.update(overrides)
    return OfflineDataset(**arrays, source="toy.npz")  # type: ignore[arg-type]


def test_episode_slices_and_returns() -> None:
    ds = make_dataset()
    assert ds.episode_slices() == [(0, 3), (3, 5), (5, 8), (8, 10)]
    assert ds.n_episodes == 4
    np.testing.assert_array_equal(ds.episode_returns(), [3.0, 7.0, 18.0, 17.0])
    np.testing.assert_array_equal(ds.episode_lengths(), [3, 2, 3, 2])
    eps = list(ds.episodes())
    assert [len(e["rewards"]) for e in eps] == [3, 2, 3, 2]
    np.testing.assert_array_equal(eps[2]["observations"][:, 0], [5, 6, 7])
    assert set(eps[0]) == {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts"}


def test_fingerprint_names_the_transitions_not_the_metadata() -> None:
    ds = make_dataset()
    assert ds.fingerprint() == make_dataset().fingerprint()
    assert len(ds.fingerprint()) == 16
    assert make_dataset(metadata={"ref_min_score": 1.0}).fingerprint() == ds.fingerprint()
    changed_reward = np.arange(10, dtype=np.float32)
    changed_reward[9] += 1e-3
    changed_flag = np.isin(np.arange(10), [2, 3])
    assert make_dataset(rewards=changed_reward).fingerprint() != ds.fingerprint()
    assert make_dataset(terminals=changed_flag).fingerprint() != ds.fingerprint()
    assert ds.without_actions().fingerprint() != ds.fingerprint()


def test_continuous_rows_without_flags_are_one_episode() -> None:
    ds = make_dataset(
        terminals=np.zeros(10, bool),
        timeouts=np.zeros(10, bool),
        next_observations=make_dataset().observations + 0,
    )
    # next_obs == obs of the same row here: every row is a discontinuity -> 10 one-step episodes.
    assert ds.n_episodes == 10
    obs = make_dataset().observations
    nxt = np.concatenate([obs[1:], obs[-1:] + 1])
    ds = make_dataset(terminals=np.zeros(10, bool), timeouts=np.zeros(10, bool), next_observations=nxt)
    assert ds.episode_slices() == [(0, 10)]


def test_split_by_episode_is_a_partition() -> None:
    ds = make_dataset()
    train, hold = ds.split_by_episode(0.25, np.random.default_rng(3))
    assert hold.n_episodes == 1 and train.n_episodes == 3  # round(0.25 * 4) = 1
    assert len(train) + len(hold) == len(ds)
    all_obs = np.sort(np.concatenate([train.observations[:, 0], hold.observations[:, 0]]))
    np.testing.assert_array_equal(all_obs, np.arange(10))
    # Whole episodes: the holdout returns are one of the original returns.
    assert hold.episode_returns()[0] in ds.episode_returns()
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train.episode_returns(), hold.episode_returns()])),
        np.sort(ds.episode_returns()),
    )
    # Same seed, same split; the train part keeps the original order.
    train2, _ = ds.split_by_episode(0.25, np.random.default_rng(3))
    np.testing.assert_array_equal(train.observations, train2.observations)
    assert np.all(np.diff(train.observations[:, 0]) > 0)
    with pytest.raises(ValueError, match="holdout_fraction"):
        ds.split_by_episode(1.0, np.random.default_rng(0))


def test_subset_episodes_and_fraction() -> None:
    ds = make_dataset()
    sub = ds.subset_episodes([3, 1])
    np.testing.assert_array_equal(sub.observations[:, 0], [8, 9, 3, 4])
    np.testing.assert_array_equal(sub.episode_returns(), [17.0, 7.0])
    assert sub.episode_slices() == [(0, 2), (2, 4)]
    half = ds.subset_fraction(0.5, np.random.default_rng(0))
    assert half.n_episodes == 2
    assert set(half.episode_returns()) <= set(ds.episode_returns())
    with pytest.raises(ValueError, match="out of range"):
        ds.subset_episodes([4])


def test_action_free_variant() -> None:
    ds = make_dataset()
    free = ds.without_actions()
    assert not free.has_actions and free.actions is None and ds.has_actions
    with pytest.raises(DatasetError, match="action-free"):
        _ = free.action_dim
    with pytest.raises(DatasetError, match="action-free"):
        free.to_batch()
    assert free.summary()["action_dim"] is None
    labelled = free.with_actions(np.full((10, 1), 0.5))
    assert labelled.proxy_actions is not None and labelled.proxy_actions.all()
    assert labelled.summary()["n_proxy_actions"] == 10
    with pytest.raises(DatasetError, match="key 'actions' has 9 rows, expected 10"):
        free.with_actions(np.zeros((9, 1)))


def test_to_batch_and_sample() -> None:
    ds = make_dataset()
    batch = ds.to_batch()
    assert batch.obs.dtype == torch.float32 and len(batch) == 10
    torch.testing.assert_close(batch.terminated, torch.tensor(ds.terminals, dtype=torch.float32))
    torch.testing.assert_close(batch.truncated, torch.tensor(ds.timeouts, dtype=torch.float32))
    torch.testing.assert_close(batch.next_obs, torch.from_numpy(ds.next_observations))
    s1 = ds.sample(64, np.random.default_rng(5))
    s2 = ds.sample(64, np.random.default_rng(5))
    torch.testing.assert_close(s1.obs, s2.obs)
    torch.testing.assert_close(s1.reward, s1.obs[:, 0])  # rows stay consistent
    assert len(torch.unique(s1.reward)) > 5


def test_concat_keeps_episodes_apart() -> None:
    ds = make_dataset()
    both = OfflineDataset.concat([ds, ds.subset_episodes([0])])
    assert len(both) == 13
    assert both.episode_slices()[-1] == (10, 13)
    np.testing.assert_array_equal(both.episode_returns(), [3.0, 7.0, 18.0, 17.0, 3.0])
    other = make_dataset()
    other.env_id = "Walker2d-v5"
    ds.env_id = "Hopper-v5"
    with pytest.raises(ValueError, match="different envs"):
        OfflineDataset.concat([ds, other])
    with pytest.raises(ValueError, match="action-free"):
        OfflineDataset.concat([make_dataset(), make_dataset().without_actions()])


def test_summary_values() -> None:
    s = make_dataset(metadata={"ref_min_score": 0.0, "ref_max_score": 20.0}).summary()
    returns = np.array([3.0, 7.0, 18.0, 17.0])
    assert s["n_transitions"] == 10 and s["n_episodes"] == 4
    assert s["obs_dim"] == 2 and s["action_dim"] == 1
    assert s["reward_mean"] == pytest.approx(4.5) and s["reward_min"] == 0.0 and s["reward_max"] == 9.0
    assert s["reward_std"] == pytest.approx(np.arange(10).std())
    assert s["return_mean"] == pytest.approx(returns.mean()) and s["return_std"] == pytest.approx(
        returns.std()
    )
    assert s["return_min"] == 3.0 and s["return_max"] == 18.0
    assert s["n_terminals"] == 1 and s["n_timeouts"] == 1
    assert s["normalized_return_mean"] == pytest.approx(100 * returns.mean() / 20.0)


def test_normalizer() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -2.0, 5.0], [3.0, 0.5, 0.0], size=(1000, 3)).astype(np.float32)
    norm = Normalizer(3).fit(x)
    torch.testing.assert_close(norm.mean, torch.tensor(x.mean(0)), atol=1e-5, rtol=0)
    assert norm.std[2] == 1.0  # constant feature: std 1, not ~0
    z = norm.normalize(torch.from_numpy(x))
    torch.testing.assert_close(z[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.denormalize(z), torch.from_numpy(x), atol=1e-5, rtol=0)
    other = Normalizer(3)
    other.load_state_dict(norm.state_dict())
    torch.testing.assert_close(other(torch.from_numpy(x)), z)
    with pytest.raises(ValueError, match=r"expected shape \[N, 3\]"):
        Normalizer(3).fit(x[:, :2])
    ds_norm = make_dataset().obs_stats()
    torch.testing.assert_close(ds_norm.mean, torch.tensor([4.5, -4.5]))
    torch.testing.assert_close(ds_norm.std, torch.tensor([np.arange(10).std()] * 2, dtype=torch.float32))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"rewards": np.arange(9, dtype=np.float32)},
            "toy.npz: key 'rewards' has 9 rows, expected 10 (as 'observations')",
        ),
        (
            {"observations": np.zeros(10, np.float32)},
            "toy.npz: key 'observations' has shape (10,) (ndim 1), expected ndim 2",
        ),
        (
            {"next_observations": np.full((10, 2), np.nan)},
            "toy.npz: key 'next_observations' contains 20 NaN (first at rows 0, 1, 2, ...)",
        ),
        ({"rewards": np.r_[np.zeros(9), np.inf]}, "toy.npz: key 'rewards' contains 1 Inf (first at row 9)"),
        (
            {"rewards": np.r_[np.zeros(9), 1e39]},
            "toy.npz: key 'rewards' contains 1 Inf (first at row 9)",
        ),  # float32 overflow
        (
            {k: np.zeros((0, 2)) for k in ("observations", "next_observations", "actions")}
            | {k: np.zeros(0) for k in ("rewards", "terminals", "timeouts")},
            "toy.npz: dataset is empty (key 'observations' has 0 rows)",
        ),
        (
            {"env_id": "Hopper-v5"},
            "toy.npz: key 'observations' has obs_dim 2 but env 'Hopper-v5' has observation shape (11,)",
        ),
    ],
)
def test_constructor_refuses_bad_arrays(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(DatasetError) as exc:
        make_dataset(**overrides)
    assert str(exc.value).startswith(message), str(exc.value)


def test_env_dims_checked_against_real_env() -> None:
    n = 5
    good = {
        "observations": np.zeros((n, 11)),
        "actions": np.zeros((n, 3)),
        "rewards": np.zeros(n),
        "next_observations": np.zeros((n, 11)),
        "terminals": np.zeros(n, bool),
    }
    assert OfflineDataset(**good, env_id="Hopper-v5").action_dim == 3  # type: ignore[arg-type]
    with pytest.raises(
        DatasetError, match=r"key 'actions' has action_dim 2 but env 'Hopper-v5' has action shape \(3,\)"
    ):
        OfflineDataset(**(good | {"actions": np.zeros((n, 2))}), env_id="Hopper-v5")  # type: ignore[arg-type]


def test_sampling_off_the_cpu_gathers_the_same_rows_from_a_kept_device_copy() -> None:
    ds = make_dataset()
    host = ds.sample(32, np.random.default_rng(4))
    rows = np.random.default_rng(4).integers(0, len(ds), size=32)
    gathered = ds.on_device("cpu").index(torch.as_tensor(rows))  # the device path's gather, on the CPU
    for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
        torch.testing.assert_close(getattr(gathered, name), getattr(host, name), rtol=0, atol=0)
    assert ds.on_device("cpu") is ds.on_device("cpu")  # made once per device
    meta = ds.sample(32, np.random.default_rng(4), device="meta")  # off the CPU: from the kept copy
    assert meta.obs.device.type == "meta" and meta.obs.shape == host.obs.shape
    assert ds.on_device("meta") is ds.__dict__["_device_rows"]["meta"]
