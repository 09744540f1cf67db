"""SAC-N losses as pure functions (no module state, no RNG), each unit-tested against hand-computed values.

Papers: SAC (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018); SAC-N / EDAC (An et al.,
"Uncertainty-Based Offline Reinforcement Learning with Diversified Q-Ensemble", NeurIPS 2021); REDQ (Chen et al.,
ICLR 2021) for the subset minimum; adversarial state perturbation as in PGD adversarial training (Madry et al.,
ICLR 2018), used for the Lipschitz-regularised critic of Zheng et al. (ICLR 2023).

Shapes: ``N`` critics, batch ``B``, action width ``A``. Everything is computed in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor


def td_target(
    reward: Tensor,
    terminated: Tensor,
    next_q: Tensor,
    next_log_prob: Tensor,
    alpha: Tensor | float,
    gamma: float,
) -> Tensor:
    """Soft Bellman target ``y = r + gamma * (1 - terminated) * (Q'(s', a') - alpha * log pi(a'|s'))``.

    ``terminated`` stops bootstrapping (a terminated row's target is exactly ``r``); ``truncated`` is not an
    argument on purpose: a time limit or rollout horizon bootstraps like any other step.

    Args:
        reward: ``[B]``.
        terminated: ``[B]`` float 0/1.
        next_q: ``[B]`` target-critic value of the next state-action (already reduced over critics).
        next_log_prob: ``[B]`` ``log pi(a'|s')`` of the next action.
        alpha: entropy temperature (scalar tensor or float).
        gamma: discount.

    Returns:
        ``[B]`` targets (no gradient is stopped here; callers compute them under ``no_grad``).
    """
    return reward + gamma * (1.0 - terminated) * (next_q - alpha * next_log_prob)


def critic_loss(q_pred: Tensor, target: Tensor) -> Tensor:
    """Sum over critics of the mean squared TD error: ``sum_i mean_b (Q_i(s_b, a_b) - y_b)^2``.

    This is SAC-N/EDAC's scale (SB3 uses half of it; Adam is invariant to the factor, EDAC's ``eta`` is not).

    Args:
        q_pred: ``[N, B]``.
        target: ``[B]``.

    Returns:
        scalar.
    """
    return (q_pred - target.unsqueeze(0)).pow(2).mean(dim=1).sum()


def reduce_q(q: Tensor, reduction: Literal["min", "mean"] = "min") -> Tensor:
    """``[N, B] -> [B]``: minimum (SAC, SAC-N) or mean (REDQ's actor) over critics; ``[B]`` passes through."""
    if q.ndim == 1:
        return q
    if reduction == "min":
        return q.min(dim=0).values
    if reduction == "mean":
        return q.mean(dim=0)
    raise ValueError(f"reduce_q: unknown reduction {reduction!r} (expected 'min' or 'mean')")


def actor_loss(
    q: Tensor, log_prob: Tensor, alpha: Tensor | float, reduction: Literal["min", "mean"] = "min"
) -> Tensor:
    """SAC policy loss ``mean_b (alpha * log pi(a_b|s_b) - Q(s_b, a_b))``.

    Args:
        q: ``[N, B]`` critic values of the policy's actions (reduced with ``reduction``) or ``[B]`` already reduced.
        log_prob: ``[B]``.
        alpha: temperature (treated as a constant).
        reduction: how ``[N, B]`` is reduced over critics.

    Returns:
        scalar.
    """
    return (alpha * log_prob - reduce_q(q, reduction)).mean()


def alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """Temperature loss ``-mean_b log_alpha * (log pi(a_b|s_b) + target_entropy)`` (log-pi detached).

    Its gradient in ``log_alpha`` is ``-mean(log pi + target_entropy) = entropy - target_entropy``: alpha goes
    down when the policy's entropy is above the target and up when it is below (Haarnoja et al., 2018, eq. 18,
    written in ``log alpha`` as SB3 and most implementations do).
    """
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


def edac_diversity_loss(grads: Tensor, eps: float = 1e-10) -> Tensor:
    """EDAC's ensemble-similarity term: mean pairwise cosine similarity of the critics' action gradients.

    ``ES = 1/(N-1) * mean_b sum_{i != j} <g_i, g_j> / (|g_i| |g_j|)`` with ``g_i = d Q_i(s_b, a_b) / d a``
    (An et al., 2021, eq. 6). Vectorised with ``sum_{i != j} <h_i, h_j> = |sum_i h_i|^2 - sum_i |h_i|^2`` on the
    normalised gradients ``h_i``: O(N B A), no ``[B, N, N]`` matrix.

    Args:
        grads: ``[N, B, A]`` per-critic action gradients (built with ``create_graph=True`` to train through it).
        eps: added to the norms.

    Returns:
        scalar.
    """
    n = grads.shape[0]
    if n < 2:
        raise ValueError(f"edac_diversity_loss: needs at least 2 critics, got {n}")
    unit = grads / (grads.norm(dim=-1, keepdim=True) + eps)
    pair_sum = unit.sum(dim=0).pow(2).sum(-1) - unit.pow(2).sum(dim=(0, 2))  # [B]
    return pair_sum.mean() / (n - 1)


def project_perturbation(delta: Tensor, epsilon: float, norm: Literal["linf", "l2"]) -> Tensor:
    """Project each row of ``delta [B, D]`` onto the ``epsilon`` ball of ``norm`` (L-infinity or L2)."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    if norm == "l2":
        length = delta.norm(dim=-1, keepdim=True)
        return delta * (epsilon / length.clamp_min(epsilon))
    raise ValueError(f"project_perturbation: unknown norm {norm!r} (expected 'linf' or 'l2')")


def adversarial_perturbation(
    loss_fn: Callable[[Tensor], Tensor],
    obs: Tensor,
    *,
    epsilon: float,
    steps: int = 1,
    step_size: float | None = None,
    norm: Literal["linf", "l2"] = "linf",
) -> Tensor:
    """Projected gradient ascent on an input perturbation (FGSM when ``steps == 1`` and ``step_size == epsilon``).

    Starting from ``delta = 0`` (deterministic; no RNG), repeats ``steps`` times:
    ``delta <- project(delta + step_size * direction(grad_delta loss_fn(obs + delta)))`` where ``direction`` is
    ``sign`` for L-infinity and the row-normalised gradient for L2, and ``project`` clips each row to the
    ``epsilon`` ball. Only the input gradient is computed (``torch.autograd.grad`` on ``delta``), never the
    weights'.

    Args:
        loss_fn: ``obs [B, D] -> scalar`` loss to increase (e.g. the critic's TD loss with a fixed target).
        obs: ``[B, D]`` unperturbed inputs (not modified).
        epsilon: radius of the ball (in obs units), > 0.
        steps: ascent steps (>= 1).
        step_size: step length; default ``epsilon`` for one step, else ``2.5 * epsilon / steps`` (Madry et al.).
        norm: ``"linf"`` or ``"l2"`` (per row).

    Returns:
        ``[B, D]`` detached perturbation with every row inside the ball.
    """
    if epsilon <= 0:
        raise ValueError(f"adversarial_perturbation: epsilon must be > 0, got {epsilon}")
    if steps < 1:
        raise ValueError(f"adversarial_perturbation: steps must be >= 1, got {steps}")
    alpha = step_size if step_size is not None else (epsilon if steps == 1 else 2.5 * epsilon / steps)
    obs = obs.detach()
    delta = torch.zeros_like(obs)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(obs + delta), delta)
        with torch.no_grad():
            if norm == "linf":
                step = grad.sign()
            elif norm == "l2":
                step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            else:
                raise ValueError(f"adversarial_perturbation: unknown norm {norm!r} (expected 'linf' or 'l2')")
            delta = project_perturbation(delta.detach() + alpha * step, epsilon, norm)
    return delta.detach()
