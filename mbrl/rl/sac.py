"""Vectorised SAC-N: Soft Actor-Critic with an ensemble of N critics held as one batched module.

Follows Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (2018) with the SB3 conventions
(Tanh-Gaussian actor, clipped-double-Q generalised to N critics, automatic temperature with target entropy
``-|A|``, Polyak-averaged target critics), plus the options the toolkit's agents need:

- SAC-N / EDAC (An et al., NeurIPS 2021): N critics, min over all of them, and the ensemble-diversity term
  ``edac_eta`` (RAVL uses N=10).
- REDQ (Chen et al., ICLR 2021): target = min over a random subset of ``num_target_critics`` of the N target
  critics (subset drawn from the learner's generator), actor on the mean over critics.
- Lipschitz-regularised critic (Zheng et al., ICLR 2023): spectral normalisation of chosen critic layers and
  adversarial perturbation of the critic's observation input (PGD/FGSM inside an epsilon ball, extra TD loss on
  the perturbed inputs), plus optional Gaussian input noise. The paper names the two mechanisms; the loss form
  and the numbers are this toolkit's (see ``mbrl.agents.lipschitz.LipschitzConfig`` for the provenance); here every
  option is off by default.
- bf16 autocast of the forward passes (matmuls in bf16, fp32 master weights, losses in fp32).

Actions are in ``[-1, 1]`` inside the learner and in env units at its boundary (``act``, ``as_policy`` and the
batches passed to ``update``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from mbrl.metrics import LazyMetrics
from mbrl.rl import losses
from mbrl.rl.networks import CriticEnsemble, TanhGaussianActor, edac_init
from mbrl.rl.policies import TorchPolicy
from mbrl.types import Metrics, TransitionBatch
from mbrl.utils import resolve_device, warn_if_bf16_is_emulated


@dataclass(frozen=True)
class SACConfig:
    """Hyperparameters of :class:`SAC` (defaults: SB3's SAC on MuJoCo, 256x256 ReLU nets).

    Attributes:
        hidden: hidden width of the actor and the critics.
        depth: number of hidden layers of the actor and the critics.
        num_critics: N critics in the ensemble (SAC: 2; SAC-N/EDAC/RAVL: 10 or more).
        num_target_critics: REDQ's M: the target takes the min over a random subset of M of the N target critics
            (drawn each update); None uses all N.
        actor_q_reduction: how the actor reduces its N critic values: "min" (SAC, SAC-N) or "mean" (REDQ).
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critics.
        alpha_lr: Adam learning rate of ``log alpha``.
        gamma: discount.
        tau: Polyak coefficient of the target critics (``target <- (1 - tau) target + tau online``).
        batch_size: batch size the callers sample (the learner accepts any batch size).
        init_alpha: initial entropy temperature (SB3's "auto" starts at 1.0); the fixed value if not auto_alpha.
        auto_alpha: tune alpha towards ``target_entropy``.
        target_entropy: entropy target; None means ``-|A|``.
        log_std_min: lower clamp of the actor's log standard deviation.
        log_std_max: upper clamp of the actor's log standard deviation.
        edac_eta: weight of EDAC's ensemble-diversity term (0 disables it; needs num_critics >= 2).
        critic_spectral_norm_layers: indices of critic layers (0 .. depth, depth = output layer, negative from the
            end) whose weights are spectrally normalised per critic; () disables.
        critic_layer_norm: LayerNorm after every hidden layer of the critics (RLPD's; off in every paper preset).
        critic_input_noise_std: std of Gaussian noise added to the observations fed to the critic loss (obs units).
        adv_epsilon: radius of the adversarial observation perturbation of the critic input (0 disables).
        adv_steps: projected-gradient ascent steps (1 with the default step size = FGSM).
        adv_step_size: ascent step length; None means ``adv_epsilon`` for one step, ``2.5 * eps / steps`` else.
        adv_norm: the ball's norm, "linf" or "l2" (per transition).
        adv_weight: the critic loss is ``TD(obs) + adv_weight * TD(obs + delta)``.
        use_bf16: run forward passes under bf16 autocast (fp32 master weights and losses).
        actor_update_every: update the actor and alpha every k critic updates (1 = every update).
        bc_weight: TD3+BC's behaviour regulariser on the actor (Fujimoto & Gu, NeurIPS 2021, their alpha=2.5), in
            SAC form: actor loss ``bc_weight * mean(alpha log pi - Q) / mean|Q| - mean log pi(a_data|s_data)`` on
            the ``bc_batch`` given to :meth:`update` (0 = off, as in every paper preset).
        bc_loss: the regulariser's behaviour term: ``"nll"`` (``-mean log pi(a_data|s_data)``, ours: the SAC form
            above) or ``"mse"`` (TD3+BC's own: ``mean (tanh(mu(s_data)) - a_data)^2`` over batch and action dims,
            actions in [-1, 1]; bounded, where the NLL of a saturated data action under a narrow policy is not).
        init: parameter initialisation: ``"torch"`` (``nn.Linear``'s uniform, SB3) or ``"edac"`` (EDAC's and
            RAVL's released code: hidden biases 0.1, critic output layer ``U(+-3e-3)``, actor output layer
            ``U(+-1e-3)``; hidden weights as ``nn.Linear``).
        update_order: ``"critic_first"`` (SB3: critics, then actor and alpha on the updated critics, one alpha
            for the whole update) or ``"alpha_actor_critic"`` (EDAC's / CORL's / RAVL's released code: alpha
            step, then the actor with the new alpha on the current critics, then the critics with the new alpha
            and the updated actor's next actions).
        device: "cpu", "cuda" or "auto" (cuda when available). On a device other than the generator's (a CUDA
            learner with the usual CPU generator), the per-update random draws come from a generator on the
            learner's device seeded once from ``generator`` (no host draw and copy per update); on CPU the draws
            come from ``generator`` itself, as always.
        compile: run the update's tensor step through ``torch.compile``: ``"none"`` (eager), ``"default"``
            (inductor kernels), ``"reduce-overhead"`` (also CUDA graphs on a GPU). One implementation either way:
            the compiled function is the eager one. EDAC's action-gradient term and the adversarial perturbation
            need double / input backward, which AOTAutograd does not compile, and the alpha-first temperature step
            backpropagates separately from the actor; these run eager inside the compiled step.
    """

    hidden: int = 256
    depth: int = 2
    num_critics: int = 2
    num_target_critics: int | None = None
    actor_q_reduction: Literal["min", "mean"] = "min"
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    init_alpha: float = 1.0
    auto_alpha: bool = True
    target_entropy: float | None = None
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    edac_eta: float = 0.0
    critic_spectral_norm_layers: tuple[int, ...] = ()
    critic_layer_norm: bool = False
    critic_input_noise_std: float = 0.0
    adv_epsilon: float = 0.0
    adv_steps: int = 1
    adv_step_size: float | None = None
    adv_norm: Literal["linf", "l2"] = "linf"
    adv_weight: float = 1.0
    use_bf16: bool = False
    actor_update_every: int = 1
    bc_weight: float = 0.0
    bc_loss: Literal["nll", "mse"] = "nll"
    init: Literal["torch", "edac"] = "torch"
    update_order: Literal["critic_first", "alpha_actor_critic"] = "critic_first"
    device: str = "cpu"
    compile: Literal["none", "default", "reduce-overhead"] = "none"

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"SACConfig: {message}")

        check(self.hidden >= 1 and self.depth >= 1, f"hidden and depth must be >= 1, got {self.hidden}, {self.depth}")
        check(self.num_critics >= 1, f"num_critics must be >= 1, got {self.num_critics}")
        if self.num_target_critics is not None:
            check(
                1 <= self.num_target_critics <= self.num_critics,
                f"num_target_critics must be in [1, num_critics={self.num_critics}], got {self.num_target_critics}",
            )
        check(self.actor_q_reduction in ("min", "mean"), f"actor_q_reduction must be 'min' or 'mean', got {self.actor_q_reduction!r}")
        check(0.0 < self.tau <= 1.0, f"tau must be in (0, 1], got {self.tau}")
        check(0.0 <= self.gamma <= 1.0, f"gamma must be in [0, 1], got {self.gamma}")
        check(self.init_alpha > 0, f"init_alpha must be > 0, got {self.init_alpha}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.edac_eta >= 0, f"edac_eta must be >= 0, got {self.edac_eta}")
        check(self.edac_eta == 0 or self.num_critics >= 2, "edac_eta > 0 needs num_critics >= 2")
        check(self.critic_input_noise_std >= 0, f"critic_input_noise_std must be >= 0, got {self.critic_input_noise_std}")
        check(self.adv_epsilon >= 0, f"adv_epsilon must be >= 0, got {self.adv_epsilon}")
        check(self.adv_steps >= 1, f"adv_steps must be >= 1, got {self.adv_steps}")
        check(self.adv_norm in ("linf", "l2"), f"adv_norm must be 'linf' or 'l2', got {self.adv_norm!r}")
        check(self.bc_weight >= 0, f"bc_weight must be >= 0, got {self.bc_weight}")
        check(self.bc_loss in ("nll", "mse"), f"bc_loss must be 'nll' or 'mse', got {self.bc_loss!r}")
        check(self.actor_update_every >= 1, f"actor_update_every must be >= 1, got {self.actor_update_every}")
        check(self.log_std_min < self.log_std_max, "log_std_min must be < log_std_max")
        check(
            self.compile in ("none", "default", "reduce-overhead"),
            f"compile must be 'none', 'default' or 'reduce-overhead', got {self.compile!r}",
        )
        check(self.init in ("torch", "edac"), f"init must be 'torch' or 'edac', got {self.init!r}")
        check(
            self.update_order in ("critic_first", "alpha_actor_critic"),
            f"update_order must be 'critic_first' or 'alpha_actor_critic', got {self.update_order!r}",
        )


def _adam(groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Adam:
    """Fused Adam (one kernel per parameter group and step) on CPU and CUDA; foreach elsewhere (e.g. ``meta``)."""
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(groups, fused=True)
        except (RuntimeError, TypeError):  # pragma: no cover - older torch
            pass
    return torch.optim.Adam(groups, foreach=True)


class SAC:
    """Soft Actor-Critic with N critics as one batched module (see the module docstring for the papers).

    Args:
        obs_dim: D.
        action_dim: A.
        action_low: ``[A]`` lower action bounds in env units (finite).
        action_high: ``[A]`` upper action bounds in env units (finite, > low).
        config: hyperparameters.
        generator: the learner's RNG (initialisation, policy noise, REDQ subsets, input noise); its state is part
            of ``state_dict`` so a resumed learner continues the same random stream.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: np.ndarray | Tensor | list[float],
        action_high: np.ndarray | Tensor | list[float],
        config: SACConfig | None = None,
        *,
        generator: torch.Generator,
    ):
        self.config = c = config if config is not None else SACConfig()
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.device = resolve_device(c.device)
        if c.use_bf16:
            warn_if_bf16_is_emulated(self.device, "SACConfig.use_bf16")
        low = torch.as_tensor(np.asarray(action_low, dtype=np.float32).reshape(-1))
        high = torch.as_tensor(np.asarray(action_high, dtype=np.float32).reshape(-1))
        if low.shape != (self.action_dim,) or high.shape != (self.action_dim,):
            raise ValueError(
                f"SAC: action bounds must have shape ({self.action_dim},), got {tuple(low.shape)} and {tuple(high.shape)}"
            )
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
            raise ValueError(f"SAC: action bounds must be finite with high > low, got low={low.tolist()} high={high.tolist()}")
        self.generator = generator
        self.action_scale = ((high - low) / 2).to(self.device)
        self.action_bias = ((high + low) / 2).to(self.device)
        self._inv_action_scale = 1.0 / self.action_scale

        # Parameters are initialised on CPU from the generator, then moved (a CUDA generator is not required).
        self.actor = TanhGaussianActor(
            obs_dim, action_dim, c.hidden, c.depth, c.log_std_min, c.log_std_max, generator=generator
        )
        self.critic = CriticEnsemble(
            obs_dim, action_dim, c.num_critics, c.hidden, c.depth,
            spectral_norm_layers=c.critic_spectral_norm_layers, layer_norm=c.critic_layer_norm, generator=generator,
        )
        if c.init == "edac":
            edac_init(self.actor, self.critic, generator)
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.device = next(self.actor.parameters()).device  # with its index ("cuda:0"), for cheap comparisons
        self.target_critic = copy.deepcopy(self.critic)
        self.target_critic.requires_grad_(False)
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(c.init_alpha), device=self.device))
        self.target_entropy = float(-action_dim if c.target_entropy is None else c.target_entropy)

        self._actor_params: list[Tensor] = list(self.actor.parameters())
        self._critic_params: list[Tensor] = list(self.critic.parameters())
        self._target_params: list[Tensor] = list(self.target_critic.parameters())
        self.critic_optimizer = _adam([{"params": self._critic_params, "lr": c.critic_lr}], self.device)
        # Actor and temperature share one optimizer (two groups, own learning rates): their losses have disjoint
        # parameters, so one backward and one step do both updates with less per-update overhead.
        policy_groups: list[dict[str, Any]] = [{"params": self._actor_params, "lr": c.actor_lr}]
        self._policy_params = list(self._actor_params)
        if c.auto_alpha:
            policy_groups.append({"params": [self.log_alpha], "lr": c.alpha_lr})
            self._policy_params.append(self.log_alpha)
        self.policy_optimizer = _adam(policy_groups, self.device)
        self.num_updates = 0
        # Hoisted per-update buffers (re-allocated only when the batch size changes).
        self._noise = torch.empty(0, action_dim, device=self.device)
        self._next_noise = torch.empty(0, action_dim, device=self.device)
        self._last_actor_metrics = torch.full((3,), float("nan"), device=self.device)
        self._metric_names = self._build_metric_names()
        # The per-update draws' generator: the caller's when it lives on the learner's device (or the device has
        # no generator of its own, e.g. ``meta``), else one on the device seeded once from the caller's.
        self.device_generator: torch.Generator | None = None
        if generator.device != self.device and self.device.type != "meta":
            self.device_generator = torch.Generator(device=self.device)
            self._reseed_device_generator()
        # One implementation: the compiled step IS the eager one, traced (see SACConfig.compile).
        self._step: Any = self._update_step
        self._action_gradients: Any = self.critic.action_gradients
        self._adversarial: Any = losses.adversarial_perturbation
        self._alpha_step: Any = self._alpha_first_step
        if c.compile != "none":
            self._alpha_step = torch.compiler.disable(self._alpha_first_step)
            # Double backward (EDAC) and input-gradient ascent stay eager: AOTAutograd compiles neither.
            self._action_gradients = torch.compiler.disable(self.critic.action_gradients)
            self._adversarial = torch.compiler.disable(losses.adversarial_perturbation)
            self._step = torch.compile(self._update_step, mode=c.compile)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.use_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def _rng(self) -> torch.Generator:
        """The generator of the per-update draws (``device_generator`` when there is one)."""
        return self.device_generator if self.device_generator is not None else self.generator

    def _reseed_device_generator(self) -> None:
        """Seed ``device_generator`` from one draw of the caller's generator (deterministic given its state)."""
        if self.device_generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            self.device_generator.manual_seed(seed)

    def _draws_in_place(self) -> bool:
        return self._rng.device == self.device or self.device.type == "meta"

    def _draw_noise(self, batch_size: int) -> tuple[Tensor, Tensor]:
        if self._noise.shape[0] != batch_size:
            self._noise = torch.empty(batch_size, self.action_dim, device=self.device)
            self._next_noise = torch.empty(batch_size, self.action_dim, device=self.device)
        if not self._draws_in_place():  # pragma: no cover - a generator on another device than the learner's
            return self._randn(self._noise.shape), self._randn(self._noise.shape)
        # In place into the same buffers (static addresses, as CUDA graphs want): the previous update's graphs
        # that saved them are already freed.
        self._noise.normal_(generator=self._rng)
        self._next_noise.normal_(generator=self._rng)
        return self._noise, self._next_noise

    def _randn(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        if self._draws_in_place():
            return torch.empty(shape, device=self.device).normal_(generator=self._rng)
        return torch.randn(shape, generator=self._rng, device=self._rng.device).to(self.device)

    def _build_metric_names(self) -> list[str]:
        names = ["critic_loss", "q_mean", "q_std", "target_q_mean", "alpha"]
        if self.config.edac_eta > 0:
            names.append("edac_loss")
        if self.config.adv_epsilon > 0:
            names.append("adv_critic_loss")
        return [*names, "actor_loss", "alpha_loss", "entropy"]

    @property
    def alpha(self) -> float:
        """Current entropy temperature."""
        return float(self.log_alpha.detach().exp())

    def to_unit(self, action: Tensor) -> Tensor:
        """Env-unit actions ``[B, A]`` -> ``[-1, 1]``."""
        return (action - self.action_bias) * self._inv_action_scale

    def to_env(self, action: Tensor) -> Tensor:
        """``[-1, 1]`` actions ``[B, A]`` -> env units."""
        return action * self.action_scale + self.action_bias

    def parameters(self) -> Iterator[Tensor]:
        """All trainable parameters (actor, critics, log alpha)."""
        yield from self._actor_params
        yield from self._critic_params
        yield self.log_alpha

    # -- learning ------------------------------------------------------------------------------------------------
    def target_subset(self) -> Tensor | None:
        """REDQ: indices of the ``num_target_critics`` target critics used this update (drawn from the
        generator), or None when the target uses all critics (no draw)."""
        c = self.config
        if c.num_target_critics is None or c.num_target_critics >= c.num_critics:
            return None
        rng = self._rng
        device = self.device if self._draws_in_place() else rng.device
        return torch.randperm(c.num_critics, generator=rng, device=device)[: c.num_target_critics].to(self.device)

    @torch.no_grad()
    def _target(
        self, reward: Tensor, next_obs: Tensor, terminated: Tensor, alpha: Tensor, noise: Tensor, subset: Tensor | None
    ) -> Tensor:
        with self._autocast():
            next_action, next_log_prob = self.actor.sample(next_obs, noise)
            next_q_all = self.target_critic(next_obs, next_action)
        next_q_all = next_q_all.float()
        if subset is not None:
            next_q_all = next_q_all[subset]
        next_q = next_q_all.min(dim=0).values
        return losses.td_target(reward, terminated, next_q, next_log_prob, alpha, self.config.gamma)

    def compute_target(self, batch: TransitionBatch, noise: Tensor | None = None) -> Tensor:
        """The soft TD targets ``[B]`` of ``batch`` as :meth:`update` computes them (min over the target critics,
        or over a REDQ subset; ``terminated`` rows get exactly their reward).

        Args:
            batch: transitions (env-unit actions; only reward, next_obs and terminated are used).
            noise: ``[B, A]`` standard-normal draws for the next actions; default drawn from the generator.
        """
        batch = batch.to(self.device)
        if noise is None:
            noise = self._randn((len(batch), self.action_dim))
        alpha = self.log_alpha.detach().exp()
        return self._target(batch.reward, batch.next_obs, batch.terminated, alpha, noise, self.target_subset())

    def critic_td_loss(self, obs: Tensor, action_unit: Tensor, target: Tensor) -> Tensor:
        """TD loss of the critic ensemble on ``obs [B, D]``, ``action_unit [B, A]`` (in [-1, 1]), ``target [B]``."""
        with self._autocast():
            q = self.critic(obs, action_unit)
        return losses.critic_loss(q.float(), target)

    def update(
        self, batch: TransitionBatch, *, clone_actions: bool = False, bc_batch: TransitionBatch | None = None
    ) -> Metrics:
        """One SAC-N update on ``batch`` (env-unit actions): critics, actor and alpha in ``update_order``, targets.

        ``clone_actions=True`` replaces the actor's objective by behaviour cloning of the batch's actions in the
        form of CQL's released ``policy_eval_start`` (``alpha * log pi(pi(s)|s) - log pi(a_batch|s)``); critics,
        alpha and targets update as usual (an offline warm start: the critics learn the cloned policy's values).
        ``bc_batch`` (dataset transitions; used when ``config.bc_weight > 0``): the actor's behaviour regulariser.

        Returns:
            ``critic_loss`` (TD part), ``q_mean``, ``q_std`` (std over critics, mean over the batch),
            ``target_q_mean``, ``alpha`` (the value used in this update), ``edac_loss`` / ``adv_critic_loss`` when
            enabled, ``actor_loss``, ``alpha_loss``, ``entropy`` (``-mean log pi``; from the last actor update when
            ``actor_update_every > 1``). Keys carry no namespace; callers prefix ``train/``.
        """
        c = self.config
        if batch.obs.device != self.device:
            batch = batch.to(self.device)
        if batch.obs_dim != self.obs_dim or batch.action_dim != self.action_dim:
            raise ValueError(
                f"SAC.update: batch has obs/action dims {batch.obs_dim}/{batch.action_dim}, "
                f"learner expects {self.obs_dim}/{self.action_dim}"
            )
        anchor = None
        if c.bc_weight > 0 and bc_batch is not None and not clone_actions:
            bc_batch = bc_batch.to(self.device) if bc_batch.obs.device != self.device else bc_batch
            anchor = (bc_batch.obs, bc_batch.action)
        # Every random draw of the update, in this order (the order is part of "same seed, same numbers").
        noise, next_noise = self._draw_noise(batch.obs.shape[0])
        subset = self.target_subset()
        input_noise = self._randn(batch.obs.shape) if c.critic_input_noise_std > 0 else None
        do_actor = self.num_updates % c.actor_update_every == 0
        values, actor_values = self._step(
            batch.obs, batch.action, batch.reward, batch.next_obs, batch.terminated, noise, next_noise, subset,
            input_noise, anchor, clone_actions, do_actor,
        )
        if actor_values is not None:
            # Kept across updates: a CUDA-graph output is overwritten by the next replay, so compiled steps copy it.
            self._last_actor_metrics = actor_values if c.compile == "none" else actor_values.clone()
        self.num_updates += 1
        # Read lazily: no host sync here; the floats are copied the first time a caller reads a value.
        return LazyMetrics(self._metric_names, torch.cat([values, self._last_actor_metrics]))

    def _update_step(
        self,
        obs: Tensor,
        action_env: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
        noise: Tensor,
        next_noise: Tensor,
        subset: Tensor | None,
        input_noise: Tensor | None,
        anchor_env: tuple[Tensor, Tensor] | None,
        clone_actions: bool,
        do_actor: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """The update's tensor work (what ``compile`` traces): no RNG, no host sync, no Python-side counters.

        Returns:
            ``(values, actor_values)``: ``[5 + extras]`` critic-side metrics in ``_metric_names`` order, and the
            ``[3]`` actor metrics (None when the actor did not step this update).
        """
        c = self.config
        action = self.to_unit(action_env)
        anchor = None if anchor_env is None else (anchor_env[0], self.to_unit(anchor_env[1]))
        alpha = self.log_alpha.detach().exp()  # SB3 order: one alpha for the whole update
        actor_first = c.update_order == "alpha_actor_critic"
        actor_values: Tensor | None = None
        clone = action if clone_actions else None
        if actor_first and do_actor:  # EDAC / RAVL order: alpha, actor (current critics), then critics
            alpha, actor_values = self._policy_step(obs, noise, alpha, alpha_first=True, clone=clone, anchor=anchor)

        target = self._target(reward, next_obs, terminated, alpha, next_noise, subset)

        # Critics.
        critic_obs = obs if input_noise is None else obs + c.critic_input_noise_std * input_noise
        extra: list[Tensor] = []
        if c.edac_eta > 0:
            with self._autocast():
                q, grads = self._action_gradients(critic_obs, action, create_graph=True)
            q = q.float()
            edac = losses.edac_diversity_loss(grads.float())
            td = losses.critic_loss(q, target)
            total = td + c.edac_eta * edac
            extra.append(edac.detach())
        else:
            with self._autocast():
                q = self.critic(critic_obs, action)
            q = q.float()
            td = losses.critic_loss(q, target)
            total = td
        if c.adv_epsilon > 0:
            delta = self._adversarial(
                lambda o: self.critic_td_loss(o, action, target),
                critic_obs, epsilon=c.adv_epsilon, steps=c.adv_steps, step_size=c.adv_step_size, norm=c.adv_norm,
            )
            adv = self.critic_td_loss(critic_obs + delta, action, target)
            total = total + c.adv_weight * adv
            extra.append(adv.detach())
        self.critic_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.critic_optimizer.step()

        if not actor_first and do_actor:  # SB3 order: actor and temperature with the updated critics
            _, actor_values = self._policy_step(obs, noise, alpha, alpha_first=False, clone=clone, anchor=anchor)

        # Targets: one fused lerp over all parameter tensors (no per-critic loop).
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, c.tau)

        q_det = q.detach()
        q_std = q_det.std(dim=0).mean() if c.num_critics > 1 else q_det.new_zeros(())
        values = torch.stack([td.detach(), q_det.mean(), q_std, target.mean(), alpha, *extra])
        return values, actor_values

    def _policy_step(
        self,
        obs: Tensor,
        noise: Tensor,
        alpha: Tensor,
        *,
        alpha_first: bool,
        clone: Tensor | None = None,
        anchor: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Actor and temperature update; returns the alpha the critics use and the ``[3]`` actor metrics.

        ``clone`` (actions in [-1, 1]): the actor clones them instead of maximising Q (see :meth:`update`).
        ``anchor`` (dataset obs, actions in [-1, 1]): TD3+BC's regulariser with weight ``config.bc_weight``.

        ``alpha_first=False`` (SB3): one backward and one step for both, the actor loss at ``alpha``.
        ``alpha_first=True`` (EDAC/RAVL): the temperature steps first, then the actor loss uses the new alpha.
        """
        c = self.config
        with self._autocast():
            pi, log_prob = self.actor.sample(obs, noise)
        al_loss = self.log_alpha.new_zeros(())
        if alpha_first and c.auto_alpha:
            al_loss, alpha = self._alpha_step(log_prob.detach())
        if clone is None:
            with self._autocast():
                q_pi = self.critic(obs, pi)
            a_loss = losses.actor_loss(q_pi.float(), log_prob, alpha, c.actor_q_reduction)
            if anchor is not None:  # TD3+BC: Q term scaled by bc_weight / mean|Q|, plus the behaviour term
                with self._autocast():
                    if c.bc_loss == "mse":
                        behaviour = (self.actor.deterministic(anchor[0]) - anchor[1]).pow(2).mean()
                    else:
                        behaviour = -self.actor.log_prob(*anchor).mean()
                scale = c.bc_weight / q_pi.detach().float().abs().mean().clamp_min(1e-6)
                a_loss = scale * a_loss + behaviour
        else:
            with self._autocast():
                clone_log_prob = self.actor.log_prob(obs, clone)
            a_loss = (alpha * log_prob - clone_log_prob).mean()
        policy_loss = a_loss
        if not alpha_first and c.auto_alpha:
            al_loss = losses.alpha_loss(self.log_alpha, log_prob, self.target_entropy)
            policy_loss = a_loss + al_loss
        self.policy_optimizer.zero_grad(set_to_none=True)
        # no gradients into the critics' weights (nor into log alpha: its loss detaches log pi)
        policy_loss.backward(inputs=self._actor_params if alpha_first else self._policy_params)
        self.policy_optimizer.step()
        return alpha, torch.stack([a_loss.detach(), al_loss.detach(), -log_prob.detach().mean()])

    def _alpha_first_step(self, log_prob: Tensor) -> tuple[Tensor, Tensor]:
        """EDAC/RAVL order: the temperature's own Adam step before the actor's; returns (its loss, new alpha).

        Its own function so that ``compile`` can keep it eager: a compiled actor region has ONE backward node,
        which this backward would run (and free) before the actor's backward needs it.
        """
        al_loss = losses.alpha_loss(self.log_alpha, log_prob, self.target_entropy)
        self.policy_optimizer.zero_grad(set_to_none=True)
        al_loss.backward(inputs=[self.log_alpha])  # the actor's grads stay None: its Adam step skips them
        self.policy_optimizer.step()
        return al_loss, self.log_alpha.detach().exp()

    # -- acting --------------------------------------------------------------------------------------------------
    def act(self, obs: np.ndarray | Tensor, deterministic: bool = False) -> Any:
        """Env-unit actions for ``obs [D]`` or ``[B, D]`` (numpy in -> numpy out, torch in -> torch out).

        Stochastic actions draw from the learner's generator.
        """
        return TorchPolicy(
            self.actor, self.action_scale, self.action_bias,
            deterministic=deterministic, generator=self._rng, use_bf16=False,
        )(obs)

    def as_policy(self, deterministic: bool = False, generator: torch.Generator | None = None) -> TorchPolicy:
        """A :class:`mbrl.types.Policy` over the live actor (``obs [B, D] -> env-unit action [B, A]``).

        Args:
            deterministic: ``tanh(mean)`` instead of a sample.
            generator: RNG of the samples; default the learner's own (its device generator on a GPU, so rollouts
                draw on the device).
        """
        return TorchPolicy(
            self.actor, self.action_scale, self.action_bias, deterministic=deterministic,
            generator=generator if generator is not None else self._rng, use_bf16=self.config.use_bf16,
        )

    # -- state ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, targets, optimizers, log alpha, RNG, update count.

        Tensors and plain containers only (loadable with ``torch.load(weights_only=True)``). A GPU learner adds
        ``device_generator`` (the state of its per-update draws); a learner on another device ignores it.
        """
        state: dict[str, Any] = {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "num_updates": torch.tensor(self.num_updates, dtype=torch.int64),
            "last_actor_metrics": self._last_actor_metrics.detach().clone(),
        }
        if self.device_generator is not None:
            state["device_generator"] = self.device_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` saved on any device (a clear ``KeyError`` names a missing entry).

        Exact continuation on the same device kind; across devices the weights, optimizers and host generator
        carry over and a GPU learner reseeds its device generator from the restored host generator.
        """
        required = (
            "actor", "critic", "target_critic", "log_alpha", "policy_optimizer", "critic_optimizer",
            "generator", "num_updates",
        )
        missing = [k for k in required if k not in state]
        if missing:
            raise KeyError(f"SAC.load_state_dict: missing entries {missing}")
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.num_updates = int(state["num_updates"])
        if "last_actor_metrics" in state:
            self._last_actor_metrics = state["last_actor_metrics"].to(self.device).clone()
        if self.device_generator is not None:
            saved = state.get("device_generator")
            if saved is not None and saved.numel() == self.device_generator.get_state().numel():
                self.device_generator.set_state(saved.cpu())
            else:
                self._reseed_device_generator()
