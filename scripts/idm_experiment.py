"""SS-ORL experiment: inverse-dynamics labels vs full labels vs only the labelled 10 %.

For each dataset (default: the generated Hopper-v5 and HalfCheetah-v5 ``medium-replay`` splits) and seed:
keep actions on 10 % of the trajectories drawn from the lowest-return half (Zheng et al., ICML 2023; or
uniformly with ``--selection uniform``), fit the
IDM on them, and report

* the IDM's action error on the held-out trajectories (the other 90 %, whose true actions we know): MSE and R²
  per action dim, and per quarter of those trajectories ranked by return;
* the normalized score of BC and RAVL trained on (a) the fully labelled dataset, (b) only the labelled 10 %,
  (c) the 10 % + IDM proxy labels on the rest.

The paper's claim in kind: (c) approaches (a) and clearly beats (b).

    mbrl dataset make --env Hopper-v5 --preset cpu --out-dir data/minari --splits medium-replay
    mbrl dataset make --env HalfCheetah-v5 --preset cpu --out-dir data/minari --splits medium-replay
    python scripts/idm_experiment.py --minari-root data/minari            # full (hours; see --help)
    python scripts/idm_experiment.py --quick                             # seconds: tiny stand-in dataset

When a named medium-replay dataset is missing it is generated first as a stand-in at ``--gen-preset`` (default
``quick``: a 10k-step SAC behaviour run whose replay buffer up to the medium snapshot is the split) and the
table says so. Finished runs (``OUT/runs/.../result.json``) are skipped when the script is re-run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

CONDITIONS = ("full", "labelled", "idm")
LABELS = {"full": "(a) full labels", "labelled": "(b) labelled 10 %", "idm": "(c) 10 % + IDM"}


def prepare(
    dataset_id: str, seed: int, fraction: float, idm_preset: str, out: Path, selection: str = "low-return"
) -> dict[str, Any]:
    """Split, fit the IDM, measure its error on the unlabelled part; returns the three training sets."""
    from mbrl.agents.idm_labeling import fit_idm, label_union
    from mbrl.data import OfflineDataset, load_dataset
    from mbrl.data.splitting import labelled_episode_indices
    from mbrl.models.inverse_dynamics import action_errors
    from mbrl.models.inverse_dynamics import idm_preset as idm_config

    ds = load_dataset(dataset_id)
    idx = labelled_episode_indices(
        ds.episode_returns(), fraction, np.random.default_rng([seed, 100]), selection=selection  # type: ignore[arg-type]
    )
    rest = np.setdiff1d(np.arange(ds.n_episodes), idx)
    labelled, held = ds.subset_episodes(idx), ds.subset_episodes(rest)
    t0 = time.perf_counter()
    idm, fit_metrics = fit_idm(labelled, idm_config(idm_preset), seed)  # type: ignore[arg-type]
    union = label_union(idm, labelled, held.without_actions())
    proxy = np.asarray(union.actions[len(labelled) :])  # type: ignore[index]
    errors = action_errors(proxy, held.actions)  # type: ignore[arg-type]
    info = {"dataset": dataset_id, "seed": seed, "idm_fit": fit_metrics, "idm_heldout": errors,
            "idm_heldout_by_return_quarter": errors_by_return_quarter(proxy, held),
            "idm_wall_s": time.perf_counter() - t0, "n_labelled_episodes": len(idx),
            "n_episodes": ds.n_episodes}
    data: dict[str, OfflineDataset] = {"full": ds, "labelled": labelled, "idm": union}
    return {"info": info, "data": data}


def errors_by_return_quarter(proxy: np.ndarray, held: Any) -> list[dict[str, float]]:
    """IDM error on each quarter of the held-out episodes ranked by return (lowest first): the labelled 10 % come
    from the low-return half, so the error on the best episodes (the ones imitation needs most) can differ."""
    from mbrl.models.inverse_dynamics import action_errors

    returns, labelled_held = held.episode_returns(), held.with_actions(proxy)
    out = []
    for quarter in np.array_split(np.argsort(returns), 4):
        err = action_errors(labelled_held.subset_episodes(quarter).actions, held.subset_episodes(quarter).actions)
        out.append({"return_mean": float(returns[quarter].mean()), "mse": err["mse"], "r2": err["r2"]})
    return out


def run_agent(
    algo: str, data: Any, seed: int, preset: str, updates: int | None, run_dir: Path, fit_max_time: float | None = None
) -> dict[str, Any]:
    from mbrl.agents.idm_labeling import make_agent

    done = run_dir / "result.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    loop: dict[str, Any] = {"seed": seed, "checkpoint_every": 0}
    if updates is not None:
        loop["updates"] = updates
        loop["eval_every"] = 0
    t0 = time.perf_counter()
    agent = make_agent(algo, data, preset, None, fit_max_time_s=fit_max_time, **loop)  # type: ignore[arg-type]
    final = agent.learn()
    result = {"score": float(final.get("eval/normalized_score", float("nan"))),
              "return": float(final["eval/return_mean"]), "wall_s": time.perf_counter() - t0}
    run_dir.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result))
    return result


def _ms(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def tables(idm_rows: list[dict[str, Any]], scores: dict[tuple[str, str, str], list[float]], notes: dict[str, str]) -> str:
    lines = ["IDM action error on the held-out (unlabelled) trajectories, mean over seeds:", "",
             "| dataset | MSE | R² mean | R² per dim |", "|---|---|---|---|"]
    for ds in dict.fromkeys(r["dataset"] for r in idm_rows):
        rows = [r["idm_heldout"] for r in idm_rows if r["dataset"] == ds]
        dims = sorted(k for k in rows[0] if k.startswith("r2_"))
        per = ", ".join(f"{np.mean([r[k] for r in rows]):.3f}" for k in dims)
        lines.append(f"| {ds}{notes.get(ds, '')} | {np.mean([r['mse'] for r in rows]):.4f} | "
                     f"{np.mean([r['r2'] for r in rows]):.3f} | {per} |")
    lines += ["", "IDM error per return quarter of the held-out episodes (lowest first), mean over seeds:", "",
              "| dataset | " + " | ".join(f"Q{k + 1} return / MSE / R²" for k in range(4)) + " |", "|---|" + "---|" * 4]
    for ds in dict.fromkeys(r["dataset"] for r in idm_rows):
        quarters = [r["idm_heldout_by_return_quarter"] for r in idm_rows if r["dataset"] == ds]
        cells = [" / ".join(f"{np.mean([q[k][m] for q in quarters]):.{d}f}" for m, d in (("return_mean", 1), ("mse", 3), ("r2", 2)))
                 for k in range(4)]
        lines.append(f"| {ds}{notes.get(ds, '')} | " + " | ".join(cells) + " |")
    lines += ["", "Normalized score (mean ± std over seeds):", "",
              "| dataset | agent | " + " | ".join(LABELS[c] for c in CONDITIONS) + " |",
              "|---|---|" + "---|" * len(CONDITIONS)]
    for ds, algo in dict.fromkeys((d, a) for d, a, _ in scores):
        cells = [_ms(scores[(ds, algo, c)]) if (ds, algo, c) in scores else "-" for c in CONDITIONS]
        lines.append(f"| {ds}{notes.get(ds, '')} | {algo} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", default=None,
                        help="dataset paths / Minari ids (default: mbrl/<env>/medium-replay-v0 of --envs)")
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "HalfCheetah-v5"])
    parser.add_argument("--algos", nargs="+", default=["bc", "ravl"], choices=["bc", "ravl", "mopo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS),
                        help="which training sets to run: (a) full, (b) labelled, (c) idm")
    parser.add_argument("--fraction", type=float, default=0.1, help="labelled fraction of trajectories")
    parser.add_argument("--selection", default="low-return", choices=["low-return", "uniform"],
                        help="labelled trajectories drawn from the lowest-return half (the paper) or uniformly")
    parser.add_argument("--preset", default="cpu", choices=["paper", "cpu", "quick"], help="agent budget")
    parser.add_argument("--idm-preset", default="cpu", choices=["paper", "cpu", "quick"])
    parser.add_argument("--updates", type=int, default=None, help="override the agents' updates")
    parser.add_argument("--fit-max-time", type=float, default=None,
                        help="cap (s) on each RAVL/MOPO ensemble fit (default: the preset's)")
    parser.add_argument("--minari-root", default=None, help="where `mbrl dataset make --out-dir` wrote")
    parser.add_argument("--namespace", default="mbrl")
    parser.add_argument("--gen-preset", default="quick", choices=["cpu", "quick", "tiny"],
                        help="preset of a stand-in medium-replay dataset generated when one is missing")
    parser.add_argument("--out", default="results/idm")
    parser.add_argument("--quick", action="store_true", help="tiny generated Hopper stand-in, BC+RAVL, few updates")
    args = parser.parse_args(argv)
    import torch

    from mbrl.envs.datasets import dataset_preset, make_datasets, minari_id, minari_root

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.envs, args.seeds, args.updates = ["Hopper-v5"], [0], 30
        args.preset, args.idm_preset, args.gen_preset, args.namespace = "quick", "quick", "tiny", "quick"
        args.minari_root = str(out / "minari")
    notes: dict[str, str] = {}
    with minari_root(args.minari_root):
        import os

        root = Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
        datasets = list(args.dataset or [])
        if not datasets:
            for env_id in args.envs:
                kw: dict[str, Any] = {"namespace": args.namespace}
                if args.quick:
                    kw.update(sac_steps=1500, split_size=1000)
                gen = dataset_preset(env_id, args.gen_preset, **kw)
                dataset_id = minari_id(gen, "medium-replay")
                if not (root / dataset_id / "data").is_dir():
                    print(f"{dataset_id}: not found under {root}; generating a stand-in ({args.gen_preset} preset, "
                          f"{gen.sac_steps} SAC steps)", flush=True)
                    make_datasets(gen, root / "_work" / args.namespace / f"{env_id}-{args.gen_preset}",
                                  splits=("medium-replay",), progress=lambda m: print(m, flush=True))
                    notes[dataset_id] = f" (stand-in: {args.gen_preset} preset, {gen.sac_steps} SAC steps)"
                datasets.append(dataset_id)
        idm_rows: list[dict[str, Any]] = []
        scores: dict[tuple[str, str, str], list[float]] = {}
        for dataset_id in datasets:
            for seed in args.seeds:
                prep = prepare(dataset_id, seed, args.fraction, args.idm_preset, out, args.selection)
                info = prep["info"]
                idm_rows.append(info)
                h = info["idm_heldout"]
                print(f"{dataset_id} seed {seed}: IDM held-out mse {h['mse']:.4f} r2 {h['r2']:.3f} "
                      f"({info['n_labelled_episodes']}/{info['n_episodes']} episodes labelled, "
                      f"{info['idm_wall_s']:.0f} s)", flush=True)
                for algo in args.algos:
                    for cond in args.conditions:
                        name = dataset_id.replace("/", "_")
                        run_dir = out / "runs" / name / f"{algo}-{cond}-s{seed}"
                        r = run_agent(algo, prep["data"][cond], seed, args.preset, args.updates, run_dir, args.fit_max_time)
                        scores.setdefault((dataset_id, algo, cond), []).append(r["score"])
                        print(f"  {algo} {cond}: score {r['score']:.1f} ({r['wall_s']:.0f} s)", flush=True)
    text = tables(idm_rows, scores, notes)
    fit_note = f", ensemble fit cap {args.fit_max_time:g} s" if args.fit_max_time is not None else ""
    header = (f"Agent preset {args.preset}{fit_note}, IDM preset {args.idm_preset}, updates {args.updates or 'preset'}, "
              f"labelled fraction {args.fraction} "
              f"{'from the lowest-return half' if args.selection == 'low-return' else 'drawn uniformly'}, "
              f"seeds {args.seeds}.\n\n")
    (out / "idm_experiment.md").write_text(header + text + "\n")
    (out / "idm_experiment.json").write_text(json.dumps(
        {"idm": idm_rows, "scores": {"|".join(k): v for k, v in scores.items()}}, default=float))
    print(text)
    print(f"wrote {out / 'idm_experiment.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
