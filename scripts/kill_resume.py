"""Kill runs with SIGKILL at random points, resume them, and compare with an uninterrupted twin.

For each command, on a small generated Hopper dataset unless named otherwise:

- ``ravl``, ``mopo``: ``mbrl train ravl|mopo`` at the quick preset, the model fit saving its progress every epoch;
- ``idm-label``: ``mbrl train idm-label`` with the cpu IDM (its fit saving progress every epoch), then BC;
- ``dynamics-reward``: ``mbrl model train-dynamics-reward`` at the quick preset (ensemble fit, then 1500
  adversarial iterations, progress saved every epoch / iteration; continued by running the same command again);
- ``dyna``: ``mbrl train dyna`` on InvertedPendulum-v5 with checkpoints every 100 steps and refits saving their
  progress,

this script

1. runs the command once without interruption (the twin) and times it;
2. starts it again in another run dir and kills it ``--kills`` times with ``kill -9`` at uniformly random moments
   of that duration (after the first start, every restart adds ``--resume``), noting whether each kill landed
   inside a fit (a progress file existed) and whether any checkpoint existed;
3. finishes it and compares every tensor of what the run leaves (final checkpoint, IDM, or model and dynamics
   reward) with the twin's (bit for bit; wall-clock timers excepted) and the final evaluation of
   ``progress.csv``; it also checks that each step appears once in the CSV.

Usage::

    python scripts/kill_resume.py [--commands ravl mopo idm-label dynamics-reward dyna] [--kills 5] [--seed 0] [--out results/kill_resume]

Prints one line per command and writes ``summary.json``. Exit status 1 if any resumed run differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def dataset(out: Path) -> str:
    """A small random Hopper dataset (5000 transitions) as ``.npz``."""
    path = out / "hopper.npz"
    if not path.is_file():
        from mbrl.data import save_npz
        from mbrl.envs.datasets import uniform_random_dataset

        ds = uniform_random_dataset("Hopper-v5", 5000, seed=0)
        ds.metadata = {"ref_min_score": -20.0, "ref_max_score": 3234.3}
        save_npz(ds, path)
    return str(path)


COMMANDS = ("ravl", "mopo", "idm-label", "dynamics-reward", "dyna")
NO_RESUME_FLAG = ("dynamics-reward",)  # the same command on the same run dir continues it


def command(name: str, run_dir: Path, data: str) -> list[str]:
    base = [sys.executable, "-c", "import sys; from mbrl.cli import main; sys.exit(main())"]
    if name in ("ravl", "mopo"):
        return [*base, "train", name, "--dataset", data, "--run-dir", str(run_dir), "--preset", "quick",
                "--updates", "400", "--eval-every", "100", "--checkpoint-every", "100", "--fit.max-epochs", "150",
                "--fit.patience", "200", "--fit.checkpoint-every-s", "0"]
    if name == "idm-label":  # the cpu IDM (200 epochs, patience 5) on half of the episodes, then BC
        return [*base, "train", "idm-label", "--dataset", data, "--run-dir", str(run_dir), "--preset", "quick",
                "--idm-preset", "cpu", "--labelled-fraction", "0.5", "--updates", "300", "--idm-checkpoint-every-s", "0"]
    if name == "dynamics-reward":
        return [*base, "model", "train-dynamics-reward", "--dataset", data, "--run-dir", str(run_dir), "--preset",
                "quick", "--iterations", "1500", "--checkpoint-every-s", "0"]
    if name == "dyna":
        return [*base, "train", "dyna", "--env", "InvertedPendulum-v5", "--total-steps", "900", "--run-dir",
                str(run_dir), "--checkpoint-every", "100", "--eval-every", "300"]
    raise ValueError(f"unknown command {name!r}")


def started(name: str, run_dir: Path) -> bool:
    """Whether a killed attempt left something to continue (the next start adds ``--resume`` where it exists)."""
    return name not in NO_RESUME_FLAG and (run_dir / "config.json").is_file()


def run(cmd: list[str], resume: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*cmd, "--resume"] if resume else cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)


def final_state(name: str, run_dir: Path) -> dict[str, Any]:
    """What a finished run leaves: the agent's last checkpoint (and the IDM), or the saved model and reward."""
    import torch

    from mbrl.checkpoint import latest_checkpoint, load_checkpoint

    if name == "dynamics-reward":
        return {"model": dict(load_checkpoint(run_dir / "model.pt").state),
                "reward": torch.load(run_dir / "dynamics_reward.pt", weights_only=True)}
    agent_dir = run_dir / "agent" if name == "idm-label" else run_dir
    path = latest_checkpoint(agent_dir)
    assert path is not None, f"{agent_dir}: no checkpoint"
    state = dict(load_checkpoint(path).state)
    if name == "idm-label":
        idm = torch.load(run_dir / "idm" / "idm.pt", weights_only=True)
        idm["extra"]["metrics"] = json.loads(idm["extra"]["metrics"])  # a JSON string; its time_s is skipped
        state["idm"] = idm
    return state


