"""The model-free SAC loop on real gymnasium envs: smoke, determinism, outputs; a slow learning check."""

from pathlib import Path

import numpy as np
import pytest

from mbrl.checkpoint import latest_checkpoint, load_checkpoint
from mbrl.logging import read_csv
from mbrl.rl.sac import SACConfig
from mbrl.rl.train_sac import SACTrainConfig, train_sac

TINY = SACTrainConfig(
    total_steps=300, learning_starts=200, utd=2, eval_every=0, eval_episodes=1, log_every=50,
    sac=SACConfig(hidden=32, batch_size=32),
)


def test_train_sac_smoke_outputs_and_determinism(tmp_path: Path) -> None:
    agent, metrics = train_sac("Pendulum-v1", TINY, seed=3, run_dir=tmp_path / "run")
    assert agent.num_updates == 2 * (300 - 200)
    assert metrics["train/updates"] == 200 and metrics["train/episodes"] == 1  # Pendulum episodes are 200 steps
    assert -2000 < metrics["eval/return_mean"] < 0 and metrics["eval/return_std"] == 0.0
    csv = read_csv(tmp_path / "run" / "progress.csv")
    assert "train/critic_loss" in csv and "eval/return_mean" in csv and "train/episode_return" in csv
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and int(load_checkpoint(ckpt).state["sac"]["num_updates"]) == 200
    _, again = train_sac("Pendulum-v1", TINY, seed=3)
    assert again["eval/return_mean"] == metrics["eval/return_mean"]
    _, other = train_sac("Pendulum-v1", TINY, seed=4)
    assert other["eval/return_mean"] != metrics["eval/return_mean"]


def test_train_sac_refuses_discrete_envs() -> None:
    with pytest.raises(ValueError, match="Box action space"):
        train_sac("CartPole-v1", TINY, seed=0)


@pytest.mark.slow
def test_sac_learns_pendulum() -> None:
    # A uniform random policy scores about -1200 on Pendulum; SAC reaches about -150 to -250 by 5k steps.
    cfg = SACTrainConfig(total_steps=5000, learning_starts=1000, eval_every=0, eval_episodes=5)
    _, metrics = train_sac("Pendulum-v1", cfg, seed=0)
    assert metrics["eval/return_mean"] > -400, metrics
    assert np.isfinite(metrics["time/updates_per_s"])
