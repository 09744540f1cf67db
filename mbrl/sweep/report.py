"""``mbrl report SWEEP_DIR``: aggregate a sweep's final metrics over seeds into tables and learning curves.

Per (agent, env/dataset, grid point), over the seeds whose trial finished (a ``DONE`` marker):

- the final value of the metric: its last finite value in ``progress.csv`` (rows in step order);
- mean ± standard error (``std(ddof=1) / sqrt(n)``; undefined for n = 1);
- IQM, the interquartile mean recommended by rliable (Agarwal et al., "Deep RL at the Edge of the Statistical
  Precipice", NeurIPS 2021): ``scipy.stats.trim_mean(x, 0.25)``, as rliable computes it. It drops
  ``floor(n / 4)`` values at each end and averages the rest, so for n < 4 nothing is dropped and IQM = mean;
- a 95 % confidence interval ``[low, high]`` for the mean and one for the IQM: rliable's percentile bootstrap
  (``scipy.stats.bootstrap(..., method="percentile")``, seeds resampled with replacement; 10 000 resamples and
  seed 0 by default, so a report is reproducible). Undefined (``—``, NaN in the CSV) for n < 2;
- n, the number of seeds with a value, and ``failed``, the number of seeds without a ``DONE`` marker (failed,
  or not run yet). A finished seed that never logged the metric counts in neither. A seed the sweep's scheduler
  stopped early (a ``STOPPED`` marker) counts as ``stopped`` (a column shown when some seed is), not aggregated.

Across tasks, when the sweep has more than one env/dataset and every group's metric is comparable across them
(``eval/normalized_score``; raw returns have per-task scales, so then the report says why it shows none): per
(agent, grid point), rliable's aggregate IQM (the IQM of all runs of all tasks pooled) and aggregate mean (the
mean of the per-task means, each task weighted equally), with 95 % CIs from rliable's stratified bootstrap: the
seeds are resampled within each task, never across tasks (``scipy.stats.bootstrap`` with one sample per task,
``paired=False``). They need a value on every task (else ``—``) and their CIs at least 2 seeds on every task.

The metric: ``--metric``, else the spec's ``metric``, else per group ``eval/normalized_score`` when a finished
trial of the group logs it (offline runs with reference scores), else ``eval/return_mean``.

Writes ``report.md`` (the Markdown tables), ``report.csv`` (one row per group, with the CI bounds and the per-seed
values), ``report_aggregate.csv`` (the across-tasks rows, when shown) and ``curves_<env-or-dataset>.png`` (mean
over seeds with a ± standard-error band against the ``step`` column, one line per agent and grid point). Seeds
are put on common steps by linear interpolation over the range all of them cover; when they logged at the same
steps (the usual case) this is exact.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from mbrl.logging import STEP_COLUMN, read_csv
from mbrl.sweep.files import read_done, read_stopped, read_sweep_json
from mbrl.sweep.spec import Trial, target_labels

DEFAULT_METRICS = ("eval/normalized_score", "eval/return_mean")
COMPARABLE_METRICS = ("eval/normalized_score",)
"""Metrics on one scale across envs/datasets: only these are aggregated across tasks."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` (NaN bounds where undefined)."""

    low: float
    high: float

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


UNDEFINED = Interval(math.nan, math.nan)


@dataclass(frozen=True)
class BootstrapSettings:
    """How the confidence intervals are estimated: rliable's percentile (stratified) bootstrap.

    Attributes:
        confidence: Coverage of the intervals (0.95: 95 % CIs, rliable's default).
        reps: Bootstrap resamples.
        seed: Seed of the resampling (every interval starts from it, so a report is reproducible and a group's
            interval does not depend on the other groups).
    """

    confidence: float = 0.95
    reps: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.reps < 1:
            raise ValueError(f"the number of bootstrap resamples must be >= 1, got {self.reps}")


DEFAULT_BOOTSTRAP = BootstrapSettings()


def iqm(values: np.ndarray, axis: int = -1) -> Any:
    """Interquartile mean, rliable's ``scipy.stats.trim_mean(x, 0.25)`` along ``axis``."""
    from scipy.stats import trim_mean

    return trim_mean(values, 0.25, axis=axis)


def pooled_iqm(*tasks: np.ndarray, axis: int = -1) -> Any:
    """rliable's aggregate IQM: the IQM of all tasks' runs pooled (one task: its IQM)."""
    return iqm(np.concatenate(tasks, axis=axis), axis=axis)


