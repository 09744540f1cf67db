"""The GPU path's device discipline, checked on a CPU (issue 24).

Every module runs on the ``meta`` device under :class:`tests.device_checks.OpRecorder`: a tensor created without
the module's device (a stray ``torch.zeros(())``, a host generator's draw, a ``.cpu()``) shows up as a CPU tensor
among meta ones, which a plain CPU run cannot see and a GPU run pays for with a copy or a sync. On CPU the same
recorder lists the ops that make the host wait for the device (``.item()``, ``float(t)``, data-dependent shapes):
an update has none, so its metrics are read lazily (:class:`mbrl.metrics.LazyMetrics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mbrl.data import ReplayBuffer
from mbrl.metrics import LazyMetrics
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.rl import losses
from mbrl.rl.sac import SAC, SACConfig
from mbrl.rollouts import RolloutBuffer, mixed_batch
from mbrl.types import TransitionBatch
from tests.device_checks import recording

OBS, ACT, B = 5, 2, 8
META = torch.device("meta")
# RAVL's learner (SAC-N with 10 critics, EDAC, its update order and init) and every other option of the update.
RAVL: dict[str, Any] = dict(hidden=16, num_critics=10, edac_eta=1.0, update_order="alpha_actor_critic", init="edac")
OPTIONS: dict[str, Any] = dict(
    hidden=16, num_critics=4, num_target_critics=2, actor_q_reduction="mean", critic_input_noise_std=0.1,
    adv_epsilon=0.05, adv_steps=2, adv_norm="l2", bc_weight=2.5, actor_update_every=2, critic_layer_norm=True,
)  # not spectral norm: its fp32 guard opens an autocast context, which the meta device does not support


def batch(device: torch.device | str = "cpu", n: int = B, seed: int = 0) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    b = TransitionBatch(
        torch.randn(n, OBS, generator=g), torch.rand(n, ACT, generator=g) * 2 - 1, torch.randn(n, generator=g),
        torch.randn(n, OBS, generator=g), (torch.rand(n, generator=g) < 0.2).float(), torch.zeros(n),
    )
    return b.to(device)


def sac(device: str, **kw: Any) -> SAC:
    return SAC(OBS, ACT, [-2.0, -1.0], [2.0, 1.0], SACConfig(device=device, **kw), generator=torch.Generator().manual_seed(0))


def run_updates(learner: SAC, batches: list[TransitionBatch]) -> list[Any]:
    return [learner.update(b, bc_batch=b) for b in batches]


def batches(device: torch.device | str, n: int = 2) -> list[TransitionBatch]:
    """Made before any recording starts (they are built on the host, then moved)."""
    return [batch(device, seed=i) for i in range(n)]


@pytest.mark.parametrize("kw", [RAVL, OPTIONS], ids=["ravl_sac_n_edac", "all_options"])
def test_sac_update_keeps_every_tensor_on_the_learner_device(kw: dict[str, Any]) -> None:
    learner = sac("meta", **kw)
    data = batches(META)
    run_updates(learner, data)  # the optimizers' lazily created state
    with recording() as rec:
        run_updates(learner, data)  # actor_update_every=2: both branches
        learner.update(data[0], clone_actions=True)  # the BC warm start
    assert len(rec.devices) > 200  # the recorder saw the update (forward, backward, Polyak)
    assert rec.off_device(META) == []
    assert rec.syncs == []


def test_the_device_check_catches_a_stray_host_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a 0-dim host tensor (which torch silently mixes with any device) is caught."""
    learner = sac("meta", **RAVL)
    data = batches(META, n=1)
    run_updates(learner, data)
    critic_loss = losses.critic_loss
    monkeypatch.setattr(losses, "critic_loss", lambda q, t: critic_loss(q, t) + torch.zeros(()))
    with recording() as rec:
        run_updates(learner, data)
    assert ("aten.add.Tensor", "cpu") in rec.off_device(META)


