"""Inverse-dynamics labeling: learn from action-free trajectories with any offline agent of the toolkit.

SS-ORL's meta-algorithm (Zheng, Henaff, Amos & Grover, "Semi-Supervised Offline Reinforcement Learning with
Action-Free Trajectories", ICML 2023):

1. fit an inverse dynamics model (:class:`mbrl.models.inverse_dynamics.InverseDynamicsModel`) on the labelled
   trajectories (those with actions);
2. label every unlabelled (action-free) trajectory with the IDM's mean action, flagged in
   ``proxy_actions``;
3. train any offline agent (BC, RAVL, MOPO) on the union of true- and proxy-labelled trajectories.

Commands: ``mbrl train idm-label`` (split a labelled source or combine a labelled and an action-free source,
then steps 1-3; resumable: the fitted IDM and the labelled union are written once, atomically, and reloaded by
``--resume``, and the agent continues from its latest checkpoint) and ``mbrl dataset label`` (step 2 with a
trained IDM, writing a labelled dataset).

The labelled-trajectory rule of the paper's headline setting (abstract: 10 % of the trajectories, from the low
return regime) is, in the authors' code (facebookresearch/ssorl ``data.py``, ``setup_action_label``;
``config/config.yaml``: ``action_available_perc: 0.1``, ``action_available_threshold: 0.5``): ``int(0.1 n)``
trajectories drawn uniformly without replacement from the ``int(0.5 n)`` of lowest return;
:func:`mbrl.data.splitting.labelled_episode_indices` does the same (rounding ``round``/``ceil`` instead of
``int``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro

from mbrl.data import OfflineDataset, load_dataset
from mbrl.data.splitting import Selection, split_labelled
from mbrl.models.inverse_dynamics import IDM_FILE, IDMConfig, InverseDynamicsModel
from mbrl.models.inverse_dynamics import idm_preset as idm_config
from mbrl.types import Metrics
from mbrl.utils import with_device

AgentName = Literal["bc", "ravl", "mopo"]
Preset = Literal["paper", "cpu", "quick"]
UNION_FILE = "labelled_union.npz"
IDM_PROGRESS_FILE = "idm_fit_progress.pt"


@dataclass(frozen=True)
class IDMLabelConfig:
    """One semi-supervised run.

    Attributes:
        labelled_fraction: fraction of the trajectories that keep their actions (ignored with an action-free
            ``unlabelled`` source given separately).
        selection: ``"low-return"`` (the paper: drawn uniformly from the lowest ``return_quantile`` of returns)
            or ``"uniform"``.
        return_quantile: pool of the ``"low-return"`` selection.
        agent: the offline agent trained on the union.
        preset: the agent's budget preset (``mbrl.agents.bc.bc_preset`` / ``mbrl.agents.ravl.ravl_preset``).
        seed: seeds the split, the IDM and the agent.
        idm: the inverse dynamics model.
    """

    labelled_fraction: float = 0.1
    selection: Selection = "low-return"
    return_quantile: float = 0.5
    agent: AgentName = "bc"
    preset: Preset = "cpu"
    seed: int = 0
    idm: IDMConfig = field(default_factory=IDMConfig)


def require_actions(dataset: OfflineDataset, who: str) -> None:
    """Refuse an action-free dataset for an agent that needs actions, saying how to label it.

    Raises:
        ValueError: ``dataset`` has no actions.
    """
    if not dataset.has_actions:
        raise ValueError(
            f"{dataset.source}: {who} needs actions but this dataset is action-free; label it first with "
            "`mbrl dataset label --idm RUN_DIR SOURCE OUT` or train with `mbrl train idm-label`"
        )


def fit_idm(
    labelled: OfflineDataset,
    config: IDMConfig,
    seed: int,
    unlabelled: OfflineDataset | None = None,
    checkpoint: Path | None = None,
    checkpoint_every_s: float = 30.0,
) -> tuple[InverseDynamicsModel, Metrics]:
    """Fit an IDM on ``labelled`` (validation split by episode, best checkpoint kept); the states of
    ``unlabelled``, when given, join the input standardisation (as the reference code, which standardises with
    every trajectory's states). ``checkpoint``: the fit's progress file (continued if it exists)."""
    require_actions(labelled, "fitting an inverse dynamics model")
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 101]).generate_state(1)[0]))
    idm = InverseDynamicsModel.for_dataset(labelled, config, generator=gen)
    metrics = idm.fit(
        labelled, np.random.default_rng([seed, 102]), unlabelled=unlabelled, checkpoint=checkpoint,
        checkpoint_every_s=checkpoint_every_s,
    )
    return idm, metrics


def label_union(
    idm: InverseDynamicsModel, labelled: OfflineDataset, unlabelled: OfflineDataset
) -> OfflineDataset:
    """``labelled`` (recorded actions) + ``unlabelled`` with IDM mean actions (``proxy_actions`` True)."""
    proxy = unlabelled.with_actions(idm.label(unlabelled), proxy=True)
    return OfflineDataset.concat([labelled, proxy])


def make_agent(
    name: AgentName,
    dataset: OfflineDataset,
    preset: Preset,
    run_dir: str | Path | None,
    *,
    dataset_path: str | None = None,
    fit_max_time_s: float | None = None,
    device: str | None = None,
    **loop: Any,
) -> Any:
    """An offline agent of the toolkit on an in-memory dataset (``loop`` overrides ``OfflineLoopConfig`` fields;
    ``dataset_path``, where ``dataset`` is stored, goes into the agent's config so ``mbrl eval`` can rebuild it;
    ``fit_max_time_s`` caps the RAVL / MOPO ensemble fit of the preset; ``device`` sets every part's device)."""
    require_actions(dataset, f"the {name} agent")
    source = dataset_path if dataset_path is not None else dataset.source
    if name == "bc":
        from mbrl.agents.bc import BCAgent, bc_preset

        bc_config = bc_preset(source, preset, **loop)
        return BCAgent(with_device(bc_config, device), dataset=dataset, run_dir=run_dir)
    if name in ("ravl", "mopo"):
        from mbrl.agents.mopo import mopo_preset
        from mbrl.agents.offline_model_based import OfflineModelBasedAgent
        from mbrl.agents.ravl import ravl_preset

        make = ravl_preset if name == "ravl" else mopo_preset
        config = make(source, preset, **{f"loop_{k}": v for k, v in loop.items()})
        if fit_max_time_s is not None:
            config = replace(config, fit=replace(config.fit, max_time_s=fit_max_time_s))
        config = with_device(config, device)
        return OfflineModelBasedAgent(config, dataset=dataset, run_dir=run_dir)
    raise ValueError(f"unknown agent {name!r} (bc, ravl, mopo)")


def split_or_combine(
    source: OfflineDataset, unlabelled: OfflineDataset | None, config: IDMLabelConfig
) -> tuple[OfflineDataset, OfflineDataset]:
    """``(labelled, unlabelled)``: the given pair, or ``source`` split as the paper does."""
    if unlabelled is not None:
        require_actions(source, "the labelled part of idm-label")
        if unlabelled.has_actions:
            unlabelled = unlabelled.without_actions()
        return source, unlabelled
    if not source.has_actions:
        raise ValueError(
            f"{source.source}: the dataset is action-free; idm-label needs some trajectories with actions to fit "
            "the inverse dynamics model (give a labelled --dataset and this one as --unlabelled)"
        )
    return split_labelled(
        source, config.labelled_fraction, np.random.default_rng([config.seed, 100]),
        selection=config.selection, return_quantile=config.return_quantile,
    )


def train_idm_label(
    dataset: str,
    run_dir: str,
    labelled_fraction: float = 0.1,
    agent: AgentName = "bc",
    unlabelled: str | None = None,
    selection: Selection = "low-return",
    return_quantile: float = 0.5,
    preset: Preset = "cpu",
    idm_preset: Preset = "cpu",
    seed: int = 0,
    updates: int | None = None,
    eval_episodes: int | None = None,
    env_id: Annotated[str | None, tyro.conf.arg(name="env")] = None,
    resume: bool = False,
    idm_checkpoint_every_s: float = 30.0,
    device: str | None = None,
) -> int:
    """Fit an inverse dynamics model on labelled trajectories, label the rest, train an offline agent (SS-ORL).

    Writes ``RUN_DIR/idm/idm.pt`` (+ ``metrics.json``), ``RUN_DIR/labelled_union.npz`` and the agent's run in
    ``RUN_DIR/agent``. Each is written once, atomically; ``--resume`` reloads the fitted IDM and the labelled
    union instead of refitting and relabelling, continues an interrupted IDM fit from its progress file
    (``RUN_DIR/idm_fit_progress.pt``, saved every 30 s) and the agent from its latest checkpoint.

    Args:
        dataset: ``.hdf5`` / ``.npz`` / Minari id. With actions: split into labelled / unlabelled; or the
            labelled part when ``--unlabelled`` is given.
        run_dir: new run directory (or the one to resume).
        labelled_fraction: fraction of trajectories that keep their actions.
        agent: offline agent trained on the union: bc, ravl or mopo.
        unlabelled: an action-free source (states and rewards only) to label instead of splitting ``dataset``.
        selection: ``low-return`` (labelled trajectories from the lowest returns, as the paper) or ``uniform``.
        return_quantile: the low-return pool (0.5 = lower half).
        preset: the agent's budget (paper, cpu, quick).
        idm_preset: the IDM's size and budget (paper, cpu, quick).
        seed: run seed.
        updates: agent updates (default: the preset's); may change on ``--resume``.
        eval_episodes: evaluation episodes of the agent; may change on ``--resume``.
        env_id: evaluation env (default: the dataset's).
        resume: continue the run in ``run_dir`` (same settings but ``updates`` / ``eval_episodes``).
        idm_checkpoint_every_s: seconds between progress saves of the IDM fit (0: every epoch).
        device: the IDM's and the agent's device (cpu, cuda, auto = cuda when available; default: the presets').
    """
    from mbrl.data import save_npz
    from mbrl.logging import Logger
    from mbrl.run import RESUMABLE_FIELDS, prepare_run_dir, write_json_atomic

    config = IDMLabelConfig(
        labelled_fraction=labelled_fraction, selection=selection, return_quantile=return_quantile, agent=agent,
        preset=preset, seed=seed, idm=with_device(idm_config(idm_preset), device),
    )
    split: tuple[OfflineDataset, OfflineDataset] | None = None

    def labelled_and_free() -> tuple[OfflineDataset, OfflineDataset]:
        nonlocal split
        if split is None:
            source = load_dataset(dataset, env_id=env_id)
            extra = None if unlabelled is None else load_dataset(unlabelled, env_id=env_id)
            split = split_or_combine(source, extra, config)
        return split

    if not resume:  # bad input fails before a run directory is created
        labelled_and_free()
    run_config = {"algo": "idm-label", "dataset": dataset, "unlabelled": unlabelled, "env_id": env_id,
                  "updates": updates, "eval_episodes": eval_episodes, **asdict(config)}
    run = prepare_run_dir(run_dir, run_config, resume=resume,
                          resumable=RESUMABLE_FIELDS | {"updates", "eval_episodes"})
    idm_dir, union_path = run.path / "idm", run.path / UNION_FILE
    if resume and (idm_dir / IDM_FILE).is_file():
        idm, idm_metrics = InverseDynamicsModel.load_with_metrics(idm_dir)
        print(f"idm: reusing {idm_dir / IDM_FILE}")
    else:
        labelled, free = labelled_and_free()
        progress = run.path / IDM_PROGRESS_FILE  # saved during the fit; a resumed run continues it
        if resume and progress.is_file():
            print(f"idm: continuing the fit from {progress}")
        idm, idm_metrics = fit_idm(labelled, config.idm, seed, free, checkpoint=progress,
                                   checkpoint_every_s=idm_checkpoint_every_s)
        idm.save(idm_dir, idm_metrics)
        progress.unlink(missing_ok=True)
        write_json_atomic(idm_dir / "metrics.json", idm_metrics)
        print(f"idm: {len(labelled)} labelled / {len(free)} unlabelled transitions "
              f"({labelled.n_episodes} / {free.n_episodes} episodes); " +
              ", ".join(f"{k}={v:.4g}" for k, v in idm_metrics.items()))
    if resume and union_path.is_file():
        union = load_dataset(union_path, env_id=env_id)
        print(f"labelled union: reusing {union_path}")
    else:
        labelled, free = labelled_and_free()
        union = label_union(idm, labelled, free)
        if env_id is not None:
            union.env_id = env_id
        save_npz(union, union_path)  # atomic (temp file + rename)
    loop: dict[str, Any] = {"seed": seed}
    if updates is not None:
        loop["updates"] = updates
    if eval_episodes is not None:
        loop["eval_episodes"] = eval_episodes
    learner = make_agent(agent, union, preset, run.path / "agent", dataset_path=str(union_path.resolve()),
                         device=device, **loop)
    # the agent's folder is a run directory of its own: `mbrl eval RUN_DIR/agent` rebuilds it from this config
    (run.path / "agent").mkdir(exist_ok=True)
    write_json_atomic(run.path / "agent" / "config.json", learner.config_dict())
    start = 0
    if resume and learner.resume():
        start = learner.num_updates
        print(f"agent: resuming at update {start}")
    with Logger(run.path / "agent", total=learner.loop.updates, desc=f"idm-label {agent}",
                resume_step=start if resume else None,
                console_keys=["eval/normalized_score", "eval/return_mean"]) as logger:
        final = learner.learn(logger)
    write_json_atomic(run.path / "result.json", {"idm": idm_metrics, "final": final})
    shown = ", ".join(f"{k}={v:.2f}" for k, v in final.items() if k in ("eval/return_mean", "eval/normalized_score"))
    print(f"idm-label {agent}: {learner.num_updates} updates, {shown}; run dir {run.path}")
    return 0


def label_dataset(
    source: Annotated[str, tyro.conf.arg(metavar="SOURCE")],
    out: Annotated[str, tyro.conf.arg(metavar="OUT")],
    /,
    idm: Annotated[str, tyro.conf.arg(metavar="RUN_DIR")],
    relabel: bool = False,
    env_id: Annotated[str | None, tyro.conf.arg(name="env")] = None,
    device: str | None = None,
) -> int:
    """Label an action-free dataset with a trained inverse dynamics model and write it (npz, hdf5 or Minari id).

    Args:
        source: action-free ``.hdf5`` / ``.npz`` / Minari id.
        out: output ``.npz`` / ``.hdf5`` / ``.h5`` path, or a new Minari id.
        idm: run directory of ``mbrl train idm-label`` (its ``idm/`` folder) or a folder holding ``idm.pt``.
        relabel: replace the actions of a source that has them (all become proxy labels).
        env_id: env id to check dims against (default: the source's).
        device: where the IDM runs (cpu, cuda, auto = cuda when available; default: its stored setting).
    """
    from mbrl.data import save_hdf5, save_minari, save_npz

    idm_dir = Path(idm)
    if (idm_dir / "idm" / "idm.pt").is_file():
        idm_dir = idm_dir / "idm"
    model = InverseDynamicsModel.load(idm_dir, device=device)
    ds = load_dataset(source, env_id=env_id)
    if ds.has_actions and not relabel:
        raise ValueError(f"{ds.source}: the dataset already has actions; pass --relabel to replace them")
    labelled = ds.with_actions(model.label(ds), proxy=True)
    suffix = Path(out).suffix.lower()
    if suffix == ".npz":
        save_npz(labelled, out)
    elif suffix in (".hdf5", ".h5"):
        save_hdf5(labelled, out)
    else:
        save_minari(labelled, out, algorithm_name="IDM labels (SS-ORL)")
    print(json.dumps({"source": source, "out": out, "n_transitions": len(labelled),
                      "n_episodes": labelled.n_episodes}))
    return 0