def mean_of_task_means(*tasks: np.ndarray, axis: int = -1) -> Any:
    """rliable's aggregate mean: the mean over tasks of each task's mean (one task: its mean)."""
    return np.mean([np.mean(t, axis=axis) for t in tasks], axis=0)


def stratified_bootstrap_ci(
    tasks: Sequence[np.ndarray],
    statistic: Callable[..., Any],
    settings: BootstrapSettings = DEFAULT_BOOTSTRAP,
) -> Interval:
    """Percentile bootstrap CI of ``statistic(*tasks)``, each task's runs resampled separately (stratified).

    ``scipy.stats.bootstrap`` with one sample per task and ``paired=False`` resamples every sample with
    replacement on its own, keeping its size: rliable's ``StratifiedBootstrap``, here also for tasks of
    different sizes. One task is the plain bootstrap over its runs.

    Returns:
        The interval, or :data:`UNDEFINED` when a task has fewer than 2 runs (nothing to resample).
    """
    from scipy.stats import bootstrap

    if not tasks or any(t.size < 2 for t in tasks):
        return UNDEFINED
    result = bootstrap(
        tuple(tasks),
        statistic,
        n_resamples=settings.reps,
        vectorized=True,
        paired=False,
        confidence_level=settings.confidence,
        method="percentile",
        random_state=np.random.default_rng(settings.seed),  # ``rng=`` only from scipy 1.15
    )
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high))


@dataclass(frozen=True)
class Stats:
    """Aggregate of one group's final values over seeds.

    Attributes:
        mean: Mean (NaN for n = 0).
        se: Standard error of the mean, ``std(ddof=1) / sqrt(n)`` (NaN for n < 2).
        iqm: Interquartile mean, ``scipy.stats.trim_mean(x, 0.25)`` (NaN for n = 0).
        n: Number of values.
        mean_ci: Bootstrap confidence interval of the mean (undefined for n < 2).
        iqm_ci: Bootstrap confidence interval of the IQM (undefined for n < 2).
    """

    mean: float
    se: float
    iqm: float
    n: int
    mean_ci: Interval = UNDEFINED
    iqm_ci: Interval = UNDEFINED


