"""``mbrl sweep SPEC.yaml``: run a sweep's trials as ordinary run directories on Ray Tune.

Each trial (see :mod:`mbrl.sweep.spec`) is one ``mbrl train <agent> ... --run-dir SWEEP_DIR/trials/<id>``
subprocess, launched from a Ray Tune function trainable that tails the run's ``progress.csv`` and reports every
new row to Tune (``ray.tune.report``) while the run goes. Ray runs locally by default (``ray.init`` sized to
this machine); ``--address`` attaches to an existing cluster, whose nodes then need the toolkit installed and
``SWEEP_DIR`` on shared storage.

Layout::

    SWEEP_DIR/
      sweep.json                      the spec and its expanded trials (rewritten by every invocation)
      summary.json                    the outcome of the last invocation (finished, stopped, skipped, failed)
      trials/<id>/                    the trial's run directory (config.json, progress.csv, checkpoints/, ...)
        stdout.log, stderr.log        the run's output, every attempt (copied in after each exit)
        DONE                          JSON marker written atomically after a 0 exit: final metrics, argv, time
        STOPPED                       JSON marker of a trial the scheduler (ASHA) stopped early: the step and
                                      metric value it was stopped at (written by the driver when it decides)
      logs/<id>.{stdout,stderr}.log   the same logs while the trial runs (``mbrl train`` refuses to start a new
                                      run in a non-empty directory, so they cannot live in the run dir then)
      logs/<id>.pid                   host and pid of the trial's run while it runs
      ray/tune-<time>/                Ray Tune's experiment state and per-trial results of one invocation

Resume and retries: a trial with a ``DONE`` marker is finished and skipped by every later invocation (re-running
the same command continues a sweep); so is a trial with a ``STOPPED`` marker (delete the marker to let it go
on). An unfinished trial whose run directory holds a checkpoint continues with ``mbrl train ... --resume``;
otherwise its run directory is cleared and the run starts afresh. A run that exits non-zero is retried up to
``--max-retries`` times (Tune's ``FailureConfig.max_failures``; each retry continues from the run's checkpoint as
above), then reported as failed; the other trials go on and the command exits 1 at the end. Resume works at the
trial level through these markers rather than ``Tuner.restore``: a Tune experiment can only be restored as it
was, whereas a sweep may be re-run with more seeds or different retry settings.

Early stopping (the spec's ``scheduler``): Tune's ``ASHAScheduler`` sees every reported row and decides on those
holding its metric (strict metric checking is off for the sweep, since most rows hold other columns; a sweep in
which no trial reported the metric ends with a warning). When it stops a trial, the driver writes the trial's
``STOPPED`` marker, Tune ends the trainable at its next report, and the trainable ends the run: SIGTERM, then
SIGKILL after 10 s (if Tune ends the trainable's actor first, the run gets SIGTERM as its parent thread dies,
and the driver ends a run still alive on its host before it returns). A stopped trial is neither failed nor
finished: ``summary.json`` lists it under ``stopped``, and ``mbrl report`` counts it as stopped without
aggregating its values.

Threads: every trial reserves ``--threads-per-trial`` CPUs in Ray, gets ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` set to it and, where the command has one, ``--threads``. By default
``floor(CPUs / threads per trial)`` trials run at once, so trials do not oversubscribe the machine.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TextIO

import tyro

from mbrl.cli import CommandError
from mbrl.logging import CSV_NAME, STEP_COLUMN, WALL_TIME_COLUMN, read_csv
from mbrl.run import write_json_atomic
from mbrl.sweep.spec import AshaSpec, SweepSpec, Trial, load_spec

SWEEP_JSON = "sweep.json"
SUMMARY_JSON = "summary.json"
DONE_NAME = "DONE"
STOPPED_NAME = "STOPPED"
TRIALS_DIR = "trials"
LOGS_DIR = "logs"
RAY_DIR = "ray"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PASS_ENV = ("MINARI_DATASETS_PATH", "MUJOCO_GL", "D4RL_DATASET_DIR")
"""Environment variables of the driver handed to every trial (also on cluster nodes)."""
INSTALL_HINT = "pip install 'mbrl-toolkit[sweep]'"
TERMINATE_TIMEOUT_S = 10.0
"""Seconds a stopped trial's run gets to exit after SIGTERM before SIGKILL."""
_ATTEMPT_MARK = "=== mbrl sweep attempt"
_TAIL_LINES = 15


