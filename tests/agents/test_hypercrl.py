"""The continual loop: a tiny smoke run of every method, determinism, logging, checkpoints, the metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl.agents.hypercrl import METHODS, ContinualResult, HyperCRLAgent, HyperCRLConfig
from mbrl.logging import Logger, read_csv
from mbrl.models.hypernet import HyperNetworkModel
from mbrl.models.multihead import MLPDynamicsModel
from mbrl.planning import MPPIConfig

TINY = HyperCRLConfig(
    num_tasks=2,
    steps_per_task=60,
    random_steps=30,
    train_every=15,
    train_iters=5,
    batch_size=16,
    coreset_size=10,
    eval_episodes=1,
    mppi=MPPIConfig(horizon=3, population=8, iterations=1),
)


@pytest.mark.parametrize("method", METHODS)
def test_smoke_every_method(method: str) -> None:
    agent = HyperCRLAgent(replace(TINY, method=method))  # type: ignore[arg-type]
    final = agent.learn()
    res = agent.result
    assert res is not None and res.method == method and res.task_names == ["default", "heavy-long"]
    assert res.returns.shape == (2, 2) and res.model_mse.shape == (2, 2)
    assert np.isnan(res.returns[1, 0]) and np.isnan(res.model_mse[1, 0])  # task 1 not seen after task 0
    upper = np.triu_indices(2)
    assert np.isfinite(res.returns[upper]).all() and np.isfinite(res.model_mse[upper]).all()
    # Pendulum: 200-step episodes with per-step reward in [-16.3, 0].
    assert (res.returns[upper] < 0).all() and (res.returns[upper] > -16.3 * 200).all()
    assert (res.random_returns < 0).all() and (res.model_mse[upper] > 0).all()
    assert set(final) >= {
        "eval/return_task0",
        "eval/return_task1",
        "eval/mean_retention",
        "eval/mean_model_mse",
    }
    # Data: every 5th transition held out, the rest kept for training; coreset only for "coreset".
    for d in agent.data:
        assert len(d.holdout) == 60 // 5 and len(d.train) == 60 - 60 // 5
    assert (agent.data[0].coreset is not None) == (method == "coreset")
    if method == "coreset":
        assert agent.data[0].coreset is not None and len(agent.data[0].coreset) == 10
    model = agent.model
    if method == "hypercrl":
        assert (
            isinstance(model, HyperNetworkModel) and model.num_tasks == 2 and len(model.stored_targets) == 1
        )
    else:
        assert isinstance(model, MLPDynamicsModel) and len(model.heads) == 2


def test_same_seed_same_result() -> None:
    cfg = replace(TINY, num_tasks=1, steps_per_task=40, random_steps=20, train_every=10)
    a, b = HyperCRLAgent(cfg), HyperCRLAgent(cfg)
    a.learn()
    b.learn()
    assert a.result is not None and b.result is not None
    np.testing.assert_array_equal(a.result.returns, b.result.returns)
    np.testing.assert_array_equal(a.result.model_mse, b.result.model_mse)
    c = HyperCRLAgent(replace(cfg, seed=1))
    c.learn()
    assert c.result is not None and not np.array_equal(a.result.model_mse, c.result.model_mse)


def test_logger_and_checkpoint(tmp_path: Path) -> None:
    cfg = replace(TINY, num_tasks=1, steps_per_task=40, random_steps=20, train_every=10)
    agent = HyperCRLAgent(cfg)
    with Logger(tmp_path / "run", console=False, tensorboard=False) as logger:
        agent.learn(logger)
    csv = read_csv(tmp_path / "run" / "progress.csv")
    assert "eval/return_task0" in csv and "model/task_loss" in csv and "model/reg" in csv
    assert np.isfinite(csv["eval/return_task0"][~np.isnan(csv["eval/return_task0"])]).all()
    agent.save(tmp_path / "agent.pt")
    other = HyperCRLAgent(replace(cfg, seed=3))
    other.load(tmp_path / "agent.pt")
    obs = torch.randn(5, 3)
    act = torch.rand(5, 1) * 4 - 2
    torch.testing.assert_close(
        other.task_model(0).predict(obs, act).next_obs, agent.task_model(0).predict(obs, act).next_obs
    )


def test_result_metrics() -> None:
    nan = np.nan
    res = ContinualResult(
        method="x",
        seed=0,
        task_names=["a", "b", "c"],
        returns=np.array([[-200.0, -300.0, -1100.0], [nan, -400.0, -400.0], [nan, nan, -150.0]]),
        model_mse=np.zeros((3, 3)),
        random_returns=np.array([-1200.0, -1200.0, -1000.0]),
    )
    np.testing.assert_allclose(res.retention(), [0.1, 1.0, 1.0])
    np.testing.assert_allclose(res.forgetting_ratio(), [5.5, 1.0, 1.0])
    back = ContinualResult.from_dict(res.to_dict())
    np.testing.assert_array_equal(back.returns, res.returns)
    assert res.to_dict()["returns"][1][0] is None


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        HyperCRLConfig(method="ewc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="random_steps < steps_per_task"):
        HyperCRLConfig(steps_per_task=10, random_steps=10)
    with pytest.raises(ValueError, match="has 3 tasks"):
        HyperCRLAgent(HyperCRLConfig(num_tasks=5))
    with pytest.raises(ValueError, match="unknown task family"):
        HyperCRLAgent(HyperCRLConfig(family="cartpole"))
