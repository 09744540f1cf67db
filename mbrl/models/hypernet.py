"""Task-conditioned hypernetwork dynamics model (HyperCRL) and the plain MLP dynamics models of its baselines.

HyperCRL (Huang, Xie, Bharadhwaj, Shkurti, "Continual Model-Based Reinforcement Learning with Hypernetworks",
ICRA 2021) learns one dynamics model per task without storing old tasks' data: a hypernetwork ``h`` maps a
learned task embedding ``e_t`` to ALL weights ``θ_t = h(e_t)`` of a target MLP ``f(s, a; θ_t) -> Δs``.
Forgetting is prevented with the output regulariser of von Oswald et al. ("Continual learning with
hypernetworks", ICLR 2020): before training task ``t`` the outputs ``θ_j* = h(e_j)`` for every earlier task
``j < t`` are stored, and while training task ``t`` only on its own (recent) data the loss is

    L = L_task(h(e_t); D_t) + β / (t) · Σ_{j<t} || h(e_j; Θ + ΔΘ) − θ_j* ||²      (t = number of earlier tasks)

where ``ΔΘ`` is the look-ahead: the change the optimizer is about to make to the hypernetwork from the task
loss alone (von Oswald's two-step variant, HyperCRL's default), detached; with ``look_ahead=False`` it is 0.
Earlier embeddings are frozen. Defaults follow HyperCRL's Pendulum setting: target MLP 32x32 (ReLU), predicting
the state difference, hypernetwork 16x16 (ReLU, Xavier init), embeddings of size 10 drawn from N(0, 1),
β = 0.05, gradient-norm clip 5, Adam with lr 1e-4 (``lr_hyper``), no output variance.

Normalisation is **per task**: task ``t`` has its own input (obs, action) and target (Δobs, reward)
standardisers, fitted by :meth:`HyperNetworkModel.fit_normalizer` on that task's first training data and
stored with the model. Why per task: the hypernetwork must not depend on another task's statistics, and a
task's normaliser is frozen once its data is gone, so a global one could not be refitted without moving the
old tasks' predictions.

The baselines' network (:class:`MLPDynamicsModel`) has the target architecture with directly learned weights:
as in HyperCRL's code, a shared trunk with one output layer per task (``multi_head``; or one plain MLP for all
tasks), and ONE global normaliser (fitted once, on the first task's first training data, by the caller).

Both kinds predict ``next_obs = obs + Δobs`` and, with ``learn_reward`` (default), a reward, so they are
complete WorldModels; planners with a known ``reward_fn`` ignore the reward head. ``terminated`` is zeros
(a known ``term_fn`` overrides it in the planner).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from mbrl.data.normalizer import Normalizer
from mbrl.types import Metrics, ModelStep, TransitionBatch

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "silu": F.silu,
    "elu": F.elu,
    "tanh": torch.tanh,
}


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}") from None


# ---------------------------------------------------------------------------------------------------------
# The target network as a pure function of a flat weight vector


class TargetMLP:
    """Shapes and functional forward of an MLP whose weights come as ONE flat vector.

    Layer ``i`` has ``weight [out_i, in_i]`` and ``bias [out_i]`` (``torch.nn.Linear`` layout), stored in the
    flat vector in the order ``layers.0.weight, layers.0.bias, layers.1.weight, ...``.

    Args:
        in_dim: input width.
        out_dim: output width.
        hidden: hidden widths.
        activation: hidden activation name (``relu``, ``silu``, ``elu``, ``tanh``).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, ...], activation: str = "relu") -> None:
        if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"TargetMLP: widths must be >= 1, got in={in_dim}, out={out_dim}, hidden={hidden}"
            )
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.hidden = tuple(hidden)
        self.activation = _activation(activation)
        widths = [in_dim, *hidden, out_dim]
        self.shapes: list[tuple[str, tuple[int, ...]]] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            self.shapes.append((f"layers.{i}.weight", (b, a)))
            self.shapes.append((f"layers.{i}.bias", (b,)))
        self.num_params = sum(int(torch.Size(s).numel()) for _, s in self.shapes)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Views of ``theta [num_params]`` with the target shapes, keyed ``layers.i.weight|bias``."""
        if theta.shape != (self.num_params,):
            raise ValueError(
                f"TargetMLP: expected a flat weight vector of {self.num_params}, got {tuple(theta.shape)}"
            )
        out: dict[str, Tensor] = {}
        offset = 0
        for name, shape in self.shapes:
            n = int(torch.Size(shape).numel())
            out[name] = theta[offset : offset + n].view(shape)
            offset += n
        return out

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """``x [B, in] -> [B, out]`` with the weights in ``theta [num_params]``."""
        params = self.unflatten(theta)
        n_layers = len(self.hidden) + 1
        for i in range(n_layers):
            x = F.linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < n_layers - 1:
                x = self.activation(x)
        return x


# ---------------------------------------------------------------------------------------------------------
# Shared dynamics head: normalisation, loss and prediction from a flat weight vector


def _targets(batch: TransitionBatch, learn_reward: bool) -> Tensor:
    delta = batch.next_obs - batch.obs
    return torch.cat([delta, batch.reward[:, None]], dim=1) if learn_reward else delta


Forward = Callable[[Tensor], Tensor]
"""A network's raw forward: normalised input ``[B, D + A]`` -> raw output ``[B, out]``."""