class TrialFailedError(RuntimeError):
    """``mbrl train`` exited non-zero (raised inside the trainable so that Tune retries the trial)."""


@dataclass(frozen=True)
class SweepSummary:
    """Outcome of one :func:`run_sweep` call.

    Attributes:
        sweep_dir: The sweep directory.
        total: Number of trials in the spec.
        skipped: Trials finished (a ``DONE`` marker) or stopped early (``STOPPED``) before this call, not run
            again.
        finished: Trials that finished in this call.
        failed: Trials that failed in this call after their retries.
        failure_logs: ``{trial id: last lines of its stderr.log (last attempt)}`` of the failed trials.
        unfinished: Trials neither finished, stopped nor failed (the sweep was interrupted, e.g. by Ctrl-C).
        stopped: Trials the scheduler stopped early in this call.
    """

    sweep_dir: Path
    total: int
    skipped: tuple[str, ...]
    finished: tuple[str, ...]
    failed: tuple[str, ...]
    failure_logs: Mapping[str, str]
    unfinished: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every trial finished or was stopped early by the scheduler (none failed or was interrupted)."""
        return not self.failed and not self.unfinished


# ---------------------------------------------------------------------------------------------------------
# Files of a sweep directory


def done_path(sweep_dir: Path | str, trial_id: str) -> Path:
    """``SWEEP_DIR/trials/<id>/DONE``."""
    return Path(sweep_dir) / TRIALS_DIR / trial_id / DONE_NAME


def read_done(sweep_dir: Path | str, trial_id: str) -> dict[str, Any] | None:
    """The ``DONE`` marker of a trial, or ``None`` when the trial has not finished (or the marker is unreadable)."""
    path = done_path(sweep_dir, trial_id)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def stopped_path(sweep_dir: Path | str, trial_id: str) -> Path:
    """``SWEEP_DIR/trials/<id>/STOPPED``."""
    return Path(sweep_dir) / TRIALS_DIR / trial_id / STOPPED_NAME


def read_stopped(sweep_dir: Path | str, trial_id: str) -> dict[str, Any] | None:
    """The ``STOPPED`` marker of a trial the scheduler stopped early, or ``None`` (none, or unreadable)."""
    try:
        data = json.loads(stopped_path(sweep_dir, trial_id).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def mark_stopped(
    sweep_dir: Path | str, trial_id: str, scheduler: AshaSpec, result: Mapping[str, Any]
) -> Path | None:
    """Write the ``STOPPED`` marker of a trial the scheduler stops at ``result`` (a reported row).

    Returns:
        The marker's path, or ``None`` when the trial has finished (a ``DONE`` marker: stopping it at its final
        report changes nothing).
    """
    if read_done(sweep_dir, trial_id) is not None:
        return None
    path = stopped_path(sweep_dir, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    step = result.get(STEP_COLUMN)
    return write_json_atomic(
        path,
        {
            "trial": trial_id,
            "scheduler": "asha",
            "metric": scheduler.metric,
            "mode": scheduler.mode,
            "value": float(result[scheduler.metric]),
            "step": None if step is None else float(step),
            "time_attr": scheduler.time_attr,
            "time": float(result[scheduler.time_attr]),
            "stopped": _now(),
        },
    )


def read_sweep_json(sweep_dir: Path | str) -> dict[str, Any]:
    """``SWEEP_DIR/sweep.json`` as a dict.

    Raises:
        FileNotFoundError: Not a sweep directory.
        ValueError: Not valid JSON or lacking ``trials``.
    """
    path = Path(sweep_dir) / SWEEP_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a sweep directory (run `mbrl sweep SPEC.yaml` first)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("trials"), list):
        raise ValueError(f"{path}: expected an object with a 'trials' list")
    return data


def sweep_trials(sweep_dir: Path | str) -> list[Trial]:
    """The trials stored in ``SWEEP_DIR/sweep.json``."""
    return [Trial.from_json(t) for t in read_sweep_json(sweep_dir)["trials"]]


def check_sweep_dir(sweep_dir: Path, trials: Sequence[Trial], *, resume: bool) -> None:
    """Check that ``sweep_dir`` can hold these trials.

    A new directory (or an empty one) is fine unless ``resume`` asks to continue one. An existing sweep may gain
    trials (more seeds, a wider grid), but a trial id it already holds must keep its exact arguments, since its
    run directory was made with them.

    Raises:
        ValueError: ``resume`` without a ``sweep.json``; a non-empty directory that is not a sweep; a trial whose
            arguments changed (named, with both argument lists).
    """
    path = sweep_dir / SWEEP_JSON
    if not path.is_file():
        if resume:
            raise ValueError(f"cannot resume: {path} not found (start the sweep without --resume)")
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            raise ValueError(
                f"{sweep_dir} exists, is not empty and holds no {SWEEP_JSON}: pick another --sweep-dir"
            )
        return
    stored = {t.id: t for t in sweep_trials(sweep_dir)}
    for trial in trials:
        old = stored.get(trial.id)
        if old is not None and old.args != trial.args:
            raise ValueError(
                f"{path}: trial {trial.id} was run with args {' '.join(old.args)!r}, the spec now gives "
                f"{' '.join(trial.args)!r}; use a new --sweep-dir (or delete {sweep_dir / TRIALS_DIR / trial.id})"
            )


def write_sweep_json(sweep_dir: Path, spec: SweepSpec, trials: Sequence[Trial]) -> Path:
    """Write ``SWEEP_DIR/sweep.json`` (atomically): spec, metric, trials, the driver's working directory."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "name": spec.name,
        "spec": spec.to_json(),
        "metric": spec.metric,
        "cwd": os.getcwd(),
        "updated": _now(),
        "trials": [t.to_json() for t in trials],
    }
    return write_json_atomic(sweep_dir / SWEEP_JSON, data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def tail_lines(path: Path, n: int = _TAIL_LINES) -> str:
    """The last ``n`` lines of a trial log's last attempt (``""`` when missing)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    marks = [i for i, line in enumerate(lines) if line.startswith(_ATTEMPT_MARK)]
    if marks:
        lines = lines[marks[-1] + 1 :]
    return "\n".join(lines[-n:])


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
            f"=== mbrl sweep {_now()}: the trial was stopped; its run was ended with {how}",
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
                    f"=== mbrl sweep {_now()}: the trial was stopped; the driver ended its run with {sent}",
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
            header = f"{_ATTEMPT_MARK} {_now()}: {' '.join(argv[1:])}\n"
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
            "finished": _now(),
        },
    )
    if report is not None:
        report({**final, "final": 1.0})
    return final


def _trial_trainable(config: dict[str, Any], payloads: dict[str, dict[str, Any]]) -> None:
    """The Ray Tune function trainable: one trial, metrics streamed with ``ray.tune.report``."""
    from ray import tune

    payload = payloads[config["trial_id"]]
    run_trial(payload, lambda metrics: tune.report(dict(metrics)), poll_s=float(payload.get("poll_s", 1.0)))


def _tune_trial_name(trial: Any) -> str:
    return str(trial.config["trial_id"])


# ---------------------------------------------------------------------------------------------------------
# The sweep


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan_concurrency(cpus: float, threads_per_trial: int, max_concurrent: int | None) -> int:
    """Trials at once: ``max_concurrent`` if given, else ``floor(cpus / threads_per_trial)``, at least 1."""
    if max_concurrent is not None:
        return max_concurrent
    return max(1, math.floor(cpus / threads_per_trial))


def _import_ray() -> Any:
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"mbrl sweep needs Ray Tune, which is not installed ({exc}); run {INSTALL_HINT} first"
        ) from None
    return ray


@contextmanager
def _scoped_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables of this process for the block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def _quiet_tune(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Tune's old console reporter (silent at verbose=0) and no tracebacks from its loggers: trial failures are
    reported by the sweep's own lines and logs. ``env``: more variables set for the block."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.tune", "ray.train", "ray.air")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with _scoped_env({"RAY_AIR_NEW_OUTPUT": "0", **(env or {})}):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _asha(scheduler: AshaSpec, sweep_dir: Path) -> Any:
    """Tune's ``ASHAScheduler`` for the spec's ``scheduler`` that also writes the ``STOPPED`` marker of each trial
    it stops (when it decides) and notes whether any result held its metric (``metric_seen``).

    ``stop_last_trials=False``: reaching ``max_t`` stops no trial (its own budget ends it).
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class MarkingASHA(ASHAScheduler):
        def __init__(self) -> None:
            super().__init__(
                time_attr=scheduler.time_attr,
                metric=scheduler.metric,
                mode=scheduler.mode,
                max_t=scheduler.max_t,
                grace_period=scheduler.grace_period,
                reduction_factor=scheduler.reduction_factor,
                brackets=scheduler.brackets,
                stop_last_trials=False,
            )
            self.metric_seen = False

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            self.metric_seen = self.metric_seen or scheduler.metric in result
            if decision == TrialScheduler.STOP:
                mark_stopped(sweep_dir, _tune_trial_name(trial), scheduler, result)
            return str(decision)

    return MarkingASHA()


def _progress_callback(tune: Any, out: TextIO, metric: str | None, sweep_dir: Path) -> Any:
    """A Tune callback printing one line per trial start, retry, finish and failure (driver side)."""

    class Progress(tune.Callback):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.attempts: dict[str, int] = {}
            self.started: dict[str, float] = {}

        def _say(self, line: str) -> None:
            print(f"[sweep] {line}", file=out, flush=True)

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            tid = _tune_trial_name(trial)
            self.attempts[tid] = self.attempts.get(tid, 0) + 1
            self.started[tid] = time.monotonic()
            attempt = self.attempts[tid]
            self._say(f"start  {tid}" + (f" (attempt {attempt})" if attempt > 1 else ""))

        def _elapsed(self, tid: str) -> str:
            return f"{time.monotonic() - self.started.get(tid, time.monotonic()):.0f} s"

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            tid = _tune_trial_name(trial)
            stopped = read_stopped(sweep_dir, tid)
            if stopped is not None and read_done(sweep_dir, tid) is None:
                self._say(f"stopped {tid} early at {_stop_point(stopped)} ({self._elapsed(tid)})")
                return
            shown = headline(trial.last_result or {}, metric)
            self._say(" ".join(part for part in ("done  ", tid, shown, f"({self._elapsed(tid)})") if part))

        def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            tid = _tune_trial_name(trial)
            self._say(
                f"retry  {tid}: failed after {self._elapsed(tid)} (log: {_rel(trial_log(sweep_dir, tid))})"
            )

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            tid = _tune_trial_name(trial)
            attempts = self.attempts.get(tid, 1)
            self._say(
                f"FAILED {tid} after {attempts} attempt{'s' if attempts > 1 else ''} "
                f"(log: {_rel(trial_log(sweep_dir, tid))})"
            )

    return Progress()


def _stop_point(marker: Mapping[str, Any]) -> str:
    """``"step 100: eval/return_mean=6 (asha)"`` from a ``STOPPED`` marker."""
    at = (
        f"step {marker['step']:g}"
        if marker.get("step") is not None
        else f"{marker['time_attr']} {marker['time']:g}"
    )
    return f"{at}: {marker['metric']}={marker['value']:.4g} ({marker['scheduler']})"


def trial_log(sweep_dir: Path, trial_id: str) -> Path:
    """The stderr log of a trial (in its run directory once an attempt ended, else in ``logs/``)."""
    copied = sweep_dir / TRIALS_DIR / trial_id / "stderr.log"
    return copied if copied.is_file() else sweep_dir / LOGS_DIR / f"{trial_id}.stderr.log"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_sweep(
    spec: SweepSpec,
    sweep_dir: Path | str,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    threads_per_trial: int = 1,
    max_retries: int = 1,
    resume: bool = False,
    num_cpus: int | None = None,
    poll_s: float = 1.0,
    out: TextIO | None = None,
) -> SweepSummary:
    """Run every unfinished trial of ``spec`` on Ray Tune (see the module docstring).

    Uses the Ray instance of this process if one is initialized (left running); else starts a local one (or
    attaches to ``address``) and shuts it down at the end.

    Args:
        spec: The parsed spec.
        sweep_dir: The sweep directory (created if missing).
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``, ...); ``None`` starts a local instance.
        max_concurrent: Trials at once (default ``floor(CPUs / threads_per_trial)``, at least 1).
        threads_per_trial: CPUs reserved and threads set per trial.
        max_retries: Extra attempts of a trial whose run exits non-zero.
        resume: Require an existing sweep to continue (a plain re-run continues one too).
        num_cpus: CPUs of the local Ray instance (default: this machine's, raised to fit ``max_concurrent``).
        poll_s: Seconds between looks at a running trial's CSV.
        out: Where progress lines go (default stdout).

    Returns:
        What was skipped, finished, stopped early and failed.

    Raises:
        CommandError: Ray is not installed.
        ValueError: Bad settings, or a sweep directory that does not match the spec (see :func:`check_sweep_dir`).
    """
    ray = _import_ray()
    from ray import tune

    out = out if out is not None else sys.stdout
    if threads_per_trial < 1:
        raise ValueError(f"--threads-per-trial must be >= 1, got {threads_per_trial}")
    if max_retries < 0:
        raise ValueError(f"--max-retries must be >= 0, got {max_retries}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {max_concurrent}")
    sweep_dir = Path(sweep_dir).resolve()
    trials = spec.trials()
    check_sweep_dir(sweep_dir, trials, resume=resume)
    write_sweep_json(sweep_dir, spec, trials)
    done_before = [t.id for t in trials if read_done(sweep_dir, t.id) is not None]
    stopped_before = [
        t.id for t in trials if t.id not in done_before and read_stopped(sweep_dir, t.id) is not None
    ]
    skipped = tuple(t.id for t in trials if t.id in {*done_before, *stopped_before})
    todo = [t for t in trials if t.id not in skipped]
    stopped_note = f", {len(stopped_before)} stopped early" if stopped_before else ""
    print(
        f"[sweep] {spec.name}: {len(trials)} trials, {len(done_before)} already finished{stopped_note}, "
        f"{len(todo)} to run -> {_rel(sweep_dir)}",
        file=out,
        flush=True,
    )
    if not todo:
        return _finish(SweepSummary(sweep_dir, len(trials), skipped, (), (), {}), spec.name, out, 0.0)

    start = time.monotonic()
    own = not ray.is_initialized()
    if own:
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address is not None:
            ray.init(address=address, **quiet)
        else:
            cpus = num_cpus or available_cpus()
            wanted = plan_concurrency(cpus, threads_per_trial, max_concurrent) * threads_per_trial
            ray.init(num_cpus=max(cpus, wanted), include_dashboard=False, **quiet)
    try:
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
        concurrency = plan_concurrency(cluster_cpus, threads_per_trial, max_concurrent)
        if threads_per_trial > cluster_cpus:
            raise ValueError(
                f"--threads-per-trial {threads_per_trial} exceeds the {cluster_cpus:g} CPUs of the Ray cluster"
            )
        print(
            f"[sweep] {concurrency} trial(s) at once, {threads_per_trial} thread(s) each, "
            f"{cluster_cpus:g} CPUs in Ray, up to {max_retries} retr{'y' if max_retries == 1 else 'ies'}",
            file=out,
            flush=True,
        )
        extra_env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        payloads = {
            t.id: {
                "trial": t.to_json(),
                "sweep_dir": str(sweep_dir),
                "threads": threads_per_trial,
                "cwd": os.getcwd(),
                "env": extra_env,
                "poll_s": poll_s,
            }
            for t in todo
        }
        trainable = tune.with_resources(
            tune.with_parameters(_trial_trainable, payloads=payloads), {"cpu": threads_per_trial}
        )
        scheduler = _asha(spec.scheduler, sweep_dir) if spec.scheduler is not None else None
        # Most rows lack the scheduler's metric (it is in the evaluation rows): Tune must not reject them.
        with _quiet_tune({"TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"} if scheduler is not None else None):
            tuner = tune.Tuner(
                trainable,
                param_space={"trial_id": tune.grid_search([t.id for t in todo])},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=concurrency,
                    reuse_actors=True,
                    trial_name_creator=_tune_trial_name,
                    trial_dirname_creator=_tune_trial_name,
                    scheduler=scheduler,
                ),
                run_config=tune.RunConfig(
                    name=f"tune-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}",
                    storage_path=str(sweep_dir / RAY_DIR),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=max_retries),
                    callbacks=[_progress_callback(tune, out, spec.metric, sweep_dir)],
                ),
            )
            results = tuner.fit()
        errored = set()
        for i in range(len(results)):
            result = results[i]
            if result.error is not None and result.config:
                errored.add(str(result.config["trial_id"]))
        for trial in todo:
            if read_done(sweep_dir, trial.id) is None and read_stopped(sweep_dir, trial.id) is not None:
                settle_stopped_trial(sweep_dir, trial.id)
    finally:
        if own:
            ray.shutdown()
    # The markers are the record (DONE written by the trials, STOPPED by the scheduler); Tune tells failed from
    # interrupted.
    finished = tuple(t.id for t in todo if read_done(sweep_dir, t.id) is not None)
    stopped = tuple(t.id for t in todo if t.id not in finished and read_stopped(sweep_dir, t.id) is not None)
    ended = {*finished, *stopped}
    failed = tuple(t.id for t in todo if t.id not in ended and t.id in errored)
    unfinished = tuple(t.id for t in todo if t.id not in ended and t.id not in errored)
    if scheduler is not None and finished and not scheduler.metric_seen:
        print(
            f"[sweep] warning: no trial reported {scheduler.metric!r}, the scheduler's metric, so it stopped none; "
            f"is it a column of the trials' progress.csv?",
            file=out,
            flush=True,
        )
    logs = {tid: tail_lines(trial_log(sweep_dir, tid)) for tid in failed}
    summary = SweepSummary(sweep_dir, len(trials), skipped, finished, failed, logs, unfinished, stopped)
    return _finish(summary, spec.name, out, time.monotonic() - start)


