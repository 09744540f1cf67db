"""World models and the protocol agents use to reach them."""

from mbrl.models.contract import ContractError, check_world_model
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, FitReport, fit
from mbrl.models.protocol import Ensemble, InverseDynamics, TaskConditioned, WorldModel
from mbrl.models.wrappers import KnownFunctionsModel

__all__ = [
    "ContractError",
    "Ensemble",
    "EnsembleConfig",
    "FitConfig",
    "FitReport",
    "InverseDynamics",
    "KnownFunctionsModel",
    "ProbabilisticEnsemble",
    "TaskConditioned",
    "WorldModel",
    "check_world_model",
    "fit",
]
