"""Run directories: layout, refusal of non-empty dirs and config mismatches on resume, config JSON round trip,
and a crash/resume cycle that leaves no duplicated CSV rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from mbrl.checkpoint import config_to_dict, restore_rng, rng_state, save_run_checkpoint
from mbrl.logging import Logger, read_csv
from mbrl.run import RunDirError, config_from_dict, prepare_run_dir


@dataclass(frozen=True)
class ModelConfig:
    """Nested config."""

    hidden: tuple[int, ...] = (200, 200, 200)
    weight_decay: tuple[float, float] = (2.5e-5, 5e-5)
    activation: Literal["silu", "relu"] = "silu"


@dataclass(frozen=True)
class TrainConfig:
    """Top-level config."""

    env_id: str = "HalfCheetah-v5"
    seed: int = 0
    total_steps: int = 1000
    lr: float = 3e-4
    dataset: Path | None = None
    model: ModelConfig = field(default_factory=ModelConfig)


def test_new_run_layout(tmp_path: Path) -> None:
    config = TrainConfig(dataset=Path("/d/x.hdf5"))
    run = prepare_run_dir(tmp_path / "run", config, resume=False)
    assert run.path == tmp_path / "run"
    assert run.checkpoints_dir.is_dir() and run.plots_dir.is_dir()
    stored = json.loads(run.config_path.read_text())
    assert stored == config_to_dict(config)
    assert stored["model"]["hidden"] == [200, 200, 200] and stored["dataset"] == "/d/x.hdf5"
    assert config_from_dict(TrainConfig, run.read_config()) == config
    assert run.latest_checkpoint() is None and run.load_latest() is None
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []


def test_new_run_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    prepare_run_dir(tmp_path / "run", TrainConfig(), resume=False)  # an empty dir is fine
    with pytest.raises(RunDirError, match=r"already exists and is not empty.*--resume"):
        prepare_run_dir(tmp_path / "run", TrainConfig(), resume=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        prepare_run_dir(tmp_path / "file", TrainConfig(), resume=False)


def test_resume_checks(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        prepare_run_dir(tmp_path / "missing", TrainConfig(), resume=True)
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(RunDirError, match=r"config.json not found"):
        prepare_run_dir(tmp_path / "noconfig", TrainConfig(), resume=True)

    run_path = tmp_path / "run"
    prepare_run_dir(run_path, TrainConfig(), resume=False)
    changed = TrainConfig(seed=1, model=ModelConfig(hidden=(64, 64)))
    with pytest.raises(RunDirError, match="2 field") as info:
        prepare_run_dir(run_path, changed, resume=True)
    message = str(info.value)
    assert "seed: stored 0, given 1" in message
    assert "model.hidden: stored [200, 200, 200], given [64, 64]" in message
    assert "lr" not in message

    # Resumable fields may change; config.json then shows the latest settings.
    longer = TrainConfig(total_steps=5000)
    run = prepare_run_dir(run_path, longer, resume=True)
    assert run.read_config()["total_steps"] == 5000


def test_config_from_dict_types_and_errors() -> None:
    config = TrainConfig(dataset=Path("a/b.npz"), model=ModelConfig(hidden=(8,), activation="relu"))
    data = json.loads(json.dumps(config_to_dict(config)))
    rebuilt = config_from_dict(TrainConfig, data)
    assert rebuilt == config
    assert isinstance(rebuilt.model.hidden, tuple) and isinstance(rebuilt.dataset, Path)
    # Absent fields take defaults; an int is accepted for a float.
    assert config_from_dict(TrainConfig, {"lr": 1}) == TrainConfig(lr=1.0)
    with pytest.raises(ValueError, match=r"unknown field.*colour"):
        config_from_dict(TrainConfig, {"colour": "red"})
    with pytest.raises(ValueError, match=r"model\.hidden\[1\]: expected an integer"):
        config_from_dict(TrainConfig, {"model": {"hidden": [1, "two"]}})
    with pytest.raises(ValueError, match=r"model\.weight_decay: expected 2 items"):
        config_from_dict(TrainConfig, {"model": {"weight_decay": [1.0]}})
    with pytest.raises(ValueError, match=r"model\.activation: 'gelu' is not one of"):
        config_from_dict(TrainConfig, {"model": {"activation": "gelu"}})
    with pytest.raises(ValueError, match="seed: expected an integer"):
        config_from_dict(TrainConfig, {"seed": 1.5})


def _train(run_path: Path, config: TrainConfig, *, resume: bool, crash_at: int | None) -> list[float]:
    """A toy loop: a random walk logged every step, checkpointed every 5 steps."""
    run = prepare_run_dir(run_path, config, resume=resume)
    np_rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.zeros(())
    start = 0
    ckpt = run.load_latest()
    if ckpt is not None:
        start = ckpt.extra["step"]
        x = ckpt.state["walk"]["x"]
        restore_rng(ckpt.extra["rng"], np_rng, gen)
    values = []
    with Logger(
        run.path, total=config.total_steps, console=False, resume_step=start if ckpt else None
    ) as logger:
        for step in range(start + 1, config.total_steps + 1):
            x = x + torch.randn((), generator=gen) + float(np_rng.normal())
            logger.log({"train/x": float(x)}, step)
            values.append(float(x))
            if step % 5 == 0:
                save_run_checkpoint(
                    run.path,
                    step,
                    config=config,
                    state={"walk": {"x": x}},
                    extra={"rng": rng_state(np_rng, gen)},
                )
            if crash_at is not None and step == crash_at:
                break
    return values


def test_crash_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    config = TrainConfig(total_steps=20)
    full = _train(tmp_path / "full", config, resume=False, crash_at=None)
    _train(tmp_path / "crashed", config, resume=False, crash_at=13)  # last checkpoint: step 10
    assert read_csv(tmp_path / "crashed")["step"].tolist() == list(range(1, 14))
    _train(tmp_path / "crashed", config, resume=True, crash_at=None)
    cols = read_csv(tmp_path / "crashed")
    assert cols["step"].tolist() == list(range(1, 21))  # rows 11..13 of the crashed session were dropped
    np.testing.assert_array_equal(cols["train/x"], np.array(full))
