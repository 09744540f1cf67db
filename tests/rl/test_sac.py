"""SAC-N learner: targets, Polyak, REDQ, temperature, bounds, state round trip, determinism, options."""

import io

import numpy as np
import pytest
import torch

from mbrl.rl import losses
from mbrl.rl.networks import SpectralNormEnsembleLinear
from mbrl.rl.sac import SAC, SACConfig
from mbrl.types import TransitionBatch

OBS, ACT = 5, 2
LOW, HIGH = np.array([-3.0, 0.5], dtype=np.float32), np.array([1.0, 4.0], dtype=np.float32)
SMALL = {"hidden": 32, "depth": 2}


def make(seed: int = 0, **kw: object) -> SAC:
    return SAC(OBS, ACT, LOW, HIGH, SACConfig(**{**SMALL, **kw}), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]


def batch(seed: int, n: int = 16, terminated_rows: tuple[int, ...] = ()) -> TransitionBatch:
    gen = torch.Generator().manual_seed(1000 + seed)
    term = torch.zeros(n)
    term[list(terminated_rows)] = 1.0
    low, high = torch.as_tensor(LOW), torch.as_tensor(HIGH)
    return TransitionBatch(
        obs=torch.randn(n, OBS, generator=gen),
        action=low + (high - low) * torch.rand(n, ACT, generator=gen),
        reward=torch.randn(n, generator=gen),
        next_obs=torch.randn(n, OBS, generator=gen),
        terminated=term,
        truncated=torch.zeros(n),
    )


def test_terminated_rows_target_is_exactly_the_reward() -> None:
    sac = make()
    b = batch(0, terminated_rows=(1, 4, 7))
    target = sac.compute_target(b)
    term = b.terminated.bool()
    assert torch.equal(target[term], b.reward[term])
    assert not torch.allclose(target[~term], b.reward[~term])  # the others bootstrap
    # truncated does not stop bootstrapping
    b_trunc = TransitionBatch(b.obs, b.action, b.reward, b.next_obs, torch.zeros(16), torch.ones(16))
    target2 = sac.compute_target(b_trunc, noise=torch.zeros(16, ACT))
    assert not torch.allclose(target2, b.reward)


