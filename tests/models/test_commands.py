"""`mbrl model train` / `mbrl model eval` end to end through the real CLI on a real HalfCheetah dataset file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mbrl.cli import main
from mbrl.data.io import save_npz
from mbrl.models.commands import load_model
from tests.models.data import random_dataset

TINY = ["--ensemble.num-members", "3", "--ensemble.num-elites", "2", "--ensemble.hidden", "16", "--ensemble.depth", "2",
        "--ensemble.device", "cpu", "--fit.max-epochs", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("model_cmd")
    data = root / "cheetah.npz"
    save_npz(random_dataset("HalfCheetah-v5", 800, episode_len=100, seed=0), data)
    run_dir = root / "run"
    assert main(["model", "train", str(data), "--run-dir", str(run_dir), "--env", "HalfCheetah-v5", *TINY]) == 0
    return data, run_dir


def test_train_saves_a_loadable_model(trained: tuple[Path, Path]) -> None:
    _, run_dir = trained
    assert (run_dir / "model.pt").is_file() and (run_dir / "progress.csv").is_file()
    model = load_model(str(run_dir))
    assert model.num_members == 3 and model.config.hidden == 16 and len(model.elites) == 2
    again = load_model(str(run_dir / "model.pt"))
    x, a = torch.randn(5, 17), torch.randn(5, 6)
    assert torch.equal(model.predict(x, a, deterministic=True).next_obs, again.predict(x, a, deterministic=True).next_obs)
    assert model.network.input_norm.std.ne(1).any()  # the fitted normaliser was saved


def test_eval_prints_json_and_plots(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data, run_dir = trained
    png = tmp_path / "err.png"
    capsys.readouterr()
    code = main(["model", "eval", str(run_dir), "--dataset", str(data), "--horizons", "1", "5", "--json", "--plot", str(png)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_transitions"] == 800
    assert set(out["k_step"]["obs_mse"]) == {"1", "5"}
    assert all(0 < v < 1e3 for v in out["k_step"]["obs_mse"].values())
    assert out["k_step"]["n_windows"] == 8 * (100 - 5 + 1)
    assert 0 <= out["calibration"]["within_1sigma"] <= 1 and out["one_step"]["obs_mse"] > 0
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_eval_table(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, run_dir = trained
    capsys.readouterr()
    assert main(["model", "eval", str(run_dir), "--dataset", str(data), "--horizons", "1", "2", "--true-dynamics"]) == 0
    out = capsys.readouterr().out
    assert "one-step: next_obs MSE" in out and "vs simulator" in out and "within 1σ" in out


def test_user_errors_exit_2(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = trained
    assert main(["model", "eval", str(tmp_path / "nothing"), "--dataset", str(data)]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    hopper = tmp_path / "hopper.npz"
    save_npz(random_dataset("Hopper-v5", 50, episode_len=50, seed=0), hopper)
    assert main(["model", "eval", str(trained[1]), "--dataset", str(hopper)]) == 2
    assert "do not match the model" in capsys.readouterr().err
