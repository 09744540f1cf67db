"""Losse-FTL: the sparse encoding, the incremental FTL learner and the WorldModel contract."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import numpy as np
import pytest
import scipy.special
import torch

from mbrl.models.losse import LosseConfig, LosseEncoder, LosseModel
from mbrl.models.protocol import WorldModel
from mbrl.types import TransitionBatch

SMALL = LosseConfig(num_groups=4, group_dim=2, num_bins=3, ridge=1e-2)  # F = 4·16 = 64


def _batch(
    x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], reward_fn: Callable[[np.ndarray], np.ndarray]
) -> TransitionBatch:
    """obs = x[:, :1], action = x[:, 1:]; next_obs = obs + fn(x); reward = reward_fn(x)."""
    obs, action = x[:, :1], x[:, 1:]
    return TransitionBatch.from_numpy(obs, action, reward_fn(x), obs + fn(x)[:, None], np.zeros(len(x)))


def _f(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * x[:, 0]) * np.cos(x[:, 1]) + 0.5 * x[:, 0]


def _g(x: np.ndarray) -> np.ndarray:
    return x[:, 0] ** 2 - x[:, 1]


BOUNDS = (np.array([-1.5, -1.5]), np.array([1.5, 1.5]))


# ---------------------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize(("groups", "rho", "bins"), [(5, 3, 4), (7, 2, 6), (3, 1, 9)])
def test_encoder_sparsity_pattern(groups: int, rho: int, bins: int) -> None:
    enc = LosseEncoder(4, groups, rho, bins, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(64, 4))
    idx, val = enc.encode(x)
    k = (bins + 1) ** rho
    assert enc.num_features == groups * k
    assert idx.shape == val.shape == (64, groups * 2**rho)
    assert idx.min() >= 0 and idx.max() < enc.num_features
    for row in idx:  # exactly L·2^ρ distinct non-zeros per row
        assert len(np.unique(row)) == groups * 2**rho
    assert (val > 0).all()  # continuous inputs: no fractional position is exactly 0 or 1
    # group g owns columns g·2^ρ..(g+1)·2^ρ-1 and only its own vertices g·K..(g+1)·K-1
    owner = idx.reshape(64, groups, 2**rho) // k
    assert (owner == np.arange(groups)[None, :, None]).all()


@pytest.mark.parametrize("scale", [1.0, 100.0])  # 100: sigmoid saturates at the grid's edges
def test_encoder_weights_are_multilinear_interpolation(scale: float) -> None:
    groups, rho, bins = 6, 3, 5
    enc = LosseEncoder(3, groups, rho, bins, np.random.default_rng(2))
    x = scale * np.random.default_rng(3).normal(size=(50, 3))
    idx, val = enc.encode(x)
    # the position computed independently of the encoder's code path
    u = (bins * scipy.special.expit(x @ enc.projection)).reshape(50, groups, rho)
    val_g = val.reshape(50, groups, 2**rho)
    np.testing.assert_allclose(val_g.sum(-1), 1.0, atol=1e-12)  # weights sum to one per group
    coords = enc.vertex_coordinates(idx).reshape(50, groups, 2**rho, rho).astype(float)
    # the weighted mean of the corners is the input's position (linear precision of multilinear interpolation)
    np.testing.assert_allclose((val_g[..., None] * coords).sum(2), u, atol=1e-9)
    # each corner's weight is the product over axes of (f if the corner is the upper one else 1 - f)
    cell = np.minimum(np.floor(u), bins - 1)
    frac = u - cell
    upper = coords - cell[:, :, None, :]
    assert set(np.unique(upper)) <= {0.0, 1.0}
    expected = np.where(upper == 1, frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)
    np.testing.assert_allclose(val_g, expected, atol=1e-12)
    # the 2^ρ corners are the distinct corners of one cell
    assert all(len({tuple(c) for c in upper[b, g]}) == 2**rho for b in range(50) for g in range(groups))


def test_encoder_is_fixed_by_seed() -> None:
    a = LosseModel(2, 1, SMALL, seed=3).encoder.projection
    b = LosseModel(2, 1, SMALL, seed=3).encoder.projection
    c = LosseModel(2, 1, SMALL, seed=4).encoder.projection
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 2 / np.sqrt(3)  # truncated at 2 std, std 1/sqrt(d)


# ---------------------------------------------------------------------------------------------- FTL
def _design(model: LosseModel, batches: list[TransitionBatch]) -> tuple[np.ndarray, np.ndarray]:
    """The dense design matrix X [N, F] and normalised targets Y [N, out] of all data, built independently."""
    full = TransitionBatch.cat(batches)
    x_in = torch.cat([full.obs, full.action], 1).double().numpy()
    y = torch.cat([full.next_obs.double() - full.obs.double(), full.reward[:, None].double()], 1).numpy()
    idx, val = model.encoder.encode((x_in - model.input_shift) / model.input_scale)
    x = np.zeros((len(x_in), model.encoder.num_features))
    np.add.at(x, (np.repeat(np.arange(len(x_in)), idx.shape[1]), idx.ravel()), val.ravel())
    return x, (y - model.target_shift) / model.target_scale


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Batch ridge solution on the features seen (rows of X not all zero); unseen features stay 0."""
    seen = np.flatnonzero(np.abs(x).sum(0) > 0)
    xs = x[:, seen]
    w = np.zeros((x.shape[1], y.shape[1]))
    w[seen] = np.linalg.solve(xs.T @ xs + lam * np.eye(len(seen)), xs.T @ y)
    return w


