"""Dyna (MBPO-style) agent: smoke runs with several world models, exact resume, CLI, and a slow learning check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl.agents.dyna import DynaAgent, DynaConfig, RolloutSchedule, cpu_preset
from mbrl.cli import main
from mbrl.logging import Logger, read_csv
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig
from mbrl.models.losse import LosseConfig, LosseModel
from mbrl.models.protocol import WorldModel
from mbrl.rl.sac import SACConfig


def tiny_config(**overrides: object) -> DynaConfig:
    base = DynaConfig(
        env_id="InvertedPendulum-v5",
        total_steps=400,
        init_random_steps=200,
        epoch_length=100,
        model_train_every=100,
        rollouts_per_step=4,
        rollout=RolloutSchedule(1, 3, 1, 3),
        model_retain_refits=2,
        utd=2,
        eval_every=0,
        eval_episodes=1,
        checkpoint_every=0,
        sac=SACConfig(hidden=32, batch_size=32),
        ensemble=EnsembleConfig(num_members=3, num_elites=2, hidden=32, depth=2, full_info=False),
        fit=FitConfig(max_epochs=3, batch_size=64),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_rollout_schedule_is_linear_between_epochs() -> None:
    s = RolloutSchedule(20, 100, 1, 15)
    assert [s.length(e) for e in (0, 20, 60, 100, 500)] == [1, 1, 8, 15, 15]


@pytest.mark.parametrize(
    "model_name", ["ensemble", "deterministic-single", "losse-ftl"],
)
def test_dyna_runs_with_any_world_model(model_name: str, tmp_path: Path) -> None:
    cfg = tiny_config()
    models: dict[str, WorldModel] = {
        "ensemble": ProbabilisticEnsemble(4, 1, cfg.ensemble, seed=0),
        "deterministic-single": ProbabilisticEnsemble(
            4, 1, EnsembleConfig(num_members=1, num_elites=1, hidden=32, depth=2, deterministic=True), seed=0
        ),
        "losse-ftl": LosseModel(4, 1, LosseConfig(num_groups=8, num_bins=4), seed=0),
    }
    if model_name == "losse-ftl":  # single-pass: trained online, never by fit()
        cfg = replace(cfg, model_training="online")
    agent = DynaAgent(cfg, model=models[model_name])
    with Logger(tmp_path, console=False) as logger:
        result = agent.learn(logger)
    # The final evaluation is the deterministic policy on the run's fixed evaluation seeds: repeatable.
    assert result["eval/return_mean"] == agent.evaluate()["eval/return_mean"]
    # Refits at steps 200, 300, 400 filled the model buffer; SAC updates ran on every step from 200 to 400.
    assert len(agent.model_buffer) > 0
    assert agent.sac.num_updates == cfg.utd * (cfg.total_steps - cfg.init_random_steps + 1)
    csv = read_csv(tmp_path / "progress.csv")
    assert "rollout/n_transitions" in csv and np.nanmax(csv["rollout/n_transitions"]) > 0
    assert "model/holdout_mse" in csv and np.all(np.isfinite(csv["model/holdout_mse"][~np.isnan(csv["model/holdout_mse"])]))


def test_online_model_training_sees_each_real_transition_once() -> None:
    cfg = tiny_config(model_kind="losse", model_training="online", losse=LosseConfig(num_groups=8, num_bins=4))
    agent = DynaAgent(cfg)
    assert isinstance(agent.model, LosseModel)
    seen: list[int] = []
    original = agent.model.update

    def counting_update(batch):  # type: ignore[no-untyped-def]
        seen.append(len(batch))
        return original(batch)

    agent.model.update = counting_update  # type: ignore[method-assign]
    agent.learn()
    # Refits at steps 200, 300, 400: the first sees the 200 random steps, then 100 new transitions each.
    assert seen == [200, 100, 100]
    assert agent.model_seen_steps == 400 and len(agent.model_buffer) > 0


def test_single_pass_models_are_never_fitted_by_epochs() -> None:
    """Losse-FTL through fit() would see each old transition once per epoch (issue: 320 rows x 3 epochs left
    regressor.count == 960). Every way of configuring it that way is refused with a clear error."""
    with pytest.raises(ValueError, match="single-pass"):
        tiny_config(model_kind="losse")  # model_training defaults to "fit"
    with pytest.raises(ValueError, match="single-pass"):
        DynaAgent(tiny_config(), model=LosseModel(4, 1, LosseConfig(num_groups=8, num_bins=4), seed=0))


def test_online_holdout_metrics_are_measured_before_the_update_sees_the_data(tmp_path: Path) -> None:
    cfg = tiny_config(model_kind="losse", model_training="online", losse=LosseConfig(num_groups=8, num_bins=4))
    agent = DynaAgent(cfg)
    assert agent.model is not None
    calls: list[tuple[str, float]] = []
    model_update, model_evaluate = agent.model.update, agent.model.evaluate

    def update(batch):  # type: ignore[no-untyped-def]
        calls.append(("update", float(batch.obs.sum())))
        return model_update(batch)

    def evaluate(batch):  # type: ignore[no-untyped-def]
        calls.append(("evaluate", float(batch.obs.sum())))
        return model_evaluate(batch)

    agent.model.update, agent.model.evaluate = update, evaluate  # type: ignore[method-assign]
    with Logger(tmp_path, console=False) as logger:
        agent.learn(logger)
    # First refit: nothing to hold out (untrained model). Later refits: the new rows are evaluated, then learned.
    assert [k for k, _ in calls] == ["update", "evaluate", "update", "evaluate", "update"]
    assert calls[1][1] == calls[2][1] and calls[3][1] == calls[4][1]
    csv = read_csv(tmp_path / "progress.csv")
    holdout = csv["model/holdout_mse"][~np.isnan(csv["model/holdout_mse"])]
    assert len(holdout) == 2 and np.all(holdout > 0)


def test_model_free_mode_never_builds_a_model() -> None:
    agent = DynaAgent(tiny_config(use_model=False, total_steps=250))
    agent.learn()
    assert agent.model is None and len(agent.model_buffer) == 0 and agent.sac.num_updates > 0


def _params(agent: DynaAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.sac.parameters()]


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = tiny_config(total_steps=450)
    straight = DynaAgent(cfg)
    straight.learn()

    first = DynaAgent(replace(cfg, total_steps=250), run_dir=tmp_path)
    first.learn()  # saves a checkpoint at step 250 (mid-episode, between refits)
    resumed = DynaAgent(cfg, run_dir=tmp_path)
    assert resumed.resume() and resumed.step == 250
    resumed.learn()

    assert resumed.step == straight.step == 450
    for a, b in zip(_params(straight), _params(resumed)):
        assert torch.equal(a, b)
    assert len(resumed.model_buffer) == len(straight.model_buffer)
    assert np.array_equal(resumed.real_buffer.all().obs.numpy(), straight.real_buffer.all().obs.numpy())
    assert np.array_equal(resumed.obs, straight.obs)


def test_a_run_killed_inside_a_refit_continues_that_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoint at step 250; the refit at step 300 is killed in its second epoch. The restarted run resumes at
    250, replays to 300 and continues the refit from its progress file (epoch 2 on), ending equal to an
    uninterrupted run."""
    cfg = tiny_config(total_steps=450, checkpoint_every=250, fit=FitConfig(max_epochs=3, batch_size=64,
                                                                           checkpoint_every_s=0))
    calls = {"n": 0, "kill_at": -1}
    original = ProbabilisticEnsemble.update_members

    def counting(self, *args):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(ProbabilisticEnsemble, "update_members", counting)
    DynaAgent(replace(cfg, total_steps=250)).learn()
    before_250 = calls["n"]  # the refit at step 200
    calls["n"] = 0
    straight = DynaAgent(cfg)
    straight.learn()
    after_250 = calls["n"] - before_250  # the refits at steps 300 and 400
    calls.update(n=0, kill_at=before_250 + after_250 // 4)  # in the refit at 300 (3 epochs of ~after_250 / 6)
    with pytest.raises(KeyboardInterrupt):
        DynaAgent(cfg, run_dir=tmp_path).learn()
    assert (tmp_path / "checkpoints" / "refit_progress.pt").is_file()
    calls.update(n=0, kill_at=-1)
    resumed = DynaAgent(cfg, run_dir=tmp_path)
    assert resumed.resume() and resumed.step == 250
    resumed.learn()
    assert 0 < calls["n"] < after_250  # the refit at 300 did not start over
    assert not (tmp_path / "checkpoints" / "refit_progress.pt").exists()
    for a, b in zip(_params(straight), _params(resumed)):
        assert torch.equal(a, b)
    assert np.array_equal(resumed.model_buffer.all().obs.numpy(), straight.model_buffer.all().obs.numpy())


def test_cli_train_sac_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "sac"
    assert main(["train", "sac", "--total-steps", "1100", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) >= {"return_mean", "return_std", "episodes"} and out["episodes"] == 2
    # `mbrl eval` runs the checkpoint's deterministic policy: the same numbers on a second call.
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert (run / "progress.csv").exists() and list(run.glob("events.out.tfevents.*"))
    assert list((run / "plots").glob("*.png"))
    # A second run into the same directory without --resume is refused with a one-line error.
    assert main(["train", "sac", "--total-steps", "1100", "--run-dir", str(run)]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_eval_refuses_a_non_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a run directory" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_dyna_solves_inverted_pendulum_within_5k_steps() -> None:
    agent = DynaAgent(replace(cpu_preset("InvertedPendulum-v5"), total_steps=5000, eval_every=0, eval_episodes=5))
    result = agent.learn()
    assert result["eval/return_mean"] >= 900  # a random policy scores < 10


def test_a_model_missing_protocol_members_is_refused_by_name() -> None:
    class NoUpdate:
        obs_dim, action_dim = 4, 1

        def predict(self, obs, action, *, deterministic=False, generator=None):  # type: ignore[no-untyped-def]
            raise AssertionError("never called")

    from mbrl.models.contract import ContractError

    with pytest.raises(ContractError, match=r"NoUpdate.*update"):
        DynaAgent(tiny_config(), model=NoUpdate())  # type: ignore[arg-type]


def test_run_demo_prints_one_line_and_draws_the_curve_with_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "demo"
    assert main(["run-demo", "--run-dir", str(run), "--total-steps", "300"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("MPC on a learned model, Pendulum-v1, after 300 env steps (") and "demo.png" in last
    png = run / "demo.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((run / "demo.json").read_text())
    log = read_csv(run / "progress.csv")
    evals = log["eval/return_task0"][np.isfinite(log["eval/return_task0"])]
    assert evals.tolist() == [result["return"]] and log["step"][np.isfinite(log["eval/return_task0"])].tolist() == [250]
    assert -2000 < result["random_return"] < -500  # the uniform-random reference on Pendulum-v1
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    # a finished demo is reported again, not recomputed
    assert main(["run-demo", "--run-dir", str(run), "--total-steps", "300"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == last
    assert len(read_csv(run / "progress.csv")["step"]) == len(log["step"])
    # the run loads like any other: the same evaluation from its checkpoint, and predict on one state or a batch
    import mbrl

    loaded = mbrl.load(run)
    assert (loaded.kind, loaded.algo) == ("planning", "hypercrl")
    assert loaded.agent.evaluate(3)["eval/return_mean"] == pytest.approx(result["return"], abs=1e-6)
    obs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.5]], dtype=np.float32)
    action, _ = loaded.predict(obs)
    assert action.shape == (2, 1) and np.all(np.abs(action) <= 2.0) and loaded.predict(obs[0])[0].shape == (1,)
    assert main(["eval", str(run), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 1
    with pytest.raises(ValueError, match="no policy network"):
        _ = loaded.actor


def test_a_run_without_run_dir_gets_a_new_one_each_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mbrl.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    args = ["train", "sac", "--env", "Pendulum-v1", "--total-steps", "60"]
    assert cli_main(args) == 0 and cli_main(args) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("sac-Pendulum-v1-") for r in runs), runs
    assert all((tmp_path / "runs" / r / "config.json").is_file() for r in runs)
    assert cli_main([*args, "--resume"]) == 2  # a resume names its run