class _DynamicsHead:
    """Turns a network's raw output into ``(Δobs, reward)`` predictions and a loss (shared by all models here).

    Every method takes ``forward``: the network (with one task's weights) as a function of the normalised
    input, so the hypernetwork's generated MLP and the baselines' MLPs share this code.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        learn_reward: bool,
        learn_std: bool,
        min_log_std: float = -5.0,
        max_log_std: float = 0.5,
    ) -> None:
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.in_dim = obs_dim + action_dim
        self.learn_reward = learn_reward
        self.learn_std = learn_std
        self.target_dim = obs_dim + (1 if learn_reward else 0)
        self.out_dim = self.target_dim * (2 if learn_std else 1)
        self.min_log_std = min_log_std
        self.max_log_std = max_log_std

    def _split(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.learn_std:
            return raw, None
        mean, log_std = raw.split(self.target_dim, dim=1)
        # Soft bounds (as in PETS) keep the Gaussian NLL from collapsing or exploding.
        log_std = self.max_log_std - F.softplus(self.max_log_std - log_std)
        log_std = self.min_log_std + F.softplus(log_std - self.min_log_std)
        return mean, log_std

    def loss(
        self, forward: Forward, in_norm: Normalizer, out_norm: Normalizer, batch: TransitionBatch
    ) -> tuple[Tensor, Tensor]:
        """``(loss, normalised mse)``: MSE (or Gaussian NLL with ``learn_std``) in normalised target units."""
        y = out_norm.normalize(_targets(batch, self.learn_reward))
        x = in_norm.normalize(torch.cat([batch.obs, batch.action], dim=1))
        mean, log_std = self._split(forward(x))
        mse = ((mean - y) ** 2).mean()
        if log_std is None:
            return mse, mse
        nll = (((mean - y) ** 2) * torch.exp(-2 * log_std) + 2 * log_std).mean()
        return nll, mse

    def predict(
        self,
        forward: Forward,
        in_norm: Normalizer,
        out_norm: Normalizer,
        obs: Tensor,
        action: Tensor,
        deterministic: bool,
        generator: torch.Generator | None,
    ) -> ModelStep:
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"predict: expected obs [B, {self.obs_dim}], got {tuple(obs.shape)}")
        if action.ndim != 2 or action.shape != (obs.shape[0], self.action_dim):
            raise ValueError(
                f"predict: expected action [{obs.shape[0]}, {self.action_dim}], got {tuple(action.shape)}"
            )
        mean, log_std = self._split(forward(in_norm.normalize(torch.cat([obs, action], dim=1))))
        if log_std is not None and not deterministic:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + torch.exp(log_std) * noise
        out = out_norm.denormalize(mean)
        next_obs = obs + out[:, : self.obs_dim]
        reward = out[:, self.obs_dim] if self.learn_reward else torch.zeros_like(obs[:, 0])
        info: dict[str, Tensor] = {}
        if log_std is not None:
            # Norm of the predicted std of Δobs in env units: a per-row uncertainty for penalties.
            std = torch.exp(log_std)[:, : self.obs_dim] * out_norm.std[: self.obs_dim]
            info["uncertainty"] = std.norm(dim=1)
        return ModelStep(next_obs, reward, torch.zeros_like(reward), info)

    def evaluate(
        self, forward: Forward, in_norm: Normalizer, out_norm: Normalizer, batch: TransitionBatch
    ) -> Metrics:
        loss, mse_norm = self.loss(forward, in_norm, out_norm, batch)
        step = self.predict(forward, in_norm, out_norm, batch.obs, batch.action, True, None)
        metrics = {
            "loss": float(loss),
            "mse_norm": float(mse_norm),
            "mse": float(((step.next_obs - batch.next_obs) ** 2).mean()),
        }
        if self.learn_reward:
            metrics["reward_mse"] = float(((step.reward - batch.reward) ** 2).mean())
        return metrics


def _check_batch(batch: TransitionBatch, obs_dim: int, action_dim: int, where: str) -> None:
    if batch.obs_dim != obs_dim or batch.action_dim != action_dim:
        raise ValueError(
            f"{where}: batch has obs/action dims {batch.obs_dim}/{batch.action_dim}, model expects "
            f"{obs_dim}/{action_dim}"
        )
    if len(batch) == 0:
        raise ValueError(f"{where}: empty batch")


# ---------------------------------------------------------------------------------------------------------
# HyperNetworkModel


@dataclass(frozen=True)
class HyperNetConfig:
    """Settings of :class:`HyperNetworkModel` (defaults: HyperCRL's Pendulum setting).

    Attributes:
        target_hidden: hidden widths of the generated dynamics MLP (HyperCRL Pendulum ``h_dims`` = 32x32).
        target_activation: its activation.
        hnet_hidden: hidden widths of the hypernetwork (HyperCRL ``hnet_arch`` for a 32x32 target = 16x16).
        hnet_activation: hypernetwork activation (HyperCRL: ReLU).
        embedding_dim: task-embedding size (HyperCRL ``emb_size`` = 10).
        embedding_init_std: std of a new embedding's N(0, σ²) init (HyperCRL ``std_normal_temb`` = 1).
        beta: output-regulariser weight ``β`` (HyperCRL ``beta`` = 0.05; von Oswald et al. use 0.01–0.05).
        look_ahead: regularise ``h(e_j; Θ + ΔΘ)`` with the optimizer's pending task-loss step ``ΔΘ``
            (von Oswald's two-step variant; HyperCRL's default ``no_look_ahead=False``).
        lr: Adam learning rate for the hypernetwork and the current embedding (HyperCRL ``lr_hyper``).
        grad_clip: max gradient norm (HyperCRL ``grad_max_norm`` = 5); 0 disables.
        learn_reward: also predict the reward (a complete WorldModel); planners with a known reward ignore it.
        learn_std: also predict a log-std (Gaussian NLL loss; sampling when not deterministic). HyperCRL's
            Pendulum model has none (``out_var=False``).
    """

    target_hidden: tuple[int, ...] = (32, 32)
    target_activation: str = "relu"
    hnet_hidden: tuple[int, ...] = (16, 16)
    hnet_activation: str = "relu"
    embedding_dim: int = 10
    embedding_init_std: float = 1.0
    beta: float = 0.05
    look_ahead: bool = True
    lr: float = 1e-4
    grad_clip: float = 5.0
    learn_reward: bool = True
    learn_std: bool = False

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ValueError(f"HyperNetConfig.embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.beta < 0 or self.lr <= 0 or self.grad_clip < 0:
            raise ValueError(
                f"HyperNetConfig: need beta >= 0, lr > 0, grad_clip >= 0; got {self.beta}, {self.lr}, {self.grad_clip}"
            )
        _activation(self.target_activation)
        _activation(self.hnet_activation)


class HyperNetwork(nn.Module):
    """MLP ``e [E] -> θ [num_params]`` (Xavier-uniform weights, zero biases, as HyperCRL's ``hnet_init``)."""

    def __init__(
        self,
        embedding_dim: int,
        hidden: tuple[int, ...],
        num_outputs: int,
        activation: str = "relu",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        widths = [embedding_dim, *hidden, num_outputs]
        layers = [nn.Linear(a, b) for a, b in itertools.pairwise(widths)]
        for layer in layers:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
        self.layers = nn.ModuleList(layers)
        self._act = _activation(activation)

    def forward(self, embedding: Tensor) -> Tensor:
        x = embedding
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self._act(x)
        return x


class HyperNetworkModel:
    """HyperCRL's dynamics model: a hypernetwork generating a per-task dynamics MLP (see the module doc).

    Task handling: the model starts on task 0. :meth:`start_task` moves to the next task (adds its
    embedding and normalisers, stores ``θ_j* = h(e_j)`` for all earlier tasks, resets the optimizer).
    ``predict``/``update``/``evaluate`` act on the current task; :meth:`for_task` gives a WorldModel view of
    any task seen so far (``TaskConditioned`` capability). ``update`` trains the current task only: feed it
    batches of the current task's data (HyperCRL keeps only a recent window of it).

    Args:
        obs_dim: D.
        action_dim: A.
        config: :class:`HyperNetConfig`.
        generator: torch.Generator for the initial weights and the embeddings.
        device: device of the parameters.

    Attributes:
        target: the :class:`TargetMLP` whose weights the hypernetwork generates.
        hnet: the :class:`HyperNetwork`.
        embeddings: list of ``[E]`` task-embedding parameters (earlier ones frozen).
        in_norms: per-task input normalisers; out_norms: per-task target normalisers.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: HyperNetConfig = HyperNetConfig(),
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.config = config
        self.device = torch.device(device)
        self._generator = generator
        self.head = _DynamicsHead(obs_dim, action_dim, config.learn_reward, config.learn_std)
        self.target = TargetMLP(
            self.head.in_dim, self.head.out_dim, config.target_hidden, config.target_activation
        )
        self.hnet = HyperNetwork(
            config.embedding_dim,
            config.hnet_hidden,
            self.target.num_params,
            config.hnet_activation,
            generator=generator,
        ).to(self.device)
        self.embeddings: list[nn.Parameter] = []
        self.in_norms: list[Normalizer] = []
        self.out_norms: list[Normalizer] = []
        self.stored_targets: list[Tensor] = []  # θ_j* for j < current_task, fixed at start_task
        self.current_task = -1
        self._theta_cache: dict[int, Tensor] = {}
        self._optimizer: torch.optim.Adam | None = None
        self.start_task(0)

    # -- tasks --------------------------------------------------------------------------------------------

    @property
    def num_tasks(self) -> int:
        """Number of tasks seen so far (embeddings held)."""
        return len(self.embeddings)

    def _new_embedding(self) -> nn.Parameter:
        e = torch.randn(self.config.embedding_dim, generator=self._generator) * self.config.embedding_init_std
        return nn.Parameter(e.to(self.device))

    def start_task(self, task_index: int) -> None:
        """Switch training to ``task_index``: the current task (no-op) or the next new one.

        For a new task: adds its embedding and normalisers, stores the hypernetwork's outputs for every
        earlier task (the regulariser's targets), freezes earlier embeddings and resets the optimizer.
        """
        if task_index == self.current_task:
            return
        if task_index != self.num_tasks:
            raise ValueError(
                f"HyperNetworkModel.start_task: tasks arrive in order; next new task is {self.num_tasks}, "
                f"current is {self.current_task}, got {task_index}"
            )
        with torch.no_grad():
            self.stored_targets = [self.hnet(e.detach()).detach().clone() for e in self.embeddings]
        for e in self.embeddings:
            e.requires_grad_(False)
        self.embeddings.append(self._new_embedding())
        self.in_norms.append(Normalizer(self.obs_dim + self.action_dim).to(self.device))
        self.out_norms.append(Normalizer(self.head.target_dim).to(self.device))
        self.current_task = task_index
        self._theta_cache.clear()
        self._optimizer = torch.optim.Adam(
            [*self.hnet.parameters(), self.embeddings[task_index]], lr=self.config.lr
        )

    def for_task(self, task: int) -> HyperTaskView:
        """A WorldModel view of ``task`` (its generated weights and normalisers)."""
        self._check_task(task)
        return HyperTaskView(self, task)

    def _check_task(self, task: int) -> None:
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"HyperNetworkModel: task {task} not seen; tasks 0..{self.num_tasks - 1} exist")

    # -- weights ------------------------------------------------------------------------------------------

    def theta(self, task: int) -> Tensor:
        """The generated flat target weights ``h(e_task)`` ``[num_params]`` (cached, no grad)."""
        self._check_task(task)
        if task not in self._theta_cache:
            with torch.no_grad():
                self._theta_cache[task] = self.hnet(self.embeddings[task]).detach()
        return self._theta_cache[task]

    def generated_weights(self, task: int) -> dict[str, Tensor]:
        """The target MLP's weights for ``task`` keyed ``layers.i.weight|bias`` with ``nn.Linear`` shapes."""
        return self.target.unflatten(self.theta(task))

    def regularizer(self, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """``β / t · Σ_{j<t} ||h(e_j) − θ_j*||²`` for the current task ``t`` (0-d tensor; 0 for ``t = 0``).

        Args:
            params: hypernetwork parameters to evaluate ``h`` with (e.g. the look-ahead ``Θ + ΔΘ``);
                default the current ones.
        """
        t = self.current_task
        if t == 0 or self.config.beta == 0:
            return torch.zeros((), device=self.device)
        total = torch.zeros((), device=self.device)
        for j in range(t):
            e = self.embeddings[j].detach()
            out = self.hnet(e) if params is None else functional_call(self.hnet, dict(params), (e,))
            total = total + ((out - self.stored_targets[j]) ** 2).sum()
        return self.config.beta / t * total

    def _look_ahead_delta(self) -> dict[str, Tensor]:
        """The step Adam would take on each hypernetwork parameter from its current gradient (no state change)."""
        assert self._optimizer is not None
        group = self._optimizer.param_groups[0]
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        delta: dict[str, Tensor] = {}
        for name, p in self.hnet.named_parameters():
            if p.grad is None:
                delta[name] = torch.zeros_like(p)
                continue
            g = p.grad.detach()
            state = self._optimizer.state.get(p, {})
            if state:
                k = int(state["step"]) + 1
                m = b1 * state["exp_avg"] + (1 - b1) * g
                v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
            else:
                k, m, v = 1, (1 - b1) * g, (1 - b2) * g * g
            denom = (v / (1 - b2**k)).sqrt() + eps
            delta[name] = -lr * (m / (1 - b1**k)) / denom
        return delta

    # -- WorldModel ---------------------------------------------------------------------------------------

    def fit_normalizer(self, batch: TransitionBatch) -> None:
        """Fit the CURRENT task's input and target standardisers on ``batch`` (its first training data)."""
        _check_batch(batch, self.obs_dim, self.action_dim, "HyperNetworkModel.fit_normalizer")
        t = self.current_task
        self.in_norms[t].fit(torch.cat([batch.obs, batch.action], dim=1))
        self.out_norms[t].fit(_targets(batch, self.config.learn_reward))
        self._theta_cache.clear()

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        return self.predict_task(
            self.current_task, obs, action, deterministic=deterministic, generator=generator
        )

    def predict_task(
        self,
        task: int,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        """``predict`` with ``task``'s generated weights and normalisers."""
        with torch.no_grad():
            return self.head.predict(
                self._forward(self.theta(task)),
                self.in_norms[task],
                self.out_norms[task],
                obs,
                action,
                deterministic,
                generator,
            )

    def _forward(self, theta: Tensor) -> Forward:
        return lambda x: self.target.forward(theta, x)

    def update(self, batch: TransitionBatch) -> Metrics:
        """One Adam step on the current task: task loss + β-weighted output regulariser (look-ahead optional).

        Returns ``loss`` (total), ``task_loss``, ``reg``, ``mse_norm`` and ``grad_norm``.
        """
        _check_batch(batch, self.obs_dim, self.action_dim, "HyperNetworkModel.update")
        assert self._optimizer is not None
        t = self.current_task
        self._optimizer.zero_grad(set_to_none=True)
        theta = self.hnet(self.embeddings[t])
        task_loss, mse_norm = self.head.loss(self._forward(theta), self.in_norms[t], self.out_norms[t], batch)
        task_loss.backward()
        reg = torch.zeros(())
        if t > 0 and self.config.beta > 0:
            if self.config.look_ahead:
                delta = self._look_ahead_delta()
                params = {name: p + delta[name] for name, p in self.hnet.named_parameters()}
                reg = self.regularizer(params)
            else:
                reg = self.regularizer()
            reg.backward()
        params_all = [*self.hnet.parameters(), self.embeddings[t]]
        if self.config.grad_clip > 0:
            grad_norm = float(nn.utils.clip_grad_norm_(params_all, self.config.grad_clip))
        else:
            grad_norm = float(
                torch.norm(torch.stack([p.grad.norm() for p in params_all if p.grad is not None]))
            )
        self._optimizer.step()
        self._theta_cache.clear()
        return {
            "loss": float(task_loss.detach() + reg.detach()),
            "task_loss": float(task_loss.detach()),
            "reg": float(reg.detach()),
            "mse_norm": float(mse_norm.detach()),
            "grad_norm": grad_norm,
        }

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return self.evaluate_task(self.current_task, batch)

    def evaluate_task(self, task: int, batch: TransitionBatch) -> Metrics:
        """Holdout metrics of ``task``'s model: ``loss``, ``mse`` (next_obs, env units), ``mse_norm``, ``reward_mse``."""
        _check_batch(batch, self.obs_dim, self.action_dim, "HyperNetworkModel.evaluate")
        with torch.no_grad():
            return self.head.evaluate(
                self._forward(self.theta(task)), self.in_norms[task], self.out_norms[task], batch
            )

    # -- state ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: hypernetwork weights, embeddings, stored regulariser targets, normalisers, task index.

        The optimizer's moments are not included: a loaded model predicts identically; training continues
        with a fresh Adam.
        """
        state: dict[str, Tensor] = {
            f"hnet.{k}": v.detach().clone() for k, v in self.hnet.state_dict().items()
        }
        for j, e in enumerate(self.embeddings):
            state[f"embedding.{j}"] = e.detach().clone()
            state[f"in_norm.{j}.mean"] = self.in_norms[j].mean.clone()
            state[f"in_norm.{j}.std"] = self.in_norms[j].std.clone()
            state[f"out_norm.{j}.mean"] = self.out_norms[j].mean.clone()
            state[f"out_norm.{j}.std"] = self.out_norms[j].std.clone()
        for j, target in enumerate(self.stored_targets):
            state[f"stored_target.{j}"] = target.clone()
        state["current_task"] = torch.tensor(self.current_task)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (same architecture); errors name the missing or mismatched key."""
        if "current_task" not in state_dict:
            raise KeyError("HyperNetworkModel.load_state_dict: missing key 'current_task'")
        current = int(state_dict["current_task"])
        hnet_state = {k[len("hnet.") :]: v for k, v in state_dict.items() if k.startswith("hnet.")}
        try:
            self.hnet.load_state_dict(hnet_state)
        except RuntimeError as exc:
            raise ValueError(
                f"HyperNetworkModel.load_state_dict: hypernetwork weights do not match: {exc}"
            ) from None
        n = current + 1
        embeddings: list[nn.Parameter] = []
        in_norms: list[Normalizer] = []
        out_norms: list[Normalizer] = []
        for j in range(n):
            for key in (
                f"embedding.{j}",
                f"in_norm.{j}.mean",
                f"in_norm.{j}.std",
                f"out_norm.{j}.mean",
                f"out_norm.{j}.std",
            ):
                if key not in state_dict:
                    raise KeyError(f"HyperNetworkModel.load_state_dict: missing key {key!r}")
            e = torch.as_tensor(state_dict[f"embedding.{j}"]).to(self.device)
            if e.shape != (self.config.embedding_dim,):
                raise ValueError(
                    f"HyperNetworkModel.load_state_dict: 'embedding.{j}' has shape {tuple(e.shape)}"
                )
            embeddings.append(nn.Parameter(e.clone(), requires_grad=j == current))
            norm_in = Normalizer(self.obs_dim + self.action_dim).to(self.device)
            norm_in.mean.copy_(state_dict[f"in_norm.{j}.mean"])
            norm_in.std.copy_(state_dict[f"in_norm.{j}.std"])
            norm_out = Normalizer(self.head.target_dim).to(self.device)
            norm_out.mean.copy_(state_dict[f"out_norm.{j}.mean"])
            norm_out.std.copy_(state_dict[f"out_norm.{j}.std"])
            in_norms.append(norm_in)
            out_norms.append(norm_out)
        stored = []
        for j in range(current):
            key = f"stored_target.{j}"
            if key not in state_dict:
                raise KeyError(f"HyperNetworkModel.load_state_dict: missing key {key!r}")
            stored.append(torch.as_tensor(state_dict[key]).to(self.device).clone())
        self.embeddings, self.in_norms, self.out_norms = embeddings, in_norms, out_norms
        self.stored_targets = stored
        self.current_task = current
        self._theta_cache.clear()
        self._optimizer = torch.optim.Adam(
            [*self.hnet.parameters(), self.embeddings[current]], lr=self.config.lr
        )


class HyperTaskView:
    """WorldModel view of one task of a :class:`HyperNetworkModel` (``predict``/``evaluate`` with its weights).

    ``update`` is allowed only for the model's current task (earlier tasks' data is gone by design).
    ``state_dict``/``load_state_dict`` act on the whole model.
    """

    def __init__(self, model: HyperNetworkModel, task: int) -> None:
        self.model = model
        self.task = task
        self.obs_dim = model.obs_dim
        self.action_dim = model.action_dim

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        return self.model.predict_task(
            self.task, obs, action, deterministic=deterministic, generator=generator
        )

    def update(self, batch: TransitionBatch) -> Metrics:
        if self.task != self.model.current_task:
            raise ValueError(
                f"HyperTaskView.update: task {self.task} is not the model's current task {self.model.current_task}"
            )
        return self.model.update(batch)

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return self.model.evaluate_task(self.task, batch)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state_dict)


# ---------------------------------------------------------------------------------------------------------
# The baselines' MLP: shared trunk, one output head per task (as HyperCRL's baselines)


@dataclass(frozen=True)
class MLPDynamicsConfig:
    """Settings of :class:`MLPDynamicsModel` (the fine-tune / coreset / multi-task baselines).

    Attributes:
        hidden: hidden widths (HyperCRL's baselines use the same ``h_dims`` as the generated net: 32x32).
        activation: hidden activation.
        multi_head: one output layer per task on a shared trunk, as HyperCRL's baselines (the task id picks
            the head); ``False``: one plain MLP for every task (no task information at all).
        lr: Adam learning rate (HyperCRL Pendulum ``lr`` = 1e-3).
        grad_clip: max gradient norm; 0 disables.
        weight_decay: Adam ``weight_decay`` (HyperCRL Pendulum ``reg_lambda`` = 0).
        learn_reward: also predict the reward.
        learn_std: also predict a log-std (Gaussian NLL).
    """

    hidden: tuple[int, ...] = (32, 32)
    activation: str = "relu"
    multi_head: bool = True
    lr: float = 1e-3
    grad_clip: float = 5.0
    weight_decay: float = 0.0
    learn_reward: bool = True
    learn_std: bool = False

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"MLPDynamicsConfig.hidden must be non-empty positive widths, got {self.hidden}")
        if self.lr <= 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(
                f"MLPDynamicsConfig: need lr > 0, grad_clip >= 0, weight_decay >= 0; got {self.lr}, "
                f"{self.grad_clip}, {self.weight_decay}"
            )
        _activation(self.activation)


def _linear(a: int, b: int, generator: torch.Generator | None) -> nn.Linear:
    """``nn.Linear(a, b)`` with its default init U(±1/sqrt(a)) drawn from ``generator``."""
    layer = nn.Linear(a, b)
    bound = 1.0 / a**0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class MLPDynamicsModel:
    """MLP ``(obs, action) -> (Δobs, reward)``: shared trunk + one head per task (or one head for all).

    One global normaliser (fit it once, on the first task's first training data). Tasks arrive in order via
    :meth:`start_task` (adds a head when ``multi_head``); :meth:`for_task` gives a WorldModel view that uses
    that task's head (``TaskConditioned``). :meth:`update` trains the current task; :meth:`update_replay` takes
    one gradient step on the sum of per-task losses (current batch plus replayed batches of earlier tasks,
    each weighted like one batch, as HyperCRL's coreset and multi-task baselines).

    Args:
        obs_dim: D.
        action_dim: A.
        config: :class:`MLPDynamicsConfig`.
        generator: torch.Generator for the initial weights (trunk and every new head).
        device: device of the parameters.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: MLPDynamicsConfig = MLPDynamicsConfig(),
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.config = config
        self.device = torch.device(device)
        self._generator = generator
        self.head = _DynamicsHead(obs_dim, action_dim, config.learn_reward, config.learn_std)
        widths = [self.head.in_dim, *config.hidden]
        self.trunk = nn.ModuleList(_linear(a, b, generator) for a, b in itertools.pairwise(widths)).to(
            self.device
        )
        self.heads = nn.ModuleList([_linear(widths[-1], self.head.out_dim, generator)]).to(self.device)
        self._act = _activation(config.activation)
        self.in_norm = Normalizer(self.head.in_dim).to(self.device)
        self.out_norm = Normalizer(self.head.target_dim).to(self.device)
        self.current_task = 0
        self.num_tasks = 1
        self._optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Adam:
        params = [*self.trunk.parameters(), *self.heads.parameters()]
        return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _parameters(self) -> list[Tensor]:
        return [*self.trunk.parameters(), *self.heads.parameters()]

    # -- tasks --------------------------------------------------------------------------------------------

    def start_task(self, task_index: int) -> None:
        """Switch to ``task_index`` (the current one: no-op; the next new one: add its head if ``multi_head``)."""
        if task_index == self.current_task:
            return
        if task_index != self.num_tasks:
            raise ValueError(
                f"MLPDynamicsModel.start_task: tasks arrive in order; next new task is {self.num_tasks}, got {task_index}"
            )
        if self.config.multi_head:
            self.heads.append(
                _linear(self.config.hidden[-1], self.head.out_dim, self._generator).to(self.device)
            )
        self.num_tasks += 1
        self.current_task = task_index
        self._optimizer = self._make_optimizer()

    def for_task(self, task: int) -> MLPTaskView:
        """A WorldModel view of ``task`` (its head; the single head if not ``multi_head``)."""
        self._check_task(task)
        return MLPTaskView(self, task)

    def _check_task(self, task: int) -> None:
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"MLPDynamicsModel: task {task} not seen; tasks 0..{self.num_tasks - 1} exist")

    def _forward(self, task: int) -> Forward:
        head = self.heads[task if self.config.multi_head else 0]

        def forward(x: Tensor) -> Tensor:
            for layer in self.trunk:
                x = self._act(layer(x))
            return head(x)  # type: ignore[no-any-return]

        return forward

    # -- WorldModel ---------------------------------------------------------------------------------------

    def fit_normalizer(self, batch: TransitionBatch) -> None:
        """Fit the global input and target standardisers on ``batch``."""
        _check_batch(batch, self.obs_dim, self.action_dim, "MLPDynamicsModel.fit_normalizer")
        self.in_norm.fit(torch.cat([batch.obs, batch.action], dim=1))
        self.out_norm.fit(_targets(batch, self.config.learn_reward))

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        return self.predict_task(
            self.current_task, obs, action, deterministic=deterministic, generator=generator
        )

    def predict_task(
        self,
        task: int,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        """``predict`` with ``task``'s head."""
        self._check_task(task)
        with torch.no_grad():
            return self.head.predict(
                self._forward(task), self.in_norm, self.out_norm, obs, action, deterministic, generator
            )

    def update(self, batch: TransitionBatch) -> Metrics:
        """One Adam step on a batch of the current task; returns ``loss``, ``mse_norm``, ``grad_norm``."""
        return self.update_replay([(self.current_task, batch)])

    def update_replay(self, parts: Sequence[tuple[int, TransitionBatch]]) -> Metrics:
        """One Adam step on ``Σ_k loss(task_k's head, batch_k)`` (each part's mean loss, equal weights).

        Returns ``loss`` (the sum), ``mse_norm`` (of the first part) and ``grad_norm``.
        """
        if not parts:
            raise ValueError("MLPDynamicsModel.update_replay: no batches")
        self._optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        first_mse = torch.zeros(())
        for k, (task, batch) in enumerate(parts):
            self._check_task(task)
            _check_batch(batch, self.obs_dim, self.action_dim, "MLPDynamicsModel.update")
            loss, mse_norm = self.head.loss(self._forward(task), self.in_norm, self.out_norm, batch)
            total = total + loss
            if k == 0:
                first_mse = mse_norm
        total.backward()
        params = [p for p in self._parameters() if p.grad is not None]
        if self.config.grad_clip > 0:
            grad_norm = float(nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        else:
            grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        self._optimizer.step()
        return {"loss": float(total.detach()), "mse_norm": float(first_mse.detach()), "grad_norm": grad_norm}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return self.evaluate_task(self.current_task, batch)

    def evaluate_task(self, task: int, batch: TransitionBatch) -> Metrics:
        """Holdout metrics with ``task``'s head: ``loss``, ``mse`` (next_obs, env units), ``mse_norm``, ..."""
        self._check_task(task)
        _check_batch(batch, self.obs_dim, self.action_dim, "MLPDynamicsModel.evaluate")
        with torch.no_grad():
            return self.head.evaluate(self._forward(task), self.in_norm, self.out_norm, batch)

    # -- state ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: trunk and head weights, normaliser statistics, task counters (no optimizer moments)."""
        state: dict[str, Tensor] = {
            f"trunk.{k}": v.detach().clone() for k, v in self.trunk.state_dict().items()
        }
        state.update({f"heads.{k}": v.detach().clone() for k, v in self.heads.state_dict().items()})
        state["in_norm.mean"] = self.in_norm.mean.clone()
        state["in_norm.std"] = self.in_norm.std.clone()
        state["out_norm.mean"] = self.out_norm.mean.clone()
        state["out_norm.std"] = self.out_norm.std.clone()
        state["current_task"] = torch.tensor(self.current_task)
        state["num_tasks"] = torch.tensor(self.num_tasks)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (same config); errors name the missing or mismatched key."""
        for key in (
            "current_task",
            "num_tasks",
            "in_norm.mean",
            "in_norm.std",
            "out_norm.mean",
            "out_norm.std",
        ):
            if key not in state_dict:
                raise KeyError(f"MLPDynamicsModel.load_state_dict: missing key {key!r}")
        num_tasks = int(state_dict["num_tasks"])
        n_heads = num_tasks if self.config.multi_head else 1
        heads = nn.ModuleList(
            nn.Linear(self.config.hidden[-1], self.head.out_dim) for _ in range(n_heads)
        ).to(self.device)
        try:
            self.trunk.load_state_dict(
                {k[len("trunk.") :]: v for k, v in state_dict.items() if k.startswith("trunk.")}
            )
            heads.load_state_dict(
                {k[len("heads.") :]: v for k, v in state_dict.items() if k.startswith("heads.")}
            )
        except RuntimeError as exc:
            raise ValueError(f"MLPDynamicsModel.load_state_dict: weights do not match: {exc}") from None
        self.heads = heads
        self.in_norm.mean.copy_(state_dict["in_norm.mean"])
        self.in_norm.std.copy_(state_dict["in_norm.std"])
        self.out_norm.mean.copy_(state_dict["out_norm.mean"])
        self.out_norm.std.copy_(state_dict["out_norm.std"])
        self.num_tasks = num_tasks
        self.current_task = int(state_dict["current_task"])
        self._optimizer = self._make_optimizer()


class MLPTaskView:
    """WorldModel view of one task of an :class:`MLPDynamicsModel` (its head for every call).

    ``update`` trains that task's head (and the shared trunk).
    """

    def __init__(self, model: MLPDynamicsModel, task: int) -> None:
        self.model = model
        self.task = task
        self.obs_dim = model.obs_dim
        self.action_dim = model.action_dim

    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        return self.model.predict_task(
            self.task, obs, action, deterministic=deterministic, generator=generator
        )

    def update(self, batch: TransitionBatch) -> Metrics:
        return self.model.update_replay([(self.task, batch)])

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        return self.model.evaluate_task(self.task, batch)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state_dict)
