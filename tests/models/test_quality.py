"""Model quality tools checked against hand computations on closed-form models."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.quality import GAUSSIAN_1SIGMA, GAUSSIAN_2SIGMA, calibration, k_step_error, one_step_error
from mbrl.types import ModelStep, TransitionBatch
from tests.models.data import chain_dataset
from tests.models.dummy import DummyModel


def test_one_step_error_by_hand() -> None:
    data = chain_dataset(4, 30, scale=0.5)
    batch = data.to_batch()
    exact = one_step_error(DummyModel(scale=0.5), batch)
    assert exact["obs_mse"] == pytest.approx(0.0, abs=1e-10) and exact["obs_nmse"] == pytest.approx(0.0, abs=1e-8)
    off = one_step_error(DummyModel(scale=0.6), batch)
    s = batch.action.sum(1)
    assert off["obs_mse"] == pytest.approx(float(((0.1 * s) ** 2).mean()), rel=1e-4)
    assert off["obs_mae"] == pytest.approx(float((0.1 * s).abs().mean()), rel=1e-4)
    # delta = 0.5 s in every dim, so nmse = 0.01 E[s^2] / (0.25 Var[s])
    assert off["obs_nmse"] == pytest.approx(0.04 * float((s**2).mean()) / float(s.var(unbiased=False)), rel=1e-3)
    assert off["reward_mse"] == pytest.approx(0.0, abs=1e-10)  # chain_dataset reward = obs[0] = dummy reward


def test_k_step_error_compounds_as_computed_by_hand() -> None:
    data = chain_dataset(3, 25, scale=0.5)
    res = k_step_error(DummyModel(scale=0.6), data, horizons=(1, 3, 10))
    assert res.n_windows == 3 * (25 - 10 + 1) and res.reference == "data"
    assert data.actions is not None
    a = data.actions.sum(1).astype(np.float64)
    starts = np.concatenate([np.arange(e * 25, e * 25 + 16) for e in range(3)])
    for h in (1, 3, 10):
        err = 0.1 * np.array([a[t : t + h].sum() for t in starts])  # the same error in every obs dim
        assert res.obs_mse[h] == pytest.approx(float((err**2).mean()), rel=1e-4)
        assert res.nonfinite[h] == 0.0
    assert res.obs_mse[10] > res.obs_mse[3] > res.obs_mse[1]
    assert k_step_error(DummyModel(scale=0.5), data, (1, 10)).obs_mse[10] == pytest.approx(0.0, abs=1e-9)


def test_k_step_error_against_a_reference_model() -> None:
    data = chain_dataset(3, 25, scale=0.5)
    same = k_step_error(DummyModel(scale=0.6), data, (5,), reference=DummyModel(scale=0.6))
    assert same.obs_mse[5] == 0.0 and same.reference == "DummyModel"
    vs_exact = k_step_error(DummyModel(scale=0.6), data, (5,), reference=DummyModel(scale=0.5))
    vs_data = k_step_error(DummyModel(scale=0.6), data, (5,))
    assert vs_exact.obs_mse[5] == pytest.approx(vs_data.obs_mse[5], rel=1e-4)


def test_k_step_error_windows_and_divergence() -> None:
    data = chain_dataset(4, 25)
    few = k_step_error(DummyModel(scale=0.5), data, (2,), max_windows=10)
    assert few.n_windows == 10
    drawn = k_step_error(DummyModel(scale=0.5), data, (2,), max_windows=10, rng=np.random.default_rng(0))
    assert drawn.n_windows == 10
    diverging = k_step_error(DummyModel(scale=0.5, nan_above=-math.inf), data, (1, 2))
    assert diverging.nonfinite[1] == 1.0 and math.isnan(diverging.obs_mse[1])
    with pytest.raises(ValueError, match=r"no episode .* has 30 steps"):
        k_step_error(DummyModel(), data, (30,))
    with pytest.raises(ValueError, match="positive"):
        k_step_error(DummyModel(), data, (0, 1))


class GaussianOracle:
    """An Ensemble-shaped model: next_obs ~ N(obs, predicted_std^2) for 2 identical members."""

    obs_dim, action_dim, num_members = 3, 1, 2

    def __init__(self, predicted_std: float) -> None:
        self.std = predicted_std

    @property
    def elites(self) -> list[int]:
        return [0, 1]

    def predict_members(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.cat([obs, torch.zeros(len(obs), 1)], 1).expand(2, -1, -1)
        return mean, torch.full_like(mean, 2 * math.log(self.std))

    def predict(self, obs: Tensor, action: Tensor, **kwargs: Any) -> ModelStep:
        return ModelStep(obs, torch.zeros(len(obs)), torch.zeros(len(obs)))


def test_calibration_of_a_known_gaussian() -> None:
    g = torch.Generator().manual_seed(0)
    n = 50000
    obs = torch.randn(n, 3, generator=g)
    next_obs = obs + 0.5 * torch.randn(n, 3, generator=g)
    reward = 0.5 * torch.randn(n, generator=g)
    batch = TransitionBatch(obs, torch.zeros(n, 1), reward, next_obs, torch.zeros(n), torch.zeros(n))
    good = calibration(GaussianOracle(0.5), batch)  # type: ignore[arg-type]
    assert good["within_1sigma"] == pytest.approx(GAUSSIAN_1SIGMA, abs=0.01)
    assert good["within_2sigma"] == pytest.approx(GAUSSIAN_2SIGMA, abs=0.01)
    assert good["mean_z2"] == pytest.approx(1.0, abs=0.03)
    over = calibration(GaussianOracle(0.25), batch)  # type: ignore[arg-type]
    assert over["mean_z2"] == pytest.approx(4.0, rel=0.03)
    assert over["within_1sigma"] == pytest.approx(math.erf(0.5 / math.sqrt(2)), abs=0.01)


def test_calibration_needs_a_variance() -> None:
    batch = chain_dataset(2, 10).to_batch()
    with pytest.raises(TypeError, match="not an Ensemble"):
        calibration(DummyModel(), batch)
    single = ProbabilisticEnsemble(3, 2, EnsembleConfig(num_members=1, deterministic=True, hidden=8, depth=1, device="cpu"))
    with pytest.raises(ValueError, match="zero variance"):
        calibration(single, batch)
    real = ProbabilisticEnsemble(3, 2, EnsembleConfig(num_members=3, hidden=8, depth=1, device="cpu"))
    assert 0.0 <= calibration(real, batch)["within_1sigma"] <= 1.0


def test_one_step_and_horizon_one_agree_on_a_learned_model() -> None:
    data = chain_dataset(3, 20)
    model = ProbabilisticEnsemble(3, 2, EnsembleConfig(num_members=2, hidden=8, depth=1, device="cpu"))
    model.fit_normalizer(data.to_batch())
    k1 = k_step_error(model, data, (1,), max_windows=10_000)
    assert k1.n_windows == 60
    assert k1.obs_mse[1] == pytest.approx(one_step_error(model, data.to_batch())["obs_mse"], rel=1e-5)
