"""Every WorldModel of the package, for the contract suite (tests/models/test_contract.py).

Add a model by appending a ``ModelCase``: a name, a factory building a fresh identically configured model,
and optionally the batch to check it on (default: ``mbrl.models.contract.synthetic_batch`` of its dims) and
whether its sampled predictions must depend on the generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mbrl.envs import get_spec
from mbrl.models.dynamics_reward import DynamicsReward
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.hypernet import HyperNetworkModel
from mbrl.models.losse import LosseConfig, LosseModel
from mbrl.models.morec import RewardConsistentFilter
from mbrl.models.multihead import MLPDynamicsModel
from mbrl.models.protocol import WorldModel
from mbrl.models.true_dynamics import TrueDynamicsModel
from mbrl.models.wrappers import KnownFunctionsModel
from mbrl.types import TransitionBatch
from tests.models.dummy import DummyModel


@dataclass(frozen=True)
class ModelCase:
    name: str
    factory: Callable[[], WorldModel]
    stochastic: bool | None = None
    batch: Callable[[], TransitionBatch] | None = None


def _small(**kwargs: object) -> EnsembleConfig:
    cfg = {"num_members": 3, "num_elites": 2, "hidden": 32, "depth": 2, "device": "cpu", **kwargs}
    return EnsembleConfig(**cfg)  # type: ignore[arg-type]


def _halfcheetah_batch() -> TransitionBatch:
    from tests.models.data import random_dataset

    return random_dataset("HalfCheetah-v5", 200, episode_len=200, seed=0).to_batch().index(slice(0, 64))


def _hopper_batch() -> TransitionBatch:
    from tests.models.data import random_dataset

    return random_dataset("Hopper-v5", 200, episode_len=100, seed=0).to_batch().index(slice(0, 64))


MODEL_CASES: list[ModelCase] = [
    ModelCase("ensemble", lambda: ProbabilisticEnsemble(5, 3, _small(), seed=1), stochastic=True),
    ModelCase(
        "ensemble-bf16-targets-raw",
        lambda: ProbabilisticEnsemble(5, 3, _small(bf16_inference=True, normalize_targets=False), seed=1),
        stochastic=True,
    ),
    ModelCase(
        "ensemble-lean-bf16-training",
        lambda: ProbabilisticEnsemble(5, 3, _small(full_info=False, bf16_training=True), seed=1),
        stochastic=True,
    ),
    ModelCase(
        "deterministic-single",
        lambda: ProbabilisticEnsemble(5, 3, _small(num_members=1, num_elites=1, deterministic=True)),
        stochastic=False,
    ),
    # A deterministic ensemble still samples which member predicts each row.
    ModelCase("deterministic-ensemble", lambda: ProbabilisticEnsemble(5, 3, _small(deterministic=True)), stochastic=True),
    ModelCase("dummy", lambda: DummyModel(4, 2), stochastic=False),
    ModelCase("dummy-noisy", lambda: DummyModel(4, 2, noise_std=0.1), stochastic=True),
    ModelCase(
        "known-functions-ensemble",
        lambda: KnownFunctionsModel.for_env(ProbabilisticEnsemble(11, 3, _small(), seed=2), get_spec("Hopper-v5")),
        stochastic=True,
        batch=_hopper_batch,
    ),
    # MOREC's filter on the same chain RAVL/MOPO build (an untrained dynamics reward: the contract, not its quality;
    # tests/models/test_morec.py checks it with a learned one and runs RAVL, MOPO and Dyna on it).
    ModelCase(
        "morec-filtered-ensemble",
        lambda: RewardConsistentFilter(
            KnownFunctionsModel.for_env(ProbabilisticEnsemble(11, 3, _small(), seed=2), get_spec("Hopper-v5")),
            DynamicsReward(11, 3, seed=0),
        ),
        stochastic=True,
        batch=_hopper_batch,
    ),
    ModelCase("losse-ftl", lambda: LosseModel(5, 3, LosseConfig(num_groups=8, num_bins=4), seed=0), stochastic=False),
    ModelCase(
        "hypernetwork", lambda: HyperNetworkModel(5, 3, generator=torch.Generator().manual_seed(0)), stochastic=None
    ),
    ModelCase(
        "mlp-dynamics", lambda: MLPDynamicsModel(5, 3, generator=torch.Generator().manual_seed(0)), stochastic=None
    ),
    ModelCase("true-dynamics", lambda: TrueDynamicsModel("HalfCheetah-v5"), stochastic=False, batch=_halfcheetah_batch),
]


def by_name(name: str) -> ModelCase:
    return next(c for c in MODEL_CASES if c.name == name)
