"""Table and curves of finished offline runs: every arm of ``scripts/offline_benchmark.py`` in one or more output
dirs (e.g. the plain agents and their ``--set ... --tag`` arms), per dataset.

For each (dataset, arm): the final normalized score per seed, mean ± standard error, the mean of each run's last
three evaluations (less noisy than the last one alone), the best evaluation of each run (where a run peaked before
it ended), the final mean Q and the data's fingerprint; a PNG per dataset with the normalized score and the
critics' mean Q against updates, one line per run. Usage::

    python scripts/offline_report.py results/abl_mopo_50000 [more dirs] --out docs/results/ablation

Writes ``OUT.md``, ``OUT.json`` and ``OUT_<dataset>.png``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def load_runs(dirs: list[Path]) -> list[dict[str, Any]]:
    """Every ``runs/<env>-<split>/<arm>-s<seed>/result.json`` with its mean-Q curve (from ``progress.csv`` where
    the run dir has one, else from the result itself: an ``--archive`` copy)."""
    from mbrl.logging import read_csv

    runs = []
    for root in dirs:
        for result in sorted(root.glob("runs/*/*/result.json")):
            r = dict(json.loads(result.read_text()))
            u = int(r["updates"])
            r["arm"] = f"{r['algo']} @{u // 1000}k" if u % 1000 == 0 else f"{r['algo']} @{u}"  # per budget
            if (result.parent / "progress.csv").is_file():
                log = read_csv(result.parent / "progress.csv")
                q = np.isfinite(log.get("train/q_mean", np.array([])))
                r["q_steps"] = log["step"][q].tolist() if q.any() else []
                r["q_mean"] = log["train/q_mean"][q].tolist() if q.any() else []
            r.setdefault("q_steps", [])
            r.setdefault("q_mean", [])
            r.setdefault("dataset_fingerprint", "")
            runs.append(r)
    if not runs:
        raise SystemExit(f"no finished runs (runs/*/*/result.json) under {', '.join(map(str, dirs))}")
    return runs


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["arm"])].append(r)
    rows = []
    for (dataset, arm), members in sorted(groups.items()):
        members = sorted(members, key=lambda r: r["seed"])
        final = np.array([r["final_score"] for r in members])
        se = final.std(ddof=1) / np.sqrt(len(final)) if len(final) > 1 else float("nan")
        rows.append({
            "dataset": dataset, "arm": arm, "n": len(members), "updates": members[0]["updates"],
            "final": final.tolist(), "mean": float(final.mean()), "se": float(se),
            "best": [float(max(r["scores"])) for r in members],
            "last3": [float(np.mean(r["scores"][-3:])) for r in members],
            "final_q": [float(r["q_mean"][-1]) if r["q_mean"] else float("nan") for r in members],
            "data": sorted({r["dataset_fingerprint"] or "?" for r in members}),
        })
    return rows


def mixed_data(rows: list[dict[str, Any]]) -> list[str]:
    """Datasets whose runs were trained on different data (fingerprints differ: e.g. a regeneration on another
    machine); their rows must not be compared as one table. Runs recorded before fingerprints (``?``) are not
    counted as a difference."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        seen[r["dataset"]].update(f for f in r["data"] if f != "?")
    return sorted(d for d, fps in seen.items() if len(fps) > 1)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | arm | updates | final score per seed | mean ± SE | mean of the last 3 evals per seed | best eval per seed "
        "| final mean Q | data |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = ", ".join(f"{v:.1f}" for v in r["final"])
        best = ", ".join(f"{v:.1f}" for v in r["best"])
        last3 = ", ".join(f"{v:.1f}" for v in r["last3"])
        q = ", ".join(f"{v:.0f}" for v in r["final_q"])
        se = f" ± {r['se']:.1f}" if np.isfinite(r["se"]) else ""
        lines.append(
            f"| {r['dataset']} | {r['arm']} | {r['updates']} | {per_seed} | {r['mean']:.1f}{se} (n={r['n']}) | {last3} | {best} | {q} "
            f"| {', '.join(f[:8] for f in r['data'])} |"
        )
    mixed = mixed_data(rows)
    if mixed:
        lines += ["", f"**Warning**: runs on different data (fingerprints differ) for {', '.join(mixed)}."]
    lines += ["", "data: the first 8 hex digits of the dataset's fingerprint (`OfflineDataset.fingerprint()`); "
              "`?`: a run recorded before fingerprints."]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    arms = sorted({r["arm"] for r in runs})
    colors = {a: f"C{i}" for i, a in enumerate(arms)}
    for dataset in sorted({r["dataset"] for r in runs}):
        fig, (ax_s, ax_q) = plt.subplots(1, 2, figsize=(11, 4))
        labelled: set[str] = set()
        for r in sorted((r for r in runs if r["dataset"] == dataset), key=lambda r: (r["arm"], r["seed"])):
            label = None if r["arm"] in labelled else r["arm"]
            labelled.add(r["arm"])
            ax_s.plot(r["eval_steps"], r["scores"], color=colors[r["arm"]], marker=".", label=label, alpha=0.8)
            ax_q.plot(r["q_steps"], r["q_mean"], color=colors[r["arm"]], alpha=0.8)
        ax_s.set(xlabel="updates", ylabel="normalized score", title=dataset)
        ax_q.set(xlabel="updates", ylabel="critics' mean Q (training batch)", title="mean Q")
        ax_s.legend(fontsize=8)
        fig.tight_layout()
        path = out.with_name(f"{out.name}_{dataset.replace('/', '_')}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="output dirs of scripts/offline_benchmark.py")
    parser.add_argument("--out", type=Path, default=Path("results/offline_report"))
    args = parser.parse_args(argv)
    runs = load_runs(args.dirs)
    rows = summarise(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = table(rows)
    args.out.with_suffix(".md").write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=1))
    pngs = plot(runs, args.out)
    print(text)
    print("wrote " + ", ".join(str(p) for p in [args.out.with_suffix(".md"), args.out.with_suffix(".json"), *pngs]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