def test_target_is_min_over_target_critics() -> None:
    sac = make(num_critics=4)
    b = batch(1)
    noise = torch.randn(16, ACT, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, logp = sac.actor.sample(b.next_obs, noise)
        q = sac.target_critic(b.next_obs, a)
    expected = b.reward + sac.config.gamma * (1 - b.terminated) * (q.min(0).values - sac.alpha * logp)
    assert torch.allclose(sac.compute_target(b, noise=noise), expected, atol=1e-5)


def test_polyak_update_is_exact() -> None:
    sac = make(tau=0.2)
    sac.update(batch(0))  # targets and critics differ from now on
    before = [p.detach().clone() for p in sac.target_critic.parameters()]
    sac.update(batch(1))
    for t_before, t_after, online in zip(before, sac.target_critic.parameters(), sac.critic.parameters()):
        expected = 0.8 * t_before + 0.2 * online.detach()
        assert torch.allclose(t_after, expected, atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in sac.target_critic.parameters())


def test_redq_subset_comes_from_the_generator() -> None:
    a, b, other = make(3, num_critics=10, num_target_critics=2), make(3, num_critics=10, num_target_critics=2), make(
        4, num_critics=10, num_target_critics=2
    )
    subsets_a = [a.target_subset() for _ in range(5)]
    subsets_b = [b.target_subset() for _ in range(5)]
    subsets_o = [other.target_subset() for _ in range(5)]
    assert all(s is not None and s.shape == (2,) and len(set(s.tolist())) == 2 for s in subsets_a)
    assert all(torch.equal(x, y) for x, y in zip(subsets_a, subsets_b))  # type: ignore[arg-type]
    assert not all(torch.equal(x, y) for x, y in zip(subsets_a, subsets_o))  # type: ignore[arg-type]
    assert make(num_critics=10).target_subset() is None  # all critics: no draw
    # the target uses exactly the drawn subset
    sac = make(5, num_critics=10, num_target_critics=3)
    bt = batch(2)
    noise = torch.randn(16, ACT, generator=torch.Generator().manual_seed(9))
    state = sac.generator.get_state()
    subset = sac.target_subset()
    sac.generator.set_state(state)
    assert subset is not None
    with torch.no_grad():
        act, logp = sac.actor.sample(bt.next_obs, noise)
        q = sac.target_critic(bt.next_obs, act)[subset].min(0).values
    expected = losses.td_target(bt.reward, bt.terminated, q, logp, sac.alpha, sac.config.gamma)
    assert torch.allclose(sac.compute_target(bt, noise=noise), expected, atol=1e-5)


@pytest.mark.parametrize(("target_entropy", "direction"), [(-50.0, -1), (50.0, 1)])
def test_alpha_moves_towards_the_entropy_target(target_entropy: float, direction: int) -> None:
    sac = make(target_entropy=target_entropy)
    alpha0 = sac.alpha
    for i in range(5):
        sac.update(batch(i))
    assert (sac.alpha - alpha0) * direction > 0
    fixed = make(auto_alpha=False, init_alpha=0.2)
    m = fixed.update(batch(0))
    assert fixed.alpha == pytest.approx(0.2) and m["alpha"] == pytest.approx(0.2) and m["alpha_loss"] == 0.0


def test_actions_in_env_bounds_with_asymmetric_bounds() -> None:
    sac = make()
    obs = np.random.default_rng(0).normal(size=(500, OBS)).astype(np.float32) * 5
    for deterministic in (False, True):
        a = sac.act(obs, deterministic=deterministic)
        assert isinstance(a, np.ndarray) and a.shape == (500, ACT)
        assert (a >= LOW).all() and (a <= HIGH).all()
        at = sac.as_policy(deterministic)(torch.as_tensor(obs))
        assert isinstance(at, torch.Tensor) and at.shape == (500, ACT)
    single = sac.act(obs[0], deterministic=True)
    assert single.shape == (ACT,)
    assert np.allclose(single, sac.act(obs[:1], deterministic=True)[0])
    # stochastic actions spread over the env range (env units, not [-1, 1])
    spread = sac.act(np.zeros((2000, OBS), dtype=np.float32))
    assert spread[:, 1].max() > 3.0 and spread[:, 0].min() < -2.0
    # scaling maps [-1, 1] exactly onto [low, high] and back
    ends = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    assert torch.allclose(sac.to_env(ends), torch.tensor(np.stack([LOW, HIGH])))
    x = torch.rand(7, ACT) * 2 - 1
    assert torch.allclose(sac.to_unit(sac.to_env(x)), x, atol=1e-6)


def test_state_dict_round_trip_gives_an_identical_next_update() -> None:
    a = make(0, num_critics=3, critic_spectral_norm_layers=(1,))
    for i in range(3):
        a.update(batch(i))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = make(99, num_critics=3, critic_spectral_norm_layers=(1,))  # different init and RNG
    b.load_state_dict(state)
    ma, mb = a.update(batch(5)), b.update(batch(5))
    assert ma == mb
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a.num_updates == b.num_updates == 4
    assert np.array_equal(a.act(np.ones((3, OBS), np.float32)), b.act(np.ones((3, OBS), np.float32)))
    with pytest.raises(KeyError, match="critic_optimizer"):
        b.load_state_dict({k: v for k, v in state.items() if k != "critic_optimizer"})


def test_same_seed_same_metrics_different_seed_different() -> None:
    runs = []
    for seed in (0, 0, 1):
        sac = make(seed, num_critics=4, num_target_critics=2)
        runs.append([sac.update(batch(i)) for i in range(4)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    keys = {"critic_loss", "q_mean", "q_std", "target_q_mean", "alpha", "actor_loss", "alpha_loss", "entropy"}
    assert set(runs[0][0]) == keys
    assert all(np.isfinite(v) for m in runs[0] for v in m.values())


def test_update_reduces_the_critic_loss_on_a_fixed_batch() -> None:
    sac = make(critic_lr=3e-3)
    b = batch(0)
    first = sac.update(b)["critic_loss"]
    for _ in range(100):
        last = sac.update(b)["critic_loss"]
    assert last < 0.3 * first


def test_edac_term_reported_and_changes_the_critic_update() -> None:
    plain, edac = make(0, num_critics=5), make(0, num_critics=5, edac_eta=5.0)
    mp, me = plain.update(batch(0)), edac.update(batch(0))
    assert "edac_loss" in me and "edac_loss" not in mp
    assert me["critic_loss"] == pytest.approx(mp["critic_loss"])  # same TD loss before the step
    assert not torch.equal(plain.critic.ensemble_layers()[0].weight, edac.critic.ensemble_layers()[0].weight)
    with pytest.raises(ValueError, match="num_critics >= 2"):
        SACConfig(num_critics=1, edac_eta=1.0)


def test_edac_term_spans_its_exact_range() -> None:
    """ES = sum_{i!=j} cos(g_i, g_j) / (N - 1) lies in [-N/(N-1), N]: N for aligned gradients, -N/(N-1) when
    the unit gradients sum to zero."""
    n = 4
    g = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(0))
    assert losses.edac_diversity_loss(g.expand(n, -1, -1)).item() == pytest.approx(n, rel=1e-6)
    anti = torch.cat([g, -g, 2 * g, -0.5 * g])  # unit vectors e, -e, e, -e: their sum is zero
    assert losses.edac_diversity_loss(anti).item() == pytest.approx(-n / (n - 1), rel=1e-6)
    # In the learner: critics with identical weights have identical action gradients -> the term is N exactly.
    sac = make(0, num_critics=n, edac_eta=1.0)
    with torch.no_grad():
        for layer in sac.critic.ensemble_layers():
            layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
            layer.bias.copy_(layer.bias[:1].expand_as(layer.bias))
    assert sac.update(batch(0))["edac_loss"] == pytest.approx(n, rel=1e-5)


def test_edac_term_under_bf16_matches_fp32() -> None:
    """The cpu presets run EDAC's double backward under bf16 autocast: at RAVL's size (10 critics of 3 x 256,
    batch 256) the term and the losses are finite and within 2 % of fp32 on the same weights and batch."""
    b = batch(0, n=256)
    kw = {"hidden": 256, "depth": 3, "num_critics": 10, "edac_eta": 1.0, "init": "edac"}
    m32, m16 = make(3, **kw).update(b), make(3, use_bf16=True, **kw).update(b)
    assert all(np.isfinite(v) for v in m16.values())
    assert m16["edac_loss"] == pytest.approx(m32["edac_loss"], rel=0.02, abs=0.02)
    assert m16["critic_loss"] == pytest.approx(m32["critic_loss"], rel=0.02)


def test_edac_init_and_update_order_follow_the_released_code() -> None:
    sac = make(0, depth=3, num_critics=3, init="edac")
    critic = sac.critic.ensemble_layers()
    assert all(torch.all(layer.bias == 0.1) for layer in critic[:-1])
    assert critic[-1].weight.abs().max() <= 3e-3 and critic[-1].bias.abs().max() <= 3e-3
    assert critic[-1].weight.std() > 1e-3  # drawn, not a constant
    assert all(torch.all(layer.bias == 0.1) for layer in sac.actor.hidden_layers)  # type: ignore[attr-defined]
    assert sac.actor.head.weight.abs().max() <= 1e-3 and sac.actor.head.bias.abs().max() <= 1e-3
    bound = 1 / np.sqrt(32)  # hidden weights keep nn.Linear's U(-1/sqrt(in), 1/sqrt(in))
    assert 0.8 * bound < critic[1].weight.abs().max() <= bound
    # alpha -> actor -> critic: the temperature steps first; the actor steps with the new alpha on the critics
    # as they were before this update; the critics' target uses the new alpha.
    b = batch(1)
    for order in ("alpha_actor_critic", "critic_first"):
        learner, before = make(0, update_order=order, init_alpha=0.5), make(0, update_order=order, init_alpha=0.5)
        noise = torch.empty(len(b), ACT).normal_(generator=before.generator)  # the update's first draw
        metrics = learner.update(b)
        with torch.no_grad():
            pi, log_prob = before.actor.sample(b.obs, noise)
            replayed = losses.actor_loss(before.critic(b.obs, pi), log_prob, metrics["alpha"])
        if order == "alpha_actor_critic":
            assert metrics["alpha"] != pytest.approx(0.5)  # the new alpha, already stepped
            assert metrics["actor_loss"] == pytest.approx(replayed.item(), rel=1e-5)
        else:  # SB3: one alpha for the update, actor on the updated critics
            assert metrics["alpha"] == pytest.approx(0.5)
            assert metrics["actor_loss"] != pytest.approx(replayed.item(), rel=1e-5)


def test_adversarial_perturbation_increases_the_critic_loss_within_epsilon() -> None:
    sac = make(0, adv_epsilon=0.1, adv_steps=3)
    b = batch(0)
    for i in range(3):
        m = sac.update(batch(i))
    assert m["adv_critic_loss"] >= m["critic_loss"]
    target = sac.compute_target(b)
    action = sac.to_unit(b.action)
    for norm in ("linf", "l2"):
        delta = losses.adversarial_perturbation(
            lambda o: sac.critic_td_loss(o, action, target), b.obs, epsilon=0.1, steps=3, norm=norm  # type: ignore[arg-type]
        )
        size = delta.abs().amax(-1) if norm == "linf" else delta.norm(dim=-1)
        assert (size <= 0.1 + 1e-6).all() and (size > 0.05).all()
        # The ascent finds a worse perturbation than 64 random ones of the same ball (a sign error would not).
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            found = sac.critic_td_loss(b.obs + delta, action, target)
            random_best = max(
                sac.critic_td_loss(
                    b.obs + losses.project_perturbation(0.1 * (2 * torch.rand(b.obs.shape, generator=gen) - 1) * 3, 0.1, norm),  # type: ignore[arg-type]
                    action, target,
                )
                for _ in range(64)
            )
            assert found > random_best


def test_spectral_norm_option_normalises_the_chosen_critic_layers() -> None:
    sac = make(0, critic_spectral_norm_layers=(0, 1))
    layers = sac.critic.ensemble_layers()
    assert isinstance(layers[0], SpectralNormEnsembleLinear) and isinstance(layers[1], SpectralNormEnsembleLinear)
    assert not isinstance(layers[2], SpectralNormEnsembleLinear)
    for i in range(20):
        sac.update(batch(i))
    for layer in layers[:2]:
        assert isinstance(layer, SpectralNormEnsembleLinear)
        # one power iteration per forward tracks the moving weights closely ...
        top = torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2)
        assert torch.allclose(top, torch.ones_like(top), atol=5e-2)
        # ... and converges to exactly 1 when iterated on fixed weights
        layer.power_iteration(2000)
        top = torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2)
        assert torch.allclose(top, torch.ones_like(top), atol=1e-3)
    raw = torch.linalg.matrix_norm(layers[2].weight.detach(), ord=2)
    assert not torch.allclose(raw, torch.ones_like(raw), atol=5e-2)  # the output layer is left alone