def _finite_array(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: non-finite values {x.tolist()}")
    return x


def aggregate(values: Sequence[float], bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP) -> Stats:
    """Mean, standard error, IQM and their bootstrap CIs of per-seed values (see the module docstring).

    Raises:
        ValueError: A value is not finite.
    """
    x = _finite_array(values, "aggregate")
    n = int(x.size)
    if n == 0:
        return Stats(math.nan, math.nan, math.nan, 0)
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Stats(
        float(x.mean()),
        se,
        float(iqm(x)),
        n,
        stratified_bootstrap_ci([x], mean_of_task_means, bootstrap),
        stratified_bootstrap_ci([x], pooled_iqm, bootstrap),
    )


@dataclass(frozen=True)
class TaskAggregate:
    """rliable's aggregates of one agent/grid point across tasks (see the module docstring).

    Attributes:
        mean: Mean of the per-task means (NaN unless every task has a value).
        iqm: IQM of all runs pooled (NaN unless every task has a value).
        mean_ci: Stratified-bootstrap CI of ``mean`` (undefined unless every task has >= 2 runs).
        iqm_ci: Stratified-bootstrap CI of ``iqm`` (likewise).
        tasks: Tasks with a value.
        n: Runs over all tasks.
    """

    mean: float
    iqm: float
    mean_ci: Interval
    iqm_ci: Interval
    tasks: int
    n: int


def aggregate_tasks(
    tasks: Sequence[Sequence[float]], bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP
) -> TaskAggregate:
    """Aggregate mean and IQM over tasks with stratified-bootstrap CIs, from each task's per-seed values.

    Raises:
        ValueError: A value is not finite.
    """
    arrays = [_finite_array(t, "aggregate_tasks") for t in tasks]
    with_values = sum(a.size > 0 for a in arrays)
    n = sum(a.size for a in arrays)
    if not arrays or with_values < len(arrays):
        return TaskAggregate(math.nan, math.nan, UNDEFINED, UNDEFINED, with_values, n)
    return TaskAggregate(
        float(mean_of_task_means(*arrays)),
        float(pooled_iqm(*arrays)),
        stratified_bootstrap_ci(arrays, mean_of_task_means, bootstrap),
        stratified_bootstrap_ci(arrays, pooled_iqm, bootstrap),
        with_values,
        n,
    )


@dataclass(frozen=True)
class ReportRow:
    """One (agent, env/dataset, grid point) group of a sweep.

    Attributes:
        agent: Agent name.
        target: Env id or dataset.
        grid: Grid point label (``"key=value,..."``; ``""`` without a grid).
        metric: The aggregated metric.
        stats: Aggregate over the seeds with a value.
        failed: Seeds without a ``DONE`` or ``STOPPED`` marker.
        seeds: Seeds with a value, in the order of ``values``.
        values: Their final values.
        stopped: Seeds the scheduler stopped early (a ``STOPPED`` marker).
    """

    agent: str
    target: str
    grid: str
    metric: str
    stats: Stats
    failed: int
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    stopped: int = 0


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
    sweep_dir: Path | str, metric: str | None = None, bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP
) -> tuple[list[ReportRow], dict[str, list[tuple[ReportRow, list[tuple[np.ndarray, np.ndarray]]]]]]:
    """Aggregate a sweep directory.

    Args:
        sweep_dir: Written by ``mbrl sweep``.
        metric: Override the metric (default: the spec's, else per group as in the module docstring).
        bootstrap: How the confidence intervals are estimated.

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
        failed = stopped = 0
        for trial in group.trials:
            if read_done(sweep_dir, trial.id) is None:
                early = read_stopped(sweep_dir, trial.id) is not None
                stopped, failed = stopped + early, failed + (not early)
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
            aggregate(values, bootstrap),
            failed,
            tuple(seeds),
            tuple(values),
            stopped,
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


@dataclass(frozen=True)
class AcrossTasksRow:
    """One (agent, grid point) aggregated across the sweep's envs/datasets.

    Attributes:
        agent: Agent name.
        grid: Grid point label (``""`` without a grid).
        metric: The aggregated metric (one of :data:`COMPARABLE_METRICS`).
        targets: The envs/datasets, in spec order.
        stats: The aggregates (:func:`aggregate_tasks`).
    """

    agent: str
    grid: str
    metric: str
    targets: tuple[str, ...]
    stats: TaskAggregate


def _targets(rows: Sequence[ReportRow]) -> list[str]:
    return list(dict.fromkeys(r.target for r in rows))


def across_tasks_skipped(rows: Sequence[ReportRow]) -> str | None:
    """Why :func:`across_tasks` has nothing to aggregate (``None``: it has).

    Only a sweep of several envs/datasets whose groups with a value all report a metric of
    :data:`COMPARABLE_METRICS` is aggregated across them.
    """
    if len(_targets(rows)) < 2:
        return "the sweep has one env/dataset"
    metrics = sorted({r.metric for r in rows if r.stats.n})
    if not metrics:
        return "no finished trial logged the metric"
    others = [m for m in metrics if m not in COMPARABLE_METRICS]
    if others:
        return (
            f"{', '.join(others)} is not on a common scale across envs/datasets (only "
            f"{', '.join(COMPARABLE_METRICS)} is; pass `--metric {COMPARABLE_METRICS[0]}` if the runs log it)"
        )
    return None


def across_tasks(
    rows: Sequence[ReportRow], bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP
) -> list[AcrossTasksRow]:
    """Per (agent, grid point), the aggregates over all envs/datasets of the sweep (see the module docstring).

    Returns:
        One row per (agent, grid point) in spec order; ``[]`` when :func:`across_tasks_skipped` gives a reason.
    """
    if across_tasks_skipped(rows) is not None:
        return []
    targets = _targets(rows)
    metric = next(r.metric for r in rows if r.stats.n)
    by_key: dict[tuple[str, str], dict[str, ReportRow]] = {}
    for r in rows:
        by_key.setdefault((r.agent, r.grid), {})[r.target] = r
    result = []
    for (agent, grid), per_target in by_key.items():
        values = [per_target[t].values if t in per_target else () for t in targets]
        result.append(AcrossTasksRow(agent, grid, metric, tuple(targets), aggregate_tasks(values, bootstrap)))
    return result


def _fmt(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.4g}"


def _fmt_ci(ci: Interval) -> str:
    return f"[{_fmt(ci.low)}, {_fmt(ci.high)}]" if ci.defined else "—"


def _ci_header(confidence: float) -> str:
    return f"{100 * confidence:g} % CI"


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def markdown_table(
    rows: Sequence[ReportRow], target_header: str = "env", confidence: float = DEFAULT_BOOTSTRAP.confidence
) -> str:
    """The Markdown table of :func:`build_report`'s rows (a grid column only when some group has a grid)."""
    with_grid = any(r.grid for r in rows)
    with_stopped = any(r.stopped for r in rows)
    ci = _ci_header(confidence)
    head = [
        "agent",
        target_header,
        *(["grid"] if with_grid else []),
        "metric",
        "mean ± SE",
        f"mean {ci}",
        "IQM",
        f"IQM {ci}",
        "n",
        "failed",
        *(["stopped"] if with_stopped else []),
    ]
    body = []
    for r in rows:
        mean = _fmt(r.stats.mean) if r.stats.n < 2 else f"{_fmt(r.stats.mean)} ± {_fmt(r.stats.se)}"
        body.append(
            [
                r.agent,
                r.target,
                *([r.grid or "—"] if with_grid else []),
                r.metric,
                mean,
                _fmt_ci(r.stats.mean_ci),
                _fmt(r.stats.iqm),
                _fmt_ci(r.stats.iqm_ci),
                str(r.stats.n),
                str(r.failed),
                *([str(r.stopped)] if with_stopped else []),
            ]
        )
    return _table(head, body)


