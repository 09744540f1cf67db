"""How good is a world model? One-step error, open-loop k-step error and calibration of its variance.

* :func:`one_step_error`: squared error of the (mean) prediction on real transitions.
* :func:`k_step_error`: the model rolled open-loop along real held-out trajectories with the logged actions
  (compounding error, the quantity MBPO's branch-length argument is about), against the logged next
  observations or against a reference WorldModel (e.g. ``TrueDynamicsModel``) from the same start states.
* :func:`calibration`: how often targets fall inside the predicted 1-sigma / 2-sigma intervals compared with a
  Gaussian's 68.3 % / 95.4 %, and the mean squared z-score (1 for a calibrated Gaussian).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mbrl.data.dataset import OfflineDataset
from mbrl.models.protocol import Ensemble, WorldModel
from mbrl.types import TransitionBatch

GAUSSIAN_1SIGMA = math.erf(1 / math.sqrt(2))  # 0.6827
GAUSSIAN_2SIGMA = math.erf(2 / math.sqrt(2))  # 0.9545


def one_step_error(
    model: WorldModel,
    batch: TransitionBatch,
    *,
    deterministic: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One-step prediction error on real transitions.

    Returns:
        ``obs_mse`` (next_obs, mean over rows and dims), ``reward_mse``, ``obs_mae``, and ``obs_nmse``: the
        per-dimension MSE divided by the variance of that dimension's change ``next_obs - obs`` in ``batch``,
        averaged over dimensions (1.0 = no better than predicting the mean change; constant dims skipped).
    """
    step = model.predict(batch.obs, batch.action, deterministic=deterministic, generator=generator)
    next_obs = batch.next_obs.to(step.next_obs)
    reward = batch.reward.to(step.reward)
    err = step.next_obs - next_obs
    per_dim = (err**2).mean(0)
    delta_var = (next_obs - batch.obs.to(next_obs)).var(0, unbiased=False)
    varying = delta_var > 1e-12
    nmse = float((per_dim[varying] / delta_var[varying]).mean()) if bool(varying.any()) else math.nan
    return {
        "obs_mse": float(per_dim.mean()),
        "reward_mse": float(((step.reward - reward) ** 2).mean()),
        "obs_mae": float(err.abs().mean()),
        "obs_nmse": nmse,
    }


@dataclass(frozen=True)
class KStepError:
    """Open-loop error per horizon.

    Attributes:
        horizons: the horizons ``h`` (steps after the start state).
        obs_mse: ``{h: MSE of the predicted observation after h steps}`` over windows whose prediction is finite.
        reward_mse: ``{h: MSE of the reward predicted at step h}``.
        nonfinite: ``{h: fraction of windows whose prediction diverged (NaN/Inf) by step h}``.
        n_windows: number of start states (windows) used.
        reference: ``"data"`` (logged trajectories) or the reference model's class name.
    """

    horizons: tuple[int, ...]
    obs_mse: dict[int, float]
    reward_mse: dict[int, float]
    nonfinite: dict[int, float]
    n_windows: int
    reference: str


def _windows(data: OfflineDataset, horizon: int, max_windows: int, rng: np.random.Generator | None) -> np.ndarray:
    starts = [np.arange(a, b - horizon + 1) for a, b in data.episode_slices() if b - a >= horizon]
    if not starts:
        longest = int(data.episode_lengths().max())
        raise ValueError(
            f"k_step_error: no episode of {data.source} has {horizon} steps (longest: {longest}); lower the horizons"
        )
    pool = np.concatenate(starts)
    if len(pool) <= max_windows:
        return pool
    if rng is None:  # evenly spaced: deterministic without an RNG
        return pool[np.linspace(0, len(pool) - 1, max_windows).round().astype(np.int64)]
    return np.sort(rng.choice(pool, size=max_windows, replace=False))


