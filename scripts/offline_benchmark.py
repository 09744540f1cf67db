"""Offline benchmark: RAVL, MOPO and BC on generated D4RL-style datasets, several seeds; the dataset's own mean
normalized return; RAVL's update throughput. Prints and writes a markdown table and score curves.

First make the datasets (about an hour per env on one core at the cpu preset):

    mbrl dataset make --env Hopper-v5 --preset cpu --out-dir data/minari
    mbrl dataset make --env HalfCheetah-v5 --preset cpu --out-dir data/minari

optionally fit each dataset's ensemble once (shared by MOPO and RAVL and by every seed; otherwise every run fits its
own, up to 10 minutes each at the cpu preset):

    mbrl model train mbrl/hopper/medium-v0 --run-dir models/Hopper-v5-medium --fit.max-time-s 300 \
        --ensemble.bf16-training --ensemble.no-full-info     # one per <env>-<split>

(``--ensemble.bf16-training`` only on a CPU with native bf16, AVX512-BF16 or AMX: elsewhere it is emulated and
many times slower than fp32; ``mbrl.utils.native_bf16`` says which, and the model warns.)

then

    python scripts/offline_benchmark.py --minari-root data/minari --seeds 0 1 2 [--model-dir models]
    python scripts/offline_benchmark.py --quick      # seconds: tiny generated dataset, a few hundred updates

``--filters none morec`` adds MOPO and RAVL with the reward-consistent filter (MOREC) on the same shared ensemble,
reading a learned dynamics reward from ``DYNAMICS_REWARD_DIR/<env>-<split>/dynamics_reward.pt`` (default: the
model dir; learn one with ``mbrl model train-dynamics-reward`` or ``scripts/morec_experiment.py``).

Finished runs (``OUT/runs/<env>-<split>/<algo>-s<seed>/result.json``) are skipped when the script is re-run; an
interrupted run continues from its last checkpoint (one per evaluation). ``--set KEY=VALUE --tag NAME`` runs an
ablation arm (e.g. ``--set bc_warm_start=5000 --tag bcws5k``) in its own run dirs and table column. ``--archive DIR``
copies each finished run's ``result.json`` (with the dataset's fingerprint) and ``config.json`` to ``DIR``, e.g. into
the repo, so that a table built over several sessions or machines keeps every run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ALGOS = ("bc", "mopo", "ravl")
FILTERS = ("none", "morec")


def variant(algo: str, filt: str, tag: str = "") -> str:
    """Run/column name: ``mopo``, ``mopo+morec`` with the filter, ``mopo+<tag>`` for a ``--set`` arm."""
    name = algo if filt == "none" else f"{algo}+{filt}"
    return f"{name}+{tag}" if tag and algo != "bc" else name


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["bc_warm_start=5000", "real_ratio=0.5"]`` -> config overrides (values read as JSON, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def with_settings(config: Any, settings: dict[str, Any]) -> Any:
    """``config`` with ``{"rollout_length": 20, "sac.bc_weight": 2.5, "ensemble.full_info": True}`` applied (a
    dotted key names a field of a sub-config), checked once, as a whole, by the config's own rules."""
    flat = {k: v for k, v in settings.items() if "." not in k}
    groups: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        if "." in key:
            part, _, name = key.partition(".")
            if "." in name or not is_dataclass(getattr(config, part, None)):
                raise SystemExit(f"--set {key}: {part!r} is not a sub-config of {type(config).__name__}")
            groups.setdefault(part, {})[name] = value
    try:
        subs = {part: replace(getattr(config, part), **fields) for part, fields in groups.items()}
        return replace(config, **flat, **subs)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--set: {exc}") from None


def dataset_average(dataset_id: str) -> float:
    """Mean normalized return of the dataset's episodes (its own reference scores)."""
    from mbrl.data import load_dataset
    from mbrl.evaluation import normalized_score, reference_scores

    ds = load_dataset(dataset_id)
    refs = reference_scores(ds.env_id, ds.metadata)
    if refs is None:
        return float("nan")
    return float(normalized_score(float(ds.episode_returns().mean()), *refs))


