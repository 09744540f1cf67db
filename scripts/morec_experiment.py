"""MOREC (Luo et al., ICLR 2024): does the reward-consistent filter keep model rollouts closer to the true dynamics?

Part 1 (always): on one dataset, split by whole episodes into train (fit) and test (start states, default 20 %),
an ensemble and a dynamics reward are fitted on train (or loaded from ``--model-dir``), then from held-out start
states ``t0`` of test episodes every variant is rolled out open-loop for ``H = max(horizons)`` steps with the
LOGGED actions ``a[t0], a[t0+1], ...``, and compared after ``k`` steps with ``TrueDynamicsModel`` (the MuJoCo
simulator) stepped from the same start state with the same actions:

* ``ensemble``: the ensemble's MBPO sampling (a random elite per row, Gaussian sample) - what RAVL/MOPO roll out;
* ``ensemble_mean``: the elites' mean prediction (deterministic, for reference);
* ``filter_select``: the filter with NO stopping (``threshold=None``): per step the best of elites x 2 samples by
  the dynamics reward. Every rollout counts at every horizon: directly comparable with ``ensemble``;
* ``filter_stop``: the same rollouts (stopping never changes a trajectory before its stop) with the stop rule
  (best dynamics reward < ``--threshold``, default 0.6). A rollout is *stopped by k* if any of its steps
  ``1..k`` fell below the threshold. Reported per ``k``: ``stopped_fraction`` (of all windows), the error at ``k``
  over the SURVIVING rollouts only (``surviving_mse``; stopped rollouts contribute no error after their stop,
  in RL training they end there), and, on the same surviving windows, the error of ``ensemble`` and of
  ``filter_select`` (``ensemble_on_surviving``, ``select_on_surviving``): whether survivors are easy windows
  (selection bias) or the stop rule itself removes bad rollouts shows in the difference.

Errors are next_obs MSE (mean over windows and dims) and the median over windows of the per-window squared error
(robust to a few diverging rollouts). Rows whose prediction becomes non-finite are excluded from later errors and
counted in ``nonfinite``. Terminations are ignored (the simulator keeps stepping an unhealthy Hopper, as
``mbrl.models.quality.k_step_error`` does), so every variant is measured on the same windows. All sampled
variants use the same seed.

Part 2 (``--scores``): MOPO and RAVL with and without the filter (``--filter-variants``), ``--updates`` updates
x ``--seeds``, each run's final normalized score; the filtered runs reuse the learned dynamics reward (each run
fits its own ensemble, as the agents always do). Table of mean ± std over seeds. To compare the filter on and off
on ONE shared ensemble per dataset (the README's score table; no fit per run), copy ``model/dynamics_reward.pt``
next to that ensemble and run ``scripts/offline_benchmark.py --model-dir models --filters none morec``.

Outputs in ``--out`` (default ``results/morec/<dataset tag>``): ``morec.json`` (rewritten after every finished
part; a rerun skips parts and score runs already in it, so an interrupted run resumes), ``morec.md``,
``morec_error.png`` (error vs horizon and stopped fraction), ``model/`` (``model.pt``, ``dynamics_reward.pt``,
``split.json``) unless ``--model-dir`` is given, and one run directory per score run.

    mbrl dataset make --env Hopper-v5 --preset cpu --out-dir data/minari --splits medium
    python scripts/morec_experiment.py --dataset mbrl/hopper/medium-v0 --minari-root data/minari
    python scripts/morec_experiment.py --dataset mbrl/hopper/medium-v0 --minari-root data/minari --scores \\
        --updates 50000 --seeds 0 1 2
    python scripts/morec_experiment.py --quick      # seconds: tiny generated dataset (numbers meaningless)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mbrl.data.dataset import OfflineDataset
from mbrl.models.dynamics_reward import (
    DYNAMICS_REWARD_FILE,
    DynamicsReward,
    dynamics_reward_preset,
    train_dynamics_reward,
)
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.models.morec import RewardConsistentFilter
from mbrl.models.protocol import WorldModel
from mbrl.run import write_json_atomic

VARIANTS = ("ensemble", "ensemble_mean", "filter_select")


def _tag(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.removesuffix(".npz").removesuffix(".hdf5")).strip("_")


def _write(out: Path, results: dict[str, Any]) -> None:
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    write_json_atomic(out / "morec.json", clean(results))


# ------------------------------------------------------------------------------------------------ models
def get_models(
    data: OfflineDataset, args: argparse.Namespace, model_dir: Path
) -> tuple[ProbabilisticEnsemble, DynamicsReward, OfflineDataset, dict[str, Any]]:
    """Fit (or load) the ensemble and dynamics reward on the train episodes; returns them, the test episodes and
    the fit summary."""
    from mbrl.checkpoint import save_checkpoint
    from mbrl.models.commands import MODEL_FILE, load_model, model_spec

    rng = np.random.default_rng([args.seed, 7])
    train, test = data.split_by_episode(args.test_fraction, rng)
    split = {"dataset": args.dataset, "seed": args.seed, "test_fraction": args.test_fraction,
             "n_train": len(train), "n_test": len(test)}
    split_file = model_dir / "split.json"
    if split_file.is_file():
        saved = json.loads(split_file.read_text())
        if {k: saved.get(k) for k in split} != split:
            raise SystemExit(f"{model_dir}: fitted on another split {saved} (this run: {split}); use another --out")
    if (model_dir / MODEL_FILE).is_file() and (model_dir / DYNAMICS_REWARD_FILE).is_file():
        model = load_model(str(model_dir))
        reward = DynamicsReward.load(model_dir)
        print(f"loaded {model!r} and {reward!r} from {model_dir}", flush=True)
        return model, reward, test, {**split, "loaded_from": str(model_dir)}
    quick = args.quick
    fit_summary: dict[str, Any] = {}
    if (model_dir / MODEL_FILE).is_file() and split_file.is_file():  # an ensemble fitted on this split: reuse it
        model = load_model(str(model_dir))
        print(f"loaded {model!r} from {model_dir}; learning the dynamics reward", flush=True)
        fit_summary["ensemble_loaded_from"] = str(model_dir)
    else:
        ens_cfg = EnsembleConfig(num_members=3, num_elites=2, hidden=64, depth=2) if quick else EnsembleConfig()
        fit_cfg = FitConfig(max_epochs=3, max_time_s=20.0) if quick else FitConfig(max_epochs=args.max_epochs, max_time_s=args.max_fit_time)
        model = ProbabilisticEnsemble(data.obs_dim, data.action_dim, ens_cfg, seed=args.seed)
        report = fit(model, train, fit_cfg, rng=np.random.default_rng([args.seed, 8]))
        print(f"fitted {model!r}: {report.epochs} epochs, holdout MSE {report.holdout_mse:.4g}, {report.time_s:.0f} s", flush=True)
        fit_summary = {"fit_epochs": report.epochs, "fit_holdout_mse": report.holdout_mse, "fit_time_s": report.time_s}
        model_dir.mkdir(parents=True, exist_ok=True)  # saved now: an interrupted reward training reuses it
        save_checkpoint(model_dir / MODEL_FILE, config={"model": model_spec(model, args.seed), "dataset": args.dataset},
                        state={"model": model.state_dict()})
        split_file.write_text(json.dumps(split))
    from dataclasses import replace

    reward_cfg = replace(dynamics_reward_preset("quick" if quick else "cpu"), shuffled_negatives=args.shuffled_negatives)
    if args.reward_iterations is not None:
        reward_cfg = replace(reward_cfg, num_iterations=args.reward_iterations)

    def progress(it: int, m: dict[str, float]) -> None:
        print(f"  dynamics reward {it}/{reward_cfg.num_iterations}: D acc real {m['d_acc_real']:.3f} "
              f"fake {m['d_acc_fake']:.3f}", flush=True)

    reward, history = train_dynamics_reward(train, model, reward_cfg, seed=args.seed, progress=progress)
    reward.save(model_dir / DYNAMICS_REWARD_FILE)
    summary = {**split, **fit_summary, "shuffled_negatives": args.shuffled_negatives,
               "reward": {k: v for k, v in history[-1].items() if k.startswith("eval_") or k in ("num_snapshots", "time_s")}}
    return model, reward, test, summary


# --------------------------------------------------------------------------------------------- k-step error
def _windows(data: OfflineDataset, horizon: int, max_windows: int) -> np.ndarray:
    starts = [np.arange(a, b - horizon + 1) for a, b in data.episode_slices() if b - a >= horizon]
    if not starts:
        raise SystemExit(f"no test episode has {horizon} steps; lower --horizons or raise --test-fraction")
    pool = np.concatenate(starts)
    if len(pool) <= max_windows:
        return pool
    return pool[np.linspace(0, len(pool) - 1, max_windows).round().astype(np.int64)]


def _open_loop(
    model: WorldModel, obs0: Tensor, actions: list[Tensor], *, deterministic: bool, seed: int, chunk: int,
) -> tuple[list[Tensor], list[Tensor]]:
    """Open-loop states after each step ``[H] x [W, D]`` and each step's ``info["dynamics_reward"]`` (if any)."""
    gen = torch.Generator().manual_seed(seed)
    states: list[list[Tensor]] = [[] for _ in actions]
    scores: list[list[Tensor]] = [[] for _ in actions]
    for c0 in range(0, obs0.shape[0], chunk):
        obs = obs0[c0 : c0 + chunk]
        for k, act in enumerate(actions):
            step = model.predict(obs, act[c0 : c0 + chunk], deterministic=deterministic, generator=gen)
            obs = step.next_obs.detach().cpu().float()
            states[k].append(obs)
            if "dynamics_reward" in step.info:
                scores[k].append(step.info["dynamics_reward"].detach().cpu().float())
            obs = torch.where(torch.isfinite(obs).all(1, keepdim=True), obs, torch.zeros_like(obs))
    return [torch.cat(s) for s in states], [torch.cat(s) for s in scores if s]


