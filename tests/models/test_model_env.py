"""ModelEnv / VectorModelEnv: env checkers, exact semantics on the closed-form model, seeding, SB3 training."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import SAC
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.logger import configure

from mbrl.envs import get_spec
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.fit import FitConfig, fit
from mbrl.rollouts import ModelEnv, VectorModelEnv
from tests.models.data import random_dataset
from tests.models.dummy import DummyModel

BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)


def dummy_env(**kwargs: object) -> ModelEnv:
    model = kwargs.pop("model", None) or DummyModel()
    start = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    return ModelEnv(model, start, action_space=BOX, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def hopper_model() -> ProbabilisticEnsemble:
    """A small ensemble briefly fitted on real Hopper-v5 data (so predictions stay in a sane range)."""
    data = random_dataset("Hopper-v5", 2000, episode_len=100, seed=0)
    model = ProbabilisticEnsemble(
        data.obs_dim, data.action_dim, EnsembleConfig(num_members=3, num_elites=2, hidden=64, depth=2, device="cpu")
    )
    fit(model, data, FitConfig(max_epochs=5), rng=np.random.default_rng(0))
    return model


def test_checkers_pass_on_dummy_env() -> None:
    gym_check_env(dummy_env(model=DummyModel(noise_std=0.1)), skip_render_check=True)
    sb3_check_env(dummy_env(model=DummyModel(noise_std=0.1)), warn=False)


def test_checkers_pass_on_ensemble_env_with_real_spaces(hopper_model: ProbabilisticEnsemble) -> None:
    data = random_dataset("Hopper-v5", 2000, episode_len=100, seed=0)
    env = ModelEnv(hopper_model, data.observations, spec=get_spec("Hopper-v5"))
    assert env.observation_space.shape == (11,) and env.action_space.shape == (3,)
    assert env.max_episode_steps == 1000
    gym_check_env(env, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(ModelEnv(hopper_model, data.observations, spec=get_spec("Hopper-v5")))


def test_step_semantics_are_exact() -> None:
    # next_obs = obs + sum(action); reward = obs[0]; terminated when next_obs[0] > 2.5; actions clipped to [-1, 1].
    env = dummy_env(model=DummyModel(threshold=2.5), max_episode_steps=10)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and info == {}
    x = float(obs[0])
    obs2, reward, terminated, truncated, info = env.step(np.array([5.0, 0.0], dtype=np.float32))  # clipped to 1
    assert obs2.dtype == np.float32
    assert obs2.tolist() == pytest.approx((obs + 1.0).tolist())
    assert reward == pytest.approx(x) and not truncated
    assert info["uncertainty"] == pytest.approx(abs(x))
    steps = 1
    while not terminated:
        _, _, terminated, truncated, _ = env.step(np.array([0.5, 0.5], dtype=np.float32))
        steps += 1
        assert not truncated
    assert steps == (3 if x == 0.0 else 2)  # x: 0 -> 1 -> 2 -> 3 (> 2.5) or 1 -> 2 -> 3


def test_time_limit_truncates() -> None:
    env = dummy_env(max_episode_steps=3)
    env.reset(seed=1)
    flags = [env.step(np.zeros(2, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_nonfinite_prediction_truncates_with_a_finite_obs() -> None:
    env = dummy_env(model=DummyModel(nan_above=0.5))
    obs, _ = env.reset(seed=0)
    while obs[0] < 0.5:  # step until x > 0.5
        obs, *_ = env.step(np.array([0.5, 0.5], np.float32))
    nxt, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert info.get("nonfinite") is True and truncated and not terminated and reward == 0.0
    assert np.isfinite(nxt).all() and nxt.tolist() == obs.tolist()


def test_seeding_makes_episodes_reproducible() -> None:
    def episode(seed: int) -> list[list[float]]:
        env = dummy_env(model=DummyModel(noise_std=0.1))
        out = [env.reset(seed=seed)[0].tolist()]
        out += [env.step(np.array([0.1, 0.2], np.float32))[0].tolist() for _ in range(5)]
        return out

    assert episode(3) == episode(3)
    assert episode(3) != episode(4)


def test_sb3_sac_learns_in_model_env(hopper_model: ProbabilisticEnsemble, tmp_path: object) -> None:
    data = random_dataset("Hopper-v5", 2000, episode_len=100, seed=0)
    env = ModelEnv(hopper_model, data.observations, spec=get_spec("Hopper-v5"), max_episode_steps=50)
    agent = SAC("MlpPolicy", env, learning_starts=100, batch_size=64, policy_kwargs={"net_arch": [32, 32]}, seed=0)
    agent.set_logger(configure(None, []))
    before = [p.detach().clone() for p in agent.actor.parameters()]
    agent.learn(300)
    assert agent.num_timesteps == 300
    assert agent._n_updates >= 150  # gradient steps were taken on model transitions
    after = list(agent.actor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    buf = agent.replay_buffer
    assert buf is not None and buf.size() == 300
    assert np.isfinite(buf.observations[:300]).all() and np.isfinite(buf.rewards[:300]).all()
    # Hopper's termination function acted: model episodes end before the 50-step limit or by it.
    assert buf.dones[:300].sum() >= 300 // 50


def test_vector_env_autoresets_in_the_same_step() -> None:
    start = np.array([[0.0, 0.0, 0.0]], dtype=np.float32)
    env = VectorModelEnv(DummyModel(threshold=2.5), start, num_envs=3, action_space=BOX, max_episode_steps=4)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 3) and obs.dtype == np.float32
    # env 0: +1 per step (terminates after 3 steps); env 1: +0 (truncated after 4); env 2: +0.5.
    actions = np.array([[0.5, 0.5], [0.0, 0.0], [0.25, 0.25]], dtype=np.float32)
    history, rewards = [], []
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(actions)
        history.append((obs.copy(), terminated.copy(), truncated.copy(), info))
        rewards.append(reward.tolist())
    assert rewards == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.5], [2.0, 0.0, 1.0], [0.0, 0.0, 1.5]]  # reward = obs[0]
    assert [h[1].tolist() for h in history] == [
        [False, False, False],
        [False, False, False],
        [True, False, False],
        [False, False, False],
    ]
    assert [h[2].tolist() for h in history] == [
        [False, False, False],
        [False, False, False],
        [False, False, False],
        [False, True, True],
    ]
    obs3, _, _, info3 = history[2]
    assert info3["_final_obs"].tolist() == [True, False, False]
    assert info3["final_obs"][0].tolist() == [3.0, 3.0, 3.0]
    assert obs3[0].tolist() == [0.0, 0.0, 0.0]  # reset obs returned in the same step
    assert history[3][0][0].tolist() == [1.0, 1.0, 1.0]  # and stepped from it afterwards
    assert history[3][3]["final_obs"][2].tolist() == [2.0, 2.0, 2.0]


def test_vector_env_one_batched_call_and_seeding() -> None:
    model = DummyModel(noise_std=0.1)
    start = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)

    def run(seed: int) -> np.ndarray:
        env = VectorModelEnv(model, start, num_envs=8, action_space=BOX)
        env.reset(seed=seed)
        return np.stack([env.step(np.zeros((8, 2), np.float32))[0] for _ in range(3)])

    calls = model.n_predict_calls
    a = run(5)
    assert model.n_predict_calls - calls == 3  # one model call per vector step
    assert np.array_equal(a, run(5)) and not np.array_equal(a, run(6))


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="action_space or spec"):
        ModelEnv(DummyModel(), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="start_obs"):
        ModelEnv(DummyModel(), np.zeros((1, 4), np.float32), action_space=BOX)
    with pytest.raises(ValueError, match="NaN"):
        ModelEnv(DummyModel(), np.full((1, 3), math.nan, np.float32), action_space=BOX)
    with pytest.raises(RuntimeError, match="before reset"):
        dummy_env().step(np.zeros(2, np.float32))