def shared_model(model_dir: str | None, name: str, full_info: bool) -> Any:
    """The ensemble fitted once for this dataset by ``mbrl model train`` (``MODEL_DIR/<env>-<split>``), rebuilt
    with the ``full_info`` this algorithm needs (MOPO's penalty reads every member); ``None`` if there is none."""
    if model_dir is None or not (Path(model_dir) / name / "model.pt").is_file():
        return None
    from mbrl.models.commands import load_ensemble

    return load_ensemble(str(Path(model_dir) / name), full_info=full_info)


def dynamics_reward_file(args: argparse.Namespace, name: str) -> Path | None:
    """``<dir>/<name>/dynamics_reward.pt`` for the filtered runs; ``None`` (each run learns its own) without a dir."""
    root = args.dynamics_reward_dir or args.model_dir
    if root is None:
        return None
    path = Path(root) / name / "dynamics_reward.pt"
    if not path.is_file():
        raise SystemExit(f"--filters morec: no dynamics reward at {path} (learn one with `mbrl model "
                         f"train-dynamics-reward --dataset ... --run-dir {path.parent}`)")
    return path


def offline_config(
    algo: str,
    dataset_id: str,
    preset: str,
    loop: dict[str, Any] | None = None,
    filt: str = "none",
    dynamics_reward: Path | None = None,
    settings: dict[str, Any] | None = None,
) -> Any:
    """The RAVL or MOPO config of one run: the preset on the dataset, the loop fields ``loop``, the filter, then
    ``settings`` (``loop_*`` keys to the preset's loop, dotted keys to sub-configs)."""
    from mbrl.agents.mopo import mopo_preset
    from mbrl.agents.ravl import ravl_preset

    make = ravl_preset if algo == "ravl" else mopo_preset
    extra: dict[str, Any] = dict(settings or {})
    if filt != "none":
        extra |= {"filter": filt, "dynamics_reward": None if dynamics_reward is None else str(dynamics_reward)}
    loop_settings = {k: extra.pop(k) for k in list(extra) if k.startswith("loop_")}  # the preset's loop
    loop_fields = {f"loop_{k}": v for k, v in (loop or {}).items()} | loop_settings
    config = make(dataset_id, preset, **loop_fields)  # type: ignore[arg-type]
    return with_settings(config, extra)


