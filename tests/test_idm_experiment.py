"""scripts/idm_experiment.py: the IDM error per return quarter ranks the held-out episodes by return and reports
each quarter's own error, and the tables show it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from mbrl.data import OfflineDataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "idm_experiment.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("idm_experiment", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["idm_experiment"] = module
    spec.loader.exec_module(module)
    return module


def _episodes(returns: list[float], length: int = 5) -> OfflineDataset:
    """One episode per return, ``length`` steps each, reward spread evenly; actions = episode index."""
    n = len(returns) * length
    rewards = np.repeat(np.asarray(returns, dtype=np.float32) / length, length)
    ends = np.zeros(n, dtype=bool)
    ends[length - 1 :: length] = True
    actions = np.repeat(np.arange(len(returns), dtype=np.float32), length)[:, None] / len(returns)
    obs = np.arange(n + 1, dtype=np.float32)[:, None].repeat(2, axis=1)  # continuous within episodes
    return OfflineDataset(obs[:-1], actions, rewards, obs[1:], np.zeros(n, dtype=bool), ends)


def test_error_per_return_quarter_follows_the_returns() -> None:
    script = _script()
    returns = [40.0, 10.0, 80.0, 20.0, 70.0, 30.0, 60.0, 50.0]  # shuffled: the helper must rank them
    held = _episodes(returns)
    rank = np.argsort(np.argsort(returns))  # 0 = lowest return
    proxy = np.asarray(held.actions).copy()
    noise = np.random.default_rng(1).normal(size=proxy.shape)
    # the two best episodes (top quarter) get labels 10x noisier than the rest
    for i, (a, b) in enumerate(held.episode_slices()):
        proxy[a:b] += noise[a:b] * (1.0 if rank[i] >= 6 else 0.1)
    quarters = script.errors_by_return_quarter(proxy, held)
    assert [q["return_mean"] for q in quarters] == [15.0, 35.0, 55.0, 75.0]
    mses = [q["mse"] for q in quarters]
    assert mses[3] > 20 * max(mses[:3])
    rows = [{"dataset": "d", "idm_heldout": {"mse": 0.1, "r2": 0.5, "r2_0": 0.5}, "idm_heldout_by_return_quarter": quarters}]
    text = script.tables(rows, {("d", "bc", "full"): [1.0, 3.0]}, {})
    assert "| d | 15.0 / " in text and "Q4 return / MSE / R²" in text
    assert "| d | bc | 2.0 ± 1.0 | - | - |" in text