def _finish(summary: SweepSummary, name: str, out: TextIO, wall_s: float) -> SweepSummary:
    """Write ``summary.json`` and print the closing lines (and the failed trials' last log lines)."""
    sweep_dir = summary.sweep_dir
    write_json_atomic(
        sweep_dir / SUMMARY_JSON,
        {
            "name": name,
            "finished": list(summary.finished),
            "stopped": list(summary.stopped),
            "skipped": list(summary.skipped),
            "failed": list(summary.failed),
            "unfinished": list(summary.unfinished),
            "wall_s": round(wall_s, 1),
            "updated": _now(),
        },
    )
    stopped = f"{len(summary.stopped)} stopped early, " if summary.stopped else ""
    interrupted = (
        f", {len(summary.unfinished)} interrupted (re-run to continue)" if summary.unfinished else ""
    )
    print(
        f"[sweep] {name}: {len(summary.finished)} finished, {stopped}{len(summary.failed)} failed{interrupted}, "
        f"{len(summary.skipped)} skipped (already finished or stopped) in {wall_s:.0f} s; "
        f"report: mbrl report {_rel(sweep_dir)}",
        file=out,
        flush=True,
    )
    for tid in summary.failed:
        print(f"[sweep] FAILED {tid}; last lines of {_rel(trial_log(sweep_dir, tid))}:", file=out)
        for line in (summary.failure_logs[tid] or "(empty)").splitlines():
            print(f"    {line}", file=out)
    out.flush()
    return summary


