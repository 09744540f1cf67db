"""scripts/offline_benchmark.py --quick with the MOREC filter: filtered MOPO runs beside the plain ones, on the same
tiny generated dataset, and a missing dynamics reward is named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import mbrl
from mbrl.data import load_dataset
from mbrl.envs.datasets import minari_root
from mbrl.logging import read_csv

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "offline_benchmark.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_quick_benchmark_with_and_without_the_filter(tmp_path: Path) -> None:
    out, archive = tmp_path / "bench", tmp_path / "archive"
    proc = _run("--quick", "--algos", "mopo", "--splits", "medium", "--filters", "none", "morec", "--out", str(out),
                "--archive", str(archive))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "offline_benchmark.json").read_text())["results"]
    by_algo = {r["algo"]: r for r in results}
    assert set(by_algo) == {"mopo", "mopo+morec"}
    # The whole run's fraction of rollouts the filter stopped: the run's last logged value, and not zero.
    run_log = read_csv(out / "runs" / "Hopper-v5-medium" / "mopo+morec-s0" / "progress.csv")
    logged = run_log["rollout/morec_stopped_fraction"]
    assert by_algo["mopo+morec"]["rollout_stopped_fraction"] == logged[np.isfinite(logged)][-1] > 0
    assert "rollout_stopped_fraction" not in by_algo["mopo"]
    assert (out / "runs" / "Hopper-v5-medium" / "mopo+morec-s0" / "result.json").is_file()
    # each run directory is a run directory: mbrl.load gives its agent at the last checkpoint
    with minari_root(out / "minari"):
        loaded = mbrl.load(out / "runs" / "Hopper-v5-medium" / "mopo+morec-s0")
    assert (loaded.algo, loaded.agent.num_updates) == ("mopo", 200)
    assert loaded.agent.config.filter == "morec"
    table = (out / "offline_benchmark.md").read_text()
    assert "| MOPO | MOPO+MOREC |" in table
    # offline_report.py: one row per arm with the per-seed finals of the runs, and a curve per dataset
    report = subprocess.run([sys.executable, str(SCRIPT.with_name("offline_report.py")), str(out), "--out",
                             str(tmp_path / "rep" / "abl")], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    rows = {r["arm"]: r for r in json.loads((tmp_path / "rep" / "abl.json").read_text())["rows"]}
    assert set(rows) == {"mopo @200", "mopo+morec @200"}
    assert rows["mopo @200"]["final"] == [by_algo["mopo"]["final_score"]]
    assert rows["mopo @200"]["last3"] == [np.mean(by_algo["mopo"]["scores"][-3:])]
    assert (tmp_path / "rep" / "abl_quick_hopper_medium-v0.png").stat().st_size > 10_000
    # every result names the data it was trained on
    with minari_root(out / "minari"):
        fingerprint = load_dataset("quick/hopper/medium-v0").fingerprint()
    assert {r["dataset_fingerprint"] for r in results} == {fingerprint}
    assert rows["mopo @200"]["data"] == [fingerprint]
    # --archive: result + config of each finished run, no checkpoints; the report reads the archive like the
    # output dir (its mean-Q curve from the result), and refuses nothing it should not
    archived = archive / "runs" / "Hopper-v5-medium" / "mopo+morec-s0"
    assert sorted(p.name for p in archived.iterdir()) == ["config.json", "result.json"]
    assert json.loads((archived / "result.json").read_text()) == by_algo["mopo+morec"]
    assert by_algo["mopo"]["q_mean"] and len(by_algo["mopo"]["q_steps"]) == len(by_algo["mopo"]["q_mean"])
    from_archive = subprocess.run([sys.executable, str(SCRIPT.with_name("offline_report.py")), str(archive), "--out",
                                   str(tmp_path / "rep2" / "abl")], capture_output=True, text=True, timeout=120)
    assert from_archive.returncode == 0, from_archive.stderr[-2000:]
    assert json.loads((tmp_path / "rep2" / "abl.json").read_text())["rows"] == json.loads(
        (tmp_path / "rep" / "abl.json").read_text())["rows"]
    # a different result already archived for the same run is not overwritten
    (archived / "result.json").write_text(json.dumps({**by_algo["mopo+morec"], "final_score": -1.0}))
    again = _run("--quick", "--algos", "mopo", "--splits", "medium", "--filters", "morec", "--out", str(out),
                 "--archive", str(archive))
    assert again.returncode != 0 and "holds a different result" in again.stderr
    assert json.loads((archived / "result.json").read_text())["final_score"] == -1.0


def test_report_warns_when_runs_of_one_dataset_saw_different_data() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("offline_report", SCRIPT.with_name("offline_report.py"))
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    row = {"dataset": "d", "arm": "bc @50k", "n": 1, "updates": 50000, "final": [1.0], "mean": 1.0,
           "se": float("nan"), "best": [1.0], "last3": [1.0], "final_q": [float("nan")]}
    same = [{**row, "data": ["aaaaaaaaaaaaaaaa"]}, {**row, "arm": "ravl @50k", "data": ["aaaaaaaaaaaaaaaa", "?"]}]
    assert report.mixed_data(same) == [] and "Warning" not in report.table(same)
    mixed = [*same, {**row, "arm": "mopo @50k", "data": ["bbbbbbbbbbbbbbbb"]}]
    assert report.mixed_data(mixed) == ["d"]
    assert "Warning**: runs on different data" in report.table(mixed)


def test_filter_without_a_dynamics_reward_file_is_named(tmp_path: Path) -> None:
    proc = _run("--quick", "--algos", "mopo", "--splits", "medium", "--filters", "morec",
                "--dynamics-reward-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bench"))
    assert proc.returncode != 0
    assert "no dynamics reward at" in proc.stderr and "dynamics_reward.pt" in proc.stderr


def test_an_interrupted_run_continues_from_its_last_checkpoint(tmp_path: Path) -> None:
    """A run that stopped after its checkpoint at update 100 (no result.json, no later checkpoint) is continued
    from there when the script is run again, and ends where the uninterrupted run ended."""
    out = tmp_path / "bench"
    args = ("--quick", "--algos", "mopo", "--splits", "medium", "--out", str(out))
    assert (first := _run(*args)).returncode == 0, first.stderr[-2000:]
    run = out / "runs" / "Hopper-v5-medium" / "mopo-s0"
    uninterrupted = json.loads((run / "result.json").read_text())
    (run / "result.json").unlink()
    (run / "checkpoints" / "ckpt_000000200.pt").unlink()
    second = _run(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "continuing from update 100" in second.stdout
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["final_score"] == uninterrupted["final_score"]
    assert resumed["scores"] == uninterrupted["scores"]
    steps = read_csv(run / "progress.csv")["step"]
    assert len(steps) == len(np.unique(steps))


def _script_module():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("offline_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_set_reaches_sub_configs_and_the_config_checks_the_whole() -> None:
    import pytest

    from mbrl.agents.ravl import ravl_preset

    bench = _script_module()
    base = ravl_preset("mbrl/hopper/medium-v0", "paper")  # RAVL as released: no penalty, k = 5
    settings = bench.parse_settings(["penalty=uncertainty", "ensemble.full_info=true", "penalty_coef=5",
                                     "rollout_length=20", "sac.bc_weight=2.5"])
    config = bench.with_settings(base, settings)
    assert (config.penalty, config.penalty_coef, config.rollout_length) == ("uncertainty", 5, 20)
    assert config.ensemble.full_info and not base.ensemble.full_info
    assert (config.sac.bc_weight, config.sac.num_critics) == (2.5, base.sac.num_critics)
    # the penalty without every member's sigma is refused with the config's own message, not a traceback
    with pytest.raises(SystemExit, match="full_info"):
        bench.with_settings(base, {"penalty": "uncertainty"})
    # offline_config: the preset, the loop, then the settings; the cpu preset's penalty needs every sigma
    cpu = bench.offline_config("ravl", "mbrl/hopper/medium-v0", "cpu", {"seed": 3}, settings={"loop_log_every": 7})
    assert (cpu.loop.seed, cpu.loop.log_every, cpu.penalty, cpu.ensemble.full_info) == (3, 7, "uncertainty", True)
    with pytest.raises(SystemExit, match="full_info"):
        bench.offline_config("ravl", "mbrl/hopper/medium-v0", "cpu", settings={"ensemble.full_info": False})
    with pytest.raises(SystemExit, match="'critic' is not a sub-config of RAVLConfig"):
        bench.with_settings(base, {"critic.hidden": 64})
    with pytest.raises(SystemExit, match="no_such_field"):
        bench.with_settings(base, {"sac.no_such_field": 1})
