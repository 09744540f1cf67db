"""fit(): splits, early stopping, caps, best-weight restore, bootstrap, logging, and learning on real data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from mbrl.logging import Logger, read_csv
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.models.wrappers import KnownFunctionsModel
from mbrl.types import Metrics, ModelStep, TransitionBatch
from tests.models.data import chain_dataset, random_dataset
from tests.models.dummy import DummyModel


def small_ensemble(**kwargs: Any) -> ProbabilisticEnsemble:
    cfg = {"num_members": 4, "num_elites": 2, "hidden": 32, "depth": 2, "device": "cpu", **kwargs}
    return ProbabilisticEnsemble(3, 2, EnsembleConfig(**cfg), seed=0)


def test_generic_model_learns_with_episode_split() -> None:
    data = chain_dataset(10, 50)
    model = DummyModel(scale=1.0, learning_rate=0.2)
    report = fit(model, data, FitConfig(batch_size=64, max_epochs=50), rng=np.random.default_rng(0))
    assert float(model.scale) == pytest.approx(0.5, abs=1e-3)
    assert report.split == "episode"
    assert report.n_holdout == 100 and report.n_train == 400  # 2 of 10 episodes held out
    assert report.elites == ()
    assert report.holdout_mse < 1e-5 and report.holdout_loss == report.holdout_mse
    assert report.updates == report.epochs * 7  # ceil(400 / 64) minibatches per epoch
    assert report.stop_reason == "patience" and report.stopped_early


def test_row_split_fallback() -> None:
    one_episode = chain_dataset(1, 200)
    assert one_episode.n_episodes == 1
    report = fit(DummyModel(), one_episode, FitConfig(max_epochs=2), rng=np.random.default_rng(0))
    assert report.split == "row" and report.n_holdout == 40 and report.n_train == 160
    report = fit(DummyModel(), chain_dataset(3, 20).to_batch(), FitConfig(max_epochs=2), rng=np.random.default_rng(0))
    assert report.split == "row" and report.n_holdout == 12
    capped = fit(DummyModel(), chain_dataset(10, 50), FitConfig(max_epochs=1, max_holdout=30), rng=np.random.default_rng(0))
    assert capped.n_holdout == 30
    with pytest.raises(ValueError, match="at least 2"):
        fit(DummyModel(), chain_dataset(1, 1), rng=np.random.default_rng(0))


def test_patience_max_epochs_and_max_time() -> None:
    data = chain_dataset(10, 50)
    frozen = DummyModel(learning_rate=0.0)  # never improves
    report = fit(frozen, data, FitConfig(patience=3), rng=np.random.default_rng(0))
    assert (report.epochs, report.stop_reason, report.stopped_early) == (3, "patience", True)

    slow = DummyModel(scale=5.0, learning_rate=1e-3)  # improves > 1 % every epoch
    report = fit(slow, data, FitConfig(max_epochs=4, batch_size=400), rng=np.random.default_rng(0))
    assert (report.epochs, report.stop_reason, report.stopped_early) == (4, "max_epochs", False)

    report = fit(DummyModel(), data, FitConfig(max_time_s=0.0, batch_size=10), rng=np.random.default_rng(0))
    assert (report.epochs, report.updates, report.stop_reason) == (1, 1, "max_time")


def test_best_weights_restored_for_a_generic_model() -> None:
    data = chain_dataset(10, 50)
    model = DummyModel(scale=0.6, learning_rate=-0.05)  # gradient ascent: every update makes it worse
    report = fit(model, data, FitConfig(max_epochs=5), rng=np.random.default_rng(0))
    assert float(model.scale) == pytest.approx(0.6)  # the starting weights were the best
    assert report.holdout_mse == pytest.approx(DummyModel(scale=0.6).evaluate(data.to_batch())["mse"], rel=0.5)
    no_restore = DummyModel(scale=0.6, learning_rate=-0.05)
    fit(no_restore, data, FitConfig(max_epochs=5, keep_best=False), rng=np.random.default_rng(0))
    assert abs(float(no_restore.scale) - 0.6) > 0.01


def test_ensemble_members_restored_and_warm_start() -> None:
    data = chain_dataset(10, 50)
    model = small_ensemble()
    first = fit(model, data, FitConfig(max_epochs=30), rng=np.random.default_rng(1))
    assert len(first.elites) == 2 and model.elites == list(first.elites)
    second = fit(model, data, FitConfig(max_epochs=10), rng=np.random.default_rng(1))  # same split
    assert second.holdout_loss <= first.holdout_loss + 1e-6  # warm start is never worse on holdout
    mean_before, _ = model.predict_members(data.to_batch().obs, data.to_batch().action)
    for group in model.optimizer.param_groups:
        group["lr"] = 1.0  # destructive steps: every epoch is worse than the start for every member
    fit(model, data, FitConfig(max_epochs=3), rng=np.random.default_rng(1))
    mean_after, _ = model.predict_members(data.to_batch().obs, data.to_batch().action)
    torch.testing.assert_close(mean_after, mean_before)  # each member restored to its best (starting) weights


class RecordingEnsemble:
    """A minimal ensemble-shaped WorldModel that records which rows each member was given."""

    obs_dim, action_dim, num_members = 3, 2, 3

    def __init__(self) -> None:
        self.rows: list[Tensor] = []

    def update_members(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor) -> Metrics:
        self.rows.append(obs[:, :, 1].clone())  # column 1 of chain_dataset obs identifies a row (continuous)
        return {"loss": 1.0}

    def predict(self, obs: Tensor, action: Tensor, *, deterministic: bool = False, generator: Any = None) -> ModelStep:
        return ModelStep(obs, obs[:, 0], torch.zeros(len(obs)))

    def update(self, batch: TransitionBatch) -> Metrics:
        raise AssertionError("fit must use update_members")

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return {"loss": 1.0, "mse": 1.0}

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        pass


@pytest.mark.parametrize("bootstrap", [True, False])
def test_bootstrap_gives_each_member_its_own_resample(bootstrap: bool) -> None:
    data = chain_dataset(5, 40)
    model = RecordingEnsemble()
    report = fit(model, data, FitConfig(max_epochs=1, batch_size=32, bootstrap=bootstrap), rng=np.random.default_rng(0))
    epoch_rows = torch.cat(model.rows, dim=1)  # [E, n_train]
    assert epoch_rows.shape == (3, report.n_train)
    for e in range(3):
        n_unique = len(torch.unique(epoch_rows[e]))
        if bootstrap:
            assert n_unique < 0.8 * report.n_train  # with replacement: ~63 % unique
        else:
            assert n_unique == report.n_train
    assert not torch.equal(epoch_rows[0], epoch_rows[1])


def test_logs_each_epoch_under_model(tmp_path: Any) -> None:
    data = chain_dataset(10, 50)
    with Logger(tmp_path, console=False, tensorboard=False) as logger:
        report = fit(DummyModel(), data, FitConfig(max_epochs=3), rng=np.random.default_rng(0), logger=logger, step_offset=100)
    csv = read_csv(tmp_path / "progress.csv")
    assert csv["step"].tolist() == [101, 102, 103][: report.epochs]
    for key in ("model/train_loss", "model/holdout_loss", "model/holdout_mse", "model/epoch", "model/time"):
        assert np.isfinite(csv[key]).all(), key
    assert csv["model/epoch"].tolist() == [1.0, 2.0, 3.0][: report.epochs]


def test_wrapped_ensemble_uses_member_hooks() -> None:
    data = chain_dataset(10, 50)
    wrapped = KnownFunctionsModel(small_ensemble(), term_fn=lambda o, a, n: (n[:, 0] > 100).float())
    report = fit(wrapped, data, FitConfig(max_epochs=5), rng=np.random.default_rng(0))
    assert len(report.elites) == 2
    assert "nll" in report.holdout_metrics


def test_ensemble_beats_mean_delta_baseline_on_real_halfcheetah() -> None:
    data = random_dataset("HalfCheetah-v5", 6000, episode_len=200, seed=0)
    rng = np.random.default_rng(0)
    train, hold = data.split_by_episode(0.2, rng)
    model = ProbabilisticEnsemble(
        17, 6, EnsembleConfig(num_members=4, num_elites=3, hidden=128, depth=3, device="cpu"), seed=0
    )
    report = fit(model, train, FitConfig(max_epochs=25, max_time_s=20), rng=rng)
    hb = hold.to_batch()
    mean_delta = (train.next_observations - train.observations).mean(0)
    baseline = float(((hb.obs + torch.from_numpy(mean_delta) - hb.next_obs) ** 2).mean())
    model_mse = model.evaluate(hb)["mse"]
    assert report.epochs >= 5
    assert model_mse < 0.1 * baseline, (model_mse, baseline)  # measured: ~0.03


class _Interrupt(Exception):
    pass


class _StopAt:
    """A fit logger that raises at a chosen epoch, as a kill inside the fit would stop it."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def log(self, metrics: dict[str, float], step: int) -> None:
        if int(metrics["model/epoch"]) == self.epoch:
            raise _Interrupt


