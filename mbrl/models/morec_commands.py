"""``mbrl model train-dynamics-reward``: fit an ensemble on a dataset, learn MOREC's dynamics reward against it,
save both (``RUN_DIR/model.pt`` readable by ``mbrl model eval``, ``RUN_DIR/dynamics_reward.pt`` for
``mbrl train ravl|mopo --filter morec --dynamics-reward RUN_DIR``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from mbrl.models.dynamics_reward import DYNAMICS_REWARD_FILE, DynamicsReward, dynamics_reward_preset
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig
from mbrl.utils import with_device

_PRESETS: dict[str, tuple[EnsembleConfig, FitConfig]] = {
    "cpu": (EnsembleConfig(num_members=7, num_elites=5), FitConfig(max_epochs=100, max_time_s=600.0)),
    "quick": (
        EnsembleConfig(num_members=3, num_elites=2, hidden=64, depth=2),
        FitConfig(max_epochs=3, max_time_s=20.0, max_holdout=500),
    ),
}

REWARD_PROGRESS_FILE = "dynamics_reward_progress.pt"
RESULT_FILE = "result.json"

_SHOWN = ("d_acc_real", "d_acc_fake", "reward_real_mean", "reward_fake_mean")


def fit_and_learn_reward(
    dataset: str,
    run_dir: str | Path,
    *,
    seed: int = 0,
    preset: Literal["cpu", "quick"] = "cpu",
    env_id: str | None = None,
    iterations: int | None = None,
    shuffled_negatives: float = 0.0,
    verbose: bool = True,
    checkpoint_every_s: float = 30.0,
    device: str | None = None,
) -> tuple[ProbabilisticEnsemble, DynamicsReward, dict[str, float]]:
    """Fit the ensemble, learn the dynamics reward, save both into ``run_dir``; returns them and the final metrics.

    Both long stages save their progress into ``run_dir`` (``fit_progress.pt`` every 30 s of the fit, the fitted
    ``model.pt`` as soon as it ends, ``dynamics_reward_progress.pt`` every 30 s of the reward learning): the same
    call on the same ``run_dir`` after an interruption continues where it stopped, to the same result.

    Metrics go to CSV and TensorBoard: the fit's per-epoch ``model/...`` rows to ``run_dir/fit`` (step = epoch),
    the reward learning's ``model/d_acc_real``, ``model/d_acc_fake``, ``model/reward_real_mean`` ... rows to
    ``run_dir`` (step = adversarial iteration); each step once, also after an interruption. The final metrics go
    to ``run_dir/result.json``; a finished run dir is reported, not recomputed.
    """
    from mbrl.checkpoint import load_checkpoint
    from mbrl.data.io import load_dataset
    from mbrl.logging import Logger
    from mbrl.models.commands import MODEL_FILE, fit_and_save
    from mbrl.models.dynamics_reward import train_dynamics_reward
    from mbrl.run import write_json_atomic

    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(_PRESETS)}")
    ens_cfg, fit_cfg = _PRESETS[preset]
    fit_cfg = dataclasses.replace(fit_cfg, checkpoint_every_s=checkpoint_every_s)
    reward_cfg = dynamics_reward_preset(preset)
    if iterations is not None:
        if iterations < 1:
            raise ValueError(f"--iterations must be >= 1, got {iterations}")
        reward_cfg = dataclasses.replace(reward_cfg, num_iterations=iterations)
    reward_cfg = dataclasses.replace(reward_cfg, shuffled_negatives=shuffled_negatives)
    ens_cfg, reward_cfg = with_device(ens_cfg, device), with_device(reward_cfg, device)  # ensemble, discriminator
    reward_cfg.validate()
    data = load_dataset(dataset, env_id=env_id)
    if not data.has_actions:
        raise ValueError(f"{dataset}: the dynamics reward needs a dataset with actions")
    run = Path(run_dir)
    model = ProbabilisticEnsemble(data.obs_dim, data.action_dim, ens_cfg, seed=seed)
    model_path, reward_path = run / MODEL_FILE, run / DYNAMICS_REWARD_FILE
    reward_progress, result_path = run / REWARD_PROGRESS_FILE, run / RESULT_FILE
    if model_path.is_file():  # the fit had ended: a finished run is reported, an interrupted one continues
        model.load_state_dict(load_checkpoint(model_path).state["model"])
        if reward_path.is_file() and result_path.is_file():
            if verbose:
                print(f"{run} holds a finished run: loaded {model_path} and {reward_path}", flush=True)
            return model, DynamicsReward.load(reward_path), json.loads(result_path.read_text())
        if verbose:
            print(f"continuing in {run}: fitted model loaded from {model_path}", flush=True)
    else:  # model.pt is saved as soon as the fit ends, before the (long) reward learning
        report = fit_and_save(
            model, data, fit_cfg, run, seed=seed, rng=np.random.default_rng([seed, 1]), dataset=dataset,
            log_dir=run / "fit", verbose=verbose,
        )
        if verbose:
            print(
                f"fitted {model!r}: {report.epochs} epochs ({report.stop_reason}), holdout next_obs MSE "
                f"{report.holdout_mse:.4g}", flush=True,
            )
    # the reward learning logs per iteration into run/ (resumed: rows after the progress file's iteration go)
    reward_resume = (
        int(load_checkpoint(reward_progress).state["progress"]["iteration"]) if reward_progress.is_file() else 0
    )
    with Logger(
        run, desc="dynamics reward", console=verbose, resume_step=reward_resume,
        console_keys=["model/d_acc_real", "model/d_acc_fake"],
    ) as logger:

        def progress(iteration: int, metrics: dict[str, float]) -> None:
            logger.log({f"model/{k}": v for k, v in metrics.items() if k != "iteration"}, iteration)
            if verbose:
                shown = "  ".join(f"{k} {metrics[k]:.3f}" for k in _SHOWN if k in metrics)
                print(f"dynamics reward {iteration}/{reward_cfg.num_iterations}: {shown}", flush=True)

        reward, history = train_dynamics_reward(
            data, model, reward_cfg, seed=seed, progress=progress, checkpoint=reward_progress,
            checkpoint_every_s=checkpoint_every_s,
        )
    reward.save(reward_path)
    write_json_atomic(result_path, history[-1])
    reward_progress.unlink(missing_ok=True)
    return model, reward, history[-1]


def train_dynamics_reward_command(
    dataset: str,
    run_dir: str,
    seed: int = 0,
    preset: Literal["cpu", "quick"] = "cpu",
    env_id: Annotated[str | None, tyro.conf.arg(name="env")] = None,
    iterations: int | None = None,
    shuffled_negatives: float = 0.0,
    threads: int = 1,
    checkpoint_every_s: float = 30.0,
    device: str | None = None,
) -> int:
    """Fit an ensemble and learn MOREC's dynamics reward on a dataset; save both into RUN_DIR.

    Args:
        dataset: ``.hdf5`` / ``.npz`` path or local Minari id.
        run_dir: output directory: ``model.pt``, ``dynamics_reward.pt``, ``progress.csv``, TensorBoard events.
        seed: ensemble init, holdout split, discriminator init and sampling.
        preset: ``cpu`` (7x4x200 ensemble, 5000 adversarial iterations) or ``quick`` (tiny; smoke tests).
        env_id: gymnasium id of the data, when the file does not record it.
        iterations: override the preset's number of adversarial iterations.
        shuffled_negatives: fraction of the discriminator's negatives that are dataset transitions with another
            row's next state (not in the paper; 0.25 made the filter's rollouts closer to the simulator on the
            generated Hopper/HalfCheetah data, see the README).
        threads: torch intra-op threads.
        checkpoint_every_s: seconds between progress saves of the fit and of the reward learning (0: every epoch
            / iteration); running the same command again on the same run dir continues an interrupted run.
        device: the ensemble's and the discriminator's device (cpu, cuda, auto = cuda when available).
    """
    from mbrl.utils import set_threads

    set_threads(threads)
    _, reward, final = fit_and_learn_reward(
        dataset, run_dir, seed=seed, preset=preset, env_id=env_id, iterations=iterations,
        shuffled_negatives=shuffled_negatives, checkpoint_every_s=checkpoint_every_s, device=device,
    )
    print(
        f"{reward!r}\n  held-out: r_D real {final['eval_reward_real_mean']:.3f} ± {final['eval_reward_real_std']:.3f}, "
        f"model samples {final['eval_reward_model_mean']:.3f} ± {final['eval_reward_model_std']:.3f}, shuffled "
        f"next states {final['eval_reward_shuffled_mean']:.3f}\n  accuracy (D̄ vs 0.5): real "
        f"{final['eval_acc_real']:.3f}, model {final['eval_acc_model']:.3f}, shuffled {final['eval_acc_shuffled']:.3f}\n"
        f"saved {Path(run_dir) / 'model.pt'} and {Path(run_dir) / DYNAMICS_REWARD_FILE}"
    )
    return 0
