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

import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import tyro

from mbrl.cli import CommandError
from mbrl.run import write_json_atomic
from mbrl.sweep.files import (
    LOGS_DIR,
    RAY_DIR,
    SUMMARY_JSON,
    TRIALS_DIR,
    check_sweep_dir,
    mark_stopped,
    read_done,
    read_stopped,
    tail_lines,
    utc_now,
    write_sweep_json,
)
from mbrl.sweep.spec import AshaSpec, SweepSpec, load_spec
from mbrl.sweep.trial import PASS_ENV, headline, settle_stopped_trial, trial_trainable, tune_trial_name

INSTALL_HINT = "pip install 'mbrl-toolkit[sweep]'"


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
                mark_stopped(sweep_dir, tune_trial_name(trial), scheduler, result)
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
            tid = tune_trial_name(trial)
            self.attempts[tid] = self.attempts.get(tid, 0) + 1
            self.started[tid] = time.monotonic()
            attempt = self.attempts[tid]
            self._say(f"start  {tid}" + (f" (attempt {attempt})" if attempt > 1 else ""))

        def _elapsed(self, tid: str) -> str:
            return f"{time.monotonic() - self.started.get(tid, time.monotonic()):.0f} s"

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            tid = tune_trial_name(trial)
            stopped = read_stopped(sweep_dir, tid)
            if stopped is not None and read_done(sweep_dir, tid) is None:
                self._say(f"stopped {tid} early at {_stop_point(stopped)} ({self._elapsed(tid)})")
                return
            shown = headline(trial.last_result or {}, metric)
            self._say(" ".join(part for part in ("done  ", tid, shown, f"({self._elapsed(tid)})") if part))

        def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            tid = tune_trial_name(trial)
            self._say(
                f"retry  {tid}: failed after {self._elapsed(tid)} (log: {_rel(trial_log(sweep_dir, tid))})"
            )

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            tid = tune_trial_name(trial)
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
            tune.with_parameters(trial_trainable, payloads=payloads), {"cpu": threads_per_trial}
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
                    trial_name_creator=tune_trial_name,
                    trial_dirname_creator=tune_trial_name,
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
            "updated": utc_now(),
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