def test_bf16_update_is_close_to_fp32() -> None:
    b = batch(0, n=64)
    m32 = make(0).update(b)
    m16 = make(0, use_bf16=True).update(b)
    assert set(m16) == set(m32)
    for key in ("q_mean", "target_q_mean", "entropy", "critic_loss"):
        assert m16[key] == pytest.approx(m32[key], rel=0.05, abs=0.02), key
    assert all(p.dtype == torch.float32 for p in make(0, use_bf16=True).parameters())  # fp32 master weights


def test_delayed_actor_updates_and_input_noise() -> None:
    sac = make(0, actor_update_every=2, critic_input_noise_std=0.1)
    actor0 = [p.detach().clone() for p in sac.actor.parameters()]
    sac.update(batch(0))  # update 0: actor moves
    actor1 = [p.detach().clone() for p in sac.actor.parameters()]
    sac.update(batch(1))  # update 1: actor frozen
    assert not all(torch.equal(x, y) for x, y in zip(actor0, actor1))
    assert all(torch.equal(x, y) for x, y in zip(actor1, sac.actor.parameters()))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        SAC(OBS, ACT, [-np.inf, 0], [1, 1], SACConfig(**SMALL), generator=torch.Generator())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_target_critics"):
        SACConfig(num_critics=2, num_target_critics=3)
    sac = make()
    wrong = TransitionBatch(torch.zeros(4, OBS + 1), torch.zeros(4, ACT), torch.zeros(4), torch.zeros(4, OBS + 1),
                            torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="obs/action dims"):
        sac.update(wrong)


