"""The dynamics reward of MOREC: an ensemble of discriminator snapshots learned adversarially against the model.

Paper: Luo, Xu, Cao & Yu, "Reward-Consistent Dynamics Models are Strongly Generalizable for Offline
Reinforcement Learning" (ICLR 2024, MOREC). The true dynamics are viewed as an agent that, given ``(s, a)``,
"acts" by choosing ``s'`` so as to maximise a hidden *dynamics reward*; that reward is recovered GAIL-style with
the transition model in the role of the policy: discriminators ``D(s, a, s' - s)`` learn to tell dataset
transitions from transitions sampled by a generator, the generator is updated to maximise the discriminator's
reward, and the dynamics reward is built from the discriminators collected along the way:

    r_D(s, a, s') = -log(1 - D̄(s, a, s')),   D̄ = mean_k min(D_k(s, a, s'), d_clip)

(the average over snapshots, not the last discriminator: at a GAN equilibrium the last one says 0.5 everywhere).

The authors released the filter that uses ``r_D`` (``github.com/polixir/morec``: ``models/
discriminator_ensemble_loader.py``, ``offlinerlkit/dynamics/ensemble_dynamics.py``) but not the code that learns
it. What is taken from that release:

* the discriminator input ``(s, a, s' - s)`` (``delta_input``) on normalised data;
* the reward formula above (``prob_mean_clip``: each snapshot's probability clamped to ``[0, d_clip]``, averaged,
  ``-log(1 - mean)``);
* per-snapshot calibration (``calibrate``): each snapshot stores its mean logit on real (``expert_value``) and on
  generated (``learner_value``) transitions at the time it was taken; at use, its logit is clamped to that range
  and mapped linearly onto ``[-1, 1]`` before the sigmoid, so every snapshot's probability lies in
  ``[sigmoid(-1), sigmoid(1)] = [0.269, 0.731]`` and ``r_D`` in ``[0.313, 1.313]``; the filter's default
  threshold 0.6 lives on that scale;
* the snapshot bookkeeping: the release keeps the last 400 stored discriminators and uses every 10th (40);
  here ``num_snapshots=40`` taken every ``snapshot_every`` iterations;
* the generator's entropy coefficient 1e-3 (``DiscriminatorRestrain.ent_coeff``'s initial value; its automatic
  tuning is not reproduced).

Chosen here (documented in :class:`DynamicsRewardConfig`): the network sizes and learning rates, the number of
iterations, one discriminator and one generator step per iteration, the one-step (bandit) generator objective
optimised with the reparameterisation gradient, the Gaussian-NLL anchor on the data that keeps the generator
near the fitted model, and z-score input normalisation (the release min-max-normalises; ``s' - s`` spans a tiny
part of the observation range, so it is standardised on its own here).

Shapes: ``obs [B, D]``, ``action [B, A]``, ``next_obs [B, D]`` -> rewards ``[B]``.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mbrl.checkpoint import load_progress, restore_rng, rng_state, save_checkpoint
from mbrl.data.dataset import OfflineDataset
from mbrl.data.normalizer import Normalizer
from mbrl.models.ensemble import ProbabilisticEnsemble
from mbrl.nn import EnsembleMLP
from mbrl.types import TransitionBatch
from mbrl.utils import resolve_device

DYNAMICS_REWARD_FILE = "dynamics_reward.pt"

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
# Rows of logits per snapshot-batched forward pass: keeps [K, rows, hidden] activations at a few MB.
_REWARD_ROWS_PER_PASS = 1 << 15


@dataclass(frozen=True)
class DynamicsRewardConfig:
    """How the dynamics reward is learned and evaluated (defaults: see the module docstring for their sources).

    Attributes:
        hidden: discriminator hidden width (chosen: 256).
        depth: discriminator hidden layers (chosen: 2).
        activation: ``"relu"`` (the release's encoder uses ReLU), ``"silu"`` or ``"tanh"``.
        discriminator_lr: Adam step size of the discriminator (chosen: 3e-4, the usual GAIL value).
        generator_lr: Adam step size of the generator, a copy of the fitted ensemble (chosen: 1e-4; the release
            constructs its loader with 1e-3, but here the generator starts from a fitted model and is fine-tuned).
        batch_size: real and generated transitions per step (chosen: 256).
        num_iterations: adversarial iterations; each is ``discriminator_steps`` discriminator updates then
            ``generator_steps`` generator updates (chosen: 5000 / 1 / 1).
        discriminator_steps: discriminator updates per iteration.
        generator_steps: generator updates per iteration.
        entropy_coef: weight of the generator's Gaussian entropy bonus (release: 1e-3).
        nll_coef: weight of the generator's Gaussian NLL on dataset transitions (chosen: 1.0; keeps the
            generator a plausible dynamics model while it chases the discriminator; 0 disables it).
        shuffled_negatives: fraction of each generated batch replaced by dataset transitions whose next state
            comes from another random row, ``(s, a, s'_j)`` labelled 0 (ours, not in the paper or its release:
            0.0 is the paper's recipe). With an accurate generator the discriminator only learns fine
            distinctions near the data and can score far-off next states as real; these negatives teach it to
            reject them.
        snapshot_every: iterations between discriminator snapshots.
        num_snapshots: the last this many snapshots form the reward (release: 40). At least one is always kept.
        d_clip: each snapshot's probability is clamped to ``[0, d_clip]`` before averaging (release: 0.999
            default, 1.0 in its launch script; < 1 keeps ``-log(1 - D̄)`` finite without calibration).
        calibrate: map each snapshot's logit through its stored real/generated mean logits (see the module
            docstring; the release always does).
        holdout_fraction: episodes held out for the final evaluation (not trained on).
        max_holdout: at most this many holdout rows are evaluated.
        log_every: iterations between metric rows (discriminator accuracy, reward statistics).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... (the generator lives on the ensemble's device).
    """

    hidden: int = 256
    depth: int = 2
    activation: str = "relu"
    discriminator_lr: float = 3e-4
    generator_lr: float = 1e-4
    batch_size: int = 256
    num_iterations: int = 5000
    discriminator_steps: int = 1
    generator_steps: int = 1
    entropy_coef: float = 1e-3
    nll_coef: float = 1.0
    shuffled_negatives: float = 0.0
    snapshot_every: int = 100
    num_snapshots: int = 40
    d_clip: float = 0.999
    calibrate: bool = True
    holdout_fraction: float = 0.1
    max_holdout: int = 5000
    log_every: int = 100
    device: str = "auto"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.hidden < 1 or self.depth < 1:
            raise ValueError(f"DynamicsRewardConfig: hidden and depth must be >= 1, got {self.hidden}, {self.depth}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"DynamicsRewardConfig.activation: unknown {self.activation!r}; choose one of {sorted(_ACTIVATIONS)}"
            )
        for name in ("discriminator_lr", "generator_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DynamicsRewardConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("batch_size", "num_iterations", "snapshot_every", "num_snapshots", "log_every", "max_holdout"):
            if getattr(self, name) < 1:
                raise ValueError(f"DynamicsRewardConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.discriminator_steps < 1 or self.generator_steps < 0:
            raise ValueError("DynamicsRewardConfig: discriminator_steps must be >= 1 and generator_steps >= 0")
        if self.entropy_coef < 0 or self.nll_coef < 0:
            raise ValueError("DynamicsRewardConfig: entropy_coef and nll_coef must be >= 0")
        if not 0.0 <= self.shuffled_negatives < 1.0:
            raise ValueError(
                f"DynamicsRewardConfig.shuffled_negatives must be in [0, 1), got {self.shuffled_negatives}"
            )
        if not 0.0 < self.d_clip <= 1.0:
            raise ValueError(f"DynamicsRewardConfig.d_clip must be in (0, 1], got {self.d_clip}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"DynamicsRewardConfig.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


def dynamics_reward_preset(preset: Literal["paper", "cpu", "quick"] = "cpu") -> DynamicsRewardConfig:
    """``"paper"`` / ``"cpu"``: the defaults (5000 iterations, about two minutes on one core with a 7x4x200
    generator); ``"quick"``: 300 iterations of a 64-wide discriminator at a 1e-3 step size, 10 snapshots
    (smoke tests)."""
    if preset == "quick":
        return DynamicsRewardConfig(
            hidden=64, discriminator_lr=1e-3, num_iterations=300, snapshot_every=20, num_snapshots=10,
            log_every=100, max_holdout=1000,
        )
    return DynamicsRewardConfig()


class _RewardNetwork(nn.Module):
    """Input normaliser, ``K`` stacked discriminators and their calibration logits: everything state_dict holds."""

    real_logit: Tensor
    fake_logit: Tensor

    def __init__(
        self, in_dim: int, num_snapshots: int, config: DynamicsRewardConfig, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        self.input_norm = Normalizer(in_dim)
        self.mlp = EnsembleMLP(
            num_snapshots, in_dim, 1, config.hidden, config.depth, _ACTIVATIONS[config.activation], generator=generator
        )
        # Before training: a snapshot logit of +1 reads "real", -1 "generated" (an untrained net, logits ~ 0,
        # then gives D ~ 0.5 and r_D ~ log 2, above the default threshold).
        self.register_buffer("real_logit", torch.ones(num_snapshots))
        self.register_buffer("fake_logit", -torch.ones(num_snapshots))


class DynamicsReward:
    """``r_D(s, a, s') = -log(1 - D̄)`` over ``K`` discriminator snapshots (see the module docstring).

    Learn one with :func:`train_dynamics_reward`; persist it with :meth:`save` / :meth:`load`.

    Args:
        obs_dim: ``D``.
        action_dim: ``A``.
        config: network sizes, ``d_clip``, ``calibrate``.
        num_snapshots: ``K`` (default ``config.num_snapshots``).
        seed: weight initialisation (an untrained reward is only a placeholder to load into).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: DynamicsRewardConfig | None = None,
        *,
        num_snapshots: int | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config = config if config is not None else DynamicsRewardConfig()
        config.validate()
        if obs_dim < 1 or action_dim < 1:
            raise ValueError(f"DynamicsReward: obs_dim and action_dim must be >= 1, got {obs_dim}, {action_dim}")
        k = config.num_snapshots if num_snapshots is None else int(num_snapshots)
        if k < 1:
            raise ValueError(f"DynamicsReward: num_snapshots must be >= 1, got {k}")
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.in_dim = 2 * self.obs_dim + self.action_dim
        self.device = resolve_device(config.device)
        self.network = _RewardNetwork(self.in_dim, k, config, torch.Generator().manual_seed(seed)).to(self.device)
        self.network.eval()

    @property
    def num_snapshots(self) -> int:
        """``K``, the discriminators averaged."""
        return int(self.network.real_logit.numel())

    # ------------------------------------------------------------------------------------------- inputs
    def _check(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = int(obs.shape[0]) if obs.ndim == 2 else 0
        for name, t, width in (
            ("obs", obs, self.obs_dim),
            ("action", action, self.action_dim),
            ("next_obs", next_obs, self.obs_dim),
        ):
            if t.ndim != 2 or tuple(t.shape) != (n, width):
                raise ValueError(f"DynamicsReward: expected {name} [B, {width}] (B = {n}), got {tuple(t.shape)}")
        dev = self.device
        return obs.to(dev, torch.float32), action.to(dev, torch.float32), next_obs.to(dev, torch.float32)

    @staticmethod
    def features(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """The discriminator's raw input ``[obs, action, next_obs - obs]`` ``[B, 2D + A]``."""
        return torch.cat([obs, action, next_obs - obs], dim=-1)

    def fit_normalizer(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> None:
        """Fit the input standardisation on (training) transitions."""
        obs, action, next_obs = self._check(obs, action, next_obs)
        self.network.input_norm.fit(self.features(obs, action, next_obs))

    # ------------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def logits(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """Every snapshot's raw logit ``[K, B]`` (before calibration)."""
        obs, action, next_obs = self._check(obs, action, next_obs)
        n, k = obs.shape[0], self.num_snapshots
        out = torch.empty(k, n, device=self.device)
        rows = max(64, _REWARD_ROWS_PER_PASS // k)
        for i in range(0, n, rows):
            x = self.network.input_norm.normalize(self.features(obs[i : i + rows], action[i : i + rows], next_obs[i : i + rows]))
            out[:, i : i + rows] = self.network.mlp(x)[..., 0]
        return out

    def _probs(self, logits: Tensor) -> Tensor:
        """``[K, B]`` logits -> ``[K, B]`` per-snapshot probabilities (calibrated when configured)."""
        if not self.config.calibrate:
            return torch.sigmoid(logits)
        real = self.network.real_logit[:, None]
        fake = self.network.fake_logit[:, None]
        width = real - fake
        ok = width > 1e-6
        # Clamp into [generated mean, real mean] and map that range onto [-1, 1] (release: clip_reward=True).
        z = torch.clamp((logits - fake) / torch.where(ok, width, torch.ones_like(width)), 0.0, 1.0) * 2.0 - 1.0
        # A snapshot that could not tell real from generated when it was taken carries no information: 0.5.
        return torch.sigmoid(torch.where(ok, z, torch.zeros_like(z)))

    @torch.no_grad()
    def prob(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """``D̄ [B]``: the snapshots' (calibrated) probabilities of "real", each clamped to ``[0, d_clip]``, averaged."""
        probs = self._probs(self.logits(obs, action, next_obs))
        return torch.clamp(probs, 0.0, self.config.d_clip).mean(0)

    @torch.no_grad()
    def reward(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """The dynamics reward ``r_D = -log(1 - D̄)`` ``[B]`` (non-finite inputs give NaN)."""
        return -torch.log1p(-self.prob(obs, action, next_obs).clamp(max=1.0 - 1e-7))

    # ------------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: the input normaliser, the ``K`` stacked discriminators and their calibration logits."""
        return {k: v.detach().clone() for k, v in self.network.state_dict().items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the number of snapshots is taken from the tensors (the network is rebuilt
        when it differs).

        Raises:
            ValueError: keys or shapes do not match this reward's dims / config.
        """
        if "real_logit" not in state_dict or not isinstance(state_dict["real_logit"], Tensor):
            raise ValueError(f"DynamicsReward.load_state_dict: missing tensor 'real_logit' (keys: {sorted(state_dict)[:8]})")
        k = int(state_dict["real_logit"].numel())
        if k < 1:
            raise ValueError("DynamicsReward.load_state_dict: the state holds no snapshot")
        if k != self.num_snapshots:
            self.network = _RewardNetwork(self.in_dim, k, self.config, None).to(self.device)
        expected = self.network.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(f"DynamicsReward.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key, ref in expected.items():
            value = state_dict[key]
            if not isinstance(value, Tensor) or value.shape != ref.shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"DynamicsReward.load_state_dict: {key!r} expected shape {tuple(ref.shape)}, got {got} "
                    f"(obs_dim={self.obs_dim}, action_dim={self.action_dim}, hidden={self.config.hidden}, "
                    f"depth={self.config.depth})"
                )
        self.network.load_state_dict({k: v.to(self.device) for k, v in state_dict.items()})
        self.network.eval()

    def save(self, path: str | Path) -> Path:
        """Write the reward to ``path`` atomically (a :mod:`mbrl.checkpoint` file, weights-only loadable)."""
        from mbrl.checkpoint import save_checkpoint

        config = {
            "class": "DynamicsReward",
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "dynamics_reward": asdict(self.config),
        }
        return save_checkpoint(Path(path), config=config, state={"dynamics_reward": self.state_dict()})

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> DynamicsReward:
        """Read a reward written by :meth:`save`; ``path`` may be the file or a directory holding
        ``dynamics_reward.pt``.

        Raises:
            FileNotFoundError: nothing at ``path``.
            mbrl.checkpoint.CheckpointError: corrupt, truncated or unsafe file (pickled objects are refused
                without being run).
            ValueError: the checkpoint is not a dynamics reward (names the file and the problem).
        """
        from mbrl.checkpoint import load_checkpoint
        from mbrl.run import config_from_dict

        p = Path(path)
        if p.is_dir():
            p = p / DYNAMICS_REWARD_FILE
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no dynamics reward file (write one with `mbrl model train-dynamics-reward`)")
        ckpt = load_checkpoint(p)
        cfg = ckpt.config
        if cfg.get("class") != "DynamicsReward" or "dynamics_reward" not in ckpt.state:
            raise ValueError(f"{p}: not a dynamics reward checkpoint (config class {cfg.get('class')!r})")
        try:
            config = config_from_dict(DynamicsRewardConfig, cfg.get("dynamics_reward", {}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: bad dynamics reward config ({exc})") from None
        if device is not None:
            config = DynamicsRewardConfig(**{**asdict(config), "device": device})
        state = ckpt.state["dynamics_reward"]
        if not isinstance(state, Mapping) or not isinstance(state.get("real_logit"), Tensor):
            raise ValueError(f"{p}: dynamics reward state has no 'real_logit' tensor")
        out = cls(int(cfg["obs_dim"]), int(cfg["action_dim"]), config, num_snapshots=int(state["real_logit"].numel()))
        try:
            out.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None
        return out

    def __repr__(self) -> str:
        c = self.config
        return (
            f"DynamicsReward(snapshots={self.num_snapshots}, mlp={c.depth}x{c.hidden} {c.activation}, "
            f"obs_dim={self.obs_dim}, action_dim={self.action_dim}, calibrate={c.calibrate}, d_clip={c.d_clip})"
        )


# --------------------------------------------------------------------------------------------------- learning
class _Generator:
    """A trainable copy of a fitted ensemble's network; samples ``s'`` like ``ProbabilisticEnsemble.predict``
    (a random elite per row, Gaussian noise), differentiably (reparameterisation)."""

    def __init__(self, ensemble: ProbabilisticEnsemble, lr: float) -> None:
        self.net = copy.deepcopy(ensemble.network)
        self.net.train()
        self.obs_dim = ensemble.obs_dim
        self.elites = self.net.elites.clone()
        # The log-variance bounds stay as fitted; only the MLP moves.
        self.optimizer = torch.optim.Adam(self.net.mlp.parameters(), lr=lr)

    def heads(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor | None]:
        """Elite means / log-variances ``[U, B, D+1]`` in standardised target units."""
        x = self.net.input_norm.normalize(torch.cat([obs, action], dim=-1))
        return self.net.forward_members(x, self.elites)

    def sample(self, obs: Tensor, action: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(next_obs [B, D], entropy [B])``: one elite per row, reparameterised Gaussian sample."""
        mean, logvar = self.heads(obs, action)
        n = obs.shape[0]
        pick = torch.randint(len(self.elites), (n,), generator=gen).to(obs.device)
        rows = torch.arange(n, device=obs.device)
        m = mean[pick, rows]
        d = self.obs_dim
        if logvar is None:
            sample, entropy = m, torch.zeros(n, device=obs.device)
        else:
            lv = logvar[pick, rows]
            noise = torch.randn(m.shape, generator=gen).to(obs.device)
            sample = m + torch.exp(0.5 * lv) * noise
            entropy = 0.5 * lv[:, :d].sum(-1)  # Gaussian entropy up to a constant (standardised units)
        delta = self.net.target_norm.denormalize(sample)[:, :d]
        return obs + delta, entropy

    def nll(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """Mean Gaussian NLL (x2, no constant) of the elites on real next observations (standardised units)."""
        mean, logvar = self.heads(obs, action)
        d = self.obs_dim
        target = torch.cat([next_obs - obs, torch.zeros_like(obs[:, :1])], dim=-1)
        y = self.net.target_norm.normalize(target)[:, :d]
        se = (mean[..., :d] - y) ** 2
        if logvar is None:
            return se.mean()
        return (se * torch.exp(-logvar[..., :d]) + logvar[..., :d]).mean()


def _bce_acc(logits: Tensor, real: bool) -> tuple[Tensor, float]:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    acc = float(((logits > 0) == real).float().mean())
    return F.binary_cross_entropy_with_logits(logits, target), acc


def _moments(x: Tensor) -> tuple[float, float]:
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(unbiased=False))


def evaluate_dynamics_reward(
    reward: DynamicsReward,
    model: ProbabilisticEnsemble,
    batch: TransitionBatch,
    *,
    generator: torch.Generator,
) -> dict[str, float]:
    """How well ``reward`` separates real transitions from the model's samples and from shuffled ones.

    Args:
        reward: the dynamics reward.
        model: generates ``s'`` for the rows' ``(s, a)`` (``predict``, MBPO sampling).
        batch: real (held-out) transitions.
        generator: model sampling and the shuffle.

    Returns:
        ``eval_reward_real_mean`` / ``_std``, ``eval_reward_model_mean`` / ``_std``, ``eval_reward_shuffled_mean``,
        ``eval_acc_real`` (fraction with ``D̄ > 0.5``), ``eval_acc_model`` / ``eval_acc_shuffled`` (fraction with
        ``D̄ < 0.5``).
    """
    obs, action, next_obs = batch.obs, batch.action, batch.next_obs
    fake = model.predict(obs, action, generator=generator).next_obs
    perm = torch.randperm(len(batch), generator=generator)
    out: dict[str, float] = {}
    for name, nxt in (("real", next_obs), ("model", fake), ("shuffled", next_obs[perm.to(next_obs.device)])):
        p = reward.prob(obs, action, nxt)
        r = -torch.log1p(-p.clamp(max=1.0 - 1e-7))
        mean, std = _moments(r)
        out[f"eval_reward_{name}_mean"] = mean
        out[f"eval_reward_{name}_std"] = std
        out[f"eval_acc_{name}"] = float((p > 0.5).float().mean()) if name == "real" else float((p < 0.5).float().mean())
    return out


def train_dynamics_reward(
    dataset: OfflineDataset | TransitionBatch,
    ensemble: ProbabilisticEnsemble,
    config: DynamicsRewardConfig | None = None,
    *,
    seed: int,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float = 30.0,
) -> tuple[DynamicsReward, list[dict[str, float]]]:
    """Learn a MOREC dynamics reward on ``dataset`` against a generator initialised from the fitted ``ensemble``.

    Per iteration (GAIL with the transition model as the policy; one-step, since the generator's "action"
    ``s'`` does not change the next context ``(s, a)``, which is drawn from the data):

    1. discriminator: one Adam step on the logistic loss, dataset transitions ``(s, a, s')`` labelled 1,
       generated ``(s, a, s'~G(s, a))`` labelled 0 (contexts ``(s, a)`` drawn from the data independently;
       with ``shuffled_negatives > 0`` that fraction of them gets another row's dataset next state instead);
    2. generator: one Adam step on ``-E[r(s, a, s')] - entropy_coef * H + nll_coef * NLL_data`` where
       ``r = -log(1 - D) = softplus(logit)`` is differentiated through the reparameterised Gaussian sample,
       ``H`` is the sampled member's Gaussian entropy and ``NLL_data`` the elites' NLL on dataset transitions;
    3. every ``snapshot_every`` iterations the discriminator is copied, with its mean logits on the real and
       generated transitions seen since the previous snapshot (its calibration).

    The last ``num_snapshots`` snapshots become the :class:`DynamicsReward`. ``ensemble`` itself is not changed.

    Args:
        dataset: the data (episodes are held out for the final evaluation when there are >= 2 of them).
        ensemble: the fitted ensemble (its elites, normalisers and weights seed the generator).
        config: hyperparameters (default :class:`DynamicsRewardConfig`).
        seed: all randomness (discriminator init, batches, generator noise).
        progress: called every ``log_every`` iterations with ``(iteration, metrics)`` (the training loop or
            command logs them).
        checkpoint: a file where the training's progress is saved atomically after an iteration, at most every
            ``checkpoint_every_s`` seconds (discriminator, generator, both optimizers, RNG states, snapshots,
            history). If it exists when training starts, training continues from it and ends as an
            uninterrupted run would (same seed, data, ensemble and config; else a ``ValueError`` names it). The
            caller removes it once the result is saved.
        checkpoint_every_s: seconds between progress saves (0: every iteration).

    Returns:
        ``(reward, history)``: ``history`` holds one dict per ``log_every`` iterations with ``iteration``,
        ``d_loss``, ``d_acc_real``, ``d_acc_fake``, ``reward_real_mean`` / ``_std`` and ``reward_fake_mean`` /
        ``_std`` (current discriminator, ``-log(1 - D)``, real vs generated), ``gen_nll``, ``gen_entropy``,
        ``time_s``; the last dict adds the final evaluation of :func:`evaluate_dynamics_reward` on held-out
        data (``eval_*``) and ``num_snapshots``.

    Raises:
        TypeError: ``ensemble`` is not a :class:`ProbabilisticEnsemble` (the generator copies its network).
        ValueError: bad config, or dims of data and ensemble differ.
    """
    from mbrl.models.fit import split_holdout

    config = config if config is not None else DynamicsRewardConfig()
    config.validate()
    if not isinstance(ensemble, ProbabilisticEnsemble):
        raise TypeError(
            f"train_dynamics_reward: the generator is initialised from a ProbabilisticEnsemble, got "
            f"{type(ensemble).__name__} (load a learned reward instead: --dynamics-reward PATH)"
        )
    obs_dim = dataset.obs_dim
    action_dim = dataset.action_dim
    if (obs_dim, action_dim) != (ensemble.obs_dim, ensemble.action_dim):
        raise ValueError(
            f"train_dynamics_reward: data dims (obs {obs_dim}, action {action_dim}) differ from the ensemble's "
            f"(obs {ensemble.obs_dim}, action {ensemble.action_dim})"
        )
    start = time.monotonic()
    rng = np.random.default_rng([seed, 11])
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 12]).generate_state(1)[0]))
    train, hold, _ = split_holdout(dataset, config.holdout_fraction, rng, config.max_holdout)
    dev = ensemble.device
    train, hold = train.to(dev), hold.to(dev)
    n = len(train)

    reward_cfg = DynamicsRewardConfig(**{**asdict(config), "device": str(dev)})
    disc = DynamicsReward(obs_dim, action_dim, reward_cfg, num_snapshots=1, seed=int(rng.integers(2**31)))
    disc.fit_normalizer(train.obs, train.action, train.next_obs)
    norm, mlp = disc.network.input_norm, disc.network.mlp
    mlp.train()
    d_opt = torch.optim.Adam(mlp.parameters(), lr=config.discriminator_lr)
    generator = _Generator(ensemble, config.generator_lr)

    def d_logits(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return mlp(norm.normalize(DynamicsReward.features(obs, action, next_obs)))[0, :, 0]

    def rows() -> Tensor:
        return torch.from_numpy(rng.integers(0, n, size=config.batch_size)).to(dev)

    num_shuffled = round(config.shuffled_negatives * config.batch_size)
    snapshots: deque[tuple[dict[str, Tensor], float, float]] = deque(maxlen=config.num_snapshots)
    since_snap: dict[str, list[float]] = {"real": [], "fake": []}
    acc: dict[str, list[float]] = {}
    history: list[dict[str, float]] = []
    first = 1
    path = Path(checkpoint) if checkpoint is not None else None
    identity = {"kind": "dynamics_reward", "n_train": n, "n_holdout": len(hold), "seed": seed, "config": asdict(config)}
    saved = load_progress(path, identity, "dynamics-reward training")
    if saved is not None:
        mlp.load_state_dict(saved.state["mlp"])
        d_opt.load_state_dict(saved.state["d_opt"])
        generator.net.load_state_dict(saved.state["generator"])
        generator.optimizer.load_state_dict(saved.state["g_opt"])
        st = saved.state["progress"]
        restore_rng({"numpy": st["rng"], "torch": st["gen"]}, rng, gen)
        snapshots.extend((dict(snap["mlp"]), float(snap["real"]), float(snap["fake"])) for snap in st["snapshots"])
        since_snap = {k: [float(v) for v in st["since_snap"][k].tolist()] for k in ("real", "fake")}
        acc = {k: [float(v) for v in t.tolist()] for k, t in st["acc"].items()}
        history = [{k: float(v) for k, v in row.items()} for row in st["history"]]
        first = int(st["iteration"]) + 1
        start = time.monotonic() - float(st["elapsed"])
    last_save = time.monotonic()

    def save_progress(it: int) -> None:
        assert path is not None
        state: dict[str, Any] = {
            "mlp": dict(mlp.state_dict()), "d_opt": d_opt.state_dict(),
            "generator": dict(generator.net.state_dict()), "g_opt": generator.optimizer.state_dict(),
            "progress": {
                "iteration": it, "elapsed": time.monotonic() - start,
                "rng": rng_state(rng)["numpy"], "gen": gen.get_state(),
                "snapshots": [{"mlp": m, "real": r, "fake": f} for m, r, f in snapshots],
                "since_snap": {k: torch.tensor(v, dtype=torch.float64) for k, v in since_snap.items()},
                "acc": {k: torch.tensor(v, dtype=torch.float64) for k, v in acc.items()},
                "history": history,
            },
        }
        save_checkpoint(path, config=identity, state=state)

    def take_snapshot() -> None:
        real = float(np.mean(since_snap["real"])) if since_snap["real"] else 1.0
        fake = float(np.mean(since_snap["fake"])) if since_snap["fake"] else -1.0
        snapshots.append(({k: v.detach().clone() for k, v in mlp.state_dict().items()}, real, fake))
        since_snap["real"].clear()
        since_snap["fake"].clear()

    for it in range(first, config.num_iterations + 1):
        for _ in range(config.discriminator_steps):
            real_idx, ctx_idx = rows(), rows()
            with torch.no_grad():
                fake_next, _ = generator.sample(train.obs[ctx_idx], train.action[ctx_idx], gen)
            if num_shuffled:
                fake_next[:num_shuffled] = train.next_obs[rows()[:num_shuffled]]
            lr_ = d_logits(train.obs[real_idx], train.action[real_idx], train.next_obs[real_idx])
            lf = d_logits(train.obs[ctx_idx], train.action[ctx_idx], fake_next)
            loss_r, acc_r = _bce_acc(lr_, True)
            loss_f, acc_f = _bce_acc(lf, False)
            d_loss = 0.5 * (loss_r + loss_f)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()  # type: ignore[no-untyped-call]
            d_opt.step()
            lr_d, lf_d = lr_.detach(), lf.detach()
            since_snap["real"].append(float(lr_d.mean()))
            since_snap["fake"].append(float(lf_d[num_shuffled:].mean()))  # calibrate on model samples only
            for key, value in (
                ("d_loss", float(d_loss.detach())),
                ("d_acc_real", acc_r),
                ("d_acc_fake", acc_f),
                ("reward_real", F.softplus(lr_d)),
                ("reward_fake", F.softplus(lf_d)),
            ):
                if isinstance(value, Tensor):
                    acc.setdefault(key, []).extend(value.tolist())
                else:
                    acc.setdefault(key, []).append(value)
        mlp.requires_grad_(False)
        for _ in range(config.generator_steps):
            ctx_idx, real_idx = rows(), rows()
            next_obs, entropy = generator.sample(train.obs[ctx_idx], train.action[ctx_idx], gen)
            gen_reward = F.softplus(d_logits(train.obs[ctx_idx], train.action[ctx_idx], next_obs)).mean()
            loss = -gen_reward - config.entropy_coef * entropy.mean()
            nll = torch.zeros((), device=dev)
            if config.nll_coef > 0:
                nll = generator.nll(train.obs[real_idx], train.action[real_idx], train.next_obs[real_idx])
                loss = loss + config.nll_coef * nll
            generator.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            generator.optimizer.step()
            acc.setdefault("gen_nll", []).append(float(nll.detach()))
            acc.setdefault("gen_entropy", []).append(float(entropy.detach().mean()))
        mlp.requires_grad_(True)
        if it % config.snapshot_every == 0:
            take_snapshot()
        if it % config.log_every == 0 or it == config.num_iterations:
            row: dict[str, float] = {"iteration": float(it)}
            for key, values in acc.items():
                if key.startswith("reward_"):
                    row[f"{key}_mean"], row[f"{key}_std"] = _moments(torch.tensor(values))
                else:
                    row[key] = float(np.mean(values))
            row["time_s"] = time.monotonic() - start
            acc.clear()
            history.append(row)
            if progress is not None and it != config.num_iterations:
                progress(it, row)
        if path is not None and it < config.num_iterations and time.monotonic() - last_save >= checkpoint_every_s:
            save_progress(it)
            last_save = time.monotonic()
    if not snapshots:
        take_snapshot()

    k = len(snapshots)
    reward = DynamicsReward(obs_dim, action_dim, config, num_snapshots=k)
    state = reward.state_dict()
    for key in mlp.state_dict():
        state[f"mlp.{key}"] = torch.cat([s[0][key] for s in snapshots], dim=0)
    state["input_norm.mean"] = norm.mean.detach().clone()
    state["input_norm.std"] = norm.std.detach().clone()
    state["real_logit"] = torch.tensor([s[1] for s in snapshots], device=dev)
    state["fake_logit"] = torch.tensor([s[2] for s in snapshots], device=dev)
    reward.load_state_dict(state)

    final = evaluate_dynamics_reward(reward, ensemble, hold, generator=gen)
    final["num_snapshots"] = float(k)
    final["time_s"] = time.monotonic() - start
    if history:
        history[-1].update(final)
    else:  # pragma: no cover - num_iterations >= 1 always logs the last iteration
        history.append({"iteration": float(config.num_iterations), **final})
    if progress is not None:
        progress(config.num_iterations, history[-1])
    return reward, history
