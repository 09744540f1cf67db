"""Report maths on hand-written run directories: final values, mean, standard error, IQM, bootstrap CIs (per group
and stratified across tasks), failed seeds, curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from mbrl.cli import main as cli_main
from mbrl.run import write_json_atomic
from mbrl.sweep.files import write_sweep_json
from mbrl.sweep.report import (
    BootstrapSettings,
    Interval,
    ReportRow,
    across_tasks,
    across_tasks_table,
    aggregate,
    aggregate_tasks,
    build_report,
    markdown_table,
    mean_curve,
    pooled_iqm,
    write_report,
)
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
    assert not one.mean_ci.defined and not one.iqm_ci.defined and math.isnan(one.iqm_ci.low)
    none = aggregate([])
    assert none.n == 0 and math.isnan(none.mean)
    with pytest.raises(ValueError, match="non-finite"):
        aggregate([1.0, float("nan")])


FAST = BootstrapSettings(reps=2000)


def _width(ci: Interval) -> float:
    return ci.high - ci.low


def test_bootstrap_ci_hand_computed() -> None:
    # Two seeds [a, b]: a resample's mean is a (p 1/4), (a + b) / 2 (p 1/2) or b (p 1/4), so the 2.5 and 97.5
    # percentiles are a and b. Three seeds [10, 20, 60]: all-10 and all-60 resamples each have p 1/27 > 2.5 %.
    assert aggregate([40.0, 50.0], FAST).mean_ci == Interval(40.0, 50.0)
    s = aggregate([10.0, 20.0, 60.0], FAST)
    assert s.mean_ci == Interval(10.0, 60.0) and s.iqm_ci == Interval(10.0, 60.0)
    # Identical values: every resample is the same, a zero-width CI at the value.
    for stats in (aggregate([7.5] * 4, FAST), aggregate([0.1] * 3, FAST)):
        for ci, estimate in ((stats.mean_ci, stats.mean), (stats.iqm_ci, stats.iqm)):
            assert ci.low == pytest.approx(estimate) and _width(ci) == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_ci_contains_estimate_and_narrows_with_seeds() -> None:
    # The same empirical distribution from 3 and from 30 seeds: the CIs shrink about as 1 / sqrt(n).
    few, many = aggregate([40.0, 50.0, 60.0], FAST), aggregate([40.0, 50.0, 60.0] * 10, FAST)
    assert (
        _width(few.mean_ci) > 2 * _width(many.mean_ci) > 0
        and _width(few.iqm_ci) > 2 * _width(many.iqm_ci) > 0
    )
    draws = np.random.default_rng(1).normal(50.0, 10.0, size=30)
    for s in (few, many, aggregate(draws, FAST), aggregate(draws[:4], FAST)):
        assert s.mean_ci.low < s.mean < s.mean_ci.high and s.iqm_ci.low < s.iqm < s.iqm_ci.high
    # Reproducible from the seed; another seed moves the bounds a little; a lower confidence narrows it.
    reference = aggregate(draws, FAST).mean_ci
    assert aggregate(draws, FAST).mean_ci == reference
    other = aggregate(draws, BootstrapSettings(reps=2000, seed=1)).mean_ci
    assert other != reference and other.low == pytest.approx(reference.low, abs=1.0)
    narrow = aggregate(draws, BootstrapSettings(confidence=0.5, reps=2000)).mean_ci
    assert reference.low < narrow.low < narrow.high < reference.high
    with pytest.raises(ValueError, match="confidence"):
        BootstrapSettings(confidence=95.0)


def test_aggregate_tasks_resamples_within_tasks() -> None:
    # Task a: 2 seeds at 0; task b: 4 seeds at 10. Mean of task means 5 (the pooled mean would be 6.67); IQM of
    # the 6 pooled runs drops one at each end of [0, 0, 10, 10, 10, 10]: mean(0, 10, 10, 10) = 7.5.
    tasks = [[0.0, 0.0], [10.0] * 4]
    agg = aggregate_tasks(tasks, FAST)
    assert (agg.mean, agg.iqm, agg.tasks, agg.n) == (5.0, 7.5, 2, 6)
    # Resampled within each task, every resample keeps 2 zeros and 4 tens: zero-width CIs.
    assert agg.mean_ci == Interval(5.0, 5.0) and agg.iqm_ci == Interval(7.5, 7.5)
    # A bootstrap over the pooled runs (not stratified) mixes the tasks and gives a wide interval.
    from scipy.stats import bootstrap

    pooled = bootstrap(
        (np.concatenate(tasks),), pooled_iqm, n_resamples=2000, method="percentile", random_state=0
    ).confidence_interval
    assert pooled.high - pooled.low >= 5.0
    # A task without a value: no aggregate; a task with one seed: estimates but no CI.
    missing = aggregate_tasks([[1.0, 2.0], []], FAST)
    assert math.isnan(missing.mean) and not missing.iqm_ci.defined and (missing.tasks, missing.n) == (1, 2)
    single = aggregate_tasks([[1.0, 3.0], [5.0]], FAST)
    assert (single.mean, single.iqm) == (3.5, 3.0) and not single.mean_ci.defined


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
    assert lines[0] == (
        "| agent | dataset | grid | metric | mean ± SE | mean 95 % CI | IQM | IQM 95 % CI | n | failed |"
    )
    assert lines[2] == (
        "| bc | data/pend.npz | updates=10 | eval/return_mean | 30 ± 15.28 | [10, 60] | 30 | [10, 60] | 3 | 0 |"
    )
    assert lines[3] == (
        "| bc | data/pend.npz | updates=20 | eval/normalized_score | 45 ± 5 | [40, 50] | 45 | [40, 50] | 2 | 1 |"
    )
    out = tmp_path / "out"
    result = write_report(sweep_dir, out=out)
    names = sorted(p.name for p in result["files"])
    assert names == ["curves_pend.png", "report.csv", "report.md"]
    assert table in (out / "report.md").read_text()
    with (out / "report.csv").open() as f:
        records = list(csv.DictReader(f))
    assert [float(r["mean"]) for r in records] == [30.0, 45.0]
    assert records[0]["values"] == "10.0;20.0;60.0" and records[1]["failed"] == "1"
    for record, row in zip(records, result["rows"], strict=True):
        assert Interval(float(record["mean_ci_low"]), float(record["mean_ci_high"])) == row.stats.mean_ci
        assert Interval(float(record["iqm_ci_low"]), float(record["iqm_ci_high"])) == row.stats.iqm_ci
    assert "## Across tasks" not in (out / "report.md").read_text()  # one dataset
    from matplotlib.image import imread

    image = imread(out / "curves_pend.png")
    assert image.shape[0] > 100 and image.shape[1] > 100 and image[..., :3].std() > 0.01


def test_report_command_prints_the_table(sweep_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", str(sweep_dir), "--metric", "eval/return_mean"]) == 0
    printed = capsys.readouterr().out
    assert (
        "| bc | data/pend.npz | updates=20 | eval/return_mean | 2 ± 0 | [2, 2] | 2 | [2, 2] | 2 | 1 |"
        in printed
    )
    assert (sweep_dir / "report.md").is_file()
    assert cli_main(["report", str(sweep_dir / "nothing")]) == 2
    assert cli_main(["report", str(sweep_dir), "--confidence", "1.5"]) == 2


@pytest.fixture
def two_dataset_sweep(tmp_path: Path) -> Path:
    """bc and mopo on datasets a and b, seeds 0-2, final eval/normalized_score by hand; bc's seed 2 on b failed."""
    spec = parse_spec(
        {"name": "two", "agents": ["bc", "mopo"], "datasets": ["data/a.npz", "data/b.npz"], "seeds": 3}
    )
    trials = spec.trials()
    directory = tmp_path / "two"
    write_sweep_json(directory, spec, trials)
    finals = {"bc": {"data/a.npz": [10.0, 20.0, 30.0], "data/b.npz": [50.0, 70.0, 0.0]}}
    finals["mopo"] = {"data/a.npz": [40.0, 40.0, 40.0], "data/b.npz": [80.0, 80.0, 80.0]}
    for t in trials:
        score = finals[t.agent][t.target][t.seed]
        row = {"step": 10, "eval/return_mean": 1000.0 * score, "eval/normalized_score": score}
        _write_run(t.run_dir(directory), [row], done=(t.agent, t.target, t.seed) != ("bc", "data/b.npz", 2))
    return directory