@pytest.mark.parametrize("kw", [RAVL, OPTIONS], ids=["ravl_sac_n_edac", "all_options"])
def test_sac_update_does_not_sync_and_its_metrics_are_read_lazily(kw: dict[str, Any]) -> None:
    learner = sac("cpu", **kw)
    data = batches("cpu")
    run_updates(learner, data)
    alpha_before = learner.alpha
    with recording() as rec:
        metrics = run_updates(learner, data)
    assert rec.syncs == []
    assert all(isinstance(m, LazyMetrics) and not m.materialised for m in metrics)
    first = metrics[0]
    first["rollout/n"] = 3.0  # a loop merging its own metrics in does not read them
    assert not first.materialised
    with recording() as rec:
        values = dict(first)
    assert first.materialised and rec.syncs == []  # one tolist(), not one .item() per key
    assert values["rollout/n"] == 3.0 and set(values) == {*learner._metric_names, "rollout/n"}
    if kw.get("update_order", "critic_first") == "critic_first":  # one alpha for the whole update: the old one
        assert values["alpha"] == pytest.approx(alpha_before)
    else:  # alpha steps first (RAVL): the update used the new one
        assert values["alpha"] != alpha_before and values["alpha"] == pytest.approx(alpha_before, rel=0.01)
    assert all(np.isfinite(v) for v in values.values())


def test_sac_reading_a_metric_is_the_only_sync() -> None:
    """Reading a metric with .item() per value would show up here; LazyMetrics reads all with one tolist()."""
    learner = sac("cpu", **RAVL)
    m = learner.update(batch())
    with recording() as rec:
        _ = float(learner.log_alpha.detach())  # what the update must not do: a scalar read is recorded
    assert rec.syncs == ["aten._local_scalar_dense.default"]
    assert not m.materialised


def test_optimizers_are_fused_on_cpu() -> None:
    learner = sac("cpu", **RAVL)
    model = ProbabilisticEnsemble(OBS, ACT, EnsembleConfig(num_members=3, num_elites=2, hidden=8, depth=2, device="cpu"))
    for opt in (learner.critic_optimizer, learner.policy_optimizer, model.optimizer):
        assert opt.defaults["fused"] is True


def small_ensemble(device: str) -> ProbabilisticEnsemble:
    return ProbabilisticEnsemble(
        OBS, ACT, EnsembleConfig(num_members=3, num_elites=2, hidden=8, depth=2, device=device), seed=0
    )


def member_batch(device: torch.device | str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(s, generator=g).to(device) for s in [(3, B, OBS), (3, B, ACT), (3, B), (3, B, OBS)])


def test_ensemble_training_step_keeps_every_tensor_on_the_model_device() -> None:
    model = small_ensemble("meta")
    members, rows = member_batch(META), batch(META)
    model.update_members(*members)
    with recording() as rec:
        metrics = model.update_members(*members)
        model.update(rows)
    assert len(rec.devices) > 50
    assert rec.off_device(META) == [] and rec.syncs == []
    assert isinstance(metrics, LazyMetrics) and not metrics.materialised


def test_ensemble_training_step_does_not_sync_on_cpu() -> None:
    model = small_ensemble("cpu")
    members = member_batch("cpu")
    with recording() as rec:
        metrics = model.update_members(*members)
    assert rec.syncs == [] and not metrics.materialised
    assert set(metrics) == {"mse", "logvar_mean", "loss", "bound_penalty", "weight_decay"}
    assert all(np.isfinite(v) for v in metrics.values())


def test_a_rollout_step_follows_the_device_with_a_host_generator() -> None:
    """Policy sample + model step (MOPO/RAVL's full-info prediction) on the device, driven by the agents' usual
    host generator: no draw is made on the host and copied over."""
    learner, model = sac("meta", **RAVL), small_ensemble("meta")
    host_gen = torch.Generator().manual_seed(3)
    obs = batch(META).obs
    with recording() as rec:
        for policy in (learner.as_policy(deterministic=False), learner.as_policy(deterministic=True)):
            action = policy(obs)
            step = model.predict(obs, action, generator=host_gen, full_info=True)
            model.predict(obs, action, deterministic=True, full_info=True)
    assert step.next_obs.device == META and step.info["uncertainty"].device == META
    assert rec.off_device(META) == [] and rec.syncs == []


