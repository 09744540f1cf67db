"""CLI of the offline agents and dataset generation: ``mbrl train ravl|mopo|bc``, ``mbrl dataset make``, and
:func:`evaluate_run` (the normalized score of an offline run, for ``mbrl eval``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mbrl.cli import ConfigCommand, RunOptions
from mbrl.run import RESUMABLE_FIELDS, check_run_dir, prepare_run_dir
from mbrl.utils import with_device

Preset = Literal["paper", "cpu", "quick"]
_RESUMABLE = RESUMABLE_FIELDS | {"updates", "eval_episodes"}


def _with_model(config: Any, model_dir: str | None) -> tuple[Any, Any]:
    """``(config, model)``: the ensemble of ``mbrl model train --run-dir MODEL_DIR`` to reuse (its architecture
    goes into the config, so the run dir rebuilds it), or ``(config, None)`` to fit one."""
    if model_dir is None:
        return config, None
    from dataclasses import replace

    from mbrl.models.commands import load_ensemble

    model = load_ensemble(model_dir, full_info=config.ensemble.full_info)
    return replace(config, ensemble=model.config), model


def _run(
    agent_cls: Any, config: Any, run_dir: str, resume: bool, desc: str, model: Any = None,
    model_dir: str | None = None,
) -> int:
    from mbrl.logging import Logger

    stored = {"algo": desc, **_asdict(config)}
    if model_dir is not None:
        stored["model_dir"] = str(model_dir)
    check_run_dir(run_dir, stored, resume=resume, resumable=_RESUMABLE)
    extra = {} if model is None else {"model": model, "fit_model": False}
    agent = agent_cls(config, run_dir=Path(run_dir), **extra)  # loads and validates the dataset: nothing written before
    run = prepare_run_dir(run_dir, stored, resume=resume, resumable=_RESUMABLE)
    start = 0
    if resume and agent.resume():
        start = agent.num_updates
    with Logger(
        run.path, total=config.loop.updates, desc=f"{desc} {agent.env_id}",
        resume_step=start if resume else None,
        console_keys=["eval/normalized_score", "eval/return_mean", "train/q_mean"],
    ) as logger:
        final = agent.learn(logger)
    shown = ", ".join(f"{k}={v:.2f}" for k, v in final.items() if k in ("eval/return_mean", "eval/normalized_score"))
    print(f"{desc}: {agent.num_updates} updates, {shown}; run dir {run.path}")
    return 0


def _check_filter(filter: str, dynamics_reward: str | None) -> None:
    if dynamics_reward is not None:
        if filter != "morec":
            raise ValueError("--dynamics-reward is used by the MOREC filter: add --filter morec")
        if not Path(dynamics_reward).exists():
            raise FileNotFoundError(f"{dynamics_reward}: no such dynamics reward file or directory")


def _asdict(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)


@dataclass(frozen=True)
class ModelOptions:
    """Options of ``mbrl train ravl|mopo`` outside the config.

    Attributes:
        model_dir: reuse the ensemble fitted by ``mbrl model train DATASET --run-dir MODEL_DIR`` (no fit; its
            architecture replaces the ensemble.* flags).
    """

    model_dir: str | None = None


def _run_model_based(algo: str) -> Callable[[Any, RunOptions, ModelOptions], int]:
    def run(config: Any, options: RunOptions, extra: ModelOptions) -> int:
        from mbrl.agents.offline_model_based import OfflineModelBasedAgent

        _check_filter(config.filter, config.dynamics_reward)
        config, model = _with_model(config, extra.model_dir)
        return _run(OfflineModelBasedAgent, config, _run_dir(options, algo, config), options.resume, algo, model, extra.model_dir)

    return run


def _run_bc(config: Any, options: RunOptions, _: object) -> int:
    from mbrl.agents.bc import BCAgent

    return _run(BCAgent, config, _run_dir(options, "bc", config), options.resume, "bc")


def _run_dir(options: RunOptions, algo: str, config: Any) -> str:
    """``--run-dir``, or a new ``runs/<algo>-<dataset>-<time>`` (``--resume`` needs the run's own)."""
    if options.run_dir is not None:
        return options.run_dir
    if options.resume:
        raise ValueError("--resume needs the --run-dir of the run to continue")
    from mbrl.agents.commands import default_run_dir

    label = Path(config.loop.dataset).stem if Path(config.loop.dataset).suffix else config.loop.dataset
    return default_run_dir(algo, label.replace("/", "-"))


def _ravl_config(dataset: str, preset: str, _: object) -> Any:
    from mbrl.agents.ravl import ravl_preset

    return ravl_preset(dataset, preset)  # type: ignore[arg-type]


def _mopo_config(dataset: str, preset: str, _: object) -> Any:
    from mbrl.agents.mopo import mopo_preset

    return mopo_preset(dataset, preset)  # type: ignore[arg-type]


def _bc_config(dataset: str, preset: str, _: object) -> Any:
    from mbrl.agents.bc import bc_preset

    return bc_preset(dataset, preset)


def _config_type(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _model_based_command(
    algo: str, description: str, preset: Callable[[str, str, object], Any], config_type: type
) -> ConfigCommand:
    """``mbrl train ravl|mopo``: a ``RAVLConfig`` / ``MOPOConfig`` command with ``--model-dir``."""
    return ConfigCommand(
        name=algo,
        description=description,
        config_type=config_type,
        target="dataset",
        target_path="loop.dataset",
        preset=preset,
        run=_run_model_based(algo),
        options=ModelOptions,
        stored_extras=("algo", "model_dir"),
    )


TRAIN_RAVL = _model_based_command(
    "ravl",
    "Train RAVL (offline MBPO with a 10-critic EDAC ensemble) on a dataset (.hdf5 / .npz path or local Minari id). "
    "paper: the released values (no uncertainty penalty), 3M updates; cpu: 50k updates, 5k rollouts per epoch, "
    "MOPO's uncertainty penalty with 20-step rollouts (ours, docs/presets.md), bf16 where the CPU has it natively.",
    _ravl_config,
    _config_type("mbrl.agents.ravl", "RAVLConfig"),
)

TRAIN_MOPO = _model_based_command(
    "mopo",
    "Train MOPO (uncertainty-penalised offline MBPO, 2 critics) on a dataset (.hdf5 / .npz path or local Minari "
    "id); lambda and h are MOPO's released values for the dataset named by its id or file name (docs/presets.md). "
    "paper: 1M updates; cpu: 50k updates, 5k rollouts per epoch, bf16 where the CPU has it natively.",
    _mopo_config,
    _config_type("mbrl.agents.mopo", "MOPOConfig"),
)

TRAIN_BC = ConfigCommand(
    name="bc",
    description="Train behaviour cloning on a dataset (.hdf5 / .npz path or local Minari id).",
    config_type=_config_type("mbrl.agents.bc", "BCAgentConfig"),
    target="dataset",
    target_path="loop.dataset",
    preset=_bc_config,
    run=_run_bc,
)


def load_run_agent(run_dir: str | Path, *, device: str | None = None) -> Any:
    """Rebuild the offline agent of ``run_dir`` from its ``config.json`` (every part on ``device`` when given) and
    load its latest checkpoint.

    Raises:
        FileNotFoundError: no config or no checkpoint.
        ValueError: the run is not an offline run (no ``algo`` in ravl/mopo/bc).
    """
    from mbrl.agents.bc import BCAgent, BCAgentConfig
    from mbrl.agents.mopo import MOPOConfig
    from mbrl.agents.offline_model_based import OfflineModelBasedAgent
    from mbrl.agents.ravl import RAVLConfig
    from mbrl.run import RunDir, config_from_dict

    run = RunDir(Path(run_dir))
    if not run.config_path.is_file():
        raise FileNotFoundError(f"{run.config_path}: no such file (not a run directory)")
    data = dict(run.read_config())
    algo = data.pop("algo", None)
    data.pop("model_dir", None)  # a reused ensemble: its architecture is in the config, its weights in the checkpoint
    agent: Any
    if algo in ("ravl", "mopo"):
        config_type = RAVLConfig if algo == "ravl" else MOPOConfig
        config: Any = config_from_dict(config_type, data)
        agent = OfflineModelBasedAgent(with_device(config, device), fit_model=False)
    elif algo == "bc":
        bc_config = config_from_dict(BCAgentConfig, data)
        agent = BCAgent(with_device(bc_config, device))
    else:
        raise ValueError(f"{run.config_path}: algo {algo!r} is not an offline agent (ravl, mopo, bc)")
    path = run.latest_checkpoint()
    if path is None:
        raise FileNotFoundError(f"{run.checkpoints_dir}: no checkpoint to evaluate")
    agent.load(path)
    return agent


def evaluate_run(
    run_dir: str | Path, episodes: int, seed: int | None = None, *, device: str | None = None
) -> dict[str, Any]:
    """Evaluate the latest checkpoint of an offline run for ``episodes`` episodes (deterministic policy), the
    first episode seeded with ``seed`` (default: as the run's own evaluations).

    Returns:
        ``return_mean``, ``return_std``, ``length_mean``, ``episodes``, ``updates``, and ``normalized_score``
        with ``ref_min_score``, ``ref_max_score`` and ``ref_source`` (command line / dataset metadata / D4RL
        constants) when reference scores are known.
    """
    agent = load_run_agent(run_dir, device=device)
    out: dict[str, Any] = {k.removeprefix("eval/"): v for k, v in agent.evaluate(episodes, seed=seed).items()}
    out["updates"] = float(agent.num_updates)
    if agent.refs is not None:
        out["ref_min_score"], out["ref_max_score"] = agent.refs
        out["ref_source"] = agent.refs_source
    return out


def make_dataset(
    env: str = "Hopper-v5",
    preset: Literal["cpu", "quick", "tiny"] = "cpu",
    seed: int = 0,
    out_dir: str | None = None,
    work_dir: str | None = None,
    namespace: str = "mbrl",
    splits: tuple[str, ...] = ("random", "medium", "medium-replay", "expert", "medium-expert"),
    sac_steps: int | None = None,
    split_size: int | None = None,
    device: str | None = None,
) -> int:
    """Make D4RL-style Minari datasets (random, medium, medium-replay, expert, medium-expert) for an env.

    Trains a SAC behaviour policy (resumable: re-run the same command to continue), then writes each missing
    split as ``<namespace>/<env>/<split>-v0`` with ``ref_min_score`` / ``ref_max_score`` in its metadata.

    Args:
        env: registered env id.
        preset: ``cpu`` (150k SAC steps, 100k-transition splits), ``quick`` (10k / 5k), ``tiny`` (tests).
        seed: everything is deterministic from it.
        out_dir: Minari root to write into (default ``$MINARI_DATASETS_PATH``); train with
            ``MINARI_DATASETS_PATH=OUT_DIR mbrl train ... --dataset ID``.
        work_dir: resumable behaviour-training state (default ``OUT_DIR/_work/<namespace>/<env>-<preset>-s<seed>``).
        namespace: Minari namespace.
        splits: which splits to write.
        sac_steps: override the preset's behaviour-training steps.
        split_size: override the preset's split size.
        device: the behaviour learner's device (cpu, cuda, auto = cuda when available; default: the preset's).
    """
    from mbrl.envs.datasets import dataset_preset, make_datasets, minari_root

    overrides: dict[str, Any] = {"seed": seed, "namespace": namespace}
    if sac_steps is not None:
        overrides["sac_steps"] = sac_steps
    if split_size is not None:
        overrides["split_size"] = split_size
    config = dataset_preset(env, preset, **overrides)
    config = with_device(config, device)
    with minari_root(out_dir):
        import os

        root = Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
    work = Path(work_dir) if work_dir is not None else root / "_work" / namespace / f"{env}-{preset}-s{seed}"
    ids = make_datasets(config, work, out_dir=out_dir, splits=splits, progress=lambda m: print(m, flush=True))
    for split, dataset_id in ids.items():
        print(f"{split:<14} {dataset_id}")
    return 0
