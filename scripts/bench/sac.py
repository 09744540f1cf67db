"""Gradient updates per second: our SAC-N vs stable-baselines3's SAC, same sizes, one process.

Sizes: HalfCheetah-v5 dims (obs 17, action 6), 256x256 ReLU actor and critics, batch 256. For each thread count
and critic count (2 and 10) it times

- SB3: ``model.train(gradient_steps=K, batch_size=256)`` with a replay buffer filled with random transitions
  (``policy_kwargs={"net_arch": [256, 256], "n_critics": N}``); this includes SB3's own replay sampling;
- ours (fp32 and bf16 autocast): ``K`` x ``SAC.update(buffer.sample(256))`` from an ``mbrl.data.ReplayBuffer``
  filled the same way (replay sampling included too).

Each configuration is timed ``--repeats`` times and the best is kept (other processes only slow things down).

The allocator matters: our loops raise glibc's mmap/trim thresholds (``mbrl.rl.runtime.tune_allocator``), which
also speeds SB3 up when it runs in the same process. So SB3 is timed twice: ``sb3`` in this (tuned) process and
``sb3-stock`` in a fresh subprocess with glibc's defaults, as SB3 runs for its users. ``ratio_vs_sb3_<N>critics``
compares our best with the best SB3 of either (the strict ratio); ``ratio_vs_sb3_stock_<N>critics`` with stock SB3.
The FLOP count of one update is computed from the layer sizes, giving GFLOP/s and the fraction of the measured
matmul peak (a 2048^2 matmul in the same precision and thread count).

``--device cuda`` (or ``auto``) runs both on the GPU (SB3 with ``device=...``; ours with its replay buffer stored
and sampled on the device), each timing ending with a device synchronisation; ``--compile`` adds our update under
``SACConfig.compile`` modes (e.g. ``reduce-overhead``: CUDA graphs); ``--depth 3`` is RAVL's 3 x 256.

Usage: ``python scripts/bench/sac.py [--json] [--device cpu] [--depth 2] [--compile none] [--updates 200]
[--repeats 3] [--threads 1 2] [--critics 2 10]``; ``--quick`` runs a few updates of each for a smoke check
(numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mbrl.data import ReplayBuffer
from mbrl.rl.runtime import tune_allocator
from mbrl.rl.sac import SAC, SACConfig
from mbrl.utils import cpu_name, resolve_device

OBS, ACT, HIDDEN, BATCH, ENV_ID = 17, 6, 256, 256, "HalfCheetah-v5"
DEVICE = torch.device("cpu")  # set once by main (--device)
DEPTH = 2  # hidden layers (set by main: --depth)


def sync() -> None:
    """Wait for the device (a GPU timing must include the queued kernels)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def update_flops(
    num_critics: int, obs: int = OBS, act: int = ACT, hidden: int = HIDDEN, batch: int = BATCH, depth: int | None = None
) -> float:
    """FLOPs (2 per multiply-add) of one SAC update's matmuls.

    Critic forward MACs per row ``c = (obs+act) h + h^2 + h``; per update: target, critic and actor-side forwards
    (3c), critic backward (input and weight gradients, ~2c) and the actor-side backward to the action (~c): 6c
    per critic. Actor forward ``p = obs h + h^2 + 2 act h``: current and next forwards, backward (~2p): 4p.
    """
    inner = ((DEPTH if depth is None else depth) - 1) * hidden * hidden
    c = (obs + act) * hidden + inner + hidden
    p = obs * hidden + inner + 2 * act * hidden
    return 2.0 * batch * (6 * num_critics * c + 4 * p)