def _drifting_batches(n_batches: int, size: int, seed: int) -> list[TransitionBatch]:
    """Inputs drift from one corner of the square to the other over the stream (covariate shift)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_batches):
        centre = -1.2 + 2.4 * i / max(1, n_batches - 1)
        x = np.clip(centre + 0.3 * rng.normal(size=(size, 2)), -1.5, 1.5)
        out.append(_batch(x, _f, _g))
    return out


def test_first_update_is_the_exact_ridge_solution() -> None:
    model = LosseModel(1, 1, SMALL, seed=0, input_bounds=BOUNDS)
    batch = _drifting_batches(1, 20, 0)[0]
    model.update(batch)
    x, y = _design(model, [batch])
    np.testing.assert_allclose(model.regressor.w, _ridge(x, y, SMALL.ridge), atol=1e-10)
    assert model.regressor.residual_norm() < 1e-12


def test_ftl_weights_match_batch_ridge_after_incremental_updates() -> None:
    cfg = LosseConfig(num_groups=4, group_dim=2, num_bins=3, ridge=1e-2, block_size=8)
    model = LosseModel(1, 1, cfg, seed=0, input_bounds=BOUNDS)
    batches = _drifting_batches(10, 16, 1)
    lam, f = cfg.ridge, cfg.num_features
    w_ref = np.zeros((f, 2))
    for i, b in enumerate(batches):
        metrics = model.update(b)
        # Reference of the paper's sparse update, from the dense statistics of all data so far: for each
        # block of the batch's touched features (sorted, block_size at a time), the exact minimiser of the
        # ridge objective over that block with every other weight fixed.
        x, y = _design(model, batches[: i + 1])
        a, bb = x.T @ x + lam * np.eye(f), x.T @ y
        x_new, _ = _design(model, [b])
        touched = np.flatnonzero(np.abs(x_new).sum(0) > 0)
        assert metrics["touched_features"] == len(touched)
        for start in range(0, len(touched), cfg.block_size):
            c = touched[start : start + cfg.block_size]
            rest = np.setdiff1d(np.arange(f), c)
            w_ref[c] = np.linalg.solve(a[np.ix_(c, c)], bb[c] - a[np.ix_(c, rest)] @ w_ref[rest])
        np.testing.assert_allclose(model.regressor.w, w_ref, atol=1e-9)
        # After every update the model's statistics define the dense ridge problem of all data so far: refined
        # to convergence, a copy of the model equals numpy's solve of that problem.
        converged = copy.deepcopy(model)
        converged.regressor.block_size = 16
        converged.refine(300)
        np.testing.assert_allclose(converged.regressor.w, _ridge(x, y, lam), atol=1e-7)
    # the sufficient statistics are exact
    np.testing.assert_allclose(model.regressor.a, a, atol=1e-10)
    np.testing.assert_allclose(model.regressor.b, bb, atol=1e-10)
    # the maintained residual is B - A W of the current weights, and the reported metric is its norm
    w = model.regressor.w
    np.testing.assert_allclose(model.regressor.r, bb - a @ w, atol=1e-9)
    assert metrics["ftl_residual"] == pytest.approx(np.linalg.norm(bb - a @ w) / np.linalg.norm(bb), rel=1e-6)
    w_star = _ridge(x, y, lam)
    # the sparse update alone tracks the FTL solution closely (block coordinate descent)...
    assert 0 < metrics["ftl_residual"] < 0.01
    assert np.abs(x @ w - x @ w_star).max() < 0.05 * np.abs(x @ w_star).max()
    # ...and further block steps converge to it exactly (Gauss–Southwell; blocks of 16 of the 64 features
    # converge in tens of steps here, blocks of 8 need thousands: λ is small, A is ill-conditioned)
    model.regressor.block_size = 16
    model.refine(300)
    assert model.regressor.residual_norm() < 1e-12
    np.testing.assert_allclose(model.regressor.w, w_star, atol=1e-8)


def test_refine_blocks_shrink_the_ftl_gap_inside_update() -> None:
    batches = _drifting_batches(8, 16, 2)
    gaps = []
    for refine in (0, 3):
        cfg = LosseConfig(
            num_groups=4, group_dim=2, num_bins=3, ridge=1e-2, block_size=16, refine_blocks=refine
        )
        model = LosseModel(1, 1, cfg, seed=0, input_bounds=BOUNDS)
        for b in batches:
            m = model.update(b)
        gaps.append(m["ftl_residual"])
    assert gaps[0] > 0 and gaps[1] < 0.5 * gaps[0]


def test_update_cost_does_not_grow_with_data() -> None:
    cfg = LosseConfig(num_groups=8, group_dim=2, num_bins=4, block_size=16)
    f = cfg.num_features
    probe = _batch(np.random.default_rng(9).uniform(-1, 1, (6, 2)), _f, _g)
    counts = []
    for n_before in (0, 1, 40):
        model = LosseModel(1, 1, cfg, seed=0, input_bounds=BOUNDS)
        for b in _drifting_batches(n_before, 32, 3):
            model.update(b)
        m = model.update(probe)
        counts.append((m["touched_features"], m["touched_entries"]))
        k = m["touched_features"]
        assert k <= probe.obs.shape[0] * cfg.nnz_per_row
        assert k > cfg.block_size  # several blocks
        assert m["touched_entries"] == k * k + k * f  # accumulate |S|², read the |S| rows of A
        assert m["num_samples"] == 32 * n_before + 6
    assert counts[0] == counts[1] == counts[2]


def test_learns_a_smooth_2d_function_from_a_drifting_stream() -> None:
    cfg = LosseConfig(num_groups=32, group_dim=2, num_bins=6)
    rng = np.random.default_rng(4)
    x = rng.uniform(-1.5, 1.5, (3000, 2))
    test_x = rng.uniform(-1.5, 1.5, (2000, 2))
    test = _batch(test_x, _f, _g)
    preds = []
    for order in (np.argsort(x[:, 0]), rng.permutation(len(x))):
        # sorted: the stream sweeps the input space left to right and never comes back (covariate shift)
        model = LosseModel(1, 1, cfg, seed=0, input_bounds=BOUNDS)
        xs = x[order]
        for start in range(0, len(xs), 100):
            model.update(_batch(xs[start : start + 100], _f, _g))
        pred = model.predict(test.obs, test.action)
        delta = test.next_obs - test.obs
        # MSE relative to the target variance (predicting the mean scores 1)
        assert (((pred.next_obs - test.next_obs) ** 2).mean() / delta.var()).item() < 2e-4
        assert (((pred.reward - test.reward) ** 2).mean() / test.reward.var()).item() < 2e-4
        left = test_x[:, 0] < -1.0  # the region the sorted stream saw first and left long ago
        assert (((pred.next_obs - test.next_obs)[left] ** 2).mean() / delta.var()).item() < 5e-4
        preds.append(pred.next_obs)
    # FTL fits all data seen, whatever the order: the two streams give (nearly) the same model
    assert (preds[0] - preds[1]).abs().max().item() < 0.02


# ---------------------------------------------------------------------------------------------- contract
def _rand_batch(n: int, obs_dim: int, action_dim: int, seed: int) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim))
    action = rng.uniform(-1, 1, (n, action_dim))
    next_obs = obs + 0.1 * np.tanh(obs @ np.ones((obs_dim, obs_dim)) + action.sum(1, keepdims=True))
    return TransitionBatch.from_numpy(obs, action, np.sin(obs[:, 0]), next_obs, np.zeros(n))


def test_world_model_basics_and_exact_resume() -> None:
    model = LosseModel(3, 2, SMALL, seed=1)
    assert isinstance(model, WorldModel)
    assert (model.obs_dim, model.action_dim) == (3, 2)
    b0 = _rand_batch(40, 3, 2, 0)
    step = model.predict(b0.obs, b0.action)  # before any data: finite, next_obs = obs
    assert torch.equal(step.next_obs, b0.obs) and torch.isfinite(step.reward).all()
    for i in range(3):
        metrics = model.update(_rand_batch(25, 3, 2, i))
        assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
        assert {"touched_features", "touched_entries", "seconds", "ftl_residual"} <= set(metrics)
    step = model.predict(b0.obs, b0.action, deterministic=False, generator=torch.Generator().manual_seed(0))
    assert step.next_obs.shape == (40, 3) and step.reward.shape == (40,) and step.terminated.shape == (40,)
    assert step.next_obs.dtype == step.reward.dtype == step.terminated.dtype == torch.float32
    assert torch.isfinite(step.next_obs).all() and (step.terminated == 0).all()
    assert step.info["uncertainty"].shape == (40,) and (step.info["uncertainty"] >= 0).all()
    again = model.predict(b0.obs, b0.action)
    assert torch.equal(again.next_obs, step.next_obs)
    ev = model.evaluate(b0)
    assert {"loss", "mse"} <= set(ev) and all(np.isfinite(v) for v in ev.values())
    assert ev["mse"] == pytest.approx(((step.next_obs - b0.next_obs) ** 2).mean().item(), rel=1e-4)

    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = LosseModel(3, 2, SMALL, seed=99)  # another seed: everything must come from the state
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(restored.predict(b0.obs, b0.action).next_obs, step.next_obs)
    # resuming continues exactly: the next update gives identical weights and metrics
    nxt = _rand_batch(25, 3, 2, 7)
    m1, m2 = model.update(nxt), restored.update(nxt)
    assert np.array_equal(model.regressor.w, restored.regressor.w)
    assert m1["ftl_residual"] == m2["ftl_residual"]


def test_normalizer_is_frozen_once_set() -> None:
    model = LosseModel(3, 2, SMALL, seed=0)
    assert model.fit_normalizer(_rand_batch(50, 3, 2, 0))
    shift = model.target_shift.copy()
    assert not model.fit_normalizer(_rand_batch(50, 3, 2, 1))
    model.update(_rand_batch(10, 3, 2, 2))
    assert np.array_equal(model.target_shift, shift)


def test_fit_refuses_a_single_pass_model() -> None:
    from mbrl.models.fit import FitConfig, fit
    from mbrl.types import TransitionBatch

    model = LosseModel(2, 1, LosseConfig(num_groups=4, num_bins=4), seed=0)
    rng = np.random.default_rng(0)
    batch = TransitionBatch.from_numpy(
        obs=rng.normal(size=(320, 2)), action=rng.normal(size=(320, 1)), reward=rng.normal(size=320),
        next_obs=rng.normal(size=(320, 2)), terminated=np.zeros(320), truncated=np.zeros(320),
    )
    with pytest.raises(ValueError, match="single-pass"):
        fit(model, batch, FitConfig(max_epochs=3), rng=rng)
    assert model.regressor.count == 0  # refused before any update


def test_bad_input_errors() -> None:
    model = LosseModel(3, 2, SMALL, seed=0)
    good = _rand_batch(5, 3, 2, 0)
    with pytest.raises(ValueError, match="obs must be"):
        model.predict(good.obs[:, :2], good.action)
    with pytest.raises(ValueError, match="action must be"):
        model.update(_rand_batch(5, 3, 1, 0))
    bad = _rand_batch(5, 3, 2, 0)
    bad.reward[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model.update(bad)
    state = model.state_dict()
    state["weight"] = state["weight"][:-1]
    with pytest.raises(ValueError, match="'weight' has shape"):
        LosseModel(3, 2, SMALL).load_state_dict(state)
    with pytest.raises(ValueError, match="ridge"):
        LosseConfig(ridge=0.0)
    with pytest.raises(ValueError, match="input_bounds"):
        LosseModel(3, 2, SMALL, input_bounds=(np.zeros(5), np.zeros(5)))


def test_contract_suite_if_present() -> None:
    contract = pytest.importorskip("mbrl.models.contract")
    contract.check_world_model(lambda: LosseModel(3, 2, SMALL, seed=0), stochastic=False)
