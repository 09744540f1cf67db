"""Networks of the SAC-N learner: a Tanh-Gaussian actor and a critic ensemble with stacked weights.

The critic ensemble is ONE module: every layer is an :class:`mbrl.nn.EnsembleLinear` (weights ``[N, in, out]``,
one ``baddbmm`` for all critics), optionally spectrally normalised per critic (Miyato et al., "Spectral
Normalization for Generative Adversarial Networks", ICLR 2018), which the Lipschitz-regularised critic of
Zheng et al. (ICLR 2023) uses.

All parameters are initialised from an explicit ``torch.Generator`` (never the global RNG), like
``torch.nn.Linear``: weights and biases ``U(-1/sqrt(in), 1/sqrt(in))``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mbrl.nn import EnsembleLinear

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


class Dense(nn.Module):
    """``torch.nn.Linear`` (weight ``[out, in]``) initialised from an explicit generator.

    ``nn.Linear``'s constructor draws from the global RNG; this one does not touch it.
    """

    def __init__(self, in_features: int, out_features: int, *, generator: torch.Generator | None = None):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound, generator=generator))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class TanhGaussianActor(nn.Module):
    """SAC's squashed Gaussian policy in ``[-1, 1]^A`` (Haarnoja et al., 2018, appendix C).

    ``obs [B, D] -> ReLU MLP (hidden x depth) -> (mean [B, A], log_std [B, A])``; ``log_std`` is clamped to
    ``[log_std_min, log_std_max]`` (SB3 uses -20..2). Actions are ``tanh(mean + std * eps)``.

    Args:
        obs_dim: D.
        action_dim: A.
        hidden: hidden width.
        depth: number of hidden layers.
        log_std_min: lower clamp of the log standard deviation.
        log_std_max: upper clamp.
        generator: initialisation RNG.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: int = 256,
        depth: int = 2,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        widths = [obs_dim] + [hidden] * depth
        self.hidden_layers = nn.ModuleList(Dense(a, b, generator=generator) for a, b in itertools.pairwise(widths))
        # One output layer for mean and log_std (equivalent to SB3's two heads on the same latent).
        self.head = Dense(widths[-1], 2 * action_dim, generator=generator)
        self.action_dim = action_dim
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [B, D] -> (mean [B, A], log_std [B, A])`` of the pre-tanh Gaussian."""
        x = obs
        for layer in self.hidden_layers:
            x = F.relu(layer(x))
        mean, log_std = self.head(x).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, obs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised sample and its log-density.

        Args:
            obs: ``[B, D]``.
            noise: ``[B, A]`` standard normal draws (the caller owns the RNG).

        Returns:
            ``(action [B, A] in [-1, 1], log_prob [B])`` with the tanh change of variables
            ``log pi(a) = log N(u; mean, std) - sum log(1 - tanh(u)^2)`` in the stable form
            ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``.
        """
        mean, log_std = self(obs)
        mean, log_std = mean.float(), log_std.float()  # densities in fp32 even under bf16 autocast
        u = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
        log_prob = log_prob - (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def log_prob(self, obs: Tensor, action: Tensor, eps: float = 1e-6) -> Tensor:
        """``[B]`` log-density of given actions ``[B, A]`` in ``[-1, 1]`` (clamped to ``±(1 - eps)`` first)."""
        mean, log_std = self(obs)
        mean, log_std = mean.float(), log_std.float()
        u = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
        z = (u - mean) * torch.exp(-log_std)
        log_prob = (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
        return log_prob - (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)

    def deterministic(self, obs: Tensor) -> Tensor:
        """``tanh(mean)``: the deterministic action ``[B, A]`` in ``[-1, 1]``."""
        return torch.tanh(self(obs)[0].float())


class SpectralNormEnsembleLinear(EnsembleLinear):
    """An :class:`EnsembleLinear` whose every member's weight is divided by its top singular value.

    ``W_e / sigma(W_e)`` with ``sigma`` estimated by power iteration (one iteration per training-mode forward,
    vectors ``u [E, out]``, ``v [E, in]`` kept as buffers, as ``torch.nn.utils.spectral_norm`` does for one
    matrix). The gradient flows through ``sigma`` (Miyato et al., 2018). In eval mode the stored vectors are used
    without iterating.

    Args:
        num_members: E.
        in_features: input width.
        out_features: output width.
        n_power_iterations: power iterations per training forward.
        eps: normalisation floor.
        generator: RNG for the weights and the initial power-iteration vectors.
    """

    u: Tensor
    v: Tensor

    def __init__(
        self,
        num_members: int,
        in_features: int,
        out_features: int,
        *,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
        generator: torch.Generator | None = None,
    ):
        super().__init__(num_members, in_features, out_features, generator=generator)
        if n_power_iterations < 1:
            raise ValueError(f"SpectralNormEnsembleLinear: n_power_iterations must be >= 1, got {n_power_iterations}")
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        u = torch.randn(num_members, out_features, generator=generator)
        v = torch.randn(num_members, in_features, generator=generator)
        self.register_buffer("u", F.normalize(u, dim=-1, eps=eps))
        self.register_buffer("v", F.normalize(v, dim=-1, eps=eps))
        self.power_iteration(200)  # start at the top singular pair (random weights have a small spectral gap)

    @torch.no_grad()
    def power_iteration(self, iterations: int) -> None:
        """Run ``iterations`` power-iteration steps on the current weights, updating ``u`` and ``v``."""
        w = self.weight.detach().float()  # [E, in, out]; the layer maps row vectors x -> x @ W
        u, v = self.u, self.v
        with torch.autocast(w.device.type, enabled=False):  # fp32 even inside a bf16 autocast region
            for _ in range(iterations):
                v = F.normalize(torch.bmm(w, u.unsqueeze(-1)).squeeze(-1), dim=-1, eps=self.eps)  # [E, in]
                u = F.normalize(torch.bmm(v.unsqueeze(1), w).squeeze(1), dim=-1, eps=self.eps)  # [E, out]
        self.u.copy_(u)
        self.v.copy_(v)

    def sigma(self) -> Tensor:
        """``[E]`` spectral-norm estimates ``v^T W u`` (differentiable in ``W``)."""
        # Clones: the buffers are updated in place by the next forward, while this graph may still need them.
        with torch.autocast(self.weight.device.type, enabled=False):
            return torch.einsum("ei,eio,eo->e", self.v.clone(), self.weight.float(), self.u.clone())

    def normalized_weight(self) -> Tensor:
        """``[E, in, out]`` weights divided by their spectral norms."""
        return self.weight / self.sigma().clamp_min(self.eps)[:, None, None]

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.power_iteration(self.n_power_iterations)
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.num_members, -1, -1)
        return torch.baddbmm(self.bias, x, self.normalized_weight())


class CriticEnsemble(nn.Module):
    """``N`` Q-functions ``Q_i(obs, action)`` as one module with stacked weights.

    Each critic is a ReLU MLP ``(D + A) -> hidden x depth -> 1``; layer ``l`` of all critics is one
    ``EnsembleLinear`` with weight ``[N, in, out]`` so a forward pass is ``depth + 1`` ``baddbmm`` calls whatever N.

    Args:
        obs_dim: D.
        action_dim: A.
        num_critics: N.
        hidden: hidden width.
        depth: number of hidden layers.
        spectral_norm_layers: indices of the layers (``0 .. depth``; ``depth`` is the output layer; negative
            indices count from the end) whose weights are spectrally normalised.
        layer_norm: LayerNorm (per-critic affine, initialised to identity) after every hidden linear layer,
            before the ReLU, as in RLPD (Ball et al., ICML 2023), which bounds how far Q extrapolates.
        generator: initialisation RNG.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_critics: int,
        hidden: int = 256,
        depth: int = 2,
        *,
        spectral_norm_layers: Sequence[int] = (),
        layer_norm: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if num_critics < 1:
            raise ValueError(f"CriticEnsemble: num_critics must be >= 1, got {num_critics}")
        widths = [obs_dim + action_dim] + [hidden] * depth + [1]
        num_layers = len(widths) - 1
        sn = set()
        for i in spectral_norm_layers:
            if not -num_layers <= i < num_layers:
                raise ValueError(
                    f"CriticEnsemble: spectral_norm_layers index {i} out of range for {num_layers} layers"
                )
            sn.add(i % num_layers)
        layers: list[EnsembleLinear] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            if i in sn:
                layers.append(SpectralNormEnsembleLinear(num_critics, a, b, generator=generator))
            else:
                layers.append(EnsembleLinear(num_critics, a, b, generator=generator))
        self.layers = nn.ModuleList(layers)
        self.num_critics = num_critics
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.hidden = hidden
        self.norm_weight: nn.ParameterList | None = None
        self.norm_bias: nn.ParameterList | None = None
        if layer_norm:
            self.norm_weight = nn.ParameterList(
                [nn.Parameter(torch.ones(num_critics, 1, hidden)) for _ in range(depth)]
            )
            self.norm_bias = nn.ParameterList([nn.Parameter(torch.zeros(num_critics, 1, hidden)) for _ in range(depth)])

    def ensemble_layers(self) -> list[EnsembleLinear]:
        """The ``depth + 1`` stacked layers, input first (typed access for inspection and tests)."""
        return [layer for layer in self.layers if isinstance(layer, EnsembleLinear)]

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        """Q-values of every critic.

        Args:
            obs: ``[B, D]`` (shared by all critics) or ``[N, B, D]``.
            action: ``[B, A]`` (shared) or ``[N, B, A]`` (one per critic, e.g. to take per-critic action
                gradients for EDAC).

        Returns:
            ``[N, B]``.
        """
        if obs.ndim == 2 and action.ndim == 2:
            x = torch.cat([obs, action], dim=-1)  # [B, in], broadcast to every critic by the first layer
        else:
            n = self.num_critics
            if obs.ndim == 2:
                obs = obs.unsqueeze(0).expand(n, -1, -1)
            if action.ndim == 2:
                action = action.unsqueeze(0).expand(n, -1, -1)
            x = torch.cat([obs, action], dim=-1)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                if self.norm_weight is not None and self.norm_bias is not None:
                    x = F.layer_norm(x, (self.hidden,)) * self.norm_weight[i] + self.norm_bias[i]
                x = F.relu(x)
        return x.squeeze(-1)

    def action_gradients(self, obs: Tensor, action: Tensor, *, create_graph: bool = True) -> tuple[Tensor, Tensor]:
        """Q-values and each critic's gradient with respect to its action input (EDAC's diversity term).

        The action is copied once per critic (``[N, B, A]``), so one backward pass of ``sum Q`` yields the N
        separate gradients ``d Q_i(s, a) / d a`` (critic i only sees its own copy).

        Args:
            obs: ``[B, D]``.
            action: ``[B, A]`` (in the critic's action units).
            create_graph: keep the graph of the gradients (to train through them).

        Returns:
            ``(q [N, B], grads [N, B, A])``.
        """
        action_rep = action.detach().unsqueeze(0).expand(self.num_critics, -1, -1).clone().requires_grad_(True)
        q = self(obs, action_rep)
        (grads,) = torch.autograd.grad(q.sum(), action_rep, create_graph=create_graph)
        return q, grads



@torch.no_grad()
def edac_init(actor: TanhGaussianActor, critic: CriticEnsemble, generator: torch.Generator | None = None) -> None:
    """EDAC's initialisation, as in its and RAVL's released code (snu-mllab/EDAC
    ``lifelong_rl/models/networks.py`` and ``policies/models/tanh_gaussian_policy.py``; anyasims/edge-of-reach
    ``agent_training/agent.py``): every hidden-layer bias 0.1; the critics' output layer weights and biases
    ``U(-3e-3, 3e-3)``; the actor's output (mean and log-std) ``U(-1e-3, 1e-3)``. Hidden weights keep
    ``nn.Linear``'s init. Draws from ``generator``; spectrally normalised layers are left as they are."""
    for layer in actor.hidden_layers:
        assert isinstance(layer, Dense)
        layer.bias.fill_(0.1)
    actor.head.weight.uniform_(-1e-3, 1e-3, generator=generator)
    actor.head.bias.uniform_(-1e-3, 1e-3, generator=generator)
    layers = critic.ensemble_layers()
    for layer in layers[:-1]:
        layer.bias.fill_(0.1)
    layers[-1].weight.uniform_(-3e-3, 3e-3, generator=generator)
    layers[-1].bias.uniform_(-3e-3, 3e-3, generator=generator)