@pytest.mark.parametrize("per_member", [True, False])
def test_an_interrupted_fit_resumes_from_its_progress_file_to_the_same_result(tmp_path: Any, per_member: bool) -> None:
    data = chain_dataset(10, 50)
    make = small_ensemble if per_member else (lambda: DummyModel(scale=1.0, learning_rate=0.2))
    config = FitConfig(max_epochs=12, patience=50, checkpoint_every_s=0)
    straight = make()
    report = fit(straight, data, config, rng=np.random.default_rng(3))
    progress = tmp_path / "fit.pt"
    interrupted = make()
    with pytest.raises(_Interrupt):
        fit(interrupted, data, config, rng=np.random.default_rng(3), logger=_StopAt(5), checkpoint=progress)
    assert progress.is_file()
    resumed = make()  # a fresh process: new model, the run's generator at its start state
    calls: list[int] = []
    logger = type("L", (), {"log": lambda self, m, step: calls.append(int(m["model/epoch"]))})()
    again = fit(resumed, data, config, rng=np.random.default_rng(3), logger=logger, checkpoint=progress)
    assert calls[0] == 6  # continued after epoch 5, not from nothing
    assert (again.epochs, again.updates, again.elites) == (report.epochs, report.updates, report.elites)
    assert again.holdout_loss == report.holdout_loss
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if isinstance(a, Tensor):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    batch = data.to_batch()
    torch.testing.assert_close(straight.predict(batch.obs, batch.action, deterministic=True).next_obs,
                               resumed.predict(batch.obs, batch.action, deterministic=True).next_obs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="another fit"):
        fit(make(), data, config, rng=np.random.default_rng(4), checkpoint=progress)


