"""RAVL: offline model-based RL whose pessimism is its critic ensemble (no uncertainty penalty).

Sims, Lu, Foerster & Teh, "The Edge-of-Reach Problem in Offline Model-Based Reinforcement Learning" (NeurIPS
2024). The loop (a world model fitted once on the dataset, MBPO-style k-step rollouts from dataset states, batches
mixing dataset and model rows) is :mod:`mbrl.agents.offline_model_based`'s, shared with MOPO (:mod:`mbrl.agents.mopo`).
RAVL uses NO dynamics-uncertainty penalty: its pessimism is SAC-N's (N=10 critics, target = min over all critics)
plus the EDAC diversity term (eta), which detects the "edge-of-reach" states (reached only as the last state of a
truncated rollout, so their values are never trained) through the critics' disagreement there. Released defaults
(anyasims/edge-of-reach): N=10, eta=1, k=5, real_ratio 0.05, 50k rollouts per epoch of 1000 updates, 5 retained
epochs, 3000 epochs, 3 x 256 nets (:data:`RAVL_SAC`). Every preset value and its source: ``docs/presets.md``
(checked by ``tests/test_presets.py``). The ``paper`` preset is RAVL as released; the ``cpu`` preset (50k updates)
adds MOPO's penalty and 20-step rollouts, a stabiliser of ours (:func:`ravl_preset` says why).

The model chain (:mod:`mbrl.models.chain`) takes MOREC's reward-consistent filter (``filter="morec"``) or the
true dynamics (``dynamics="true"``) as it does for MOPO. The edge-of-reach contrast: with the TRUE dynamics the
uncertainty is zero, MOPO's penalty vanishes and its Q-values explode, while RAVL's critic ensemble still
penalises the edge-of-reach states. ``scripts/edge_of_reach.py`` runs that experiment.

``RAVLAgent`` is the offline model-based agent both algorithms share (it runs MOPO given a
:class:`~mbrl.agents.mopo.MOPOConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

# MOPO's names lived here before MOPO had its own module: ``from mbrl.agents.ravl import mopo_preset`` keeps working.
from mbrl.agents.mopo import (
    MOPO_DEFAULT_TASK,
    MOPO_SAC,
    MOPO_TASKS,
    MOPOConfig,
    dataset_task,
    mopo_preset,
    mopo_task,
)
from mbrl.agents.offline_model_based import (
    OfflineModelBasedAgent,
    OfflineModelBasedConfig,
    Preset,
    preset_config,
)
from mbrl.models.wrappers import UncertaintyPenalty
from mbrl.rl.sac import SACConfig


@dataclass(frozen=True)
class RAVLConfig(OfflineModelBasedConfig):
    """A RAVL run (every field: :class:`~mbrl.agents.offline_model_based.OfflineModelBasedConfig`).

    Attributes:
        sac: the learner (RAVL: ``num_critics=10, edac_eta=1.0``).
        ensemble: the learned world model (7 members, 5 elites).
        penalty: ``"none"``, as RAVL (``"uncertainty"`` adds MOPO's penalty to RAVL's critics).
    """

    algo: ClassVar[str] = "ravl"

    sac: SACConfig = field(default_factory=lambda: SACConfig(num_critics=10, edac_eta=1.0))


RAVL_SAC = SACConfig(
    hidden=256, depth=3, num_critics=10, edac_eta=1.0, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, gamma=0.99,
    tau=5e-3, batch_size=256, target_entropy=None, log_std_min=-5.0, log_std_max=2.0, init="edac",
    update_order="alpha_actor_critic",
)
"""RAVL's learner as released (anyasims/edge-of-reach ``train_ravl_agent.py`` / ``agent_training/agent.py``,
adapted from CORL's ``edac.py``): 10 critics and actor of 3 x 256, EDAC eta 1, lr 3e-4 for actor, critics and
alpha, gamma 0.99, tau 5e-3, batch 256, target entropy -|A|, log-std in [-5, 2], EDAC's initialisation, update
order alpha -> actor -> critic. Provenance per value: ``docs/presets.md``."""


RAVL_CPU_ROLLOUT_LENGTH = 20
"""Ours, the ``cpu`` preset's rollout length (released: 5), with MOPO's penalty (see :func:`ravl_preset`)."""


def ravl_preset(dataset: str, preset: Preset = "cpu", **overrides: Any) -> RAVLConfig:
    """RAVL as released (:data:`RAVL_SAC`; N=10, eta=1, k=5, real_ratio 0.05, 50k rollouts per epoch of 1000
    updates, 5 retained epochs, 7 members / 5 elites, no penalty) with the ``preset``'s budget: ``"paper"`` 3M
    updates, ``"cpu"`` 50k updates and 5k rollouts per epoch with bf16 matmuls where the CPU has them natively,
    ``"quick"`` a few hundred updates on small nets (smoke tests). ``overrides`` replace fields of
    :class:`RAVLConfig`, or of the loop when named ``loop_<field>``.

    The ``cpu`` preset adds a stabiliser of ours for its 50k-update budget: MOPO's uncertainty penalty (MOPO's
    released lambda for the dataset, :data:`~mbrl.agents.mopo.MOPO_TASKS`) and 20-step rollouts
    (:data:`RAVL_CPU_ROLLOUT_LENGTH`). Measured at 50k updates, 2 seeds (docs/results.md, "Offline RL at 25k-50k
    updates"): hopper/medium 31.0 and 87.2 against RAVL alone's 19.3, halfcheetah/medium-replay 72.2 and 76.4
    against 59.1; RAVL alone leaves the states just before Hopper's falls valued ~200 above their real return,
    with the stabiliser ~0-13 (``scripts/policy_diagnosis.py``). ``penalty="none", rollout_length=5`` gives
    RAVL as released on the cpu budget (the edge-of-reach experiment runs it so)."""
    algorithm: dict[str, Any] = {"rollout_length": 5, "retain_epochs": 5, "real_ratio": 0.05}
    full_info = False
    if preset == "cpu":
        coef, _ = mopo_task(dataset)
        algorithm |= {"penalty": "uncertainty", "penalty_coef": coef, "rollout_length": RAVL_CPU_ROLLOUT_LENGTH}
        full_info = True
    return preset_config(
        RAVLConfig,
        dataset,
        preset,
        overrides,
        sac=RAVL_SAC,
        full_info=full_info,
        paper_updates=3_000_000,
        **algorithm,
    )


RAVLAgent = OfflineModelBasedAgent
"""The offline model-based agent (RAVL given a :class:`RAVLConfig`, MOPO given a ``MOPOConfig``)."""

__all__ = [
    "MOPO_DEFAULT_TASK",
    "MOPO_SAC",
    "MOPO_TASKS",
    "RAVL_CPU_ROLLOUT_LENGTH",
    "RAVL_SAC",
    "MOPOConfig",
    "RAVLAgent",
    "RAVLConfig",
    "UncertaintyPenalty",
    "dataset_task",
    "mopo_preset",
    "ravl_preset",
]
