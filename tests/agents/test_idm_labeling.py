"""IDM labeling pipeline: action-free files load, agents that need actions refuse them, end-to-end smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from mbrl.agents.idm_labeling import label_union, make_agent, require_actions
from mbrl.cli import main as cli_main
from mbrl.data import OfflineDataset, load_dataset, save_npz
from mbrl.envs.datasets import collect
from mbrl.models.inverse_dynamics import InverseDynamicsModel

ENV = "Hopper-v5"


@pytest.fixture(scope="module")
def dataset() -> OfflineDataset:
    """Random-policy Hopper-v5 transitions (short episodes: a few dozen of them)."""
    rng = np.random.default_rng(0)
    return collect(ENV, lambda _o: rng.uniform(-1, 1, 3).astype(np.float32), 800, seed=0, source="hopper-random")


def _plain_files(ds: OfflineDataset, tmp_path: Path) -> tuple[Path, Path]:
    """A D4RL-layout npz and HDF5 file with no ``actions`` key and no action-free marker."""
    arrays = {"observations": ds.observations, "rewards": ds.rewards, "next_observations": ds.next_observations,
              "terminals": ds.terminals, "timeouts": ds.timeouts}
    npz = tmp_path / "free.npz"
    np.savez(npz, **arrays)  # type: ignore[arg-type]
    hdf = tmp_path / "free.hdf5"
    with h5py.File(hdf, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return npz, hdf


def test_action_free_files_load_and_agents_refuse_them(
    dataset: OfflineDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz, hdf = _plain_files(dataset, tmp_path)
    for path in (npz, hdf):
        ds = load_dataset(path, env_id=ENV)
        assert not ds.has_actions and len(ds) == len(dataset) and ds.n_episodes == dataset.n_episodes
        np.testing.assert_array_equal(ds.observations, dataset.observations)
        with pytest.raises(ValueError, match="action-free; label it first with `mbrl dataset label"):
            make_agent("bc", ds, "quick", None)
        with pytest.raises(ValueError, match="needs actions"):
            require_actions(ds, "ravl")
    # the offline agents themselves refuse too, as a one-line CLI error (exit 2)
    capsys.readouterr()
    code = cli_main(["train", "bc", "--dataset", str(npz), "--run-dir", str(tmp_path / "bc"), "--env", ENV])
    err = capsys.readouterr().err
    assert code == 2 and "need a dataset with actions" in err and "Traceback" not in err
    # idm-label refuses a source with no labelled trajectory at all
    code = cli_main(["train", "idm-label", "--dataset", str(npz), "--run-dir", str(tmp_path / "r"), "--env", ENV])
    assert code == 2 and "needs some trajectories with actions" in capsys.readouterr().err


def test_end_to_end_idm_label_and_dataset_label(dataset: OfflineDataset, tmp_path: Path) -> None:
    src = tmp_path / "hopper.npz"
    save_npz(dataset, src)
    run = tmp_path / "run"
    args = ["train", "idm-label", "--dataset", str(src), "--run-dir", str(run), "--labelled-fraction", "0.2",
            "--agent", "bc", "--preset", "quick", "--idm-preset", "quick", "--updates", "20",
            "--eval-episodes", "1"]
    assert cli_main(args) == 0
    union = load_dataset(run / "labelled_union.npz")
    assert len(union) == len(dataset) and union.proxy_actions is not None
    n_lab_eps = round(0.2 * dataset.n_episodes)
    # the true-labelled part is 20 % of the episodes, from the lower half of returns; the rest are proxies
    true_rows = ~union.proxy_actions
    assert 0 < true_rows.sum() < len(union)
    lab = union.subset_episodes(np.flatnonzero([not ep["proxy_actions"].any() for ep in union.episodes()]))
    assert lab.n_episodes == n_lab_eps
    assert lab.episode_returns().max() <= np.median(dataset.episode_returns()) + 1e-6
    idm = InverseDynamicsModel.load(run / "idm")
    proxies = union.actions[union.proxy_actions]  # type: ignore[index]
    assert np.all(proxies >= -1) and np.all(proxies <= 1)
    result = json.loads((run / "result.json").read_text())
    assert np.isfinite(result["idm"]["val_nll"]) and "eval/return_mean" in result["final"]
    assert any((run / "agent" / "checkpoints").iterdir())
    # the agent's folder is a run directory `mbrl eval` understands
    from mbrl.agents.offline_commands import evaluate_run

    assert np.isfinite(evaluate_run(run / "agent", 1)["return_mean"])

    # mbrl dataset label: an action-free file -> a labelled file whose actions are the IDM's mean labels
    npz, _ = _plain_files(dataset, tmp_path)
    out = tmp_path / "labelled.hdf5"
    assert cli_main(["dataset", "label", str(npz), str(out), "--idm", str(run)]) == 0
    labelled = load_dataset(out)
    assert labelled.has_actions and labelled.proxy_actions is not None and labelled.proxy_actions.all()
    np.testing.assert_allclose(labelled.actions, idm.label(load_dataset(npz)), atol=1e-6)  # type: ignore[arg-type]
    # relabelling a labelled file needs --relabel
    assert cli_main(["dataset", "label", str(src), str(tmp_path / "x.npz"), "--idm", str(run)]) == 2


def test_label_union_keeps_true_actions(dataset: OfflineDataset) -> None:
    import torch

    from mbrl.models.inverse_dynamics import idm_preset

    lab = dataset.subset_episodes(np.arange(5))
    free = dataset.subset_episodes(np.arange(5, dataset.n_episodes)).without_actions()
    idm = InverseDynamicsModel.for_dataset(lab, idm_preset("quick"), generator=torch.Generator().manual_seed(0))
    union = label_union(idm, lab, free)
    assert union.proxy_actions is not None
    np.testing.assert_array_equal(union.actions[: len(lab)], lab.actions)  # type: ignore[index]
    assert not union.proxy_actions[: len(lab)].any() and union.proxy_actions[len(lab) :].all()
    np.testing.assert_array_equal(union.actions[len(lab) :], idm.label(free))  # type: ignore[index]


def _same(a: object, b: object, where: str = "") -> None:
    """Recursive equality of checkpoint states (tensors exactly)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def test_idm_label_resume_reuses_the_idm_and_continues_the_agent(
    dataset: OfflineDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mbrl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

    src = tmp_path / "hopper.npz"
    save_npz(dataset, src)
    base = ["train", "idm-label", "--dataset", str(src), "--labelled-fraction", "0.2", "--agent", "bc",
            "--preset", "quick", "--idm-preset", "quick", "--eval-episodes", "1"]
    run = tmp_path / "run"
    assert cli_main([*base, "--run-dir", str(run), "--updates", "10"]) == 0  # "interrupted" after 10 updates
    idm_file, union_file = run / "idm" / "idm.pt", run / "labelled_union.npz"
    stamps = (idm_file.stat().st_mtime_ns, union_file.stat().st_mtime_ns)
    capsys.readouterr()
    assert cli_main([*base, "--run-dir", str(run), "--updates", "20", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "idm: reusing" in out and "labelled union: reusing" in out and "agent: resuming at update 10" in out
    assert (idm_file.stat().st_mtime_ns, union_file.stat().st_mtime_ns) == stamps  # neither refit nor relabelled
    assert [step for step, _ in list_checkpoints(run / "agent")] == [10, 20]
    # exact continuation: the same weights and counters as one uninterrupted 20-update run
    straight = tmp_path / "straight"
    assert cli_main([*base, "--run-dir", str(straight), "--updates", "20"]) == 0
    resumed = load_checkpoint(latest_checkpoint(run / "agent")).state  # type: ignore[arg-type]
    direct = load_checkpoint(latest_checkpoint(straight / "agent")).state  # type: ignore[arg-type]
    resumed["loop"].pop("train_time_s")
    direct["loop"].pop("train_time_s")
    assert resumed["loop"]["num_updates"] == 20
    _same(resumed, direct)
    # resuming with a changed setting other than the run length is refused, naming the field
    capsys.readouterr()
    assert cli_main([*base, "--run-dir", str(run), "--updates", "20", "--resume", "--seed", "1"]) == 2
    assert "seed" in capsys.readouterr().err
    assert idm_file.stat().st_mtime_ns == stamps[0]