def sweep_command(
    spec: Annotated[str, tyro.conf.arg(metavar="SPEC.yaml")],
    /,
    sweep_dir: str | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    threads_per_trial: int = 1,
    max_retries: int = 1,
    resume: bool = False,
) -> int:
    """Run a sweep (agents x envs/datasets x grid x seeds) on Ray Tune; each trial is a run directory.

    Args:
        spec: the YAML sweep spec (see mbrl/sweep/spec.py).
        sweep_dir: where trials, logs and results go (default runs/sweeps/<name>).
        address: Ray cluster to attach to (e.g. auto); default: a local Ray instance.
        max_concurrent: trials at once (default: CPUs / threads-per-trial).
        threads_per_trial: CPUs and threads per trial (OMP/MKL threads, --threads).
        max_retries: extra attempts of a failing trial.
        resume: continue an existing sweep (finished trials are skipped on any re-run).
    """
    _import_ray()
    parsed = load_spec(spec)
    directory = Path(sweep_dir) if sweep_dir is not None else Path("runs") / "sweeps" / parsed.name
    summary = run_sweep(
        parsed,
        directory,
        address=address,
        max_concurrent=max_concurrent,
        threads_per_trial=threads_per_trial,
        max_retries=max_retries,
        resume=resume,
    )
    return 0 if summary.ok else 1
