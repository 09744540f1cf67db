"""Inverse dynamics model (IDM): ``p(a_t | s_{t-k}, ..., s_t, s_{t+1}, ..., s_{t+f})``.

Follows SS-ORL (Zheng, Henaff, Amos & Grover, "Semi-Supervised Offline Reinforcement Learning with
Action-Free Trajectories", ICML 2023; arXiv 2210.06518) and its official code (facebookresearch/ssorl): an MLP
over a window of states, ``k`` past states, ``s_t`` and ``f`` future states (the paper's code: ``k =
num_past_transitions = 1`` and ``f = 1``, i.e. ``s_{t-1}, s_t, s_{t+1}``), outputs a diagonal Gaussian whose
samples are squashed by ``tanh`` into the action box; it is trained by maximum likelihood on the labelled
trajectories with a validation split and best-validation weights, and the proxy label of an unlabelled step is
the mean action ``tanh(mu)`` (with an ensemble: the average of the members' ``tanh(mu)``).

Windows are built within an episode; at the edges the boundary state is repeated (the window of ``t = 0``
starts with ``s_0`` repeated ``k`` times, the window of the last step ends with the final next state
repeated). An episode of ``T`` steps has states ``s_0..s_T`` (``observations`` then the last
``next_observations``). The reference code pads missing past states with zeros (before standardisation)
instead, and builds its windows from ``observations`` only, so its last step of an episode has no ``s_{t+1}``;
repeating the boundary state and using the recorded final ``next_observations`` avoids both.

Members (``num_members > 1``) are one module with stacked weights (:class:`mbrl.nn.EnsembleLinear`): one
batched matmul per layer for all members, each trained on its own bootstrap of the training rows.

Actions are env units at the boundary (targets, ``predict_action``, ``label``), ``[-1, 1]`` inside.
Inputs are standardised with the mean/std of all available states (labelled and, when given, unlabelled: the
reference code standardises with every trajectory's states; no label is used).

Implements the ``InverseDynamics`` capability (``predict_action(obs, next_obs)``): the window of a pair alone,
the missing past states repeating ``obs`` and the missing future states repeating ``next_obs`` (the same edge
rule as at an episode's start).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from mbrl.checkpoint import load_checkpoint, load_progress, restore_rng, rng_state, save_checkpoint
from mbrl.data.dataset import OfflineDataset
from mbrl.nn import EnsembleLinear
from mbrl.types import Metrics
from mbrl.utils import with_device

IDM_FILE = "idm.pt"
_EPS = 1e-6
_CHUNK = 8192


@dataclass(frozen=True)
class IDMConfig:
    """Hyperparameters of :class:`InverseDynamicsModel` and of its training. The defaults are the ``"paper"``
    preset (see :func:`idm_preset` for where each number comes from).

    Attributes:
        context: ``k``: past states in the window (``s_{t-k} .. s_{t-1}``); ``k >= 0``.
        future: ``f``: future states in the window (``s_{t+1} .. s_{t+f}``); ``f >= 1``.
        hidden: hidden width of the MLP(s).
        depth: number of hidden layers.
        dropout: dropout after the last hidden activation (training only; the reference code's placement).
        separate_std_net: two MLPs per member, one for the mean and one for the log std (the reference code);
            False: one MLP with ``2A`` outputs.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: minibatch size (per member).
        max_steps: stop after this many gradient steps (``None``: no step limit).
        max_epochs: stop after this many passes over the training rows (``None``: no epoch limit).
        val_every: validate after step 1 and every ``val_every`` steps (``None``: after every epoch); the
            weights with the best validation NLL are kept (per member).
        patience: stop after this many validations in a row without a better NLL for any member (0: never).
        min_steps: no early stop (``patience``) before this many gradient steps. On a small labelled set an
            epoch is a handful of steps and the validation NLL is noisy; without it the CPU preset stopped
            Hopper's IDM after 48 steps (held-out R² -0.36; 1600 steps: 0.54).
        holdout_fraction: fraction of the labelled episodes held out for validation (checkpoint selection).
        max_time_s: wall-clock budget of ``fit`` (``None``: none).
        min_log_std: lower bound of the pre-tanh log standard deviation (``tanh``-rescaled into the bounds).
        max_log_std: upper bound of the pre-tanh log standard deviation.
        num_members: ``E`` independently initialised members; the label is the mean of their mean actions.
        bootstrap: with ``E > 1``, each member trains on its own bootstrap resample of the training rows
            (False: every member sees all rows, in its own order, as the reference code's ensemble).
        device: ``"cpu"`` or ``"cuda"``.
    """

    context: int = 1
    future: int = 1
    hidden: int = 1024
    depth: int = 2
    dropout: float = 0.1
    separate_std_net: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 1024
    max_steps: int | None = 100
    max_epochs: int | None = None
    val_every: int | None = 10
    patience: int = 0
    min_steps: int = 0
    holdout_fraction: float = 0.1
    max_time_s: float | None = None
    min_log_std: float = -5.0
    max_log_std: float = 2.0
    num_members: int = 1
    bootstrap: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.context < 0 or self.future < 1:
            raise ValueError(f"IDMConfig: context must be >= 0 and future >= 1, got {self.context}, {self.future}")
        if self.hidden < 1 or self.depth < 1 or self.batch_size < 1 or self.num_members < 1:
            raise ValueError("IDMConfig: hidden, depth, batch_size and num_members must be >= 1")
        if self.max_steps is None and self.max_epochs is None:
            raise ValueError("IDMConfig: give max_steps or max_epochs (or both)")
        if (self.max_steps is not None and self.max_steps < 1) or (self.max_epochs is not None and self.max_epochs < 1):
            raise ValueError("IDMConfig: max_steps and max_epochs must be >= 1")
        if self.val_every is not None and self.val_every < 1:
            raise ValueError(f"IDMConfig: val_every must be >= 1 or None, got {self.val_every}")
        if not 0.0 <= self.dropout < 1.0 or self.lr <= 0 or self.patience < 0 or self.weight_decay < 0:
            raise ValueError("IDMConfig: dropout in [0, 1), lr > 0, patience >= 0, weight_decay >= 0")
        if self.min_steps < 0:
            raise ValueError(f"IDMConfig.min_steps must be >= 0, got {self.min_steps}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"IDMConfig: holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.min_log_std >= self.max_log_std:
            raise ValueError("IDMConfig: min_log_std must be < max_log_std")

    @property
    def window(self) -> int:
        """States per window: ``k + 1 + f``."""
        return self.context + 1 + self.future


def idm_preset(preset: Literal["paper", "cpu", "quick"] = "paper", **overrides: Any) -> IDMConfig:
    """Named IDM configurations (``overrides`` replace fields last).

    ``"paper"`` (= ``IDMConfig()``): SS-ORL's IDM. The paper's own text (method section and appendix) could not be
    retrieved while writing this (only its abstract); every number below is from the authors' official code,
    facebookresearch/ssorl at commit f1e7a16:

    - ``config/config.yaml``, block ``inverse_model``: ``num_past_transitions: 1`` (``context=1``; the input is
      ``num_past_transitions + 2`` states, so ``future=1``), ``hidden_dims: [1024, 1024]`` (``hidden=1024,
      depth=2``), ``dropout: 0.1``, ``lr: 0.0001``, ``batch_size: 1024``, ``total_train_iters: 100``
      (``max_steps=100``), ``validation_perc: 0.1`` (``holdout_fraction``, whole trajectories),
      ``ensemble_size: 1`` (``num_members=1``), ``spectral_norms: [False, False]`` (none);
    - ``model/mlp.py`` (``DiagGaussianDistribution``, ``SquashedNormal``): a Gaussian, not a deterministic
      regressor; separate ReLU MLPs for the mean and the log std (``separate_std_net``), one dropout layer after
      the last hidden activation, log std = ``tanh`` rescaled into ``[-5, 2]``, orthogonal weights and zero
      biases, tanh-squashed likelihood;
    - ``inverse_model_seq.py``: Adam without weight decay (``weight_decay=0``), validation NLL at step 1 and
      every 10 steps (``val_every=10``), best-validation weights kept, no early stop (``patience=0``); ensemble
      members train on the same trajectories (``bootstrap=False`` reproduces that) and the label is the mean of
      the members' ``tanh(mu)``, clipped to the action range.

    Not confirmed: whether the paper's reported runs override these config defaults (the 100-step training
    length in particular) could not be checked against the paper's text.

    ``"cpu"``: our CPU budget, not the paper's: 2 x 256, Adam 1e-3 (weight decay 1e-4), batch 256, validation
    every epoch, at most 200 epochs (patience 5, not before 2000 steps) or 5 minutes. ``"quick"``: 2 x 64,
    5 epochs (smoke tests).
    """
    if preset == "paper":
        base = IDMConfig()
    elif preset == "cpu":
        base = IDMConfig(hidden=256, lr=1e-3, weight_decay=1e-4, batch_size=256, max_steps=None, max_epochs=200,
                         val_every=None, patience=5, min_steps=2000, max_time_s=300.0)
    elif preset == "quick":
        base = IDMConfig(hidden=64, lr=1e-3, batch_size=256, max_steps=None, max_epochs=5, val_every=None,
                         patience=0, max_time_s=30.0)
    else:
        raise ValueError(f"idm_preset: unknown preset {preset!r} (paper, cpu, quick)")
    return replace(base, **overrides)


def episode_windows(dataset: OfflineDataset, context: int, future: int = 1) -> np.ndarray:
    """``[N, k + 1 + f, D]`` state windows of every row, built within episodes (edge states repeated).

    Row ``t`` of an episode with states ``s_0..s_T`` gets ``s_{clip(t + j, 0, T)}`` for ``j = -k..f``. When the
    episode's last ``next_observations`` is not a true next state (``dataset.known_next_obs()`` False, e.g. a
    terminal row derived from a D4RL file: it holds the next episode's reset state), the episode's states stop
    at ``s_{T-1}`` and that edge state is repeated instead: a window never crosses into another episode.
    """
    out = np.empty((len(dataset), context + 1 + future, dataset.obs_dim), dtype=np.float32)
    offsets = np.arange(-context, future + 1)
    known = dataset.known_next_obs()
    for start, stop in dataset.episode_slices():
        states = dataset.observations[start:stop]
        if known[stop - 1]:
            states = np.concatenate([states, dataset.next_observations[stop - 1 : stop]])
        t = np.arange(stop - start)[:, None]
        out[start:stop] = states[np.clip(t + offsets[None, :], 0, len(states) - 1)]
    return out


def target_rows(dataset: OfflineDataset) -> np.ndarray:
    """Rows usable as inverse-dynamics targets: those whose next state is known (the action's effect is seen)."""
    return np.flatnonzero(dataset.known_next_obs())


def pair_windows(obs: Tensor, next_obs: Tensor, context: int, future: int = 1) -> Tensor:
    """``[B, k + 1 + f, D]`` windows from ``(s_t, s_{t+1})`` alone: ``k + 1`` copies of ``obs`` (``s_t`` is the
    ``k+1``-th state) then ``f`` of ``next_obs``, i.e. the edge rule with no other context."""
    return torch.cat([obs.unsqueeze(1).expand(-1, context + 1, -1), next_obs.unsqueeze(1).expand(-1, future, -1)], 1)


class StackedMLP(nn.Module):
    """``N`` independent ReLU MLPs ``in -> hidden x depth -> out`` as stacked :class:`EnsembleLinear` layers.

    Dropout (independent masks per net) follows the last hidden activation only, as in SS-ORL's ``mlp``; weights
    are orthogonal and biases zero (the reference code's init), drawn from ``generator``.

    Input ``[B, in]`` (broadcast to every net) or ``[N, B, in]``; output ``[N, B, out]``.
    """

    def __init__(
        self, num_nets: int, in_dim: int, out_dim: int, hidden: int, depth: int, dropout: float,
        *, generator: torch.Generator,
    ) -> None:
        super().__init__()
        widths = [in_dim] + [hidden] * depth
        self.hidden_layers = nn.ModuleList(
            EnsembleLinear(num_nets, a, b, generator=generator) for a, b in itertools.pairwise(widths)
        )
        self.output_layer = EnsembleLinear(num_nets, hidden, out_dim, generator=generator)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        with torch.no_grad():
            for layer in self.layers:
                for weight in layer.weight:  # [in, out] of one net
                    nn.init.orthogonal_(weight, generator=generator)
                layer.bias.zero_()

    @property
    def layers(self) -> list[EnsembleLinear]:
        """The hidden layers, then the output layer."""
        return [*(cast(EnsembleLinear, m) for m in self.hidden_layers), self.output_layer]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden_layers:
            x = torch.relu(layer(x))
        return self.output_layer(self.dropout(x))  # type: ignore[no-any-return]


def squashed_gaussian_nll(mean: Tensor, log_std: Tensor, target: Tensor) -> Tensor:
    """``-log p(target)`` per row ``[...]`` of a tanh-squashed diagonal Gaussian; ``target [..., A]`` in ``(-1, 1)``.

    ``log p(a) = log N(atanh(a); mean, std) - sum log(1 - a^2)`` (change of variables through tanh).
    """
    a = target.clamp(-1 + _EPS, 1 - _EPS)
    u = torch.atanh(a)
    z = (u - mean) * torch.exp(-log_std)
    log_normal = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    return -(log_normal - torch.log1p(-a.pow(2))).sum(-1)


class InverseDynamicsModel:
    """SS-ORL's inverse dynamics model (see the module docstring), optionally an ensemble of ``E`` members.

    Args:
        obs_dim: ``D``.
        action_dim: ``A``.
        action_low: ``[A]`` finite lower bounds (env units).
        action_high: ``[A]`` finite upper bounds.
        config: hyperparameters.
        generator: initialisation and dropout masks come from it; bootstrap, validation split and minibatch
            order from ``fit``'s rng.
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
        self.num_members = c.num_members
        self.generator = generator
        # separate mean / log-std nets: nets [0, E) give the means, [E, 2E) the log stds of members 0..E-1
        nets = c.num_members * (2 if c.separate_std_net else 1)
        out = self.action_dim if c.separate_std_net else 2 * self.action_dim
        self.net = StackedMLP(nets, c.window * self.obs_dim, out, c.hidden, c.depth, c.dropout, generator=generator)
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
                from mbrl.gym_env import make_seeded

                env = make_seeded(dataset.env_id)
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
        """Pre-tanh ``(mean, log_std)``, each ``[E, B, A]``, for windows ``[B, W, D]`` (all members) or
        ``[E, B, W, D]`` (one batch per member)."""
        x = ((windows - self.obs_mean) / self.obs_std).flatten(-2)
        e = self.num_members
        if self.config.separate_std_net:
            if x.ndim == 3:
                x = torch.cat([x, x])  # the mean net and the log-std net of member i see the same rows
            out = self.net(x)
            mean, raw = out[:e], out[e:]
        else:
            mean, raw = self.net(x).chunk(2, dim=-1)
        lo, hi = self.config.min_log_std, self.config.max_log_std
        return mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0)

    @torch.no_grad()
    def predict_windows(self, windows: Tensor, chunk: int = _CHUNK) -> Tensor:
        """Mean action ``[B, A]`` (env units) for state windows ``[B, k + 1 + f, D]``: the average over members
        of ``tanh(mu)``, mapped to the action box."""
        self.net.eval()
        outs = []
        for i in range(0, windows.shape[0], chunk):
            mean, _ = self._dist(windows[i : i + chunk].to(self.device, torch.float32))
            outs.append(torch.tanh(mean).mean(0) * self.scale + self.bias)
        return torch.cat(outs) if outs else torch.zeros(0, self.action_dim, device=self.device)

    def predict_action(self, obs: Tensor, next_obs: Tensor) -> Tensor:
        """``InverseDynamics`` capability: mean action ``[B, A]`` for ``obs [B, D] -> next_obs [B, D]``."""
        return self.predict_windows(pair_windows(obs, next_obs, self.config.context, self.config.future))

    def windows(self, dataset: OfflineDataset) -> np.ndarray:
        """``[N, k + 1 + f, D]`` episode windows of ``dataset`` for this model's context."""
        if dataset.obs_dim != self.obs_dim:
            raise ValueError(f"{dataset.source}: obs_dim {dataset.obs_dim}, the IDM expects {self.obs_dim}")
        return episode_windows(dataset, self.config.context, self.config.future)

    def label(self, dataset: OfflineDataset) -> np.ndarray:
        """Mean-action proxy labels ``[N, A]`` (env units, float32) of every row, from episode windows."""
        windows = torch.as_tensor(self.windows(dataset))
        return self.predict_windows(windows).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------------------------------ learning
    def fit_normalizer(self, *datasets: OfflineDataset | None) -> None:
        """Standardise inputs with the mean/std of the states of ``datasets`` (``None`` entries skipped)."""
        parts = [s for d in datasets if d is not None for s in (d.observations, d.next_observations)]
        if not parts:
            raise ValueError("fit_normalizer: no dataset given")
        states = np.concatenate(parts).astype(np.float64)
        self.obs_mean = torch.as_tensor(states.mean(0), dtype=torch.float32, device=self.device)
        self.obs_std = torch.as_tensor(np.maximum(states.std(0), 1e-6), dtype=torch.float32, device=self.device)

    def update(self, windows: Tensor, actions: Tensor) -> Metrics:
        """One Adam step on the NLL of ``actions`` (env units) given ``windows``.

        ``windows [B, W, D]`` with ``actions [B, A]`` (every member on the same rows) or ``windows [E, B, W, D]``
        with ``actions [E, B, A]`` (member ``i`` on its own rows). The loss is the sum over members of each
        member's mean NLL, so members do not share gradients. Returns ``nll`` averaged over members.
        """
        self.net.train()
        target = (actions.to(self.device) - self.bias) / self.scale
        mean, log_std = self._dist(windows.to(self.device))
        per_member = squashed_gaussian_nll(mean, log_std, target).mean(-1)  # [E]
        self.optimizer.zero_grad(set_to_none=True)
        per_member.sum().backward()
        self.optimizer.step()
        return {"nll": float(per_member.detach().mean())}

    @torch.no_grad()
    def member_nll(self, windows: Tensor, actions: Tensor) -> Tensor:
        """Per-member mean NLL ``[E]`` of ``actions [B, A]`` (env units) given ``windows [B, W, D]`` (eval mode)."""
        self.net.eval()
        total = torch.zeros(self.num_members, device=self.device)
        for i in range(0, windows.shape[0], _CHUNK):
            mean, log_std = self._dist(windows[i : i + _CHUNK].to(self.device))
            target = (actions[i : i + _CHUNK].to(self.device) - self.bias) / self.scale
            total += squashed_gaussian_nll(mean, log_std, target).sum(-1)
        return total / max(windows.shape[0], 1)

    def evaluate(self, dataset: OfflineDataset) -> Metrics:
        """Held-out metrics on a labelled dataset: ``nll`` (per step, averaged over members), ``mse`` (label vs
        recorded action, env units, averaged over dims), ``r2`` (mean over dims) and ``r2_<i>`` per action dim."""
        rows = target_rows(dataset)
        actions = dataset._require_actions("IDM evaluation")[rows]
        windows = torch.as_tensor(self.windows(dataset)[rows], device=self.device)
        nll = self.member_nll(windows, torch.as_tensor(actions, device=self.device))
        pred = self.predict_windows(windows)
        return {"nll": float(nll.mean()), **action_errors(pred.cpu().numpy(), actions)}

    def fit(
        self,
        dataset: OfflineDataset,
        rng: np.random.Generator,
        *,
        unlabelled: OfflineDataset | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every_s: float = 30.0,
    ) -> Metrics:
        """Train on a labelled dataset with an episode-level validation split; keep each member's best weights.

        Args:
            dataset: labelled episodes (at least 2).
            rng: draws the validation episodes, the members' bootstrap samples and the minibatch order.
            unlabelled: action-free episodes whose states join the input standardisation (optional).
            checkpoint: a file where the training's progress is saved atomically at the end of an epoch, at most
                every ``checkpoint_every_s`` seconds (weights, optimizer, best weights so far, counters, RNG
                states). If it exists, training continues from it and ends as an uninterrupted fit would (same
                data, seed and config; else a ``ValueError`` names it). The caller removes it.
            checkpoint_every_s: seconds between progress saves (0: every epoch).

        Returns:
            ``train_nll`` (mean over the last epoch's steps), ``val_nll`` / ``val_mse`` / ``val_r2`` of the kept
            weights, ``best_step`` (latest best step over members), ``steps``, ``epochs``, ``time_s``.
        """
        c = self.config
        train, val = dataset.split_by_episode(c.holdout_fraction, rng)
        self.fit_normalizer(dataset, unlabelled)
        # Rows without a true next state (a derived D4RL terminal row) are never targets.
        rows, val_rows = target_rows(train), target_rows(val)
        windows = torch.as_tensor(self.windows(train)[rows], device=self.device)
        actions = torch.as_tensor(train._require_actions("IDM training")[rows], device=self.device)
        val_windows = torch.as_tensor(self.windows(val)[val_rows], device=self.device)
        val_actions = torch.as_tensor(val._require_actions("IDM validation")[val_rows], device=self.device)
        n, e = len(rows), self.num_members
        if e > 1 and c.bootstrap:
            pools = rng.integers(0, n, size=(e, n))  # member i trains on its own resample of the rows
        else:
            pools = np.tile(np.arange(n), (e, 1))
        t0 = time.perf_counter()
        # dropout draws from torch's global RNG: fork it and seed it from our generator (reproducible, and the
        # caller's global RNG state is left untouched)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
            progress = None if checkpoint is None else (Path(checkpoint), checkpoint_every_s)
            out = self._train(windows, actions, val_windows, val_actions, pools, rng, t0, progress)
        final = self.evaluate(val)
        return {"val_nll": final["nll"], "val_mse": final["mse"], "val_r2": final["r2"], **out,
                "time_s": time.perf_counter() - t0}

    def _train(
        self, windows: Tensor, actions: Tensor, val_windows: Tensor, val_actions: Tensor, pools: np.ndarray,
        rng: np.random.Generator, t0: float, progress: tuple[Path, float] | None = None,
    ) -> Metrics:
        c = self.config
        e, n = pools.shape
        best_nll = torch.full((e,), math.inf, device=self.device)
        best_step = np.zeros(e, dtype=np.int64)
        best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        step = epoch = stale = 0
        validated_at = -1
        epoch_nll: list[float] = []
        identity = {"kind": "idm_fit", "rows": n, "members": e, "val_rows": len(val_actions),
                    "config": asdict(c)}
        path, every_s = progress if progress is not None else (None, 0.0)
        saved = load_progress(path, identity, "IDM fit")
        if saved is not None:
            self.net.load_state_dict(saved.state["net"])
            self.optimizer.load_state_dict(saved.state["optimizer"])
            best_state = {k: v.clone() for k, v in saved.state["best"].items()}
            st = saved.state["progress"]
            step, epoch, stale, validated_at = (int(st[k]) for k in ("step", "epoch", "stale", "validated_at"))
            best_nll = st["best_nll"].to(self.device).clone()
            best_step = st["best_step"].numpy().copy()
            epoch_nll = [float(v) for v in st["epoch_nll"].tolist()]
            restore_rng({"numpy": st["rng"]}, rng)
            torch.set_rng_state(st["torch_rng"])  # dropout's stream (the forked global RNG)
            t0 = time.perf_counter() - float(st["elapsed"])
        last_save = time.perf_counter()

        def save_progress() -> None:
            assert path is not None
            save_checkpoint(path, config=identity, state={
                "net": dict(self.net.state_dict()), "optimizer": self.optimizer.state_dict(), "best": best_state,
                "progress": {
                    "step": step, "epoch": epoch, "stale": stale, "validated_at": validated_at,
                    "best_nll": best_nll.cpu(), "best_step": torch.from_numpy(best_step.copy()),
                    "epoch_nll": torch.tensor(epoch_nll, dtype=torch.float64),
                    "rng": rng_state(rng)["numpy"], "torch_rng": torch.get_rng_state(),
                    "elapsed": time.perf_counter() - t0,
                },
            })

        def validate() -> None:
            nonlocal stale, validated_at
            validated_at = step
            nll = self.member_nll(val_windows, val_actions)
            better = nll < best_nll
            if not bool(better.any()):
                stale += 1
                return
            stale = 0
            best_nll[better] = nll[better]
            best_step[better.cpu().numpy()] = step
            nets = torch.cat([better, better]) if c.separate_std_net else better  # rows of the stacked weights
            for name, value in self.net.state_dict().items():
                best_state[name][nets] = value.detach()[nets]

        def out_of_budget() -> bool:
            return (
                (c.max_steps is not None and step >= c.max_steps)
                or (c.patience > 0 and stale >= c.patience and step >= c.min_steps)
                or (c.max_time_s is not None and time.perf_counter() - t0 > c.max_time_s)
            )

        done = False
        while not done:
            epoch += 1
            # an independent order per member over its own pool of rows
            order = np.take_along_axis(pools, np.argsort(rng.random((e, n)), axis=1), axis=1)
            epoch_nll = []
            for i in range(0, n, c.batch_size):
                rows = torch.as_tensor(order[:, i : i + c.batch_size], device=self.device)  # [E, b]
                epoch_nll.append(self.update(windows[rows], actions[rows])["nll"])
                step += 1
                if c.val_every is not None and (step == 1 or step % c.val_every == 0):
                    validate()
                if out_of_budget():
                    done = True
                    break
            if c.val_every is None and validated_at != step:
                validate()
            done = done or out_of_budget() or (c.max_epochs is not None and epoch >= c.max_epochs)
            if path is not None and not done and time.perf_counter() - last_save >= every_s:
                save_progress()
                last_save = time.perf_counter()
        if validated_at != step:  # the final weights are always a candidate
            validate()
        self.net.load_state_dict(best_state)
        return {"train_nll": float(np.mean(epoch_nll)), "best_step": float(best_step.max()),
                "steps": float(step), "epochs": float(epoch)}

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
    def load(cls, run_dir: str | Path, *, device: str | None = None) -> InverseDynamicsModel:
        """Rebuild a model saved by :meth:`save` (``run_dir`` or the ``idm.pt`` file itself).

        Raises:
            FileNotFoundError: no ``idm.pt``.
        """
        return cls.load_with_metrics(run_dir, device=device)[0]

    @classmethod
    def load_with_metrics(
        cls, run_dir: str | Path, *, device: str | None = None
    ) -> tuple[InverseDynamicsModel, Metrics]:
        """:meth:`load` (on ``device`` when given, else the stored config's), plus the fit metrics stored with the
        model (``{}`` when none)."""
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
            with_device(config_from_dict(IDMConfig, ckpt.config), device),
            generator=torch.Generator().manual_seed(0),
        )
        model.load_state_dict(state)
        metrics = {k: float(v) for k, v in json.loads(str(ckpt.extra.get("metrics", "{}"))).items()}
        return model, metrics


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
