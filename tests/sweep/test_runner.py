"""Runner pieces that need no Ray: the missing-Ray error, concurrency, CSV tailing, final metrics, sweep-dir
checks, argv/env of a trial, log tails, ending a stopped trial's run, STOPPED markers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbrl.cli import main as cli_main
from mbrl.run import write_json_atomic
from mbrl.sweep.files import check_sweep_dir, mark_stopped, read_stopped, tail_lines, write_sweep_json
from mbrl.sweep.runner import plan_concurrency
from mbrl.sweep.spec import AshaSpec, parse_spec
from mbrl.sweep.trial import (
    THREAD_VARS,
    CsvTail,
    final_metrics,
    pid_path,
    run_process,
    settle_stopped_trial,
    trial_argv,
    trial_env,
)

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
    (idm,) = parse_spec({"name": "b", "agents": ["idm-label"], "datasets": ["d.npz"], "seeds": [0]}).trials()
    assert "--threads" not in trial_argv(idm, tmp_path, threads=3, resume=False)  # idm-label has no --threads
    (own,) = parse_spec(
        {"name": "a", "agents": ["sac"], "envs": ["Pendulum-v1"], "seeds": [0], "args": {"threads": 2}}
    ).trials()
    assert trial_argv(own, tmp_path, threads=3, resume=False).count("--threads") == 1
    (spelled,) = parse_spec(
        {"name": "a", "agents": ["sac"], "envs": ["Pendulum-v1"], "seeds": [0], "args": {"num-threads": 2}}
    ).trials()
    assert "--threads" not in trial_argv(spelled, tmp_path, threads=3, resume=False)
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


_CHILD = """
import os, signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(60)
"""


@pytest.mark.parametrize(
    ("kind", "how"), [("polite", "SIGTERM"), ("stubborn", "SIGKILL (0.5 s after SIGTERM)")]
)
def test_a_stopped_trial_ends_its_run_with_sigterm_then_sigkill(tmp_path: Path, kind: str, how: str) -> None:
    pid_file = tmp_path / "pid"

    def on_poll() -> None:  # Tune stopping the trial: its next report raises SystemExit
        if pid_file.is_file() and pid_file.read_text():
            raise SystemExit(0)

    start = time.monotonic()
    with (
        (tmp_path / "out.log").open("a") as out,
        (tmp_path / "err.log").open("a") as err,
        pytest.raises(SystemExit),
    ):
        run_process(
            [sys.executable, "-c", _CHILD, kind, str(pid_file)],
            cwd=tmp_path,
            env=os.environ,
            stdout=out,
            stderr=err,
            on_poll=on_poll,
            poll_s=0.05,
            terminate_timeout_s=0.5,
        )
    assert time.monotonic() - start < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # gone (and reaped)
    assert f"its run was ended with {how}" in (tmp_path / "err.log").read_text()


def test_run_process_returns_the_exit_status_after_a_last_poll(tmp_path: Path) -> None:
    polls: list[int] = []
    with (tmp_path / "out.log").open("a") as out:
        code = run_process(
            [sys.executable, "-c", "raise SystemExit(3)"],
            cwd=tmp_path,
            env=os.environ,
            stdout=out,
            stderr=out,
            on_poll=lambda: polls.append(1),
            poll_s=0.05,
        )
    assert code == 3 and polls  # polled once more after the exit (rows written just before it)


def test_stopped_marker_is_written_unless_the_trial_finished(tmp_path: Path) -> None:
    asha = AshaSpec("eval/return_mean", "max", 100, 300)
    row = {"step": 100.0, "eval/return_mean": 6.0, "train/loss": 0.1}
    assert read_stopped(tmp_path, "a") is None
    assert mark_stopped(tmp_path, "a", asha, row) == tmp_path / "trials" / "a" / "STOPPED"
    marker = read_stopped(tmp_path, "a")
    assert marker is not None
    assert {k: marker[k] for k in ("metric", "mode", "value", "step", "time_attr", "time")} == {
        "metric": "eval/return_mean",
        "mode": "max",
        "value": 6.0,
        "step": 100.0,
        "time_attr": "step",
        "time": 100.0,
    }
    (tmp_path / "trials" / "b").mkdir(parents=True)
    write_json_atomic(tmp_path / "trials" / "b" / "DONE", {"final": {}})
    assert mark_stopped(tmp_path, "b", asha, row) is None and read_stopped(tmp_path, "b") is None


def test_settle_ends_a_stopped_run_its_trainable_left_behind(tmp_path: Path) -> None:
    """Tune ended the trainable's actor before the trainable ended the run: the driver ends it (it runs here)."""
    run_dir = tmp_path / "trials" / "t"
    run_dir.mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    for name in ("t.stdout.log", "t.stderr.log"):
        (tmp_path / "logs" / name).write_text("=== mbrl sweep attempt\n")
    script = "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(flush=True)\ntime.sleep(60)"
    orphan = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE)
    assert orphan.stdout is not None and orphan.stdout.readline()  # SIGTERM is ignored from here on
    write_json_atomic(pid_path(tmp_path, "t"), {"pid": orphan.pid, "host": socket.gethostname()})
    settle_stopped_trial(tmp_path, "t", grace_s=0.1, terminate_timeout_s=0.3)
    assert orphan.wait(timeout=10) == -signal.SIGKILL
    assert not pid_path(tmp_path, "t").exists()
    assert "the driver ended its run with SIGKILL" in (run_dir / "stderr.log").read_text()
    assert (run_dir / "stdout.log").is_file()
