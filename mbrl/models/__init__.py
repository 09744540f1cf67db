"""World models and the protocol agents use to reach them."""

from mbrl.models.protocol import Ensemble, InverseDynamics, TaskConditioned, WorldModel

__all__ = ["Ensemble", "InverseDynamics", "TaskConditioned", "WorldModel"]
