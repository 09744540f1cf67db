"""Learning parity: our SAC (fp32 and bf16) vs stable-baselines3's SAC, model-free on real envs, equal settings.

Both learners use SB3's SAC defaults for MuJoCo-sized problems: 256x256 ReLU nets, Adam 3e-4, batch 256,
gamma 0.99, tau 0.005, automatic entropy (initial alpha 1, target -|A|), ``learning_starts`` uniform random
steps, then one gradient update per env step. After ``steps`` env steps, the deterministic policy is evaluated
for ``--eval-episodes`` episodes on the same initial states for every method (reset seeds ``seed +
EVAL_SEED_OFFSET + i``). A uniform random policy is evaluated the same way for reference.

Results go to ``OUT/results.jsonl`` as each (method, env, seed) finishes; a rerun skips those already there
(resumable). At the end ``OUT/results.csv``, ``OUT/summary.json`` and a table (mean ± std over seeds) are written.

Usage: ``python scripts/bench/learning.py [--seeds 3] [--steps N] [--envs Pendulum-v1 InvertedPendulum-v5]
[--methods ours ours-bf16 sb3] [--out DIR]``. ``--steps`` overrides the per-env defaults (Pendulum-v1 10k,
InvertedPendulum-v5 15k). For a smoke check: ``--seeds 1 --steps 300 --learning-starts 200 --eval-episodes 1``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl.evaluation import evaluate_policy
from mbrl.gym_env import make_seeded
from mbrl.rl.policies import SB3Policy
from mbrl.rl.sac import SACConfig
from mbrl.rl.train_sac import EVAL_SEED_OFFSET, SACTrainConfig, train_sac
from mbrl.utils import set_threads

DEFAULT_STEPS = {"Pendulum-v1": 10_000, "InvertedPendulum-v5": 15_000}
METHODS = ("ours", "ours-bf16", "sb3")


def run_ours(env_id: str, steps: int, seed: int, args: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    cfg = SACTrainConfig(
        total_steps=steps, learning_starts=args.learning_starts, utd=1, eval_every=0,
        eval_episodes=args.eval_episodes, replay_capacity=steps, sac=SACConfig(use_bf16=bf16),
    )
    _, metrics = train_sac(env_id, cfg, seed=seed)
    return {
        "return_mean": metrics["eval/return_mean"],
        "return_std": metrics["eval/return_std"],
        "updates_per_s": metrics["time/updates_per_s"],
    }


def run_sb3(env_id: str, steps: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    env = make_seeded(env_id)
    model = SB3SAC(
        "MlpPolicy", env, learning_rate=3e-4, buffer_size=steps, learning_starts=args.learning_starts,
        batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
        policy_kwargs={"net_arch": [256, 256]}, seed=seed, device="cpu",
    )
    model.set_logger(configure(None, []))  # no SB3-<time> folders, no console output
    start = time.perf_counter()
    model.learn(total_timesteps=steps, progress_bar=False)
    train_s = time.perf_counter() - start
    eval_env = make_seeded(env_id)
    result = evaluate_policy(eval_env, SB3Policy(model, deterministic=True), args.eval_episodes,
                             seed=seed + EVAL_SEED_OFFSET)
    env.close()
    eval_env.close()
    updates = max(0, steps - args.learning_starts)
    return {
        "return_mean": result.return_mean,
        "return_std": result.return_std,
        "updates_per_s": updates / train_s if train_s > 0 else 0.0,  # env steps included: an upper bound on cost
    }


def random_baseline(env_id: str, seed: int, episodes: int) -> float:
    env = make_seeded(env_id)
    space = env.action_space
    rng = np.random.default_rng(seed)
    result = evaluate_policy(
        env, lambda _: rng.uniform(space.low, space.high).astype(np.float32),  # type: ignore[attr-defined]
        episodes, seed=seed + EVAL_SEED_OFFSET,
    )
    env.close()
    return result.return_mean


def load_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"warning: {path}:{i + 1}: skipping a malformed line (interrupted write?)", file=sys.stderr)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for env_id in sorted({r["env"] for r in rows}):
        for method in [*METHODS, "random"]:
            sel = [r for r in rows if r["env"] == env_id and r["method"] == method]
            if not sel:
                continue
            returns = np.array([r["return_mean"] for r in sel])
            table.append({
                "env": env_id,
                "method": method,
                "seeds": len(sel),
                "steps": sel[0]["steps"],
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "wall_s_mean": float(np.mean([r["wall_s"] for r in sel])),
            })
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="env steps for every env (default: per env)")
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_STEPS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_learning"))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)  # SB3 draws from the global RNGs; its own seed= argument reseeds them per run
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    rows = load_results(results_path)
    done = {(r["method"], r["env"], r["seed"], r["steps"]) for r in rows}

    for env_id in args.envs:
        steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(env_id, 20_000)
        jobs = [(m, s) for s in range(args.seeds) for m in args.methods] + [("random", s) for s in range(args.seeds)]
        for method, seed in jobs:
            if (method, env_id, seed, steps) in done:
                continue
            start = time.perf_counter()
            if method == "random":
                out: dict[str, Any] = {"return_mean": random_baseline(env_id, seed, args.eval_episodes),
                                       "return_std": float("nan"), "updates_per_s": 0.0}
            elif method == "sb3":
                out = run_sb3(env_id, steps, seed, args)
            else:
                out = run_ours(env_id, steps, seed, args, bf16=method == "ours-bf16")
            row = {"method": method, "env": env_id, "seed": seed, "steps": steps,
                   "wall_s": time.perf_counter() - start, **out}
            with results_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            print(f"{env_id:<22} {method:<10} seed {seed}: return {row['return_mean']:9.1f}  "
                  f"({row['wall_s']:.0f} s)", flush=True)

    wanted = {(r["env"], r["steps"]) for r in rows if r["env"] in args.envs}
    rows = [r for r in rows if (r["env"], r["steps"]) in wanted]
    table = summarise(rows)
    with (args.out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "env", "seed", "steps", "return_mean", "return_std",
                                               "updates_per_s", "wall_s"])
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "summary.json").write_text(json.dumps({"table": table, "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=2))
    print(f"\n{'env':<22} {'method':<10} {'steps':>7} {'seeds':>5}  return (mean ± std over seeds)")
    for t in table:
        print(f"{t['env']:<22} {t['method']:<10} {t['steps']:>7} {t['seeds']:>5}  "
              f"{t['return_mean']:9.1f} ± {t['return_std']:.1f}")
    print(f"\nwritten: {results_path}, {args.out / 'results.csv'}, {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
