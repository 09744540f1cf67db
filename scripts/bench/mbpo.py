"""MBPO end to end on Hopper-v5: seconds per 1k env steps with the split, and how the model fit scales with data.

1. **Window.** ``DynaAgent`` with MBPO's released per-env config (:func:`mbrl.agents.dyna.mbpo_preset`: UTD 20,
   100k rollouts per refit every 250 steps, 7 x 4 x 200 ensemble fitted with MBPO's stopping rule) runs its random
   warm-up (5000 steps, untimed), then a timed window of ``--window`` env steps. Printed per 1k env steps:
   SAC updates, model fits, rollouts, the rest (env steps, buffers, batch assembly) and evaluation (one
   evaluation timed after the window, scaled to MBPO's one per 1250 steps).
2. **Fit vs data.** One ensemble refitted (warm, as inside Dyna) on the first 10k, 50k and 100k transitions of a
   dataset, each time from the same weights two ways: MBPO's rule (until 5 epochs without a 1 % holdout
   improvement, no cap) and the ``cpu`` preset's cap (15 epochs / 30 s). Printed: seconds, epochs, holdout MSE.

Usage::

    python scripts/bench/mbpo.py [--window 1000] [--dataset mbrl/hopper/medium-replay-v0] [--bf16] [--json]
    python scripts/bench/mbpo.py --quick      # seconds: tiny sizes (a smoke check; numbers meaningless)

One thread; the CPU is named in the output. Without ``--dataset`` the fit part uses uniform-random Hopper data.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mbrl.agents.dyna import DynaAgent, mbpo_preset
from mbrl.data import OfflineDataset, load_dataset
from mbrl.envs.datasets import uniform_random_dataset
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.utils import cpu_name

ENV = "Hopper-v5"
MBPO_FIT = FitConfig(max_epochs=None, max_time_s=None)  # MBPO: patience 5, min improvement 1 %
CPU_FIT = FitConfig(max_epochs=15, max_time_s=30.0)  # the cpu preset's cap (mbrl.agents.dyna.cpu_preset)


def window(steps: int, bf16: bool, quick: bool) -> dict[str, float]:
    """Time ``steps`` env steps of MBPO after its warm-up; seconds per 1k env steps, split."""
    config = mbpo_preset(ENV, eval_every=0, seed=0)
    if quick:
        config = replace(config, init_random_steps=300, rollouts_per_step=20, utd=2,
                         ensemble=replace(config.ensemble, hidden=32), fit=FitConfig(max_epochs=2))
    config = replace(config, total_steps=config.init_random_steps + steps, sac=replace(config.sac, use_bf16=bf16))
    agent = DynaAgent(config)
    agent.env_loop.run(until=config.init_random_steps)  # the random warm-up (and the first refit at its end), untimed
    before = (agent.policy_time_s, agent.model_time_s, agent.rollout_time_s)
    start = time.perf_counter()
    agent.learn()  # ends with one evaluation (eval_every=0): timed separately below
    total = time.perf_counter() - start
    t0 = time.perf_counter()
    agent.evaluate()
    eval_s = time.perf_counter() - t0
    total -= eval_s
    policy, model, rollouts = (now - then for now, then in
                               zip((agent.policy_time_s, agent.model_time_s, agent.rollout_time_s), before))
    per_k = 1000.0 / steps
    eval_every = mbpo_preset(ENV).eval_every
    return {
        "window_steps": steps, "total_s_per_1k": total * per_k, "sac_updates_s_per_1k": policy * per_k,
        "model_fit_s_per_1k": model * per_k, "rollouts_s_per_1k": rollouts * per_k,
        "env_and_rest_s_per_1k": (total - policy - model - rollouts) * per_k,
        "evaluation_s_per_1k": eval_s * 1000.0 / eval_every, "one_evaluation_s": eval_s,
        "sac_updates_per_s": steps * config.utd / max(policy, 1e-9),
    }


def prefix(data: OfflineDataset, n: int) -> OfflineDataset:
    """The first whole episodes of ``data`` holding at most ``n`` transitions (at least 2 episodes)."""
    ends = np.array([end for _start, end in data.episode_slices()])
    k = max(2, int(np.searchsorted(ends, n, side="right")))
    return data.subset_episodes(np.arange(min(k, len(ends))))


def fit_scaling(data: OfflineDataset, sizes: list[int], quick: bool) -> list[dict[str, float]]:
    """Warm refits on growing prefixes of ``data``: MBPO's rule vs the cpu cap, from the same weights."""
    ens = EnsembleConfig(num_members=7, num_elites=5, hidden=32 if quick else 200, depth=4)
    model = ProbabilisticEnsemble(data.obs_dim, data.action_dim, ens, seed=0)
    rules = {"mbpo": MBPO_FIT, "cpu_cap": CPU_FIT}
    if quick:
        rules = {"mbpo": FitConfig(max_epochs=3), "cpu_cap": FitConfig(max_epochs=1)}
    rows = []
    for n in sizes:
        part = prefix(data, n)
        start_state = copy.deepcopy(model.state_dict())
        row: dict[str, float] = {"transitions": float(len(part))}
        for name, rule in rules.items():
            model.load_state_dict(copy.deepcopy(start_state))
            report = fit(model, part, rule, rng=np.random.default_rng(n))
            row.update({f"{name}_s": report.time_s, f"{name}_epochs": float(report.epochs),
                        f"{name}_holdout_mse": report.holdout_mse})
            if name == "mbpo":
                mbpo_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(mbpo_state)  # the next size continues from MBPO's fit, as a Dyna run would
        rows.append(row)
        print(f"  fit at {len(part)} transitions: MBPO rule {row['mbpo_s']:.1f} s ({row['mbpo_epochs']:.0f} "
              f"epochs, holdout MSE {row['mbpo_holdout_mse']:.4g}); cpu cap {row['cpu_cap_s']:.1f} s "
              f"({row['cpu_cap_epochs']:.0f} epochs, {row['cpu_cap_holdout_mse']:.4g})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=int, default=1000, help="timed env steps after the warm-up")
    parser.add_argument("--dataset", default=None, help="data for the fit part (default: random Hopper)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--bf16", action="store_true", help="SAC under bf16 autocast")
    parser.add_argument("--skip-window", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke check; numbers meaningless)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.window, args.sizes = 60, [400, 800]
    summary: dict[str, Any] = {"cpu": cpu_name(), "threads": 1, "torch": torch.__version__, "env": ENV,
                               "precision": "bf16" if args.bf16 else "fp32"}
    print(f"MBPO on {ENV}, {summary['precision']} SAC, 1 thread, {summary['cpu']}", flush=True)
    if not args.skip_window:
        w = window(args.window, args.bf16, args.quick)
        summary["window"] = w
        print(f"  {w['total_s_per_1k']:.1f} s per 1k env steps: SAC updates {w['sac_updates_s_per_1k']:.1f} s "
              f"({w['sac_updates_per_s']:.0f} updates/s), model fits {w['model_fit_s_per_1k']:.1f} s, rollouts "
              f"{w['rollouts_s_per_1k']:.1f} s, env and the rest {w['env_and_rest_s_per_1k']:.1f} s; evaluation "
              f"{w['evaluation_s_per_1k']:.1f} s per 1k steps ({w['one_evaluation_s']:.1f} s each)", flush=True)
    if not args.skip_fit:
        size = max(args.sizes)
        data = load_dataset(args.dataset, env_id=ENV) if args.dataset else uniform_random_dataset(ENV, size)
        summary["fit_data"] = args.dataset or "uniform-random Hopper-v5"
        summary["fit"] = fit_scaling(data, args.sizes, args.quick)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