def run_one(
    algo: str,
    dataset_id: str,
    seed: int,
    preset: str,
    updates: int | None,
    eval_every: int | None,
    run_dir: Path,
    model: Any = None,
    filt: str = "none",
    dynamics_reward: Path | None = None,
    settings: dict[str, Any] | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """One run, skipped if ``run_dir/result.json`` exists, continued from its latest checkpoint if it has one. ``filt="morec"`` puts the reward-consistent filter on
    the model, with ``dynamics_reward`` (or one learned by the run itself when ``None``); ``settings`` override
    fields of the RAVL/MOPO config (not BC's)."""
    from mbrl.agents.bc import BCAgent, bc_preset
    from mbrl.agents.offline_model_based import OfflineModelBasedAgent
    from mbrl.logging import Logger, read_csv
    from mbrl.run import write_json_atomic

    done = run_dir / "result.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    loop: dict[str, Any] = {"seed": seed}
    if updates is not None:
        loop["updates"] = updates
    if eval_every is not None:
        loop["eval_every"] = loop["checkpoint_every"] = eval_every
    agent: Any
    if algo == "bc":
        agent = BCAgent(bc_preset(dataset_id, preset, **loop), run_dir=run_dir)  # type: ignore[arg-type]
    else:
        config = offline_config(algo, dataset_id, preset, loop, filt, dynamics_reward, settings)
        agent = OfflineModelBasedAgent(config, model=model, fit_model=model is None, run_dir=run_dir)
    # The run's config.json, as `mbrl train` writes it: `mbrl.load(run_dir)` and `mbrl eval run_dir` read it.
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", agent.config_dict())
    # A run killed before its first checkpoint (inside the model fit) keeps the fit's progress file, which the
    # agent continues; its log restarts at step 0 either way.
    resume_step = agent.num_updates if agent.resume() else 0
    if resume_step:
        print(f"{algo} {dataset_id} s{seed}: continuing from update {resume_step}", flush=True)
    start = time.perf_counter()
    with Logger(run_dir, total=agent.loop.updates, desc=f"{algo} {dataset_id} s{seed}", console_keys=["eval/normalized_score"],
                resume_step=resume_step) as logger:
        final = agent.learn(logger)
    log = read_csv(run_dir / "progress.csv")
    rows = np.isfinite(log["eval/normalized_score"])
    q = np.isfinite(log["train/q_mean"]) if "train/q_mean" in log else np.zeros(len(log["step"]), dtype=bool)
    result = {
        "algo": variant(algo, filt, tag), "dataset": dataset_id, "seed": seed, "updates": agent.num_updates,
        "dataset_fingerprint": agent.dataset.fingerprint(),  # the data the agent trained on, as it loaded it
        "final_score": final["eval/normalized_score"], "final_return": final["eval/return_mean"],
        "eval_steps": log["step"][rows].tolist(), "scores": log["eval/normalized_score"][rows].tolist(),
        "q_steps": log["step"][q].tolist(), "q_mean": log["train/q_mean"][q].tolist() if q.any() else [],
        "wall_s": time.perf_counter() - start, "train_s": agent.train_time_s,
        "updates_per_s": agent.num_updates / max(agent.train_time_s, 1e-9),
        "shared_model": model is not None,
    }
    if filt != "none":
        result["rollout_stopped_fraction"] = agent.last_rollout.get("rollout/morec_stopped_fraction", float("nan"))
    done.write_text(json.dumps(result))
    return result


def archive_run(run_dir: Path, dest: Path) -> None:
    """Copy a finished run's ``result.json`` (scores, mean-Q curve, dataset fingerprint) and ``config.json`` to
    ``dest``; checkpoints and logs stay behind. Refuses to overwrite a different result already archived there."""
    from mbrl.run import write_json_atomic

    result = json.loads((run_dir / "result.json").read_text())
    old = dest / "result.json"
    same = json.dumps(result, sort_keys=True)  # as text: NaN != NaN as floats
    if old.is_file() and json.dumps(json.loads(old.read_text()), sort_keys=True) != same:
        raise SystemExit(f"--archive: {old} holds a different result for this run; move it away or pick another DIR")
    dest.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dest / "config.json", json.loads((run_dir / "config.json").read_text()))
    write_json_atomic(dest / "result.json", result)


