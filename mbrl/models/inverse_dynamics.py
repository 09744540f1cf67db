"""Inverse dynamics model (IDM): ``p(a_t | s_{t-k}, ..., s_t, s_{t+1}, ..., s_{t+k})``.

Follows SS-ORL (Zheng, Henaff, Amos & Grover, "Semi-Supervised Offline Reinforcement Learning with
Action-Free Trajectories", ICML 2023): an MLP over a window of ``2k + 1`` consecutive states centred on
``s_t`` (default ``k = 1``: ``s_{t-1}, s_t, s_{t+1}``) outputs a diagonal Gaussian whose samples are squashed
by ``tanh`` into the action box; it is trained by maximum likelihood on the labelled trajectories, and the
proxy label of an unlabelled step is the mean action ``tanh(mu)``.

Windows are built within an episode; at the edges the boundary state is repeated (the window of ``t = 0``
starts with ``s_0`` repeated ``k`` times, the window of the last step ends with the final next state
repeated). An episode of ``T`` steps has states ``s_0..s_T`` (``observations`` then the last
``next_observations``).

Actions are env units at the boundary (targets, ``predict_action``, ``label``), ``[-1, 1]`` inside.
Inputs are standardised with statistics of the training states.

Implements the ``InverseDynamics`` capability (``predict_action(obs, next_obs)``): a window of 2 states, the
missing past states repeating ``obs`` and the missing future states repeating ``next_obs`` (the same
edge rule as at an episode's start).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from mbrl.checkpoint import load_checkpoint, save_checkpoint
from mbrl.data.dataset import OfflineDataset
from mbrl.types import Metrics

IDM_FILE = "idm.pt"
_EPS = 1e-6


@dataclass(frozen=True)
class IDMConfig:
    """Hyperparameters of :class:`InverseDynamicsModel` and of its training.

    Attributes:
        context: ``k``: the window is ``s_{t-k} .. s_{t+k}`` (``2k + 1`` states); ``k >= 1``.
        hidden: hidden width of the MLP.
        depth: number of hidden layers.
        dropout: dropout after each hidden activation (training only).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: minibatch size.
        max_epochs: passes over the training rows.
        patience: stop after this many epochs without a better validation NLL (0: never stop early).
        holdout_fraction: fraction of the labelled episodes held out for validation (checkpoint selection).
        max_time_s: wall-clock budget of ``fit`` (``None``: none).
        min_log_std: lower clamp of the pre-tanh log standard deviation.
        max_log_std: upper clamp of the pre-tanh log standard deviation.
        device: ``"cpu"`` or ``"cuda"``.
    """

    context: int = 1
    hidden: int = 1024
    depth: int = 2
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 10
    holdout_fraction: float = 0.1
    max_time_s: float | None = None
    min_log_std: float = -10.0
    max_log_std: float = 2.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.context < 1:
            raise ValueError(f"IDMConfig: context must be >= 1, got {self.context}")
        if self.hidden < 1 or self.depth < 1 or self.batch_size < 1 or self.max_epochs < 1:
            raise ValueError("IDMConfig: hidden, depth, batch_size and max_epochs must be >= 1")
        if not 0.0 <= self.dropout < 1.0 or self.lr <= 0 or self.patience < 0:
            raise ValueError("IDMConfig: dropout in [0, 1), lr > 0, patience >= 0")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"IDMConfig: holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.min_log_std >= self.max_log_std:
            raise ValueError("IDMConfig: min_log_std must be < max_log_std")


def idm_preset(preset: Literal["paper", "cpu", "quick"] = "paper", **overrides: Any) -> IDMConfig:
    """``"paper"``: SS-ORL's IDM (k=1, 2 x 1024 MLP, dropout 0.1, Adam 1e-3, weight decay 1e-4, batch 256);
    ``"cpu"``: 2 x 256, at most 50 epochs or 5 minutes; ``"quick"``: 2 x 64, 5 epochs (smoke tests)."""
    if preset == "paper":
        base = IDMConfig()
    elif preset == "cpu":
        base = IDMConfig(hidden=256, max_epochs=50, patience=5, max_time_s=300.0)
    elif preset == "quick":
        base = IDMConfig(hidden=64, max_epochs=5, patience=0, max_time_s=30.0)
    else:
        raise ValueError(f"idm_preset: unknown preset {preset!r} (paper, cpu, quick)")
    return replace(base, **overrides)


def episode_windows(dataset: OfflineDataset, context: int) -> np.ndarray:
    """``[N, 2k + 1, D]`` state windows of every row, built within episodes (edge states repeated).

    Row ``t`` of an episode with states ``s_0..s_T`` gets ``s_{clip(t + j, 0, T)}`` for ``j = -k..k``.
    """
    out = np.empty((len(dataset), 2 * context + 1, dataset.obs_dim), dtype=np.float32)
    offsets = np.arange(-context, context + 1)
    for start, stop in dataset.episode_slices():
        states = np.concatenate([dataset.observations[start:stop], dataset.next_observations[stop - 1 : stop]])
        t = np.arange(stop - start)[:, None]
        out[start:stop] = states[np.clip(t + offsets[None, :], 0, stop - start)]
    return out


def pair_windows(obs: Tensor, next_obs: Tensor, context: int) -> Tensor:
    """``[B, 2k + 1, D]`` windows from ``(s_t, s_{t+1})`` alone: ``k`` copies of ``obs`` then ``k + 1`` of
    ``next_obs`` (``s_t`` itself is the ``k+1``-th state), i.e. the edge rule with no other context."""
    return torch.cat([obs.unsqueeze(1).expand(-1, context + 1, -1), next_obs.unsqueeze(1).expand(-1, context, -1)], 1)


class _MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = hidden
        layers.append(nn.Linear(d, 2 * out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def squashed_gaussian_nll(mean: Tensor, log_std: Tensor, target: Tensor) -> Tensor:
    """``-log p(target)`` per row ``[B]`` of a tanh-squashed diagonal Gaussian; ``target [B, A]`` in ``(-1, 1)``.

    ``log p(a) = log N(atanh(a); mean, std) - sum log(1 - a^2)`` (change of variables through tanh).
    """
    a = target.clamp(-1 + _EPS, 1 - _EPS)
    u = torch.atanh(a)
    z = (u - mean) * torch.exp(-log_std)
    log_normal = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    return -(log_normal - torch.log1p(-a.pow(2))).sum(-1)


class InverseDynamicsModel:
    """SS-ORL's inverse dynamics model (see the module docstring).

    Args:
        obs_dim: ``D``.
        action_dim: ``A``.
        action_low: ``[A]`` finite lower bounds (env units).
        action_high: ``[A]`` finite upper bounds.
        config: hyperparameters.
        generator: initialisation, dropout-free minibatch order and dropout masks come from it / ``fit``'s rng.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: np.ndarray | list[float],
        action_high: np.ndarray | list[float],
        config: IDMConfig | None = None,
        *,
        generator: torch.Generator,
    ) -> None:
        self.config = c = config if config is not None else IDMConfig()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.device = torch.device(c.device)
        low = np.asarray(action_low, dtype=np.float32).reshape(-1)
        high = np.asarray(action_high, dtype=np.float32).reshape(-1)
        if low.shape != (self.action_dim,) or high.shape != (self.action_dim,):
            raise ValueError(f"InverseDynamicsModel: action bounds must have shape ({self.action_dim},)")
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
            raise ValueError("InverseDynamicsModel: action bounds must be finite with high > low")
        self.action_low, self.action_high = low, high
        self.scale = torch.as_tensor((high - low) / 2, device=self.device)
        self.bias = torch.as_tensor((high + low) / 2, device=self.device)
        self.window = 2 * c.context + 1
        self.generator = generator
        with torch.random.fork_rng(devices=[]):
            # nn.Linear initialises from the global RNG: seed it from our generator inside a forked scope
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            self.net = _MLP(self.window * self.obs_dim, self.action_dim, c.hidden, c.depth, c.dropout)
        self.net.to(self.device)
        self.obs_mean = torch.zeros(self.obs_dim, device=self.device)
        self.obs_std = torch.ones(self.obs_dim, device=self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    @classmethod
    def for_dataset(
        cls, dataset: OfflineDataset, config: IDMConfig | None = None, *, generator: torch.Generator,
        action_low: np.ndarray | None = None, action_high: np.ndarray | None = None,
    ) -> InverseDynamicsModel:
        """A model sized for ``dataset``; bounds default to the env's action box (``dataset.env_id``), else
        the data's range."""
        if action_low is None or action_high is None:
            if dataset.env_id is not None:
                from envs import make_env

                env = make_env(dataset.env_id)
                space = env.action_space
                action_low = np.asarray(space.low, dtype=np.float32)  # type: ignore[attr-defined]
                action_high = np.asarray(space.high, dtype=np.float32)  # type: ignore[attr-defined]
                env.close()
            else:
                actions = dataset._require_actions("action bounds")
                lo, hi = actions.min(0), actions.max(0)
                pad = np.maximum(1e-3, 0.05 * (hi - lo))  # labels never sit exactly on the tanh asymptote
                action_low, action_high = lo - pad, hi + pad
        return cls(dataset.obs_dim, dataset.action_dim, action_low, action_high, config, generator=generator)

    # ------------------------------------------------------------------------------------------ forward
    def _dist(self, windows: Tensor) -> tuple[Tensor, Tensor]:
        x = ((windows - self.obs_mean) / self.obs_std).reshape(windows.shape[0], -1)
        mean, log_std = self.net(x).chunk(2, dim=-1)
        return mean, log_std.clamp(self.config.min_log_std, self.config.max_log_std)

    @torch.no_grad()
    def predict_windows(self, windows: Tensor, chunk: int = 8192) -> Tensor:
        """Mean action ``[B, A]`` (env units) for state windows ``[B, 2k + 1, D]``."""
        self.net.eval()
        outs = []
        for i in range(0, windows.shape[0], chunk):
            mean, _ = self._dist(windows[i : i + chunk].to(self.device, torch.float32))
            outs.append(torch.tanh(mean) * self.scale + self.bias)
        return torch.cat(outs) if outs else torch.zeros(0, self.action_dim, device=self.device)

    def predict_action(self, obs: Tensor, next_obs: Tensor) -> Tensor:
        """``InverseDynamics`` capability: mean action ``[B, A]`` for ``obs [B, D] -> next_obs [B, D]``."""
        return self.predict_windows(pair_windows(obs, next_obs, self.config.context))

    def label(self, dataset: OfflineDataset) -> np.ndarray:
        """Mean-action proxy labels ``[N, A]`` (env units, float32) of every row, from episode windows."""
        if dataset.obs_dim != self.obs_dim:
            raise ValueError(f"{dataset.source}: obs_dim {dataset.obs_dim}, the IDM expects {self.obs_dim}")
        windows = torch.as_tensor(episode_windows(dataset, self.config.context))
        return self.predict_windows(windows).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------------------------------ learning
    def fit_normalizer(self, dataset: OfflineDataset) -> None:
        """Standardise inputs with the mean/std of ``dataset``'s states."""
        states = np.concatenate([dataset.observations, dataset.next_observations]).astype(np.float64)
        self.obs_mean = torch.as_tensor(states.mean(0), dtype=torch.float32, device=self.device)
        self.obs_std = torch.as_tensor(np.maximum(states.std(0), 1e-6), dtype=torch.float32, device=self.device)

    def update(self, windows: Tensor, actions: Tensor) -> Metrics:
        """One Adam step on the NLL of ``actions [B, A]`` (env units) given ``windows [B, 2k + 1, D]``."""
        self.net.train()
        target = (actions.to(self.device) - self.bias) / self.scale
        mean, log_std = self._dist(windows.to(self.device))
        loss = squashed_gaussian_nll(mean, log_std, target).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"nll": float(loss.detach())}

    @torch.no_grad()
    def evaluate(self, dataset: OfflineDataset) -> Metrics:
        """Held-out metrics on a labelled dataset: ``nll`` (per step), ``mse`` (mean action vs recorded, env
        units, averaged over dims), ``r2`` (mean over dims) and ``r2_<i>`` per action dim."""
        actions = dataset._require_actions("IDM evaluation")
        windows = torch.as_tensor(episode_windows(dataset, self.config.context), device=self.device)
        target_env = torch.as_tensor(actions, device=self.device)
        self.net.eval()
        nlls = []
        for i in range(0, len(windows), 8192):
            mean, log_std = self._dist(windows[i : i + 8192])
            nlls.append(squashed_gaussian_nll(mean, log_std, (target_env[i : i + 8192] - self.bias) / self.scale))
        pred = self.predict_windows(windows)
        return {"nll": float(torch.cat(nlls).mean()), **action_errors(pred.cpu().numpy(), actions)}

    def fit(self, dataset: OfflineDataset, rng: np.random.Generator) -> Metrics:
        """Train on a labelled dataset with an episode-level validation split; keep the best-validation weights.

        Args:
            dataset: labelled episodes (at least 2).
            rng: draws the validation episodes and the minibatch order.

        Returns:
            ``train_nll`` (last epoch), ``val_nll`` / ``val_mse`` / ``val_r2`` of the kept weights, ``best_epoch``,
            ``epochs``, ``time_s``.
        """
        c = self.config
        train, val = dataset.split_by_episode(c.holdout_fraction, rng)
        self.fit_normalizer(train)
        windows = torch.as_tensor(episode_windows(train, c.context), device=self.device)
        actions = torch.as_tensor(train._require_actions("IDM training"), device=self.device)
        t0 = time.perf_counter()
        # dropout draws from torch's global RNG: fork it and seed it from our generator (reproducible, and the
        # caller's global RNG state is left untouched)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
            best_state, best_epoch, epoch, train_nll = self._epochs(train, val, windows, actions, rng, t0)
        if best_state is not None:
            self.net.load_state_dict(best_state)
        final = self.evaluate(val)
        return {
            "train_nll": train_nll,
            "val_nll": final["nll"],
            "val_mse": final["mse"],
            "val_r2": final["r2"],
            "best_epoch": float(best_epoch),
            "epochs": float(epoch),
            "time_s": time.perf_counter() - t0,
        }

    def _epochs(
        self, train: OfflineDataset, val: OfflineDataset, windows: Tensor, actions: Tensor,
        rng: np.random.Generator, t0: float,
    ) -> tuple[dict[str, Any] | None, int, int, float]:
        c = self.config
        n = len(train)
        best = math.inf
        best_state: dict[str, Any] | None = None
        best_epoch, epoch, stale, train_nll = 0, 0, 0, math.nan
        for epoch in range(1, c.max_epochs + 1):
            perm = torch.as_tensor(rng.permutation(n), device=self.device)
            total = 0.0
            for i in range(0, n, c.batch_size):
                rows = perm[i : i + c.batch_size]
                total += self.update(windows[rows], actions[rows])["nll"] * len(rows)
            train_nll = total / n
            val_nll = self.evaluate(val)["nll"]
            if val_nll < best:
                best, best_epoch, stale = val_nll, epoch, 0
                best_state = copy.deepcopy(self.net.state_dict())
            else:
                stale += 1
            if (c.patience and stale >= c.patience) or (
                c.max_time_s is not None and time.perf_counter() - t0 > c.max_time_s
            ):
                break
        return best_state, best_epoch, epoch, train_nll

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Network, optimizer, input statistics and action bounds (tensors only)."""
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_mean": self.obs_mean,
            "obs_std": self.obs_std,
            "action_low": torch.as_tensor(self.action_low),
            "action_high": torch.as_tensor(self.action_high),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (bounds must match)."""
        missing = [k for k in ("net", "optimizer", "obs_mean", "obs_std") if k not in state]
        if missing:
            raise KeyError(f"InverseDynamicsModel.load_state_dict: missing entries {missing}")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_mean = torch.as_tensor(state["obs_mean"], device=self.device).float()
        self.obs_std = torch.as_tensor(state["obs_std"], device=self.device).float()

    def save(self, run_dir: str | Path, metrics: Metrics | None = None) -> Path:
        """Write ``run_dir/idm.pt`` (config, weights, dims, fit metrics) atomically."""
        extra = {"obs_dim": self.obs_dim, "action_dim": self.action_dim, "metrics": json.dumps(metrics or {})}
        return save_checkpoint(Path(run_dir) / IDM_FILE, config=self.config, state={"idm": self.state_dict()},
                               extra=extra)

    @classmethod
    def load(cls, run_dir: str | Path) -> InverseDynamicsModel:
        """Rebuild a model saved by :meth:`save` (``run_dir`` or the ``idm.pt`` file itself).

        Raises:
            FileNotFoundError: no ``idm.pt``.
        """
        from mbrl.run import config_from_dict

        path = Path(run_dir)
        if path.is_dir():
            path = path / IDM_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (not an IDM run directory; train one with mbrl train idm-label)")
        ckpt = load_checkpoint(path)
        state = ckpt.state["idm"]
        model = cls(
            int(ckpt.extra["obs_dim"]), int(ckpt.extra["action_dim"]),
            np.asarray(state["action_low"]), np.asarray(state["action_high"]),
            config_from_dict(IDMConfig, ckpt.config), generator=torch.Generator().manual_seed(0),
        )
        model.load_state_dict(state)
        return model


def action_errors(pred: np.ndarray, target: np.ndarray) -> Metrics:
    """``mse`` (mean over rows and dims), ``r2`` (mean over dims) and ``r2_<i>`` per dim of ``pred`` vs ``target``
    (``[N, A]``). ``R^2_i = 1 - SSE_i / SST_i``; a constant target dim gets ``nan``."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    sse = ((pred - target) ** 2).sum(0)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    out: Metrics = {"mse": float(((pred - target) ** 2).mean()), "r2": float(np.nanmean(r2)) if np.isfinite(r2).any() else math.nan}
    out.update({f"r2_{i}": float(v) for i, v in enumerate(r2)})
    return out
