"""Holdout error of the probabilistic ensemble vs a mean-delta baseline and a linear least-squares model.

Data: ``--dataset FILE`` (any format ``mbrl.data.io.load_dataset`` reads, or an ``.npz`` written by
``--save-data``), or generated here on ``--env`` (default HalfCheetah-v5, ``--steps`` 60000) with a mix of
behaviours so that states cover more than a random policy reaches: uniformly random actions, "sticky" random
actions (held for 2-10 steps) and noisy periodic gaits (per-joint sinusoids with random frequency and phase
per episode, plus Gaussian noise), each a third of the episodes.

The data is split by whole episodes into train (80 %) and test (20 %); ``fit`` makes its own holdout inside the
train part. Reported on test: one-step next_obs MSE (and normalised by the variance of each dimension's change),
reward MSE, and open-loop k-step next_obs MSE along the test trajectories with the logged actions.

Models:
    mean-delta: ``next_obs = obs + mean(next_obs - obs)``, ``reward = mean(reward)`` over train;
    linear: least squares ``[obs, action, 1] -> [next_obs - obs, reward]`` on train;
    ensemble: ``ProbabilisticEnsemble`` (7 x 4 x 200, 5 elites; MBPO) fitted with ``mbrl.models.fit``.

Usage: ``python scripts/model_quality.py [--steps 60000] [--max-epochs 200] [--max-time 1800] [--json]``;
``--quick`` is a smoke check (tiny data and model; numbers meaningless). ``--save-data F`` writes the
generated data to ``F`` (npz) and exits; ``--dataset F`` reads it back (e.g. to fit on another machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mbrl.data.dataset import OfflineDataset
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.models.quality import k_step_error, one_step_error
from mbrl.types import Metrics, ModelStep, TransitionBatch

_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def generate(env_id: str, steps: int, episode_len: int, seed: int) -> OfflineDataset:
    """``steps`` real transitions from a mix of random, sticky-random and noisy periodic behaviours."""
    from mbrl.envs import make_env

    env = make_env(env_id, seed=seed)
    rng = np.random.default_rng(seed)
    space: Any = env.action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    a_dim = low.shape[0]
    rows: dict[str, list[Any]] = {k: [] for k in _KEYS}
    episode = 0
    while len(rows["observations"]) < steps:
        kind = episode % 3
        freq = rng.uniform(0.5, 3.0, a_dim) * 2 * np.pi * env.unwrapped.dt  # type: ignore[attr-defined]
        phase = rng.uniform(0, 2 * np.pi, a_dim)
        amp = rng.uniform(0.3, 1.0, a_dim)
        held, hold_left = rng.uniform(low, high), 0
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        for t in range(episode_len):
            if kind == 0:
                action = rng.uniform(low, high)
            elif kind == 1:
                if hold_left == 0:
                    held, hold_left = rng.uniform(low, high), int(rng.integers(2, 11))
                action, hold_left = held, hold_left - 1
            else:
                action = np.clip(amp * np.sin(freq * t + phase) + 0.2 * rng.normal(size=a_dim), low, high)
            next_obs, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
            timeout = (bool(truncated) or t == episode_len - 1) and not terminated
            for k, v in zip(_KEYS, (obs, action, reward, next_obs, terminated, timeout)):
                rows[k].append(v)
            if terminated or timeout or len(rows["observations"]) >= steps:
                break
            obs = next_obs
        episode += 1
    env.close()
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    return OfflineDataset(*(arrays[k] for k in _KEYS), env_id=env_id, source=f"generated:{env_id}:{steps}:{seed}")


def save(data: OfflineDataset, path: str) -> None:
    np.savez(path, **{k: getattr(data, k) for k in _KEYS}, env_id=np.array(data.env_id or ""))


def load(path: str) -> OfflineDataset:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            if all(k in f for k in _KEYS):  # our own layout: no env registry needed to read it
                return OfflineDataset(*(f[k] for k in _KEYS), source=Path(path).name)
    from mbrl.data.io import load_dataset

    return load_dataset(path)


class MeanDeltaModel:
    """``next_obs = obs + mean delta``, ``reward = mean reward`` (fitted on train)."""

    def __init__(self, train: OfflineDataset) -> None:
        self.obs_dim, self.action_dim = train.obs_dim, train.action_dim
        self.delta = torch.from_numpy((train.next_observations - train.observations).mean(0))
        self.reward = float(train.rewards.mean())

    def predict(self, obs: Tensor, action: Tensor, **_: Any) -> ModelStep:
        n = obs.shape[0]
        return ModelStep(obs + self.delta, torch.full((n,), self.reward), torch.zeros(n))

    def update(self, batch: TransitionBatch) -> Metrics:
        return {}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        mse = float(((self.predict(batch.obs, batch.action).next_obs - batch.next_obs) ** 2).mean())
        return {"loss": mse, "mse": mse}

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        pass


class LinearModel(MeanDeltaModel):
    """Least squares ``[obs, action, 1] -> [next_obs - obs, reward]`` (float64 solve)."""

    def __init__(self, train: OfflineDataset) -> None:
        super().__init__(train)
        assert train.actions is not None
        x = np.concatenate([train.observations, train.actions, np.ones((len(train), 1))], 1).astype(np.float64)
        y = np.concatenate([train.next_observations - train.observations, train.rewards[:, None]], 1)
        self.w = torch.from_numpy(np.linalg.lstsq(x, y.astype(np.float64), rcond=None)[0]).float()

    def predict(self, obs: Tensor, action: Tensor, **_: Any) -> ModelStep:
        x = torch.cat([obs.float(), action.float(), torch.ones(obs.shape[0], 1)], 1)
        out = x @ self.w
        return ModelStep(obs + out[:, : self.obs_dim], out[:, self.obs_dim], torch.zeros(obs.shape[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--episode-len", type=int, default=1000)
    parser.add_argument("--dataset", default=None, help="read data from this file instead of generating it")
    parser.add_argument("--save-data", default=None, help="generate, write the data to this .npz and exit")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--max-time", type=float, default=1800.0, help="fit time cap in seconds")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16-training", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny data and model (smoke check)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.episode_len, args.max_epochs, args.horizons = 1500, 100, 3, [1, 5]
    start = time.monotonic()
    data = load(args.dataset) if args.dataset else generate(args.env, args.steps, args.episode_len, args.seed)
    if args.save_data:
        save(data, args.save_data)
        print(f"wrote {len(data)} transitions ({data.n_episodes} episodes) to {args.save_data}")
        return 0
    gen_s = time.monotonic() - start
    rng = np.random.default_rng(args.seed)
    train, test = data.split_by_episode(0.2, rng)
    cfg = EnsembleConfig(device=args.device, bf16_training=args.bf16_training)
    if args.quick:
        cfg = EnsembleConfig(num_members=3, num_elites=2, hidden=32, depth=2, device=args.device)
    ensemble = ProbabilisticEnsemble(data.obs_dim, data.action_dim, cfg, seed=args.seed)
    report = fit(ensemble, train, FitConfig(max_epochs=args.max_epochs, max_time_s=args.max_time), rng=rng)
    models: dict[str, Any] = {"mean-delta": MeanDeltaModel(train), "linear": LinearModel(train), "ensemble": ensemble}
    test_batch = test.to_batch()
    results: dict[str, Any] = {}
    for name, model in models.items():
        one = one_step_error(model, test_batch)
        ks = k_step_error(model, test, args.horizons, max_windows=2000)
        results[name] = {**one, "k_step_obs_mse": {str(h): v for h, v in ks.obs_mse.items()}}
    summary = {
        "data": {"source": data.source, "n_transitions": len(data), "n_episodes": data.n_episodes,
                 "n_train": len(train), "n_test": len(test), "generate_s": gen_s},
        "fit": {"epochs": report.epochs, "stop_reason": report.stop_reason, "time_s": report.time_s,
                "holdout_mse": report.holdout_mse, "elites": list(report.elites), "device": str(ensemble.device)},
        "results": results,
        "ensemble_vs_mean_delta": results["ensemble"]["obs_mse"] / results["mean-delta"]["obs_mse"],
        "ensemble_vs_linear": results["ensemble"]["obs_mse"] / results["linear"]["obs_mse"],
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    d, f = summary["data"], summary["fit"]
    print(f"data: {d['source']}  {d['n_transitions']} transitions, {d['n_episodes']} episodes "
          f"(train {d['n_train']}, test {d['n_test']} by episode)")
    print(f"ensemble fit: {f['epochs']} epochs ({f['stop_reason']}), {f['time_s']:.0f} s on {f['device']}")
    hs = [str(h) for h in args.horizons]
    print(f"{'model':<11} {'obs MSE':>10} {'norm. MSE':>10} {'reward MSE':>11} " + " ".join(f"{'k=' + h:>10}" for h in hs))
    for name, r in results.items():
        cols = " ".join(f"{r['k_step_obs_mse'][h]:>10.4g}" for h in hs)
        print(f"{name:<11} {r['obs_mse']:>10.4g} {r['obs_nmse']:>10.4f} {r['reward_mse']:>11.4g} {cols}")
    print(f"ensemble / mean-delta one-step MSE: {summary['ensemble_vs_mean_delta']:.4f}; "
          f"ensemble / linear: {summary['ensemble_vs_linear']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
