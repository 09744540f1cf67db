"""``mbrl report SWEEP_DIR``: aggregate a sweep's final metrics over seeds into tables and learning curves.

Per (agent, env/dataset, grid point), over the seeds whose trial finished (a ``DONE`` marker):

- the final value of the metric: its last finite value in ``progress.csv`` (rows in step order);
- mean ± standard error (``std(ddof=1) / sqrt(n)``; undefined for n = 1);
- IQM, the interquartile mean recommended by rliable (Agarwal et al., "Deep RL at the Edge of the Statistical
  Precipice", NeurIPS 2021): ``scipy.stats.trim_mean(x, 0.25)``, as rliable computes it. It drops
  ``floor(n / 4)`` values at each end and averages the rest, so for n < 4 nothing is dropped and IQM = mean;
- n, the number of seeds with a value, and ``failed``, the number of seeds without a ``DONE`` marker (failed,
  or not run yet). A finished seed that never logged the metric counts in neither.

The metric: ``--metric``, else the spec's ``metric``, else per group ``eval/normalized_score`` when a finished
trial of the group logs it (offline runs with reference scores), else ``eval/return_mean``.

Writes ``report.md`` (the Markdown table), ``report.csv`` (one row per group, with the per-seed values) and
``curves_<env-or-dataset>.png`` (mean over seeds with a ± standard-error band against the ``step`` column, one
line per agent and grid point). Seeds are put on common steps by linear interpolation over the range all of them
cover; when they logged at the same steps (the usual case) this is exact.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from mbrl.logging import STEP_COLUMN, read_csv
from mbrl.sweep.runner import read_done, read_sweep_json
from mbrl.sweep.spec import Trial, target_labels

DEFAULT_METRICS = ("eval/normalized_score", "eval/return_mean")


@dataclass(frozen=True)
class Stats:
    """Aggregate of one group's final values over seeds.

    Attributes:
        mean: Mean (NaN for n = 0).
        se: Standard error of the mean, ``std(ddof=1) / sqrt(n)`` (NaN for n < 2).
        iqm: Interquartile mean, ``scipy.stats.trim_mean(x, 0.25)`` (NaN for n = 0).
        n: Number of values.
    """

    mean: float
    se: float
    iqm: float
    n: int


def aggregate(values: Sequence[float]) -> Stats:
    """Mean, standard error and IQM of per-seed values (see the module docstring).

    Raises:
        ValueError: A value is not finite.
    """
    from scipy.stats import trim_mean

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError(f"aggregate: non-finite values {x.tolist()}")
    n = int(x.size)
    if n == 0:
        return Stats(math.nan, math.nan, math.nan, 0)
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Stats(float(x.mean()), se, float(trim_mean(x, 0.25)), n)


@dataclass(frozen=True)
class ReportRow:
    """One (agent, env/dataset, grid point) group of a sweep.

    Attributes:
        agent: Agent name.
        target: Env id or dataset.
        grid: Grid point label (``"key=value,..."``; ``""`` without a grid).
        metric: The aggregated metric.
        stats: Aggregate over the seeds with a value.
        failed: Seeds without a ``DONE`` marker.
        seeds: Seeds with a value, in the order of ``values``.
        values: Their final values.
    """

    agent: str
    target: str
    grid: str
    metric: str
    stats: Stats
    failed: int
    seeds: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class _Group:
    agent: str
    target: str
    grid: str
    trials: tuple[Trial, ...]


def _groups(trials: Sequence[Trial]) -> list[_Group]:
    order: dict[tuple[str, str, str], list[Trial]] = {}
    for trial in trials:
        order.setdefault((trial.agent, trial.target, trial.grid_label), []).append(trial)
    return [_Group(a, t, g, tuple(ts)) for (a, t, g), ts in order.items()]


def metric_series(columns: dict[str, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of one column: finite values only, sorted by step, the last row kept per step."""
    if metric not in columns:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    steps, values = columns[STEP_COLUMN], columns[metric]
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    if steps.size:
        last = np.r_[steps[1:] != steps[:-1], True]  # the last row of each step
        steps, values = steps[last], values[last]
    return steps, values