@torch.no_grad()
def k_step_error(
    model: WorldModel,
    data: OfflineDataset,
    horizons: Sequence[int] = (1, 5, 10, 20),
    *,
    reference: WorldModel | None = None,
    max_windows: int = 1000,
    rng: np.random.Generator | None = None,
    deterministic: bool = True,
    generator: torch.Generator | None = None,
) -> KStepError:
    """Open-loop rollouts along real trajectories with the logged actions.

    From ``observations[t0]`` of windows ``[t0, t0 + H)`` that lie inside one episode (``H = max(horizons)``),
    the model is fed its own predictions and the logged ``actions[t0 + k]``. After ``h`` steps its observation
    is compared with ``next_observations[t0 + h - 1]``, or with ``reference``'s open-loop prediction from the
    same start and actions.

    Args:
        model: the model to measure.
        data: held-out trajectories (with actions).
        horizons: positive step counts.
        reference: compare with this model's open-loop rollout instead of the data.
        max_windows: at most this many start states (evenly spaced, or drawn with ``rng``).
        rng: draws the windows when there are more than ``max_windows``.
        deterministic: mean predictions (default) or samples drawn with ``generator``.
        generator: for sampled predictions.

    Raises:
        ValueError: bad horizons, or no episode as long as the largest horizon.
    """
    hs = tuple(sorted({int(h) for h in horizons}))
    if not hs or hs[0] < 1:
        raise ValueError(f"k_step_error: horizons must be positive ints, got {tuple(horizons)}")
    if data.actions is None:
        raise ValueError(f"k_step_error: {data.source} has no actions")
    t0 = _windows(data, hs[-1], max_windows, rng)
    actions = torch.from_numpy(data.actions)
    obs = torch.from_numpy(data.observations[t0])
    ref_obs = obs.clone()
    alive = torch.ones(len(t0), dtype=torch.bool)
    obs_mse: dict[int, float] = {}
    reward_mse: dict[int, float] = {}
    nonfinite: dict[int, float] = {}
    for k in range(hs[-1]):
        act = actions[t0 + k]
        step = model.predict(obs, act, deterministic=deterministic, generator=generator)
        obs = step.next_obs.detach().cpu().float()
        reward = step.reward.detach().cpu().float()
        if reference is None:
            target = torch.from_numpy(data.next_observations[t0 + k])
            target_reward = torch.from_numpy(data.rewards[t0 + k])
        else:
            ref_step = reference.predict(ref_obs, act, deterministic=True)
            ref_obs = target = ref_step.next_obs.detach().cpu().float()
            target_reward = ref_step.reward.detach().cpu().float()
        alive &= torch.isfinite(obs).all(1) & torch.isfinite(reward)
        if k + 1 in hs:
            h = k + 1
            ok = alive & torch.isfinite(target).all(1)
            obs_mse[h] = float(((obs[ok] - target[ok]) ** 2).mean()) if bool(ok.any()) else math.nan
            reward_mse[h] = float(((reward[ok] - target_reward[ok]) ** 2).mean()) if bool(ok.any()) else math.nan
            nonfinite[h] = float((~alive).float().mean())
        # Diverged rows continue from zeros so the batch keeps its shape; they are excluded above.
        obs = torch.where(alive[:, None], obs, torch.zeros_like(obs))
    return KStepError(
        horizons=hs,
        obs_mse=obs_mse,
        reward_mse=reward_mse,
        nonfinite=nonfinite,
        n_windows=len(t0),
        reference="data" if reference is None else type(reference).__name__,
    )


@torch.no_grad()
def calibration(model: WorldModel, batch: TransitionBatch) -> dict[str, float]:
    """Calibration of an ``Ensemble``'s predictive distribution of ``[next_obs, reward]``.

    The predictive distribution is the elites' mixture, moment-matched to a Gaussian per output dimension
    (mean = mean of the elite means; variance = mean of the elite variances + variance of the elite means).

    Returns:
        ``within_1sigma`` / ``within_2sigma``: fraction of target entries with ``|z| <= 1`` / ``<= 2``
        (a calibrated Gaussian: 0.683 / 0.954), ``expected_1sigma`` / ``expected_2sigma``, ``mean_z2``
        (1 when calibrated; > 1 overconfident, < 1 underconfident), ``median_abs_z``.

    Raises:
        TypeError: the model is not an ``Ensemble`` (no ``predict_members``).
        ValueError: the prediction has zero variance somewhere (a single deterministic member).
    """
    if not isinstance(model, Ensemble):
        raise TypeError(f"calibration: {type(model).__name__} has no predictive variance (not an Ensemble)")
    mean, logvar = model.predict_members(batch.obs, batch.action)
    elites = torch.as_tensor(list(model.elites), dtype=torch.long, device=mean.device)
    mean, var = mean[elites], torch.exp(logvar[elites])
    mix_mean = mean.mean(0)
    mix_var = var.mean(0) + mean.var(0, unbiased=False)
    if not bool((mix_var > 0).all()):
        raise ValueError(f"calibration: {type(model).__name__} predicts zero variance (deterministic single member)")
    target: Tensor = torch.cat([batch.next_obs, batch.reward.unsqueeze(1)], 1).to(mix_mean)
    z = (target - mix_mean) / mix_var.sqrt()
    az = z.abs()
    return {
        "within_1sigma": float((az <= 1).float().mean()),
        "within_2sigma": float((az <= 2).float().mean()),
        "expected_1sigma": GAUSSIAN_1SIGMA,
        "expected_2sigma": GAUSSIAN_2SIGMA,
        "mean_z2": float((z**2).mean()),
        "median_abs_z": float(az.median()),
    }
