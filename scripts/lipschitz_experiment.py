"""Is a model ensemble necessary? (Zheng et al., ICLR 2023) -- three Dyna arms at equal env steps:

    (a) ensemble    MBPO-style Dyna with the 7-member probabilistic ensemble (``mbrl.agents.dyna.cpu_preset``)
    (b) single      the same with ONE probabilistic model, plain critic (``lipschitz_preset(regularized=False)``)
    (c) single_lip  ONE model + Lipschitz-regularised critic (spectral norm + adversarial states)

All three get the Lipschitz diagnostics hook, so each logs ``train/critic_lipschitz`` and (Hopper) the learned vs
true ``model/bellman_gap`` after every model refit. Per run the script records the final and per-evaluation
return, the model-training and rollout wall-clock (``DynaAgent.model_time_s`` / ``rollout_time_s``, read from
the run's ``time/model_s`` / ``time/rollout_s`` log), and the diagnostic curves.

Full experiment (the lead runs it on an idle machine)::

    python scripts/lipschitz_experiment.py --env Hopper-v5 --steps 25000 --seeds 3 --out runs/lipschitz_experiment

Estimated wall-clock on one idle core (from per-update timings at the cpu preset, utd 10): per seed about 1 h for
(a) (SAC ~40 min + 7-member fits ~25 min), 45 min for (b), 1 h 40 min for (c) (the 3 PGD steps make a critic
update ~2.4x dearer), i.e. ~10-11 h for 3 seeds. On 3 cores run the arms side by side into the same ``--out``
(``--arms ensemble`` / ``--arms single`` / ``--arms single_lip``, ~5 h), then once more without ``--arms`` to
collect every finished run into ``results.json``, ``table.md`` and the PNG (finished runs are only read back).

Check (seconds to a couple of minutes)::

    python scripts/lipschitz_experiment.py --quick

Outputs under ``--out``: ``runs/<env>/<arm>-s<seed>/`` (run directories, resumable), ``results.json`` (rewritten
after every finished run), ``table.md`` and ``lipschitz_experiment.png``. Re-running skips finished runs
(``result.json`` present) and resumes unfinished ones from their last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ARMS = ("ensemble", "single", "single_lip")
LABELS = {
    "ensemble": "(a) 7-model ensemble",
    "single": "(b) single model",
    "single_lip": "(c) single model + Lipschitz critic",
}


def arm_config(arm: str, env: str, steps: int, seed: int, quick: bool) -> Any:
    from mbrl.agents.dyna import cpu_preset
    from mbrl.agents.lipschitz import lipschitz_preset
    from mbrl.models.fit import FitConfig

    common: dict[str, Any] = {"total_steps": steps, "seed": seed, "eval_every": max(250, steps // 10 // 250 * 250)}
    if quick:
        common.update(
            init_random_steps=min(500, steps // 2),
            model_train_every=250,
            rollouts_per_step=20,
            utd=1,
            eval_every=0,
            eval_episodes=2,
            checkpoint_every=250,
            fit=FitConfig(max_epochs=2, max_time_s=10.0),
        )
    if arm == "ensemble":
        return cpu_preset(env, **common)
    if arm == "single":
        return lipschitz_preset(env, regularized=False, **common)
    if arm == "single_lip":
        return lipschitz_preset(env, regularized=True, **common)
    raise ValueError(f"unknown arm {arm!r} (expected one of {ARMS})")


def _curve(cols: dict[str, np.ndarray], key: str) -> list[list[float]]:
    if key not in cols:
        return []
    values = cols[key]
    ok = np.isfinite(values)
    return [[float(s), float(v)] for s, v in zip(cols["step"][ok], values[ok])]


def run_one(arm: str, env: str, steps: int, seed: int, quick: bool, run_dir: Path, diag_states: int) -> dict[str, Any]:
    """Run (or resume, or read back) one arm/seed; returns its result record."""
    from mbrl.agents.dyna import DynaAgent
    from mbrl.agents.lipschitz import LipschitzDiagnostics
    from mbrl.logging import Logger, read_csv
    from mbrl.run import prepare_run_dir

    done = run_dir / "result.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    config = arm_config(arm, env, steps, seed, quick)
    resume = (run_dir / "config.json").is_file()
    run = prepare_run_dir(run_dir, config, resume=resume)
    hook = LipschitzDiagnostics(env, num_states=diag_states, seed=seed)
    agent = DynaAgent(config, run_dir=run.path, on_model_refit=hook)
    resumed = agent.resume() if resume else False
    t0 = time.perf_counter()
    with Logger(run.path, total=steps, desc=f"{arm} s{seed}", resume_step=agent.step if resumed else None) as logger:
        logger.set_step(agent.step)
        final = agent.learn(logger)
    wall = time.perf_counter() - t0
    cols = read_csv(run.path)
    returns = _curve(cols, "eval/return_mean")
    result = {
        "arm": arm,
        "env": env,
        "seed": seed,
        "steps": steps,
        "final_return": float(final.get("eval/return_mean", float("nan"))),
        "return_curve": returns,
        "lipschitz_curve": _curve(cols, "train/critic_lipschitz"),
        "bellman_gap_curve": _curve(cols, "model/bellman_gap"),
        "model_time_s": agent.model_time_s,
        "rollout_time_s": agent.rollout_time_s,
        "policy_time_s": agent.policy_time_s,
        "wall_s_this_session": wall,
        "model_members": config.ensemble.num_members,
        "regularized": config.sac.adv_epsilon > 0,
    }
    done.write_text(json.dumps(result, indent=1))
    return result


def _mean_std(values: list[float], digits: int = 1) -> str:
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return "n/a"
    return f"{arr.mean():.{digits}f} ± {arr.std():.{digits}f}" if arr.size > 1 else f"{arr.mean():.{digits}f}"


def _last(curve: list[list[float]]) -> float:
    return curve[-1][1] if curve else float("nan")


def _mean_from(curve: list[list[float]], start: int) -> float:
    """Mean of the curve's values at steps >= ``start`` (NaN when there are none)."""
    values = [v for s, v in curve if s >= start and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def gap_window(results: list[dict[str, Any]], start: int) -> tuple[int, int] | None:
    """First and last logged Bellman-gap steps >= ``start`` over all runs (the window the table averages)."""
    steps = [int(s) for r in results for s, _ in r["bellman_gap_curve"] if s >= start]
    return (min(steps), max(steps)) if steps else None


def table(results: list[dict[str, Any]], gap_from: int = 1250) -> str:
    """Markdown table: one row per arm, mean ± std over seeds; the Bellman gap as its last value and its mean
    over the logged steps >= ``gap_from``."""
    window = gap_window(results, gap_from)
    span = f"{window[0]}–{window[1]}" if window else f">= {gap_from}"
    lines = [
        "| arm | seeds | final return | model train s | rollout s | model+rollout vs (a) | last critic Lipschitz "
        f"| Bellman gap, last / mean over steps {span} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_arm = {arm: [r for r in results if r["arm"] == arm] for arm in ARMS}
    ref = by_arm.get("ensemble") or []
    ref_cost = float(np.mean([r["model_time_s"] + r["rollout_time_s"] for r in ref])) if ref else float("nan")
    for arm, rs in by_arm.items():
        if not rs:
            continue
        cost = float(np.mean([r["model_time_s"] + r["rollout_time_s"] for r in rs]))
        ratio = f"{cost / ref_cost:.2f}" if np.isfinite(ref_cost) and ref_cost > 0 else "n/a"
        lines.append(
            f"| {LABELS[arm]} | {len(rs)} | {_mean_std([r['final_return'] for r in rs])} "
            f"| {_mean_std([r['model_time_s'] for r in rs])} | {_mean_std([r['rollout_time_s'] for r in rs])} "
            f"| {ratio} | {_mean_std([_last(r['lipschitz_curve']) for r in rs])} "
            f"| {_mean_std([_last(r['bellman_gap_curve']) for r in rs], 3)} / "
            f"{_mean_std([_mean_from(r['bellman_gap_curve'], gap_from) for r in rs], 3)} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Three panels (return, critic Lipschitz estimate, Bellman gap) vs env steps; mean and min-max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("return_curve", "eval return"), ("lipschitz_curve", "critic Lipschitz estimate"),
            ("bellman_gap_curve", "Bellman gap (learned vs true)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title) in zip(axes, keys):
        for arm in ARMS:
            curves = [r[key] for r in results if r["arm"] == arm and r[key]]
            if not curves:
                continue
            steps = sorted({int(s) for c in curves for s, _ in c})
            grid = np.full((len(curves), len(steps)), np.nan)
            for i, c in enumerate(curves):
                lookup = {int(s): v for s, v in c}
                grid[i] = [lookup.get(s, np.nan) for s in steps]
            with np.errstate(all="ignore"):
                mean = np.nanmean(grid, axis=0)
            ax.plot(steps, mean, marker="o" if len(steps) < 5 else None, label=LABELS[arm])
            if len(curves) > 1:
                ax.fill_between(steps, np.nanmin(grid, axis=0), np.nanmax(grid, axis=0), alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("env steps")
        if key != "return_curve":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5", choices=["Hopper-v5", "InvertedDoublePendulum-v5"])
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default 25000; --quick 750)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds 0..n-1 (default 3; --quick 1)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--diag-states", type=int, default=256, help="replay states per diagnostic")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="output folder (default runs/lipschitz_experiment[_quick])")
    parser.add_argument("--gap-from", type=int, default=1250, help="the Bellman gap's mean starts at this step")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the script end to end")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    steps = args.steps or (750 if args.quick else 25_000)
    seeds = args.seeds or (1 if args.quick else 3)
    out = Path(args.out or ("runs/lipschitz_experiment_quick" if args.quick else "runs/lipschitz_experiment"))
    out.mkdir(parents=True, exist_ok=True)
    diag_states = min(args.diag_states, 64) if args.quick else args.diag_states
    results: list[dict[str, Any]] = []
    for seed in range(seeds):
        for arm in args.arms:
            t0 = time.perf_counter()
            r = run_one(arm, args.env, steps, seed, args.quick, out / "runs" / args.env / f"{arm}-s{seed}", diag_states)
            results.append(r)
            print(
                f"{arm:>10} seed {seed}: return {r['final_return']:.1f}  model {r['model_time_s']:.1f}s  "
                f"rollout {r['rollout_time_s']:.1f}s  Lipschitz {_last(r['lipschitz_curve']):.3g}  "
                f"gap {_last(r['bellman_gap_curve']):.3g}  ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
            (out / "results.json").write_text(json.dumps(results, indent=1))
    md = table(results, args.gap_from if not args.quick else 250)
    header = f"{args.env}, {steps} env steps, seeds 0..{seeds - 1} (cpu preset; model+rollout wall-clock in s)\n\n"
    (out / "table.md").write_text(header + md)
    plot(results, out / "lipschitz_experiment.png")
    print(header + md)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'lipschitz_experiment.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
