"""Why does an offline policy fail? Real episodes of a trained RAVL/MOPO run's deterministic policy, and along
each: the critics' Q (min over the ensemble, as the actor sees it, and the spread) against the episode's real
discounted return-to-go G, and the world model's one-step error on the real transitions. (After a time-limit
end the tail is unknown: G is given only for steps where the tail's weight gamma^(T - t) is below 1 %.)

A critic that holds Q far above G in the steps before the episode ends has not learned what those states lead
to; a model error that grows in the same steps says the model rollouts could not have taught it.

    python scripts/policy_diagnosis.py RUN_DIR [--episodes 5] [--out DIR]
    python scripts/policy_diagnosis.py --quick       # seconds: a tiny RAVL run of offline_benchmark --quick

Prints per episode: length, return, how it ended, the overestimation Q_min - G over the first half and over the
last 10 steps, the model's mean squared error per observation dim over the same two windows and the critics'
std in the last 10 steps. Writes ``OUT/diagnosis.json`` and ``OUT/diagnosis.png`` (Q and G, model error, over
the steps of each episode). RUN_DIR is any ``mbrl train ravl|mopo`` or ``offline_benchmark.py`` run directory;
its dataset must be readable (``MINARI_DATASETS_PATH`` for generated ids).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # offline_benchmark (for --quick) beside this file

LAST = 10  # steps before the end that the "last" columns average over


def episode(agent: Any, env: Any, seed: int) -> dict[str, Any]:
    """One deterministic episode, then Q, G and the model's one-step error along it."""
    import torch

    obs, _ = env.reset(seed=seed)
    rows: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]] = []
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(agent.act(obs, deterministic=True), dtype=np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, float(reward), next_obs))
        obs = next_obs
    o, a, r, n = (np.array([row[i] for row in rows], dtype=np.float32) for i in range(4))
    gamma = agent.sac.config.gamma
    g = np.zeros(len(r))
    acc = 0.0
    for i in range(len(r) - 1, -1, -1):
        acc = r[i] + gamma * acc
        g[i] = acc
    if not terminated:  # a time-limit end leaves the tail unknown: G only where its weight gamma^(T-i) < 1 %
        g[gamma ** (len(r) - np.arange(len(r))) > 0.01] = np.nan
    device = agent.sac.device
    with torch.no_grad():
        ot, at = torch.from_numpy(o).to(device), torch.from_numpy(a).to(device)
        q = agent.sac.critic(ot, agent.sac.to_unit(at)).float().cpu().numpy()  # [N, T]
        pred = agent.base_model.predict(ot, at, deterministic=True).next_obs.float().cpu().numpy()
    return {
        "seed": seed, "length": len(r), "return": float(r.sum()), "terminated": bool(terminated),
        "q_min": q.min(0).tolist(), "q_std": (q.std(0) if q.shape[0] > 1 else np.zeros(len(r))).tolist(),
        "g": [None if np.isnan(v) else float(v) for v in g], "model_mse": ((pred - n) ** 2).mean(1).tolist(),
    }


