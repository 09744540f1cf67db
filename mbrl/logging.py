"""Run logging: console progress, a CSV file and TensorBoard event files (PNG curves: :mod:`mbrl.plotting`).

Only loops and commands own a :class:`Logger`; library code returns metrics (``dict[str, float]``) and never
prints. Keys are namespaced (``train/``, ``eval/``, ``model/``, ``rollout/``, ``time/``) so that TensorBoard
groups them and :func:`mbrl.plotting.plot_run` draws one figure per namespace.

A run directory holds ``progress.csv`` (one row per :meth:`Logger.log` call, columns ``step``, ``wall_time``
and every key ever logged; empty cells where a row lacks a key) and the TensorBoard event files.

Example::

    with Logger(run_dir, total=100_000, desc="dyna") as logger:
        for step in range(100_000):
            ...
            logger.advance(1)
            if step % 1000 == 0:
                logger.log({"train/critic_loss": loss, "eval/return": ret}, step)
"""

from __future__ import annotations

import csv
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, SupportsFloat, TextIO

import numpy as np

from mbrl.utils import atomic_write

NAMESPACES: tuple[str, ...] = ("train", "eval", "model", "rollout", "time")
"""The toolkit's own key prefixes (``docs/metrics.md``); any other namespace is accepted too."""
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

CSV_NAME = "progress.csv"
STEP_COLUMN = "step"
WALL_TIME_COLUMN = "wall_time"
_RESERVED = (STEP_COLUMN, WALL_TIME_COLUMN)
_CONSOLE_KEYS_DEFAULT = 4


