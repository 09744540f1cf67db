"""Critic ensemble == N independent critics; spectral normalisation; actor densities."""

import math

import pytest
import torch
from torch import nn

from mbrl.rl.networks import CriticEnsemble, SpectralNormEnsembleLinear, TanhGaussianActor


def _independent_copies(ens: CriticEnsemble) -> list[nn.Sequential]:
    """N plain ``nn.Sequential`` critics holding the ensemble's weights (``nn.Linear`` stores W^T)."""
    nets = []
    for i in range(ens.num_critics):
        mods: list[nn.Module] = []
        for j, layer in enumerate(ens.ensemble_layers()):
            lin = nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                lin.weight.copy_(layer.weight[i].T)
                lin.bias.copy_(layer.bias[i, 0])
            mods.append(lin)
            if j < len(ens.ensemble_layers()) - 1:
                mods.append(nn.ReLU())
        nets.append(nn.Sequential(*mods))
    return nets


def test_critic_ensemble_equals_independent_critics_forward_and_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    ens = CriticEnsemble(5, 3, num_critics=4, hidden=16, depth=2, generator=gen)
    nets = _independent_copies(ens)
    obs = torch.randn(9, 5, generator=gen, requires_grad=True)
    action = torch.randn(9, 3, generator=gen, requires_grad=True)
    weights = torch.randn(4, 9, generator=gen)  # a different loss weight per critic and row

    q = ens(obs, action)
    assert q.shape == (4, 9)
    (q * weights).sum().backward()
    obs_ref = obs.detach().clone().requires_grad_(True)
    action_ref = action.detach().clone().requires_grad_(True)
    q_ref = torch.stack([net(torch.cat([obs_ref, action_ref], -1)).squeeze(-1) for net in nets])
    (q_ref * weights).sum().backward()

    assert torch.allclose(q, q_ref, atol=1e-6)
    assert obs.grad is not None and obs_ref.grad is not None and action.grad is not None and action_ref.grad is not None
    assert torch.allclose(obs.grad, obs_ref.grad, atol=1e-6)
    assert torch.allclose(action.grad, action_ref.grad, atol=1e-6)
    for i, net in enumerate(nets):
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for layer, lin in zip(ens.ensemble_layers(), linears):
            w_grad, b_grad = layer.weight.grad, layer.bias.grad
            assert w_grad is not None and b_grad is not None and lin.weight.grad is not None and lin.bias.grad is not None
            assert torch.allclose(w_grad[i], lin.weight.grad.T, atol=1e-6)
            assert torch.allclose(b_grad[i, 0], lin.bias.grad, atol=1e-6)


def test_critic_ensemble_accepts_per_critic_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    ens = CriticEnsemble(4, 2, num_critics=3, hidden=8, depth=1, generator=gen)
    obs = torch.randn(6, 4, generator=gen)
    actions = torch.randn(3, 6, 2, generator=gen)
    q = ens(obs, actions)
    for i in range(3):
        assert torch.allclose(q[i], ens(obs, actions[i])[i], atol=1e-6)


def test_action_gradients_equal_per_critic_autograd() -> None:
    gen = torch.Generator().manual_seed(2)
    ens = CriticEnsemble(4, 3, num_critics=5, hidden=16, depth=2, generator=gen)
    obs = torch.randn(7, 4, generator=gen)
    action = torch.randn(7, 3, generator=gen)
    q, grads = ens.action_gradients(obs, action, create_graph=False)
    assert grads.shape == (5, 7, 3)
    for i in range(5):
        a = action.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ens(obs, a)[i].sum(), a)
        assert torch.allclose(grads[i], g, atol=1e-6)
    assert torch.allclose(q, ens(obs, action), atol=1e-6)


def test_spectral_norm_layer_has_unit_top_singular_value() -> None:
    gen = torch.Generator().manual_seed(3)
    layer = SpectralNormEnsembleLinear(3, 20, 30, generator=gen)
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([0.1, 3.0, 40.0])[:, None, None])  # very different raw norms
    layer.power_iteration(2000)  # random 20x30 matrices have close top singular values: converge slowly
    top = torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2)
    assert torch.allclose(top, torch.ones(3), atol=1e-4)
    # the forward uses the normalised weight (eval mode: no further iteration)
    layer.eval()
    x = torch.randn(3, 5, 20, generator=gen)
    assert torch.allclose(layer(x), torch.baddbmm(layer.bias, x, layer.normalized_weight()), atol=1e-6)
    raw = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
    assert raw[2] > 10  # the raw weights were not normalised in place


