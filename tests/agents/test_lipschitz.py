"""Single-model Dyna with a Lipschitz-regularised critic: preset, regulariser, diagnostics hook, CLI and resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl.agents.dyna import DynaAgent, DynaConfig, RolloutSchedule, cpu_preset, mbpo_preset
from mbrl.agents.lipschitz import (
    LipschitzConfig,
    LipschitzDiagnostics,
    lipschitz_preset,
    make_lipschitz_agent,
)
from mbrl.cli import main
from mbrl.envs import get_spec
from mbrl.logging import read_csv
from mbrl.models.ensemble import EnsembleConfig
from mbrl.models.fit import FitConfig
from mbrl.rl.lipschitz import critic_lipschitz_estimate
from mbrl.rl.networks import SpectralNormEnsembleLinear
from mbrl.rl.sac import SAC, SACConfig


def test_preset_is_the_cpu_preset_with_one_model_and_the_regularised_critic() -> None:
    reg = lipschitz_preset("Hopper-v5")
    plain = lipschitz_preset("Hopper-v5", regularized=False)
    base = cpu_preset("Hopper-v5")
    for c in (reg, plain):
        assert (c.ensemble.num_members, c.ensemble.num_elites, c.ensemble.deterministic) == (1, 1, False)
        # everything but the model size and the critic equals the ensemble baseline's config
        assert replace(c, ensemble=base.ensemble, sac=base.sac) == base
    assert plain.sac == base.sac
    lip = LipschitzConfig()
    assert reg.sac == replace(
        base.sac, critic_spectral_norm_layers=lip.spectral_norm_layers, adv_epsilon=lip.adv_epsilon,
        adv_steps=lip.adv_steps, adv_norm=lip.adv_norm, adv_weight=lip.adv_weight,
    )
    assert reg.sac.adv_epsilon > 0 and reg.sac.critic_spectral_norm_layers
    assert lipschitz_preset("Hopper-v5", base="paper").rollout == mbpo_preset("Hopper-v5").rollout
    assert lipschitz_preset("Hopper-v5", deterministic_model=True).ensemble.deterministic
    assert lipschitz_preset("Hopper-v5", total_steps=7).total_steps == 7


def test_regularised_critic_has_unit_spectral_norms() -> None:
    spec = get_spec("Hopper-v5")
    cfg = LipschitzConfig(adv_epsilon=0.05).apply(SACConfig(hidden=32, batch_size=32))
    sac = SAC(spec.obs_dim, spec.action_dim, -np.ones(3), np.ones(3), cfg, generator=torch.Generator().manual_seed(0))
    layers = sac.critic.ensemble_layers()
    assert [isinstance(layer, SpectralNormEnsembleLinear) for layer in layers] == [True, True, False]
    agent = DynaAgent(tiny_config(use_model=False, total_steps=64, init_random_steps=64), run_dir=None)
    agent.learn()
    for _ in range(30):
        sac.update(agent.real_buffer.sample(32))
    for layer in layers[:2]:
        assert isinstance(layer, SpectralNormEnsembleLinear)
        layer.power_iteration(200)
        top = torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2)
        assert torch.allclose(top, torch.ones_like(top), atol=1e-3)


def test_regulariser_lowers_the_critic_lipschitz_estimate() -> None:
    """The same critic trained on the same batches with and without the regulariser (spectral norm + adversarial
    inputs): the regularised one ends with a smaller Lipschitz estimate in the observation."""
    spec = get_spec("Hopper-v5")
    agent = DynaAgent(tiny_config(use_model=False, total_steps=256, init_random_steps=256), run_dir=None)
    agent.learn()
    data = agent.real_buffer.all()
    base = SACConfig(hidden=64, batch_size=64, critic_lr=1e-3)
    estimates = {}
    for name, cfg in {"plain": base, "regularised": LipschitzConfig(adv_epsilon=0.05).apply(base)}.items():
        sac = SAC(spec.obs_dim, spec.action_dim, -np.ones(3), np.ones(3), cfg, generator=torch.Generator().manual_seed(0))
        rng = np.random.default_rng(0)
        for _ in range(300):
            rows = torch.as_tensor(rng.integers(0, len(data), 64))
            sac.update(data.index(rows))
        estimates[name] = critic_lipschitz_estimate(sac, data.obs[:256])
    assert estimates["regularised"] < 0.7 * estimates["plain"], estimates  # measured here: 1.28 vs 3.10


def tiny_config(**overrides: object) -> DynaConfig:
    base = lipschitz_preset(
        "Hopper-v5",
        total_steps=400,
        init_random_steps=200,
        epoch_length=100,
        model_train_every=100,
        rollouts_per_step=4,
        rollout=RolloutSchedule(1, 3, 1, 2),
        model_retain_refits=2,
        utd=2,
        eval_every=0,
        eval_episodes=1,
        checkpoint_every=0,
        sac=LipschitzConfig().apply(SACConfig(hidden=32, batch_size=32)),
        ensemble=EnsembleConfig(num_members=1, num_elites=1, hidden=32, depth=2, full_info=False),
        fit=FitConfig(max_epochs=2, batch_size=64),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def _params(agent: DynaAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.sac.parameters()]


def test_diagnostics_are_logged_do_not_change_training_and_resume_exactly(tmp_path: Path) -> None:
    cfg = tiny_config()
    seen: list[dict[str, float]] = []
    hook = LipschitzDiagnostics(cfg.env_id, num_states=64, seed=cfg.seed)

    def recording(agent: DynaAgent, step: int) -> dict[str, float]:
        out = hook(agent, step)
        seen.append(out)
        return out

    with_diag = DynaAgent(cfg, on_model_refit=recording)
    with_diag.learn()
    without = make_lipschitz_agent(cfg, diagnostics=False)
    without.learn()
    assert without.on_model_refit is None
    for a, b in zip(_params(with_diag), _params(without)):
        assert torch.equal(a, b)  # the hook draws from its own generators only
    assert len(seen) == 3  # refits at 200, 300, 400
    for m in seen:
        assert m["train/critic_lipschitz"] > 0 and np.isfinite(m["train/critic_lipschitz"])
        assert m["model/bellman_gap"] > 0 and np.isfinite(m["model/bellman_gap"])

    first = make_lipschitz_agent(replace(cfg, total_steps=250), run_dir=str(tmp_path), diag_states=64)
    first.learn()
    resumed = make_lipschitz_agent(cfg, run_dir=str(tmp_path), diag_states=64)
    assert resumed.resume() and resumed.step == 250
    resumed.learn()
    for a, b in zip(_params(with_diag), _params(resumed)):
        assert torch.equal(a, b)
    assert resumed.model_time_s > 0 and resumed.rollout_time_s > 0


def test_cli_train_lipschitz_smoke_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "lip"
    args = ["train", "lipschitz", "--env", "Hopper-v5", "--run-dir", str(run), "--init-random-steps", "500",
            "--utd", "1", "--diag-states", "32"]
    assert main([*args, "--total-steps", "550"]) == 0
    cols = read_csv(run)
    assert int(cols["step"].max()) == 550
    lip = cols["train/critic_lipschitz"]
    gap = cols["model/bellman_gap"]
    assert np.isfinite(lip).sum() == 1 and np.isfinite(gap).sum() == 1  # one refit, at step 500
    assert int(cols["step"][np.isfinite(lip)][0]) == 500
    capsys.readouterr()
    assert main([*args, "--total-steps", "800", "--resume"]) == 0
    assert "resumed" in capsys.readouterr().err
    cols = read_csv(run)
    assert int(cols["step"].max()) == 800
    refits = cols["step"][np.isfinite(cols["train/critic_lipschitz"])]
    assert sorted(set(refits.tolist())) == [500, 750]
    assert np.all(np.isfinite(cols["model/bellman_gap"][np.isin(cols["step"], [500, 750])]))