def test_clone_actions_fits_the_batch_actions_and_still_trains_the_critics() -> None:
    """The warm-start objective moves the deterministic action onto the batch's actions (env units), which the
    Q objective on the same batch does not; the critics learn in both."""
    b = batch(3, n=64)
    low, high = torch.as_tensor(LOW), torch.as_tensor(HIGH)
    target = low + (high - low) * torch.sigmoid(b.obs[:, :ACT])  # env units, a smooth function of obs
    fixed = TransitionBatch(b.obs, target, b.reward, b.next_obs, b.terminated, b.truncated)
    errors = {}
    for clone in (True, False):
        sac = make(seed=0, init_alpha=0.01, actor_lr=3e-3)
        critic_before = [p.detach().clone() for p in sac.critic.parameters()]
        for _ in range(400):
            sac.update(fixed, clone_actions=clone)
        errors[clone] = float((sac.act(fixed.obs, deterministic=True) - target).abs().mean())
        assert any(not torch.equal(a, b) for a, b in zip(critic_before, sac.critic.parameters()))
    span = float((torch.as_tensor(HIGH) - torch.as_tensor(LOW)).mean())
    assert errors[True] < 0.1 * span < errors[False], errors


@pytest.mark.parametrize("bc_loss", ["nll", "mse"])
def test_bc_weight_anchors_the_actor_to_the_bc_batch_and_is_off_by_default(bc_loss: str) -> None:
    """TD3+BC's regulariser (either behaviour term): with a small weight on the Q term the actor follows the
    anchor batch's actions; with bc_weight 0 the same bc_batch is ignored (bit-identical to an update without it)."""
    b = batch(4, n=64)
    low, high = torch.as_tensor(LOW), torch.as_tensor(HIGH)
    target = low + (high - low) * torch.sigmoid(b.obs[:, :ACT])
    anchor = TransitionBatch(b.obs, target, b.reward, b.next_obs, b.terminated, b.truncated)
    errors = {}
    for weight in (1e-3, 0.0):
        sac = make(seed=0, init_alpha=0.01, actor_lr=3e-3, bc_weight=weight, bc_loss=bc_loss)
        for _ in range(400):
            sac.update(b, bc_batch=anchor)
        errors[weight] = float((sac.act(b.obs, deterministic=True) - target).abs().mean())
    span = float((high - low).mean())
    assert errors[1e-3] < 0.1 * span < errors[0.0], errors
    plain, ignored = make(seed=1), make(seed=1)
    for _ in range(3):
        m1, m2 = plain.update(b), ignored.update(b, bc_batch=anchor)
    assert m1 == m2
    with pytest.raises(ValueError, match="bc_weight"):
        make(bc_weight=-1.0)
    with pytest.raises(ValueError, match="bc_loss"):
        make(bc_loss="l1")