def _mean(x: np.ndarray) -> float:
    """Mean over the defined (finite) entries; NaN when there are none."""
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def summary(ep: dict[str, Any]) -> dict[str, float]:
    q, g, err, std = (np.array(ep[k], dtype=float) for k in ("q_min", "g", "model_mse", "q_std"))  # None -> nan
    half, last = slice(0, max(1, len(q) // 2)), slice(max(0, len(q) - LAST), len(q))
    return {
        "over_first_half": _mean(q[half] - g[half]), "over_last": _mean(q[last] - g[last]),
        "mse_first_half": float(err[half].mean()), "mse_last": float(err[last].mean()),
        "q_std_last": float(std[last].mean()),
    }


def plot(episodes: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_q, ax_e) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, ep in enumerate(episodes):
        color = f"C{i % 10}"
        ax_q.plot(ep["q_min"], color=color, label=f"Q_min, ep {i}")
        ax_q.plot(ep["g"], color=color, linestyle="--", label=f"real G, ep {i}")
        ax_e.plot(ep["model_mse"], color=color, label=f"ep {i}")
    ax_q.set_xlabel("step of the real episode")
    ax_q.set_ylabel("value")
    ax_e.set_xlabel("step of the real episode")
    ax_e.set_ylabel("model one-step MSE per obs dim")
    ax_e.set_yscale("log")
    ax_q.legend(fontsize=7, ncol=2)
    ax_e.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quick_run(out: Path) -> Path:
    """A tiny RAVL run (offline_benchmark --quick) to diagnose; returns its run directory."""
    import offline_benchmark

    bench = out / "bench"
    if offline_benchmark.main(["--quick", "--algos", "ravl", "--splits", "medium", "--out", str(bench)]) != 0:
        raise SystemExit("offline_benchmark --quick failed")
    return bench / "runs" / "Hopper-v5-medium" / "ravl-s0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", help="a RAVL/MOPO run directory (its latest checkpoint)")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--out", default=None, help="where diagnosis.{json,png} go (default: RUN_DIR/diagnosis)")
    parser.add_argument("--device", default=None, help="cpu, cuda, auto (default: the run's own)")
    parser.add_argument("--quick", action="store_true", help="diagnose a tiny RAVL run made on the spot")
    args = parser.parse_args(argv)
    import torch

    import mbrl
    from mbrl.envs.datasets import minari_root
    from mbrl.gym_env import make_seeded
    from mbrl.loops import eval_seed

    torch.set_num_threads(1)
    if args.quick:
        out = Path(args.out or "results/policy_diagnosis_quick")
        out.mkdir(parents=True, exist_ok=True)
        run_dir = quick_run(out)
        with minari_root(out / "bench" / "minari"):
            loaded = mbrl.load(run_dir, device=args.device)
    elif args.run_dir is None:
        parser.error("RUN_DIR is required (or --quick)")
    else:
        run_dir = Path(args.run_dir)
        out = Path(args.out) if args.out else run_dir / "diagnosis"
        loaded = mbrl.load(run_dir, device=args.device)
    if loaded.algo not in ("ravl", "mopo"):
        raise SystemExit(f"{run_dir}: a {loaded.algo} run; the diagnosis needs critics and a model (ravl, mopo)")
    agent = loaded.agent
    out.mkdir(parents=True, exist_ok=True)
    env = make_seeded(agent.env_id)
    first = eval_seed(agent.config.loop.seed)
    episodes = [episode(agent, env, first + i) for i in range(args.episodes)]
    print(f"{run_dir} at {agent.num_updates} updates ({loaded.algo}, env {agent.env_id}); Q_min - G and model MSE "
          f"over the first half / the last {LAST} steps of each real episode:")
    print("| ep | length | return | end | Q_min - G, first half | Q_min - G, last | model MSE, first half | "
          "model MSE, last | critics' std, last |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, ep in enumerate(episodes):
        s = summary(ep)
        ep["summary"] = {k: None if np.isnan(v) else v for k, v in s.items()}
        print(f"| {i} | {ep['length']} | {ep['return']:.1f} | {'terminated' if ep['terminated'] else 'time limit'} | "
              f"{s['over_first_half']:.1f} | {s['over_last']:.1f} | {s['mse_first_half']:.3g} | {s['mse_last']:.3g} | "
              f"{s['q_std_last']:.2f} |")
    (out / "diagnosis.json").write_text(json.dumps(
        {"run_dir": str(run_dir), "updates": agent.num_updates, "algo": loaded.algo, "episodes": episodes}
    ))
    plot(episodes, out / "diagnosis.png", f"{run_dir} at {agent.num_updates} updates")
    print(f"wrote {out / 'diagnosis.json'}, {out / 'diagnosis.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