def _errors(pred: list[Tensor], true: list[Tensor], horizons: list[int], mask: dict[int, Tensor] | None = None) -> dict[str, dict[int, float]]:
    alive = torch.ones(pred[0].shape[0], dtype=torch.bool)
    mse: dict[int, float] = {}
    med: dict[int, float] = {}
    bad: dict[int, float] = {}
    for k in range(len(pred)):
        alive &= torch.isfinite(pred[k]).all(1)
        h = k + 1
        if h in horizons:
            ok = alive & torch.isfinite(true[k]).all(1)
            if mask is not None:
                ok &= mask[h]
            per = ((pred[k] - true[k]) ** 2).mean(1)[ok]
            mse[h] = float(per.mean()) if per.numel() else math.nan
            med[h] = float(per.median()) if per.numel() else math.nan
            bad[h] = float((~alive).float().mean())
    return {"mse": mse, "median_sq_error": med, "nonfinite": bad}


def rollout_error(
    model: ProbabilisticEnsemble, reward: DynamicsReward, test: OfflineDataset, args: argparse.Namespace
) -> dict[str, Any]:
    from mbrl.models.true_dynamics import TrueDynamicsModel

    env_id = args.env_id or test.env_id
    if env_id is None:
        raise SystemExit("the dataset names no env; pass --env")
    assert test.actions is not None
    hs = sorted(set(args.horizons))
    t0 = _windows(test, hs[-1], args.max_windows)
    obs0 = torch.from_numpy(test.observations[t0]).float()
    actions = [torch.from_numpy(test.actions[t0 + k]).float() for k in range(hs[-1])]
    start = time.perf_counter()
    true, _ = _open_loop(TrueDynamicsModel(env_id), obs0, actions, deterministic=True, seed=0, chunk=args.chunk)
    t_true = time.perf_counter() - start
    filt = RewardConsistentFilter(model, reward, samples_per_elite=args.samples_per_elite, threshold=None)
    preds: dict[str, list[Tensor]] = {}
    timing: dict[str, float] = {"true_dynamics": t_true}
    scores: list[Tensor] = []
    for name, m, det in (("ensemble", model, False), ("ensemble_mean", model, True), ("filter_select", filt, False)):
        start = time.perf_counter()
        preds[name], sc = _open_loop(m, obs0, actions, deterministic=det, seed=args.seed + 1, chunk=args.chunk)
        timing[name] = time.perf_counter() - start
        if name == "filter_select":
            scores = sc
    out: dict[str, Any] = {
        "env_id": env_id, "n_windows": len(t0), "horizons": hs, "threshold": args.threshold,
        "samples_per_elite": args.samples_per_elite, "time_s": timing,
    }
    for name in VARIANTS:
        out[name] = _errors(preds[name], true, hs)
    # The stop rule on the select-only rollouts: stopped by k if any step 1..k scored below the threshold.
    low = torch.stack([s < args.threshold for s in scores])  # [H, W]
    stopped_by = torch.cumsum(low.int(), 0) > 0
    surviving = {h: ~stopped_by[h - 1] for h in hs}
    out["filter_stop"] = {
        "stopped_fraction": {h: float(stopped_by[h - 1].float().mean()) for h in hs},
        "surviving_mse": _errors(preds["filter_select"], true, hs, surviving)["mse"],
        "ensemble_on_surviving": _errors(preds["ensemble"], true, hs, surviving)["mse"],
        "select_on_surviving": _errors(preds["filter_select"], true, hs, surviving)["mse"],
        "dynamics_reward_mean": {h: float(scores[h - 1][torch.isfinite(scores[h - 1])].mean()) for h in hs},
    }
    return out