def matmul_peak(dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of a square matmul (2048 on CPU at the current thread count, 8192 on a GPU)."""
    size = 2048 if DEVICE.type == "cpu" else 8192
    a = torch.randn(size, size, device=DEVICE).to(dtype)
    a @ a
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        n += 1
    sync()
    return 2 * size**3 * n / (time.perf_counter() - start) / 1e9


def random_transitions(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "obs": rng.normal(size=(n, OBS)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        "reward": rng.normal(size=n).astype(np.float32),
        "next_obs": rng.normal(size=(n, OBS)).astype(np.float32),
        "terminated": rng.random(n) < 0.01,
        "truncated": np.zeros(n, dtype=bool),
    }


def time_best(fn: Any, updates: int, repeats: int) -> float:
    """Best updates/s over ``repeats`` timings of ``fn(updates)``."""
    best = 0.0
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn(updates)
        sync()
        best = max(best, updates / (time.perf_counter() - start))
    return best


def bench_sb3(num_critics: int, updates: int, repeats: int, data: dict[str, np.ndarray]) -> float:
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    env = gym.make(ENV_ID)
    model = SB3SAC(
        "MlpPolicy", env, batch_size=BATCH, buffer_size=len(data["obs"]), learning_starts=0, seed=0, device=str(DEVICE),
        policy_kwargs={"net_arch": [HIDDEN] * DEPTH, "n_critics": num_critics},
    )
    model.set_logger(configure(None, []))
    rb = model.replay_buffer
    assert rb is not None
    n = len(data["obs"])
    rb.observations[:n, 0] = data["obs"]
    rb.next_observations[:n, 0] = data["next_obs"]
    rb.actions[:n, 0] = data["action"]
    rb.rewards[:n, 0] = data["reward"]
    rb.dones[:n, 0] = data["terminated"]
    rb.timeouts[:n, 0] = data["truncated"]
    rb.full, rb.pos = True, 0
    model.train(gradient_steps=3, batch_size=BATCH)  # warm-up
    rate = time_best(lambda k: model.train(gradient_steps=k, batch_size=BATCH), updates, repeats)
    env.close()
    return rate


def bench_ours(
    num_critics: int, bf16: bool, updates: int, repeats: int, data: dict[str, np.ndarray], compile: str = "none"
) -> float:
    n = len(data["obs"])
    buffer = ReplayBuffer(n, OBS, ACT, rng=np.random.default_rng(0), device=DEVICE)
    buffer.add(**data)
    config = SACConfig(
        num_critics=num_critics, use_bf16=bf16, depth=DEPTH, device=str(DEVICE), compile=compile  # type: ignore[arg-type]
    )
    sac = SAC(OBS, ACT, -np.ones(ACT), np.ones(ACT), config, generator=torch.Generator().manual_seed(0))

    def run(k: int) -> None:
        for _ in range(k):
            sac.update(buffer.sample(BATCH))

    run(3 if compile == "none" else 10)  # warm-up (compilation, CUDA-graph recording)
    return time_best(run, updates, repeats)


def time_sb3_stock(args: argparse.Namespace) -> list[dict[str, Any]]:
    """SB3 timings from a fresh subprocess that leaves glibc's allocator at its defaults."""
    cmd = [sys.executable, __file__, "--sb3-only", "--no-tune-allocator", "--json",
           "--updates", str(args.updates), "--repeats", str(args.repeats), "--device", args.device,
           "--depth", str(args.depth),
           "--threads", *map(str, args.threads), "--critics", *map(str, args.critics)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows: list[dict[str, Any]] = json.loads(done.stdout)["results"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--updates", type=int, default=200, help="updates per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per configuration (best kept)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--critics", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where both learners run")
    parser.add_argument("--depth", type=int, default=2, help="hidden layers of 256 (RAVL: 3)")
    parser.add_argument("--compile", nargs="+", default=["none"], choices=["none", "default", "reduce-overhead"],
                        help="SACConfig.compile modes of ours to time (fp32 and bf16 each)")
    parser.add_argument("--quick", action="store_true", help="a few updates of each (smoke check)")
    parser.add_argument("--no-tune-allocator", action="store_true", help="leave glibc malloc settings alone")
    parser.add_argument("--sb3-only", action="store_true", help="time SB3 only (used for the stock subprocess)")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock-allocator SB3 subprocess")
    args = parser.parse_args(argv)
    global DEVICE, DEPTH
    DEVICE, DEPTH = resolve_device(args.device), args.depth
    if DEVICE.type != "cpu":  # host threads barely matter to GPU kernels: one setting
        args.threads = args.threads[:1]
    if args.quick:
        args.updates, args.repeats, args.threads = 5, 1, args.threads[:1]
    stock: list[dict[str, Any]] = []
    if not args.sb3_only and not args.no_stock:
        stock = time_sb3_stock(args)
    tuned = False if args.no_tune_allocator else tune_allocator()
    data = random_transitions(20_000 if not args.quick else 2_000, np.random.default_rng(0))
    results: list[dict[str, Any]] = []
    peaks: dict[str, float] = {}

    def log(row: dict[str, Any]) -> None:
        results.append(row)
        if not args.json:
            print(
                f"{row['impl']:>5} critics={row['critics']:<3} threads={row['threads']} {row['precision']:<5} "
                f"{row['updates_per_s']:8.1f} updates/s  {row['gflops']:7.1f} GFLOP/s  "
                f"{100 * row['peak_fraction']:5.1f}% of {row['precision']} matmul peak",
                flush=True,
            )

    for threads in args.threads:
        torch.set_num_threads(threads)
        peak_s = 0.2 if args.quick else 1.0
        peaks[f"fp32_{threads}t"] = matmul_peak(torch.float32, peak_s)
        peaks[f"bf16_{threads}t"] = matmul_peak(torch.bfloat16, peak_s)
        for n in args.critics:
            flops = update_flops(n)
            rate = bench_sb3(n, args.updates, args.repeats, data)
            log({"impl": "sb3", "critics": n, "threads": threads, "precision": "fp32", "updates_per_s": rate,
                 "gflops": rate * flops / 1e9, "peak_fraction": rate * flops / 1e9 / peaks[f"fp32_{threads}t"]})
            for row in stock:
                if row["critics"] == n and row["threads"] == threads:
                    log({**row, "impl": "sb3-stock"})
            for mode in ([] if args.sb3_only else args.compile):
                for bf16 in (False, True):
                    prec = "bf16" if bf16 else "fp32"
                    rate = bench_ours(n, bf16, args.updates, args.repeats, data, mode)
                    log({"impl": "ours" if mode == "none" else f"ours-{mode}", "critics": n, "threads": threads,
                         "precision": prec, "updates_per_s": rate, "gflops": rate * flops / 1e9,
                         "peak_fraction": rate * flops / 1e9 / peaks[f"{prec}_{threads}t"]})

    summary: dict[str, Any] = {
        "env_dims": {"env": ENV_ID, "obs": OBS, "action": ACT, "hidden": [HIDDEN] * DEPTH, "batch": BATCH},
        "device": str(DEVICE),
        "gpu": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
        "compile_modes": args.compile,
        "updates_per_timing": args.updates,
        "repeats": args.repeats,
        "quick": args.quick,
        "allocator_tuned": tuned,
        "matmul_peak_gflops": peaks,
        "results": results,
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
        },
    }
    if args.sb3_only:
        print(json.dumps(summary, indent=2))
        return 0
    for n in args.critics:
        sb3 = max(r["updates_per_s"] for r in results if r["impl"].startswith("sb3") and r["critics"] == n)
        sb3_stock = [r["updates_per_s"] for r in results if r["impl"] == "sb3-stock" and r["critics"] == n]
        ours = [r for r in results if r["impl"].startswith("ours") and r["critics"] == n]
        # Like with like: SB3 runs fp32, so the headline ratio is our best fp32 over SB3's best; bf16 is its own
        # figure (our bf16 over our fp32), never divided by SB3's fp32.
        best32 = max((r for r in ours if r["precision"] == "fp32"), key=lambda r: r["updates_per_s"])
        bf16 = [r for r in ours if r["precision"] == "bf16"]
        summary[f"sb3_best_{n}critics"] = sb3
        summary[f"ours_best_{n}critics"] = {k: best32[k] for k in ("updates_per_s", "threads", "precision", "impl")}
        summary[f"ratio_vs_sb3_{n}critics"] = best32["updates_per_s"] / sb3
        if bf16:
            best16 = max(bf16, key=lambda r: r["updates_per_s"])
            summary[f"ours_bf16_best_{n}critics"] = {
                k: best16[k] for k in ("updates_per_s", "threads", "precision", "impl")
            }
            summary[f"bf16_over_fp32_{n}critics"] = best16["updates_per_s"] / best32["updates_per_s"]
        if sb3_stock:
            summary[f"sb3_stock_best_{n}critics"] = max(sb3_stock)
            summary[f"ratio_vs_sb3_stock_{n}critics"] = best32["updates_per_s"] / max(sb3_stock)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for n in args.critics:
            b = summary[f"ours_best_{n}critics"]
            stock_note = (
                f", vs stock SB3 {summary[f'ratio_vs_sb3_stock_{n}critics']:.2f}x"
                if f"ratio_vs_sb3_stock_{n}critics" in summary else ""
            )
            bf16_note = (
                f"; ours bf16 {summary[f'ours_bf16_best_{n}critics']['updates_per_s']:.1f}/s = "
                f"{summary[f'bf16_over_fp32_{n}critics']:.2f}x our fp32"
                if f"bf16_over_fp32_{n}critics" in summary else ""
            )
            print(
                f"{n} critics, fp32 vs fp32: ours {b['updates_per_s']:.1f}/s ({b['threads']} thread(s)) vs SB3 best "
                f"{summary[f'sb3_best_{n}critics']:.1f}/s -> {summary[f'ratio_vs_sb3_{n}critics']:.2f}x{stock_note}"
                f"{bf16_note} [{summary['machine']['cpu']}]"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
