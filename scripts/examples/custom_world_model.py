"""Plug your own world model into the toolkit: a model written from scratch, used unchanged by Dyna and RAVL.

``RidgeWorldModel`` below is a Bayesian linear (ridge) regression of ``[next_obs - obs, reward]`` on
``[obs, action, 1]``. It imports nothing from ``mbrl.models``: it satisfies the ``WorldModel`` protocol
structurally (``obs_dim``, ``action_dim``, ``predict``, ``update``, ``evaluate``, ``state_dict``,
``load_state_dict``). ``update`` adds a batch to the sufficient statistics and re-solves (one exact pass, no
epochs), so the example trains it with Dyna's ``model_training="online"`` and RAVL's ``fit`` capped at one epoch.
Its posterior predictive standard deviation is ``info["uncertainty"]``, so MOPO's penalty would work too.

The script then runs (1) Dyna (MBPO-style) online on InvertedPendulum-v5, (2) RAVL offline on the Dyna run's
replay data, and prints both evaluations. ``--quick`` is a smoke test (~15 s); the default takes a few minutes.

    python scripts/examples/custom_world_model.py [--quick] [--seed 0]
    mbrl model check scripts/examples/custom_world_model.py:make_model   # the contract checks
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from mbrl.types import Metrics, ModelStep, TransitionBatch


class RidgeWorldModel:
    """Bayesian ridge regression of ``[Δobs, reward]`` on ``[obs, action, 1]``, solved exactly from sums."""

    def __init__(self, obs_dim: int, action_dim: int, ridge: float = 1e-2) -> None:
        self.obs_dim, self.action_dim, self.ridge = obs_dim, action_dim, ridge
        f, o = obs_dim + action_dim + 1, obs_dim + 1
        z = torch.zeros  # float64 sums: X^T X, X^T Y, diag(Y^T Y), row count
        self._load({"xtx": z(f, f, dtype=torch.float64), "xty": z(f, o, dtype=torch.float64),
                    "yty": z(o, dtype=torch.float64), "n": z((), dtype=torch.float64)})

    def _load(self, s: Mapping[str, Tensor]) -> None:
        self.xtx, self.xty, self.yty, self.n = (s[k].clone().double() for k in ("xtx", "xty", "yty", "n"))
        self.a_inv = torch.linalg.inv(self.xtx + self.ridge * torch.eye(self.xtx.shape[0], dtype=torch.float64))
        self.w = self.a_inv @ self.xty  # [F, D+1]
        sse = self.yty - (self.w * self.xty).sum(0) - self.ridge * (self.w**2).sum(0)  # per-output residual sum
        self.noise_var = (sse.clamp_min(0.0) + 1e-6) / (self.n + 1.0)  # [D+1]

    @staticmethod
    def _xy(b: TransitionBatch) -> tuple[Tensor, Tensor]:
        x = torch.cat([b.obs, b.action, torch.ones(len(b), 1)], 1).double()
        return x, torch.cat([b.next_obs - b.obs, b.reward[:, None]], 1).double()

    def predict(self, obs: Tensor, action: Tensor, *, deterministic: bool = False,
                generator: torch.Generator | None = None) -> ModelStep:
        x = torch.cat([obs, action, torch.ones(len(obs), 1)], 1).double()
        mean = x @ self.w  # [B, D+1]
        var = self.noise_var * (1.0 + ((x @ self.a_inv) * x).sum(1, keepdim=True))  # posterior predictive
        y = mean if deterministic else mean + var.sqrt() * torch.randn(mean.shape, generator=generator, dtype=torch.float64)
        d = self.obs_dim
        return ModelStep(next_obs=(obs.double() + y[:, :d]).float(), reward=y[:, d].float(),
                         terminated=torch.zeros(len(obs)), info={"uncertainty": var.sum(1).sqrt().float()})

    def update(self, batch: TransitionBatch) -> Metrics:
        x, y = self._xy(batch)
        loss = float(((x @ self.w - y) ** 2).mean())  # prequential: error on the batch before learning it
        self._load({"xtx": self.xtx + x.T @ x, "xty": self.xty + x.T @ y, "yty": self.yty + (y**2).sum(0),
                    "n": self.n + len(batch)})
        return {"loss": loss, "rows_seen": float(self.n)}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        x, y = self._xy(batch)
        err = (x @ self.w - y) ** 2
        return {"loss": float(err.mean()), "mse": float(err[:, : self.obs_dim].mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"xtx": self.xtx.clone(), "xty": self.xty.clone(), "yty": self.yty.clone(), "n": self.n.clone()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._load(state_dict)


def make_model() -> RidgeWorldModel:
    """The factory the contract checks use: InvertedPendulum-v5's dims (obs 4, action 1)."""
    return RidgeWorldModel(obs_dim=4, action_dim=1)