def across_tasks_table(
    rows: Sequence[AcrossTasksRow], confidence: float = DEFAULT_BOOTSTRAP.confidence
) -> str:
    """The Markdown table of :func:`across_tasks`'s rows (a grid column only when some row has a grid)."""
    with_grid = any(r.grid for r in rows)
    ci = _ci_header(confidence)
    head = ["agent", *(["grid"] if with_grid else []), "metric", "mean", f"mean {ci}", "IQM", f"IQM {ci}"]
    head += ["tasks", "n"]
    body = [
        [
            r.agent,
            *([r.grid or "—"] if with_grid else []),
            r.metric,
            _fmt(r.stats.mean),
            _fmt_ci(r.stats.mean_ci),
            _fmt(r.stats.iqm),
            _fmt_ci(r.stats.iqm_ci),
            f"{r.stats.tasks}/{len(r.targets)}",
            str(r.stats.n),
        ]
        for r in rows
    ]
    return _table(head, body)


REPORT_CSV_COLUMNS = (
    "agent",
    "target",
    "grid",
    "metric",
    "mean",
    "se",
    "mean_ci_low",
    "mean_ci_high",
    "iqm",
    "iqm_ci_low",
    "iqm_ci_high",
    "n",
    "failed",
    "seeds",
    "values",
)
AGGREGATE_CSV_COLUMNS = (
    "agent",
    "grid",
    "metric",
    "mean",
    "mean_ci_low",
    "mean_ci_high",
    "iqm",
    "iqm_ci_low",
    "iqm_ci_high",
    "tasks",
    "n_tasks",
    "n",
    "targets",
)


