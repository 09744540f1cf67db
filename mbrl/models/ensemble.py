"""Probabilistic ensemble of Gaussian MLPs (PETS / MBPO), as ONE batched module.

Papers followed:
    Chua et al., 2018, "Deep Reinforcement Learning in a Handful of Trials using Probabilistic Dynamics Models"
    (PETS): Gaussian members, learned soft bounds on the log-variance, trajectory sampling with a fixed member
    per particle. Janner et al., 2019, "When to Trust Your Model: Model-Based Policy Optimization" (MBPO):
    7 members of 4x200 (SiLU/swish), 5 elites chosen on holdout MSE, per-layer weight decay, one random elite
    per transition at prediction time. Yu et al., 2020, "MOPO": the uncertainty ``max_e ||sigma_e||``.

Each member predicts the mean and log-variance of ``[next_obs - obs, reward]`` from ``[obs, action]``. All
members are one :class:`mbrl.nn.EnsembleMLP` (stacked weights, one ``baddbmm`` per layer), never a Python loop.

Units: inputs are standardised with statistics fitted by :meth:`ProbabilisticEnsemble.fit_normalizer`; targets
too when ``normalize_targets`` (then the log-variance bounds and the training loss live in standardised target
units, so every output dimension weighs the same). Everything returned by ``predict`` / ``predict_members`` is
in env units.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mbrl.data.normalizer import Normalizer
from mbrl.metrics import LazyMetrics
from mbrl.nn import EnsembleLinear, EnsembleMLP
from mbrl.types import Metrics, ModelStep, TransitionBatch
from mbrl.utils import resolve_device, warn_if_bf16_is_emulated

# MBPO's per-layer L2 coefficients for its 4 hidden layers + output layer (input -> output).
MBPO_WEIGHT_DECAY: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class EnsembleConfig:
    """Hyperparameters of :class:`ProbabilisticEnsemble` (defaults: MBPO's HalfCheetah model).

    Attributes:
        num_members: ``E``, members trained in parallel (each on its own bootstrap in :func:`mbrl.models.fit`).
        num_elites: members used for prediction, chosen by holdout MSE; ``None`` = ``min(5, num_members)``.
        hidden: hidden width.
        depth: number of hidden layers.
        activation: ``"silu"`` (MBPO's swish), ``"relu"``, ``"tanh"``, ``"elu"`` or ``"gelu"``.
        learning_rate: Adam step size.
        weight_decay: L2 penalty ``sum_l c_l * ||W_l||^2 / 2`` added to the loss (weights, not biases), one
            coefficient per layer (``depth + 1`` values, input layer first) or one value for all layers.
            ``None`` = MBPO's schedule (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), linearly interpolated over the
            layers when ``depth != 4``. A loss term (as MBPO), not AdamW's decoupled decay.
        max_logvar_init: initial upper soft bound of the log-variance (PETS/MBPO: 0.5).
        min_logvar_init: initial lower soft bound (PETS/MBPO: -10).
        logvar_bound_coef: weight of the penalty ``coef * (sum max_logvar - sum min_logvar)`` that keeps the
            learned bounds tight (PETS/MBPO: 0.01).
        deterministic: members predict only a mean, trained with MSE (no variance, no bounds). With
            ``num_members=1`` this is a single deterministic MLP.
        normalize_targets: standardise ``[delta_obs, reward]`` targets with statistics fitted on the training
            data (MBPO does not; it balances the Gaussian NLL across output dimensions of very different scale).
        bf16_inference: run ``predict``'s forward passes under bf16 autocast (about 2-3x faster on CPUs with
            AMX; see ``scripts/bench/models.py`` for the accuracy cost).
        bf16_training: run the training forward/backward matmuls under bf16 autocast (~2.3x faster on CPUs
            with AMX); weights, optimizer state and the loss stay float32 (mixed precision).
        full_info: ``predict`` computes every member on every row and returns ``info["members"]`` and
            ``info["uncertainty"]`` (MOPO needs them). ``False``: a sampled prediction computes only the member
            drawn for each row (E times fewer FLOPs; enough for MBPO / PETS rollouts) and a deterministic one
            only the elites; ``info`` then holds only ``"member"``. ``predict(..., full_info=...)`` overrides
            it per call.
        uncertainty_members: which members ``info["uncertainty"]`` takes its max over: ``"all"`` (MOPO's and
            MOREC's released code: ``np.amax(np.linalg.norm(stds, axis=2), axis=0)`` over every network,
            tianheyu927/mopo ``mopo/models/fake_env.py`` ``FakeEnv.step``; polixir/morec
            ``offlinerlkit/dynamics/ensemble_dynamics.py``) or ``"elites"`` (this toolkit's earlier rule).
        predict_chunk_size: rows per forward pass inside ``predict`` / ``evaluate``. ``None``: 4096 on CPU
            (a chunk's activations stay in cache; measured best among 1k-16k, and 16k is ~25 % slower) and
            1M on GPUs (an H100 ran 100k-row rollouts 2-10x faster unchunked than in 4k chunks).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    """

    num_members: int = 7
    num_elites: int | None = None
    hidden: int = 200
    depth: int = 4
    activation: str = "silu"
    learning_rate: float = 1e-3
    weight_decay: tuple[float, ...] | None = None
    max_logvar_init: float = 0.5
    min_logvar_init: float = -10.0
    logvar_bound_coef: float = 0.01
    deterministic: bool = False
    normalize_targets: bool = True
    bf16_inference: bool = False
    bf16_training: bool = False
    full_info: bool = True
    uncertainty_members: Literal["all", "elites"] = "all"
    predict_chunk_size: int | None = None
    device: str = "auto"

    def elite_count(self) -> int:
        """The number of elites this config resolves to."""
        return min(5, self.num_members) if self.num_elites is None else self.num_elites

    def layer_decays(self) -> tuple[float, ...]:
        """One L2 coefficient per layer (``depth + 1``), input layer first."""
        n = self.depth + 1
        if self.weight_decay is None:
            if n == len(MBPO_WEIGHT_DECAY):
                return MBPO_WEIGHT_DECAY
            pos = np.linspace(0.0, 1.0, n)
            ref = np.linspace(0.0, 1.0, len(MBPO_WEIGHT_DECAY))
            return tuple(float(v) for v in np.interp(pos, ref, MBPO_WEIGHT_DECAY))
        if len(self.weight_decay) == 1:
            return tuple(float(self.weight_decay[0]) for _ in range(n))
        return tuple(float(v) for v in self.weight_decay)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.num_members < 1:
            raise ValueError(f"EnsembleConfig.num_members must be >= 1, got {self.num_members}")
        if not 1 <= self.elite_count() <= self.num_members:
            raise ValueError(
                f"EnsembleConfig.num_elites must be in [1, num_members={self.num_members}], got {self.num_elites}"
            )
        if self.hidden < 1 or self.depth < 1:
            raise ValueError(f"EnsembleConfig: hidden and depth must be >= 1, got {self.hidden}, {self.depth}")
        if self.uncertainty_members not in ("all", "elites"):
            raise ValueError(
                f"EnsembleConfig.uncertainty_members must be 'all' or 'elites', got {self.uncertainty_members!r}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"EnsembleConfig.activation: unknown {self.activation!r}; choose one of {sorted(_ACTIVATIONS)}"
            )
        if self.weight_decay is not None and len(self.weight_decay) not in (1, self.depth + 1):
            raise ValueError(
                f"EnsembleConfig.weight_decay: expected 1 or depth+1={self.depth + 1} values, "
                f"got {len(self.weight_decay)}"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"EnsembleConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.min_logvar_init >= self.max_logvar_init:
            raise ValueError("EnsembleConfig: min_logvar_init must be below max_logvar_init")
        if self.predict_chunk_size is not None and self.predict_chunk_size < 1:
            raise ValueError(f"EnsembleConfig.predict_chunk_size must be >= 1, got {self.predict_chunk_size}")


class _EnsembleNetwork(nn.Module):
    """Normalisers + stacked MLP + log-variance bounds + elite indices: everything ``state_dict`` holds."""

    elites: Tensor

    def __init__(self, obs_dim: int, action_dim: int, config: EnsembleConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.out_dim = obs_dim + 1
        self.deterministic = config.deterministic
        heads = 1 if config.deterministic else 2
        self.input_norm = Normalizer(obs_dim + action_dim)
        self.target_norm = Normalizer(self.out_dim)
        self.mlp = EnsembleMLP(
            config.num_members,
            obs_dim + action_dim,
            heads * self.out_dim,
            hidden=config.hidden,
            depth=config.depth,
            activation=_ACTIVATIONS[config.activation],
            generator=generator,
        )
        if not config.deterministic:
            shape = (config.num_members, 1, self.out_dim)
            self.max_logvar = nn.Parameter(torch.full(shape, float(config.max_logvar_init)))
            self.min_logvar = nn.Parameter(torch.full(shape, float(config.min_logvar_init)))
        self.register_buffer("elites", torch.arange(config.elite_count(), dtype=torch.long))

    def layers(self) -> list[EnsembleLinear]:
        return [*self.mlp.hidden_layers, self.mlp.output_layer]  # type: ignore[list-item]

    def forward(self, x_norm: Tensor) -> tuple[Tensor, Tensor | None]:
        """``x_norm [B, in]`` or ``[E, B, in]`` (standardised) -> ``(mean, logvar)`` ``[E, B, out]`` in
        standardised target units (``logvar`` is ``None`` for deterministic members)."""
        return self._heads(self.mlp(x_norm).float(), None)

    def forward_members(self, x_norm: Tensor, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Only members ``idx [U]``: ``x_norm [B, in]`` or ``[U, B, in]`` -> ``(mean, logvar)`` ``[U, B, out]``."""
        layers = self.layers()
        h = x_norm if x_norm.ndim == 3 else x_norm.unsqueeze(0).expand(len(idx), -1, -1)
        for i, layer in enumerate(layers):
            h = torch.baddbmm(layer.bias[idx], h, layer.weight[idx])
            if i < len(layers) - 1:
                h = self.mlp.activation(h)
        return self._heads(h.float(), idx)

    def _heads(self, out: Tensor, idx: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.deterministic:
            return out, None
        mean, logvar = out.split(self.out_dim, dim=-1)
        max_logvar = self.max_logvar if idx is None else self.max_logvar[idx]
        min_logvar = self.min_logvar if idx is None else self.min_logvar[idx]
        # PETS soft bounds: smooth clamp of the log-variance into [min_logvar, max_logvar].
        logvar = max_logvar - F.softplus(max_logvar - logvar)
        logvar = min_logvar + F.softplus(logvar - min_logvar)
        return mean, logvar


class ProbabilisticEnsemble:
    """``E`` Gaussian (or deterministic) MLPs predicting ``[next_obs - obs, reward]``; a ``WorldModel`` and an
    ``Ensemble``.

    Prediction modes:
        * ``predict(..., deterministic=False)`` (MBPO): for each row a random elite (drawn with ``generator``)
          and a Gaussian sample from that member's mean and std.
        * ``predict(..., deterministic=True)``: the mean over the elites of the members' means (no randomness).
          (MBPO's "deterministic" uses the mean of the randomly drawn member; the elite mean is a better point
          estimate and needs no generator.)
        * ``predict_with_members(obs, action, members)`` (PETS trajectory sampling, TS-inf): row ``i`` uses
          member ``members[i]`` (any member, not only elites), sampled or its mean.
    ``info`` holds ``"members"`` ``[E, B, D]`` (every member's mean next_obs), ``"uncertainty"`` ``[B]``
    (MOPO: ``max`` over all members — or the elites, per ``config.uncertainty_members`` — of the L2 norm of the
    predicted std of ``[next_obs, reward]`` in env units; for deterministic members the largest distance of a
    member's mean from those members' mean, 0 for one member), and
    ``"member"`` ``[B]`` (the member used per row; ``-1`` for the elite mean). ``terminated`` is zeros: apply
    a known termination function with :class:`mbrl.models.wrappers.KnownFunctionsModel`.

    Training: ``update(batch)`` is one Adam step with the same ``[B]`` minibatch for every member;
    ``update_members(obs, action, reward, next_obs)`` takes ``[E, B, ...]`` per-member (bootstrapped) batches.
    Loss per member (MBPO): ``mean((mu - y)^2 * exp(-logvar) + logvar)`` (twice the Gaussian NLL without its
    constant; MSE for deterministic members), summed over members, plus the log-variance bound penalty and the
    per-layer L2 penalty.

    Inputs are moved to the model's device; outputs live there. Inference runs under ``torch.no_grad`` (not
    ``inference_mode``: callers may feed predictions into their own autograd graphs).

    Args:
        obs_dim: ``D``.
        action_dim: ``A``.
        config: hyperparameters.
        seed: seed of the weight initialisation.
    """

    def __init__(self, obs_dim: int, action_dim: int, config: EnsembleConfig | None = None, *, seed: int = 0):
        self.config = config = config if config is not None else EnsembleConfig()
        config.validate()
        if obs_dim < 1 or action_dim < 1:
            raise ValueError(f"ProbabilisticEnsemble: obs_dim and action_dim must be >= 1, got {obs_dim}, {action_dim}")
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.num_members = config.num_members
        self.device = resolve_device(config.device)
        for flag in ("bf16_inference", "bf16_training"):
            if getattr(config, flag):
                warn_if_bf16_is_emulated(self.device, f"EnsembleConfig.{flag}")
        generator = torch.Generator().manual_seed(seed)
        self.network = _EnsembleNetwork(self.obs_dim, self.action_dim, config, generator).to(self.device)
        self._decays = config.layer_decays()
        params = list(self.network.parameters())
        # Fused Adam (one kernel over the few stacked tensors): ~8 % faster training steps than foreach on CPU;
        # fused on CUDA too (its step counts stay on the device: no host sync per step). Foreach elsewhere (meta).
        fused = self.device.type in ("cpu", "cuda")
        try:
            self.optimizer = torch.optim.Adam(params, lr=config.learning_rate, fused=fused, foreach=not fused)
        except RuntimeError:  # pragma: no cover - a torch without the fused kernel
            self.optimizer = torch.optim.Adam(params, lr=config.learning_rate, foreach=True)
        self._autocast = config.bf16_inference
        self._chunk = config.predict_chunk_size or (4096 if self.device.type == "cpu" else 1 << 20)
        self._train_autocast = config.bf16_training
        self._predict_generator: torch.Generator | None = None

    # ------------------------------------------------------------------------------------------- helpers
    @property
    def elites(self) -> list[int]:
        """Indices of the elite members (ascending)."""
        return [int(i) for i in self.network.elites.tolist()]

    @property
    def num_elites(self) -> int:
        return int(self.network.elites.numel())

    def parameters(self) -> list[nn.Parameter]:
        """The trainable tensors (stacked over members)."""
        return list(self.network.parameters())

    def _check(self, obs: Tensor, action: Tensor, where: str) -> tuple[Tensor, Tensor]:
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"ProbabilisticEnsemble.{where}: expected obs [B, {self.obs_dim}], got {tuple(obs.shape)}")
        if action.ndim != 2 or action.shape != (obs.shape[0], self.action_dim):
            raise ValueError(
                f"ProbabilisticEnsemble.{where}: expected action [{obs.shape[0]}, {self.action_dim}], "
                f"got {tuple(action.shape)}"
            )
        return (
            obs.to(self.device, torch.float32, non_blocking=True),
            action.to(self.device, torch.float32, non_blocking=True),
        )

    def _inputs(self, obs: Tensor, action: Tensor) -> Tensor:
        return self.network.input_norm.normalize(torch.cat([obs, action], dim=-1))

    def _targets(self, obs: Tensor, reward: Tensor, next_obs: Tensor) -> Tensor:
        target = torch.cat([next_obs - obs, reward.unsqueeze(-1)], dim=-1)
        return self.network.target_norm.normalize(target)

    def _bf16(self, enabled: bool) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when ``enabled``; no context at all otherwise (also on devices autocast does not know)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

    def _device_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        """The generator of ``predict``'s draws: ``generator`` itself when it lives on the model's device (always
        on CPU), else a generator on the model's device seeded from one draw of ``generator`` (a GPU model driven
        by a host generator draws its elites and noise on the device instead of copying them over each step)."""
        if generator is None or generator.device == self.device or self.device.type == "meta":
            return generator
        if self._predict_generator is None:
            self._predict_generator = torch.Generator(device=self.device)
        self._predict_generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return self._predict_generator

    def _forward_eval(self, x_norm: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """All members (``idx=None``) or members ``idx``, under bf16 autocast when configured."""
        with self._bf16(self._autocast):
            if idx is None:
                return self.network(x_norm)  # type: ignore[no-any-return]
            return self.network.forward_members(x_norm, idx)

    def _forward_rows(self, x_norm: Tensor, members: Tensor) -> tuple[Tensor, Tensor | None]:
        """Row ``i`` through member ``members[i]`` only: rows are grouped by member into a padded
        ``[U, max_count, in]`` batch (one ``baddbmm`` per layer for the ``U`` members used), then scattered back.

        Returns:
            ``(mean [n, out], logvar [n, out] | None)`` in standardised units.
        """
        n, e = x_norm.shape[0], self.num_members
        counts = torch.bincount(members, minlength=e)
        used = (counts > 0).nonzero().squeeze(1)
        order = torch.argsort(members, stable=True)
        sorted_members = members[order]
        pos = torch.arange(n, device=x_norm.device) - (torch.cumsum(counts, 0) - counts)[sorted_members]
        slot = torch.zeros(e, dtype=torch.long, device=x_norm.device)
        slot[used] = torch.arange(len(used), device=x_norm.device)
        group = slot[sorted_members]
        grouped = x_norm.new_zeros(len(used), int(counts.max()), x_norm.shape[1])
        grouped[group, pos] = x_norm[order]
        mean_g, logvar_g = self._forward_eval(grouped, used)
        mean = torch.empty(n, mean_g.shape[-1], device=x_norm.device)
        mean[order] = mean_g[group, pos]
        if logvar_g is None:
            return mean, None
        logvar = torch.empty_like(mean)
        logvar[order] = logvar_g[group, pos]
        return mean, logvar

    def _chunks(self, n: int) -> list[slice]:
        size = self._chunk
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    # ------------------------------------------------------------------------------------------- fitting
    def fit_normalizer(self, batch: TransitionBatch) -> None:
        """Fit input (and, if configured, target) statistics on the training data ``batch``."""
        obs, action = self._check(batch.obs, batch.action, "fit_normalizer")
        self.network.input_norm.fit(torch.cat([obs, action], dim=-1))
        if self.config.normalize_targets:
            reward = batch.reward.to(self.device, torch.float32)
            next_obs = batch.next_obs.to(self.device, torch.float32)
            self.network.target_norm.fit(torch.cat([next_obs - obs, reward.unsqueeze(-1)], dim=-1))

    def _loss(self, x_norm: Tensor, target_norm: Tensor) -> tuple[Tensor, Metrics]:
        with self._bf16(self._train_autocast):
            mean, logvar = self.network(x_norm)  # float32 out (the network casts before the heads)
        se = (mean - target_norm) ** 2
        decay = sum(
            (c * 0.5 * layer.weight.pow(2).sum() for c, layer in zip(self._decays, self.network.layers()) if c > 0),
            torch.zeros((), device=self.device),
        )
        names = ["mse"]
        values = [se.detach().mean()]
        if logvar is None:
            fit_loss = se.mean(dim=(1, 2)).sum()
            bound = decay.new_zeros(())
        else:
            inv_var = torch.exp(-logvar)
            fit_loss = (se * inv_var + logvar).mean(dim=(1, 2)).sum()
            bound = self.config.logvar_bound_coef * (self.network.max_logvar.sum() - self.network.min_logvar.sum())
            names.append("logvar_mean")
            values.append(logvar.detach().mean())
        loss = fit_loss + bound + decay
        names += ["loss", "bound_penalty", "weight_decay"]
        values += [fit_loss.detach() / self.num_members, bound.detach(), decay.detach()]
        # Read lazily (one host copy when a caller reads a value): no device sync inside the training step.
        metrics = LazyMetrics(names, torch.stack(values))
        return loss, metrics

    def _step(self, x_norm: Tensor, target_norm: Tensor) -> Metrics:
        self.network.train()
        loss, metrics = self._loss(x_norm, target_norm)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return metrics

    def update(self, batch: TransitionBatch) -> Metrics:
        """One Adam step on ``batch`` (``[B]`` rows, the same for every member).

        Returns:
            ``loss`` (per-member training loss, averaged), ``mse`` (standardised units), ``bound_penalty``,
            ``weight_decay`` and, for Gaussian members, ``logvar_mean``.
        """
        obs, action = self._check(batch.obs, batch.action, "update")
        target = self._targets(obs, batch.reward.to(self.device), batch.next_obs.to(self.device))
        return self._step(self._inputs(obs, action), target)

    def update_members(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor) -> Metrics:
        """One Adam step where member ``e`` trains on its own rows ``obs[e]`` etc. (bootstrap resamples).

        Args:
            obs: ``[E, B, D]``.
            action: ``[E, B, A]``.
            reward: ``[E, B]``.
            next_obs: ``[E, B, D]``.
        """
        e = self.num_members
        if obs.ndim != 3 or obs.shape[0] != e or obs.shape[2] != self.obs_dim:
            raise ValueError(
                f"ProbabilisticEnsemble.update_members: expected obs [{e}, B, {self.obs_dim}], got {tuple(obs.shape)}"
            )
        b = obs.shape[1]
        for name, t, shape in (
            ("action", action, (e, b, self.action_dim)),
            ("reward", reward, (e, b)),
            ("next_obs", next_obs, (e, b, self.obs_dim)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"ProbabilisticEnsemble.update_members: expected {name} {shape}, got {tuple(t.shape)}")
        dev = self.device
        obs, action, reward, next_obs = (t.to(dev, torch.float32) for t in (obs, action, reward, next_obs))
        return self._step(self._inputs(obs, action), self._targets(obs, reward, next_obs))

    # ---------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _member_errors(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """Sums over ``batch`` (chunked): per-member standardised squared error and NLL, elite-mean errors."""
        obs_all, action_all = self._check(batch.obs, batch.action, "evaluate")
        reward_all = batch.reward.to(self.device, torch.float32)
        next_all = batch.next_obs.to(self.device, torch.float32)
        e, d = self.num_members, self.obs_dim
        sq = torch.zeros(e, device=self.device, dtype=torch.float64)
        nll = torch.zeros(e, device=self.device, dtype=torch.float64)
        obs_se = torch.zeros((), device=self.device, dtype=torch.float64)
        rew_se = torch.zeros((), device=self.device, dtype=torch.float64)
        elites = self.network.elites
        self.network.eval()
        for sl in self._chunks(len(batch)):
            obs, action, reward, next_obs = obs_all[sl], action_all[sl], reward_all[sl], next_all[sl]
            mean_n, logvar_n = self.network(self._inputs(obs, action))
            target_n = self._targets(obs, reward, next_obs)
            se = (mean_n - target_n) ** 2
            sq += se.sum(dim=(1, 2)).double()
            if logvar_n is not None:
                nll += (0.5 * (se * torch.exp(-logvar_n) + logvar_n + _LOG_2PI)).sum(dim=(1, 2)).double()
            pred = self.network.target_norm.denormalize(mean_n[elites].mean(0))
            obs_se += ((obs + pred[:, :d] - next_obs) ** 2).sum().double()
            rew_se += ((pred[:, d] - reward) ** 2).sum().double()
        n = max(len(batch), 1)
        return {
            "member_mse": sq / (n * (d + 1)),
            "member_nll": nll / (n * (d + 1)),
            "obs_mse": obs_se / (n * d),
            "reward_mse": rew_se / n,
        }

    def member_losses(self, batch: TransitionBatch) -> Tensor:
        """``[E]`` holdout MSE of each member's mean, in standardised target units (MBPO's elite criterion)."""
        return self._member_errors(batch)["member_mse"].float()

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        """Holdout metrics.

        Returns:
            ``loss``: mean over members of each member's MSE in standardised target units (MBPO early-stops
            and picks elites on holdout MSE, not NLL: the NLL keeps improving as variances shrink);
            ``mse``: next_obs MSE of the elite-mean prediction in env units; ``reward_mse`` likewise;
            ``nll``: Gaussian NLL per output dimension (standardised units, members averaged; Gaussian only);
            ``elite_loss``: ``loss`` over the elites only.
        """
        err = self._member_errors(batch)
        out: Metrics = {
            "loss": float(err["member_mse"].mean()),
            "mse": float(err["obs_mse"]),
            "reward_mse": float(err["reward_mse"]),
            "elite_loss": float(err["member_mse"][self.network.elites].mean()),
        }
        if not self.config.deterministic:
            out["nll"] = float(err["member_nll"].mean())
        return out

    def select_elites(self, batch: TransitionBatch) -> list[int]:
        """Make the ``num_elites`` members with the lowest holdout MSE on ``batch`` the elites; return them."""
        losses = self.member_losses(batch)
        order = torch.argsort(losses, stable=True)[: self.num_elites]
        self.network.elites.copy_(torch.sort(order).values.to(self.network.elites))
        return self.elites

    def set_elites(self, elites: list[int]) -> None:
        """Set the elite indices explicitly (``num_elites`` distinct members)."""
        idx = sorted({int(i) for i in elites})
        if len(idx) != self.num_elites or idx[0] < 0 or idx[-1] >= self.num_members:
            raise ValueError(
                f"ProbabilisticEnsemble.set_elites: expected {self.num_elites} distinct members in "
                f"[0, {self.num_members}), got {elites}"
            )
        self.network.elites.copy_(torch.tensor(idx, dtype=torch.long))

    # ---------------------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict_members(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Every member's prediction in env units.

        Returns:
            ``(mean [E, B, D+1], logvar [E, B, D+1])`` of ``[next_obs, reward]``; ``logvar`` is ``-inf``
            (zero variance) for deterministic members.
        """
        obs, action = self._check(obs, action, "predict_members")
        e, n = self.num_members, obs.shape[0]
        mean = torch.empty(e, n, self.obs_dim + 1, device=self.device)
        logvar = torch.empty_like(mean)
        std_t = self.network.target_norm.std
        self.network.eval()
        for sl in self._chunks(n):
            mean_n, logvar_n = self._forward_eval(self._inputs(obs[sl], action[sl]))
            m = self.network.target_norm.denormalize(mean_n)
            m[..., : self.obs_dim] += obs[sl]
            mean[:, sl] = m
            if logvar_n is None:
                logvar[:, sl] = -math.inf
            else:
                logvar[:, sl] = logvar_n + 2.0 * torch.log(std_t)
        return mean, logvar

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        full_info: bool | None = None,
    ) -> ModelStep:
        """Predict one step (MBPO sampling: a random elite per row; see the class docstring).

        Args:
            obs: ``[B, D]``.
            action: ``[B, A]`` in env units.
            deterministic: return the elite mean instead of a sample.
            generator: source of the elite draws and Gaussian noise (its device is used for the draws).
            full_info: override ``config.full_info`` for this call.
        """
        return self._predict(obs, action, None, deterministic, generator, full_info)

    def predict_with_members(
        self,
        obs: Tensor,
        action: Tensor,
        members: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        full_info: bool | None = None,
    ) -> ModelStep:
        """Predict with member ``members[i]`` for row ``i`` (PETS trajectory sampling).

        Args:
            obs: ``[B, D]``.
            action: ``[B, A]``.
            members: ``[B]`` integer member indices in ``[0, E)``.
            deterministic: that member's mean instead of a sample.
            generator: source of the Gaussian noise.
            full_info: override ``config.full_info`` for this call.
        """
        if members.shape != (obs.shape[0],):
            raise ValueError(
                f"ProbabilisticEnsemble.predict_with_members: expected members [{obs.shape[0]}], "
                f"got {tuple(members.shape)}"
            )
        if members.numel() and (int(members.min()) < 0 or int(members.max()) >= self.num_members):
            raise ValueError(
                f"ProbabilisticEnsemble.predict_with_members: member indices must be in [0, {self.num_members})"
            )
        return self._predict(obs, action, members.to(self.device, torch.long), deterministic, generator, full_info)

    @torch.no_grad()
    def _predict(
        self,
        obs: Tensor,
        action: Tensor,
        members: Tensor | None,
        deterministic: bool,
        generator: torch.Generator | None,
        full_info: bool | None,
    ) -> ModelStep:
        obs, action = self._check(obs, action, "predict")
        full = self.config.full_info if full_info is None else full_info
        n, d, e = obs.shape[0], self.obs_dim, self.num_members
        elites = self.network.elites
        generator = self._device_generator(generator)
        gen_device = self.device if generator is None or self.device.type == "meta" else generator.device
        # Draws for the whole batch up front: samples depend neither on the chunk size nor on full_info.
        if members is None and not deterministic:
            pick = torch.randint(len(elites), (n,), generator=generator, device=gen_device).to(self.device)
            members = elites[pick]
        noise = None
        if members is not None and not deterministic and not self.config.deterministic:
            noise = torch.randn(n, d + 1, generator=generator, device=gen_device).to(self.device)
        out = torch.empty(n, d + 1, device=self.device)
        all_means = torch.empty(e, n, d, device=self.device) if full else None
        uncertainty = torch.empty(n, device=self.device) if full else None
        std_t = self.network.target_norm.std
        self.network.eval()
        for sl in self._chunks(n):
            x = self._inputs(obs[sl], action[sl])
            if full:
                assert all_means is not None and uncertainty is not None
                mean_n, logvar_n = self._forward_eval(x)
                mean = self.network.target_norm.denormalize(mean_n)  # [E, b, D+1] delta and reward, env units
                all_means[:, sl] = mean[..., :d] + obs[sl]
                elite_mean = mean[elites]
                judged = elites if self.config.uncertainty_members == "elites" else slice(None)
                if logvar_n is None:
                    spread = mean[judged]
                    uncertainty[sl] = (spread - spread.mean(0)).norm(dim=-1).amax(0)
                else:
                    uncertainty[sl] = (torch.exp(0.5 * logvar_n[judged]) * std_t).norm(dim=-1).amax(0)
                if members is None:
                    out[sl] = elite_mean.mean(0)
                    continue
                rows = torch.arange(sl.stop - sl.start, device=self.device)
                m = members[sl]
                chosen_mean, chosen_logvar = mean[m, rows], None if logvar_n is None else logvar_n[m, rows]
            elif members is None:
                mean_n, _ = self._forward_eval(x, elites)
                out[sl] = self.network.target_norm.denormalize(mean_n).mean(0)
                continue
            else:
                mean_n, chosen_logvar = self._forward_rows(x, members[sl])
                chosen_mean = self.network.target_norm.denormalize(mean_n)
            if noise is not None and chosen_logvar is not None:
                chosen_mean = chosen_mean + noise[sl] * torch.exp(0.5 * chosen_logvar) * std_t
            out[sl] = chosen_mean
        info: dict[str, Tensor] = {
            "member": members if members is not None else torch.full((n,), -1, dtype=torch.long, device=self.device)
        }
        if all_means is not None and uncertainty is not None:
            info["members"] = all_means
            info["uncertainty"] = uncertainty
        return ModelStep(
            next_obs=obs + out[:, :d],
            reward=out[:, d].clone(),
            terminated=torch.zeros(n, device=self.device),
            info=info,
        )

    # ------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """``{"network": weights, normalisers, log-variance bounds, elites; "optimizer": Adam state}``."""
        return {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (shapes must match this model's config)."""
        missing = [k for k in ("network",) if k not in state_dict]
        if missing:
            raise KeyError(f"ProbabilisticEnsemble.load_state_dict: missing key(s) {missing}")
        self.network.load_state_dict(state_dict["network"])
        if "optimizer" in state_dict:
            self.optimizer.load_state_dict(state_dict["optimizer"])

    def get_member_state(self, member: int) -> dict[str, Tensor]:
        """A copy of member ``member``'s parameters (a slice of every stacked tensor)."""
        return {name: p.detach()[member].clone() for name, p in self.network.named_parameters()}

    def set_member_state(self, member: int, state: Mapping[str, Tensor]) -> None:
        """Write :meth:`get_member_state`'s output back into member ``member``."""
        with torch.no_grad():
            for name, p in self.network.named_parameters():
                p[member].copy_(state[name])

    def __repr__(self) -> str:
        c = self.config
        kind = "deterministic" if c.deterministic else "gaussian"
        return (
            f"ProbabilisticEnsemble({kind}, members={c.num_members}, elites={self.elites}, "
            f"mlp={c.depth}x{c.hidden} {c.activation}, obs_dim={self.obs_dim}, action_dim={self.action_dim})"
        )