def table(results: list[dict[str, Any]], averages: dict[str, float]) -> str:
    present = list(dict.fromkeys(r["algo"] for r in results))
    columns = [v for a in ALGOS for f in FILTERS if (v := variant(a, f)) in present or f == "none"]
    columns += [v for v in present if v not in columns]
    lines = ["| dataset | dataset avg | " + " | ".join(c.upper() for c in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for dataset_id, avg in averages.items():
        cells = []
        for algo in columns:
            s = np.array([r["final_score"] for r in results if r["dataset"] == dataset_id and r["algo"] == algo])
            cells.append(f"{s.mean():.1f} ± {s.std():.1f} (n={len(s)})" if len(s) else "–")
        lines.append(f"| {dataset_id} | {avg:.1f} | " + " | ".join(cells) + " |")
    ravl = [r for r in results if r["algo"].startswith("ravl")]
    if ravl:
        ups = np.array([r["updates_per_s"] for r in ravl])
        lines.append("")
        lines.append(
            f"RAVL throughput (updates incl. rollouts, excl. model fit and evaluation): {ups.mean():.1f} updates/s, "
            f"{1e4 / ups.mean() / 60:.1f} min per 10k updates (mean over {len(ravl)} runs)."
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.5), squeeze=False)
    colors = {"bc": "tab:gray", "mopo": "tab:blue", "ravl": "tab:green", "mopo+morec": "tab:purple", "ravl+morec": "tab:olive"}
    for ax, dataset_id in zip(axes[0], datasets):
        for algo in colors:
            runs = [r for r in results if r["dataset"] == dataset_id and r["algo"] == algo]
            for i, r in enumerate(runs):
                ax.plot(r["eval_steps"], r["scores"], color=colors[algo], alpha=0.7, label=algo.upper() if i == 0 else None)
        ax.set_title(dataset_id, fontsize=9)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "HalfCheetah-v5"])
    parser.add_argument("--splits", nargs="+", default=["medium", "medium-replay"])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="cpu", choices=["paper", "cpu", "quick"])
    parser.add_argument("--updates", type=int, default=None, help="override the preset's updates")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--minari-root", default=None, help="where `mbrl dataset make --out-dir` wrote")
    parser.add_argument("--namespace", default="mbrl")
    parser.add_argument("--out", default="results/offline")
    parser.add_argument("--model-dir", default=None, help="ensembles fitted once per <env>-<split> by `mbrl model train`")
    parser.add_argument("--filters", nargs="+", default=["none"], choices=list(FILTERS),
                        help="'morec' adds MOPO/RAVL with the reward-consistent filter (BC has no model: skipped)")
    parser.add_argument("--dynamics-reward-dir", default=None,
                        help="holds <env>-<split>/dynamics_reward.pt for --filters morec (default: --model-dir)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override a RAVL/MOPO config field in every run, e.g. bc_warm_start=5000 or "
                             "sac.critic_layer_norm=true (repeatable)")
    parser.add_argument("--tag", default="", help="name of the --set arm (column mopo+TAG, ravl+TAG)")
    parser.add_argument("--archive", default=None, metavar="DIR",
                        help="copy each finished run's result.json and config.json to DIR/runs/... (e.g. into the "
                             "repo, so that a table built over several machines keeps every run; "
                             "scripts/offline_report.py reads DIR like OUT)")
    parser.add_argument("--quick", action="store_true", help="tiny generated Hopper dataset, 200 updates")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    if settings and not args.tag:
        parser.error("--set needs --tag (the arm's name in run dirs and the table)")
    import torch

    from mbrl.envs.datasets import dataset_preset, make_datasets, minari_id, minari_root

    torch.set_num_threads(1)
    out = Path(args.out)
    if args.quick:
        args.envs, args.preset, args.updates, args.eval_every, args.seeds = ["Hopper-v5"], "quick", 200, 100, [0]
        args.minari_root, args.namespace = str(out / "minari"), "quick"
    # fail before any run, not after hours of them
    names = [f"{e}-{s}" for e in args.envs for s in args.splits]
    rewards = {n: dynamics_reward_file(args, n) for n in names} if "morec" in args.filters else {}
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        config = dataset_preset("Hopper-v5", "tiny", sac_steps=1000, split_size=1000, namespace="quick")
        make_datasets(config, out / "work", out_dir=args.minari_root, splits=tuple(args.splits))
    results: list[dict[str, Any]] = []
    averages: dict[str, float] = {}
    with minari_root(args.minari_root):
        for env_id in args.envs:
            for split in args.splits:
                gen = dataset_preset(env_id, "tiny", namespace=args.namespace)
                dataset_id = minari_id(gen, split)
                averages[dataset_id] = dataset_average(dataset_id)
                for algo, filt in [(a, f) for a in args.algos for f in args.filters if a != "bc" or f == "none"]:
                    # the shared ensemble as the run's config wants it (MOPO's penalty reads every member's sigma)
                    full_info = algo != "bc" and offline_config(algo, dataset_id, args.preset, settings=settings).ensemble.full_info
                    reward = None if filt == "none" else rewards[f"{env_id}-{split}"]
                    for seed in args.seeds:
                        run_dir = out / "runs" / f"{env_id}-{split}" / f"{variant(algo, filt, args.tag)}-s{seed}"
                        model = None if algo == "bc" else shared_model(args.model_dir, f"{env_id}-{split}", full_info)
                        r = run_one(algo, dataset_id, seed, args.preset, args.updates, args.eval_every, run_dir, model, filt, reward, settings, args.tag)
                        if args.archive:
                            archive_run(run_dir, Path(args.archive) / run_dir.relative_to(out))
                        print(f"{dataset_id} {r['algo']} seed {seed}: {r['final_score']:.1f} ({r['wall_s']:.0f} s)", flush=True)
                        results.append(r)
    text = table(results, averages)
    (out / "offline_benchmark.md").write_text(
        f"Preset {args.preset}, updates {args.updates or 'preset'}, seeds {args.seeds}.\n\n{text}\n"
    )
    (out / "offline_benchmark.json").write_text(json.dumps({"results": results, "dataset_average": averages}))
    plot(results, out / "offline_benchmark.png")
    print(text)
    print(f"wrote {out / 'offline_benchmark.md'}, {out / 'offline_benchmark.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
