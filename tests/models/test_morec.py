"""MOREC: the dynamics reward (learning, separation of real from shuffled transitions, save/load) and the
reward-consistent filter (argmax selection, softmax selection, threshold stops, the wrapped model's termination,
the WorldModel contract, RAVL / MOPO / Dyna running on it, the CLI)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from mbrl.agents.dyna import DynaAgent, DynaConfig, RolloutSchedule
from mbrl.agents.mopo import mopo_preset
from mbrl.agents.ravl import RAVLAgent, ravl_preset
from mbrl.checkpoint import CheckpointError
from mbrl.cli import main as cli_main
from mbrl.data import OfflineDataset, save_npz
from mbrl.envs import get_spec
from mbrl.logging import read_csv
from mbrl.models.contract import check_world_model
from mbrl.models.dynamics_reward import (
    DYNAMICS_REWARD_FILE,
    DynamicsReward,
    DynamicsRewardConfig,
    train_dynamics_reward,
)
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.models.morec import RewardConsistentFilter
from mbrl.models.protocol import Ensemble
from mbrl.models.wrappers import KnownFunctionsModel, UncertaintyPenalty
from mbrl.rl.sac import SACConfig
from mbrl.rollouts import rollout
from mbrl.types import Metrics, ModelStep, TransitionBatch
from tests.models.data import random_dataset

SMALL = EnsembleConfig(num_members=3, num_elites=2, hidden=64, depth=2, device="cpu")


# ------------------------------------------------------------------------------------ hand-built pieces
class TinyEnsemble:
    """An Ensemble-capable WorldModel with hand-set dynamics: member ``e`` predicts
    ``next_obs = obs + offsets[e]`` (+ ``std * N(0, 1)`` when sampling), ``reward = next_obs[:, 0]`` and
    ``terminated = next_obs[:, 0] > 10``."""

    def __init__(self, offsets: tuple[float, ...] = (0.1, 5.0, -0.3), elites: tuple[int, ...] = (0, 2), std: float = 0.05):
        self.obs_dim, self.action_dim = 2, 1
        self.offsets = torch.tensor(offsets)
        self.num_members = len(offsets)
        self._elites = list(elites)
        self.std = std

    @property
    def elites(self) -> list[int]:
        return self._elites

    def predict_members(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        mean = obs[None] + self.offsets[:, None, None]
        mean = torch.cat([mean, mean[..., :1]], dim=-1)
        return mean, torch.full_like(mean, 2 * math.log(self.std))

    def predict_with_members(
        self, obs: Tensor, action: Tensor, members: Tensor, *, deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        next_obs = obs + self.offsets[members][:, None]
        if not deterministic:
            next_obs = next_obs + self.std * torch.randn(next_obs.shape, generator=generator)
        return ModelStep(next_obs, next_obs[:, 0].clone(), (next_obs[:, 0] > 10).float(),
                         {"uncertainty": obs[:, 0].abs(), "member": members})

    def predict(self, obs: Tensor, action: Tensor, *, deterministic: bool = False,
                generator: torch.Generator | None = None) -> ModelStep:
        pick = torch.randint(len(self._elites), (obs.shape[0],), generator=generator)
        return self.predict_with_members(obs, action, torch.tensor(self._elites)[pick], deterministic=deterministic,
                                         generator=generator)

    def update(self, batch: TransitionBatch) -> Metrics:
        return {"loss": 0.0}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return {"loss": 0.0, "mse": 0.0}

    def state_dict(self) -> dict[str, Tensor]:
        return {"offsets": self.offsets.clone()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.offsets = state_dict["offsets"].clone()


class TargetScorer:
    """Hand-built dynamics reward: ``-||next_obs - (obs + target)||^2`` (prefers the step ``target``)."""

    def __init__(self, target: float, obs_dim: int = 2, action_dim: int = 1) -> None:
        self.target, self.obs_dim, self.action_dim = target, obs_dim, action_dim
        self.calls = 0

    def reward(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        self.calls += 1
        return -((next_obs - obs - self.target) ** 2).sum(-1)


class RowScorer:
    """Hand-built dynamics reward equal to ``obs[:, 1]`` for every candidate of a row."""

    obs_dim, action_dim = 2, 1

    def reward(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return obs[:, 1].clone()


def _obs(n: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g), torch.randn(n, 1, generator=g)


# -------------------------------------------------------------------------------------------- the filter
def test_filter_selects_the_argmax_candidate_deterministic() -> None:
    obs, action = _obs()
    # Candidates are the elites' means: +0.1 (member 0) and -0.3 (member 2); the scorer wants -0.25.
    filt = RewardConsistentFilter(TinyEnsemble(), TargetScorer(-0.25), samples_per_elite=2, threshold=None)
    step = filt.predict(obs, action, deterministic=True)
    torch.testing.assert_close(step.next_obs, obs - 0.3)
    assert step.info["member"].tolist() == [2] * len(obs)
    torch.testing.assert_close(step.info["dynamics_reward"], torch.full((len(obs),), -2 * 0.05**2))
    # With the target on the other side the other elite wins; the non-elite member 1 (+5.0) is never proposed.
    step = RewardConsistentFilter(TinyEnsemble(), TargetScorer(4.0), threshold=None).predict(obs, action, deterministic=True)
    torch.testing.assert_close(step.next_obs, obs + 0.1)


def test_filter_keeps_the_best_of_the_sampled_candidates() -> None:
    obs, action = _obs(16)
    scorer = TargetScorer(0.1)
    filt = RewardConsistentFilter(TinyEnsemble(std=0.5), scorer, samples_per_elite=3, threshold=None)
    cand = filt.candidates(obs, action, generator=torch.Generator().manual_seed(3))
    assert cand.score.shape == (6, 16)  # 2 elites x 3 samples
    all_next = cand.step.next_obs.view(6, 16, 2)
    dist = ((all_next - obs - 0.1) ** 2).sum(-1)
    expected = all_next[dist.argmin(0), torch.arange(16)]
    step = filt.predict(obs, action, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(step.next_obs, expected)
    # Candidate c of row i is row c * B + i of the tiled call: elite 0 for c < 3, elite 2 after.
    assert cand.step.info["member"].view(6, 16)[:, 0].tolist() == [0, 0, 0, 2, 2, 2]
    # The kept candidate is better than a plain model sample on average (it is the best of 6).
    plain = TinyEnsemble(std=0.5).predict(obs, action, generator=torch.Generator().manual_seed(3)).next_obs
    assert float(((step.next_obs - obs - 0.1) ** 2).sum(-1).mean()) < float(((plain - obs - 0.1) ** 2).sum(-1).mean())


def test_softmax_selection_follows_the_temperature() -> None:
    obs, action = _obs(64)
    base = TinyEnsemble(std=0.5)
    argmax = RewardConsistentFilter(base, TargetScorer(0.1), samples_per_elite=3, threshold=None)
    cold = RewardConsistentFilter(base, TargetScorer(0.1), samples_per_elite=3, threshold=None, temperature=1e-6)
    hot = RewardConsistentFilter(base, TargetScorer(0.1), samples_per_elite=3, threshold=None, temperature=1e6)
    a = argmax.predict(obs, action, generator=torch.Generator().manual_seed(1)).next_obs
    c = cold.predict(obs, action, generator=torch.Generator().manual_seed(1)).next_obs
    h = hot.predict(obs, action, generator=torch.Generator().manual_seed(1)).next_obs
    torch.testing.assert_close(c, a)
    assert (h != a).any(dim=1).float().mean() > 0.5  # near-uniform draws among 6 candidates


def test_threshold_stops_rollouts_and_the_wrapped_termination_is_kept() -> None:
    obs = torch.tensor([[0.0, 0.9], [0.0, 0.1], [0.0, -1.0], [10.5, 0.9]])
    action = torch.zeros(4, 1)
    filt = RewardConsistentFilter(TinyEnsemble(), RowScorer(), threshold=0.6)
    step = filt.predict(obs, action, deterministic=True)
    # Scores 0.9, 0.1, -1.0, 0.9: rows 1 and 2 are stopped by the filter; row 3 is ended by the model itself.
    assert step.terminated.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert step.info["morec_stopped"].tolist() == [0.0, 1.0, 1.0, 0.0]
    torch.testing.assert_close(step.info["dynamics_reward"], obs[:, 1])
    # Through rollout() (no term_fn: the filter's terminated is used): stopped rollouts end after one step.
    batch, stats = rollout(filt, lambda o: torch.zeros(o.shape[0], 1), obs, 3, deterministic=True)
    assert stats.n_terminated == 3 and stats.n_transitions == 3 + 3  # row 0 runs 3 steps, rows 1-3 one
    assert batch.terminated.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0] and batch.truncated[-1] == 1
    assert RewardConsistentFilter(TinyEnsemble(), RowScorer(), threshold=None).predict(
        obs, action, deterministic=True
    ).terminated.tolist() == [0.0, 0.0, 0.0, 1.0]


def test_filter_refuses_models_without_elites_and_mismatched_rewards() -> None:
    from tests.models.dummy import DummyModel

    with pytest.raises(TypeError, match="no Ensemble capability"):
        RewardConsistentFilter(DummyModel(2, 1), TargetScorer(0.0))
    with pytest.raises(ValueError, match="dims"):
        RewardConsistentFilter(TinyEnsemble(), TargetScorer(0.0, obs_dim=3))
    filt = RewardConsistentFilter(TinyEnsemble(), TargetScorer(0.0))
    assert isinstance(filt, Ensemble) and filt.num_members == 3 and filt.elites == [0, 2]
    assert not hasattr(filt, "predict_with_members")  # no way around the filter


# ------------------------------------------------------------------------------------ the dynamics reward
@pytest.fixture(scope="module")
def hopper() -> OfflineDataset:
    return random_dataset("Hopper-v5", 2000, episode_len=100, seed=0)


@pytest.fixture(scope="module")
def fitted(hopper: OfflineDataset) -> ProbabilisticEnsemble:
    model = ProbabilisticEnsemble(11, 3, SMALL, seed=0)
    fit(model, hopper, FitConfig(max_epochs=20), rng=np.random.default_rng(0))
    return model


FITTED_WEIGHTS: dict[str, torch.Tensor] = {}


@pytest.fixture(scope="module")
def learned(hopper: OfflineDataset, fitted: ProbabilisticEnsemble) -> tuple[DynamicsReward, list[dict[str, float]]]:
    config = DynamicsRewardConfig(
        hidden=64, discriminator_lr=1e-3, num_iterations=1000, snapshot_every=20, num_snapshots=20, log_every=250,
        device="cpu",
    )
    FITTED_WEIGHTS.update({k: v.clone() for k, v in fitted.state_dict()["network"].items()})  # before training
    return train_dynamics_reward(hopper, fitted, config, seed=0)


def test_discriminator_separates_real_from_shuffled_transitions(
    learned: tuple[DynamicsReward, list[dict[str, float]]], hopper: OfflineDataset, fitted: ProbabilisticEnsemble
) -> None:
    reward, history = learned
    assert reward.num_snapshots == 20
    assert [int(h["iteration"]) for h in history] == [250, 500, 750, 1000]
    final = history[-1]
    # Held-out episodes: real transitions read "real", shuffled next states and model samples read "generated".
    assert final["eval_acc_real"] > 0.7 and final["eval_acc_shuffled"] > 0.7 and final["eval_acc_model"] > 0.6
    assert final["eval_reward_real_mean"] > final["eval_reward_model_mean"] > 0
    assert final["eval_reward_real_mean"] > final["eval_reward_shuffled_mean"] + 0.3
    # The training discriminator got better than chance on its own batches.
    assert history[-1]["d_acc_real"] > 0.7 and history[-1]["d_acc_fake"] > 0.6
    # The calibrated reward lives in [-log(1 - sigmoid(-1)), -log(1 - sigmoid(1))].
    batch = hopper.to_batch()
    r = reward.reward(batch.obs, batch.action, batch.next_obs)
    lo, hi = -math.log(1 - 1 / (1 + math.e)), -math.log(1 - 1 / (1 + math.exp(-1)))
    assert r.shape == (len(hopper),) and float(r.min()) >= lo - 1e-5 and float(r.max()) <= hi + 1e-5
    # The ensemble the generator was copied from is untouched: every weight as before the training.
    after = fitted.state_dict()["network"]
    assert FITTED_WEIGHTS and set(after) == set(FITTED_WEIGHTS)
    for name, value in FITTED_WEIGHTS.items():
        assert torch.equal(after[name], value), name


def test_dynamics_reward_save_load_and_refuses_untrusted_files(
    learned: tuple[DynamicsReward, list[dict[str, float]]], hopper: OfflineDataset, tmp_path: Path
) -> None:
    reward, _ = learned
    batch = hopper.to_batch().index(slice(0, 300))
    path = reward.save(tmp_path / DYNAMICS_REWARD_FILE)
    for source in (path, tmp_path):  # the file, or the directory holding it
        loaded = DynamicsReward.load(source)
        assert loaded.num_snapshots == reward.num_snapshots
        assert torch.equal(loaded.reward(batch.obs, batch.action, batch.next_obs),
                           reward.reward(batch.obs, batch.action, batch.next_obs))
    # A placeholder with another snapshot count takes the loaded count (RAVL's resume path).
    placeholder = DynamicsReward(11, 3, reward.config, num_snapshots=3)
    placeholder.load_state_dict(reward.state_dict())
    assert torch.equal(placeholder.prob(batch.obs, batch.action, batch.next_obs),
                       reward.prob(batch.obs, batch.action, batch.next_obs))
    with pytest.raises(ValueError, match="expected shape"):
        DynamicsReward(5, 3, reward.config).load_state_dict(reward.state_dict())
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        DynamicsReward.load(corrupt)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    torch.save({"config": "{}", "state": {"dynamics_reward": {"x": Evil()}}, "version": 1}, evil, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        DynamicsReward.load(evil)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        DynamicsReward.load(tmp_path / "missing.pt")


def test_filtered_ensemble_meets_the_world_model_contract(
    learned: tuple[DynamicsReward, list[dict[str, float]]], hopper: OfflineDataset
) -> None:
    reward, _ = learned
    batch = hopper.to_batch().index(slice(0, 64))

    def factory() -> RewardConsistentFilter:
        inner = KnownFunctionsModel.for_env(ProbabilisticEnsemble(11, 3, SMALL, seed=2), get_spec("Hopper-v5"))
        return RewardConsistentFilter(inner, reward)

    check_world_model(factory, batch=batch, stochastic=True)
    step = factory().predict(batch.obs, batch.action, generator=torch.Generator().manual_seed(0))
    assert {"uncertainty", "members", "dynamics_reward", "morec_stopped"} <= set(step.info)
    assert step.info["members"].shape == (3, 64, 11)


# ----------------------------------------------------------------------------- agents on the filtered model
def _quick(make: Any, **overrides: Any) -> Any:
    return make("mem", "quick", filter="morec", loop_updates=20, updates_per_epoch=10, rollouts_per_epoch=100,
                loop_eval_every=0, loop_eval_episodes=1, loop_log_every=10, **overrides)


def test_ravl_learns_a_dynamics_reward_and_rolls_out_through_the_filter(hopper: OfflineDataset) -> None:
    agent = RAVLAgent(_quick(ravl_preset), dataset=hopper)
    assert isinstance(agent.model, RewardConsistentFilter)
    result = agent.learn()
    assert math.isfinite(result["eval/return_mean"]) and agent.num_updates == 20
    assert agent.dynamics_reward is not None and agent.dynamics_reward.num_snapshots == 10  # quick preset
    assert len(agent.model_buffer) > 0
    # The stop fraction covers the whole run: recount it from every rollout transition (the model buffer holds
    # both epochs' rollouts): a filter stop is terminated = 1 where Hopper's own termination says no.
    assert agent.rollouts_started == 2 * 100
    rows = agent.model_buffer.all()
    env_says = get_spec("Hopper-v5").term_fn(rows.obs, rows.action, rows.next_obs) > 0  # type: ignore[misc]
    recount = int(((rows.terminated > 0) & ~env_says).sum())
    assert recount > 0
    assert agent.last_rollout["rollout/morec_stopped_fraction"] == pytest.approx(recount / 200)
    state = agent._learner_state()
    assert state["dynamics_reward"]["real_logit"].shape == (10,)


def test_mopo_penalises_the_filtered_transitions(
    hopper: OfflineDataset, learned: tuple[DynamicsReward, list[dict[str, float]]], tmp_path: Path
) -> None:
    reward, _ = learned
    path = reward.save(tmp_path / "dr.pt")
    agent = RAVLAgent(_quick(mopo_preset, dynamics_reward=str(path)), dataset=hopper)
    assert isinstance(agent.model, UncertaintyPenalty) and isinstance(agent.model.model, RewardConsistentFilter)
    agent.learn()
    assert agent.last_rollout["rollout/mean_uncertainty"] > 0
    obs = torch.from_numpy(hopper.observations[:32])
    assert hopper.actions is not None
    act = torch.from_numpy(hopper.actions[:32])
    step = agent.model.predict(obs, act, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(step.reward, step.info["raw_reward"] - agent.config.penalty_coef * step.info["uncertainty"])
    assert "dynamics_reward" in step.info
    with pytest.raises(ValueError, match="filter='morec'"):
        mopo_preset("mem", "quick", dynamics_reward=str(path))


def test_dyna_runs_with_the_filtered_model() -> None:
    scorer = TargetScorer(0.0, obs_dim=4, action_dim=1)
    model = RewardConsistentFilter(ProbabilisticEnsemble(4, 1, SMALL, seed=0), scorer, threshold=None)
    config = DynaConfig(
        env_id="InvertedPendulum-v5", total_steps=300, init_random_steps=200, epoch_length=100, model_train_every=100,
        rollouts_per_step=4, rollout=RolloutSchedule(1, 3, 1, 2), model_retain_refits=2, utd=1, eval_every=0,
        eval_episodes=1, checkpoint_every=0, sac=SACConfig(hidden=32, batch_size=32),
        ensemble=SMALL, fit=FitConfig(max_epochs=2, batch_size=64),
    )
    agent = DynaAgent(config, model=model)
    result = agent.learn()
    assert np.isfinite(result["eval/return_mean"])
    assert len(agent.model_buffer) > 0 and scorer.calls >= 2  # rollouts at both refits went through the filter


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_train_dynamics_reward(hopper: OfflineDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "hopper.npz"
    save_npz(hopper, data)
    run = tmp_path / "run"
    args = ["model", "train-dynamics-reward", "--dataset", str(data), "--run-dir", str(run), "--preset", "quick"]
    assert cli_main([*args, "--iterations", "100", "--shuffled-negatives", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "dynamics reward 100/100" in out and "accuracy" in out and "saved" in out
    reward = DynamicsReward.load(run)
    assert reward.config.shuffled_negatives == 0.25
    assert reward.num_snapshots == 5 and (reward.obs_dim, reward.action_dim) == (11, 3)
    log, fit_log = read_csv(run / "progress.csv"), read_csv(run / "fit" / "progress.csv")
    assert "model/holdout_mse" in fit_log and np.isfinite(fit_log["model/holdout_mse"]).all()
    for key in ("model/d_acc_real", "model/d_acc_fake", "model/reward_real_mean", "model/reward_fake_std",
                "model/eval_acc_shuffled"):
        assert key in log and np.isfinite(log[key]).any(), key
    # a finished run dir is reported, not recomputed
    assert cli_main([*args, "--iterations", "100", "--shuffled-negatives", "0.25"]) == 0
    assert "holds a finished run" in capsys.readouterr().out
    assert len(read_csv(run / "progress.csv")["step"]) == len(log["step"])
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    # The saved ensemble is readable by `mbrl model eval`, the reward by `train ... --dynamics-reward`.
    assert cli_main(["model", "eval", str(run), "--dataset", str(data), "--horizons", "1", "--json"]) == 0
    assert cli_main(["train", "ravl", "--dataset", str(data), "--run-dir", str(tmp_path / "r"),
                     "--dynamics-reward", str(run)]) == 2
    assert "filter='morec'" in capsys.readouterr().err


def test_shuffled_negatives_option(hopper: OfflineDataset, fitted: ProbabilisticEnsemble) -> None:
    with pytest.raises(ValueError, match="shuffled_negatives"):
        DynamicsRewardConfig(shuffled_negatives=1.0).validate()
    config = DynamicsRewardConfig(
        hidden=64, discriminator_lr=1e-3, num_iterations=300, snapshot_every=20, num_snapshots=10, log_every=300,
        shuffled_negatives=0.25, device="cpu",
    )
    reward, history = train_dynamics_reward(hopper, fitted, config, seed=1)
    final = history[-1]
    # Trained with shuffled next states as negatives, the held-out shuffled transitions read "generated" (0.79
    # without them on this data), and the model's samples still do (the calibration uses the model's rows only).
    assert final["eval_acc_shuffled"] > 0.95 and final["eval_acc_real"] > 0.6 and final["eval_acc_model"] > 0.6
    assert final["eval_reward_real_mean"] > final["eval_reward_shuffled_mean"] + 0.3
    assert reward.num_snapshots == 10


def test_reward_learning_killed_midway_continues_to_the_uninterrupted_result(
    hopper: OfflineDataset, fitted: ProbabilisticEnsemble, tmp_path: Path
) -> None:
    """Progress saved every iteration; the run is stopped by an exception at iteration 60 (after a snapshot at
    40); the second call with the same checkpoint continues from iteration 60 and ends bit for bit where an
    uninterrupted run ends (snapshots, normaliser, calibration, history)."""
    config = DynamicsRewardConfig(
        hidden=32, discriminator_lr=1e-3, num_iterations=100, snapshot_every=20, num_snapshots=3, log_every=20,
        device="cpu",
    )
    reference, ref_history = train_dynamics_reward(hopper, fitted, config, seed=2)
    path = tmp_path / "dynamics_reward_progress.pt"

    def stop_at_60(iteration: int, _metrics: dict[str, float]) -> None:
        if iteration == 60:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_dynamics_reward(hopper, fitted, config, seed=2, progress=stop_at_60, checkpoint=path,
                              checkpoint_every_s=0)
    assert path.is_file()
    seen: list[int] = []
    resumed, history = train_dynamics_reward(
        hopper, fitted, config, seed=2, progress=lambda it, _m: seen.append(it), checkpoint=path
    )
    assert seen[0] == 60 and seen[-1] == 100  # iterations 1-59 were not trained again
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    drop = {"time_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in history] == [
        {k: v for k, v in r.items() if k not in drop} for r in ref_history
    ]
    with pytest.raises(ValueError, match="another dynamics-reward training"):
        train_dynamics_reward(hopper, fitted, config, seed=3, checkpoint=path)
