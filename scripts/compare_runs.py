"""Compare groups of finished run directories (e.g. seeds of two agents) without a sweep directory.

For each group: the final value of the metric per run (its last finite value in ``progress.csv``), mean ±
standard error and IQM over runs (as ``mbrl report``), the mean of each run's last ``--last-k`` evaluations (a
steadier figure when single evaluations are noisy), and a PNG of the mean curve with a ± SE band. The ratio of
each group's mean to the first group's is printed, so "Dyna vs SAC at 25k steps" is one command:

    python scripts/compare_runs.py --group sac runs/hopper25k/sac_s0 runs/hopper25k/sac_s1 runs/hopper25k/sac_s2 \
        --group dyna runs/hopper25k/dyna_s0 runs/hopper25k/dyna_s1 runs/hopper25k/dyna_s2 \
        --title "Hopper-v5, 25k env steps" --out results/hopper25k

Writes ``OUT/compare.md``, ``OUT/compare.json`` and ``OUT/compare.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mbrl.logging import read_csv
from mbrl.sweep.report import aggregate, mean_curve, metric_series


def parse_groups(tokens: list[list[str]]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for name, *dirs in tokens:
        if not dirs:
            raise SystemExit(f"--group {name}: give at least one run directory")
        missing = [d for d in dirs if not (Path(d) / "progress.csv").is_file()]
        if missing:
            raise SystemExit(f"--group {name}: no progress.csv in {', '.join(missing)}")
        groups[name] = [Path(d) for d in dirs]
    return groups


def summarize(groups: dict[str, list[Path]], metric: str, last_k: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name, dirs in groups.items():
        series = [metric_series(read_csv(d), metric) for d in dirs]
        empty = [str(d) for d, (_, v) in zip(dirs, series, strict=True) if not v.size]
        if empty:
            raise SystemExit(f"{metric!r} was never logged in {', '.join(empty)}")
        finals = [float(v[-1]) for _, v in series]
        last = [float(v[-last_k:].mean()) for _, v in series]
        stats = aggregate(finals)
        out[name] = {
            "runs": [str(d) for d in dirs],
            "final": finals,
            f"last{last_k}": last,
            "mean": stats.mean,
            "se": stats.se,
            "iqm": stats.iqm,
            f"last{last_k}_mean": float(np.mean(last)),
            "series": series,
        }
    return out


def markdown(summary: dict[str, dict], metric: str, last_k: int) -> str:
    first = next(iter(summary.values()))
    lines = [
        f"| group | final {metric} per run | mean ± SE | IQM | mean of last {last_k} evals | ratio to "
        f"{next(iter(summary))} (final / last {last_k}) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        runs = ", ".join(f"{v:.1f}" for v in s["final"])
        r1 = s["mean"] / first["mean"] if first["mean"] else float("nan")
        r2 = (
            s[f"last{last_k}_mean"] / first[f"last{last_k}_mean"]
            if first[f"last{last_k}_mean"]
            else float("nan")
        )
        lines.append(
            f"| {name} (n={len(s['final'])}) | {runs} | {s['mean']:.1f} ± {s['se']:.1f} | {s['iqm']:.1f} | "
            f"{s[f'last{last_k}_mean']:.1f} | {r1:.2f}× / {r2:.2f}× |"
        )
    return "\n".join(lines)


def plot(summary: dict[str, dict], metric: str, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, s in summary.items():
        curve = mean_curve(s["series"])
        if curve is None:
            continue
        steps, mean, se = curve
        (line,) = ax.plot(steps, mean, lw=1.5, marker=".", label=f"{name} (n={len(s['series'])})")
        ax.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_title(f"{title} (mean ± SE over runs)", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "RUN_DIR"),
        help="a group name followed by its run directories (repeat per group)",
    )
    parser.add_argument("--metric", default="eval/return_mean")
    parser.add_argument("--last-k", type=int, default=3, help="evaluations averaged for the steadier figure")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", default="results/compare")
    args = parser.parse_args(argv)
    if args.last_k < 1:
        parser.error("--last-k must be >= 1")
    groups = parse_groups(args.group)
    summary = summarize(groups, args.metric, args.last_k)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(summary, args.metric, args.last_k)
    (out / "compare.md").write_text((f"{args.title}\n\n" if args.title else "") + table + "\n")
    plot(summary, args.metric, args.title or args.metric, out / "compare.png")
    dump = {k: {kk: vv for kk, vv in v.items() if kk != "series"} for k, v in summary.items()}
    (out / "compare.json").write_text(json.dumps({"metric": args.metric, "groups": dump}, indent=1))
    print(table)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.png'}, {out / 'compare.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
