"""MOPO: offline model-based RL with an uncertainty-penalised reward.

Yu et al., "MOPO: Model-based Offline Policy Optimization" (NeurIPS 2020). The loop is
:mod:`mbrl.agents.offline_model_based`'s, shared with RAVL (:mod:`mbrl.agents.ravl`): 2 critics, and the reward of every
model transition is penalised by ``penalty_coef * u(s, a)`` where ``u`` is the ensemble's ``max_e ||sigma_e(s, a)||``
over all members (``info["uncertainty"]`` of ``ProbabilisticEnsemble`` with ``full_info=True``; the penalty link of
the model chain, :mod:`mbrl.models.chain`); lambda and k per dataset from the released configs
(:data:`MOPO_TASKS`). Every preset value and its source: ``docs/presets.md`` (checked by ``tests/test_presets.py``).

Run it with :class:`~mbrl.agents.offline_model_based.OfflineModelBasedAgent` (also named ``MOPOAgent`` and
``mbrl.agents.ravl.RAVLAgent``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mbrl.agents.offline_model_based import (
    OfflineModelBasedAgent,
    OfflineModelBasedConfig,
    Preset,
    preset_config,
)
from mbrl.models.ensemble import EnsembleConfig
from mbrl.rl.sac import SACConfig

MOPO_SAC = SACConfig(
    hidden=256, depth=2, num_critics=2, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, gamma=0.99, tau=5e-3,
    batch_size=256, target_entropy=-3.0, log_std_min=-20.0, log_std_max=2.0,
)
"""MOPO's learner as released (tianheyu927/mopo, softlearning's SAC): 2 critics and actor of 2 x 256, lr 3e-4,
gamma 0.99, tau 5e-3, batch 256, log-std in [-20, 2], target entropy -3 for every D4RL dataset
(``examples/config/d4rl/base.py``). Provenance per value: ``docs/presets.md``."""

# MOPO's per-dataset (penalty coefficient lambda, rollout length h): tianheyu927/mopo examples/config/d4rl/<task>.py
# (D4RL v0; "mixed" = medium-replay). Datasets not listed (e.g. expert) use MOPO_DEFAULT_TASK, which is ours.
MOPO_TASKS: dict[tuple[str, str], tuple[float, int]] = {
    ("hopper", "random"): (1.0, 5),
    ("hopper", "medium"): (5.0, 5),
    ("hopper", "medium-replay"): (1.0, 5),
    ("hopper", "medium-expert"): (1.0, 5),
    ("halfcheetah", "random"): (0.5, 5),
    ("halfcheetah", "medium"): (1.0, 1),
    ("halfcheetah", "medium-replay"): (1.0, 5),
    ("halfcheetah", "medium-expert"): (5.0, 5),
}
MOPO_DEFAULT_TASK = (1.0, 5)
"""Ours, for datasets MOPO released no config for: lambda 1 and h 5, the most common values of its table."""


@dataclass(frozen=True)
class MOPOConfig(OfflineModelBasedConfig):
    """A MOPO run (every field: :class:`~mbrl.agents.offline_model_based.OfflineModelBasedConfig`).

    Attributes:
        sac: the learner (MOPO: 2 critics, no EDAC).
        ensemble: the learned world model (7 members, 5 elites; ``full_info=True`` for the penalty).
        penalty: ``"uncertainty"``, as MOPO (``reward - penalty_coef * uncertainty``).
    """

    algo: ClassVar[str] = "mopo"

    sac: SACConfig = field(default_factory=lambda: MOPO_SAC)
    ensemble: EnsembleConfig = field(
        default_factory=lambda: EnsembleConfig(num_members=7, num_elites=5, full_info=True)
    )
    penalty: Literal["none", "uncertainty"] = "uncertainty"


_ENVS = ("halfcheetah", "hopper", "walker2d", "ant", "humanoid", "invertedpendulum", "inverteddoublependulum")
_SPLITS = ("medium-replay", "medium-expert", "full-replay", "random", "medium", "expert")


def dataset_task(dataset: str) -> tuple[str | None, str | None]:
    """``(env, split)`` named by a dataset id or path, e.g. ``"mbrl/hopper/medium-replay-v0"`` or
    ``"data/hopper-medium.hdf5"`` -> ``("hopper", "medium-replay")`` / ``("hopper", "medium")``; ``None`` where
    the name does not say. MOPO's "mixed" is medium-replay."""
    name = dataset.lower().replace("_", "-").replace("mixed", "medium-replay")
    env = next((e for e in sorted(_ENVS, key=len, reverse=True) if e in name.replace("-", "")), None)
    split = next((sp for sp in _SPLITS if sp in name), None)
    return env, split


def mopo_task(dataset: str) -> tuple[float, int]:
    """MOPO's released (lambda, h) for the dataset :func:`dataset_task` names (:data:`MOPO_TASKS`), else
    :data:`MOPO_DEFAULT_TASK` (ours)."""
    return MOPO_TASKS.get(dataset_task(dataset), MOPO_DEFAULT_TASK)  # type: ignore[arg-type]


def mopo_preset(dataset: str, preset: Preset = "cpu", **overrides: Any) -> MOPOConfig:
    """MOPO as released (:data:`MOPO_SAC`; per-dataset lambda and h from :data:`MOPO_TASKS`, named from the
    dataset id or file name by :func:`dataset_task`; 50k rollouts per epoch of 1000 updates, 5 retained epochs,
    real_ratio 0.05, penalty ``max over all members of ||sigma||``) with the ``preset``'s budget (``paper``:
    MOPO's 1000 epochs = 1M updates). ``overrides`` replace fields of :class:`MOPOConfig`, or of the loop when
    named ``loop_<field>``."""
    coef, length = mopo_task(dataset)
    return preset_config(
        MOPOConfig,
        dataset,
        preset,
        overrides,
        sac=MOPO_SAC,
        full_info=True,
        paper_updates=1_000_000,
        penalty="uncertainty",
        penalty_coef=coef,
        rollout_length=length,
        retain_epochs=5,
        real_ratio=0.05,
    )


MOPOAgent = OfflineModelBasedAgent
"""The offline model-based agent (MOPO given a :class:`MOPOConfig`)."""
