"""HyperNetworkModel (HyperCRL) and the baselines' MLPDynamicsModel."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from mbrl.models.hypernet import HyperNetConfig, HyperNetworkModel
from mbrl.models.multihead import MLPDynamicsConfig, MLPDynamicsModel
from mbrl.models.protocol import TaskConditioned, WorldModel
from mbrl.models.task_dynamics import TargetMLP
from mbrl.types import TransitionBatch

OBS, ACT = 3, 1


def linear_task_data(matrix_seed: int, n: int = 256, seed: int = 0) -> TransitionBatch:
    """Synthetic dynamics ``next_obs = obs + 0.1 * tanh(W [obs, action])``, a different ``W`` per task."""
    w = torch.randn(OBS + ACT, OBS, generator=torch.Generator().manual_seed(matrix_seed))
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=g)
    action = torch.rand(n, ACT, generator=g) * 4 - 2
    next_obs = obs + 0.1 * torch.tanh(torch.cat([obs, action], 1) @ w)
    reward = -(obs**2).sum(1)
    return TransitionBatch(obs, action, reward, next_obs, torch.zeros(n), torch.zeros(n))


def make_model(**kw: object) -> HyperNetworkModel:
    cfg = replace(HyperNetConfig(lr=1e-3), **kw)  # type: ignore[arg-type]
    return HyperNetworkModel(OBS, ACT, cfg, generator=torch.Generator().manual_seed(0))


def train(
    model: HyperNetworkModel | MLPDynamicsModel, data: TransitionBatch, steps: int, seed: int = 0
) -> list[dict[str, float]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, len(data), (32,), generator=g)
        out.append(model.update(data.index(idx)))
    return out


def test_generated_weights_have_target_shapes() -> None:
    model = make_model()
    weights = model.generated_weights(0)
    # in = obs + action = 4, hidden 32x32 (HyperCRL Pendulum), out = Δobs (3) + reward (1).
    expected = {
        "layers.0.weight": (32, 4),
        "layers.0.bias": (32,),
        "layers.1.weight": (32, 32),
        "layers.1.bias": (32,),
        "layers.2.weight": (4, 32),
        "layers.2.bias": (4,),
    }
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    assert model.target.num_params == sum(torch.Size(s).numel() for s in expected.values())
    assert model.hnet.layers[-1].out_features == model.target.num_params
    assert model.hnet.layers[0].in_features == 10  # HyperCRL emb_size
    with_std = make_model(learn_std=True, learn_reward=False, target_hidden=(8,))
    assert tuple(with_std.generated_weights(0)["layers.1.weight"].shape) == (6, 8)  # mean + log-std of Δobs


def test_target_mlp_matches_torch_linear_layers() -> None:
    target = TargetMLP(4, 3, (5, 6), "relu")
    theta = torch.randn(target.num_params, generator=torch.Generator().manual_seed(1))
    params = target.unflatten(theta)
    linears = [nn.Linear(4, 5), nn.Linear(5, 6), nn.Linear(6, 3)]
    seq = nn.Sequential(linears[0], nn.ReLU(), linears[1], nn.ReLU(), linears[2])
    with torch.no_grad():
        for i, layer in enumerate(linears):
            layer.weight.copy_(params[f"layers.{i}.weight"])
            layer.bias.copy_(params[f"layers.{i}.bias"])
    x = torch.randn(7, 4)
    torch.testing.assert_close(target.forward(theta, x), seq(x))


def test_regulariser_zero_before_first_task_change() -> None:
    model = make_model()
    data = linear_task_data(0)
    model.fit_normalizer(data)
    metrics = train(model, data, 20)
    assert all(m["reg"] == 0.0 for m in metrics)
    assert float(model.regularizer().detach()) == 0.0
    model.start_task(1)
    # Right after the change the stored targets ARE the current outputs: exactly zero.
    assert float(model.regularizer().detach()) == 0.0
    model.fit_normalizer(linear_task_data(1))
    later = train(model, linear_task_data(1), 5)
    assert later[-1]["reg"] > 0.0


@pytest.mark.parametrize("look_ahead", [True, False])
def test_regulariser_pulls_old_task_outputs_back(look_ahead: bool) -> None:
    drift, old_mse = {}, {}
    d0, d1 = linear_task_data(0), linear_task_data(1)
    holdout0 = linear_task_data(0, n=200, seed=99)
    for beta in (0.0, 0.05):
        model = make_model(beta=beta, look_ahead=look_ahead)
        model.fit_normalizer(d0)
        train(model, d0, 300)
        mse_after_task0 = model.for_task(0).evaluate(holdout0)["mse"]
        theta0 = model.theta(0).clone()
        model.start_task(1)
        torch.testing.assert_close(model.stored_targets[0], theta0)
        model.fit_normalizer(d1)
        train(model, d1, 300, seed=1)
        drift[beta] = float((model.theta(0) - theta0).norm() / theta0.norm())
        old_mse[beta] = model.for_task(0).evaluate(holdout0)["mse"] / mse_after_task0
        # Task 1 is learned either way.
        assert model.for_task(1).evaluate(linear_task_data(1, n=200, seed=98))["mse_norm"] < 0.2
    assert drift[0.05] < 0.1 * drift[0.0], drift
    assert old_mse[0.05] < 1.5 and old_mse[0.0] > 3 * old_mse[0.05], old_mse


def test_look_ahead_delta_is_the_adam_step() -> None:
    model = make_model(grad_clip=0.0)
    data = linear_task_data(0)
    model.fit_normalizer(data)
    train(model, data, 3)  # Adam state exists
    assert model._optimizer is not None
    model._optimizer.zero_grad()
    theta = model.hnet(model.embeddings[0])
    loss, _ = model.head.loss(
        model._forward(theta), model.in_norms[0], model.out_norms[0], data.index(slice(0, 32))
    )
    loss.backward()
    delta = model._look_ahead_delta()
    before = {k: v.detach().clone() for k, v in model.hnet.named_parameters()}
    model._optimizer.step()
    for name, p in model.hnet.named_parameters():
        torch.testing.assert_close(p.detach() - before[name], delta[name], rtol=1e-4, atol=1e-8)


def test_task_views_and_capability() -> None:
    model = make_model()
    assert isinstance(model, TaskConditioned) and isinstance(model, WorldModel)
    d0, d1 = linear_task_data(0), linear_task_data(1)
    model.fit_normalizer(d0)
    train(model, d0, 100)
    model.start_task(1)
    model.fit_normalizer(d1)
    train(model, d1, 100)
    v0, v1 = model.for_task(0), model.for_task(1)
    assert isinstance(v0, WorldModel)
    p0 = v0.predict(d0.obs[:16], d0.action[:16])
    p1 = v1.predict(d0.obs[:16], d0.action[:16])
    torch.testing.assert_close(model.predict(d0.obs[:16], d0.action[:16]).next_obs, p1.next_obs)
    assert (p0.next_obs - p1.next_obs).abs().max() > 1e-3
    assert p0.next_obs.shape == (16, OBS) and p0.reward.shape == (16,) and p0.terminated.shape == (16,)
    assert v0.evaluate(d0)["mse"] < v1.evaluate(d0)["mse"]  # each view is its own task's model
    with pytest.raises(ValueError, match="not the model's current task"):
        v0.update(d0)
    with pytest.raises(ValueError, match="task 5 not seen"):
        model.for_task(5)
    with pytest.raises(ValueError, match="tasks arrive in order"):
        model.start_task(3)


def test_state_dict_roundtrip() -> None:
    model = make_model()
    d0, d1 = linear_task_data(0), linear_task_data(1)
    model.fit_normalizer(d0)
    train(model, d0, 30)
    model.start_task(1)
    model.fit_normalizer(d1)
    train(model, d1, 30)
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert {"embedding.0", "embedding.1", "stored_target.0", "in_norm.1.mean", "current_task"} <= set(state)
    fresh = HyperNetworkModel(OBS, ACT, HyperNetConfig(lr=1e-3), generator=torch.Generator().manual_seed(5))
    fresh.load_state_dict(state)
    assert fresh.current_task == 1 and fresh.num_tasks == 2
    for task in (0, 1):
        torch.testing.assert_close(
            fresh.for_task(task).predict(d0.obs, d0.action).next_obs,
            model.for_task(task).predict(d0.obs, d0.action).next_obs,
        )
    torch.testing.assert_close(fresh.regularizer(), model.regularizer())
    bad = dict(state)
    del bad["stored_target.0"]
    with pytest.raises(KeyError, match=r"stored_target\.0"):
        fresh.load_state_dict(bad)


def test_learn_std_sampling_uses_the_generator() -> None:
    model = make_model(learn_std=True)
    data = linear_task_data(0)
    model.fit_normalizer(data)
    train(model, data, 10)
    obs, action = data.obs[:8], data.action[:8]
    a = model.predict(obs, action, generator=torch.Generator().manual_seed(3)).next_obs
    b = model.predict(obs, action, generator=torch.Generator().manual_seed(3)).next_obs
    c = model.predict(obs, action, deterministic=True).next_obs
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-4
    assert model.predict(obs, action).info["uncertainty"].shape == (8,)


def test_mlp_multi_head_and_replay() -> None:
    model = MLPDynamicsModel(OBS, ACT, MLPDynamicsConfig(), generator=torch.Generator().manual_seed(0))
    assert isinstance(model, TaskConditioned)
    d0, d1 = linear_task_data(0), linear_task_data(1)
    model.fit_normalizer(d0)
    train(model, d0, 200)
    head0 = {k: v.clone() for k, v in model.heads[0].state_dict().items()}
    trunk = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    model.start_task(1)
    assert len(model.heads) == 2
    train(model, d1, 50)  # fine-tuning: head 0 untouched, trunk moves
    for k, v in model.heads[0].state_dict().items():
        torch.testing.assert_close(v, head0[k])
    assert any((model.trunk.state_dict()[k] - v).abs().max() > 0 for k, v in trunk.items())
    # Replay keeps task 0 much better than fine-tuning alone.
    finetuned = model.for_task(0).evaluate(d0)["mse"]
    metrics = [
        model.update_replay([(1, d1.index(slice(i, i + 32))), (0, d0.index(slice(i, i + 32)))])
        for i in range(0, 200, 4)
    ]
    assert all(m["loss"] > 0 for m in metrics)
    assert model.for_task(0).evaluate(d0)["mse"] < finetuned
    state = model.state_dict()
    fresh = MLPDynamicsModel(OBS, ACT, MLPDynamicsConfig(), generator=torch.Generator().manual_seed(9))
    fresh.load_state_dict(state)
    assert fresh.num_tasks == 2 and fresh.current_task == 1
    torch.testing.assert_close(
        fresh.for_task(0).predict(d0.obs, d0.action).next_obs,
        model.for_task(0).predict(d0.obs, d0.action).next_obs,
    )
    single = MLPDynamicsModel(
        OBS, ACT, MLPDynamicsConfig(multi_head=False), generator=torch.Generator().manual_seed(0)
    )
    single.start_task(1)
    assert len(single.heads) == 1
    torch.testing.assert_close(
        single.for_task(0).predict(d0.obs, d0.action).next_obs,
        single.for_task(1).predict(d0.obs, d0.action).next_obs,
    )


def test_bad_inputs() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="obs/action dims"):
        model.update(
            TransitionBatch(
                *(
                    torch.zeros(4, 5),
                    torch.zeros(4, 1),
                    torch.zeros(4),
                    torch.zeros(4, 5),
                    torch.zeros(4),
                    torch.zeros(4),
                )
            )
        )
    with pytest.raises(ValueError, match=r"expected obs \[B, 3\]"):
        model.predict(torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="beta"):
        HyperNetConfig(beta=-1.0)
    with pytest.raises(ValueError, match="unknown activation"):
        HyperNetConfig(hnet_activation="gelu2")
