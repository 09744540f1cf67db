"""World-model throughput: the batched ProbabilisticEnsemble vs a per-member loop, in one process.

Sizes: HalfCheetah-v5 dims (obs 17, action 6), 7 members of 4x200 SiLU predicting mean and log-variance of
[delta_obs, reward], 5 elites. For each thread count it measures

- the machine's fp32 matmul peak (2048 x 2048 sgemm, GFLOP/s);
- training: minibatches/s of ``ProbabilisticEnsemble.update_members`` with 256 rows per member (bootstrap
  batches ``[7, 256, .]``), its GFLOP/s (fwd + bwd ~ 3x the forward matmul FLOPs) and fraction of the peak;
  the same step for a straightforward baseline: ``nn.ModuleList`` of 7 ``nn.Sequential`` MLPs looped in
  Python, same loss (Gaussian NLL with soft log-variance bounds, bound penalty, per-layer L2) and Adam;
- rollouts: transitions/s of ``mbrl.rollouts.rollout`` from 100k start states x horizon 5 under a uniform
  random policy (MBPO sampling: random elite per row + Gaussian noise), fp32 and bf16 autocast; the baseline
  loops over members on the whole batch each step (no chunking) and samples the same way;
- bf16 accuracy: max / mean absolute error of bf16-autocast one-step predictions vs fp32 on the start states,
  relative to the std of the fp32 predicted change.

Each figure is the best of ``--repeats`` timings (other processes only slow things down).

With ``--device cuda`` (or ``auto``) every model, batch, start state and random draw lives on the GPU (the
baseline too), each timing ends with a device synchronisation, and the matmul peak is the GPU's; ``--starts``
then defaults to 1M (one unchunked rollout per step, as the ensemble runs on a GPU).

Usage: ``python scripts/bench/models.py [--json] [--device cpu] [--threads 1 2] [--starts 100000] [--repeats 3]``;
``--quick`` is a smoke check with tiny sizes (numbers meaningless); ``--chunks`` also sweeps rollout chunk sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.rollouts import DEFAULT_CHUNK_SIZE, rollout
from mbrl.types import TransitionBatch
from mbrl.utils import cpu_name, resolve_device

OBS, ACT, MEMBERS, ELITES, HIDDEN, DEPTH, BATCH, HORIZON = 17, 6, 7, 5, 200, 4, 256, 5
OUT = OBS + 1
DEVICE = torch.device("cpu")  # set once by main (--device)


def sync() -> None:
    """Wait for the device (a GPU timing must include the queued kernels)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def device_generator(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def forward_flops(rows: int, members: int = MEMBERS) -> float:
    """FLOPs (2 per multiply-add) of the ensemble's forward matmuls for ``rows`` rows per member."""
    macs = (OBS + ACT) * HIDDEN + (DEPTH - 1) * HIDDEN * HIDDEN + HIDDEN * 2 * OUT
    return 2.0 * members * rows * macs


def matmul_peak(dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of a 2048 x 2048 matmul in ``dtype`` at the current thread count."""
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


def best_rate(fn: Callable[[], float], repeats: int) -> float:
    """Best of ``repeats`` calls of ``fn`` (each returns a rate)."""
    return max(fn() for _ in range(repeats))


# ------------------------------------------------------------------------------------------------ baseline
class LoopEnsemble(nn.Module):
    """The straightforward implementation: a ModuleList of plain MLPs, looped over members."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # baseline only: nn.Linear's init uses the global RNG
        self.members = nn.ModuleList()
        for _ in range(MEMBERS):
            layers: list[nn.Module] = []
            width = OBS + ACT
            for _ in range(DEPTH):
                layers += [nn.Linear(width, HIDDEN), nn.SiLU()]
                width = HIDDEN
            layers.append(nn.Linear(width, 2 * OUT))
            self.members.append(nn.Sequential(*layers))
        self.max_logvar = nn.Parameter(torch.full((MEMBERS, OUT), 0.5))
        self.min_logvar = nn.Parameter(torch.full((MEMBERS, OUT), -10.0))
        self.decays = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)

    def member(self, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.members[i](x)
        mean, logvar = out.split(OUT, dim=-1)
        logvar = self.max_logvar[i] - F.softplus(self.max_logvar[i] - logvar)
        logvar = self.min_logvar[i] + F.softplus(logvar - self.min_logvar[i])
        return mean, logvar

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        total = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        for i, net in enumerate(self.members):
            mean, logvar = self.member(i, x[i])
            total = total + (((mean - y[i]) ** 2) * torch.exp(-logvar) + logvar).mean()
            linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
            total = total + sum(c * 0.5 * lin.weight.pow(2).sum() for c, lin in zip(self.decays, linears))
        return total

    @torch.no_grad()
    def predict(self, obs: Tensor, action: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, action], -1)
        means, stds = [], []
        for i in range(MEMBERS):
            mean, logvar = self.member(i, x)
            means.append(mean)
            stds.append(torch.exp(0.5 * logvar))
        mean, std = torch.stack(means), torch.stack(stds)
        rows = torch.arange(len(obs))
        rows = rows.to(obs.device)
        pick = torch.randint(ELITES, (len(obs),), generator=generator, device=obs.device)
        out = mean[pick, rows] + std[pick, rows] * torch.randn(len(obs), OUT, generator=generator, device=obs.device)
        return obs + out[:, :OBS], out[:, OBS]


# ------------------------------------------------------------------------------------------------- timings
def train_batch(g: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    obs = torch.randn(MEMBERS, BATCH, OBS, generator=g)
    action = torch.rand(MEMBERS, BATCH, ACT, generator=g) * 2 - 1
    reward = torch.randn(MEMBERS, BATCH, generator=g)
    next_obs = obs + 0.1 * torch.randn(MEMBERS, BATCH, OBS, generator=g)
    return obs.to(DEVICE), action.to(DEVICE), reward.to(DEVICE), next_obs.to(DEVICE)


def make_model(**kwargs: Any) -> ProbabilisticEnsemble:
    cfg = EnsembleConfig(num_members=MEMBERS, num_elites=ELITES, hidden=HIDDEN, depth=DEPTH, device=str(DEVICE), **kwargs)
    return ProbabilisticEnsemble(OBS, ACT, cfg, seed=0)


def time_train_ours(steps: int, repeats: int, *, bf16: bool = False) -> float:
    model = make_model(bf16_training=bf16)
    obs, action, reward, next_obs = train_batch(torch.Generator().manual_seed(0))
    flat = TransitionBatch(obs[0], action[0], reward[0], next_obs[0], reward[0] * 0, reward[0] * 0)
    model.fit_normalizer(flat)
    for _ in range(3):
        model.update_members(obs, action, reward, next_obs)

    def run() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            model.update_members(obs, action, reward, next_obs)
        sync()
        return steps / (time.perf_counter() - start)

    return best_rate(run, repeats)


def time_train_loop(steps: int, repeats: int) -> float:
    model = LoopEnsemble().to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    obs, action, reward, next_obs = train_batch(torch.Generator().manual_seed(0))
    x = torch.cat([obs, action], -1)
    y = torch.cat([next_obs - obs, reward.unsqueeze(-1)], -1)

    def step() -> None:
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()

    for _ in range(3):
        step()

    def run() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return steps / (time.perf_counter() - start)

    return best_rate(run, repeats)


def random_policy(seed: int) -> Callable[[Tensor], Tensor]:
    g = device_generator(seed)
    return lambda obs: torch.rand(obs.shape[0], ACT, generator=g, device=DEVICE) * 2 - 1


def time_rollout_ours(
    starts: Tensor, repeats: int, *, bf16: bool, full_info: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    model = make_model(bf16_inference=bf16, full_info=full_info)
    if DEVICE.type != "cpu" and chunk_size == DEFAULT_CHUNK_SIZE:
        chunk_size = len(starts)  # unchunked on a GPU (the rollout's own default there)
    model.fit_normalizer(TransitionBatch(starts, torch.zeros(len(starts), ACT), starts[:, 0], starts, starts[:, 0], starts[:, 0]))

    def run() -> float:
        g = device_generator(0)
        sync()
        start = time.perf_counter()
        batch, _ = rollout(model, random_policy(1), starts, HORIZON, generator=g, chunk_size=chunk_size)
        sync()
        return len(batch) / (time.perf_counter() - start)

    return best_rate(run, repeats)


def time_rollout_loop(starts: Tensor, repeats: int) -> float:
    model = LoopEnsemble().to(DEVICE)

    def run() -> float:
        g = device_generator(0)
        policy = random_policy(1)
        sync()
        start = time.perf_counter()
        obs, n = starts, 0
        for _ in range(HORIZON):
            next_obs, _ = model.predict(obs, policy(obs), g)
            n += len(obs)
            obs = next_obs
        sync()
        return n / (time.perf_counter() - start)

    return best_rate(run, repeats)


def bf16_accuracy(starts: Tensor) -> dict[str, float]:
    """One-step deterministic predictions, bf16 autocast vs fp32, same weights."""
    ref_model, fast = make_model(), make_model(bf16_inference=True)
    fast.load_state_dict(ref_model.state_dict())
    action = random_policy(2)(starts)
    ref = ref_model.predict(starts, action, deterministic=True)
    got = fast.predict(starts, action, deterministic=True)
    err = (got.next_obs - ref.next_obs).abs()
    scale = float((ref.next_obs - starts).std())
    rerr = (got.reward - ref.reward).abs()
    return {
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "max_err_rel_to_delta_std": float(err.max()) / scale,
        "mean_err_rel_to_delta_std": float(err.mean()) / scale,
        "reward_max_abs_err": float(rerr.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=60, help="training minibatches per timing")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where everything runs")
    parser.add_argument("--starts", type=int, default=None, help="rollout start states (100k on CPU, 1M on a GPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (best kept)")
    parser.add_argument("--chunks", action="store_true", help="also sweep rollout chunk sizes (fp32)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one timing (smoke check)")
    parser.add_argument("--no-tune-allocator", action="store_true", help="leave glibc malloc settings alone")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = resolve_device(args.device)
    if args.starts is None:
        args.starts = 100_000 if DEVICE.type == "cpu" else 1_000_000
    if DEVICE.type != "cpu":  # host threads barely matter to GPU kernels: one setting
        args.threads = args.threads[:1]
    if args.quick:
        args.steps, args.starts, args.repeats, args.threads = 3, 2_000, 1, args.threads[:1]
    tuned = False
    if not args.no_tune_allocator:
        from mbrl.rl.runtime import tune_allocator

        tuned = tune_allocator()
    starts = torch.randn(args.starts, OBS, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    rows: list[dict[str, Any]] = []
    chunk_sweep: dict[str, dict[int, float]] = {}
    train_flops = 3.0 * forward_flops(BATCH)
    for threads in args.threads:
        torch.set_num_threads(threads)
        peak = matmul_peak(torch.float32, 0.2 if args.quick else 1.0)
        peak16 = matmul_peak(torch.bfloat16, 0.2 if args.quick else 1.0)
        train = {
            "fp32": time_train_ours(args.steps, args.repeats),
            "bf16": time_train_ours(args.steps, args.repeats, bf16=True),
            "loop": time_train_loop(args.steps, args.repeats),
        }
        roll = {
            "full_fp32": time_rollout_ours(starts, args.repeats, bf16=False),
            "full_bf16": time_rollout_ours(starts, args.repeats, bf16=True),
            "lean_fp32": time_rollout_ours(starts, args.repeats, bf16=False, full_info=False),
            "lean_bf16": time_rollout_ours(starts, args.repeats, bf16=True, full_info=False),
            "loop": time_rollout_loop(starts, args.repeats),
        }
        row: dict[str, Any] = {
            "threads": threads,
            "sgemm_gflops": peak,
            "bf16_matmul_gflops": peak16,
            "train_steps_per_s": train,
            "train_peak_fraction": {
                "fp32": train["fp32"] * train_flops / 1e9 / peak,
                "bf16": train["bf16"] * train_flops / 1e9 / peak16,
                "bf16_vs_fp32_peak": train["bf16"] * train_flops / 1e9 / peak,
                "loop": train["loop"] * train_flops / 1e9 / peak,
            },
            "train_speedup_vs_loop": {k: train[k] / train["loop"] for k in ("fp32", "bf16")},
            "rollout_transitions_per_s": roll,
            "rollout_speedup_vs_loop": {k: v / roll["loop"] for k, v in roll.items() if k != "loop"},
        }
        rows.append(row)
        if args.chunks:
            sizes = [1_000, 4_096, 16_384, 25_000, 50_000, 100_000]
            chunk_sweep[f"{threads}t"] = {
                c: time_rollout_ours(starts, args.repeats, bf16=False, chunk_size=c) for c in sizes if c <= args.starts
            }
        if not args.json:
            tf, sp, rs = row["train_peak_fraction"], row["train_speedup_vs_loop"], row["rollout_speedup_vs_loop"]
            print(
                f"threads={threads}  sgemm {peak:.1f} GFLOP/s fp32, {peak16:.1f} bf16\n"
                f"  train (minibatches/s, 7 x 256 rows)  ensemble fp32 {train['fp32']:6.1f} ({100 * tf['fp32']:.0f}% of "
                f"sgemm)  bf16 {train['bf16']:6.1f} ({100 * tf['bf16']:.0f}% of bf16 peak)  loop {train['loop']:6.1f} "
                f"({100 * tf['loop']:.0f}%)  -> {sp['fp32']:.2f}x fp32, {sp['bf16']:.2f}x bf16\n"
                f"  rollout (transitions/s)  full-info fp32 {roll['full_fp32']:8.0f}  bf16 {roll['full_bf16']:8.0f} | "
                f"lean fp32 {roll['lean_fp32']:8.0f}  bf16 {roll['lean_bf16']:8.0f} | loop {roll['loop']:8.0f}\n"
                f"    speedup vs loop: full {rs['full_fp32']:.2f}x / {rs['full_bf16']:.2f}x bf16, "
                f"lean {rs['lean_fp32']:.2f}x / {rs['lean_bf16']:.2f}x bf16",
                flush=True,
            )
            if args.chunks:
                sweep = ", ".join(f"{c}: {v:.0f}/s" for c, v in chunk_sweep[f"{threads}t"].items())
                print(f"  rollout chunk sweep (full-info fp32): {sweep}", flush=True)
    accuracy = bf16_accuracy(starts[: min(len(starts), 20_000)])
    best = max(rows, key=lambda r: r["train_peak_fraction"]["fp32"])
    summary: dict[str, Any] = {
        "sizes": {
            "obs": OBS, "action": ACT, "members": MEMBERS, "elites": ELITES, "hidden": HIDDEN, "depth": DEPTH,
            "batch_per_member": BATCH, "rollout_starts": args.starts, "rollout_horizon": HORIZON,
            "rollout_chunk_size": DEFAULT_CHUNK_SIZE if DEVICE.type == "cpu" else args.starts,
        },
        "device": str(DEVICE),
        "gpu": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
        "train_flops_per_step": train_flops,
        "results": rows,
        "bf16_accuracy": accuracy,
        "best_train_peak_fraction_fp32": best["train_peak_fraction"]["fp32"],
        "best_train_threads": best["threads"],
        "targets_met": {
            "train_3x_loop_fp32": max(r["train_speedup_vs_loop"]["fp32"] for r in rows) >= 3,
            "train_3x_loop_bf16": max(r["train_speedup_vs_loop"]["bf16"] for r in rows) >= 3,
            "rollout_3x_loop_full_fp32": max(r["rollout_speedup_vs_loop"]["full_fp32"] for r in rows) >= 3,
            "rollout_3x_loop_lean_fp32": max(r["rollout_speedup_vs_loop"]["lean_fp32"] for r in rows) >= 3,
            "train_50pct_sgemm_fp32": best["train_peak_fraction"]["fp32"] >= 0.5,
        },
        "chunk_sweep": chunk_sweep,
        "quick": args.quick,
        "repeats": args.repeats,
        "allocator_tuned": tuned,
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    else:
        a = accuracy
        print(
            f"bf16 autocast accuracy (one step, vs fp32): max |err| {a['max_abs_err']:.3g} "
            f"({100 * a['max_err_rel_to_delta_std']:.2f}% of the predicted change's std), mean |err| "
            f"{a['mean_abs_err']:.3g} ({100 * a['mean_err_rel_to_delta_std']:.3f}%)\n"
            f"targets: {summary['targets_met']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
