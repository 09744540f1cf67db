"""scripts/compare_runs.py: per-group finals, mean ± SE, last-k means and ratios from real run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mbrl.logging import Logger

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"


def _run(run_dir: Path, returns: list[float]) -> Path:
    with Logger(run_dir, console=False, tensorboard=False) as logger:
        for i, value in enumerate(returns):
            logger.log({"train/loss": 1.0}, 500 * (2 * i + 1))  # rows without the metric are skipped
            logger.log({"eval/return_mean": value}, 1000 * (i + 1))
    return run_dir


def test_compare_runs_table_json_and_png(tmp_path: Path) -> None:
    a = [_run(tmp_path / f"a{i}", r) for i, r in enumerate([[1, 2, 10], [1, 2, 20]])]
    b = [_run(tmp_path / f"b{i}", r) for i, r in enumerate([[1, 30, 30], [2, 40, 50], [3, 50, 70]])]
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--group", "a", *map(str, a), "--group", "b", *map(str, b),
           "--last-k", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "compare.json").read_text())["groups"]
    assert result["a"]["final"] == [10, 20] and result["a"]["mean"] == pytest.approx(15)
    assert result["a"]["se"] == pytest.approx(5)  # std(ddof=1) / sqrt(2)
    assert result["a"]["last2"] == [6, 11]
    assert result["b"]["mean"] == pytest.approx(50) and result["b"]["last2_mean"] == pytest.approx(45)
    table = (out / "compare.md").read_text()
    assert "| b (n=3) | 30.0, 50.0, 70.0 | 50.0 ± 11.5 |" in table and "3.33× / 5.29×" in table
    assert (out / "compare.png").stat().st_size > 0


def test_compare_runs_names_a_run_without_the_metric(tmp_path: Path) -> None:
    good = _run(tmp_path / "good", [1.0])
    empty = tmp_path / "empty"
    with Logger(empty, console=False, tensorboard=False) as logger:
        logger.log({"train/loss": 1.0}, 1)
    cmd = [sys.executable, str(SCRIPT), "--group", "x", str(good), str(empty), "--out", str(tmp_path / "o")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "eval/return_mean" in done.stderr and "empty" in done.stderr
    missing = subprocess.run([sys.executable, str(SCRIPT), "--group", "x", str(tmp_path / "nope")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and "no progress.csv" in missing.stderr
