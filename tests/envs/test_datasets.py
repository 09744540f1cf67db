"""D4RL-style dataset generation on the ``tiny`` preset: split composition, reference-score metadata,
terminals/timeouts, determinism, exact resume of the behaviour run, skipping written splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl.data import OfflineDataset, load_dataset
from mbrl.envs import get_spec
from mbrl.envs.datasets import SPLITS, BehaviourTrainer, dataset_preset, make_datasets, minari_root
from mbrl.evaluation import reference_scores

CONFIG = dataset_preset("Hopper-v5", "tiny", seed=3)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, OfflineDataset]]:
    root = tmp_path_factory.mktemp("minari")
    work = tmp_path_factory.mktemp("work")
    ids = make_datasets(CONFIG, work, out_dir=root)
    assert set(ids) == set(SPLITS)
    with minari_root(root):
        data = {split: load_dataset(dataset_id) for split, dataset_id in ids.items()}
    return root, work, data


def test_split_sizes_and_composition(made: tuple[Path, Path, dict[str, OfflineDataset]]) -> None:
    _, work, data = made
    n = CONFIG.split_size
    for split in ("random", "medium", "expert"):
        assert len(data[split]) == n
    medium, expert, both = data["medium"], data["expert"], data["medium-expert"]
    assert len(both) == 2 * n
    np.testing.assert_array_equal(both.observations, np.concatenate([medium.observations, expert.observations]))
    np.testing.assert_array_equal(both.actions, np.concatenate([medium.actions, expert.actions]))  # type: ignore[arg-type]
    # medium-replay: the behaviour run's replay buffer up to the medium snapshot, in order.
    trainer = BehaviourTrainer(CONFIG, work)
    assert trainer.resume() and trainer.step == CONFIG.sac_steps
    selection = json.loads((work / "selection.json").read_text())
    step = int(selection["medium"]["step"])
    replay = data["medium-replay"]
    assert len(replay) == step and step % CONFIG.snapshot_every == 0
    buffer = trainer.buffer.all()
    np.testing.assert_array_equal(replay.observations, buffer.obs[:step].numpy())
    np.testing.assert_array_equal(replay.actions, buffer.action[:step].numpy())  # type: ignore[arg-type]
    # Expert: the best re-scored of the best training-time snapshots; medium: the re-scored snapshot (up to the
    # expert's step) closest to a third of the expert's return.
    expert_sel, medium_sel = selection["expert"], selection["medium"]
    rescored = {c["index"]: c["return"] for c in selection["candidates"]}
    train = [s["return"] for s in trainer.snapshots]
    top = sorted(range(len(train)), key=lambda i: -train[i])[: CONFIG.selection_candidates]
    assert expert_sel["index"] in top and expert_sel["return"] == max(rescored[i] for i in top)
    target = expert_sel["return"] / 3
    assert selection["medium_target"] == pytest.approx(target)
    assert medium_sel["index"] <= expert_sel["index"]
    assert all(abs(medium_sel["return"] - target) <= abs(r - target) for i, r in rescored.items() if i <= expert_sel["index"])
    # The random split's actions are uniform over the action box, the policies' are not the same data.
    random_actions = data["random"].actions
    assert random_actions is not None and np.abs(random_actions).max() <= 1.0
    assert not np.array_equal(medium.observations, expert.observations)


def test_snapshot_selection_rescores_candidates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The expert is the best *re-scored* of the top training-time snapshots (not the last one, not the noisy
    training-time best); the medium is the earlier snapshot whose re-scored return is closest to a third."""
    config = dataset_preset("Hopper-v5", "tiny", selection_candidates=2)
    trainer = BehaviourTrainer(config, tmp_path)
    train = [10.0, 320.0, 290.0, 1000.0, 900.0, 400.0]  # index 3 looked best during training ...
    rescored = {3: 700.0, 4: 870.0, 1: 250.0, 2: 300.0, 0: 5.0, 5: 390.0}  # ... but 4 is better on re-scoring
    trainer.snapshots = [{"step": 100 * (i + 1), "return": r, "actor": {}} for i, r in enumerate(train)]
    calls: list[int] = []

    def fake_rescore(index: int, episodes: int, seed: int) -> float:
        assert episodes == config.selection_episodes
        calls.append(index)
        return rescored[index]

    monkeypatch.setattr(trainer, "rescore", fake_rescore)
    selection = trainer.select_snapshots()
    assert selection["expert"]["index"] == 4 and selection["expert"]["return"] == 870.0
    assert selection["medium_target"] == pytest.approx(290.0)
    # nearest by training return to 290 among indices <= 4: 2 (290) and 1 (320); re-scored 300 vs 250 -> 2
    assert selection["medium"]["index"] == 2 and selection["medium"]["step"] == 300
    assert sorted(set(calls)) == [1, 2, 3, 4] and len(calls) == len(set(calls))  # each candidate scored once