# -------------------------------------------------------------------------------------------------- scores
def score_run(
    method: str, filt: str, seed: int, data: OfflineDataset, reward_path: Path, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    import shutil

    from mbrl.agents.mopo import mopo_preset
    from mbrl.agents.offline_model_based import OfflineModelBasedAgent
    from mbrl.agents.ravl import ravl_preset
    from mbrl.logging import Logger

    make = ravl_preset if method == "ravl" else mopo_preset
    overrides: dict[str, Any] = {
        "loop_seed": seed, "loop_updates": args.updates, "loop_eval_every": args.eval_every,
        "loop_checkpoint_every": 0, "loop_log_every": max(1, min(args.eval_every, 500)), "loop_env_id": args.env_id,
    }
    if args.rollouts_per_epoch is not None:
        overrides["rollouts_per_epoch"] = args.rollouts_per_epoch
    if not args.quick:  # each score run fits its own ensemble, under the same caps as part 1's
        overrides["fit"] = FitConfig(max_epochs=args.max_epochs, max_time_s=args.max_fit_time)
    if filt == "morec":
        overrides.update(filter="morec", dynamics_reward=str(reward_path))
    config = make(args.dataset, "quick" if args.quick else args.preset, **overrides)  # type: ignore[arg-type]
    run_dir = out / "scores" / f"{method}-{filt}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh log (the Logger appends to an existing CSV)
    agent = OfflineModelBasedAgent(config, dataset=data)
    start = time.perf_counter()
    with Logger(run_dir, total=args.updates, desc=f"{method}/{filt} s{seed}",
                console_keys=["eval/normalized_score", "rollout/mean_length"]) as logger:
        final = agent.learn(logger)
    return {
        "method": method, "filter": filt, "seed": seed, "updates": args.updates,
        "normalized_score": final.get("eval/normalized_score", math.nan),
        "return_mean": final.get("eval/return_mean", math.nan),
        "mean_rollout_length": agent.last_rollout.get("rollout/mean_length", math.nan),
        "stopped_fraction": agent.last_rollout.get("rollout/morec_stopped_fraction", math.nan),
        "time_s": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------------- report
def _fmt(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# MOREC filter on `{results['dataset']}`", ""]
    err = results.get("error")
    if err:
        hs = err["horizons"]
        g = lambda d, h: d.get(h, d.get(str(h)))  # noqa: E731 (JSON keys are strings after a reload)
        lines += [
            f"Open-loop next_obs MSE vs `TrueDynamicsModel` ({err['env_id']}), {err['n_windows']} held-out start "
            f"states, logged actions; filter: elites x {err['samples_per_elite']} candidates, threshold "
            f"{err['threshold']}.", "",
            "| horizon k | ensemble | ensemble mean | filter (select only) | stopped by k | filter survivors | "
            "ensemble on survivors |",
            "|---|---|---|---|---|---|---|",
        ]
        fs = err["filter_stop"]
        for h in hs:
            lines.append(
                f"| {h} | {_fmt(g(err['ensemble']['mse'], h))} | {_fmt(g(err['ensemble_mean']['mse'], h))} | "
                f"{_fmt(g(err['filter_select']['mse'], h))} | {100 * g(fs['stopped_fraction'], h):.1f} % | "
                f"{_fmt(g(fs['surviving_mse'], h))} | {_fmt(g(fs['ensemble_on_surviving'], h))} |"
            )
        lines.append("")
    runs = results.get("scores", {})
    if runs:
        lines += ["| method | filter | normalized score | mean rollout length | stopped fraction | seeds |",
                  "|---|---|---|---|---|---|"]
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in runs.values():
            groups.setdefault((r["method"], r["filter"]), []).append(r)
        for (method, filt), rs in sorted(groups.items()):
            s = np.array([r["normalized_score"] if r["normalized_score"] is not None else np.nan for r in rs], float)
            length = np.nanmean([r["mean_rollout_length"] if r["mean_rollout_length"] is not None else np.nan for r in rs])
            stop = [r["stopped_fraction"] for r in rs if r.get("stopped_fraction") is not None]
            stop_s = f"{np.mean(stop):.3f}" if stop and filt == "morec" else "—"
            lines.append(f"| {method.upper()} | {filt} | {np.nanmean(s):.1f} ± {np.nanstd(s):.1f} | {length:.2f} | "
                         f"{stop_s} | {len(rs)} |")
    return "\n".join(lines) + "\n"


def plot(err: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hs = err["horizons"]
    fs = err["filter_stop"]
    fig, (ax, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    series = [
        ("ensemble (MBPO sampling)", err["ensemble"]["mse"], "o-"),
        ("ensemble elite mean", err["ensemble_mean"]["mse"], "x--"),
        ("filter, select only", err["filter_select"]["mse"], "s-"),
        ("filter survivors", fs["surviving_mse"], "^-"),
        ("ensemble on filter survivors", fs["ensemble_on_surviving"], "v:"),
    ]
    for label, d, style in series:
        ax.plot(hs, [d[h] for h in hs], style, label=label)
    if all(v > 0 and math.isfinite(v) for _, d, _ in series for v in d.values()):
        ax.set_yscale("log")
    ax.set_xlabel("open-loop horizon k (steps)")
    ax.set_ylabel("next_obs MSE vs true dynamics")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_s.plot(hs, [100 * fs["stopped_fraction"][h] for h in hs], "o-", color="tab:red")
    ax_s.set_xlabel("horizon k")
    ax_s.set_ylabel(f"rollouts stopped by k (%), threshold {err['threshold']}")
    ax_s.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------- main
def quick_dataset(out: Path) -> str:
    """A tiny generated Hopper dataset (random actions, 100-step episodes) as an npz file."""
    from mbrl.data import save_npz
    from mbrl.envs import make_env

    path = out / "quick-hopper.npz"
    if path.is_file():
        return str(path)
    env = make_env("Hopper-v5")
    rng = np.random.default_rng(0)
    rows: dict[str, list[Any]] = {k: [] for k in ("o", "a", "r", "n", "te", "tr")}
    obs, _ = env.reset(seed=0)
    t = 0
    for _ in range(1500):
        action = rng.uniform(-1, 1, 3).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(action)
        t += 1
        timeout = (bool(trunc) or t >= 100) and not term
        for k, v in zip(rows, (obs, action, r, nxt, term, timeout)):
            rows[k].append(v)
        obs, t = (env.reset()[0], 0) if term or timeout else (nxt, t)
    out.mkdir(parents=True, exist_ok=True)
    save_npz(OfflineDataset(*(np.asarray(rows[k]) for k in rows), env_id="Hopper-v5",
                            metadata={"ref_min_score": -20.0, "ref_max_score": 3234.3}), path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="dataset path or Minari id")
    parser.add_argument("--minari-root", default=None, help="where `mbrl dataset make --out-dir` wrote")
    parser.add_argument("--env", dest="env_id", default=None, help="env of the data when the file does not record it")
    parser.add_argument("--out", default=None, help="output directory (default results/morec/<dataset tag>)")
    parser.add_argument("--model-dir", default=None, help="load model.pt + dynamics_reward.pt from here (default OUT/model, fitted if missing)")
    parser.add_argument("--seed", type=int, default=0, help="split, model and sampling seed")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="episodes held out as start states")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--max-windows", type=int, default=500, help="held-out start states")
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--samples-per-elite", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=100, help="ensemble fit epochs cap (part 1 and every score run)")
    parser.add_argument("--max-fit-time", type=float, default=600.0, help="ensemble fit time cap (s) (part 1 and every score run)")
    parser.add_argument("--reward-iterations", type=int, default=None, help="adversarial iterations (default 5000)")
    parser.add_argument("--shuffled-negatives", type=float, default=0.0,
                        help="fraction of the discriminator's negatives that are shuffled-next-state dataset "
                             "transitions (ours; 0 = the paper's recipe)")
    parser.add_argument("--chunk", type=int, default=2048, help="start states per batched model call")
    parser.add_argument("--scores", action="store_true", help="also train MOPO/RAVL with and without the filter")
    parser.add_argument("--methods", nargs="+", default=["mopo", "ravl"], choices=["mopo", "ravl"])
    parser.add_argument("--filter-variants", nargs="+", default=["none", "morec"], choices=["none", "morec"])
    parser.add_argument("--updates", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="cpu", choices=["paper", "cpu", "quick"])
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--rollouts-per-epoch", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny generated dataset and models (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        base = Path(args.out or "results/morec/quick")
        args.dataset = args.dataset or quick_dataset(base)
        args.horizons, args.max_windows = [h for h in args.horizons if h <= 10] or [1, 5], min(args.max_windows, 50)
        args.updates, args.eval_every, args.seeds = min(args.updates, 40), 20, args.seeds[:1]
        args.rollouts_per_epoch = args.rollouts_per_epoch or 50
    if not args.dataset:
        parser.error("--dataset is required (or --quick)")
    out = Path(args.out or f"results/morec/{_tag(args.dataset)}")
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model_dir) if args.model_dir else out / "model"

    from mbrl.data import load_dataset
    from mbrl.envs.datasets import minari_root

    with minari_root(args.minari_root):
        data = load_dataset(args.dataset, env_id=args.env_id)
        results: dict[str, Any] = json.loads((out / "morec.json").read_text()) if (out / "morec.json").is_file() else {}
        results["dataset"] = args.dataset
        model, reward, test, fit_summary = get_models(data, args, model_dir)
        results.setdefault("fit", fit_summary)
        key = {"horizons": sorted(set(args.horizons)), "threshold": args.threshold,
               "samples_per_elite": args.samples_per_elite, "max_windows": args.max_windows}
        prev = results.get("error")
        if prev and all(prev.get(k) == v for k, v in key.items() if k != "max_windows"):
            print("rollout error: already in morec.json (delete it to recompute)", flush=True)
        else:
            results["error"] = rollout_error(model, reward, test, args)
            _write(out, results)
            results = json.loads((out / "morec.json").read_text())
        plot(_int_keys(results["error"]), out / "morec_error.png", f"{args.dataset}: open-loop error vs true dynamics")
        if args.scores:
            runs = results.setdefault("scores", {})
            for seed in args.seeds:
                for method in args.methods:
                    for filt in args.filter_variants:
                        name = f"{method}-{filt}-s{seed}-u{args.updates}"
                        if name in runs:
                            continue
                        r = score_run(method, filt, seed, data, model_dir / DYNAMICS_REWARD_FILE, args, out)
                        print(f"{name}: normalized score {r['normalized_score']:.1f}, {r['time_s']:.0f} s", flush=True)
                        runs[name] = r
                        _write(out, results)
    (out / "morec.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out / 'morec.json'}, {out / 'morec.md'}, {out / 'morec_error.png'}")
    return 0


def _int_keys(err: dict[str, Any]) -> dict[str, Any]:
    """JSON turned the horizon keys into strings; back to ints (None -> NaN) for plotting."""
    def conv(d: Any) -> Any:
        if isinstance(d, dict) and d and all(str(k).isdigit() for k in d):
            return {int(k): (math.nan if v is None else v) for k, v in d.items()}
        if isinstance(d, dict):
            return {k: conv(v) for k, v in d.items()}
        return d

    return conv(err)  # type: ignore[no-any-return]


if __name__ == "__main__":
    raise SystemExit(main())