def _has(columns: dict[str, np.ndarray], metric: str) -> bool:
    return metric in columns and bool(np.isfinite(columns[metric]).any())


def _choose_metric(runs: Sequence[dict[str, np.ndarray]], metric: str | None) -> str:
    if metric:
        return metric
    for candidate in DEFAULT_METRICS:
        if any(_has(c, candidate) for c in runs):
            return candidate
    return DEFAULT_METRICS[-1]


def build_report(
    sweep_dir: Path | str, metric: str | None = None
) -> tuple[list[ReportRow], dict[str, list[tuple[ReportRow, list[tuple[np.ndarray, np.ndarray]]]]]]:
    """Aggregate a sweep directory.

    Args:
        sweep_dir: Written by ``mbrl sweep``.
        metric: Override the metric (default: the spec's, else per group as in the module docstring).

    Returns:
        ``(rows, curves)``: one :class:`ReportRow` per group in spec order, and per env/dataset the groups'
        per-seed ``(steps, values)`` learning curves.

    Raises:
        FileNotFoundError: Not a sweep directory.
        ValueError: ``metric`` is logged by no finished trial (the available columns are named).
    """
    sweep_dir = Path(sweep_dir)
    data = read_sweep_json(sweep_dir)
    trials = [Trial.from_json(t) for t in data["trials"]]
    chosen = metric or data.get("metric") or None
    rows: list[ReportRow] = []
    curves: dict[str, list[tuple[ReportRow, list[tuple[np.ndarray, np.ndarray]]]]] = {}
    available: set[str] = set()
    for group in _groups(trials):
        finished: list[tuple[Trial, dict[str, np.ndarray]]] = []
        failed = 0
        for trial in group.trials:
            if read_done(sweep_dir, trial.id) is None:
                failed += 1
                continue
            run_dir = trial.run_dir(sweep_dir)
            columns = read_csv(run_dir) if (run_dir / "progress.csv").is_file() else {}
            available.update(k for k in columns if "/" in k)
            finished.append((trial, columns))
        name = _choose_metric([c for _, c in finished], chosen)
        seeds, values, series = [], [], []
        for trial, columns in finished:
            steps, vals = metric_series(columns, name)
            if vals.size:
                seeds.append(trial.seed)
                values.append(float(vals[-1]))
                series.append((steps, vals))
        row = ReportRow(
            group.agent,
            group.target,
            group.grid,
            name,
            aggregate(values),
            failed,
            tuple(seeds),
            tuple(values),
        )
        rows.append(row)
        curves.setdefault(group.target, []).append((row, series))
    if chosen and available and not any(r.stats.n for r in rows):
        raise ValueError(
            f"{sweep_dir}: no finished trial logged {chosen!r}; logged metrics: {', '.join(sorted(available))}"
        )
    return rows, curves


