"""``fit``: train any WorldModel on a dataset with a holdout split, early stopping and elite selection.

Follows MBPO's model training (Janner et al., 2019; its ``BNN.train``): a holdout set (20 %, at most 5000
rows), one bootstrap resample of the training rows per ensemble member drawn at the start of the call and
reshuffled every epoch, minibatches of 256, early stopping when no member improved its holdout MSE by more
than 1 % (relative) for ``patience`` epochs, each member's best weights kept and restored at the end, and the
``num_elites`` best members on holdout becoming the elites. Two differences: the holdout is split by whole
episodes (rows of one episode are strongly correlated, so a row split overstates generalisation), and the
weights the model had when ``fit`` was called count as a candidate (a warm start is never made worse on
holdout).

Works with any :class:`~mbrl.models.protocol.WorldModel` through ``update`` / ``evaluate`` and uses these
optional hooks when the model has them: ``fit_normalizer(batch)``, ``update_members(obs, action, reward,
next_obs)`` with ``num_members`` (per-member bootstrap batches ``[E, B, ...]``), ``member_losses(batch) ->
[E]`` with ``get_member_state(i)`` / ``set_member_state(i, state)`` (per-member best snapshots), and
``select_elites(batch)``. Other models get whole-model best snapshots (``state_dict`` copies).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from mbrl.checkpoint import load_progress, restore_rng, rng_state, save_checkpoint
from mbrl.data.dataset import OfflineDataset
from mbrl.models.protocol import WorldModel, is_single_pass
from mbrl.types import TransitionBatch


class _Logger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...


@dataclass(frozen=True)
class FitConfig:
    """How :func:`fit` trains (defaults: MBPO).

    Attributes:
        batch_size: rows per minibatch (per member).
        holdout_fraction: fraction of episodes (or of rows, see :func:`fit`) held out.
        max_holdout: at most this many holdout rows are used (a random subset; MBPO: 5000). ``None``: all.
        max_epochs: cap on epochs (one epoch = ``ceil(n_train / batch_size)`` minibatches). ``None``: no cap.
        max_time_s: wall-clock cap in seconds, checked after every minibatch. ``None``: no cap.
        patience: stop after this many consecutive epochs without a sufficient holdout improvement.
        min_improvement: an improvement counts when ``(best - loss) / |best| > min_improvement`` (MBPO: 0.01).
        bootstrap: members of an ensemble (``update_members``) train on their own resample with replacement;
            ``False``: every member sees the same shuffled rows.
        keep_best: restore the best holdout weights (per member when possible) at the end.
        checkpoint_every_s: with a ``checkpoint`` file, seconds between progress saves (0: every epoch).
    """

    batch_size: int = 256
    holdout_fraction: float = 0.2
    max_holdout: int | None = 5000
    max_epochs: int | None = 1000
    max_time_s: float | None = None
    patience: int = 5
    min_improvement: float = 0.01
    bootstrap: bool = True
    keep_best: bool = True
    checkpoint_every_s: float = 30.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.batch_size < 1:
            raise ValueError(f"FitConfig.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"FitConfig.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.max_holdout is not None and self.max_holdout < 1:
            raise ValueError(f"FitConfig.max_holdout must be >= 1 or None, got {self.max_holdout}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"FitConfig.max_epochs must be >= 1 or None, got {self.max_epochs}")
        if self.max_epochs is None and self.max_time_s is None and self.patience < 1:
            raise ValueError("FitConfig: with no max_epochs and no max_time_s, patience must be >= 1")
        if self.patience < 1:
            raise ValueError(f"FitConfig.patience must be >= 1, got {self.patience}")


@dataclass(frozen=True)
class FitReport:
    """What :func:`fit` did.

    Attributes:
        epochs: epochs run.
        updates: ``update`` / ``update_members`` calls made.
        train_loss: mean training loss of the last epoch (the model's ``update()["loss"]``).
        holdout_loss: holdout ``evaluate()["loss"]`` of the returned weights.
        holdout_mse: holdout ``evaluate()["mse"]`` of the returned weights (next_obs, env units).
        elites: elite members after selection (empty for models without ``select_elites``).
        time_s: wall-clock seconds.
        stopped_early: True when the patience rule ended training.
        stop_reason: ``"patience"``, ``"max_epochs"`` or ``"max_time"``.
        split: ``"episode"`` (whole episodes held out) or ``"row"`` (random rows: data with < 2 episodes,
            or a plain ``TransitionBatch``).
        n_train: training rows.
        n_holdout: holdout rows used.
        holdout_metrics: the full ``evaluate`` output on holdout for the returned weights.
    """

    epochs: int
    updates: int
    train_loss: float
    holdout_loss: float
    holdout_mse: float
    elites: tuple[int, ...]
    time_s: float
    stopped_early: bool
    stop_reason: str
    split: str
    n_train: int
    n_holdout: int
    holdout_metrics: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str = "model/") -> dict[str, float]:
        """Scalars for a logger, e.g. ``{"model/holdout_mse": ...}``."""
        return {
            f"{prefix}epochs": float(self.epochs),
            f"{prefix}train_loss": self.train_loss,
            f"{prefix}holdout_loss": self.holdout_loss,
            f"{prefix}holdout_mse": self.holdout_mse,
            f"{prefix}fit_time_s": self.time_s,
        }


def _with_next_state(data: OfflineDataset) -> TransitionBatch:
    """``data``'s rows whose ``next_observations`` is the true next state, as a batch."""
    batch = data.to_batch()
    known = data.known_next_obs()
    return batch if known.all() else batch.index(torch.from_numpy(np.flatnonzero(known)))


def split_holdout(
    data: OfflineDataset | TransitionBatch,
    holdout_fraction: float,
    rng: np.random.Generator,
    max_holdout: int | None = None,
) -> tuple[TransitionBatch, TransitionBatch, str]:
    """``(train, holdout, split)``: whole episodes held out when ``data`` has >= 2 episodes, else random rows.
    Rows of an ``OfflineDataset`` without a true next state (``next_obs_known`` False, e.g. a D4RL file's derived
    terminal row) are in neither: a dynamics model never fits or is scored on a placeholder.

    Raises:
        ValueError: fewer than 2 rows.
    """
    if len(data) < 2:
        raise ValueError(f"fit: need at least 2 transitions to hold some out, got {len(data)}")
    if isinstance(data, OfflineDataset) and data.n_episodes >= 2:
        train_ds, hold_ds = data.split_by_episode(holdout_fraction, rng)
        train, hold, split = _with_next_state(train_ds), _with_next_state(hold_ds), "episode"
    else:
        batch = _with_next_state(data) if isinstance(data, OfflineDataset) else data
        n = len(batch)
        n_hold = min(max(round(holdout_fraction * n), 1), n - 1)
        perm = torch.from_numpy(rng.permutation(n))
        train, hold, split = batch.index(perm[n_hold:]), batch.index(perm[:n_hold]), "row"
    if max_holdout is not None and len(hold) > max_holdout:
        keep = np.sort(rng.choice(len(hold), size=max_holdout, replace=False))
        hold = hold.index(torch.from_numpy(keep))
    return train, hold, split


def _improved(best: float, loss: float, min_improvement: float) -> bool:
    if not math.isfinite(loss):
        return False
    if not math.isfinite(best):
        return True
    if best == 0.0:
        return loss < 0.0
    return (best - loss) / abs(best) > min_improvement


def fit(
    model: WorldModel,
    data: OfflineDataset | TransitionBatch,
    config: FitConfig | None = None,
    *,
    rng: np.random.Generator,
    logger: _Logger | None = None,
    step_offset: int = 0,
    checkpoint: str | Path | None = None,
) -> FitReport:
    """Train ``model`` on ``data`` until the holdout loss stops improving (see the module docstring).

    Calling ``fit`` again continues from the current weights (warm start); the normaliser is refitted on the
    new training rows, as MBPO does.

    Args:
        model: any WorldModel.
        data: an ``OfflineDataset`` (episode split) or a ``TransitionBatch`` (row split; e.g.
            ``ReplayBuffer.all()``).
        config: training settings (default :class:`FitConfig`).
        rng: source of the split, bootstrap and shuffling.
        logger: if given, per-epoch ``model/train_loss``, ``model/holdout_loss``, ``model/holdout_mse``,
            ``model/epoch``, ``model/time`` are logged at step ``step_offset + epoch``.
        step_offset: logging step of epoch 0.
        checkpoint: a file where the fit's progress is saved atomically at the end of an epoch, at most every
            ``config.checkpoint_every_s`` seconds (model and optimizer, the epoch, the shuffled index matrix, the best
            weights so far, the patience counter, the RNG and the elapsed time). When the file exists, ``fit``
            continues from it: called again with ``rng`` in the state it had at the first call (a fresh run's
            generator, as after a restart), it gives the same result as an uninterrupted fit (without a time
            cap; with one, the remaining time continues). The caller removes the file once the fitted model is
            saved elsewhere.

    Returns:
        A :class:`FitReport`.

    Raises:
        ValueError: ``model`` is single-pass (``single_pass = True``, e.g. Losse-FTL): epochs over all data would
            feed it every transition many times; train it online (``model.update`` once per new transition).
    """
    if is_single_pass(model):
        raise ValueError(
            f"fit(): {type(model).__name__} is a single-pass model (single_pass=True): its update() accumulates "
            "every transition it sees, so epochs over all data would count each one many times; train it online "
            "(one model.update per new batch, e.g. DynaConfig(model_training='online'))"
        )
    config = config if config is not None else FitConfig()
    config.validate()
    start = time.monotonic()
    rng_at_start = rng_state(rng)["numpy"]
    train, hold, split = split_holdout(data, config.holdout_fraction, rng, config.max_holdout)
    device = getattr(model, "device", None)
    if isinstance(device, torch.device | str):
        train, hold = train.to(device), hold.to(device)
    n = len(train)

    fit_normalizer = getattr(model, "fit_normalizer", None)
    if callable(fit_normalizer):
        fit_normalizer(train)

    update_members = getattr(model, "update_members", None)
    num_members = int(getattr(model, "num_members", 1))
    member_mode = callable(update_members) and num_members >= 1
    member_losses: Callable[[TransitionBatch], Tensor] | None = getattr(model, "member_losses", None)
    get_member = getattr(model, "get_member_state", None)
    set_member = getattr(model, "set_member_state", None)
    per_member_best = (
        config.keep_best and callable(member_losses) and callable(get_member) and callable(set_member)
    )

    # Index matrix [E, N]: a bootstrap resample per member, drawn once (MBPO) and reshuffled every epoch.
    rows = num_members if member_mode else 1
    if member_mode and config.bootstrap:
        idx = rng.integers(0, n, size=(rows, n))
    else:
        idx = np.tile(np.arange(n), (rows, 1))

    # Baseline: the weights fit() was called with.
    best_member: list[float] = []
    member_snap: list[dict[str, Tensor] | None] = []
    best_loss = math.inf
    whole_snap: dict[str, Any] | None = None
    if per_member_best:
        assert member_losses is not None and get_member is not None
        best_member = [float(v) for v in member_losses(hold)]
        member_snap = [get_member(i) for i in range(num_members)]
    elif config.keep_best:
        best_loss = float(model.evaluate(hold)["loss"])
        whole_snap = copy.deepcopy(dict(model.state_dict()))

    epoch = updates = 0
    epochs_since = 0
    train_loss = math.nan
    stop_reason = "max_epochs"
    out_of_time = False
    path = Path(checkpoint) if checkpoint is not None else None
    identity = {"kind": "fit", "n_train": n, "n_holdout": len(hold), "rows": rows, "rng_at_start": rng_at_start,
                "config": dataclasses.asdict(config)}
    saved = load_progress(path, identity, "fit")
    if saved is not None:
        progress = dict(saved.state["fit"])
        model.load_state_dict(saved.state["model"])
        epoch, updates, epochs_since = int(progress["epoch"]), int(progress["updates"]), int(progress["epochs_since"])
        train_loss, best_loss = float(progress["train_loss"]), float(progress["best_loss"])
        idx = progress["idx"].numpy().copy()
        restore_rng({"numpy": progress["rng"]}, rng)
        start = time.monotonic() - float(progress["elapsed"])
        if per_member_best:
            best_member = [float(v) for v in progress["best_member"]]
            member_snap = [dict(saved.state["member_snap"][str(i)]) for i in range(num_members)]
        elif config.keep_best:
            whole_snap = dict(saved.state["whole_snap"])
    last_save = time.monotonic()

    def save_progress() -> None:
        assert path is not None
        state: dict[str, Any] = {
            "model": dict(model.state_dict()),
            "fit": {
                "epoch": epoch, "updates": updates, "epochs_since": epochs_since, "train_loss": train_loss,
                "best_loss": best_loss, "elapsed": time.monotonic() - start, "idx": torch.from_numpy(idx.copy()),
                "rng": rng_state(rng)["numpy"],
                "best_member": torch.tensor(best_member, dtype=torch.float64),
            },
            "member_snap": {str(i): snap for i, snap in enumerate(member_snap) if snap is not None},
            "whole_snap": whole_snap or {},
        }
        save_checkpoint(path, config=identity, state=state)

    while config.max_epochs is None or epoch < config.max_epochs:
        idx = rng.permuted(idx, axis=1)
        losses: list[float] = []
        for b0 in range(0, n, config.batch_size):
            sel = torch.from_numpy(idx[:, b0 : b0 + config.batch_size]).to(train.obs.device)
            if member_mode:
                assert update_members is not None
                metrics = update_members(train.obs[sel], train.action[sel], train.reward[sel], train.next_obs[sel])
            else:
                metrics = model.update(train.index(sel[0]))
            updates += 1
            if "loss" in metrics:
                losses.append(float(metrics["loss"]))
            if config.max_time_s is not None and time.monotonic() - start > config.max_time_s:
                out_of_time = True
                break
        epoch += 1
        train_loss = float(np.mean(losses)) if losses else math.nan

        improved = False
        if per_member_best:
            assert member_losses is not None and get_member is not None
            current = [float(v) for v in member_losses(hold)]
            for i, loss in enumerate(current):
                if _improved(best_member[i], loss, config.min_improvement):
                    best_member[i] = loss
                    member_snap[i] = get_member(i)
                    improved = True
            holdout_metrics = model.evaluate(hold)
            holdout_loss = float(np.mean(current))
        else:
            holdout_metrics = model.evaluate(hold)
            holdout_loss = float(holdout_metrics["loss"])
            if _improved(best_loss, holdout_loss, config.min_improvement):
                best_loss = holdout_loss
                improved = True
                if config.keep_best:
                    whole_snap = copy.deepcopy(dict(model.state_dict()))
        epochs_since = 0 if improved else epochs_since + 1
        if path is not None and not out_of_time and time.monotonic() - last_save >= config.checkpoint_every_s:
            save_progress()
            last_save = time.monotonic()

        if logger is not None:
            logger.log(
                {
                    "model/train_loss": train_loss,
                    "model/holdout_loss": holdout_loss,
                    "model/holdout_mse": float(holdout_metrics.get("mse", math.nan)),
                    "model/epoch": float(epoch),
                    "model/time": time.monotonic() - start,
                },
                step=step_offset + epoch,
            )
        if out_of_time:
            stop_reason = "max_time"
            break
        if epochs_since >= config.patience:
            stop_reason = "patience"
            break

    if per_member_best:
        assert set_member is not None
        for i, snap in enumerate(member_snap):
            if snap is not None:
                set_member(i, snap)
    elif config.keep_best and whole_snap is not None:
        model.load_state_dict(whole_snap)

    elites: tuple[int, ...] = ()
    select_elites = getattr(model, "select_elites", None)
    if callable(select_elites):
        elites = tuple(int(i) for i in select_elites(hold))
    final = {k: float(v) for k, v in model.evaluate(hold).items()}
    return FitReport(
        epochs=epoch,
        updates=updates,
        train_loss=train_loss,
        holdout_loss=final["loss"],
        holdout_mse=final.get("mse", math.nan),
        elites=elites,
        time_s=time.monotonic() - start,
        stopped_early=stop_reason == "patience",
        stop_reason=stop_reason,
        split=split,
        n_train=n,
        n_holdout=len(hold),
        holdout_metrics=final,
    )
