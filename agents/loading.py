"""Load any run and use its policy as SB3 users do: ``mbrl.load(run_dir).predict(obs, deterministic=True)``;
export the policy alone (``mbrl export RUN_DIR policy.pt``) to run it without the toolkit.

Online runs (``mbrl train dyna|sac|lipschitz``: a ``DynaConfig`` in ``config.json``) and offline runs (``mbrl
train ravl|mopo|bc``: an ``algo`` key) both load; the policy of every one is a Tanh-Gaussian actor, so one
export format serves all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl.checkpoint import CheckpointError, atomic_torch_save
from mbrl.rl.networks import TanhGaussianActor
from mbrl.run import RunDir, config_from_dict
from mbrl.utils import with_device

EXPORT_FORMAT = "mbrl-tanh-gaussian-policy/1"


class LoadedAgent:
    """A trained agent read back from its run directory.

    Attributes:
        agent: the toolkit's agent object (``DynaAgent``, ``RAVLAgent``, ``BCAgent``, ``HyperCRLAgent``).
        kind: ``"online"``, ``"offline"`` or ``"planning"`` (MPC on a learned model: no policy network to export).
        algo: ``dyna``, ``sac``, ``ravl``, ``mopo``, ``bc`` or ``hypercrl``.
        run_dir: where it came from.
    """

    def __init__(self, agent: Any, kind: str, algo: str, run_dir: Path) -> None:
        self.agent = agent
        self.kind = kind
        self.algo = algo
        self.run_dir = run_dir

    @property
    def _learner(self) -> Any:
        learner = getattr(self.agent, "sac", None) or getattr(self.agent, "bc", None)  # SAC (Dyna, RAVL, MOPO) or BC
        if learner is None:
            raise ValueError(f"{self.run_dir}: a {self.algo} run plans with its model (MPC): it has no policy network")
        return learner

    @property
    def actor(self) -> TanhGaussianActor:
        """The policy network (in ``[-1, 1]`` action units)."""
        return self._learner.actor  # type: ignore[no-any-return]

    @property
    def obs_dim(self) -> int:
        own = getattr(self.agent, "obs_dim", None)  # a planning agent's; the learners carry theirs
        return int(own if own is not None else self._learner.obs_dim)

    @property
    def action_scale(self) -> torch.Tensor:
        return self._learner.action_scale  # type: ignore[no-any-return]

    @property
    def action_bias(self) -> torch.Tensor:
        return self._learner.action_bias  # type: ignore[no-any-return]

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Env-unit actions for one observation ``[D]`` (-> ``[A]``) or a batch ``[B, D]`` (-> ``[B, A]``).

        Returns ``(action, None)`` like SB3's ``predict`` (the second item is SB3's recurrent state).
        Stochastic actions (``deterministic=False``) draw from the agent's own generator.
        """
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"predict: obs must be [D] or [B, D] with D = {self.obs_dim}, got shape {obs.shape}")
        if self.kind == "planning" and obs.ndim == 2:  # MPC plans one state at a time
            action = np.stack([np.asarray(self.agent.act(o, deterministic=deterministic)) for o in obs])
        else:
            action = np.asarray(self.agent.act(obs, deterministic=deterministic))
        action = action.astype(np.float32)
        return action.reshape((*obs.shape[:-1], action.shape[-1])), None

    def __repr__(self) -> str:
        return f"LoadedAgent({self.algo}, {self.kind}, run_dir={str(self.run_dir)!r})"


def load(run_dir: str | Path, *, device: str | None = None) -> LoadedAgent:
    """The agent of ``run_dir`` (any ``mbrl train`` run) at its latest checkpoint, on ``device`` (cpu, cuda,
    auto; default: the run's own) whatever device it was trained on.

    Raises:
        FileNotFoundError: not a run directory, or no checkpoint yet.
    """
    from mbrl.agents.offline_commands import load_run_agent

    run = RunDir(Path(run_dir))
    if not run.config_path.is_file():
        raise FileNotFoundError(f"{run.config_path}: no such file (not a run directory)")
    stored = dict(run.read_config())
    if stored.get("algo") == "hypercrl":
        return LoadedAgent(load_planning_agent(run, device=device), "planning", "hypercrl", run.path)
    if "algo" in stored:
        return LoadedAgent(load_run_agent(run.path, device=device), "offline", str(stored["algo"]), run.path)
    agent = load_online_agent(run, device=device)
    return LoadedAgent(agent, "online", "dyna" if agent.config.use_model else "sac", run.path)


