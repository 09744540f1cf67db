"""Covariate-shift regression stream: Losse-FTL vs one-pass, bounded-replay and retrained MLPs.

Measurement (a) of the Losse issue (Liu et al., ICLR 2024, "Locality Sensitive Sparse Encoding for Learning
World Models Online", Sec. 5.1: online regression under covariate shift). Real transitions of a gymnasium env
are collected by a sequence of policies, one per phase: phase ``p`` acts with a fixed random linear policy
``a = low + (high - low)·(tanh(K_p obs + b_p) + 1)/2`` plus Gaussian noise, so the inputs ``[obs, action]``
drift across regions of the input space from phase to phase. Each learner sees the stream ONCE, in batches,
in order, and learns to predict ``[next_obs - obs, reward]``:

- ``losse``: :class:`~mbrl.models.losse.LosseModel`, one incremental FTL step per batch;
- ``mlp_online``: an MLP, ``steps_per_batch`` Adam steps on the incoming batch only (one pass, no replay);
- ``mlp_fifo``: the same MLP with a FIFO replay buffer of ``fifo_capacity`` transitions; per batch,
  ``steps_per_batch`` Adam steps on minibatches sampled from the buffer;
- ``mlp_full``: the upper reference: at each phase end a fresh MLP is trained on ALL data seen so far
  (``full_epochs`` epochs).

The error reported is the MSE on ALL data seen so far, each target dimension divided by its variance over
the whole stream (so 1.0 = predicting the mean). Printed: a table of final errors (and the error on each
phase's data at the end, which shows forgetting), Losse's per-update wall-clock as the data grows (first
vs last tenth of the stream) and its touched-entry counts. Written: ``losse_stream.json`` and
``losse_stream.png`` (error over the stream; update time vs data size) in ``--out``.

Run ``python scripts/losse_stream.py --quick`` for a seconds-long check; the default sizes are the real run.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread before numpy/torch load: on small machines two threads collapse under load, and
# timings are per-core numbers. Set them yourself beforehand to override.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402

import mbrl.envs  # noqa: E402,F401  (installs the MuJoCo warning handler)
from mbrl.models.losse import LosseConfig, LosseModel  # noqa: E402
from mbrl.nn import EnsembleMLP  # noqa: E402
from mbrl.types import TransitionBatch  # noqa: E402


@dataclass(frozen=True)
class StreamConfig:
    """Settings of the stream measurement.

    Attributes:
        env_id: a gymnasium env with a Box action space (Pendulum-v1, InvertedPendulum-v5, HalfCheetah-v5, ...).
        phases: number of policies, one after the other.
        episodes_per_phase: episodes collected per phase.
        max_episode_steps: steps per episode at most.
        batch_size: transitions per stream batch (one learner update each).
        policy_gain: std of the random policy gains is ``policy_gain / sqrt(obs_dim)``.
        policy_noise: Gaussian action noise, as a fraction of the half action range.
        seed: seeds the env, the policies, the Losse projection and the MLPs.
        losse: Losse hyperparameters.
        mlp_hidden: MLP width.
        mlp_depth: MLP hidden layers.
        lr: Adam learning rate of the MLPs.
        steps_per_batch: Adam steps per stream batch (online and FIFO MLPs).
        mlp_batch: minibatch size of the FIFO and full-retrain MLPs.
        fifo_capacity: FIFO replay capacity (transitions).
        full_epochs: epochs of each full retrain (one per phase end).
        holdout_every: every k-th transition of each phase is held out of the stream (0: none); the final
            table also reports the error on these unseen transitions (generalisation within the regions).
        evals: evaluations on all data seen, evenly spaced over the stream.
        quick: tiny sizes for a seconds-long check (overrides the sizes above).
        out: output directory for the JSON and PNG.
    """

    env_id: str = "HalfCheetah-v5"
    phases: int = 5
    episodes_per_phase: int = 4
    max_episode_steps: int = 1000
    batch_size: int = 20
    policy_gain: float = 3.0
    policy_noise: float = 0.1
    seed: int = 0
    losse: LosseConfig = field(default_factory=LosseConfig)
    mlp_hidden: int = 200
    mlp_depth: int = 3
    lr: float = 1e-3
    steps_per_batch: int = 4
    mlp_batch: int = 256
    fifo_capacity: int = 2000
    full_epochs: int = 30
    holdout_every: int = 10
    evals: int = 40
    quick: bool = False
    out: Path = Path("bench_results/losse_stream")


QUICK = dict(
    phases=3, episodes_per_phase=1, max_episode_steps=200, full_epochs=3, evals=6, mlp_hidden=64, mlp_depth=2
)


def collect_stream(cfg: StreamConfig) -> tuple[list[TransitionBatch], np.ndarray, np.ndarray]:
    """Collect the stream: one :class:`TransitionBatch` per phase.

    Returns:
        ``(phases, low, high)`` where ``low``/``high`` ``[D+A]`` are the env's ``[obs, action]`` bounds
        (``±inf`` where the observation space is unbounded).
    """
    env = gym.make(cfg.env_id, max_episode_steps=cfg.max_episode_steps)
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(
        env.observation_space, gym.spaces.Box
    ):
        raise ValueError(f"{cfg.env_id}: needs Box observation and action spaces")
    rng = np.random.default_rng(cfg.seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    phases = []
    for _ in range(cfg.phases):
        gain = rng.normal(0.0, cfg.policy_gain / np.sqrt(obs_dim), (act_dim, obs_dim))
        bias = rng.uniform(-1.5, 1.5, act_dim)
        cols: dict[str, list[Any]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated")}
        for _ in range(cfg.episodes_per_phase):
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            while True:
                action = low + (high - low) * (np.tanh(gain @ obs + bias) + 1) / 2
                action = np.clip(
                    action + cfg.policy_noise * (high - low) / 2 * rng.normal(size=act_dim), low, high
                )
                next_obs, reward, terminated, truncated, _ = env.step(action)
                for k, v in zip(cols, (obs, action, reward, next_obs, terminated)):
                    cols[k].append(v)
                obs = next_obs
                if terminated or truncated:
                    break
        arr = {k: np.asarray(v) for k, v in cols.items()}
        phases.append(
            TransitionBatch.from_numpy(
                arr["obs"], arr["action"], arr["reward"], arr["next_obs"], arr["terminated"]
            )
        )
    env.close()
    bounds_low = np.concatenate([env.observation_space.low, low]).astype(np.float64)
    bounds_high = np.concatenate([env.observation_space.high, high]).astype(np.float64)
    return phases, bounds_low, bounds_high


def _arrays(batch: TransitionBatch) -> tuple[np.ndarray, np.ndarray]:
    x = torch.cat([batch.obs, batch.action], 1).double().numpy()
    y = torch.cat([batch.next_obs - batch.obs, batch.reward[:, None]], 1).double().numpy()
    return x, y


class MLPRegressor:
    """An MLP on normalised inputs/targets (statistics fixed from the first batch, or input bounds)."""

    def __init__(
        self,
        cfg: StreamConfig,
        in_dim: int,
        out_dim: int,
        seed: int,
        bounds: tuple[np.ndarray, np.ndarray] | None,
    ):
        gen = torch.Generator().manual_seed(seed)
        self.net = EnsembleMLP(1, in_dim, out_dim, hidden=cfg.mlp_hidden, depth=cfg.mlp_depth, generator=gen)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.bounds = bounds
        self.stats: tuple[np.ndarray, ...] | None = None

    def _norm(self, x: np.ndarray, y: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.stats is None:
            assert y is not None
            if self.bounds is not None:
                xs, xm = (self.bounds[1] - self.bounds[0]) / 2, (self.bounds[1] + self.bounds[0]) / 2
            else:
                xm, xs = x.mean(0), np.where(x.std(0) < 1e-6, 1.0, x.std(0))
            ym, ys = y.mean(0), np.where(y.std(0) < 1e-6, 1.0, y.std(0))
            self.stats = (xm, xs, ym, ys)
        xm, xs, ym, ys = self.stats
        xt = torch.as_tensor((x - xm) / xs, dtype=torch.float32)
        return xt, None if y is None else torch.as_tensor((y - ym) / ys, dtype=torch.float32)

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        xt, yt = self._norm(x, y)
        loss = ((self.net(xt)[0] - yt) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.stats is not None
        xt, _ = self._norm(x, None)
        _, _, ym, ys = self.stats
        return self.net(xt)[0].double().numpy() * ys + ym


def _error(pred: np.ndarray, y: np.ndarray, var: np.ndarray) -> float:
    return float(np.mean((pred - y) ** 2 / var))


def run(cfg: StreamConfig) -> dict[str, Any]:
    """Collect the stream, run every learner over it once, return the results (also printed and saved)."""
    if cfg.quick:
        cfg = replace(cfg, **QUICK)  # type: ignore[arg-type]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    collected, low, high = collect_stream(cfg)
    collect_s = time.perf_counter() - t0
    phases, held = [], []
    for p in collected:
        mask = torch.ones(len(p), dtype=torch.bool)
        if cfg.holdout_every > 0:
            mask[cfg.holdout_every - 1 :: cfg.holdout_every] = False
        phases.append(p.index(mask))
        held.append(p.index(~mask))
    x_held, y_held = _arrays(TransitionBatch.cat(held))
    stream = TransitionBatch.cat(phases)
    x_all, y_all = _arrays(stream)
    var = np.maximum(y_all.var(0), 1e-12)
    n_total = len(stream)
    phase_ends = np.cumsum([len(p) for p in phases])
    in_dim, out_dim = x_all.shape[1], y_all.shape[1]
    obs_dim, act_dim = stream.obs_dim, stream.action_dim
    bounds = (low, high) if np.isfinite(low).all() and np.isfinite(high).all() else None

    losse = LosseModel(obs_dim, act_dim, cfg.losse, seed=cfg.seed, input_bounds=bounds)
    online = MLPRegressor(cfg, in_dim, out_dim, cfg.seed, bounds)
    fifo = MLPRegressor(cfg, in_dim, out_dim, cfg.seed, bounds)
    rng = np.random.default_rng(cfg.seed + 1)
    fifo_x = np.zeros((cfg.fifo_capacity, in_dim))
    fifo_y = np.zeros((cfg.fifo_capacity, out_dim))
    fifo_size = fifo_ptr = 0

    starts = list(range(0, n_total, cfg.batch_size))
    eval_at = set(np.linspace(0, len(starts) - 1, cfg.evals).round().astype(int).tolist())
    curves: dict[str, list[tuple[int, float]]] = {
        k: [] for k in ("losse", "mlp_online", "mlp_fifo", "mlp_full")
    }
    seconds = {k: 0.0 for k in ("losse", "mlp_online", "mlp_fifo", "mlp_full")}
    upd_seen, upd_secs, upd_touched, upd_entries, residuals = [], [], [], [], []
    next_phase = 0
    full_final: MLPRegressor | None = None

    def predict_losse(x: np.ndarray) -> np.ndarray:
        return losse._predict_normalised(x) * losse.target_scale + losse.target_shift

    for i, s in enumerate(starts):
        batch = stream.index(slice(s, s + cfg.batch_size))
        x, y = _arrays(batch)
        seen = s + len(batch)

        m = losse.update(batch)
        seconds["losse"] += m["seconds"]
        upd_seen.append(seen)
        upd_secs.append(m["seconds"])
        upd_touched.append(m["touched_features"])
        upd_entries.append(m["touched_entries"])
        residuals.append(m["ftl_residual"])

        t = time.perf_counter()
        for _ in range(cfg.steps_per_batch):
            online.step(x, y)
        seconds["mlp_online"] += time.perf_counter() - t

        t = time.perf_counter()
        for row in range(len(x)):  # FIFO: overwrite the oldest
            fifo_x[fifo_ptr], fifo_y[fifo_ptr] = x[row], y[row]
            fifo_ptr = (fifo_ptr + 1) % cfg.fifo_capacity
            fifo_size = min(fifo_size + 1, cfg.fifo_capacity)
        for _ in range(cfg.steps_per_batch):
            pick = rng.integers(0, fifo_size, min(cfg.mlp_batch, fifo_size))
            fifo.step(fifo_x[pick], fifo_y[pick])
        seconds["mlp_fifo"] += time.perf_counter() - t

        if next_phase < len(phase_ends) and seen >= phase_ends[next_phase]:
            # The reference: a fresh MLP trained on everything seen so far.
            t = time.perf_counter()
            full = MLPRegressor(cfg, in_dim, out_dim, cfg.seed + 7, bounds)
            for _ in range(cfg.full_epochs):
                order = rng.permutation(seen)
                for j in range(0, seen, cfg.mlp_batch):
                    pick = order[j : j + cfg.mlp_batch]
                    full.step(x_all[pick], y_all[pick])
            seconds["mlp_full"] += time.perf_counter() - t
            curves["mlp_full"].append((seen, _error(full.predict(x_all[:seen]), y_all[:seen], var)))
            full_final = full
            next_phase += 1

        if i in eval_at:
            xs, ys = x_all[:seen], y_all[:seen]
            curves["losse"].append((seen, _error(predict_losse(xs), ys, var)))
            curves["mlp_online"].append((seen, _error(online.predict(xs), ys, var)))
            curves["mlp_fifo"].append((seen, _error(fifo.predict(xs), ys, var)))

    assert full_final is not None
    predictors = {
        "losse": predict_losse,
        "mlp_online": online.predict,
        "mlp_fifo": fifo.predict,
        "mlp_full": full_final.predict,
    }
    bounds_idx = [0, *phase_ends.tolist()]
    final: dict[str, dict[str, Any]] = {}
    for name, pred_fn in predictors.items():
        pred = pred_fn(x_all)
        final[name] = {
            "all_data_error": _error(pred, y_all, var),
            "holdout_error": _error(pred_fn(x_held), y_held, var) if len(x_held) else float("nan"),
            "per_phase_error": [
                _error(pred[a:b], y_all[a:b], var) for a, b in itertools.pairwise(bounds_idx)
            ],
            "seconds": seconds[name],
        }
    tenth = max(1, len(upd_secs) // 10)
    # Seconds per million touched entries: the update's cost normalised by its batch's own size (the touched
    # set varies with how spread a batch's inputs are, not with the data seen before).
    per_entry = 1e6 * np.asarray(upd_secs) / np.maximum(np.asarray(upd_entries), 1.0)
    results: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "num_transitions": n_total,
        "num_holdout": len(x_held),
        "num_updates": len(starts),
        "phase_ends": phase_ends.tolist(),
        "collect_seconds": collect_s,
        "input_bounds_used": bounds is not None,
        "num_features": cfg.losse.num_features,
        "final": final,
        "curves": {k: [list(p) for p in v] for k, v in curves.items()},
        "losse_updates": {
            "samples_seen": upd_seen,
            "seconds": upd_secs,
            "touched_features": upd_touched,
            "touched_entries": upd_entries,
            "ftl_residual": residuals,
            # medians: robust to the one-off warm-up of the first call (library loading, first touches of A)
            "seconds_first_tenth": float(np.median(upd_secs[:tenth])),
            "seconds_last_tenth": float(np.median(upd_secs[-tenth:])),
            "seconds_median": float(np.median(upd_secs)),
            "seconds_per_mentry_first_tenth": float(np.median(per_entry[:tenth])),
            "seconds_per_mentry_last_tenth": float(np.median(per_entry[-tenth:])),
            "touched_features_mean": float(np.mean(upd_touched)),
            "touched_entries_mean": float(np.mean(upd_entries)),
            "touched_entries_max": float(np.max(upd_entries)),
            "final_ftl_residual": residuals[-1],
        },
    }
    return results


def report(results: dict[str, Any]) -> str:
    """The printed table."""
    final = results["final"]
    n_phases = len(results["phase_ends"])
    lines = [
        f"{results['config']['env_id']}: {results['num_transitions']} transitions in {n_phases} phases, "
        f"{results['num_updates']} updates of {results['config']['batch_size']}; error = MSE / variance on ALL data",
        f"{'learner':<12}{'all-data':>10}{'holdout':>10}"
        + "".join(f"{'phase ' + str(p):>10}" for p in range(n_phases))
        + f"{'seconds':>10}",
    ]
    for name, r in final.items():
        lines.append(
            f"{name:<12}{r['all_data_error']:>10.4f}{r['holdout_error']:>10.4f}"
            + "".join(f"{e:>10.4f}" for e in r["per_phase_error"])
            + f"{r['seconds']:>10.1f}"
        )
    u = results["losse_updates"]
    lines += [
        f"Losse-FTL update (median): {1e3 * u['seconds_first_tenth']:.2f} ms (first tenth of stream) -> "
        f"{1e3 * u['seconds_last_tenth']:.2f} ms (last tenth), median {1e3 * u['seconds_median']:.2f} ms; "
        f"F = {results['num_features']}",
        f"  per million touched entries of A: {1e3 * u['seconds_per_mentry_first_tenth']:.2f} ms -> "
        f"{1e3 * u['seconds_per_mentry_last_tenth']:.2f} ms",
        f"touched per update: {u['touched_features_mean']:.0f} features, entries of A mean "
        f"{u['touched_entries_mean']:.0f} max {u['touched_entries_max']:.0f}; "
        f"final FTL residual |B-AW|/|B| = {u['final_ftl_residual']:.2e}",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Error over the stream and Losse update time vs data size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.5))
    for name, pts in results["curves"].items():
        if pts:
            a = np.asarray(pts)
            ax1.plot(a[:, 0], a[:, 1], "o-" if name == "mlp_full" else "-", label=name)
    for end in results["phase_ends"][:-1]:
        ax1.axvline(end, color="grey", lw=0.5, ls=":")
    ax1.set_yscale("log")
    ax1.set_xlabel("transitions seen")
    ax1.set_ylabel("error on all data seen (MSE / var)")
    ax1.set_title(f"{results['config']['env_id']}: covariate-shift stream")
    ax1.legend()
    u = results["losse_updates"]
    ax2.plot(u["samples_seen"], 1e3 * np.asarray(u["seconds"]), ".", ms=2, alpha=0.5, label="per update")
    k = max(1, len(u["seconds"]) // 50)
    smooth = np.convolve(u["seconds"], np.ones(k) / k, mode="valid")
    ax2.plot(u["samples_seen"][k - 1 :], 1e3 * smooth, "r-", label=f"moving mean ({k})")
    ax2.set_xlabel("transitions seen")
    ax2.set_ylabel("Losse-FTL update wall-clock (ms)")
    ax2.set_title("update cost vs data size")
    ax2.legend()
    ax3.plot(u["samples_seen"], u["touched_entries"], ".", ms=2, alpha=0.5)
    ax3.set_xlabel("transitions seen")
    ax3.set_ylabel("entries of A touched per update")
    ax3.set_title("touched entries vs data size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(cfg: StreamConfig) -> None:
    results = run(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "losse_stream.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "losse_stream.png")
    print(report(results))
    print(f"wrote {out / 'losse_stream.json'} and {out / 'losse_stream.png'}")


if __name__ == "__main__":
    main(tyro.cli(StreamConfig))