# ----------------------------------------------------------------------------------------------- buffers
def filled(storage: str, device: str = "cpu", seed: int = 0, n: int = 50) -> ReplayBuffer:
    buf = ReplayBuffer(20, OBS, ACT, rng=np.random.default_rng(seed), device=device, storage=storage)  # type: ignore[arg-type]
    g = np.random.default_rng(7)
    for _ in range(n // 10):  # 50 rows through a 20-row ring: wraps
        buf.add(
            g.normal(size=(10, OBS)), g.uniform(-1, 1, size=(10, ACT)), g.normal(size=10), g.normal(size=(10, OBS)),
            g.random(10) < 0.3, g.random(10) < 0.2,
        )
    return buf


def same(a: TransitionBatch, b: TransitionBatch) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.as_numpy().values(), b.as_numpy().values()))


def test_torch_storage_samples_the_same_rows_as_numpy_storage() -> None:
    host, dev = filled("numpy"), filled("torch")
    assert not host.on_device and dev.on_device and isinstance(dev.obs, torch.Tensor)
    for _ in range(3):
        a, b = host.sample(16), dev.sample(16)
        assert all(np.array_equal(x, y) for x, y in zip(a.as_numpy().values(), b.as_numpy().values()))
    assert all(np.array_equal(x, y) for x, y in zip(host.all().as_numpy().values(), dev.all().as_numpy().values()))
    ds_h, ds_d = host.to_dataset(), dev.to_dataset()
    assert np.array_equal(ds_h.terminals, ds_d.terminals) and np.array_equal(ds_h.observations, ds_d.observations)


@pytest.mark.parametrize(("save_from", "load_into"), [("torch", "numpy"), ("numpy", "torch")])
def test_buffer_state_loads_across_storages_and_resumes_exactly(save_from: str, load_into: str, tmp_path: Any) -> None:
    src = filled(save_from)
    src.save(tmp_path / "buf.npz")
    dst = ReplayBuffer.load(tmp_path / "buf.npz", np.random.default_rng(99), device="cpu")
    if load_into == "torch":
        dst = ReplayBuffer(20, OBS, ACT, rng=np.random.default_rng(99), storage="torch")
        dst.load_state_dict(src.state_dict())
    assert dst.on_device == (load_into == "torch") and len(dst) == len(src)
    for _ in range(3):
        a, b = src.sample(8).as_numpy(), dst.sample(8).as_numpy()
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_device_storage_samples_on_its_device_and_takes_rollouts_without_the_host() -> None:
    buf = RolloutBuffer(30, OBS, ACT, rng=np.random.default_rng(0), device="meta")
    assert buf.on_device and buf.obs.device == META
    rows = batch(META, n=12)
    with recording() as rec:
        buf.add_batch(rows)
        sample = buf.sample(6)
    assert sample.obs.device == META and len(sample) == 6 and len(buf) == 12
    # Only the row indices (drawn by the numpy RNG) cross from the host: one int64 vector per batch.
    assert set(rec.off_device(META)) == {("aten.lift_fresh.default", "cpu"), ("aten._to_copy.default", "cpu")}
    mixed = mixed_batch(lambda n: batch("cpu", n=n), buf, 10, real_ratio=0.5)
    assert mixed.obs.device == META and len(mixed) == 10


def test_buffer_rejects_numpy_storage_off_the_host() -> None:
    with pytest.raises(ValueError, match="numpy storage"):
        ReplayBuffer(4, OBS, ACT, rng=np.random.default_rng(0), device="meta", storage="numpy")


def test_with_device_sets_every_nested_device_field_and_none_keeps_the_stored_ones() -> None:
    from mbrl.agents.ravl import ravl_preset
    from mbrl.utils import with_device

    config = ravl_preset("mbrl/hopper/medium-v0", "quick")
    moved = with_device(config, "cuda")
    assert (moved.sac.device, moved.ensemble.device) == ("cuda", "cuda")
    assert (config.sac.device, config.ensemble.device) != ("cuda", "cuda")
    assert with_device(config, None) is config