def test_bc_loss_mse_is_td3bc_squared_error_of_the_deterministic_action() -> None:
    """The "mse" behaviour term is TD3+BC's: mean over batch and action dims of (tanh(mu(s)) - a)^2 in [-1, 1]
    units. With the Q term's weight ~0, the actor's gradient is that of the hand-computed term."""
    b = batch(4, n=32)
    low, high = torch.as_tensor(LOW), torch.as_tensor(HIGH)
    target = low + (high - low) * torch.sigmoid(b.obs[:, :ACT])
    anchor = TransitionBatch(b.obs, target, b.reward, b.next_obs, b.terminated, b.truncated)
    sac = make(seed=0, bc_weight=1e-12, bc_loss="mse", actor_lr=1e-3)
    ref = make(seed=0)
    unit = (target - (high + low) / 2) / ((high - low) / 2)
    loss = (torch.tanh(ref.actor(b.obs)[0]) - unit).pow(2).mean()
    grads = torch.autograd.grad(loss, list(ref.actor.parameters()))
    before = [p.detach().clone() for p in sac.actor.parameters()]
    sac.update(b, bc_batch=anchor)
    # Adam's first step moves each weight by -lr * sign(grad) (where the grad is not ~0): check the signs
    moved = torch.cat([(p.detach() - q).flatten() for p, q in zip(sac.actor.parameters(), before, strict=True)])
    g = torch.cat([x.flatten() for x in grads])
    big = g.abs() > 1e-6
    assert big.sum() > 100
    agree = (torch.sign(moved[big]) == -torch.sign(g[big])).float().mean()
    assert agree > 0.99, float(agree)


def test_bf16_on_a_cpu_without_it_is_named_and_the_cpu_preset_stays_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulated bf16 is many times slower than fp32 (AVX2 EPYC: 1.2 vs 53 GFLOP/s): asking for it there is
    warned about with the flag's name, and the offline cpu preset only turns it on where the CPU has it."""
    import warnings

    import mbrl.agents.offline_model_based as omb
    import mbrl.utils
    from mbrl.agents.ravl import ravl_preset

    monkeypatch.setattr(mbrl.utils, "native_bf16", lambda device="cpu": False)
    monkeypatch.setattr(omb, "native_bf16", lambda device="cpu": False)
    with pytest.warns(RuntimeWarning, match="SACConfig.use_bf16=True, but cpu has no native bf16.*set SACConfig.use_bf16=False"):
        make(0, use_bf16=True)
    assert ravl_preset("mbrl/hopper/medium-v0", "cpu").sac.use_bf16 is False
    monkeypatch.setattr(mbrl.utils, "native_bf16", lambda device="cpu": True)
    monkeypatch.setattr(omb, "native_bf16", lambda device="cpu": True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(0, use_bf16=True)
        make(0)
    assert ravl_preset("mbrl/hopper/medium-v0", "cpu").sac.use_bf16 is True


def test_native_bf16_reads_the_hardware() -> None:
    from pathlib import Path

    from mbrl.utils import cpu_name, native_bf16

    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else None
    if flags is not None:
        assert native_bf16("cpu") == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert native_bf16("meta") is False
    assert cpu_name().endswith(("native bf16)", "no native bf16)"))
