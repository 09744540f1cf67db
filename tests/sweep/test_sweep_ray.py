"""End to end on a local Ray instance: a 2x2 sweep of real `mbrl train bc` runs (grid updates [20, 40] x seeds
[0, 1]) on a tiny InvertedPendulum dataset; `report` gives 2 rows of n = 2; a re-run with resume starts
nothing; a failing trial is retried, reported and does not stop the other one; ASHA stops the worse of two tiny
Dyna runs early, and the sweep, its summary, `report` and a re-run treat it as stopped.

One Ray instance and one sweep run are shared by the module (Ray starts in seconds, each run takes a few)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mbrl.data import OfflineDataset, save_npz
from mbrl.envs import make_env
from mbrl.logging import read_csv
from mbrl.sweep.files import read_done, read_stopped
from mbrl.sweep.report import write_report
from mbrl.sweep.runner import SweepSummary, run_sweep
from mbrl.sweep.spec import SweepSpec, parse_spec

ray = pytest.importorskip("ray")
# one local Ray instance at a time under pytest-xdist: every test that starts Ray runs on the same worker
pytestmark = pytest.mark.xdist_group("ray")

ENV = "InvertedPendulum-v5"


def _random_dataset(path: Path, steps: int = 300) -> None:
    env = make_env(ENV)
    rng = np.random.default_rng(0)
    rows: dict[str, list[Any]] = {k: [] for k in ("o", "a", "r", "n", "te", "tr")}
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        action = rng.uniform(-3, 3, 1).astype(np.float32)
        nxt, reward, terminated, truncated, _ = env.step(action)
        for k, v in zip(rows, (obs, action, reward, nxt, terminated, truncated)):
            rows[k].append(v)
        obs = env.reset()[0] if (terminated or truncated) else nxt
    save_npz(
        OfflineDataset(*(np.asarray(rows[k]) for k in rows), env_id=ENV, metadata={}, source="random"), path
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "ip_random.npz"
    _random_dataset(path)
    return str(path)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def _spec(dataset: str, **over: Any) -> SweepSpec:
    data: dict[str, Any] = {
        "name": "bc-tiny",
        "agents": ["bc"],
        "datasets": [dataset],
        "seeds": [0, 1],
        "args": {"preset": "quick", "eval-every": 10, "eval-episodes": 1},
        "grid": {"updates": [20, 40]},
    }
    data.update(over)
    return parse_spec(data)


@pytest.fixture(scope="module")
def sweep(
    ray_instance: None, dataset: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SweepSpec, SweepSummary, Path, str]:
    spec = _spec(dataset)
    directory = tmp_path_factory.mktemp("sweeps") / "bc"
    out = io.StringIO()
    summary = run_sweep(spec, directory, max_concurrent=2, max_retries=0, poll_s=0.2, out=out)
    return spec, summary, directory, out.getvalue()


def test_sweep_runs_every_trial_as_a_run_dir(sweep: tuple[SweepSpec, SweepSummary, Path, str]) -> None:
    spec, summary, directory, out = sweep
    ids = [t.id for t in spec.trials()]
    assert len(ids) == 4
    assert sorted(summary.finished) == sorted(ids) and summary.failed == () and summary.ok
    assert out.count("[sweep] start") == 4 and out.count("[sweep] done") == 4
    stored = json.loads((directory / "sweep.json").read_text())
    assert [t["id"] for t in stored["trials"]] == ids
    for trial in spec.trials():
        run = trial.run_dir(directory)
        columns = read_csv(run)
        updates = dict(trial.grid_point)["updates"]
        assert int(columns["step"].max()) == updates  # the grid value reached `mbrl train`
        assert json.loads((run / "config.json").read_text())["loop"]["seed"] == trial.seed
        done = read_done(directory, trial.id)
        assert done is not None and done["threads"] == 1 and not done["resumed"]
        assert done["final"]["eval/return_mean"] == columns["eval/return_mean"][-1]
        # Tune received every CSV row as it was reported, then the final metrics.
        (tune_trial,) = (directory / "ray").glob(f"tune-*/{trial.id}")
        results = [json.loads(line) for line in (tune_trial / "result.json").read_text().splitlines()]
        streamed = [r["eval/return_mean"] for r in results if "final" not in r]
        np.testing.assert_array_equal(streamed, columns["eval/return_mean"])
        assert results[-1]["final"] == 1.0
        assert "stderr.log" in {p.name for p in run.iterdir()}


def test_report_gives_two_rows_of_two_seeds(sweep: tuple[SweepSpec, SweepSummary, Path, str]) -> None:
    spec, _, directory, _ = sweep
    result = write_report(directory)
    rows = result["rows"]
    assert [(r.grid, r.stats.n, r.failed, r.metric) for r in rows] == [
        ("updates=20", 2, 0, "eval/return_mean"),
        ("updates=40", 2, 0, "eval/return_mean"),
    ]
    for row in rows:
        finals = [
            read_done(directory, t.id)["final"]["eval/return_mean"]  # type: ignore[index]
            for t in spec.trials()
            if t.grid_label == row.grid
        ]
        assert row.stats.mean == pytest.approx(np.mean(finals))
        assert row.stats.se == pytest.approx(np.std(finals, ddof=1) / np.sqrt(2))
    assert len(result["table"].splitlines()) == 4
    assert (directory / "report.md").is_file() and (directory / "curves_ip_random.png").stat().st_size > 1000


def test_rerun_with_resume_starts_nothing(sweep: tuple[SweepSpec, SweepSummary, Path, str]) -> None:
    spec, _, directory, _ = sweep
    marks = {t.id: (directory / "trials" / t.id / "DONE").stat().st_mtime_ns for t in spec.trials()}
    experiments = sorted(p.name for p in (directory / "ray").iterdir())
    out = io.StringIO()
    summary = run_sweep(spec, directory, resume=True, poll_s=0.2, out=out)
    assert sorted(summary.skipped) == sorted(marks) and summary.finished == () and summary.ok
    assert {t: (directory / "trials" / t / "DONE").stat().st_mtime_ns for t in marks} == marks
    assert sorted(p.name for p in (directory / "ray").iterdir()) == experiments  # no Tune run was started
    assert "4 already finished, 0 to run" in out.getvalue()


def test_failing_trial_is_retried_and_reported_without_stopping_the_other(
    ray_instance: None, dataset: str, tmp_path: Path
) -> None:
    spec = _spec(
        dataset,
        seeds=[0],
        args={"updates": 20, "eval-every": 10, "eval-episodes": 1},
        grid={"preset": ["quick", "bogus"]},
    )
    good, bad = (t.id for t in spec.trials())
    out = io.StringIO()
    summary = run_sweep(spec, tmp_path / "sw", max_concurrent=2, max_retries=1, poll_s=0.2, out=out)
    assert summary.finished == (good,) and summary.failed == (bad,) and not summary.ok
    assert "invalid choice 'bogus'" in summary.failure_logs[bad]
    log = (tmp_path / "sw" / "trials" / bad / "stderr.log").read_text()
    assert log.count("=== mbrl sweep attempt") == 2  # one retry
    assert read_done(tmp_path / "sw", bad) is None and read_done(tmp_path / "sw", good) is not None
    text = out.getvalue()
    assert f"retry  {bad}" in text and f"FAILED {bad} after 2 attempts" in text and f"done   {good}" in text
    saved = json.loads((tmp_path / "sw" / "summary.json").read_text())
    assert saved["failed"] == [bad] and saved["finished"] == [good]


def _running(run_dir: Path) -> list[int]:
    """Pids of live processes whose command line names ``run_dir``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(run_dir).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_asha_stops_the_worse_trial_early_and_the_sweep_and_report_say_so(
    ray_instance: None, tmp_path: Path
) -> None:
    """Two Dyna trials of 300 env steps, one after the other. Before SAC starts (~500 steps) a run acts at random
    and its deterministic policy is untrained, so each seed's evaluation return is the same at every step (11.4
    for seed 0, 6 for seed 1). ASHA's first rung is step 100: seed 0 records 11.4 there, then seed 1's 6 is below
    that and ASHA stops it."""
    spec = parse_spec(
        {
            "name": "asha-tiny",
            "agents": ["dyna"],
            "envs": [ENV],
            "seeds": [0, 1],
            "args": {"total-steps": 300, "eval-every": 100, "checkpoint-every": 100},
            "metric": "eval/return_mean",
            "scheduler": {
                "type": "asha",
                "mode": "max",
                "grace_period": 100,
                "max_t": 300,
                "reduction_factor": 2,
            },
        }
    )
    first, second = (t.id for t in spec.trials())
    directory = tmp_path / "asha"
    out = io.StringIO()
    summary = run_sweep(spec, directory, max_concurrent=1, max_retries=0, poll_s=0.2, out=out)
    text = out.getvalue()
    assert summary.finished == (first,) and summary.stopped == (second,) and summary.ok, text
    done, marker = read_done(directory, first), read_stopped(directory, second)
    assert done is not None and marker is not None and read_done(directory, second) is None
    assert marker["step"] == 100 and marker["value"] < done["final"]["eval/return_mean"]
    assert f"stopped {second} early at step 100: eval/return_mean=" in text
    assert "1 finished, 1 stopped early, 0 failed" in text and "warning" not in text
    assert not _running(directory / "trials" / second)  # its run was ended (or had ended)
    assert (directory / "trials" / second / "stderr.log").is_file()
    assert json.loads((directory / "summary.json").read_text())["stopped"] == [second]
    # `mbrl report`: the stopped seed is counted as stopped, neither failed nor aggregated.
    result = write_report(directory)
    (row,) = result["rows"]
    assert (row.seeds, row.failed, row.stopped) == ((0,), 0, 1)
    assert result["table"].splitlines()[0].endswith("| n | failed | stopped |")
    # A re-run skips the stopped trial rather than resuming it.
    out = io.StringIO()
    again = run_sweep(spec, directory, poll_s=0.2, out=out)
    assert again.skipped == (first, second) and again.finished == again.stopped == ()
    assert "1 already finished, 1 stopped early, 0 to run" in out.getvalue()
