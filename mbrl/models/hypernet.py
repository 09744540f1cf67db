"""Task-conditioned hypernetwork dynamics model (HyperCRL); its baselines' MLP is :mod:`mbrl.models.multihead`.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from mbrl.data.normalizer import Normalizer
from mbrl.models.task_dynamics import (
    CurrentTaskModel,
    Forward,
    TargetMLP,
    _activation,
    _check_batch,
    _targets,
)
from mbrl.types import Metrics, ModelStep, TransitionBatch

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


class HyperNetworkModel(CurrentTaskModel):
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
        super().__init__(obs_dim, action_dim, config.learn_reward, config.learn_std, generator=generator, device=device)
        self.config = config
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

    def update_task(self, task: int, batch: TransitionBatch) -> Metrics:
        """:meth:`update` for ``task``, which must be the current one (earlier tasks' data is gone by design)."""
        if task != self.current_task:
            raise ValueError(f"HyperNetworkModel.update_task: task {task} is not the model's current task {self.current_task}")
        return self.update(batch)