def tensors(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a state to ``{path: leaf}``; wall-clock timers (keys naming time) are left out."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if "time" in str(k):
                continue
            out.update(tensors(v, f"{prefix}/{k}"))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            out.update(tensors(v, f"{prefix}/{i}"))
    else:
        out[prefix] = tree
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Paths whose leaves differ (tensors compared bit for bit)."""
    import torch

    fa, fb = tensors(a), tensors(b)
    bad = sorted(set(fa) ^ set(fb))
    for key in set(fa) & set(fb):
        x, y = fa[key], fb[key]
        if isinstance(x, torch.Tensor | np.ndarray):
            tx, ty = torch.as_tensor(x), torch.as_tensor(y)
            if not (tx.shape == ty.shape and torch.equal(tx, ty)):
                bad.append(key)
        elif x != y and not (isinstance(x, float) and np.isnan(x) and np.isnan(y)):
            bad.append(key)
    return bad


def last_eval(run_dir: Path) -> tuple[float, list[int]]:
    """The last evaluation (normalized score, return, or the dynamics reward's held-out accuracy) and the CSV's
    steps."""
    from mbrl.logging import read_csv

    cols = read_csv(run_dir)
    keys = ("eval/normalized_score", "eval/return_mean", "model/eval_acc_real")
    key = next(k for k in keys if k in cols)
    values = cols[key][np.isfinite(cols[key])]
    return float(values[-1]), cols["step"].tolist()


def one(name: str, kills: int, rng: np.random.Generator, out: Path, data: str) -> dict[str, Any]:
    twin, victim = out / f"{name}-twin", out / f"{name}-killed"
    for d in (twin, victim):
        shutil.rmtree(d, ignore_errors=True)
    start = time.perf_counter()
    assert run(command(name, twin, data), resume=False).wait() == 0, f"{name}: the uninterrupted run failed"
    duration = time.perf_counter() - start
    events = []
    for i in range(kills):
        proc = run(command(name, victim, data), resume=started(name, victim))
        moment = float(rng.uniform(0.15, 0.95) * duration)
        time.sleep(moment)
        progress = sorted(p.name for p in victim.glob("**/*progress.pt"))
        checkpoints = len(list(victim.glob("checkpoints/ckpt_*.pt")))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        events.append({"kill": i + 1, "after_s": round(moment, 2), "finished_before_kill": finished,
                       "inside_fit": bool(progress), "progress_files": progress, "checkpoints": checkpoints})
    code = run(command(name, victim, data), resume=started(name, victim)).wait()
    assert code == 0, f"{name}: the resumed run failed ({code})"
    differing = same(final_state(name, twin), final_state(name, victim))
    logs = (twin / "agent", victim / "agent") if name == "idm-label" else (twin, victim)
    twin_eval, _ = last_eval(logs[0])
    victim_eval, steps = last_eval(logs[1])
    return {
        "command": name, "uninterrupted_s": round(duration, 1), "kills": events,
        "kills_inside_fit": sum(e["inside_fit"] for e in events),
        "identical": not differing and twin_eval == victim_eval, "differing": differing[:10],
        "final_eval": [twin_eval, victim_eval], "csv_steps_unique": len(steps) == len(set(steps)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--out", default="results/kill_resume")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = dataset(out)
    rng = np.random.default_rng(args.seed)
    results = []
    for name in args.commands:
        r = one(name, args.kills, rng, out, data)
        results.append(r)
        print(f"{name}: {args.kills} kills ({r['kills_inside_fit']} inside a fit), uninterrupted "
              f"{r['uninterrupted_s']} s: {'bit-identical' if r['identical'] else 'DIFFERS ' + str(r['differing'])}, "
              f"final eval {r['final_eval'][1]:.3f} vs {r['final_eval'][0]:.3f}, each CSV step once: "
              f"{r['csv_steps_unique']}", flush=True)
        (out / "summary.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r["identical"] and r["csv_steps_unique"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
