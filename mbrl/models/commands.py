"""``mbrl model train`` and ``mbrl model eval``.

A saved model is a checkpoint (``mbrl.checkpoint``) whose config holds ``{"model": model_spec(...), ...}`` and
whose state holds ``{"model": model.state_dict()}``; :func:`load_model` rebuilds it. Agents that own a
``ProbabilisticEnsemble`` can store :func:`model_spec` under ``"model"`` in their config to make their
checkpoints readable by ``mbrl model eval``.
"""

from __future__ import annotations

import dataclasses
import json as json_lib
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, FitReport
from mbrl.models.fit import fit as run_fit
from mbrl.models.quality import calibration, k_step_error, one_step_error
from mbrl.utils import with_device

MODEL_FILE = "model.pt"
FIT_PROGRESS_FILE = "fit_progress.pt"


def model_spec(model: ProbabilisticEnsemble, seed: int = 0) -> dict[str, Any]:
    """What :func:`load_model` needs to rebuild ``model`` (JSON-able)."""
    return {
        "class": "ProbabilisticEnsemble",
        "obs_dim": model.obs_dim,
        "action_dim": model.action_dim,
        "seed": seed,
        "config": dataclasses.asdict(model.config),
    }


def _resolve(path: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            return p / MODEL_FILE
        from mbrl.checkpoint import latest_checkpoint

        latest = latest_checkpoint(p)
        if latest is not None:
            return latest
        raise FileNotFoundError(f"{p}: no {MODEL_FILE} and no checkpoints/ckpt_*.pt in this directory")
    raise FileNotFoundError(f"{p}: no such file or directory")


def load_model(path: str, *, device: str = "auto") -> ProbabilisticEnsemble:
    """Rebuild the model saved at ``path`` (a checkpoint file, or a run directory holding ``model.pt`` or
    ``checkpoints/``).

    Raises:
        FileNotFoundError: nothing to load at ``path``.
        ValueError: the checkpoint holds no ``"model"`` spec/state or another model class.
    """
    from mbrl.checkpoint import load_checkpoint

    file = _resolve(path)
    ckpt = load_checkpoint(file)
    spec = ckpt.config.get("model")
    if not isinstance(spec, dict) or "config" not in spec:
        raise ValueError(f"{file}: config has no 'model' spec (was it written by `mbrl model train`?)")
    if spec.get("class") != "ProbabilisticEnsemble":
        raise ValueError(f"{file}: model class {spec.get('class')!r} is not supported by this command")
    if "model" not in ckpt.state:
        raise ValueError(f"{file}: state has no 'model' entry")
    raw = dict(spec["config"])
    if raw.get("weight_decay") is not None:
        raw["weight_decay"] = tuple(raw["weight_decay"])
    raw["device"] = device
    try:
        config = EnsembleConfig(**raw)
    except TypeError as exc:
        raise ValueError(f"{file}: model config does not match EnsembleConfig ({exc})") from None
    model = ProbabilisticEnsemble(int(spec["obs_dim"]), int(spec["action_dim"]), config, seed=int(spec.get("seed", 0)))
    model.load_state_dict(ckpt.state["model"])
    return model


def load_ensemble(model_dir: str, *, full_info: bool) -> ProbabilisticEnsemble:
    """The ensemble ``mbrl model train`` saved in ``model_dir``, rebuilt with ``full_info`` set as the agent
    needs (MOPO's penalty reads every member; RAVL's rollouts use one elite per row), weights unchanged."""
    from dataclasses import replace

    saved = load_model(model_dir)
    model = ProbabilisticEnsemble(saved.obs_dim, saved.action_dim, replace(saved.config, full_info=full_info))
    model.load_state_dict(saved.state_dict())
    return model


def fit_and_save(
    model: ProbabilisticEnsemble,
    data: Any,
    fit: FitConfig,
    run_dir: Path,
    *,
    seed: int,
    rng: np.random.Generator,
    dataset: str,
    log_dir: Path | None = None,
    console_keys: list[str] | None = None,
    verbose: bool = True,
) -> FitReport:
    """Fit ``model`` on ``data`` with its progress in ``run_dir/fit_progress.pt`` (continued when the file is
    there: the per-epoch log in ``log_dir``, default ``run_dir``, drops the rows after its epoch), then save
    ``run_dir/model.pt`` (readable by :func:`load_model`) and remove the progress file. ``console_keys``: show
    the fit's progress bar with these keys (``None``: no bar); ``verbose``: say when a fit is continued."""
    from mbrl.checkpoint import load_checkpoint, save_checkpoint
    from mbrl.logging import Logger

    progress = run_dir / FIT_PROGRESS_FILE
    resume_step = None
    if progress.is_file():
        resume_step = int(load_checkpoint(progress).state["fit"]["epoch"])
        if verbose:
            print(f"continuing the fit from {progress} (epoch {resume_step})", flush=True)
    with Logger(log_dir or run_dir, desc="model fit", console=console_keys is not None,
                console_keys=console_keys, resume_step=resume_step) as logger:
        report = run_fit(model, data, fit, rng=rng, logger=logger, checkpoint=progress)
    save_checkpoint(
        run_dir / MODEL_FILE,
        config={
            "model": model_spec(model, seed),
            "fit": dataclasses.asdict(fit),
            "dataset": dataset,
            "env_id": data.env_id,
        },
        state={"model": model.state_dict()},
        extra={"report": {k: v for k, v in dataclasses.asdict(report).items() if k != "holdout_metrics"}},
    )
    progress.unlink(missing_ok=True)
    return report


def train_model(
    dataset: str,
    /,
    run_dir: str,
    *,
    env_id: Annotated[str | None, tyro.conf.arg(name="env")] = None,
    ensemble: EnsembleConfig = EnsembleConfig(),  # noqa: B008 (frozen dataclass default, read by tyro)
    fit: FitConfig = FitConfig(),  # noqa: B008
    seed: int = 0,
    threads: int = 1,
    device: str | None = None,
) -> int:
    """Fit a probabilistic ensemble on a dataset and save it to RUN_DIR/model.pt.

    The fit saves its progress to RUN_DIR/fit_progress.pt (every ``fit.checkpoint_every_s``); the same command
    run again after an interruption continues the fit from there.

    Args:
        dataset: dataset file (.hdf5 / .npz) or Minari id.
        run_dir: output directory (model.pt, progress.csv, TensorBoard events).
        env_id: gymnasium id of the data (checks dims; needed when the file does not record it).
        ensemble: model hyperparameters.
        fit: training settings.
        seed: weight init, holdout split and bootstrap seed.
        threads: torch intra-op threads.
        device: the device of the ensemble (cpu, cuda, auto = cuda when available; default: ensemble.device).
    """
    from mbrl.data.io import load_dataset
    from mbrl.utils import set_threads

    set_threads(threads)
    data = load_dataset(dataset, env_id=env_id)
    ensemble = with_device(ensemble, device)
    model = ProbabilisticEnsemble(data.obs_dim, data.action_dim, ensemble, seed=seed)
    report = fit_and_save(
        model, data, fit, Path(run_dir), seed=seed, rng=np.random.default_rng(seed), dataset=dataset,
        console_keys=["model/holdout_loss", "model/holdout_mse"],
    )
    out = Path(run_dir) / MODEL_FILE
    print(
        f"fitted {model!r}\n  epochs {report.epochs} ({report.stop_reason}), {report.time_s:.1f} s, "
        f"split by {report.split}: {report.n_train} train / {report.n_holdout} holdout rows\n"
        f"  holdout loss {report.holdout_loss:.4g}, holdout next_obs MSE {report.holdout_mse:.4g}, "
        f"elites {list(report.elites)}\nsaved {out}"
    )
    return 0


def eval_model(
    run_or_checkpoint: str,
    /,
    dataset: str,
    *,
    env_id: Annotated[str | None, tyro.conf.arg(name="env")] = None,
    horizons: tuple[int, ...] = (1, 5, 10, 20),
    max_windows: int = 1000,
    true_dynamics: bool = False,
    json: bool = False,
    plot: str | None = None,
    threads: int = 1,
    device: str = "auto",
) -> int:
    """Print a saved model's one-step error, k-step open-loop error and calibration on a dataset.

    Args:
        run_or_checkpoint: checkpoint file, or run directory with model.pt (or checkpoints/).
        dataset: held-out data: dataset file (.hdf5 / .npz) or Minari id.
        env_id: gymnasium id of the data, when the file does not record it.
        horizons: open-loop horizons (steps).
        max_windows: start states for the k-step error (evenly spaced over the data).
        true_dynamics: also measure k-step error against the MuJoCo simulator (TrueDynamicsModel).
        json: print one JSON object instead of a table.
        plot: write a PNG of error vs horizon to this path.
        threads: torch intra-op threads.
        device: where the model runs (cpu, cuda, auto = cuda when available).
    """
    from mbrl.data.io import load_dataset
    from mbrl.utils import set_threads

    set_threads(threads)
    model = load_model(run_or_checkpoint, device=device)
    data = load_dataset(dataset, env_id=env_id)
    if data.obs_dim != model.obs_dim or not data.has_actions or data.action_dim != model.action_dim:
        raise ValueError(
            f"{dataset}: dims (obs {data.obs_dim}, action {data.action_dim if data.has_actions else None}) "
            f"do not match the model (obs {model.obs_dim}, action {model.action_dim})"
        )
    batch = data.to_batch()
    result: dict[str, Any] = {
        "model": repr(model),
        "dataset": dataset,
        "n_transitions": len(data),
        "one_step": one_step_error(model, batch),
        "calibration": calibration(model, batch),
    }
    ks = k_step_error(model, data, horizons, max_windows=max_windows)
    result["k_step"] = {"obs_mse": ks.obs_mse, "reward_mse": ks.reward_mse, "nonfinite": ks.nonfinite, "n_windows": ks.n_windows}
    ref_ks = None
    if true_dynamics:
        from mbrl.models.true_dynamics import TrueDynamicsModel

        eid = env_id or data.env_id
        if eid is None:
            raise ValueError("--true-dynamics needs --env (the dataset does not record its env)")
        ref_ks = k_step_error(model, data, horizons, max_windows=max_windows, reference=TrueDynamicsModel(eid))
        result["k_step_vs_true_dynamics"] = {"obs_mse": ref_ks.obs_mse, "nonfinite": ref_ks.nonfinite}
    if plot is not None:
        _plot(ks.obs_mse, None if ref_ks is None else ref_ks.obs_mse, plot, title=Path(dataset).name)
        result["plot"] = plot
    if json:
        print(json_lib.dumps(result, indent=2, default=float))
        return 0
    one, cal = result["one_step"], result["calibration"]
    print(result["model"])
    print(f"data: {dataset} ({len(data)} transitions, {data.n_episodes} episodes)")
    print(
        f"one-step: next_obs MSE {one['obs_mse']:.4g}  (normalised {one['obs_nmse']:.3f})  reward MSE "
        f"{one['reward_mse']:.4g}"
    )
    print(
        f"calibration: within 1σ {cal['within_1sigma']:.3f} (Gaussian {cal['expected_1sigma']:.3f}), within 2σ "
        f"{cal['within_2sigma']:.3f} ({cal['expected_2sigma']:.3f}), mean z² {cal['mean_z2']:.3g} (1)"
    )
    header = f"{'horizon':>8} {'obs MSE':>12} {'reward MSE':>12} {'diverged':>9}"
    if ref_ks is not None:
        header += f" {'vs simulator':>13}"
    print(f"open-loop error over {ks.n_windows} windows:\n{header}")
    for h in ks.horizons:
        line = f"{h:>8} {ks.obs_mse[h]:>12.4g} {ks.reward_mse[h]:>12.4g} {ks.nonfinite[h]:>9.1%}"
        if ref_ks is not None:
            line += f" {ref_ks.obs_mse[h]:>13.4g}"
        print(line)
    if plot is not None:
        print(f"plot: {plot}")
    return 0


def _plot(mse: dict[int, float], ref: dict[int, float] | None, path: str, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    hs = sorted(mse)
    ax.plot(hs, [mse[h] for h in hs], marker="o", label="vs logged trajectories")
    if ref is not None:
        ax.plot(hs, [ref[h] for h in hs], marker="s", label="vs simulator")
        ax.legend()
    if all(v > 0 and math.isfinite(v) for v in mse.values()):
        ax.set_yscale("log")
    ax.set_xlabel("open-loop horizon (steps)")
    ax.set_ylabel("next_obs MSE")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