# ----------------------------------------------------------------------------------------- using it, unchanged
def run_dyna(quick: bool, seed: int, steps: int) -> tuple[Any, dict[str, float]]:
    """Dyna (MBPO-style) on InvertedPendulum-v5 with the ridge model; returns (agent, final evaluation)."""
    from mbrl.agents.dyna import DynaAgent, cpu_preset

    config = cpu_preset("InvertedPendulum-v5", seed=seed, model_training="online", eval_every=0, checkpoint_every=0)
    if quick:
        config = replace(config, total_steps=300, init_random_steps=100, model_train_every=50, rollouts_per_step=10,
                         utd=1, eval_episodes=2, sac=replace(config.sac, hidden=64, batch_size=64))
    else:
        config = replace(config, total_steps=steps, utd=5, eval_episodes=5)
    agent = DynaAgent(config, model=make_model())
    return agent, agent.learn()


def run_ravl(dyna_agent: Any, quick: bool, seed: int, updates: int) -> dict[str, float]:
    """RAVL on the Dyna run's replay data (an offline "replay" dataset) with a fresh ridge model."""
    from mbrl.agents.ravl import RAVLAgent, ravl_preset

    dataset = dyna_agent.real_buffer.to_dataset(env_id="InvertedPendulum-v5", source="dyna replay (example)")
    config = ravl_preset("<in memory>", "quick" if quick else "cpu", loop_seed=seed, loop_env_id="InvertedPendulum-v5",
                         loop_ref_min_score=0.0, loop_ref_max_score=1000.0)  # InvertedPendulum returns lie in [0, 1000]
    config = replace(config, fit=replace(config.fit, max_epochs=1, max_time_s=None))  # one exact pass over the data
    if quick:
        config = replace(config, loop=replace(config.loop, updates=200, eval_every=0), rollouts_per_epoch=100)
    else:
        config = replace(config, loop=replace(config.loop, updates=updates, eval_every=0, eval_episodes=5))
    agent = RAVLAgent(config, dataset=dataset, model=make_model())
    return agent.learn()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred steps/updates (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dyna-steps", type=int, default=2500, help="Dyna env steps (without --quick)")
    parser.add_argument("--ravl-updates", type=int, default=2000, help="RAVL gradient updates (without --quick)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    dyna, dyna_eval = run_dyna(args.quick, args.seed, args.dyna_steps)
    print(f"dyna InvertedPendulum-v5 ({dyna.step} env steps, model {type(dyna.model).__name__}): "
          f"eval return {dyna_eval['eval/return_mean']:.1f} +- {dyna_eval['eval/return_std']:.1f}"
          f"  [{time.perf_counter() - t0:.1f} s]")
    t1 = time.perf_counter()
    ravl_eval = run_ravl(dyna, args.quick, args.seed, args.ravl_updates)
    print(f"ravl offline ({len(dyna.real_buffer)} transitions of Dyna replay): eval return "
          f"{ravl_eval['eval/return_mean']:.1f} +- {ravl_eval['eval/return_std']:.1f}, normalized score "
          f"{ravl_eval['eval/normalized_score']:.1f}  [{time.perf_counter() - t1:.1f} s]")


if __name__ == "__main__":
    main()
