"""Task families: check_env, the physics really change per task, exact batched reward/termination functions."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from mbrl.envs.task_families import (
    FAMILIES,
    InvertedPendulumTask,
    PendulumTask,
    TaskSequence,
    get_family,
    make_task_env,
)

ALL_TASKS = [(name, i) for name, fam in FAMILIES.items() for i in range(len(fam.sequence))]


@pytest.mark.parametrize(("family", "index"), ALL_TASKS)
def test_check_env(family: str, index: int) -> None:
    env = make_task_env(family, index, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gymnasium's advice about non-normalised Box spaces
        check_env(env.unwrapped, skip_render_check=True)
    spec = get_family(family)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.action_dim,)


def _rollout(
    env: gym.Env, actions: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    rows_obs, rows_next, rewards, terms = [], [], [], []
    for a in actions:
        next_obs, reward, terminated, truncated, _ = env.step(a)
        rows_obs.append(obs)
        rows_next.append(next_obs)
        rewards.append(reward)
        terms.append(terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset(seed=seed + len(rewards))
    return np.array(rows_obs), np.array(rows_next), np.array(rewards), np.array(terms, dtype=float)


@pytest.mark.parametrize(("family", "index"), ALL_TASKS)
def test_reward_and_term_fn_match_env(family: str, index: int) -> None:
    fam = get_family(family)
    env = make_task_env(family, index)
    rng = np.random.default_rng(index)
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)
    # Actions beyond the bounds check that reward_fn clips like the env.
    actions = rng.uniform(1.5 * space.low, 1.5 * space.high, size=(300, fam.action_dim)).astype(np.float32)
    obs, next_obs, rewards, terms = _rollout(env, actions, seed=10 + index)
    o, a, n = (torch.as_tensor(x, dtype=torch.float64) for x in (obs, actions, next_obs))
    np.testing.assert_allclose(fam.reward_fn(o, a, n).numpy(), rewards, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(fam.term_fn(o, a, n).numpy(), terms)
    if family == "inverted_pendulum":
        assert terms.sum() > 0, "random actions should topple the pole at least once in 300 steps"


def test_pendulum_tasks_follow_their_physics() -> None:
    """One step from a set state matches θ̈ = 3g/(2l) sin θ + 3/(m l²) · sign · u for every task."""
    fam = get_family("pendulum")
    th, thdot, u = 0.7, -1.3, 1.5
    next_states = []
    for i, task in enumerate(fam.sequence):
        assert isinstance(task, PendulumTask)
        env = make_task_env("pendulum", i, seed=0)
        env.unwrapped.state = np.array([th, thdot])  # type: ignore[attr-defined]
        obs, *_ = env.step(np.array([u], dtype=np.float32))
        acc = (
            3 * task.gravity / (2 * task.length) * np.sin(th)
            + 3.0 / (task.mass * task.length**2) * task.actuator_sign * u
        )
        new_thdot = np.clip(thdot + acc * 0.05, -8, 8)
        new_th = th + new_thdot * 0.05
        np.testing.assert_allclose(obs, [np.cos(new_th), np.sin(new_th), new_thdot], rtol=1e-6, atol=1e-6)
        next_states.append(obs)
    # The tasks really differ from each other.
    for i in range(len(next_states)):
        for j in range(i + 1, len(next_states)):
            assert np.abs(next_states[i] - next_states[j]).max() > 1e-2


def test_reversed_actuator_is_the_mirror_action() -> None:
    seq = TaskSequence("pendulum", (PendulumTask("a"), PendulumTask("b", actuator_sign=-1.0)))
    normal = make_task_env("pendulum", 0, sequence=seq)
    reversed_ = make_task_env("pendulum", 1, sequence=seq)
    actions = np.random.default_rng(0).uniform(-2, 2, size=(50, 1)).astype(np.float32)
    _o1, n1, r1, _ = _rollout(normal, actions, seed=3)
    _o2, n2, r2, _ = _rollout(reversed_, -actions, seed=3)
    np.testing.assert_array_equal(n1, n2)
    np.testing.assert_array_equal(r1, r2)


def test_inverted_pendulum_pole_mass_and_length() -> None:
    seq = TaskSequence(
        "inverted_pendulum",
        (
            InvertedPendulumTask("base"),
            InvertedPendulumTask("dense", pole_density_scale=4.0),
            InvertedPendulumTask("long", pole_length_scale=1.5),
        ),
    )
    models = [make_task_env("inverted_pendulum", i, sequence=seq).unwrapped.model for i in range(3)]  # type: ignore[attr-defined]
    pole = [m.body("pole").id for m in models]
    masses = [m.body_mass[p] for m, p in zip(models, pole)]
    np.testing.assert_allclose(masses[1], 4.0 * masses[0], rtol=1e-9)
    assert masses[2] > 1.3 * masses[0]  # longer capsule: more volume
    geoms = [m.geom("cpole").id for m in models]
    np.testing.assert_allclose(
        models[2].geom_size[geoms[2]][1], 1.5 * models[0].geom_size[geoms[0]][1], rtol=1e-5
    )
    # Same actions, different trajectories.
    actions = np.random.default_rng(1).uniform(-3, 3, size=(5, 1)).astype(np.float32)
    finals = [
        _rollout(make_task_env("inverted_pendulum", i, sequence=seq), actions, seed=0)[1][-1]
        for i in range(3)
    ]
    assert np.abs(finals[0] - finals[1]).max() > 1e-3
    assert np.abs(finals[0] - finals[2]).max() > 1e-3


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="unknown task family 'nope'"):
        make_task_env("nope", 0)
    with pytest.raises(IndexError, match="task index 7"):
        make_task_env("pendulum", 7)
    with pytest.raises(ValueError, match="actuator_sign"):
        PendulumTask(actuator_sign=0.5)
    with pytest.raises(ValueError, match="mass"):
        PendulumTask(mass=0.0)
    with pytest.raises(ValueError, match="mixed types"):
        TaskSequence("pendulum", (PendulumTask(), InvertedPendulumTask()))
    with pytest.raises(ValueError, match="belongs to family"):
        make_task_env("inverted_pendulum", 0, sequence=get_family("pendulum").sequence)
    with pytest.raises(ValueError, match=r"obs \[B, 3\]"):
        get_family("pendulum").reward_fn(torch.zeros(2, 4), torch.zeros(2, 1), torch.zeros(2, 4))


def test_time_limits_and_seeding() -> None:
    env = make_task_env("pendulum", 1, seed=5)
    assert env.spec is None or env.spec.max_episode_steps in (None, 200)
    a = env.action_space.sample()
    b = make_task_env("pendulum", 1, seed=5).action_space.sample()
    np.testing.assert_array_equal(a, b)
    env.reset(seed=1)
    steps = 0
    while True:
        _obs, _, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
        steps += 1
        if terminated or truncated:
            break
    assert steps == 200 and truncated
