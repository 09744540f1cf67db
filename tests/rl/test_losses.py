"""Each SAC-N loss against numbers computed by hand (in the comments)."""

import math

import pytest
import torch

from mbrl.rl import losses


def test_td_target_hand_values_and_terminated_rows_are_exactly_the_reward() -> None:
    reward = torch.tensor([1.0, 2.0, -0.3])
    terminated = torch.tensor([0.0, 1.0, 1.0])
    next_q = torch.tensor([3.0, 5.0, 1e6])
    next_log_prob = torch.tensor([-1.0, 0.5, 7.0])
    y = losses.td_target(reward, terminated, next_q, next_log_prob, alpha=0.5, gamma=0.9)
    # row 0: 1 + 0.9 * (3 - 0.5 * -1) = 1 + 0.9 * 3.5 = 4.15; rows 1, 2: terminated -> the reward itself.
    assert y[0].item() == pytest.approx(4.15, abs=1e-6)
    assert y[1].item() == 2.0
    assert y[2].item() == reward[2].item()


def test_critic_loss_sums_per_critic_mse() -> None:
    q = torch.tensor([[1.0, 2.0], [4.0, 1.0]])
    target = torch.tensor([2.0, 1.0])
    # critic 0: ((1-2)^2 + (2-1)^2) / 2 = 1; critic 1: ((4-2)^2 + 0) / 2 = 2; sum = 3.
    assert losses.critic_loss(q, target).item() == pytest.approx(3.0)


def test_actor_loss_min_and_mean_reductions() -> None:
    q = torch.tensor([[1.0, 4.0], [3.0, 2.0]])
    log_prob = torch.tensor([-2.0, 1.0])
    # min over critics = [1, 2]: (0.5 * -2 - 1, 0.5 * 1 - 2) = (-2, -1.5) -> -1.75.
    assert losses.actor_loss(q, log_prob, 0.5).item() == pytest.approx(-1.75)
    # mean over critics = [2, 3]: (-1 - 2, 0.5 - 3) = (-3, -2.5) -> -2.75.
    assert losses.actor_loss(q, log_prob, 0.5, "mean").item() == pytest.approx(-2.75)
    # an already reduced [B] q passes through: (-1 - 1, 0.5 - 4) -> (-2 - 3.5) / 2 = -2.75.
    assert losses.actor_loss(torch.tensor([1.0, 4.0]), log_prob, 0.5).item() == pytest.approx(-2.75)
    with pytest.raises(ValueError, match="reduction"):
        losses.actor_loss(q, log_prob, 0.5, "max")  # type: ignore[arg-type]


def test_alpha_loss_value_and_gradient_sign() -> None:
    log_alpha = torch.tensor(0.5, requires_grad=True)
    log_prob = torch.tensor([-1.0, -3.0], requires_grad=True)
    loss = losses.alpha_loss(log_alpha, log_prob, target_entropy=-1.0)
    # log_prob + target = [-2, -4]; loss = -(0.5 * -2 + 0.5 * -4) / 2 = 1.5.
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    # d/d log_alpha = -mean(log_prob + target) = 3 > 0: entropy 2 is above the target -1, so alpha must go down.
    assert log_alpha.grad is not None and log_alpha.grad.item() == pytest.approx(3.0)
    assert log_prob.grad is None  # log pi is detached


def test_edac_diversity_loss_hand_values() -> None:
    # N=2, B=1: unit gradients [1, 0] and [1/sqrt2, 1/sqrt2]; ordered pairs i != j: 2 * cos = sqrt2; / (N-1) = 1.
    grads = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert losses.edac_diversity_loss(grads).item() == pytest.approx(math.sqrt(2.0), rel=1e-6)
    # N=3, B=2. Row 0: [1,0], [0,1], [-1,0]: cosines 0, -1, 0 -> ordered pairs sum -2.
    # Row 1: three parallel gradients of different lengths: 6 ordered pairs of cos 1 -> 6.
    # mean over rows 2, / (N - 1) = 1.
    grads = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 2.0]],
            [[0.0, 1.0], [0.0, 3.0]],
            [[-1.0, 0.0], [0.0, 1.0]],
        ]
    )
    assert losses.edac_diversity_loss(grads).item() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        losses.edac_diversity_loss(grads[:1])


def test_edac_diversity_loss_matches_pairwise_cosine_matrix() -> None:
    g = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(0))
    unit = g / g.norm(dim=-1, keepdim=True)
    cos = torch.einsum("ibk,jbk->bij", unit, unit)
    off_diag = cos.sum(dim=(1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(-1)
    assert losses.edac_diversity_loss(g).item() == pytest.approx((off_diag.mean() / 4).item(), rel=1e-5)


def test_project_perturbation_hand_values() -> None:
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4], [2.0, -0.5]])
    l2 = losses.project_perturbation(d, 1.0, "l2")
    assert torch.allclose(l2, torch.tensor([[0.6, 0.8], [0.3, 0.4], [2.0 / math.hypot(2, 0.5), -0.5 / math.hypot(2, 0.5)]]))
    linf = losses.project_perturbation(d, 1.0, "linf")
    assert torch.equal(linf, torch.tensor([[1.0, 1.0], [0.3, 0.4], [1.0, -0.5]]))


def test_fgsm_on_a_quadratic_is_epsilon_times_gradient_sign() -> None:
    centre = torch.tensor([[0.5, -1.0, 0.0]])
    obs = torch.tensor([[1.0, -2.0, 3.0]])
    # loss = sum (o - c)^2, gradient 2 (o - c) = [1, -2, 6] -> FGSM step 0.1 * sign = [0.1, -0.1, 0.1].
    delta = losses.adversarial_perturbation(lambda o: (o - centre).pow(2).sum(), obs, epsilon=0.1)
    assert torch.allclose(delta, torch.tensor([[0.1, -0.1, 0.1]]))
    # L2, one step of length eps along the normalised gradient.
    delta2 = losses.adversarial_perturbation(lambda o: (o - centre).pow(2).sum(), obs, epsilon=0.1, norm="l2")
    g = torch.tensor([[1.0, -2.0, 6.0]])
    assert torch.allclose(delta2, 0.1 * g / g.norm())


def test_pgd_stays_in_the_ball_and_increases_the_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 1, generator=gen)
    obs = torch.randn(32, 6, generator=gen)
    target = torch.randn(32, generator=gen)

    def loss_fn(o: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(o @ w).squeeze(-1) - target).pow(2).mean()

    for norm in ("linf", "l2"):
        delta = losses.adversarial_perturbation(loss_fn, obs, epsilon=0.05, steps=5, norm=norm)  # type: ignore[arg-type]
        size = delta.abs().amax(-1) if norm == "linf" else delta.norm(dim=-1)
        assert (size <= 0.05 + 1e-6).all()
        assert loss_fn(obs + delta).item() > loss_fn(obs).item()
    with pytest.raises(ValueError, match="epsilon"):
        losses.adversarial_perturbation(loss_fn, obs, epsilon=0.0)
