"""The MBPO layer of Dyna and the offline agents, checked by behaviour: rollouts start from real states, each SAC
batch mixes real and model rows at ``real_ratio``, the model buffer keeps exactly the configured refits, and
MOPO's penalty reaches model rows only."""

from __future__ import annotations

import pytest
import torch

from mbrl.agents.dyna import DynaAgent, RolloutSchedule
from mbrl.agents.mopo import mopo_preset
from mbrl.agents.ravl import RAVLAgent, ravl_preset
from mbrl.data import OfflineDataset
from mbrl.types import TransitionBatch
from tests.agents.test_dyna import tiny_config
from tests.agents.test_offline import _random_hopper


@pytest.fixture(scope="module")
def dataset() -> OfflineDataset:
    return _random_hopper(1200, seed=3)


def _rows_in(rows: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: which rows of ``rows [B, D]`` are exactly a row of ``pool [N, D]``."""
    return (rows[:, None, :] == pool[None, :, :]).all(-1).any(-1)


def _offline(make, dataset: OfflineDataset, **overrides: object) -> RAVLAgent:  # type: ignore[no-untyped-def]
    config = make("mem", "quick", rollout_length=1, rollouts_per_epoch=64, updates_per_epoch=5, retain_epochs=2,
                  loop_updates=15, loop_eval_every=0, loop_eval_episodes=1, **overrides)
    return RAVLAgent(config, dataset=dataset)


def test_offline_rollouts_start_from_dataset_states_and_the_buffer_keeps_the_retained_epochs(
    dataset: OfflineDataset,
) -> None:
    agent = _offline(ravl_preset, dataset)
    epochs: list[TransitionBatch] = []
    original = agent.model_buffer.add

    def recording_add(*arrays):  # type: ignore[no-untyped-def]
        epochs.append(TransitionBatch.from_numpy(*arrays))
        return original(*arrays)

    agent.model_buffer.add = recording_add  # type: ignore[method-assign]
    agent.learn()
    assert len(epochs) == 3  # refills at updates 0, 5, 10
    real_obs = torch.from_numpy(dataset.observations)
    for rollout in epochs:  # k = 1: every model row's obs is a start state, drawn from the dataset
        assert bool(_rows_in(rollout.obs, real_obs).all())
    # retain_epochs = 2: exactly the last two refills, nothing older
    kept = agent.model_buffer.all()
    assert len(kept) == 2 * 64
    expected = torch.cat([epochs[1].obs, epochs[2].obs])
    assert torch.equal(torch.sort(kept.obs, dim=0).values, torch.sort(expected, dim=0).values)


@pytest.mark.parametrize("real_ratio", [0.05, 0.5])
def test_offline_batches_mix_dataset_and_model_rows_at_real_ratio(dataset: OfflineDataset, real_ratio: float) -> None:
    agent = _offline(ravl_preset, dataset, real_ratio=real_ratio)
    agent.learn()
    batch = agent.sample_batch()
    n = agent.config.sac.batch_size
    from_data = _rows_in(torch.cat([batch.obs, batch.action], 1),
                         torch.cat([torch.from_numpy(dataset.observations), torch.from_numpy(dataset.actions)], 1))  # type: ignore[arg-type]
    assert len(batch) == n and int(from_data.sum()) == round(real_ratio * n)


def test_mopo_penalty_touches_model_rows_only(dataset: OfflineDataset) -> None:
    agent = _offline(mopo_preset, dataset, real_ratio=0.5, penalty_coef=50.0)
    agent.learn()
    batch = agent.sample_batch()
    data = torch.cat([torch.from_numpy(dataset.observations), torch.from_numpy(dataset.actions)], 1)  # type: ignore[arg-type]
    keys = torch.cat([batch.obs, batch.action], 1)
    from_data = _rows_in(keys, data)
    assert 0 < int(from_data.sum()) < len(batch)
    # Dataset rows keep their recorded rewards exactly ...
    for row in from_data.nonzero().flatten().tolist():
        match = int((data == keys[row]).all(-1).nonzero()[0])
        assert batch.reward[row].item() == float(dataset.rewards[match])
    # ... and model rows carry the penalised reward r - 50 u, far below any recorded reward here.
    assert float(batch.reward[~from_data].max()) < float(dataset.rewards.min())


def test_dyna_rollouts_start_from_real_states_mix_at_real_ratio_and_keep_the_retained_refits() -> None:
    cfg = tiny_config(rollout=RolloutSchedule(1, 1, 1, 1), model_retain_refits=2, real_ratio=0.25)
    agent = DynaAgent(cfg)
    refits: list[TransitionBatch] = []
    original = agent.model_buffer.add

    def recording_add(*arrays):  # type: ignore[no-untyped-def]
        refits.append(TransitionBatch.from_numpy(*arrays))
        return original(*arrays)

    agent.model_buffer.add = recording_add  # type: ignore[method-assign]
    agent.learn()
    assert len(refits) == 3  # refits at env steps 200, 300, 400
    real = agent.real_buffer.all()
    per_refit = cfg.rollouts_per_step * cfg.model_train_every
    for rollout in refits:
        assert len(rollout) == per_refit and bool(_rows_in(rollout.obs, real.obs).all())
    kept = agent.model_buffer.all()
    assert len(kept) == 2 * per_refit
    expected = torch.cat([refits[1].obs, refits[2].obs])
    assert torch.equal(torch.sort(kept.obs, dim=0).values, torch.sort(expected, dim=0).values)
    batch = agent._sample_training_batch()
    from_real = _rows_in(torch.cat([batch.obs, batch.action], 1), torch.cat([real.obs, real.action], 1))
    assert int(from_real.sum()) == round(0.25 * cfg.sac.batch_size)