def test_across_tasks_table_and_csv(two_dataset_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = write_report(two_dataset_sweep, out=out, bootstrap=FAST)
    bc, mopo = result["across_tasks"]
    # bc: task means 20 and 60 -> 40; pooled [10, 20, 30, 50, 70] drops one at each end -> mean(20, 30, 50).
    assert (bc.agent, bc.stats.mean, bc.stats.iqm, bc.stats.tasks, bc.stats.n) == (
        "bc",
        40.0,
        pytest.approx(100 / 3),
        2,
        5,
    )
    assert bc.stats.mean_ci.low < bc.stats.mean < bc.stats.mean_ci.high
    # mopo: constant within each task -> stratified resamples never change: zero-width CIs.
    assert (mopo.stats.mean, mopo.stats.iqm) == (60.0, 60.0)
    assert mopo.stats.mean_ci == Interval(60.0, 60.0) and mopo.stats.iqm_ci == Interval(60.0, 60.0)
    text = (out / "report.md").read_text()
    assert "## Across tasks" in text and "over the 2 datasets (data/a.npz, data/b.npz)" in text
    assert "| mopo | eval/normalized_score | 60 | [60, 60] | 60 | [60, 60] | 2/2 | 6 |" in text
    assert out / "report_aggregate.csv" in result["files"]
    with (out / "report_aggregate.csv").open() as f:
        records = list(csv.DictReader(f))
    assert [(r["agent"], r["tasks"], r["n_tasks"], r["n"]) for r in records] == [
        ("bc", "2", "2", "5"),
        ("mopo", "2", "2", "6"),
    ]
    assert float(records[0]["iqm"]) == bc.stats.iqm and records[0]["targets"] == "data/a.npz;data/b.npz"
    assert Interval(float(records[0]["iqm_ci_low"]), float(records[0]["iqm_ci_high"])) == bc.stats.iqm_ci
    assert Interval(float(records[1]["mean_ci_low"]), float(records[1]["mean_ci_high"])) == mopo.stats.mean_ci


def test_across_tasks_not_shown_for_raw_returns(two_dataset_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = write_report(two_dataset_sweep, metric="eval/return_mean", out=out, bootstrap=FAST)
    assert result["across_tasks"] == [] and not (out / "report_aggregate.csv").exists()
    assert (
        "Not shown: eval/return_mean is not on a common scale across envs/datasets"
        in (out / "report.md").read_text()
    )


def test_across_tasks_per_grid_point_with_a_missing_task() -> None:
    def row(grid: str, target: str, values: tuple[float, ...]) -> ReportRow:
        # A group without values falls back to eval/return_mean: that must not hide the across-tasks table.
        metric = "eval/normalized_score" if values else "eval/return_mean"
        return ReportRow(
            "bc", target, grid, metric, aggregate(values, FAST), 0, tuple(range(len(values))), values
        )

    rows = [row("k=1", "a", (1.0, 3.0)), row("k=1", "b", (5.0, 7.0)), row("k=2", "a", (2.0, 2.0))]
    rows.append(row("k=2", "b", ()))
    k1, k2 = across_tasks(rows, FAST)
    assert (k1.grid, k1.stats.mean, k1.stats.tasks, k2.grid, k2.stats.tasks, k2.stats.n) == (
        "k=1",
        4.0,
        2,
        "k=2",
        1,
        2,
    )
    lines = across_tasks_table([k1, k2]).splitlines()
    assert lines[0] == "| agent | grid | metric | mean | mean 95 % CI | IQM | IQM 95 % CI | tasks | n |"
    assert lines[3] == "| bc | k=2 | eval/normalized_score | — | — | — | — | 1/2 | 2 |"
