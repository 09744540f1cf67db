"""Offline behaviour cloning (the baseline of the RAVL/MOPO comparison): :class:`mbrl.rl.bc.BC` trained on
uniform minibatches of the dataset inside the shared offline loop (:mod:`mbrl.agents.offline`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from mbrl.agents.offline import OfflineAgent, OfflineLoopConfig, torch_generator
from mbrl.data import OfflineDataset
from mbrl.rl.bc import BC, BCConfig
from mbrl.types import Metrics


@dataclass(frozen=True)
class BCAgentConfig:
    """An offline BC run.

    Attributes:
        loop: dataset, updates, evaluation, checkpoints.
        bc: the learner (deterministic MSE BC, 256x256 by default).
    """

    loop: Annotated[OfflineLoopConfig, tyro.conf.arg(name="")] = field(default_factory=OfflineLoopConfig)
    bc: BCConfig = field(default_factory=BCConfig)


def bc_preset(dataset: str, preset: str = "cpu", **loop_overrides: Any) -> BCAgentConfig:
    """``"paper"``: 1M updates (as the D4RL BC baselines); ``"cpu"``: 50k updates; ``"quick"``: 200 updates."""
    updates = {"paper": 1_000_000, "cpu": 50_000, "quick": 200}[preset]
    evals = {"paper": 10_000, "cpu": 5_000, "quick": 100}[preset]
    loop = OfflineLoopConfig(
        dataset=dataset,
        updates=updates,
        eval_every=evals,
        checkpoint_every=evals,
        log_every=min(1000, evals),
        eval_episodes=10 if preset != "quick" else 2,
    )
    return BCAgentConfig(loop=replace(loop, **loop_overrides))


class BCAgent(OfflineAgent):
    """Behaviour cloning on an offline dataset."""

    algo = "bc"

    def __init__(
        self,
        config: BCAgentConfig,
        *,
        dataset: OfflineDataset | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        super().__init__(config, dataset=dataset, run_dir=run_dir)
        self.config: BCAgentConfig = config
        self.bc = BC(
            self.obs_dim,
            self.action_dim,
            self.action_low,
            self.action_high,
            config.bc,
            generator=torch_generator(config.loop.seed, 1),
        )

    def _train_step(self) -> Metrics:
        return self.bc.update(self.dataset.sample(self.config.bc.batch_size, self.rng, self.bc.device))

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.asarray(self.bc.act(obs, deterministic=deterministic))

    def _learner_state(self) -> dict[str, Any]:
        return {"bc": self.bc.state_dict()}

    def _load_learner_state(self, state: dict[str, Any]) -> None:
        self.bc.load_state_dict(state["bc"])