def test_reference_scores_in_metadata(made: tuple[Path, Path, dict[str, OfflineDataset]]) -> None:
    _, work, data = made
    refs = json.loads((work / "refs.json").read_text())
    for split in SPLITS:
        meta = data[split].metadata
        assert meta["ref_min_score"] == pytest.approx(refs["ref_min_score"])
        assert meta["ref_max_score"] == pytest.approx(refs["ref_max_score"])
        assert reference_scores("Hopper-v5", meta) == pytest.approx((refs["ref_min_score"], refs["ref_max_score"]))
    assert data["medium"].env_id == "Hopper-v5"


def test_terminals_and_timeouts(made: tuple[Path, Path, dict[str, OfflineDataset]]) -> None:
    _, _, data = made
    term_fn = get_spec("Hopper-v5").term_fn
    for split, ds in data.items():
        expected = term_fn(torch.from_numpy(ds.observations), torch.from_numpy(ds.actions), torch.from_numpy(ds.next_observations))  # type: ignore[arg-type]
        np.testing.assert_array_equal(ds.terminals, expected.numpy() > 0, err_msg=split)
        assert not np.any(ds.terminals & ds.timeouts), split
        # Every episode ends by a terminal or a timeout (the split's cut episode gets a timeout).
        ends = np.array([stop - 1 for _, stop in ds.episode_slices()])
        assert np.all(ds.terminals[ends] | ds.timeouts[ends]), split
        assert ds.terminals[-1] or ds.timeouts[-1]
        # Inside an episode the next observation is the next row's observation.
        inner = np.setdiff1d(np.arange(len(ds) - 1), ends)
        np.testing.assert_array_equal(ds.next_observations[inner], ds.observations[inner + 1])
    assert data["random"].terminals.sum() > 0  # random Hopper falls: terminals occur and are kept


def test_rerun_skips_and_rewrites_identically(made: tuple[Path, Path, dict[str, OfflineDataset]]) -> None:
    root, work, data = made
    messages: list[str] = []
    make_datasets(CONFIG, work, out_dir=root, progress=messages.append)
    assert sum("already written" in m for m in messages) == len(SPLITS)
    assert not any("behaviour" in m for m in messages)
    shutil.rmtree(root / "mbrl" / "hopper" / "expert-v0")
    messages.clear()
    make_datasets(CONFIG, work, out_dir=root, progress=messages.append)
    assert any("expert-v0: 300 transitions" in m for m in messages)
    with minari_root(root):
        again = load_dataset("mbrl/hopper/expert-v0")
    np.testing.assert_array_equal(again.observations, data["expert"].observations)
    np.testing.assert_array_equal(again.rewards, data["expert"].rewards)


def test_behaviour_training_resumes_exactly(tmp_path: Path) -> None:
    config = dataset_preset("Hopper-v5", "tiny", seed=5, sac_steps=400, checkpoint_every=250)
    full = BehaviourTrainer(config, tmp_path / "a")
    full.run()
    part = BehaviourTrainer(config, tmp_path / "b")
    part.run(until=250)  # the checkpoint at 250 is written; the process "dies" here
    resumed = BehaviourTrainer(config, tmp_path / "b")
    assert resumed.resume() and resumed.step == 250
    resumed.run()
    for a, b in zip(full.sac.parameters(), resumed.sac.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [s["return"] for s in full.snapshots] == [s["return"] for s in resumed.snapshots]
    torch.testing.assert_close(full.buffer.all().obs, resumed.buffer.all().obs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="different dataset config"):
        BehaviourTrainer(dataset_preset("Hopper-v5", "tiny", seed=6, sac_steps=400), tmp_path / "b").resume()
