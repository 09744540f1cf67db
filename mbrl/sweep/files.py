"""The files of a sweep directory (layout: :mod:`mbrl.sweep.runner`): ``sweep.json``, the trials' ``DONE`` and
``STOPPED`` markers, and the last lines of a log."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mbrl.logging import STEP_COLUMN
from mbrl.run import write_json_atomic
from mbrl.sweep.spec import AshaSpec, SweepSpec, Trial

SWEEP_JSON = "sweep.json"
SUMMARY_JSON = "summary.json"
DONE_NAME = "DONE"
STOPPED_NAME = "STOPPED"
TRIALS_DIR = "trials"
LOGS_DIR = "logs"
RAY_DIR = "ray"
_TAIL_LINES = 15
ATTEMPT_MARK = "=== mbrl sweep attempt"
"""The line a trial's logs start each attempt with."""


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
            "stopped": utc_now(),
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
        "updated": utc_now(),
        "trials": [t.to_json() for t in trials],
    }
    return write_json_atomic(sweep_dir / SWEEP_JSON, data)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def tail_lines(path: Path, n: int = _TAIL_LINES) -> str:
    """The last ``n`` lines of a trial log's last attempt (``""`` when missing)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    marks = [i for i, line in enumerate(lines) if line.startswith(ATTEMPT_MARK)]
    if marks:
        lines = lines[marks[-1] + 1 :]
    return "\n".join(lines[-n:])
