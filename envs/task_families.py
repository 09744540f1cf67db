"""Task families for continual model-based RL: gymnasium envs whose physics change from task to task.

A *family* is a sequence of tasks that share observation and action spaces and the reward function but
differ in their dynamics, as in the continual-learning experiments of HyperCRL (Huang et al., "Continual
Model-Based Reinforcement Learning with Hypernetworks", ICRA 2021), which varied Pendulum's gravity and
MuJoCo body sizes. Because only the dynamics change, one batched torch ``reward_fn`` and ``term_fn`` serve
every task of a family, and a planner can use them with any task's learned model.

Families:

- ``"pendulum"``: :class:`TaskPendulumEnv`, gymnasium's ``PendulumEnv`` with per-task gravity, pole mass,
  pole length and actuator sign (``-1``: the motor is wired backwards, a change no single model can average
  away). Default sequence: the standard pendulum, a heavier and longer pole under stronger gravity, and the
  standard pendulum with a reversed actuator. ``reward_fn`` is exact (same formula as the env, from the
  state before the step and the clipped torque), ``term_fn`` is never-terminates. 200 steps per episode.
- ``"inverted_pendulum"``: :class:`TaskInvertedPendulumEnv`, gymnasium's ``InvertedPendulum-v5`` whose XML
  is edited before compiling: the pole's length (``fromto``) and density are scaled, so MuJoCo recomputes
  its mass and inertia consistently. ``reward_fn = 1 - term_fn`` and ``term_fn`` (``|angle| > 0.2`` or a
  non-finite observation, read from ``next_obs``) are exact. 1000 steps per episode.

Use :func:`make_task_env` (``TimeLimit`` included) and :func:`get_family`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv
from gymnasium.wrappers import TimeLimit
from torch import Tensor

TaskRewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``reward_fn(obs [B, D], action [B, A], next_obs [B, D]) -> reward [B]``."""

TaskTermFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``term_fn(obs [B, D], action [B, A], next_obs [B, D]) -> terminated [B]`` (float 0/1)."""


# ---------------------------------------------------------------------------------------------------------
# Task parameters


@dataclass(frozen=True)
class PendulumTask:
    """Physics of one Pendulum task.

    Attributes:
        name: short label for tables and plots.
        gravity: ``g`` (gymnasium default 10).
        mass: pole mass ``m`` (default 1).
        length: pole length ``l`` (default 1).
        actuator_sign: ``+1`` normal, ``-1`` reversed motor (the env applies ``sign * u``).
    """

    name: str = "default"
    gravity: float = 10.0
    mass: float = 1.0
    length: float = 1.0
    actuator_sign: float = 1.0

    def __post_init__(self) -> None:
        for field_name in ("gravity", "mass", "length"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PendulumTask.{field_name} must be a positive finite number, got {value}")
        if self.actuator_sign not in (1.0, -1.0):
            raise ValueError(f"PendulumTask.actuator_sign must be +1 or -1, got {self.actuator_sign}")


@dataclass(frozen=True)
class InvertedPendulumTask:
    """Physics of one InvertedPendulum task: the pole's length and density relative to gymnasium's XML.

    Attributes:
        name: short label.
        pole_length_scale: multiplies the pole's length (0.6 m in the XML); mass and inertia follow.
        pole_density_scale: multiplies the pole's density (MuJoCo's default 1000), i.e. its mass.
    """

    name: str = "default"
    pole_length_scale: float = 1.0
    pole_density_scale: float = 1.0

    def __post_init__(self) -> None:
        for field_name in ("pole_length_scale", "pole_density_scale"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"InvertedPendulumTask.{field_name} must be a positive finite number, got {value}"
                )


Task = PendulumTask | InvertedPendulumTask


@dataclass(frozen=True)
class TaskSequence:
    """An ordered, immutable list of task parameters of one family.

    Attributes:
        family: the family's name (a key of :data:`FAMILIES`).
        tasks: the tasks, in the order an agent meets them.
    """

    family: str
    tasks: tuple[Task, ...]

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"TaskSequence({self.family!r}): no tasks")
        kinds = {type(t) for t in self.tasks}
        if len(kinds) != 1:
            raise ValueError(
                f"TaskSequence({self.family!r}): tasks of mixed types {sorted(k.__name__ for k in kinds)}"
            )

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Task:
        if not -len(self.tasks) <= index < len(self.tasks):
            raise IndexError(
                f"task index {index} out of range for {len(self.tasks)} tasks of {self.family!r}"
            )
        return self.tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]


# ---------------------------------------------------------------------------------------------------------
# Pendulum family

PENDULUM_MAX_TORQUE = 2.0  # gymnasium PendulumEnv.max_torque, the same for every task of the family
PENDULUM_MAX_STEPS = 200


class TaskPendulumEnv(PendulumEnv):
    """gymnasium's ``PendulumEnv`` with a task's gravity, mass, length and actuator sign.

    The observation ``[cos θ, sin θ, θ̇]``, action space (±2 N·m) and reward
    ``-(θ² + 0.1 θ̇² + 0.001 u²)`` (from the state before the step, ``u`` the clipped command) are gymnasium's;
    only the dynamics ``θ̈ = 3g/(2l) sin θ + 3/(m l²) · sign · u`` change.
    """

    def __init__(self, task: PendulumTask = PendulumTask(), render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, g=task.gravity)
        self.task = task
        self.m = task.mass
        self.l = task.length

    def step(self, u: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        u = np.asarray(u, dtype=np.float32)
        if self.task.actuator_sign < 0:
            # The reward's 0.001 u² term is symmetric, so flipping the command changes the dynamics only.
            u = -u
        obs, reward, terminated, truncated, info = super().step(u)
        return obs, float(reward), terminated, truncated, info


def pendulum_reward_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Exact Pendulum reward ``-(θ² + 0.1 θ̇² + 0.001 u²)`` for every task of the family.

    Args:
        obs: ``[B, 3]`` ``[cos θ, sin θ, θ̇]`` before the step (the env's cost uses the pre-step state).
        action: ``[B, 1]`` commanded torque in env units (clipped to ±2 like the env).
        next_obs: ``[B, 3]`` unused; kept for the uniform signature.

    Returns:
        ``[B]`` rewards. ``atan2`` gives θ in (-π, π], the env normalises to [-π, π): same square.
    """
    if obs.ndim != 2 or obs.shape[1] != 3 or action.ndim != 2 or action.shape != (obs.shape[0], 1):
        raise ValueError(
            f"pendulum_reward_fn: expected obs [B, 3] and action [B, 1], got {tuple(obs.shape)} and "
            f"{tuple(action.shape)}"
        )
    theta = torch.atan2(obs[:, 1], obs[:, 0])
    u = action[:, 0].clamp(-PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    return -(theta**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2)


def never_terminates(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """``[B]`` zeros: Pendulum episodes end only by the time limit."""
    return torch.zeros(next_obs.shape[0], dtype=next_obs.dtype, device=next_obs.device)


# ---------------------------------------------------------------------------------------------------------
# InvertedPendulum (MuJoCo) family

INVERTED_PENDULUM_MAX_STEPS = 1000
INVERTED_PENDULUM_MAX_ANGLE = 0.2  # gymnasium InvertedPendulum-v5 terminates when |hinge angle| > 0.2 rad


def _inverted_pendulum_xml(task: InvertedPendulumTask) -> str:
    """gymnasium's ``inverted_pendulum.xml`` with the pole's ``fromto`` end and density scaled."""
    import gymnasium.envs.mujoco as mj_envs

    path = Path(mj_envs.__file__).parent / "assets" / "inverted_pendulum.xml"
    root = ET.fromstring(path.read_text())
    pole = root.find(".//geom[@name='cpole']")
    if pole is None or "fromto" not in pole.attrib:
        raise ValueError(f"{path}: no geom 'cpole' with a 'fromto' attribute; gymnasium's XML changed")
    coords = [float(v) for v in pole.attrib["fromto"].split()]
    start, end = np.array(coords[:3]), np.array(coords[3:])
    end = start + task.pole_length_scale * (end - start)
    pole.set("fromto", " ".join(f"{v:.6g}" for v in (*start, *end)))
    # MuJoCo's default geom density is 1000 kg/m³; with inertiafromgeom="true" mass and inertia follow it.
    pole.set("density", f"{1000.0 * task.pole_density_scale:.6g}")
    return ET.tostring(root, encoding="unicode")


class TaskInvertedPendulumEnv(InvertedPendulumEnv):
    """gymnasium's ``InvertedPendulum-v5`` with a task's pole length and density.

    The model is compiled from the edited XML string (``MujocoEnv`` would otherwise load the file given by
    ``xml_file``); observation, action space, reward (``1`` while healthy) and termination are gymnasium's.
    """

    def __init__(self, task: InvertedPendulumTask = InvertedPendulumTask(), **kwargs: Any) -> None:
        self.task = task
        self._xml = _inverted_pendulum_xml(task)
        super().__init__(**kwargs)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = mujoco.MjModel.from_xml_string(self._xml)
        # As MujocoEnv does: never shrink the offscreen framebuffer below the render size.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)


def inverted_pendulum_term_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """``[B]`` 1.0 where ``|next_obs[:, 1]| > 0.2`` (hinge angle) or ``next_obs`` has a non-finite entry."""
    if next_obs.ndim != 2 or next_obs.shape[1] != 4:
        raise ValueError(f"inverted_pendulum_term_fn: expected next_obs [B, 4], got {tuple(next_obs.shape)}")
    bad = ~torch.isfinite(next_obs).all(dim=1) | (next_obs[:, 1].abs() > INVERTED_PENDULUM_MAX_ANGLE)
    return bad.to(next_obs.dtype if next_obs.is_floating_point() else torch.float32)


def inverted_pendulum_reward_fn(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """``[B]`` InvertedPendulum-v5 reward ``1 - terminated`` (exact)."""
    return 1.0 - inverted_pendulum_term_fn(obs, action, next_obs)


# ---------------------------------------------------------------------------------------------------------
# Families


@dataclass(frozen=True)
class TaskFamily:
    """Everything an agent needs to know about one family.

    Attributes:
        name: family name.
        sequence: the default task sequence.
        obs_dim: observation size D.
        action_dim: action size A.
        reward_fn: batched reward ``(obs, action, next_obs) -> [B]``, valid for every task.
        term_fn: batched termination ``(obs, action, next_obs) -> [B]`` float 0/1, valid for every task.
        max_episode_steps: the ``TimeLimit`` of :func:`make_task_env`.
        build: ``task -> env`` (unwrapped, no time limit).
    """

    name: str
    sequence: TaskSequence
    obs_dim: int
    action_dim: int
    reward_fn: TaskRewardFn
    term_fn: TaskTermFn
    max_episode_steps: int
    build: Callable[[Any], gym.Env]


PENDULUM_SEQUENCE = TaskSequence(
    "pendulum",
    (
        PendulumTask("default"),
        # Heavier, longer pole under stronger gravity: control authority 3/(m l²) drops from 3 to ~1.7.
        PendulumTask("heavy-long", gravity=12.0, mass=1.25, length=1.2),
        PendulumTask("reversed", actuator_sign=-1.0),
    ),
)

INVERTED_PENDULUM_SEQUENCE = TaskSequence(
    "inverted_pendulum",
    (
        InvertedPendulumTask("default"),
        InvertedPendulumTask("long-pole", pole_length_scale=1.6),
        InvertedPendulumTask("short-heavy-pole", pole_length_scale=0.6, pole_density_scale=4.0),
    ),
)


def _build_pendulum(task: Any) -> gym.Env:
    if not isinstance(task, PendulumTask):
        raise TypeError(f"pendulum family: expected a PendulumTask, got {type(task).__name__}")
    return TaskPendulumEnv(task)


def _build_inverted_pendulum(task: Any) -> gym.Env:
    if not isinstance(task, InvertedPendulumTask):
        raise TypeError(
            f"inverted_pendulum family: expected an InvertedPendulumTask, got {type(task).__name__}"
        )
    return TaskInvertedPendulumEnv(task)


FAMILIES: dict[str, TaskFamily] = {
    "pendulum": TaskFamily(
        name="pendulum",
        sequence=PENDULUM_SEQUENCE,
        obs_dim=3,
        action_dim=1,
        reward_fn=pendulum_reward_fn,
        term_fn=never_terminates,
        max_episode_steps=PENDULUM_MAX_STEPS,
        build=_build_pendulum,
    ),
    "inverted_pendulum": TaskFamily(
        name="inverted_pendulum",
        sequence=INVERTED_PENDULUM_SEQUENCE,
        obs_dim=4,
        action_dim=1,
        reward_fn=inverted_pendulum_reward_fn,
        term_fn=inverted_pendulum_term_fn,
        max_episode_steps=INVERTED_PENDULUM_MAX_STEPS,
        build=_build_inverted_pendulum,
    ),
}


def get_family(name: str) -> TaskFamily:
    """The :class:`TaskFamily` called ``name``; a ``ValueError`` listing the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}") from None


def make_task_env(
    family: str,
    task_index: int,
    seed: int | None = None,
    *,
    sequence: TaskSequence | None = None,
    max_episode_steps: int | None = None,
) -> gym.Env:
    """Build task ``task_index`` of ``family`` wrapped in a ``TimeLimit``.

    Args:
        family: a key of :data:`FAMILIES`.
        task_index: index into the sequence.
        seed: if given, the env is reset once with it and its spaces are seeded, so later unseeded resets are
            reproducible (same convention as :func:`mbrl.envs.registry.make_env`).
        sequence: a custom sequence of the family's task type (default: the family's own).
        max_episode_steps: override the family's time limit.
    """
    fam = get_family(family)
    seq = fam.sequence if sequence is None else sequence
    if seq.family != family:
        raise ValueError(f"make_task_env: sequence belongs to family {seq.family!r}, not {family!r}")
    env: gym.Env = TimeLimit(fam.build(seq[task_index]), max_episode_steps or fam.max_episode_steps)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env
