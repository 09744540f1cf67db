"""HyperCRL vs fine-tuning, coreset and multi-task replay on a 3-task Pendulum sequence.

Reproduces, in kind, the claim of Huang et al. ("Continual Model-Based Reinforcement Learning with
Hypernetworks", ICRA 2021): HyperCRL forgets clearly less than fine-tuning and lands near the coreset baseline.
Tasks (``mbrl.envs.task_families``, family ``pendulum``): ``default`` (g=10, m=1, l=1), ``heavy-long`` (g=12,
m=1.25, l=1.2) and ``reversed`` (default physics, motor wired backwards).

For each (method, seed) the continual loop of ``mbrl.agents.hypercrl`` runs all three tasks and evaluates every task
seen so far after each one. Printed and written to ``OUT/results.json``: the return matrix ``R[i, j]`` (task
``i`` after training task ``j``), the one-step model error matrix, the random-policy return per task and the
forgetting measures (``retention = (R[i, last] - rand_i) / (R[i, i] - rand_i)``; the raw ratio ``R[i, last] /
R[i, i]``). ``OUT/hypercrl_heatmap.png`` shows the seed-mean matrices; ``OUT/summary.md`` the tables.

Budget (full run): per task 1000 env steps (200 random, then MPPI: horizon 15, 100 samples, 5 iterations),
training every 200 steps with 400 gradient steps of batch 32, 3 evaluation episodes per task and checkpoint.
That is ~10x fewer env steps and gradient steps per task than HyperCRL's Pendulum run (10k steps; 1000 steps
per 400 env steps) and 5 instead of 10 MPPI iterations; the models (32x32 target net, 16x16 hypernet,
embedding 10, beta 0.05) are the paper's. About 45-60 s per (method, seed) on one core of an idle machine,
so 4 methods x 3 seeds take ~10-12 minutes.

Usage::

    python scripts/hypercrl_experiment.py [--quick] [--seeds 3] [--out runs/hypercrl]
        [--methods hypercrl,finetune,coreset,multitask] [--threads 1]

``--quick`` is a smoke check (tiny budget, one short evaluation; numbers meaningless). Results are written
after each (method, seed); rerunning with the same ``--out`` skips the finished ones (resume). Results made
with other settings in the same ``--out`` are refused. Extra method ``hypercrl_beta0`` (HyperCRL without the
output regulariser) is available as an ablation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mbrl.agents.hypercrl import ContinualResult, HyperCRLAgent, HyperCRLConfig  # noqa: E402
from mbrl.checkpoint import config_to_dict  # noqa: E402
from mbrl.logging import Logger  # noqa: E402
from mbrl.planning import MPPIConfig  # noqa: E402
from mbrl.run import write_json_atomic  # noqa: E402
from mbrl.utils import set_threads  # noqa: E402

DEFAULT_METHODS = ("hypercrl", "finetune", "coreset", "multitask")


def base_config(quick: bool) -> HyperCRLConfig:
    """The full budget (module docstring) or the ``--quick`` smoke budget."""
    if quick:
        return HyperCRLConfig(
            steps_per_task=120,
            random_steps=60,
            train_every=30,
            train_iters=20,
            coreset_size=20,
            eval_episodes=1,
            mppi=MPPIConfig(horizon=8, population=30, iterations=2, temperature=0.5),
        )
    return HyperCRLConfig(eval_episodes=3)


def method_config(base: HyperCRLConfig, method: str, seed: int) -> HyperCRLConfig:
    if method == "hypercrl_beta0":
        return replace(base, method="hypercrl", seed=seed, hypernet=replace(base.hypernet, beta=0.0))
    if method not in DEFAULT_METHODS:
        raise ValueError(
            f"unknown method {method!r}; known: {', '.join((*DEFAULT_METHODS, 'hypercrl_beta0'))}"
        )
    return replace(base, method=method, seed=seed)  # type: ignore[arg-type]


def _fmt_matrix(m: np.ndarray, s: np.ndarray | None, fmt: str) -> list[str]:
    rows = []
    for i in range(m.shape[0]):
        cells = []
        for j in range(m.shape[1]):
            if not math.isfinite(m[i, j]):
                cells.append(f"{'-':>16}")
            elif s is not None:
                cells.append(f"{format(m[i, j], fmt)} ± {format(s[i, j], fmt)}".rjust(16))
            else:
                cells.append(format(m[i, j], fmt).rjust(16))
        rows.append(" ".join(cells))
    return rows


def summarize(results: dict[str, list[ContinualResult]]) -> tuple[str, str]:
    """(console text, markdown) with the seed-mean matrices and the forgetting table."""
    warnings.filterwarnings("ignore", "(Mean of empty slice|Degrees of freedom)", RuntimeWarning)
    lines: list[str] = []
    md = [
        "| method | final return per task (mean ± std over seeds) | retention per task | "
        "raw ratio R[i,T-1]/R[i,i] | one-step MSE after last task |",
        "|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        if not runs:
            continue
        returns = np.stack([r.returns for r in runs])
        mse = np.stack([r.model_mse for r in runs])
        retention = np.stack([r.retention() for r in runs])
        ratio = np.stack([r.forgetting_ratio() for r in runs])
        names = runs[0].task_names
        t = len(names)
        lines.append(f"== {method} ({len(runs)} seeds) ==")
        lines.append("return R[i, j] (row: task i evaluated; column: after training task j), mean ± std:")
        lines.append("           " + " ".join(f"{'after ' + n:>16}" for n in names))
        for name, row in zip(names, _fmt_matrix(np.nanmean(returns, 0), np.nanstd(returns, 0), ".0f")):
            lines.append(f"{name:>10} {row}")
        lines.append("one-step next_obs MSE on held-out data, mean:")
        for name, row in zip(names, _fmt_matrix(np.nanmean(mse, 0), None, ".2e")):
            lines.append(f"{name:>10} {row}")
        random = np.mean([r.random_returns for r in runs], 0)
        lines.append("random-policy return: " + ", ".join(f"{n} {v:.0f}" for n, v in zip(names, random)))
        lines.append(
            "retention (1 = kept, 0 = random): "
            + ", ".join(f"{n} {np.nanmean(retention[:, i]):.2f}" for i, n in enumerate(names))
        )
        lines.append(
            "raw ratio final/learned: "
            + ", ".join(f"{n} {np.nanmean(ratio[:, i]):.2f}" for i, n in enumerate(names))
        )
        lines.append("")
        final = returns[:, :, t - 1]
        md.append(
            f"| {method} | "
            + ", ".join(
                f"{n} {final[:, i].mean():.0f} ± {final[:, i].std():.0f}" for i, n in enumerate(names)
            )
            + " | "
            + ", ".join(f"{np.nanmean(retention[:, i]):.2f}" for i in range(t))
            + " | "
            + ", ".join(f"{np.nanmean(ratio[:, i]):.2f}" for i in range(t))
            + " | "
            + ", ".join(f"{np.nanmean(mse[:, i, t - 1]):.1e}" for i in range(t))
            + " |"
        )
    return "\n".join(lines), "\n".join(md) + "\n"


def heatmap(results: dict[str, list[ContinualResult]], path: Path) -> None:
    """Seed-mean return matrices (top) and log10 model-error matrices (bottom), one column per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m, runs in results.items() if runs]
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)  # NaN cells below the diagonal
    fig, axes = plt.subplots(2, len(methods), figsize=(3.3 * len(methods), 6.2), squeeze=False)
    returns = {m: np.nanmean(np.stack([r.returns for r in results[m]]), 0) for m in methods}
    mses = {m: np.nanmean(np.stack([r.model_mse for r in results[m]]), 0) for m in methods}
    finite_r = np.concatenate([v[np.isfinite(v)] for v in returns.values()])
    finite_m = np.concatenate([np.log10(v[np.isfinite(v)]) for v in mses.values()])
    names = results[methods[0]][0].task_names
    for k, m in enumerate(methods):
        for row, (mat, vmin, vmax, cmap, fmt) in enumerate(
            [
                (returns[m], finite_r.min(), finite_r.max(), "viridis", "{:.0f}"),
                (np.log10(mses[m]), finite_m.min(), finite_m.max(), "magma_r", "{:.1f}"),
            ]
        ):
            ax = axes[row, k]
            im = ax.imshow(np.ma.masked_invalid(mat), vmin=vmin, vmax=vmax, cmap=cmap)
            for i in range(mat.shape[0]):
                for j in range(mat.shape[1]):
                    if math.isfinite(mat[i, j]):
                        # Dark text on the light end of the colour map, white on the dark end.
                        light = (mat[i, j] - vmin) / max(vmax - vmin, 1e-12) > 0.6
                        if cmap == "magma_r":
                            light = not light
                        ax.text(
                            j,
                            i,
                            fmt.format(mat[i, j]),
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="k" if light else "w",
                        )
            ax.set_xticks(
                range(len(names)), [f"after {n}" for n in names], rotation=30, ha="right", fontsize=7
            )
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.set_title(f"{m}: {'return' if row == 0 else 'log10 one-step MSE'}", fontsize=9)
            if k == len(methods) - 1:
                fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke budget (numbers meaningless)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/hypercrl"))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-tensorboard", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    set_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    base = base_config(args.quick)
    configs = {m: {s: method_config(base, m, s) for s in range(args.seeds)} for m in methods}

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    store: dict[str, Any] = {"quick": args.quick, "configs": {}, "runs": {}}
    if results_path.exists():
        try:
            store = json.loads(results_path.read_text())
        except json.JSONDecodeError as exc:
            print(
                f"error: {results_path} is not valid JSON ({exc}); move it away or use another --out",
                file=sys.stderr,
            )
            return 2
    results: dict[str, list[ContinualResult]] = {m: [] for m in methods}
    for method in methods:
        for seed in range(args.seeds):
            cfg = configs[method][seed]
            key = f"{method}/seed{seed}"
            cfg_dict = config_to_dict(cfg)
            if key in store["runs"]:
                if store["configs"].get(key) != cfg_dict:
                    print(
                        f"error: {results_path} holds {key} made with other settings; use another --out",
                        file=sys.stderr,
                    )
                    return 2
                print(f"[skip] {key}: already in {results_path}")
                results[method].append(ContinualResult.from_dict(store["runs"][key]))
                continue
            print(f"[run] {key}", flush=True)
            agent = HyperCRLAgent(cfg)
            run_dir = args.out / "runs" / f"{method}_seed{seed}"
            total = cfg.steps_per_task * agent.num_tasks
            with Logger(run_dir, total=total, desc=key, tensorboard=not args.no_tensorboard) as logger:
                final = agent.learn(logger)
            assert agent.result is not None
            results[method].append(agent.result)
            store["configs"][key] = cfg_dict
            store["runs"][key] = agent.result.to_dict()
            write_json_atomic(results_path, store)
            print(
                f"[done] {key} in {agent.result.wall_time:.0f}s: final returns "
                + ", ".join(f"{v:.0f}" for v in agent.result.returns[:, -1])
                + f"; mean retention {final['eval/mean_retention']:.2f}",
                flush=True,
            )
    text, md = summarize(results)
    print()
    print(text)
    print(md)
    (args.out / "summary.md").write_text(md)
    heatmap(results, args.out / "hypercrl_heatmap.png")
    print(f"wrote {results_path}, {args.out / 'summary.md'}, {args.out / 'hypercrl_heatmap.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
