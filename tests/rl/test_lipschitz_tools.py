"""Critic Lipschitz estimate (hand-built linear critic, per-row maximum) and the learned-vs-true Bellman gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl.envs import get_spec, make_env
from mbrl.models.true_dynamics import TrueDynamicsModel
from mbrl.rl.lipschitz import bellman_gap, critic_lipschitz_estimate, policy_value
from mbrl.rl.sac import SAC, SACConfig
from mbrl.types import Metrics, ModelStep, TransitionBatch

OBS, ACT, HID = 5, 2, 8
LOW, HIGH = np.array([-3.0, 0.5], dtype=np.float32), np.array([1.0, 4.0], dtype=np.float32)


def make_sac(seed: int = 0, obs_dim: int = OBS, act_dim: int = ACT, **kw: object) -> SAC:
    low, high = (LOW, HIGH) if act_dim == ACT else (-np.ones(act_dim, np.float32), np.ones(act_dim, np.float32))
    config = SACConfig(**{"hidden": HID, "depth": 2, **kw})  # type: ignore[arg-type]
    return SAC(obs_dim, act_dim, low, high, config, generator=torch.Generator().manual_seed(seed))


def linearize(sac: SAC, output_bias: tuple[float, float]) -> torch.Tensor:
    """Make every critic affine on the inputs used below (all ReLUs active); returns ``[N, D]`` state gradients."""
    gen = torch.Generator().manual_seed(7)
    layers = sac.critic.ensemble_layers()
    with torch.no_grad():
        w0 = torch.randn(layers[0].weight.shape, generator=gen)
        w1 = torch.rand(layers[1].weight.shape, generator=gen)  # >= 0: positive inputs stay positive
        w2 = torch.randn(layers[2].weight.shape, generator=gen)
        layers[0].weight.copy_(w0)
        layers[0].bias.fill_(100.0)  # pre-activations ~100 +- a few: every first-layer ReLU is active
        layers[1].weight.copy_(w1)
        layers[1].bias.fill_(1.0)
        layers[2].weight.copy_(w2)
        for i, b in enumerate(output_bias):
            layers[2].bias[i].fill_(b)
    # dQ_i/ds = W0_i[:D] @ W1_i @ W2_i
    return torch.stack([w0[i, :OBS] @ w1[i] @ w2[i, :, 0] for i in range(2)])


def test_lipschitz_estimate_equals_the_analytic_gradient_norm_of_a_linear_critic() -> None:
    sac = make_sac()
    grads = linearize(sac, output_bias=(0.0, -1e4))  # critic 1 is always the min
    obs = torch.randn(64, OBS, generator=torch.Generator().manual_seed(1))
    norms = grads.norm(dim=-1)
    assert not torch.isclose(norms[0], norms[1])
    est_min = critic_lipschitz_estimate(sac, obs)
    assert est_min == pytest.approx(float(norms[1]), rel=1e-5)
    est_each = critic_lipschitz_estimate(sac, obs, reduction="each")
    assert est_each == pytest.approx(float(norms.max()), rel=1e-5)
    actions = torch.as_tensor(LOW) + torch.rand(64, ACT, generator=torch.Generator().manual_seed(2)) * 2.0
    assert critic_lipschitz_estimate(sac, obs, actions) == pytest.approx(est_min, rel=1e-5)


def test_lipschitz_estimate_is_the_max_over_rows_of_per_row_gradient_norms() -> None:
    sac = make_sac(3, hidden=32)
    obs = 2.0 * torch.randn(20, OBS, generator=torch.Generator().manual_seed(4))
    per_row = []
    for row in obs:
        s = row[None].clone().requires_grad_(True)
        a = sac.actor.deterministic(row[None]).detach()
        (g,) = torch.autograd.grad(sac.critic(s, a).min(dim=0).values.sum(), s)
        per_row.append(float(g.norm()))
    est = critic_lipschitz_estimate(sac, obs)
    assert est == pytest.approx(max(per_row), rel=1e-5)
    assert est > float(np.mean(per_row))  # a max, not an average (rows differ for a ReLU net)
    with pytest.raises(ValueError, match="obs"):
        critic_lipschitz_estimate(sac, obs[:, :3])


class RewardShift:
    """The true dynamics with every reward shifted by ``shift`` (a model with a known, constant error)."""

    def __init__(self, inner: TrueDynamicsModel, shift: float) -> None:
        self.inner, self.shift = inner, shift
        self.obs_dim, self.action_dim = inner.obs_dim, inner.action_dim

    def predict(
        self, obs: torch.Tensor, action: torch.Tensor, *, deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        step = self.inner.predict(obs, action)
        return ModelStep(step.next_obs, step.reward + self.shift, step.terminated, step.info)

    def update(self, batch: TransitionBatch) -> Metrics:
        return {}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state_dict: object) -> None:
        return None


def hopper_states(n: int) -> torch.Tensor:
    env = make_env("Hopper-v5")
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        rows.append(obs)
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 3))
        if terminated or truncated:
            obs, _ = env.reset()
    return torch.as_tensor(np.asarray(rows), dtype=torch.float32)


def test_bellman_gap_is_zero_for_the_true_model_and_the_reward_error_otherwise() -> None:
    spec = get_spec("Hopper-v5")
    sac = make_sac(0, obs_dim=spec.obs_dim, act_dim=spec.action_dim, hidden=32)
    true = TrueDynamicsModel("Hopper-v5")
    obs = hopper_states(40)
    gen = torch.Generator().manual_seed(5)
    assert bellman_gap(sac, true, true, obs, gamma=0.99, generator=gen, term_fn=spec.term_fn) == 0.0
    # Same next states, rewards off by 0.25 -> every row's backup is off by exactly 0.25.
    shifted = RewardShift(true, 0.25)
    gap = bellman_gap(sac, shifted, true, obs, gamma=0.99, generator=torch.Generator().manual_seed(5))
    assert gap == pytest.approx(0.25, abs=1e-5)
    # A model that predicts "stay put" differs by gamma * |V(s) - V(s')| + |r| on average: positive.
    class StayPut(RewardShift):
        def predict(self, obs: torch.Tensor, action: torch.Tensor, **_: object) -> ModelStep:
            z = torch.zeros(obs.shape[0])
            return ModelStep(obs.clone(), z, z)

    stay = StayPut(true, 0.0)
    gap_stay = bellman_gap(sac, stay, true, obs, gamma=0.99, generator=torch.Generator().manual_seed(5))
    act = sac.as_policy(generator=torch.Generator().manual_seed(5))(obs)
    step = true.predict(obs, act)
    expected = (0.99 * policy_value(sac, obs) - step.reward - 0.99 * (1 - step.terminated) * policy_value(
        sac, step.next_obs
    )).abs().mean()
    assert gap_stay == pytest.approx(float(expected), rel=1e-4) and gap_stay > 0
