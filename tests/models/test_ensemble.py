"""ProbabilisticEnsemble: prediction modes, sampling statistics, losses, elites, member snapshots, persistence."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mbrl.models.contract import synthetic_batch
from mbrl.models.ensemble import MBPO_WEIGHT_DECAY, EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.protocol import Ensemble, WorldModel
from mbrl.types import TransitionBatch

D, A = 4, 2


def small(**kwargs: object) -> ProbabilisticEnsemble:
    cfg = {"num_members": 4, "num_elites": 3, "hidden": 32, "depth": 2, "device": "cpu", **kwargs}
    return ProbabilisticEnsemble(D, A, EnsembleConfig(**cfg), seed=0)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained() -> tuple[ProbabilisticEnsemble, TransitionBatch]:
    batch = synthetic_batch(D, A, n=512, seed=1)
    model = small()
    model.fit_normalizer(batch)
    for _ in range(150):
        model.update(batch)
    return model, batch


def test_protocols() -> None:
    model = small()
    assert isinstance(model, WorldModel) and isinstance(model, Ensemble)
    assert model.num_members == 4 and model.elites == [0, 1, 2]


def test_deterministic_prediction_is_the_elite_mean_of_members(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    mean, logvar = model.predict_members(batch.obs, batch.action)
    assert mean.shape == (4, 512, D + 1) and logvar.shape == (4, 512, D + 1)
    step = model.predict(batch.obs, batch.action, deterministic=True)
    elite_mean = mean[model.elites].mean(0)
    torch.testing.assert_close(step.next_obs, elite_mean[:, :D])
    torch.testing.assert_close(step.reward, elite_mean[:, D])
    torch.testing.assert_close(step.info["members"], mean[:, :, :D])
    assert torch.equal(step.terminated, torch.zeros(512))
    # MOPO uncertainty (released code): max over ALL members of ||std|| in env units
    std = torch.exp(0.5 * logvar)
    torch.testing.assert_close(step.info["uncertainty"], std.norm(dim=-1).amax(0))


def test_uncertainty_covers_non_elite_members(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    """MOPO's and MOREC's code take the max over every network; a wild non-elite member must raise it."""
    model, batch = trained
    _, logvar = model.predict_members(batch.obs, batch.action)
    std = torch.exp(0.5 * logvar).norm(dim=-1)  # [E, B]
    non_elite = [i for i in range(model.num_members) if i not in model.elites]
    assert non_elite == [3]
    rows = std[3] > std[model.elites].amax(0)  # rows where the non-elite member is the most uncertain
    assert rows.any()
    all_members = model.predict(batch.obs, batch.action, deterministic=True).info["uncertainty"]
    elites_only = ProbabilisticEnsemble(D, A, dataclasses.replace(model.config, uncertainty_members="elites"), seed=0)
    elites_only.load_state_dict(model.state_dict())
    elite_unc = elites_only.predict(batch.obs, batch.action, deterministic=True).info["uncertainty"]
    torch.testing.assert_close(all_members[rows], std[3][rows])
    assert torch.all(all_members[rows] > elite_unc[rows])
    torch.testing.assert_close(elite_unc, std[model.elites].amax(0))


def test_fixed_member_mode(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    mean, _ = model.predict_members(batch.obs, batch.action)
    members = torch.arange(512) % 4  # includes the non-elite member 3
    step = model.predict_with_members(batch.obs, batch.action, members, deterministic=True)
    torch.testing.assert_close(step.next_obs, mean[members, torch.arange(512), :D])
    assert torch.equal(step.info["member"], members)
    with pytest.raises(ValueError, match="member indices"):
        model.predict_with_members(batch.obs, batch.action, torch.full((512,), 4))


def test_samples_follow_the_drawn_elite_gaussian(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    n = 20000
    obs, action = batch.obs[:1].expand(n, -1), batch.action[:1].expand(n, -1)
    mean, logvar = model.predict_members(obs[:1], action[:1])
    step = model.predict(obs, action, generator=torch.Generator().manual_seed(0))
    used = step.info["member"]
    assert set(used.tolist()) == set(model.elites)  # only elites, each drawn
    counts = torch.bincount(used, minlength=4)[model.elites].float()
    assert bool(((counts / n - 1 / 3).abs() < 0.02).all())
    for e in model.elites:
        rows = step.next_obs[used == e]
        z = (rows - mean[e, 0, :D]) / torch.exp(0.5 * logvar[e, 0, :D])
        assert z.mean(0).abs().max() < 0.1
        assert (z.std(0) - 1).abs().max() < 0.05


def test_sampling_reproducible_and_independent_of_chunk_size(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    chunked = small(predict_chunk_size=7)
    chunked.load_state_dict(model.state_dict())

    def sample(m: ProbabilisticEnsemble, seed: int) -> torch.Tensor:
        return m.predict(batch.obs, batch.action, generator=torch.Generator().manual_seed(seed)).next_obs

    torch.testing.assert_close(sample(model, 3), sample(chunked, 3))
    assert torch.equal(sample(model, 3), sample(model, 3))
    assert not torch.allclose(sample(model, 3), sample(model, 4))


def test_logvar_stays_within_soft_bounds(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    far = batch.obs * 100  # far out of distribution: the raw head would extrapolate wildly
    x = model._inputs(far, batch.action)
    _, logvar = model.network(x)
    assert logvar is not None
    assert bool((logvar <= model.network.max_logvar + 1e-6).all())
    assert bool((logvar >= model.network.min_logvar - 1e-6).all())


def test_update_learns_and_loss_terms() -> None:
    batch = synthetic_batch(D, A, n=512, seed=2)
    model = small()
    model.fit_normalizer(batch)
    before = model.evaluate(batch)
    metrics = [model.update(batch) for _ in range(200)][-1]
    after = model.evaluate(batch)
    assert set(metrics) >= {"loss", "mse", "bound_penalty", "weight_decay", "logvar_mean"}
    assert after["loss"] < 0.2 * before["loss"]
    assert after["mse"] < 0.2 * before["mse"]
    assert after["nll"] < before["nll"]
    # the penalty terms are what the config says
    net = model.network
    bound = 0.01 * float(net.max_logvar.detach().sum() - net.min_logvar.detach().sum())
    decays = model.config.layer_decays()
    decay = sum(c * 0.5 * float(layer.weight.detach().pow(2).sum()) for c, layer in zip(decays, net.layers()))
    m = model.update(batch)
    assert m["bound_penalty"] == pytest.approx(bound, rel=1e-3)
    assert m["weight_decay"] == pytest.approx(decay, rel=1e-2)


def test_update_members_trains_members_on_their_own_rows() -> None:
    # member e sees targets shifted by e: after training their reward predictions differ by ~e.
    batch = synthetic_batch(D, A, n=256, seed=3)
    model = small(normalize_targets=False, num_elites=4)
    model.fit_normalizer(batch)
    e = model.num_members
    obs, action, next_obs = (t.unsqueeze(0).expand(e, -1, -1) for t in (batch.obs, batch.action, batch.next_obs))
    reward = batch.reward.unsqueeze(0) + torch.arange(e, dtype=torch.float32).unsqueeze(1)
    for _ in range(300):
        model.update_members(obs, action, reward, next_obs)
    mean, _ = model.predict_members(batch.obs, batch.action)
    offsets = (mean[:, :, D] - batch.reward).mean(1)
    torch.testing.assert_close(offsets, torch.arange(e, dtype=torch.float32), atol=0.15, rtol=0)
    with pytest.raises(ValueError, match="update_members"):
        model.update_members(obs[:2], action[:2], reward[:2], next_obs[:2])


def test_select_elites_by_holdout_mse(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    damaged = small()
    damaged.load_state_dict(model.state_dict())
    with torch.no_grad():
        damaged.network.mlp.output_layer.bias[1] += 3.0  # member 1 is now far off
    losses = damaged.member_losses(batch)
    assert int(losses.argmax()) == 1
    assert damaged.select_elites(batch) == sorted(torch.argsort(losses)[:3].tolist())
    assert 1 not in damaged.elites
    damaged.set_elites([3, 0, 2])
    assert damaged.elites == [0, 2, 3]
    with pytest.raises(ValueError, match="set_elites"):
        damaged.set_elites([0, 0, 1])


def test_member_state_roundtrip(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    copy = small()
    copy.load_state_dict(model.state_dict())
    copy.set_member_state(2, copy.get_member_state(0))
    mean, logvar = copy.predict_members(batch.obs, batch.action)
    assert torch.equal(mean[2], mean[0]) and torch.equal(logvar[2], logvar[0])
    ref, _ = model.predict_members(batch.obs, batch.action)
    assert torch.equal(mean[1], ref[1]) and not torch.equal(mean[2], ref[2])


def test_state_dict_holds_normalizer_elites_and_optimizer(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    model.set_elites([1, 2, 3])
    state = model.state_dict()
    assert {"network", "optimizer"} <= set(state)
    assert "input_norm.mean" in state["network"] and "elites" in state["network"]
    fresh = small()
    fresh.load_state_dict(state)
    assert fresh.elites == [1, 2, 3]
    assert torch.equal(fresh.network.input_norm.std, model.network.input_norm.std)
    torch.testing.assert_close(fresh.update(batch)["loss"], model.update(batch)["loss"])  # same Adam state
    model.set_elites([0, 1, 2])
    with pytest.raises(RuntimeError, match="size mismatch"):
        small(hidden=16).load_state_dict(state)


def test_deterministic_single_model() -> None:
    batch = synthetic_batch(D, A, n=256, seed=4)
    model = ProbabilisticEnsemble(D, A, EnsembleConfig(num_members=1, deterministic=True, hidden=32, depth=2, device="cpu"))
    assert model.elites == [0]
    model.fit_normalizer(batch)
    first = model.update(batch)
    for _ in range(200):
        last = model.update(batch)
    assert last["loss"] < 0.2 * first["loss"] and "logvar_mean" not in last
    g = torch.Generator().manual_seed(0)
    a = model.predict(batch.obs, batch.action, generator=g)
    b = model.predict(batch.obs, batch.action, deterministic=True)
    assert torch.equal(a.next_obs, b.next_obs)  # no noise
    assert torch.equal(a.info["uncertainty"], torch.zeros(256))
    assert "nll" not in model.evaluate(batch)
    _, logvar = model.predict_members(batch.obs, batch.action)
    assert bool(torch.isinf(logvar).all())


def test_bf16_inference_is_close(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    fast = small(bf16_inference=True)
    fast.load_state_dict(model.state_dict())
    ref = model.predict(batch.obs, batch.action, deterministic=True).next_obs
    got = fast.predict(batch.obs, batch.action, deterministic=True).next_obs
    assert got.dtype == torch.float32
    scale = (batch.next_obs - batch.obs).abs().mean()
    assert float((got - ref).abs().max()) < 0.1 * float(scale) + 0.05
    assert not torch.equal(got, ref)  # it did run in bf16


def test_predictions_usable_in_autograd(trained: tuple[ProbabilisticEnsemble, TransitionBatch]) -> None:
    model, batch = trained
    step = model.predict(batch.obs, batch.action)
    assert not step.next_obs.requires_grad
    w = torch.ones(D, requires_grad=True)
    (step.next_obs @ w).sum().backward()  # not an inference-mode tensor
    assert w.grad is not None


def test_config_and_input_validation() -> None:
    assert EnsembleConfig().layer_decays() == MBPO_WEIGHT_DECAY
    interp = EnsembleConfig(depth=2).layer_decays()
    assert len(interp) == 3 and interp[0] == 2.5e-5 and interp[-1] == 1e-4
    assert EnsembleConfig(depth=2, weight_decay=(1e-3,)).layer_decays() == (1e-3,) * 3
    assert EnsembleConfig(num_members=3).elite_count() == 3
    for bad, match in (
        ({"num_elites": 8}, "num_elites"),
        ({"weight_decay": (1.0, 2.0)}, "weight_decay"),
        ({"activation": "swish2"}, "activation"),
        ({"num_members": 0}, "num_members"),
    ):
        with pytest.raises(ValueError, match=match):
            ProbabilisticEnsemble(D, A, EnsembleConfig(**bad))  # type: ignore[arg-type]
    model = small()
    with pytest.raises(ValueError, match=r"expected obs \[B, 4\]"):
        model.predict(torch.zeros(3, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="expected action"):
        model.predict(torch.zeros(3, 4), torch.zeros(2, 2))
    assert math.isfinite(model.evaluate(synthetic_batch(D, A))["loss"])


@pytest.mark.parametrize("deterministic_members", [False, True])
def test_lean_prediction_matches_full(deterministic_members: bool) -> None:
    batch = synthetic_batch(D, A, n=300, seed=5)
    full = small(deterministic=deterministic_members, predict_chunk_size=128)
    full.fit_normalizer(batch)
    for _ in range(20):
        full.update(batch)
    lean = small(deterministic=deterministic_members, predict_chunk_size=128, full_info=False)
    lean.load_state_dict(full.state_dict())
    for det in (True, False):
        a = full.predict(batch.obs, batch.action, deterministic=det, generator=torch.Generator().manual_seed(7))
        b = lean.predict(batch.obs, batch.action, deterministic=det, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(b.next_obs, a.next_obs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b.reward, a.reward, rtol=1e-5, atol=1e-5)
        assert torch.equal(a.info["member"], b.info["member"])
        assert set(b.info) == {"member"} and {"members", "uncertainty"} <= set(a.info)
    members = torch.tensor([3, 0, 0, 2] * 75)  # includes a non-elite member and an unused one (1)
    a = full.predict_with_members(batch.obs, batch.action, members, generator=torch.Generator().manual_seed(1))
    b = full.predict_with_members(batch.obs, batch.action, members, generator=torch.Generator().manual_seed(1), full_info=False)
    torch.testing.assert_close(b.next_obs, a.next_obs, rtol=1e-5, atol=1e-5)


def test_bf16_training_learns() -> None:
    batch = synthetic_batch(D, A, n=512, seed=6)
    model = small(bf16_training=True)
    model.fit_normalizer(batch)
    before = model.evaluate(batch)["mse"]
    for _ in range(200):
        metrics = model.update(batch)
    assert math.isfinite(metrics["loss"])
    assert model.evaluate(batch)["mse"] < 0.2 * before
    assert all(p.dtype == torch.float32 for p in model.parameters())
