"""The edge-of-reach experiment (Sims et al., NeurIPS 2024, Sec. 4): MOPO and RAVL on the same dataset, each with
the learned ensemble and with the TRUE dynamics (``TrueDynamicsModel``: zero model error, zero uncertainty).

Expected in kind: with the true model MOPO's penalty vanishes, its mean Q explodes (bootstrapping from the
never-trained edge-of-reach states) and its normalized score collapses; RAVL's critic ensemble keeps Q bounded.

Writes ``OUT/edge_of_reach.md`` (table), ``OUT/edge_of_reach.png`` (mean Q and normalized score over updates),
``OUT/edge_of_reach.json`` (rewritten as each run finishes) and one run directory per (method, dynamics, seed).
Resumable: run the same command again and finished runs are read back, an interrupted one continues from its last
checkpoint (one per evaluation). ``--model-dir`` gives the learned arms an ensemble fitted once by ``mbrl model
train`` (else each learned arm fits its own).

    python scripts/edge_of_reach.py --dataset mbrl/hopper/medium-replay-v0 --updates 50000 --seeds 0 1 2
    python scripts/edge_of_reach.py --quick          # seconds: tiny generated dataset, a few hundred updates
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # offline_benchmark (its resumable run) beside this file


def run_one(
    method: str, dynamics: str, dataset: str, seed: int, updates: int, preset: str, eval_every: int, out: Path,
    rollouts_per_epoch: int | None, model_dir: str | None = None,
) -> dict[str, Any]:
    """One arm in ``OUT/<method>-<dynamics>-s<seed>``, through ``offline_benchmark.run_one``: skipped when its
    ``result.json`` exists, continued from its last checkpoint (one per evaluation) when interrupted. The
    learned arm reuses the ensemble in ``model_dir`` (an ``mbrl model train`` run directory) when given."""
    from offline_benchmark import offline_config
    from offline_benchmark import run_one as benchmark_run

    from mbrl.logging import read_csv
    from mbrl.models.commands import load_ensemble

    settings: dict[str, Any] = {"dynamics": dynamics, "loop_log_every": max(1, min(eval_every, 500))}
    if rollouts_per_epoch is not None:
        settings["rollouts_per_epoch"] = rollouts_per_epoch
    if method == "ravl":  # the paper's RAVL (no penalty, k = 5), not the cpu preset's stabilised one
        settings |= {"penalty": "none", "rollout_length": 5, "ensemble.full_info": False}
    model = None
    if dynamics == "learned" and model_dir is not None:
        full_info = offline_config(method, dataset, preset, settings=settings).ensemble.full_info
        model = load_ensemble(model_dir, full_info=full_info)  # as the arm's config wants it
    run_dir = out / f"{method}-{dynamics}-s{seed}"
    r = benchmark_run(method, dataset, seed, preset, updates, eval_every, run_dir, model, settings=settings, tag=dynamics)
    log = read_csv(run_dir / "progress.csv")
    q_rows = np.isfinite(log.get("train/q_mean", np.array([])))
    q = log["train/q_mean"][q_rows] if q_rows.any() else np.array([float("nan")])
    return {
        "method": method, "dynamics": dynamics, "seed": seed,
        "q_steps": log["step"][q_rows].tolist(), "q_mean": q.tolist(),
        "eval_steps": r["eval_steps"], "score": r["scores"], "final_score": r["final_score"], "final_q": float(q[-1]),
        "max_abs_q": float(np.nanmax(np.abs(q))), "time_s": r["wall_s"], "updates_per_s": r["updates_per_s"],
    }


def summarize(results: list[dict[str, Any]]) -> str:
    lines = [
        "| method | dynamics | final normalized score | final mean Q | max abs mean Q | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for method in ("mopo", "ravl"):
        for dynamics in ("learned", "true"):
            rows = [r for r in results if r["method"] == method and r["dynamics"] == dynamics]
            if not rows:
                continue
            s = np.array([r["final_score"] for r in rows])
            q = np.array([r["final_q"] for r in rows])
            m = np.array([r["max_abs_q"] for r in rows])
            lines.append(
                f"| {method.upper()} | {dynamics} | {s.mean():.1f} ± {s.std():.1f} | {q.mean():.3g} | {m.mean():.3g} | {len(rows)} |"
            )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_q, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {("mopo", "learned"): "tab:blue", ("mopo", "true"): "tab:red",
              ("ravl", "learned"): "tab:green", ("ravl", "true"): "tab:olive"}
    seen: set[tuple[str, str]] = set()
    for r in results:
        key = (r["method"], r["dynamics"])
        label = f"{r['method'].upper()} ({r['dynamics']} dynamics)" if key not in seen else None
        seen.add(key)
        ax_q.plot(r["q_steps"], r["q_mean"], color=colors[key], label=label, alpha=0.8)
        ax_s.plot(r["eval_steps"], r["score"], color=colors[key], label=label, alpha=0.8, marker=".")
    ax_q.set_yscale("symlog")
    ax_q.set_xlabel("updates")
    ax_q.set_ylabel("mean Q (batch)")
    ax_s.set_xlabel("updates")
    ax_s.set_ylabel("normalized score")
    ax_q.legend(fontsize=8)
    ax_s.legend(fontsize=8)
    fig.suptitle("Edge-of-reach: learned vs true dynamics")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(results: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> str:
    """``edge_of_reach.{md,json,png}`` for the runs finished so far; returns the table."""
    table = summarize(results)
    header = f"Dataset `{args.dataset}`, {args.updates} updates, preset {args.preset}, seeds {args.seeds}.\n\n"
    (out / "edge_of_reach.md").write_text(header + table + "\n")
    (out / "edge_of_reach.json").write_text(
        json.dumps(results, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)
    )
    plot(results, out / "edge_of_reach.png")
    return table


def quick_dataset(out: Path) -> str:
    """A tiny generated Hopper dataset (medium-replay of a short behaviour run) as an npz file."""
    from mbrl.data import load_dataset, save_npz
    from mbrl.envs.datasets import dataset_preset, make_datasets, minari_root

    path = out / "quick-hopper.npz"
    if path.is_file():
        return str(path)
    config = dataset_preset("Hopper-v5", "tiny", sac_steps=1000, split_size=1000, namespace="eor")
    ids = make_datasets(config, out / "work", out_dir=out / "minari", splits=("medium-replay",))
    with minari_root(out / "minari"):
        ds = load_dataset(ids["medium-replay"])
    save_npz(ds, path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="dataset path or Minari id (needs MINARI_DATASETS_PATH for ours)")
    parser.add_argument("--updates", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--preset", default="cpu", choices=["paper", "cpu", "quick"])
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--rollouts-per-epoch", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=["mopo", "ravl"], choices=["mopo", "ravl"])
    parser.add_argument("--dynamics", nargs="+", default=["learned", "true"], choices=["learned", "true"])
    parser.add_argument("--model-dir", default=None,
                        help="an `mbrl model train` run directory: the learned arms reuse its ensemble (no fit)")
    parser.add_argument("--out", default="results/edge_of_reach")
    parser.add_argument("--quick", action="store_true", help="tiny generated dataset, 200 updates (a smoke run)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.dataset = args.dataset or quick_dataset(out)
        args.updates, args.preset, args.eval_every = 200, "quick", 100
        args.rollouts_per_epoch = args.rollouts_per_epoch or 100
    if not args.dataset:
        parser.error("--dataset is required (or --quick)")
    results: list[dict[str, Any]] = []
    table = ""
    for seed in args.seeds:
        for method in args.methods:
            for dynamics in args.dynamics:
                r = run_one(
                    method, dynamics, args.dataset, seed, args.updates, args.preset, args.eval_every, out,
                    args.rollouts_per_epoch, args.model_dir,
                )
                print(f"{method}/{dynamics} seed {seed}: score {r['final_score']:.1f}, final mean Q {r['final_q']:.3g}, "
                      f"{r['time_s']:.0f} s", flush=True)
                results.append(r)
                table = write_summary(results, args, out)  # partial results as each run finishes
    print(table)
    print(f"wrote {out / 'edge_of_reach.md'}, {out / 'edge_of_reach.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
