"""Where RAVL's (and MOPO's) time goes: updates/s with rollouts, the split, and the SAC-N learner alone in-run.

For each agent (the ``cpu`` preset: RAVL = 10 critics of 3 x 256 with EDAC under bf16; MOPO = 2 critics of
2 x 256 with all-member rollouts) on one dataset, in one process and one thread:

- ``learner``: ``SAC.update`` alone on one fixed batch (the in-run reference: the learner's arithmetic);
- ``learner_no_edac``: the same learner without EDAC's term (what the double backward costs);
- ``sample``: ``sample_batch`` (dataset rows + model-buffer rows, concatenated);
- ``update``: ``SAC.update`` on the sampled batches (as in training);
- ``rollout``: one ``rollout_epoch`` (``rollouts_per_epoch`` starts x k steps), amortised over
  ``updates_per_epoch`` updates;
- ``loop``: ``_train_step`` as the training loop calls it, between two refills (sampling, update, metrics);
- ``updates_per_s``: the agent's rate with rollouts = 1 / (loop + rollout / updates_per_epoch), and its ratio
  to the learner alone.

The model is not fitted (``--fit-epochs`` fits it briefly): rollout cost depends on the model's size and the
horizon, not on its accuracy. ``--device cuda`` puts every part on the GPU (the ``--device`` of ``mbrl train``:
learner, ensemble, rollouts; ``--preset`` picks the agent's preset, e.g. ``paper``) and ends each timing with a
device synchronisation. Usage::

    python scripts/bench/offline.py [--dataset PATH_OR_ID] [--device cpu] [--preset cpu] [--updates 200] [--json]
        [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mbrl.agents.mopo import mopo_preset
from mbrl.agents.offline_model_based import OfflineModelBasedAgent
from mbrl.agents.ravl import ravl_preset
from mbrl.data import OfflineDataset, load_dataset
from mbrl.envs.datasets import uniform_random_dataset
from mbrl.models.fit import FitConfig
from mbrl.utils import cpu_name, resolve_device, with_device


def random_hopper(n: int, seed: int = 0) -> OfflineDataset:
    """``n`` uniform-random Hopper-v5 transitions (a stand-in when no dataset is given)."""
    ds = uniform_random_dataset("Hopper-v5", n, seed=seed)
    ds.metadata = {"ref_min_score": -20.0, "ref_max_score": 3234.3}
    return ds


def sync() -> None:
    """Wait for the GPU, if one is in use (its timings must include the queued kernels)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def per_call(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls (after one warm-up call)."""
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls


def per_call_paired(a: Callable[[], Any], b: Callable[[], Any], calls: int, rounds: int = 3) -> tuple[float, float]:
    """Seconds per call of ``a`` and ``b``, timed in alternating rounds; the fastest round of each.

    Alternating the two and keeping each one's best round keeps a burst of load from another process (or a
    warm-up effect) out of their ratio, which a single back-to-back measurement does not.
    """
    best_a = best_b = float("inf")
    per_round = max(calls // rounds, 1)
    for _ in range(rounds):
        best_a = min(best_a, per_call(a, per_round))
        best_b = min(best_b, per_call(b, per_round))
    return best_a, best_b


def profile(name: str, agent: OfflineModelBasedAgent, updates: int) -> dict[str, Any]:
    c = agent.config
    t_rollout = per_call(agent.rollout_epoch, 1)  # fills the model buffer too
    batch = agent.sample_batch()
    no_edac = None
    if c.sac.edac_eta > 0:
        from mbrl.rl.sac import SAC

        plain = SAC(agent.obs_dim, agent.action_dim, agent.action_low, agent.action_high,
                    replace(c.sac, edac_eta=0.0), generator=torch.Generator().manual_seed(0))
        batch = batch.to(agent.sac.device)
        t_learner, no_edac = per_call_paired(lambda: agent.sac.update(batch), lambda: plain.update(batch), updates)
    else:
        t_learner = per_call(lambda: agent.sac.update(batch), updates)
    t_sample = per_call(agent.sample_batch, updates)
    t_update = per_call(lambda: agent.sac.update(agent.sample_batch()), updates) - t_sample
    agent.num_updates = 1  # between refills: _train_step does not roll out
    t_loop = per_call(lambda: (agent._train_step(), setattr(agent, "num_updates", agent.num_updates + 1)), updates)
    per_update = t_loop + t_rollout / c.updates_per_epoch
    out = {
        "agent": name,
        "critics": c.sac.num_critics,
        "hidden": [c.sac.hidden] * c.sac.depth,
        "bf16": c.sac.use_bf16,
        "rollouts_per_epoch": c.rollouts_per_epoch,
        "rollout_length": c.rollout_length,
        "full_info_rollouts": c.ensemble.full_info,
        "updates_per_s": 1.0 / per_update,
        "learner_updates_per_s": 1.0 / t_learner,
        "ratio_to_learner": (1.0 / per_update) / (1.0 / t_learner),
        "split_ms_per_update": {
            "update": 1e3 * t_update,
            "sample_batch": 1e3 * t_sample,
            "loop_overhead": 1e3 * (t_loop - t_update - t_sample),
            "rollout_amortised": 1e3 * t_rollout / c.updates_per_epoch,
        },
        "rollout_epoch_s": t_rollout,
        "rollout_transitions_per_s": c.rollouts_per_epoch * c.rollout_length / t_rollout,
    }
    if no_edac is not None:
        out["learner_no_edac_updates_per_s"] = 1.0 / no_edac
        out["edac_share_of_learner"] = 1.0 - no_edac / t_learner
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="dataset path or Minari id (default: 20k random Hopper rows)")
    parser.add_argument("--updates", type=int, default=200, help="timed calls per figure")
    parser.add_argument("--fit-epochs", type=int, default=0, help="fit the model this many epochs first")
    parser.add_argument("--agents", nargs="+", default=["ravl", "mopo"], choices=["ravl", "mopo"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="every part's device")
    parser.add_argument("--preset", default=None, help="the agents' preset (default: cpu; quick with --quick)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke check; numbers meaningless)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset) if args.dataset else random_hopper(2000 if args.quick else 20_000)
    results = []
    for name in args.agents:
        make = ravl_preset if name == "ravl" else mopo_preset
        preset = args.preset or ("quick" if args.quick else "cpu")
        fit = FitConfig(max_epochs=max(args.fit_epochs, 1), max_time_s=None)
        config = make(args.dataset or "mbrl/hopper/medium-v0", preset, fit=fit)  # type: ignore[arg-type]
        config = with_device(config, args.device)
        agent = OfflineModelBasedAgent(config, dataset=ds, fit_model=args.fit_epochs > 0)
        if args.fit_epochs > 0:
            agent._prepare()
        results.append(profile(name, agent, 5 if args.quick else args.updates))
    device = resolve_device(args.device)
    summary = {
        "cpu": cpu_name(), "threads": 1, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "torch": torch.__version__, "dataset": args.dataset or "random Hopper",
        "load_avg_1min": os.getloadavg()[0], "results": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['cpu']}, 1 thread, load {summary['load_avg_1min']:.2f}")
    for r in results:
        split = ", ".join(f"{k} {v:.2f} ms" for k, v in r["split_ms_per_update"].items())
        edac = (f"; EDAC's term is {100 * r['edac_share_of_learner']:.0f} % of the learner "
                f"({r['learner_no_edac_updates_per_s']:.1f}/s without it)" if "edac_share_of_learner" in r else "")
        print(f"{r['agent']}: {r['updates_per_s']:.1f} updates/s with rollouts = {100 * r['ratio_to_learner']:.0f} % of the "
              f"learner alone ({r['learner_updates_per_s']:.1f}/s); per update: {split}; rollouts "
              f"{r['rollout_transitions_per_s'] / 1e3:.1f}k transitions/s{edac}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