def mean_curve(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and standard error over seeds of ``(steps, values)`` curves.

    The seeds are put on the union of their steps inside the range all of them cover (linear interpolation;
    exact where they share steps).

    Returns:
        ``(steps [S], mean [S], se [S])`` (se 0 for one seed), or ``None`` when the seeds share no step range.
    """
    series = [(s.astype(np.float64), v) for s, v in series if s.size]
    if not series:
        return None
    lo = max(float(s[0]) for s, _ in series)
    hi = min(float(s[-1]) for s, _ in series)
    if lo > hi:
        return None
    grid = np.unique(np.concatenate([s for s, _ in series]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    stacked = np.stack([np.interp(grid, s, v) for s, v in series])
    k = stacked.shape[0]
    se = stacked.std(axis=0, ddof=1) / math.sqrt(k) if k > 1 else np.zeros(grid.size)
    return grid, stacked.mean(axis=0), se


def _fmt(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.4g}"


def markdown_table(rows: Sequence[ReportRow], target_header: str = "env") -> str:
    """The Markdown table of :func:`build_report`'s rows (a grid column only when some group has a grid)."""
    with_grid = any(r.grid for r in rows)
    head = [
        "agent",
        target_header,
        *(["grid"] if with_grid else []),
        "metric",
        "mean ± SE",
        "IQM",
        "n",
        "failed",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        mean = _fmt(r.stats.mean) if r.stats.n < 2 else f"{_fmt(r.stats.mean)} ± {_fmt(r.stats.se)}"
        cells = [
            r.agent,
            r.target,
            *([r.grid or "—"] if with_grid else []),
            r.metric,
            mean,
            _fmt(r.stats.iqm),
            str(r.stats.n),
            str(r.failed),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: Sequence[ReportRow], path: Path) -> Path:
    """``report.csv``: agent, target, grid, metric, mean, se, iqm, n, failed, seeds, values (``;``-joined)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["agent", "target", "grid", "metric", "mean", "se", "iqm", "n", "failed", "seeds", "values"]
        )
        for r in rows:
            writer.writerow(
                [
                    r.agent,
                    r.target,
                    r.grid,
                    r.metric,
                    repr(r.stats.mean),
                    repr(r.stats.se),
                    repr(r.stats.iqm),
                    r.stats.n,
                    r.failed,
                    ";".join(map(str, r.seeds)),
                    ";".join(repr(v) for v in r.values),
                ]
            )
    return path


def plot_curves(
    curves: dict[str, list[tuple[ReportRow, list[tuple[np.ndarray, np.ndarray]]]]],
    out_dir: Path,
    target_kind: str = "env",
) -> list[Path]:
    """One PNG per env/dataset: mean over seeds with a ± standard-error band, one line per agent/grid point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kind = "env" if target_kind == "env" else "dataset"
    labels = target_labels(list(curves), kind)  # type: ignore[arg-type]
    written = []
    for target, groups in curves.items():
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        metrics = []
        drawn = 0
        for row, series in groups:
            curve = mean_curve(series)
            if curve is None:
                continue
            steps, mean, se = curve
            label = f"{row.agent} {row.grid}".strip() + f" (n={len(series)})"
            (line,) = ax.plot(steps, mean, lw=1.5, label=label, marker="." if steps.size < 30 else None)
            if len(series) > 1:
                ax.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2, lw=0)
            if row.metric not in metrics:
                metrics.append(row.metric)
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=8)
        ax.set_title(f"{target} (mean ± SE over seeds)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(", ".join(metrics))
        ax.grid(alpha=0.3)
        path = out_dir / f"curves_{labels[target]}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def write_report(
    sweep_dir: Path | str, metric: str | None = None, out: Path | str | None = None
) -> dict[str, Any]:
    """Build the report of a sweep and write ``report.md``, ``report.csv`` and the curve PNGs.

    Returns:
        ``{"rows": [ReportRow], "table": markdown, "files": [paths]}``.
    """
    sweep_dir = Path(sweep_dir)
    data = read_sweep_json(sweep_dir)
    rows, curves = build_report(sweep_dir, metric)
    kind = "env"
    if data["trials"]:
        kind = str(data["trials"][0].get("target_kind", "env"))
    table = markdown_table(rows, "env" if kind == "env" else "dataset")
    out_dir = Path(out) if out is not None else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    name = data.get("name", sweep_dir.name)
    md = out_dir / "report.md"
    md.write_text(
        f"# Sweep {name}\n\n"
        "Final metric per group over seeds: mean ± standard error, IQM (interquartile mean, as rliable), "
        "n seeds with a value, failed = seeds that did not finish.\n\n" + table + "\n"
    )
    files = [md, write_csv(rows, out_dir / "report.csv"), *plot_curves(curves, out_dir, kind)]
    return {"rows": rows, "table": table, "files": files}


def report_command(
    sweep_dir: Annotated[str, tyro.conf.arg(metavar="SWEEP_DIR")],
    /,
    metric: str | None = None,
    out: str | None = None,
) -> int:
    """Aggregate a sweep over seeds: mean ± SE and IQM table (Markdown, CSV) and learning-curve PNGs.

    Args:
        sweep_dir: a directory written by `mbrl sweep`.
        metric: the metric to aggregate (default: the spec's, else eval/normalized_score if logged, else
            eval/return_mean).
        out: where report.md, report.csv and the PNGs go (default: SWEEP_DIR).
    """
    result = write_report(sweep_dir, metric, out)
    print(result["table"])
    print()
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