@pytest.mark.parametrize("episodes", [4, 1])  # the episode split, and the row split of one episode
def test_rows_without_a_true_next_state_are_neither_fitted_nor_scored(episodes: int) -> None:
    from mbrl.data import OfflineDataset
    from mbrl.models.fit import split_holdout

    ds = random_dataset("Hopper-v5", 200, seed=0)
    known = np.ones(len(ds), bool)
    known[49::50] = False  # e.g. the derived next state of a D4RL terminal row
    ends = np.zeros(len(ds), bool)
    ends[len(ds) // episodes - 1 :: len(ds) // episodes] = True  # 4 episodes of 50, or one of 200
    nxt = np.concatenate([ds.observations[1:], ds.observations[-1:]])  # continuous: no other episode breaks
    marked = OfflineDataset(ds.observations, ds.actions, ds.rewards, nxt, np.zeros(len(ds), bool), ends,
                            next_obs_known=known)
    train, hold, split = split_holdout(marked, 0.25, np.random.default_rng(0))
    assert split == ("episode" if episodes > 1 else "row")
    assert len(train) + len(hold) == int(known.sum()) == 196
    used = torch.cat([train.obs, hold.obs])
    for row in np.flatnonzero(~known):
        assert not (used == torch.from_numpy(ds.observations[row])).all(-1).any(), row
