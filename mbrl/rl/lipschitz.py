"""Diagnostics of a SAC critic's smoothness and of the model-induced Bellman error.

Zheng et al., "Is Model Ensemble Necessary? Model-based RL via a Single Model with Lipschitz Regularized Value
Function" (ICLR 2023) bound the gap between the Bellman operator through a learned model and through the true
dynamics by the value function's Lipschitz constant times the model error. The two tools here measure both
sides of that bound on a sample of states:

- :func:`critic_lipschitz_estimate`: the local Lipschitz constant of the critic in the state, estimated as the
  largest input-gradient norm ``max_b ||d Q(s_b, a_b) / d s_b||_2`` over the sample (a lower bound of the true
  constant on the sample's neighbourhood; exact for a linear critic).
- :func:`bellman_gap`: ``mean_b |r_hat + gamma (1 - d_hat) V(s_hat') - (r + gamma (1 - d) V(s'))|`` with the
  same states and actions pushed through the learned model and through the true dynamics.

Both are pure functions of their inputs (no logging, randomness only from the given generator) and leave the
learner's parameters, optimizers, generator and spectral-norm power-iteration vectors untouched (the critic is
evaluated in eval mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor

from mbrl.models.protocol import WorldModel
from mbrl.rl.sac import SAC

TermFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration: spectrally normalised layers then skip their power iteration, so a
    diagnostic forward never changes the learner's state (``u``/``v`` buffers)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _as_float_tensor(x: Tensor, device: torch.device) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32).to(device)


def critic_lipschitz_estimate(
    sac: SAC,
    obs: Tensor,
    actions: Tensor | None = None,
    *,
    reduction: Literal["min", "each"] = "min",
) -> float:
    """Largest state-gradient norm of the critic over a sample: ``max_b ||grad_s Q(s_b, a_b)||_2``.

    The action is held fixed while differentiating (the Lipschitz constant of ``s -> Q(s, a)``, the quantity
    the paper's bound needs for ``V``).

    Args:
        sac: the learner (its online critics are used; nothing is modified).
        obs: ``[B, D]`` states.
        actions: ``[B, A]`` env-unit actions, or None for the policy's deterministic action ``tanh(mean(s))``
            (computed once at the unperturbed ``s`` and then held fixed).
        reduction: ``"min"``: gradient of ``min_i Q_i(s, a)`` (the value SAC actually uses; at a row where two
            critics tie, the gradient of the one ``min`` selects); ``"each"``: every critic's own gradient, and
            the maximum over critics and rows.

    Returns:
        The maximum gradient norm over the sample (and over critics for ``"each"``), a float >= 0.
    """
    if obs.ndim != 2 or obs.shape[1] != sac.obs_dim:
        raise ValueError(f"critic_lipschitz_estimate: expected obs [B, {sac.obs_dim}], got {tuple(obs.shape)}")
    if reduction not in ("min", "each"):
        raise ValueError(f"critic_lipschitz_estimate: reduction must be 'min' or 'each', got {reduction!r}")
    device = sac.device
    s = _as_float_tensor(obs, device).detach()
    with torch.no_grad():
        if actions is None:
            a_unit = sac.actor.deterministic(s)
        else:
            if actions.shape != (s.shape[0], sac.action_dim):
                raise ValueError(
                    f"critic_lipschitz_estimate: expected actions [{s.shape[0]}, {sac.action_dim}], "
                    f"got {tuple(actions.shape)}"
                )
            a_unit = sac.to_unit(_as_float_tensor(actions, device))
    with _eval_mode(sac.critic):
        return _max_gradient_norm(sac, s, a_unit, reduction)


def _max_gradient_norm(sac: SAC, s: Tensor, a_unit: Tensor, reduction: str) -> float:
    if reduction == "min":
        s_in = s.clone().requires_grad_(True)
        q = sac.critic(s_in, a_unit)  # [N, B]
        (grad,) = torch.autograd.grad(q.min(dim=0).values.sum(), s_in)  # rows are independent
        return float(grad.norm(dim=-1).max())
    # One copy of the states per critic, so one backward gives N separate per-critic gradients.
    s_rep = s.unsqueeze(0).expand(sac.critic.num_critics, -1, -1).clone().requires_grad_(True)
    q = sac.critic(s_rep, a_unit)
    (grads,) = torch.autograd.grad(q.sum(), s_rep)  # [N, B, D]
    return float(grads.norm(dim=-1).max())


@torch.no_grad()
def policy_value(sac: SAC, obs: Tensor) -> Tensor:
    """``V(s) = min_i Q_i(s, tanh(mean(s)))``: the online critics at the policy's deterministic action, ``[B]``.

    The deterministic action (no entropy term, no action noise) keeps the value a deterministic function of
    ``s``, so a Bellman-gap difference reflects the model error and not sampling noise.
    """
    s = _as_float_tensor(obs, sac.device)
    with _eval_mode(sac.critic):
        return sac.critic(s, sac.actor.deterministic(s)).min(dim=0).values


@torch.no_grad()
def bellman_gap(
    sac: SAC,
    model: WorldModel,
    true_model: WorldModel,
    obs: Tensor,
    *,
    gamma: float,
    generator: torch.Generator,
    term_fn: TermFn | None = None,
) -> float:
    """Mean absolute difference of one-step Bellman backups through the learned and the true dynamics.

    For each state ``s_b`` an action ``a_b ~ pi(.|s_b)`` is drawn from ``generator``; both models predict
    ``(s', r, d)`` for the same ``(s_b, a_b)`` (the learned model's mean prediction, ``deterministic=True``), and

        gap = mean_b | r_hat + gamma (1 - d_hat) V(s_hat') - (r + gamma (1 - d) V(s')) |

    with ``V`` from :func:`policy_value`. Rows where either model returns a non-finite value (e.g. the true
    simulator's unstable rows) are dropped.

    Args:
        sac: the learner (actor and online critics; nothing is modified, its generator is not used).
        model: the learned world model.
        true_model: the reference dynamics (``TrueDynamicsModel``).
        obs: ``[B, D]`` states (e.g. a sample of the real replay buffer).
        gamma: discount.
        generator: RNG of the policy's actions.
        term_fn: known termination ``(obs, action, next_obs) -> [B]`` applied to BOTH predictions (as the Dyna
            rollouts do for the learned model); None uses each model's own ``terminated``.

    Returns:
        The mean gap over the finite rows (NaN if none is finite).
    """
    if obs.ndim != 2 or obs.shape[1] != sac.obs_dim:
        raise ValueError(f"bellman_gap: expected obs [B, {sac.obs_dim}], got {tuple(obs.shape)}")
    s = _as_float_tensor(obs, sac.device)
    policy = sac.as_policy(deterministic=False, generator=generator)
    action = policy(s)  # env units

    def backup(m: WorldModel) -> Tensor:
        step = m.predict(s, action, deterministic=True, generator=generator)
        next_obs = step.next_obs.to(s.dtype).to(s.device)
        terminated = step.terminated.to(s.dtype).to(s.device)
        if term_fn is not None:
            terminated = term_fn(s, action, next_obs).to(s.dtype)
        reward = step.reward.to(s.dtype).to(s.device)
        finite = torch.isfinite(next_obs).all(dim=-1) & torch.isfinite(reward)
        value = torch.full_like(reward, float("nan"))
        if finite.any():
            value[finite] = policy_value(sac, next_obs[finite])
        return reward + gamma * (1.0 - terminated) * value

    gap = (backup(model) - backup(true_model)).abs()
    gap = gap[torch.isfinite(gap)]
    return float(gap.mean()) if gap.numel() > 0 else float("nan")
