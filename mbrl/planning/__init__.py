"""Model-predictive control planners (CEM, MPPI) over any WorldModel with a known or learned reward."""

from mbrl.planning.base import MPCPlanner, score_sequences
from mbrl.planning.cem import CEMConfig, CEMPlanner
from mbrl.planning.mppi import MPPIConfig, MPPIPlanner

__all__ = ["CEMConfig", "CEMPlanner", "MPCPlanner", "MPPIConfig", "MPPIPlanner", "score_sequences"]
