"""Report maths on hand-written run directories: final values, mean, standard error, IQM, failed seeds, curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from mbrl.cli import main as cli_main
from mbrl.run import write_json_atomic
from mbrl.sweep.report import aggregate, build_report, markdown_table, mean_curve, write_report
from mbrl.sweep.runner import write_sweep_json
from mbrl.sweep.spec import parse_spec


def test_aggregate_hand_computed() -> None:
    # [10, 20, 60]: mean 30; squared deviations 400 + 100 + 900 = 1400, var 700, SE = sqrt(700 / 3).
    # n = 3 < 4: trim_mean(x, 0.25) drops floor(0.75) = 0 values, so IQM = mean.
    s = aggregate([10.0, 20.0, 60.0])
    assert (s.mean, s.iqm, s.n) == (30.0, 30.0, 3)
    assert s.se == pytest.approx(math.sqrt(700 / 3)) and s.se == pytest.approx(15.275252)
    # [2, 4, 6, 8, 100]: mean 24; squared deviations 484 + 400 + 324 + 256 + 5776 = 7240, var 1810,
    # SE = sqrt(362); IQM drops floor(1.25) = 1 value at each end: mean(4, 6, 8) = 6.
    s = aggregate([2.0, 4.0, 6.0, 8.0, 100.0])
    assert (s.mean, s.iqm) == (24.0, 6.0)
    assert s.se == pytest.approx(math.sqrt(362))
    # n = 8: drops 2 at each end of [1, 2, 3, 4, 6, 7, 8, 100] -> mean(3, 4, 6, 7) = 5; mean 131 / 8.
    s = aggregate([1.0, 2.0, 3.0, 4.0, 100.0, 6.0, 7.0, 8.0])
    assert (s.mean, s.iqm) == (16.375, 5.0)
    assert s.se == pytest.approx(math.sqrt(8033.875 / 7 / 8))
    one = aggregate([5.0])
    assert (one.mean, one.iqm, one.n) == (5.0, 5.0, 1) and math.isnan(one.se)
    none = aggregate([])
    assert none.n == 0 and math.isnan(none.mean)
    with pytest.raises(ValueError, match="non-finite"):
        aggregate([1.0, float("nan")])


def test_mean_curve_same_steps_and_interpolated() -> None:
    a = (np.array([0, 10, 20]), np.array([0.0, 10.0, 20.0]))
    b = (np.array([0, 10, 20]), np.array([2.0, 4.0, 6.0]))
    curve = mean_curve([a, b])
    assert curve is not None
    steps, mean, se = curve
    np.testing.assert_array_equal(steps, [0, 10, 20])
    np.testing.assert_allclose(mean, [1.0, 7.0, 13.0])
    np.testing.assert_allclose(se, [1.0, 3.0, 7.0])  # two values: SE = |a - b| / 2
    # b logged only at 0 and 20 (value 0 and 20): interpolated to 10 at step 10; c covers only [10, 30] -> the
    # common range is [10, 20].
    b2 = (np.array([0, 20]), np.array([0.0, 20.0]))
    c = (np.array([10, 30]), np.array([40.0, 60.0]))
    steps, mean, _ = mean_curve([a, b2, c])  # type: ignore[misc]
    np.testing.assert_array_equal(steps, [10, 20])
    np.testing.assert_allclose(mean, [(10 + 10 + 40) / 3, (20 + 20 + 50) / 3])
    assert mean_curve([(np.array([0, 1]), np.ones(2)), (np.array([5, 6]), np.ones(2))]) is None


def _write_run(run_dir: Path, rows: list[dict[str, float]], done: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r} - {"step"})
    with (run_dir / "progress.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "wall_time", *keys], restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "wall_time": 0.0})
    if done:
        write_json_atomic(run_dir / "DONE", {"returncode": 0})


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """bc on one dataset, grid updates [10, 20], seeds 0-2, written by hand.

    updates=10: final eval/return_mean 10, 20, 60 (a train row after the last eval, an empty cell, and an
    earlier row of the same step must not change the final value). updates=20: seeds 0 and 1 finished with
    eval/normalized_score logged (so it becomes the group's default metric), seed 2 has no DONE (failed).
    """
    spec = parse_spec(
        {
            "name": "hand",
            "agents": ["bc"],
            "datasets": ["data/pend.npz"],
            "seeds": 3,
            "grid": {"updates": [10, 20]},
        }
    )
    trials = spec.trials()
    directory = tmp_path / "sw"
    write_sweep_json(directory, spec, trials)
    finals = {0: 10.0, 1: 20.0, 2: 60.0}
    for t in trials:
        run = t.run_dir(directory)
        if t.grid_label == "updates=10":
            _write_run(
                run,
                [
                    {"step": 5, "eval/return_mean": -100.0},
                    {"step": 10, "eval/return_mean": 999.0},
                    {"step": 10, "eval/return_mean": finals[t.seed]},
                    {"step": 12, "train/loss": 0.5},
                ],
                done=True,
            )
        else:
            _write_run(
                run,
                [
                    {"step": 10, "eval/return_mean": 1.0, "eval/normalized_score": 30.0 + t.seed},
                    {"step": 20, "eval/return_mean": 2.0, "eval/normalized_score": 40.0 + 10 * t.seed},
                ],
                done=t.seed != 2,
            )
    return directory


def test_build_report_groups_finals_and_failed(sweep_dir: Path) -> None:
    rows, curves = build_report(sweep_dir)
    assert [(r.agent, r.target, r.grid) for r in rows] == [
        ("bc", "data/pend.npz", "updates=10"),
        ("bc", "data/pend.npz", "updates=20"),
    ]
    first, second = rows
    assert first.metric == "eval/return_mean"
    assert first.values == (10.0, 20.0, 60.0) and first.seeds == (0, 1, 2)
    assert (first.stats.mean, first.stats.iqm, first.stats.n, first.failed) == (30.0, 30.0, 3, 0)
    assert first.stats.se == pytest.approx(15.275252)
    assert second.metric == "eval/normalized_score"
    assert second.values == (40.0, 50.0) and second.failed == 1
    assert (second.stats.mean, second.stats.se) == (45.0, 5.0)
    # The curves of updates=10 are in step order with one value per step (the last row of step 10).
    (row, series), _ = curves["data/pend.npz"]
    assert row is first
    np.testing.assert_array_equal(series[0][0], [5, 10])
    np.testing.assert_array_equal(series[0][1], [-100.0, 10.0])


def test_metric_override_and_unknown_metric(sweep_dir: Path) -> None:
    rows, _ = build_report(sweep_dir, metric="eval/return_mean")
    assert [r.stats.mean for r in rows] == [30.0, 2.0]
    rows, _ = build_report(sweep_dir, metric="train/loss")
    assert rows[0].values == (0.5, 0.5, 0.5) and rows[1].stats.n == 0
    with pytest.raises(ValueError, match=r"no finished trial logged 'eval/nope'.*eval/return_mean"):
        build_report(sweep_dir, metric="eval/nope")


def test_markdown_table_and_files(sweep_dir: Path, tmp_path: Path) -> None:
    rows, _ = build_report(sweep_dir)
    table = markdown_table(rows, "dataset")
    lines = table.splitlines()
    assert lines[0] == "| agent | dataset | grid | metric | mean ± SE | IQM | n | failed |"
    assert lines[2] == "| bc | data/pend.npz | updates=10 | eval/return_mean | 30 ± 15.28 | 30 | 3 | 0 |"
    assert lines[3] == "| bc | data/pend.npz | updates=20 | eval/normalized_score | 45 ± 5 | 45 | 2 | 1 |"
    out = tmp_path / "out"
    result = write_report(sweep_dir, out=out)
    names = sorted(p.name for p in result["files"])
    assert names == ["curves_pend.png", "report.csv", "report.md"]
    assert table in (out / "report.md").read_text()
    with (out / "report.csv").open() as f:
        records = list(csv.DictReader(f))
    assert [float(r["mean"]) for r in records] == [30.0, 45.0]
    assert records[0]["values"] == "10.0;20.0;60.0" and records[1]["failed"] == "1"
    from matplotlib.image import imread

    image = imread(out / "curves_pend.png")
    assert image.shape[0] > 100 and image.shape[1] > 100 and image[..., :3].std() > 0.01


def test_report_command_prints_the_table(sweep_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", str(sweep_dir), "--metric", "eval/return_mean"]) == 0
    printed = capsys.readouterr().out
    assert "| bc | data/pend.npz | updates=20 | eval/return_mean | 2 ± 0 | 2 | 2 | 1 |" in printed
    assert (sweep_dir / "report.md").is_file()
    assert cli_main(["report", str(sweep_dir / "nothing")]) == 2