def test_spectral_norm_in_the_critic_converges_with_training_forwards() -> None:
    gen = torch.Generator().manual_seed(4)
    ens = CriticEnsemble(6, 2, num_critics=3, hidden=32, depth=2, spectral_norm_layers=(0, 1, -1), generator=gen)
    obs, action = torch.randn(8, 6, generator=gen), torch.randn(8, 2, generator=gen)
    for _ in range(100):  # one power iteration per training forward
        ens(obs, action)
    for layer in ens.ensemble_layers():
        assert isinstance(layer, SpectralNormEnsembleLinear)
        top = torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2)
        assert torch.allclose(top, torch.ones(3), atol=1e-3)
    # gradient flows through sigma: d/dW of the normalised weight is not the plain 1/sigma scaling
    ens(obs, action).sum().backward()
    assert all(layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all() for layer in ens.ensemble_layers())
    with pytest.raises(ValueError, match="out of range"):
        CriticEnsemble(6, 2, num_critics=3, hidden=8, depth=2, spectral_norm_layers=(3,))


def test_actor_sample_log_prob_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(5)
    actor = TanhGaussianActor(4, 3, hidden=16, depth=2, generator=gen)
    obs = torch.randn(10, 4, generator=gen)
    noise = torch.randn(10, 3, generator=gen)
    action, log_prob = actor.sample(obs, noise)
    mean, log_std = actor(obs)
    u = mean + log_std.exp() * noise
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log1p(-torch.tanh(u) ** 2).sum(-1)
    assert torch.allclose(action, torch.tanh(u))
    assert torch.allclose(log_prob, ref, atol=1e-4)
    # the density of a given action (BC's likelihood) agrees with the sampler's
    assert torch.allclose(actor.log_prob(obs, action), log_prob, atol=1e-3)
    assert (action.abs() <= 1).all()
    assert torch.allclose(actor.deterministic(obs), torch.tanh(mean))


def test_networks_do_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    TanhGaussianActor(4, 2, generator=torch.Generator().manual_seed(0))
    CriticEnsemble(4, 2, 3, spectral_norm_layers=(0,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(before, torch.get_rng_state())
    # same generator seed -> same weights
    a = CriticEnsemble(4, 2, 3, generator=torch.Generator().manual_seed(7))
    b = CriticEnsemble(4, 2, 3, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert math.isfinite(float(a(torch.zeros(1, 4), torch.zeros(1, 2)).sum().detach()))


def test_critic_layer_norm_normalises_each_critics_hidden_layers() -> None:
    """With LayerNorm the critics' output equals a hand computation (normalise, per-critic affine, ReLU), and a
    100x larger input leaves the output unchanged (LayerNorm removes the scale), which plain critics do not."""
    gen = torch.Generator().manual_seed(0)
    critic = CriticEnsemble(3, 2, num_critics=4, hidden=16, depth=2, layer_norm=True, generator=gen)
    with torch.no_grad():
        for w in critic.norm_weight:  # type: ignore[union-attr]
            w.uniform_(0.5, 1.5, generator=gen)
    obs, act = torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)
    x = torch.cat([obs, act], -1)
    for i, layer in enumerate(critic.layers[:-1]):
        h = layer(x)
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        x = torch.relu((h - mean) / torch.sqrt(var + 1e-5) * critic.norm_weight[i] + critic.norm_bias[i])  # type: ignore[index]
    expected = critic.layers[-1](x).squeeze(-1)
    torch.testing.assert_close(critic(obs, act), expected)
    no_bias = CriticEnsemble(3, 2, num_critics=4, hidden=16, depth=2, layer_norm=True, generator=gen)
    plain = CriticEnsemble(3, 2, num_critics=4, hidden=16, depth=2, generator=gen)
    for net in (no_bias, plain):
        with torch.no_grad():
            net.layers[0].bias.zero_()  # type: ignore[union-attr]
    torch.testing.assert_close(no_bias(100 * obs, 100 * act), no_bias(obs, act), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain(100 * obs, 100 * act), plain(obs, act))
