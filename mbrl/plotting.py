"""PNG learning curves of a run from its ``progress.csv`` (:func:`plot_run`, ``mbrl plot``): one figure per key
namespace, one subplot per key, drawn with a Figure and the Agg canvas (no pyplot, no GUI backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from mbrl.logging import CSV_NAME, STEP_COLUMN, WALL_TIME_COLUMN, read_csv

_NOT_CURVES = frozenset({"eval/episodes"})
"""Columns that record a setting, not a learning curve (a flat line in every plot): left out by default."""


def plot_run(
    run_dir: Path | str, out_dir: Path | str | None = None, keys: Sequence[str] | None = None
) -> list[Path]:
    """Write PNG learning curves from a run's ``progress.csv``: one PNG per namespace, one subplot per key.

    Args:
        run_dir: The run directory (holding ``progress.csv``).
        out_dir: Where the PNGs go (default ``run_dir/plots``; created if missing).
        keys: Only these keys (default: every key in the CSV but settings logged as columns, such as
            ``eval/episodes``).

    Returns:
        The PNG paths written, e.g. ``[plots/eval.png, plots/train.png]``.

    Raises:
        FileNotFoundError: ``run_dir`` or its CSV is missing.
        ValueError: The CSV has no metrics, or a requested key is not in it.
    """
    # Figure + Agg canvas directly (no pyplot): no global backend switch, no GUI, safe in threads and tests.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    csv_path = run_dir / CSV_NAME
    if not csv_path.is_file():
        raise FileNotFoundError(f"no {CSV_NAME} in {run_dir} (nothing logged yet?)")
    columns = read_csv(csv_path)
    available = [k for k in columns if k not in (STEP_COLUMN, WALL_TIME_COLUMN)]
    if keys:
        missing = [k for k in keys if k not in available]
        if missing:
            raise ValueError(f"{csv_path}: no column {', '.join(map(repr, missing))}; available: {available}")
        chosen = list(keys)
    else:
        chosen = [k for k in available if k not in _NOT_CURVES]
    if not chosen:
        raise ValueError(f"{csv_path}: no metrics to plot (columns {list(columns)})")

    groups: dict[str, list[str]] = {}
    for key in chosen:
        groups.setdefault(key.split("/", 1)[0], []).append(key)
    order = np.argsort(columns[STEP_COLUMN], kind="stable")  # a resumed run may append out of order
    steps = columns[STEP_COLUMN][order]
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for namespace, group in sorted(groups.items()):
        ncols = min(3, len(group))
        nrows = math.ceil(len(group) / ncols)
        fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
        FigureCanvasAgg(fig)
        for i, key in enumerate(group):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            values = columns[key][order]
            finite = np.isfinite(values)
            if finite.any():
                ax.plot(steps[finite], values[finite], marker="." if finite.sum() < 50 else None, lw=1.2)
            else:
                ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(key, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{run_dir.name}: {namespace}/")
        path = out / f"{namespace}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def plot_command(
    run_dir: Annotated[str, tyro.conf.arg(metavar="RUN_DIR")],
    /,
    keys: Annotated[tuple[str, ...], tyro.conf.arg(metavar="KEY [KEY ...]")] = (),
) -> int:
    """Write PNG learning curves of a run from its CSV.

    One PNG per key namespace (train, eval, model, ...) in ``RUN_DIR/plots``.

    Args:
        run_dir: The run directory holding progress.csv.
        keys: Only plot these keys (e.g. eval/return train/critic_loss); default all.
    """
    for path in plot_run(run_dir, keys=keys or None):
        print(path)
    return 0