def check_key(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is ``"<namespace>/<name>"`` (any namespace: letters, digits, ``_ . -``;
    TensorBoard groups by it and :func:`plot_run` draws one figure per namespace)."""
    namespace, sep, name = key.partition("/")
    if not sep or not name or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"log key {key!r} is not namespaced: write '<namespace>/<name>', e.g. "
            + ", ".join(f"'{ns}/...'" for ns in NAMESPACES)
        )


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# ---------------------------------------------------------------------------------------------------------
# CSV


def _atomic_write_csv(path: Path, header: Sequence[str], rows: Iterable[Mapping[str, str]]) -> None:
    """Write a whole CSV with :func:`mbrl.utils.atomic_write`."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(header), restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)

    atomic_write(path, write)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [dict(row) for row in reader]
    return header, rows


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line left without its newline by a run killed mid-write, so appending starts a clean row."""
    with path.open("rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _row_step(row: Mapping[str, str], path: Path, line: int) -> int:
    try:
        return int(float(row[STEP_COLUMN]))
    except (TypeError, ValueError, KeyError):
        raise ValueError(f"{path}: row {line} has no valid 'step' value ({row.get(STEP_COLUMN)!r})") from None


class _CsvWriter:
    """One row per step: appends a row per new step, merges a second ``write`` at the same step into that row
    (rewriting the last line), and rewrites the file with the union header when a new key appears.

    Every row is flushed so that a killed run keeps all rows written so far; a resumed run continues after the
    kept rows and never repeats a step.
    """

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.keys: list[str] = []
        self._last: dict[str, str] | None = None  # the last row written (merged into on a same-step write)
        if path.exists() and path.stat().st_size > 0:
            _drop_partial_last_line(path)
        if path.exists() and path.stat().st_size > 0:
            header, rows = _read_rows(path)
            if STEP_COLUMN not in header:
                raise ValueError(f"{path}: existing CSV has no 'step' column (header {header})")
            self.keys = [k for k in header if k not in _RESERVED]
            if resume_step is not None:
                kept = [r for i, r in enumerate(rows) if _row_step(r, path, i + 2) <= resume_step]
                if len(kept) != len(rows):
                    _atomic_write_csv(path, self._header(), kept)
                rows = kept
            self._last = rows[-1] if rows else None
            self._file: TextIO = path.open("a", newline="")
        else:
            self._file = path.open("w", newline="")
            self._start_file()

    def _header(self) -> list[str]:
        return [*_RESERVED, *self.keys]

    def _start_file(self) -> None:
        self._writer = csv.DictWriter(self._file, fieldnames=self._header(), restval="")
        self._writer.writeheader()
        self._file.flush()

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        self._file.close()
        _atomic_write_csv(self.path, self._header(), rows)
        self._file = self.path.open("a", newline="")

    def write(self, step: int, wall_time: float, metrics: Mapping[str, float]) -> None:
        row = {STEP_COLUMN: str(step), WALL_TIME_COLUMN: f"{wall_time:.3f}"}
        row.update({k: repr(float(v)) for k, v in metrics.items()})
        new = [k for k in metrics if k not in self.keys]
        same_step = self._last is not None and self._last.get(STEP_COLUMN) == str(step)
        if same_step:
            assert self._last is not None
            row = {**self._last, **row}
        if new or same_step:
            # Rare (a new key, or a second write at one step): rewrite the file with this row merged in.
            self._file.close()
            _, rows = _read_rows(self.path)
            self.keys.extend(new)
            self._rewrite([*rows[:-1], row] if same_step else [*rows, row])
        else:
            self._writer = csv.DictWriter(self._file, fieldnames=self._header(), restval="")
            self._writer.writerow(row)
            self._file.flush()
        self._last = row

    def close(self) -> None:
        self._file.close()


def read_csv(path: Path | str) -> dict[str, np.ndarray]:
    """Read a ``progress.csv`` into columns.

    Args:
        path: The CSV file (or a run directory holding ``progress.csv``).

    Returns:
        ``{column: array [N]}`` for every column; ``step`` is int64, the others float64 with NaN where a row
        lacks the key.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file has no ``step`` column or a cell is not a number.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no CSV at {path}")
    header, rows = _read_rows(path)
    if STEP_COLUMN not in header:
        raise ValueError(f"{path}: no 'step' column (header {header})")
    out: dict[str, np.ndarray] = {}
    out[STEP_COLUMN] = np.array([_row_step(r, path, i + 2) for i, r in enumerate(rows)], dtype=np.int64)
    for key in header:
        if key == STEP_COLUMN:
            continue
        values = np.full(len(rows), np.nan)
        for i, row in enumerate(rows):
            cell = row.get(key) or ""
            if cell:
                try:
                    values[i] = float(cell)
                except ValueError:
                    raise ValueError(
                        f"{path}: row {i + 2}, column {key!r}: {cell!r} is not a number"
                    ) from None
        out[key] = values
    return out


# ---------------------------------------------------------------------------------------------------------
# Console


class _Console:
    """A tqdm bar on an interactive stderr; otherwise a plain line every ``print_every_s`` seconds.

    The plain line (``desc step 1200/10000 (12.0%) | 345.2 steps/s | ETA 0:00:25 | eval/return=12.3``) suits
    CI logs: no carriage returns, one line per period.
    """

    def __init__(
        self,
        *,
        total: int | None,
        desc: str,
        start_step: int,
        print_every_s: float,
        bar: bool,
        console_keys: Sequence[str] | None,
        clock: Callable[[], float],
    ) -> None:
        self.total = total
        self.desc = desc
        self.start_step = start_step
        self.step = start_step
        self.print_every_s = print_every_s
        self.clock = clock
        self.start_time = clock()
        self.last_print = self.start_time
        self.console_keys = list(console_keys) if console_keys is not None else None
        self.latest: dict[str, float] = {}
        self._bar: Any = None
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=start_step, desc=desc or None, file=sys.stderr, dynamic_ncols=True
            )

    def _shown(self) -> dict[str, float]:
        if self.console_keys is not None:
            keys = [k for k in self.console_keys if k in self.latest]
        else:
            # eval/ first (what a researcher watches), then the order of first appearance.
            order = {ns: i for i, ns in enumerate(("eval", "train", "model", "rollout", "time"))}
            keys = sorted(self.latest, key=lambda k: order.get(k.split("/", 1)[0], len(order)))
            keys = keys[:_CONSOLE_KEYS_DEFAULT]
        return {k: self.latest[k] for k in keys}

    def rate(self) -> float:
        """Steps per second since this Logger opened."""
        elapsed = self.clock() - self.start_time
        return (self.step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The plain progress line."""
        parts = []
        head = f"{self.desc} " if self.desc else ""
        if self.total:
            parts.append(f"{head}step {self.step}/{self.total} ({100.0 * self.step / self.total:.1f}%)")
        else:
            parts.append(f"{head}step {self.step}")
        rate = self.rate()
        parts.append(f"{rate:.1f} steps/s")
        if self.total:
            eta = (self.total - self.step) / rate if rate > 0 else math.inf
            parts.append(f"ETA {_format_duration(eta)}")
        parts.append(f"elapsed {_format_duration(self.clock() - self.start_time)}")
        shown = self._shown()
        if shown:
            parts.append(" ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        return " | ".join(parts)

    def _maybe_print(self) -> None:
        now = self.clock()
        if now - self.last_print >= self.print_every_s:
            self.last_print = now
            print(self.line(), file=sys.stderr, flush=True)

    def set_step(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self.step)
        self.step = step
        if self._bar is None:
            self._maybe_print()

    def metrics(self, metrics: Mapping[str, float]) -> None:
        self.latest.update(metrics)
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in self._shown().items()}, refresh=False)
        else:
            self._maybe_print()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            print(self.line() + " | done", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Logger


class Logger:
    """Console progress + ``progress.csv`` + TensorBoard events for one run.

    Args:
        run_dir: Directory for ``progress.csv`` and the event files (created if missing). ``None``: console only.
        total: Total number of steps, for the percentage and ETA (``None``: unknown).
        desc: Short label printed before the progress.
        console: Show progress on stderr.
        tensorboard: Write TensorBoard event files into ``run_dir``.
        csv: Write ``run_dir/progress.csv``.
        print_every_s: Period of the plain progress line when stderr is not a terminal.
        resume_step: Continue a run from its checkpoint at this step: CSV rows with ``step > resume_step`` are
            dropped, TensorBoard discards its events from ``resume_step + 1`` on, progress starts there.
            An existing CSV is appended to in any case.
        console_keys: Keys to show next to the progress (default: up to 4, ``eval/`` first).
        bar: Force (``True``) or forbid (``False``) the tqdm bar; ``None`` uses it when stderr is a terminal.
        clock: Time source in seconds (for tests); default :func:`time.monotonic`.
    """

    def __init__(
        self,
        run_dir: Path | str | None,
        *,
        total: int | None = None,
        desc: str = "",
        console: bool = True,
        tensorboard: bool = True,
        csv: bool = True,
        print_every_s: float = 10.0,
        resume_step: int | None = None,
        console_keys: Sequence[str] | None = None,
        bar: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if resume_step is not None and resume_step < 0:
            raise ValueError(f"resume_step must be >= 0, got {resume_step}")
        if console_keys is not None:
            for key in console_keys:
                check_key(key)
        self._step = resume_step if resume_step is not None else 0
        self._closed = False
        self._csv: _CsvWriter | None = None
        self._tb: Any = None
        self._console: _Console | None = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if csv:
                self._csv = _CsvWriter(self.run_dir / CSV_NAME, resume_step)
            if tensorboard:
                # Imported lazily: it pulls in the tensorboard package (~1 s).
                from torch.utils.tensorboard import SummaryWriter

                purge = resume_step + 1 if resume_step is not None else None
                self._tb = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge, flush_secs=10)
        if console:
            self._console = _Console(
                total=total,
                desc=desc,
                start_step=self._step,
                print_every_s=print_every_s,
                bar=sys.stderr.isatty() if bar is None else bar,
                console_keys=console_keys,
                clock=clock,
            )

    @property
    def step(self) -> int:
        """The progress step (moved by :meth:`advance` / :meth:`set_step`)."""
        return self._step

    @property
    def csv_path(self) -> Path | None:
        """``run_dir/progress.csv`` when the CSV writer is on."""
        return self._csv.path if self._csv is not None else None

    def log(self, metrics: Mapping[str, SupportsFloat], step: int) -> None:
        """Record scalar metrics at ``step`` in every writer.

        Args:
            metrics: ``{"<namespace>/<name>": value}``; values are anything ``float()`` accepts (Python and
                numpy scalars, 0-d tensors). NaN/inf are written as they are.
            step: The x-axis value (env steps, gradient steps; the loop decides). Progress is not moved.

        Raises:
            ValueError: A key is not namespaced or a value is not a scalar.
        """
        if self._closed:
            raise ValueError("log() on a closed Logger")
        values: dict[str, float] = {}
        for key, value in metrics.items():
            check_key(key)
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"log key {key!r}: value {value!r} is not a scalar") from None
        if not values:
            return
        step = int(step)
        if self._csv is not None:
            self._csv.write(step, time.time(), values)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, global_step=step)
        if self._console is not None:
            self._console.metrics(values)

    def advance(self, n: int = 1) -> None:
        """Move progress forward by ``n`` steps."""
        self.set_step(self._step + n)

    def set_step(self, step: int) -> None:
        """Set progress to ``step``."""
        self._step = int(step)
        if self._console is not None:
            self._console.set_step(self._step)

    def flush(self) -> None:
        """Flush the TensorBoard writer (the CSV is flushed on every row)."""
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close every writer; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._csv is not None:
            self._csv.close()
        if self._tb is not None:
            self._tb.close()
        if self._console is not None:
            self._console.close()

    def __enter__(self) -> Logger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_tensorboard_video(
    run_dir: str | Path, tag: str, frames: list[np.ndarray], fps: int, step: int, *, max_side: int = 160,
    max_frames: int = 300,
) -> None:
    """Add ``frames`` to ``run_dir``'s TensorBoard events as an animated GIF under ``tag`` (IMAGES tab), the way
    ``SummaryWriter.add_video`` stores a video, encoded with Pillow instead of moviepy.

    Frames are shrunk to at most ``max_side`` pixels per side and thinned to at most ``max_frames`` (the GIF's
    frame time keeps the real-time speed), so an events file stays small.
    """
    from io import BytesIO

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    if not frames:
        raise ValueError("write_tensorboard_video: no frames")
    every = max(1, -(-len(frames) // max_frames))
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames[::every]]
    scale = min(1.0, max_side / max(images[0].size))
    size = (max(1, round(images[0].width * scale)), max(1, round(images[0].height * scale)))
    images = [im.resize(size) for im in images]
    buffer = BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 * every / fps)))
    image = Summary.Image(height=size[1], width=size[0], colorspace=3, encoded_image_string=buffer.getvalue())
    writer = SummaryWriter(log_dir=str(run_dir))
    try:
        file_writer = writer.file_writer
        assert file_writer is not None  # SummaryWriter opens it in __init__
        file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), global_step=step)
    finally:
        writer.close()

