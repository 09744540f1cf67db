"""One trial of a sweep, plain Python (Ray runs it in a worker, tests without Ray): the ``mbrl train`` subprocess
(argv, environment, start, end, a stopped trial's settlement), its ``progress.csv`` tailed for new rows, and its
final metrics."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from mbrl.logging import CSV_NAME, STEP_COLUMN, WALL_TIME_COLUMN, read_csv
from mbrl.run import write_json_atomic
from mbrl.sweep.files import ATTEMPT_MARK, DONE_NAME, LOGS_DIR, TRIALS_DIR, utc_now
from mbrl.sweep.spec import Trial

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PASS_ENV = ("MINARI_DATASETS_PATH", "MUJOCO_GL", "D4RL_DATASET_DIR")
"""Environment variables of the driver handed to every trial (also on cluster nodes)."""
TERMINATE_TIMEOUT_S = 10.0
"""Seconds a stopped trial's run gets to exit after SIGTERM before SIGKILL."""


class TrialFailedError(RuntimeError):
    """``mbrl train`` exited non-zero (raised inside the trainable so that Tune retries the trial)."""



# ---------------------------------------------------------------------------------------------------------
# progress.csv


class CsvTail:
    """Rows appended to a growing ``progress.csv`` since the last :meth:`poll`.

    Tolerates what a live :class:`mbrl.logging.Logger` does to the file: a last row not yet complete (left for
    the next poll), a rewrite with a wider header when a new key appears, and a rewrite that drops rows when a
    resumed run rolls back to its checkpoint (rows are then counted from the shorter file).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._seen = 0
        self._signature: tuple[int, int] | None = None

    def poll(self) -> list[dict[str, float]]:
        """New complete rows as ``{"step": step, key: value}`` (empty cells and ``wall_time`` left out)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == self._signature:
            return []
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:  # replaced between stat and read
            return []
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        else:
            self._signature = signature  # a partial last line must be read again when it completes
        rows = list(csv.DictReader(io.StringIO(text)))
        if len(rows) < self._seen:
            self._seen = len(rows)
        new = rows[self._seen :]
        self._seen = len(rows)
        out = []
        for row in new:
            values: dict[str, float] = {}
            try:
                values[STEP_COLUMN] = float(int(float(row.get(STEP_COLUMN) or "")))
            except ValueError:
                continue
            for key, cell in row.items():
                if key in (STEP_COLUMN, WALL_TIME_COLUMN) or key is None or not cell:
                    continue
                try:
                    values[key] = float(cell)
                except ValueError:
                    continue
            out.append(values)
        return out


def final_metrics(run_dir: Path | str) -> dict[str, float]:
    """Last finite value of every column of a run's ``progress.csv`` (rows in step order), ``step`` = last step.

    Returns ``{}`` when the run wrote no CSV.
    """
    path = Path(run_dir) / CSV_NAME
    if not path.is_file():
        return {}
    columns = read_csv(path)
    steps = columns[STEP_COLUMN]
    if steps.size == 0:
        return {}
    order = steps.argsort(kind="stable")
    out: dict[str, float] = {STEP_COLUMN: float(steps[order][-1])}
    for key, values in columns.items():
        if key in (STEP_COLUMN, WALL_TIME_COLUMN):
            continue
        finite = [float(v) for v in values[order] if math.isfinite(v)]
        if finite:
            out[key] = finite[-1]
    return out


def headline(metrics: Mapping[str, float], metric: str | None) -> str:
    """``"eval/return_mean=123.4"``: the sweep's metric, else normalized score, else return (``""`` if none)."""
    for key in (metric, "eval/normalized_score", "eval/return_mean"):
        if key and key in metrics:
            return f"{key}={metrics[key]:.4g}"
    return ""


# ---------------------------------------------------------------------------------------------------------
# One trial (runs inside a Ray worker; plain Python, usable without Ray)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent thread dies (a killed Ray worker must
    not leave training runs behind); ``None`` elsewhere. libc is loaded here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(1, sigterm)  # PR_SET_PDEATHSIG

    return preexec


def trial_argv(trial: Trial, run_dir: Path, *, threads: int, resume: bool) -> list[str]:
    """``python -m mbrl.cli train <agent> <args> --run-dir RUN_DIR [--threads T] [--resume]``."""
    argv = [sys.executable, "-m", "mbrl.cli", "train", trial.agent, *trial.args, "--run-dir", str(run_dir)]
    if trial.threads_flag and "--threads" not in trial.args and "--num-threads" not in trial.args:
        argv += ["--threads", str(threads)]
    if resume:
        argv.append("--resume")
    return argv


