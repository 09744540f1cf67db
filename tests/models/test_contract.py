"""The WorldModel contract, run over every model in tests/models/factories.py; and the checker's own errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from torch import Tensor

from mbrl.models.contract import ContractError, check_world_model
from mbrl.models.protocol import WorldModel
from mbrl.types import ModelStep
from tests.models.dummy import DummyModel
from tests.models.factories import MODEL_CASES, ModelCase


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.name for c in MODEL_CASES])
def test_world_model_contract(case: ModelCase) -> None:
    model = case.factory()
    assert isinstance(model, WorldModel)
    check_world_model(
        case.factory, name=case.name, stochastic=case.stochastic, batch=case.batch() if case.batch else None
    )


class WrongRewardShape(DummyModel):
    def predict(self, obs: Tensor, action: Tensor, *, deterministic: bool = False, generator: Any = None) -> ModelStep:
        step = super().predict(obs, action, deterministic=deterministic, generator=generator)
        return ModelStep(step.next_obs, step.reward[:, None], step.terminated, step.info)


class IgnoresGenerator(DummyModel):
    def predict(self, obs: Tensor, action: Tensor, *, deterministic: bool = False, generator: Any = None) -> ModelStep:
        return super().predict(obs, action, deterministic=deterministic, generator=None)


class ForgetsState(DummyModel):
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        pass


class PickledState(DummyModel):
    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "cfg": DummyModel()}


class NoMse(DummyModel):
    def evaluate(self, batch: Any) -> dict[str, float]:
        return {"loss": 0.0}


class NanMetric(DummyModel):
    def update(self, batch: Any) -> dict[str, float]:
        return {"loss": float("nan")}


@pytest.mark.parametrize(
    ("cls", "kwargs", "stochastic", "message"),
    [
        (WrongRewardShape, {}, None, r"WrongRewardShape\.predict: expected reward of shape \[64\], got \[64, 1\]"),
        (IgnoresGenerator, {"noise_std": 0.1}, None, r"IgnoresGenerator\.predict: expected the same generator seed"),
        (DummyModel, {}, True, r"DummyModel\.predict: expected a different generator seed"),
        (DummyModel, {"noise_std": 0.1}, False, r"DummyModel\.predict: expected samples not to depend"),
        (ForgetsState, {}, None, r"ForgetsState\.load_state_dict: expected identical deterministic predictions"),
        (PickledState, {}, None, r"PickledState\.state_dict: expected tensors and plain data only"),
        (NoMse, {}, None, r"NoMse\.evaluate: expected key 'mse'"),
        (NanMetric, {}, None, r"NanMetric\.update: expected metric 'loss' to be finite"),
    ],
)
def test_checker_names_model_method_and_expectation(
    cls: type[DummyModel], kwargs: dict[str, Any], stochastic: bool | None, message: str
) -> None:
    with pytest.raises(ContractError, match=message):
        check_world_model(lambda: cls(**kwargs), stochastic=stochastic)


def test_checker_rejects_bad_dims() -> None:
    with pytest.raises(ContractError, match=r"DummyModel\.obs_dim: expected a positive int"):
        check_world_model(lambda: DummyModel(0, 2))
