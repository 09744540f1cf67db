"""Runner pieces that need no Ray: the missing-Ray error, concurrency, CSV tailing, final metrics, sweep-dir
checks, argv/env of a trial, log tails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mbrl.cli import main as cli_main
from mbrl.sweep.runner import (
    THREAD_VARS,
    CsvTail,
    check_sweep_dir,
    final_metrics,
    plan_concurrency,
    tail_lines,
    trial_argv,
    trial_env,
    write_sweep_json,
)
from mbrl.sweep.spec import parse_spec

SPEC = "name: ip\nagents: [sac]\nenvs: [InvertedPendulum-v5]\nseeds: 2\nargs: {total-steps: 100}\n"


def test_without_ray_sweep_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert cli_main(["sweep", str(spec), "--sweep-dir", str(tmp_path / "sw")]) == 2
    assert "pip install 'mbrl-toolkit[sweep]'" in capsys.readouterr().err
    assert not (tmp_path / "sw").exists()


def test_plan_concurrency() -> None:
    assert plan_concurrency(8, 2, None) == 4
    assert plan_concurrency(7, 2, None) == 3
    assert plan_concurrency(2, 4, None) == 1
    assert plan_concurrency(2, 1, 5) == 5


def test_csv_tail_follows_a_live_logger_file(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    tail = CsvTail(path)
    assert tail.poll() == []  # no file yet
    path.write_text("step,wall_time,eval/return_mean\n1,0.0,5.0\n2,0.0,6.0\n")
    assert tail.poll() == [{"step": 1.0, "eval/return_mean": 5.0}, {"step": 2.0, "eval/return_mean": 6.0}]
    assert tail.poll() == []
    with path.open("a") as f:
        f.write("3,0.0,7")  # a row being written
    assert tail.poll() == []
    with path.open("a") as f:
        f.write(".5\n")
    assert tail.poll() == [{"step": 3.0, "eval/return_mean": 7.5}]
    # The Logger rewrites the file with a wider header when a new key appears.
    path.write_text("step,wall_time,eval/return_mean,train/loss\n1,0,5.0,\n2,0,6.0,\n3,0,7.5,\n4,0,,0.25\n")
    assert tail.poll() == [{"step": 4.0, "train/loss": 0.25}]
    # A resumed run rolls back to its checkpoint at step 2 and logs again from there.
    path.write_text("step,wall_time,eval/return_mean,train/loss\n1,0,5.0,\n2,0,6.0,\n")
    assert tail.poll() == []
    with path.open("a") as f:
        f.write("3,0,8.0,\n")
    assert tail.poll() == [{"step": 3.0, "eval/return_mean": 8.0}]


def test_final_metrics_last_finite_value_per_column(tmp_path: Path) -> None:
    assert final_metrics(tmp_path) == {}
    (tmp_path / "progress.csv").write_text(
        "step,wall_time,eval/return_mean,train/loss\n10,0,1.0,0.5\n20,0,2.0,\n30,0,,0.25\n"
    )
    assert final_metrics(tmp_path) == {"step": 30.0, "eval/return_mean": 2.0, "train/loss": 0.25}


def test_check_sweep_dir(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "name": "ip",
            "agents": ["sac"],
            "envs": ["InvertedPendulum-v5"],
            "seeds": 2,
            "args": {"total-steps": 100},
        }
    )
    trials = spec.trials()
    sweep = tmp_path / "sw"
    with pytest.raises(ValueError, match=r"cannot resume: .*sweep\.json not found"):
        check_sweep_dir(sweep, trials, resume=True)
    check_sweep_dir(sweep, trials, resume=False)  # a new directory
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    with pytest.raises(ValueError, match=r"not empty and holds no sweep\.json"):
        check_sweep_dir(tmp_path / "other", trials, resume=False)
    write_sweep_json(sweep, spec, trials)
    check_sweep_dir(sweep, trials, resume=True)
    more = parse_spec(
        {
            "name": "ip",
            "agents": ["sac"],
            "envs": ["InvertedPendulum-v5"],
            "seeds": 3,
            "args": {"total-steps": 100},
        }
    ).trials()
    check_sweep_dir(sweep, more, resume=True)  # more seeds: fine
    changed = parse_spec(
        {
            "name": "ip",
            "agents": ["sac"],
            "envs": ["InvertedPendulum-v5"],
            "seeds": 2,
            "args": {"total-steps": 200},
        }
    ).trials()
    with pytest.raises(ValueError, match=r"trial sac__InvertedPendulum-v5__s0 was run with args .*100.*200"):
        check_sweep_dir(sweep, changed, resume=False)


def test_trial_argv_and_env(tmp_path: Path) -> None:
    (sac,) = parse_spec({"name": "a", "agents": ["sac"], "envs": ["Pendulum-v1"], "seeds": [7]}).trials()
    argv = trial_argv(sac, tmp_path / "r", threads=3, resume=True)
    assert argv[:5] == [sys.executable, "-m", "mbrl.cli", "train", "sac"]
    assert argv[5:] == [
        "--env",
        "Pendulum-v1",
        "--seed",
        "7",
        "--run-dir",
        str(tmp_path / "r"),
        "--threads",
        "3",
        "--resume",
    ]
    (bc,) = parse_spec({"name": "b", "agents": ["bc"], "datasets": ["d.npz"], "seeds": [0]}).trials()
    assert "--threads" not in trial_argv(bc, tmp_path, threads=3, resume=False)
    (own,) = parse_spec(
        {"name": "a", "agents": ["sac"], "envs": ["Pendulum-v1"], "seeds": [0], "args": {"threads": 2}}
    ).trials()
    assert trial_argv(own, tmp_path, threads=3, resume=False).count("--threads") == 1
    env = trial_env(3, {"MINARI_DATASETS_PATH": "/data"})
    assert [env[v] for v in THREAD_VARS] == ["3", "3", "3"] and env["MINARI_DATASETS_PATH"] == "/data"


def test_tail_lines_shows_the_last_attempt(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    assert tail_lines(log) == ""
    log.write_text(
        "=== mbrl sweep attempt 1\nold error\n=== mbrl sweep attempt 2\n"
        + "".join(f"l{i}\n" for i in range(20))
    )
    assert tail_lines(log, 3) == "l17\nl18\nl19"
    assert "old error" not in tail_lines(log, 50)