def trial_env(threads: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra`` and the thread variables set to ``threads``."""
    env = dict(os.environ)
    env.update(extra or {})
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # logs and progress lines appear as they happen
    return env


def _can_resume(trial: Trial, run_dir: Path) -> bool:
    from mbrl.checkpoint import latest_checkpoint

    return trial.resumable and (run_dir / "config.json").is_file() and latest_checkpoint(run_dir) is not None


def end_process(
    proc: subprocess.Popen[Any], timeout_s: float = TERMINATE_TIMEOUT_S, log: TextIO | None = None
) -> int:
    """End a process that may still run: SIGTERM, then SIGKILL if it has not exited after ``timeout_s``.

    Args:
        proc: The process.
        timeout_s: Seconds between SIGTERM and SIGKILL.
        log: Where a line saying how it was ended goes (nothing when it had exited already).

    Returns:
        Its exit status (negative: the signal that ended it).
    """
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    how = "SIGTERM"
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        how = f"SIGKILL ({timeout_s:g} s after SIGTERM)"
    if log is not None:
        print(
            f"=== mbrl sweep {utc_now()}: the trial was stopped; its run was ended with {how}",
            file=log,
            flush=True,
        )
    return proc.returncode


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: TextIO,
    stderr: TextIO,
    on_poll: Callable[[], None],
    poll_s: float = 1.0,
    terminate_timeout_s: float = TERMINATE_TIMEOUT_S,
    pid_file: Path | None = None,
) -> int:
    """Run ``argv`` to its exit, calling ``on_poll`` every ``poll_s`` seconds while it runs and once after.

    Whatever interrupts the wait (``SystemExit`` from a report when Tune stops the trial, Ctrl-C) ends the process
    too (:func:`end_process`, noted in ``stderr``) before it propagates: no run is left behind. ``pid_file``, if
    given, holds ``{"pid", "host"}`` of the process while it runs (see :func:`settle_stopped_trial`).

    Returns:
        The exit status.
    """
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_die_with_parent(),
    )
    if pid_file is not None:
        write_json_atomic(pid_file, {"pid": proc.pid, "host": socket.gethostname()})
    try:
        while True:
            try:
                proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                on_poll()
        on_poll()
    except BaseException:
        end_process(proc, terminate_timeout_s, stderr)
        raise
    finally:
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
    return proc.returncode


def pid_path(sweep_dir: Path | str, trial_id: str) -> Path:
    """``SWEEP_DIR/logs/<id>.pid``: the host and pid of a trial's run while it runs."""
    return Path(sweep_dir) / LOGS_DIR / f"{trial_id}.pid"


def _runs_here(pid: int, run_dir: Path) -> bool:
    """Process ``pid`` of this host is alive and runs in ``run_dir`` (its command line names it; Linux only)."""
    try:
        return str(run_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _end_pid(pid: int, run_dir: Path, timeout_s: float) -> str | None:
    """SIGTERM, then SIGKILL after ``timeout_s``, to a run that is not our child (checked by :func:`_runs_here`).

    Returns:
        The last signal sent (``None``: the run was not running).
    """
    sent = None
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        if not _runs_here(pid, run_dir):
            break
        os.kill(pid, sig)
        sent = sig.name
        deadline = time.monotonic() + wait_s
        while _runs_here(pid, run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
    return sent


def settle_stopped_trial(
    sweep_dir: Path | str,
    trial_id: str,
    *,
    grace_s: float = 2.0,
    terminate_timeout_s: float = TERMINATE_TIMEOUT_S,
) -> None:
    """Driver side, after Tune returns: make sure a stopped trial's run has ended and its logs are in its run dir.

    Its trainable does both when Tune stops it, but Tune may end the trainable's actor first (then the run gets
    SIGTERM from :func:`_die_with_parent`). This waits up to ``grace_s`` for the trainable to remove the trial's
    pid file; if it is still there, a run still alive on this host is ended like :func:`end_process` does. Then
    the logs are copied into the run directory.
    """
    sweep_dir = Path(sweep_dir)
    path = pid_path(sweep_dir, trial_id)
    run_dir = sweep_dir / TRIALS_DIR / trial_id
    deadline = time.monotonic() + grace_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        owner = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        owner = None
    out_log, err_log = (
        sweep_dir / LOGS_DIR / f"{trial_id}.stdout.log",
        sweep_dir / LOGS_DIR / f"{trial_id}.stderr.log",
    )
    if isinstance(owner, dict) and owner.get("host") == socket.gethostname():
        sent = _end_pid(int(owner["pid"]), run_dir, terminate_timeout_s)
        if sent is not None:
            with err_log.open("a") as log:
                print(
                    f"=== mbrl sweep {utc_now()}: the trial was stopped; the driver ended its run with {sent}",
                    file=log,
                )
    path.unlink(missing_ok=True)
    if out_log.is_file() and err_log.is_file():
        _copy_logs(out_log, err_log, run_dir)


def _copy_logs(out_log: Path, err_log: Path, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_log, run_dir / "stdout.log")
    shutil.copyfile(err_log, run_dir / "stderr.log")


def run_trial(
    payload: Mapping[str, Any],
    report: Callable[[dict[str, float]], None] | None = None,
    *,
    poll_s: float = 1.0,
) -> dict[str, float]:
    """Run one trial to its end: launch ``mbrl train``, stream its CSV rows to ``report``, write ``DONE``.

    Args:
        payload: ``{"trial": Trial.to_json(), "sweep_dir": str, "threads": int, "cwd": str, "env": {..}}``.
        report: Called with each new CSV row (``{"step": s, key: value}``) while the run goes, then once with the
            final metrics plus ``"final": 1.0``. When Tune stops the trial (its scheduler, or the sweep's end), the
            call raises ``SystemExit``: the run is then ended (:func:`run_process`), its logs are copied, no
            ``DONE`` is written and the exception goes on.
        poll_s: Seconds between looks at the CSV.

    Returns:
        The final metrics (also stored in ``DONE``).

    Raises:
        TrialFailedError: The run exited non-zero (its logs are in the trial directory).
    """
    trial = Trial.from_json(payload["trial"])
    sweep_dir = Path(payload["sweep_dir"])
    threads = int(payload["threads"])
    run_dir = trial.run_dir(sweep_dir)
    logs = sweep_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    resume = _can_resume(trial, run_dir)
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # nothing to continue: a fresh run needs an empty directory
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    argv = trial_argv(trial, run_dir, threads=threads, resume=resume)
    cwd = Path(payload.get("cwd") or run_dir.parent)
    if not cwd.is_dir():  # e.g. a cluster node without the driver's directory
        cwd = run_dir.parent
    out_log, err_log = logs / f"{trial.id}.stdout.log", logs / f"{trial.id}.stderr.log"
    tail = CsvTail(run_dir / CSV_NAME)

    def stream() -> None:
        for row in tail.poll():
            if report is not None:
                report(row)

    start = time.monotonic()
    try:
        with out_log.open("a") as out, err_log.open("a") as err:
            header = f"{ATTEMPT_MARK} {utc_now()}: {' '.join(argv[1:])}\n"
            for log in (out, err):
                log.write(header)
                log.flush()
            returncode = run_process(
                argv,
                cwd=cwd,
                env=trial_env(threads, payload.get("env")),
                stdout=out,
                stderr=err,
                on_poll=stream,
                poll_s=poll_s,
                pid_file=pid_path(sweep_dir, trial.id),
            )
    finally:
        _copy_logs(out_log, err_log, run_dir)
    if returncode != 0:
        raise TrialFailedError(
            f"trial {trial.id}: `mbrl train {trial.agent}` exited with status {returncode} "
            f"(log: {run_dir / 'stderr.log'})"
        )
    final = final_metrics(run_dir)
    write_json_atomic(
        run_dir / DONE_NAME,
        {
            "trial": trial.id,
            "returncode": 0,
            "final": final,
            "argv": argv[1:],
            "threads": threads,
            "resumed": resume,
            "wall_s": round(time.monotonic() - start, 3),
            "finished": utc_now(),
        },
    )
    if report is not None:
        report({**final, "final": 1.0})
    return final


def trial_trainable(config: dict[str, Any], payloads: dict[str, dict[str, Any]]) -> None:
    """The Ray Tune function trainable: one trial, metrics streamed with ``ray.tune.report``."""
    from ray import tune

    payload = payloads[config["trial_id"]]
    run_trial(payload, lambda metrics: tune.report(dict(metrics)), poll_s=float(payload.get("poll_s", 1.0)))


def tune_trial_name(trial: Any) -> str:
    return str(trial.config["trial_id"])
