"""Policy adapters: SB3 models, our actor, uniform random; all satisfy mbrl.types.Policy in env units."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import RescaleAction
from stable_baselines3 import SAC as SB3SAC

from mbrl.rl.policies import RandomPolicy, SB3Policy, TorchPolicy
from mbrl.rl.sac import SAC, SACConfig
from mbrl.types import Policy


@pytest.fixture(scope="module")
def sb3_model() -> SB3SAC:
    # Pendulum with its action space moved to the asymmetric [0, 4]: env units differ from SB3's [-1, 1].
    env = RescaleAction(gym.make("Pendulum-v1"), min_action=np.float32(0.0), max_action=np.float32(4.0))
    return SB3SAC("MlpPolicy", env, policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")


def test_sb3_policy_returns_env_unit_actions(sb3_model: SB3SAC) -> None:
    policy = SB3Policy(sb3_model, deterministic=True)
    assert isinstance(policy, Policy)
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    action = policy(obs)
    expected, _ = sb3_model.predict(obs, deterministic=True)
    assert isinstance(action, np.ndarray) and action.shape == (64, 1)
    assert np.allclose(action, expected)
    # SB3's actor works in [-1, 1]: unscaling tanh(mean) to [0, 4] is 2 + 2 * tanh(mean)
    with torch.no_grad():
        unit = sb3_model.actor(torch.as_tensor(obs), deterministic=True).numpy()
    assert np.allclose(action, 2.0 + 2.0 * unit, atol=1e-5)
    # torch in -> torch out, single obs -> single action
    t = policy(torch.as_tensor(obs))
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.as_tensor(action))
    assert policy(obs[0]).shape == (1,)
    stochastic = SB3Policy(sb3_model, deterministic=False)(np.zeros((2000, 3), np.float32))
    assert stochastic.min() >= 0.0 and stochastic.max() <= 4.0 and stochastic.max() > 3.0


def test_random_policy_bounds_and_generator() -> None:
    low, high = np.array([-1.0, 2.0]), np.array([1.0, 5.0])
    p1 = RandomPolicy(low, high, torch.Generator().manual_seed(0))
    p2 = RandomPolicy(low, high, torch.Generator().manual_seed(0))
    obs = torch.zeros(1000, 4)
    a1, a2 = p1(obs), p2(obs)
    assert isinstance(p1, Policy)
    assert torch.equal(a1, a2)
    assert (a1 >= torch.tensor(low, dtype=torch.float32)).all() and (a1 <= torch.tensor(high, dtype=torch.float32)).all()
    assert a1[:, 1].min() < 2.5 and a1[:, 1].max() > 4.5  # covers the range
    assert p1(np.zeros(4, np.float32)).shape == (2,)


def test_torch_policy_follows_the_live_actor() -> None:
    sac = SAC(3, 1, [-2.0], [2.0], SACConfig(hidden=16), generator=torch.Generator().manual_seed(0))
    policy = sac.as_policy(deterministic=True)
    assert isinstance(policy, TorchPolicy) and isinstance(policy, Policy)
    obs = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    before = policy(obs)
    with torch.no_grad():
        sac.actor.head.bias.add_(0.5)
    assert not torch.equal(before, policy(obs))
    with pytest.raises(ValueError, match="generator"):
        TorchPolicy(sac.actor, sac.action_scale, sac.action_bias, deterministic=False)
    # stochastic samples from an explicit generator are reproducible
    a = sac.as_policy(False, torch.Generator().manual_seed(3))(obs)
    b = sac.as_policy(False, torch.Generator().manual_seed(3))(obs)
    assert torch.equal(a, b)