def write_csv(rows: Sequence[ReportRow], path: Path) -> Path:
    """``report.csv``: agent, target, grid, metric, mean, se, mean_ci_low, mean_ci_high, iqm, iqm_ci_low,
    iqm_ci_high, n, failed, seeds, values (``;``-joined). Numbers as ``repr`` (round-trip exact; ``nan``)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(REPORT_CSV_COLUMNS)
        for r in rows:
            s = r.stats
            writer.writerow(
                [
                    r.agent,
                    r.target,
                    r.grid,
                    r.metric,
                    *map(repr, (s.mean, s.se, s.mean_ci.low, s.mean_ci.high)),
                    *map(repr, (s.iqm, s.iqm_ci.low, s.iqm_ci.high)),
                    s.n,
                    r.failed,
                    ";".join(map(str, r.seeds)),
                    ";".join(repr(v) for v in r.values),
                ]
            )
    return path


def write_across_tasks_csv(rows: Sequence[AcrossTasksRow], path: Path) -> Path:
    """``report_aggregate.csv``: agent, grid, metric, mean, mean_ci_low, mean_ci_high, iqm, iqm_ci_low,
    iqm_ci_high, tasks (with a value), n_tasks, n (runs), targets (``;``-joined)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(AGGREGATE_CSV_COLUMNS)
        for r in rows:
            s = r.stats
            writer.writerow(
                [
                    r.agent,
                    r.grid,
                    r.metric,
                    *map(repr, (s.mean, s.mean_ci.low, s.mean_ci.high, s.iqm, s.iqm_ci.low, s.iqm_ci.high)),
                    s.tasks,
                    len(r.targets),
                    s.n,
                    ";".join(r.targets),
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


def _ci_method(bootstrap: BootstrapSettings) -> str:
    return (
        f"{_ci_header(bootstrap.confidence)}s: rliable's percentile bootstrap ({bootstrap.reps} resamples, "
        f"seed {bootstrap.seed})"
    )


def across_tasks_markdown(
    rows: Sequence[ReportRow],
    aggregated: Sequence[AcrossTasksRow],
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
    target_kind: str = "env",
) -> str:
    """The report's "Across tasks" section: the table of ``aggregated``, or why there is none.

    Returns:
        ``""`` for a sweep of one env/dataset.
    """
    targets = _targets(rows)
    if len(targets) < 2:
        return ""
    skipped = across_tasks_skipped(rows)
    if skipped is not None or not aggregated:
        return f"## Across tasks\n\nNot shown: {skipped}."
    plural = "envs" if target_kind == "env" else "datasets"
    return (
        f"## Across tasks\n\n{aggregated[0].metric} per agent and grid point over the {len(targets)} {plural} "
        f"({', '.join(targets)}): mean = the mean of the per-task means, IQM = the IQM of all runs pooled "
        f"(rliable's aggregates). {_ci_method(bootstrap)}, stratified: seeds resampled within each task; — "
        f"unless every task has at least 2 seeds. tasks = {plural} with a value (mean and IQM need all), "
        "n = runs.\n\n" + across_tasks_table(aggregated, bootstrap.confidence)
    )


def write_report(
    sweep_dir: Path | str,
    metric: str | None = None,
    out: Path | str | None = None,
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
) -> dict[str, Any]:
    """Build the report of a sweep and write ``report.md``, ``report.csv``, ``report_aggregate.csv`` (when
    there is an across-tasks table) and the curve PNGs.

    Returns:
        ``{"rows": [ReportRow], "table": markdown, "across_tasks": [AcrossTasksRow], "across_tasks_md":
        markdown section ("" for one env/dataset), "files": [paths]}``.
    """
    sweep_dir = Path(sweep_dir)
    data = read_sweep_json(sweep_dir)
    rows, curves = build_report(sweep_dir, metric, bootstrap)
    kind = "env"
    if data["trials"]:
        kind = str(data["trials"][0].get("target_kind", "env"))
    table = markdown_table(rows, "env" if kind == "env" else "dataset", bootstrap.confidence)
    aggregated = across_tasks(rows, bootstrap)
    section = across_tasks_markdown(rows, aggregated, bootstrap, kind)
    out_dir = Path(out) if out is not None else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    name = data.get("name", sweep_dir.name)
    md = out_dir / "report.md"
    md.write_text(
        f"# Sweep {name}\n\n"
        "Final metric per group over seeds: mean ± standard error, IQM (interquartile mean, as rliable), "
        f"n seeds with a value, failed = seeds that did not finish. {_ci_method(bootstrap)} over seeds; "
        "— for n < 2.\n\n" + table + "\n" + (f"\n{section}\n" if section else "")
    )
    files = [md, write_csv(rows, out_dir / "report.csv")]
    if aggregated:
        files.append(write_across_tasks_csv(aggregated, out_dir / "report_aggregate.csv"))
    files += plot_curves(curves, out_dir, kind)
    return {
        "rows": rows,
        "table": table,
        "across_tasks": aggregated,
        "across_tasks_md": section,
        "files": files,
    }


def report_command(
    sweep_dir: Annotated[str, tyro.conf.arg(metavar="SWEEP_DIR")],
    /,
    metric: str | None = None,
    out: str | None = None,
    confidence: float = DEFAULT_BOOTSTRAP.confidence,
    ci_reps: int = DEFAULT_BOOTSTRAP.reps,
    seed: int = DEFAULT_BOOTSTRAP.seed,
) -> int:
    """Aggregate a sweep over seeds: mean ± SE, IQM and their bootstrap CIs per group and across envs/datasets
    (Markdown, CSV) and learning-curve PNGs.

    Args:
        sweep_dir: a directory written by `mbrl sweep`.
        metric: the metric to aggregate (default: the spec's, else eval/normalized_score if logged, else
            eval/return_mean).
        out: where report.md, report.csv, report_aggregate.csv and the PNGs go (default: SWEEP_DIR).
        confidence: coverage of the confidence intervals (rliable's percentile bootstrap over seeds).
        ci_reps: bootstrap resamples per interval.
        seed: seed of the bootstrap resampling (the same seed gives the same report).
    """
    bootstrap = BootstrapSettings(confidence, ci_reps, seed)
    result = write_report(sweep_dir, metric, out, bootstrap)
    print(result["table"])
    print()
    if result["across_tasks_md"]:
        print(result["across_tasks_md"])
        print()
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
