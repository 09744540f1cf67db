"""Offline agents (RAVL, MOPO, BC): smoke runs, the critic target on terminated rows, the MOPO penalty, exact
resume, the normalized score, the CLI and ``evaluate_run``."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl.agents.bc import BCAgent, bc_preset
from mbrl.agents.mopo import mopo_preset
from mbrl.agents.offline import EVAL_SEED_OFFSET
from mbrl.agents.offline_commands import evaluate_run
from mbrl.agents.ravl import RAVLAgent, ravl_preset
from mbrl.cli import main as cli_main
from mbrl.data import OfflineDataset, save_npz
from mbrl.envs import get_spec, make_env
from mbrl.evaluation import (
    D4RL_REF_SCORES,
    evaluate_policy,
    normalized_score,
    reference_scores,
    resolve_reference_scores,
)
from mbrl.logging import read_csv
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.true_dynamics import TrueDynamicsModel
from mbrl.models.wrappers import UncertaintyPenalty

REF_MIN, REF_MAX = -20.0, 3000.0


def _random_hopper(steps: int = 1500, seed: int = 0) -> OfflineDataset:
    env = make_env("Hopper-v5")
    rng = np.random.default_rng(seed)
    rows: dict[str, list[np.ndarray | float | bool]] = {k: [] for k in ("o", "a", "r", "n", "te", "tr")}
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = rng.uniform(-1, 1, 3).astype(np.float32)
        nxt, reward, terminated, truncated, _ = env.step(action)
        for k, v in zip(("o", "a", "r", "n", "te", "tr"), (obs, action, reward, nxt, terminated, truncated)):
            rows[k].append(v)
        obs = env.reset()[0] if (terminated or truncated) else nxt
    return OfflineDataset(
        *(np.asarray(rows[k]) for k in ("o", "a", "r", "n", "te", "tr")),
        env_id="Hopper-v5", metadata={"ref_min_score": REF_MIN, "ref_max_score": REF_MAX}, source="random-hopper",
    )


@pytest.fixture(scope="module")
def dataset() -> OfflineDataset:
    return _random_hopper()


@pytest.fixture(scope="module")
def dataset_file(dataset: OfflineDataset, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "hopper.npz"
    save_npz(dataset, path)
    return str(path)


def _params(agent: RAVLAgent | BCAgent) -> list[torch.Tensor]:
    if isinstance(agent, BCAgent):
        return [p.detach().clone() for p in agent.bc.actor.parameters()]
    return [p.detach().clone() for p in agent.sac.parameters()]


# ------------------------------------------------------------------------------------------- normalized score
def test_normalized_score_hand_computed() -> None:
    lo, hi = D4RL_REF_SCORES["hopper"]
    assert (lo, hi) == (-20.272305, 3234.3)
    # 100 * (1000 + 20.272305) / (3234.3 + 20.272305) = 100 * 1020.272305 / 3254.572305
    assert normalized_score(1000.0, lo, hi) == pytest.approx(31.34886, abs=1e-4)
    assert normalized_score(lo, lo, hi) == pytest.approx(0.0)
    assert normalized_score(hi, lo, hi) == pytest.approx(100.0)
    lo, hi = D4RL_REF_SCORES["halfcheetah"]
    # 100 * (6000 + 280.178953) / (12135 + 280.178953) = 628017.8953 / 12415.178953
    assert normalized_score(6000.0, lo, hi) == pytest.approx(50.58460, abs=1e-4)
    with pytest.raises(ValueError, match="ref_max == ref_min"):
        normalized_score(1.0, 5.0, 5.0)


def test_reference_scores_precedence() -> None:
    meta = {"ref_min_score": 1.0, "ref_max_score": 2.0}
    assert reference_scores("Hopper-v5", meta, ref_min=-5.0, ref_max=5.0) == (-5.0, 5.0)
    assert reference_scores("Hopper-v5", meta) == (1.0, 2.0)
    assert reference_scores("Hopper-v5", {}) == D4RL_REF_SCORES["hopper"]
    assert reference_scores("InvertedPendulum-v5", {}) is None
    # ... and each says where it came from (`mbrl eval` prints it).
    assert resolve_reference_scores("Hopper-v5", meta, ref_min=-5.0, ref_max=5.0)[1] == "command line"
    assert resolve_reference_scores("Hopper-v5", meta)[1] == "dataset metadata"
    assert resolve_reference_scores("Hopper-v5", {}) == (D4RL_REF_SCORES["hopper"], "D4RL constants")
    assert resolve_reference_scores("InvertedPendulum-v5", {}) == (None, "none")


# ------------------------------------------------------------------------------------------------ smoke runs
@pytest.mark.parametrize("algo", ["ravl", "mopo", "bc"])
def test_smoke_run_logs_normalized_score(algo: str, dataset: OfflineDataset) -> None:
    if algo == "bc":
        agent: RAVLAgent | BCAgent = BCAgent(bc_preset("mem", "quick", updates=60, eval_every=30), dataset=dataset)
    else:
        preset = ravl_preset if algo == "ravl" else mopo_preset
        agent = RAVLAgent(preset("mem", "quick", loop_updates=60, loop_eval_every=30, updates_per_epoch=30), dataset=dataset)
    before = _params(agent)
    final = agent.learn()
    assert agent.num_updates == 60
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(agent)))
    assert math.isfinite(final["eval/return_mean"]) and final["eval/episodes"] == 2
    # The score is the hand formula on the mean return of the same deterministic episodes.
    result = evaluate_policy(
        make_env("Hopper-v5"), lambda o: agent.act(o, deterministic=True), 2, seed=agent.loop.seed + EVAL_SEED_OFFSET
    )
    assert final["eval/return_mean"] == pytest.approx(result.return_mean)
    assert final["eval/normalized_score"] == pytest.approx(100 * (result.return_mean - REF_MIN) / (REF_MAX - REF_MIN))
    if isinstance(agent, RAVLAgent):
        assert agent.config.sac.num_critics == (4 if algo == "ravl" else 2)
        assert agent.config_dict()["algo"] == algo  # the config's type names the algorithm
        assert len(agent.model_buffer) > 0


def test_mopo_needs_every_member_for_its_penalty() -> None:
    """The preset values themselves are checked against the released ones in tests/test_presets.py."""
    with pytest.raises(ValueError, match="full_info"):
        replace(ravl_preset("x", "paper"), penalty="uncertainty")


# ----------------------------------------------------------------------------------- targets and terminations
def test_critic_target_ignores_terminated_next_state(dataset: OfflineDataset) -> None:
    agent = RAVLAgent(ravl_preset("mem", "quick", loop_updates=10, updates_per_epoch=10), dataset=dataset)
    agent.learn()
    batch = agent.sample_batch()
    n = len(batch)
    terminated = torch.zeros(n)
    terminated[: n // 2] = 1.0
    batch = replace(batch, terminated=terminated)
    noise = torch.randn(n, agent.action_dim, generator=torch.Generator().manual_seed(0))
    target = agent.sac.compute_target(batch, noise)
    # Terminated rows: exactly the reward, whatever the next state (no bootstrapping).
    torch.testing.assert_close(target[: n // 2], batch.reward[: n // 2], rtol=0, atol=0)
    moved = replace(batch, next_obs=batch.next_obs + 100.0)
    target_moved = agent.sac.compute_target(moved, noise)
    torch.testing.assert_close(target_moved[: n // 2], target[: n // 2], rtol=0, atol=0)
    # Live rows bootstrap: the same move changes their targets.
    assert not torch.allclose(target_moved[n // 2 :], target[n // 2 :])


def test_rollout_terminations_follow_the_env_and_timeouts_do_not_terminate(dataset: OfflineDataset) -> None:
    agent = RAVLAgent(ravl_preset("mem", "quick", loop_updates=1, updates_per_epoch=1), dataset=dataset)
    agent.learn()
    data = agent.model_buffer.all()
    expected = get_spec("Hopper-v5").term_fn(data.obs, data.action, data.next_obs)
    torch.testing.assert_close(data.terminated, expected.float())
    # A rollout ends by termination or by the horizon (truncated), never both.
    assert float((data.terminated * data.truncated).sum()) == 0.0
    # Dataset rows: timeouts are not terminals in what the learner sees.
    real = dataset.to_batch()
    assert torch.equal(real.terminated.bool(), torch.from_numpy(dataset.terminals))
    assert torch.equal(real.truncated.bool(), torch.from_numpy(dataset.timeouts))


def test_mopo_penalty_subtracts_lambda_times_uncertainty(dataset: OfflineDataset) -> None:
    model = ProbabilisticEnsemble(11, 3, EnsembleConfig(num_members=3, num_elites=2, hidden=32, depth=2, full_info=True), seed=0)
    wrapped = UncertaintyPenalty(model, coef=2.5)
    batch = dataset.to_batch().index(slice(0, 64))
    raw = model.predict(batch.obs, batch.action, generator=torch.Generator().manual_seed(1))
    pen = wrapped.predict(batch.obs, batch.action, generator=torch.Generator().manual_seed(1))
    assert float(raw.info["uncertainty"].min()) > 0
    torch.testing.assert_close(pen.reward, raw.reward - 2.5 * raw.info["uncertainty"])
    torch.testing.assert_close(pen.next_obs, raw.next_obs)


def test_true_dynamics_rollouts_have_no_uncertainty(dataset: OfflineDataset) -> None:
    config = mopo_preset("mem", "quick", dynamics="true", rollouts_per_epoch=20, loop_updates=1)
    agent = RAVLAgent(config, dataset=dataset)
    agent.learn()
    assert agent.last_rollout["rollout/mean_uncertainty"] == 0.0
    data = agent.model_buffer.all()
    # Zero penalty: the stored rewards are the true model's own rewards for these (obs, action).
    true_step = TrueDynamicsModel("Hopper-v5").predict(data.obs, data.action)
    torch.testing.assert_close(data.reward, true_step.reward)
    torch.testing.assert_close(data.next_obs, true_step.next_obs)


# -------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("algo", ["ravl", "bc"])
def test_interrupted_and_resumed_equals_uninterrupted(algo: str, dataset: OfflineDataset, tmp_path: Path) -> None:
    def make(updates: int, run_dir: Path | None) -> RAVLAgent | BCAgent:
        if algo == "bc":
            return BCAgent(bc_preset("mem", "quick", updates=updates, eval_every=0, checkpoint_every=0), dataset=dataset, run_dir=run_dir)
        config = ravl_preset(
            "mem", "quick", loop_updates=updates, loop_eval_every=0, loop_checkpoint_every=0, updates_per_epoch=20,
            rollouts_per_epoch=50,
        )
        return RAVLAgent(config, dataset=dataset, run_dir=run_dir)

    full = make(50, None)
    full_eval = full.learn()
    first = make(30, tmp_path)
    first.learn()
    resumed = make(50, tmp_path)
    assert resumed.resume() and resumed.num_updates == 30
    resumed_eval = resumed.learn()
    for a, b in zip(_params(full), _params(resumed)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed_eval == full_eval
    if isinstance(full, RAVLAgent) and isinstance(resumed, RAVLAgent):
        torch.testing.assert_close(full.model_buffer.all().obs, resumed.model_buffer.all().obs, rtol=0, atol=0)


def test_a_run_killed_inside_the_model_fit_continues_the_fit(
    dataset: OfflineDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fit saves its progress every epoch here; a kill in its third epoch leaves no agent checkpoint, and the
    restarted run continues the fit from epoch 2 (not from nothing) and ends equal to an uninterrupted run."""
    def make(run_dir: Path | None) -> RAVLAgent:
        config = ravl_preset("mem", "quick", loop_updates=20, loop_eval_every=0, loop_checkpoint_every=0,
                             updates_per_epoch=10, rollouts_per_epoch=50)
        config = replace(config, fit=replace(config.fit, max_time_s=None, max_epochs=4, checkpoint_every_s=0))
        return RAVLAgent(config, dataset=dataset, run_dir=run_dir)

    full = make(None)
    full_eval = full.learn()
    steps_per_epoch = None
    calls = {"n": 0}
    original = ProbabilisticEnsemble.update_members

    def dying(self, *args):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if steps_per_epoch is not None and calls["n"] == 2 * steps_per_epoch + 3:
            raise KeyboardInterrupt  # as a kill in epoch 3
        return original(self, *args)

    monkeypatch.setattr(ProbabilisticEnsemble, "update_members", dying)
    probe = make(None)
    probe.learn()
    steps_per_epoch = calls["n"] // 4
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path).learn()
    assert (tmp_path / "checkpoints" / "prepare_progress.pt").is_file()
    assert not list((tmp_path / "checkpoints").glob("ckpt_*"))
    calls["n"] = 0
    restarted = make(tmp_path)
    assert not restarted.resume()  # no agent checkpoint yet: the fit's own progress carries the work
    restarted_eval = restarted.learn()
    assert calls["n"] == 2 * steps_per_epoch  # epochs 3 and 4 only
    assert not (tmp_path / "checkpoints" / "prepare_progress.pt").exists()  # removed once the model is saved
    for a, b in zip(_params(full), _params(restarted)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert restarted_eval == full_eval


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_train_resume_and_evaluate_run(dataset_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", "mopo", "--dataset", dataset_file, "--run-dir", str(run), "--preset", "quick", "--eval-every", "20",
            "--checkpoint-every", "20"]
    assert cli_main([*args, "--updates", "20"]) == 0
    assert cli_main([*args, "--updates", "40", "--resume"]) == 0
    log = read_csv(run / "progress.csv")
    scores = log["eval/normalized_score"]
    assert log["step"][np.isfinite(scores)].tolist() == [20, 40]
    out = evaluate_run(run, episodes=2)
    assert out["updates"] == 40
    assert out["normalized_score"] == pytest.approx(100 * (out["return_mean"] - REF_MIN) / (REF_MAX - REF_MIN))
    # `mbrl eval RUN_DIR --json` adds the normalized score for offline runs.
    capsys.readouterr()
    assert cli_main(["eval", str(run), "--episodes", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"return_mean", "return_std", "normalized_score"} <= set(printed)
    assert printed["normalized_score"] == pytest.approx(100 * (printed["return_mean"] - REF_MIN) / (REF_MAX - REF_MIN))
    assert printed["ref_source"] == "dataset metadata" and printed["ref_min_score"] == pytest.approx(REF_MIN)
    # `--seed` reaches offline runs: the CLI with --seed 7 repeats evaluate_run(seed=7) exactly.
    seeded = evaluate_run(run, episodes=2, seed=7)
    capsys.readouterr()
    assert cli_main(["eval", str(run), "--episodes", "2", "--json", "--seed", "7"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["return_mean"] == pytest.approx(seeded["return_mean"], rel=1e-12)
    # A non-empty run dir without --resume is refused with a one-line error.
    capsys.readouterr()
    assert cli_main([*args, "--updates", "20"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_dataset_without_env_is_a_clear_error(dataset: OfflineDataset) -> None:
    anonymous = OfflineDataset(
        dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations, dataset.terminals,
        dataset.timeouts, source="anon.npz",
    )
    with pytest.raises(ValueError, match=r"anon\.npz: the dataset names no env"):
        BCAgent(bc_preset("mem", "quick"), dataset=anonymous)


# ---------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_ravl_beats_random_policy_on_a_generated_dataset(tmp_path: Path) -> None:
    """A short SAC behaviour run's medium-replay data; RAVL must clearly beat the uniform random policy."""
    from mbrl.envs.datasets import dataset_preset, make_datasets, minari_root

    config = dataset_preset("Hopper-v5", "quick", sac_steps=4000, learning_starts=1000, split_size=1000, ref_episodes=10)
    ids = make_datasets(config, tmp_path / "work", out_dir=tmp_path / "minari", splits=("medium-replay",))
    with minari_root(tmp_path / "minari"):
        agent = RAVLAgent(
            ravl_preset(
                ids["medium-replay"], "quick", loop_updates=3000, loop_eval_every=0, loop_eval_episodes=10,
                rollouts_per_epoch=1000, updates_per_epoch=250,
            )
        )
    final = agent.learn()
    assert agent.refs is not None
    env = make_env("Hopper-v5")
    rng = np.random.default_rng(0)
    low, high = agent.action_low, agent.action_high
    random_return = evaluate_policy(env, lambda _o: rng.uniform(low, high), 10, seed=agent.loop.seed + EVAL_SEED_OFFSET)
    random_score = float(normalized_score(random_return.return_mean, *agent.refs))
    assert final["eval/normalized_score"] > random_score + 10.0, (final, random_score, agent.refs)


def test_bad_input_leaves_no_run_dir_and_a_resume_diff_keeps_its_quotes(
    dataset_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert cli_main(["train", "bc", "--dataset", str(tmp_path / "missing.npz"), "--run-dir", str(run)]) == 2
    assert not run.exists()  # refused before anything was written: the corrected rerun is not blocked
    args = ["train", "mopo", "--dataset", dataset_file, "--run-dir", str(run), "--preset", "quick", "--updates", "10"]
    assert cli_main(args) == 0
    capsys.readouterr()
    assert cli_main([*args, "--resume", "--dynamics", "true"]) == 2
    err = capsys.readouterr().err
    assert "dynamics: stored 'learned', given 'true'" in err and err.rstrip().endswith("'true'")


def test_bc_warm_start_clones_on_dataset_batches_before_the_first_rollout(dataset: OfflineDataset) -> None:
    config = ravl_preset("mem", "quick", loop_updates=45, loop_eval_every=0, updates_per_epoch=20, bc_warm_start=30)
    agent = RAVLAgent(config, dataset=dataset)
    calls: list[bool] = []
    update = agent.sac.update

    def spy(batch: object, *, clone_actions: bool = False, **kw: object) -> object:
        calls.append(clone_actions)
        return update(batch, clone_actions=clone_actions, **kw)  # type: ignore[arg-type]

    agent.sac.update = spy  # type: ignore[method-assign]
    sizes = []
    for _ in range(45):
        agent._train_step()
        agent.num_updates += 1
        sizes.append(len(agent.model_buffer))
    assert calls == [True] * 30 + [False] * 15
    assert sizes[29] == 0 < sizes[30]  # the first rollout epoch starts at update 30
    with pytest.raises(ValueError, match="bc_warm_start"):
        ravl_preset("mem", "quick", bc_warm_start=-1)


def test_bc_weight_gives_each_update_a_dataset_anchor_batch(dataset: OfflineDataset) -> None:
    base = ravl_preset("mem", "quick", loop_updates=5, loop_eval_every=0, updates_per_epoch=5)
    agent = RAVLAgent(replace(base, sac=replace(base.sac, bc_weight=2.5)), dataset=dataset)
    seen: list[object] = []
    update = agent.sac.update

    def spy(batch: object, **kw: object) -> object:
        seen.append(kw.get("bc_batch"))
        return update(batch, **kw)  # type: ignore[arg-type]

    agent.sac.update = spy  # type: ignore[method-assign]
    agent._train_step()
    anchor = seen[0]
    assert anchor is not None and len(anchor) == base.sac.batch_size  # type: ignore[arg-type]
    data_obs = torch.from_numpy(dataset.observations)
    assert all((data_obs == row).all(-1).any() for row in anchor.obs)  # type: ignore[attr-defined]


def test_train_ravl_and_mopo_reuse_an_ensemble_from_model_train(
    dataset_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mbrl model train` once, then `train ravl|mopo --model-dir`: no fit in the run (no model/ metrics), the
    agent's model holds the trained weights before the first update, and the run loads back for `mbrl eval`."""
    from mbrl.checkpoint import load_checkpoint
    from mbrl.models.commands import load_model

    models = tmp_path / "model"
    assert cli_main(["model", "train", dataset_file, "--run-dir", str(models), "--ensemble.num-members", "3",
                     "--ensemble.num-elites", "2", "--ensemble.hidden", "32", "--fit.max-epochs", "2"]) == 0
    trained = load_model(str(models)).state_dict()
    for algo in ("ravl", "mopo"):
        run = tmp_path / algo
        args = ["train", algo, "--dataset", dataset_file, "--run-dir", str(run), "--preset", "quick", "--updates",
                "20", "--eval-every", "20", "--model-dir", str(models)]
        assert cli_main(args) == 0
        log = read_csv(run / "progress.csv")
        assert not any(k.startswith("model/") for k in log), algo  # nothing was fitted
        first = load_checkpoint(run / "checkpoints" / "ckpt_000000000.pt")  # saved right after the (no) fit
        for key, value in trained["network"].items():
            assert torch.equal(first.state["model"]["network"][key], value), (algo, key)
        assert evaluate_run(run, episodes=1)["updates"] == 20
    # an ensemble of another env's data is refused by name, before the run dir is written
    from tests.models.data import random_dataset

    env_model = tmp_path / "ip_model"
    save_npz(random_dataset("InvertedPendulum-v5", 300, seed=0), tmp_path / "ip.npz")
    assert cli_main(["model", "train", str(tmp_path / "ip.npz"), "--run-dir", str(env_model), "--fit.max-epochs",
                     "1", "--ensemble.hidden", "16"]) == 0
    assert cli_main(["train", "ravl", "--dataset", dataset_file, "--run-dir", str(tmp_path / "bad"), "--preset",
                     "quick", "--model-dir", str(env_model)]) == 2
    assert "another env's data" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