def load_planning_agent(run: RunDir, *, device: str | None = None) -> Any:
    """The ``HyperCRLAgent`` (MPC on a learned model) of a run such as ``mbrl run-demo``'s, at its latest
    checkpoint, planning on the task it learned last.

    Raises:
        FileNotFoundError: the run has no checkpoint yet.
    """
    from mbrl.agents.hypercrl import HyperCRLAgent, HyperCRLConfig

    stored = {k: v for k, v in run.read_config().items() if k != "algo"}
    agent = HyperCRLAgent(with_device(config_from_dict(HyperCRLConfig, stored), device))
    path = run.latest_checkpoint()
    if path is None:
        raise FileNotFoundError(f"{run.checkpoints_dir}: no checkpoint to load")
    agent.load(path)
    return agent


def load_online_agent(run: RunDir, *, device: str | None = None) -> Any:
    """The ``DynaAgent`` of an online run (``mbrl train dyna|sac|lipschitz``) at its latest checkpoint.

    Raises:
        FileNotFoundError: the run has no checkpoint yet.
    """
    from mbrl.agents.dyna import DynaAgent, DynaConfig

    agent = DynaAgent(with_device(config_from_dict(DynaConfig, dict(run.read_config())), device))
    path = run.latest_checkpoint()
    if path is None:
        raise FileNotFoundError(f"{run.checkpoints_dir}: no checkpoint to load")
    agent.load(path)
    return agent


def export_policy(run_dir: str | Path, path: str | Path) -> Path:
    """Write the policy of ``run_dir`` alone to ``path``: the actor's weights (``layers``: a list of
    ``(weight [out, in], bias [out])``, ReLU between them, the last one giving ``[mean, log_std]``) and the numbers
    that map its ``tanh(mean)`` to env units (``scale``, ``bias``). Tensors, ints and strings only: it loads with
    ``torch.load(path, weights_only=True)`` and runs without the toolkit (README: "Use a trained policy")."""
    loaded = load(run_dir)
    actor = loaded.actor
    layers = [(layer.weight.detach().cpu().clone(), layer.bias.detach().cpu().clone())
              for layer in [*actor.hidden_layers, actor.head]]  # type: ignore[union-attr]
    payload = {
        "format": EXPORT_FORMAT,
        "algo": loaded.algo,
        "env_id": getattr(loaded.agent, "env_id", None) or loaded.agent.config.env_id,
        "obs_dim": int(layers[0][0].shape[1]),
        "action_dim": int(actor.action_dim),
        "layers": layers,
        "scale": loaded.action_scale.detach().cpu().clone(),
        "bias": loaded.action_bias.detach().cpu().clone(),
    }
    return atomic_torch_save(payload, path)


def exported_action(policy: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """The deterministic action of an exported policy (what the README's snippet computes), for tests."""
    if policy.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"not an exported policy (format {policy.get('format')!r}, expected {EXPORT_FORMAT!r})")
    x = torch.as_tensor(obs, dtype=torch.float32)
    for w, b in policy["layers"][:-1]:
        x = torch.relu(x @ w.T + b)
    w, b = policy["layers"][-1]
    mean = (x @ w.T + b)[..., : policy["action_dim"]]
    return (torch.tanh(mean) * policy["scale"] + policy["bias"]).numpy()


def export_command(run_dir: str, path: str, /) -> int:
    """Write a run's policy alone (weights + action scaling, loadable with ``torch.load(weights_only=True)``).

    Args:
        run_dir: a run directory of ``mbrl train ...``.
        path: the file to write, e.g. ``policy.pt``.
    """
    out = export_policy(run_dir, path)
    print(f"wrote {out} (load with torch.load(path, weights_only=True); see the README's 'Use a trained policy')")
    return 0
