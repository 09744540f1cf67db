"""Branched model rollouts (MBPO) and gymnasium environments over a WorldModel.

* :func:`rollout`: ``B`` rollouts of ``horizon`` steps from given start states, batched (one model call per
  step per chunk of start states), returning every valid transition. Steps after a termination are dropped;
  the last step of a rollout that did not terminate has ``truncated = 1``; rows whose prediction is not
  finite never leave the function (dropped, their rollout stopped, counted in the stats).
* :class:`RolloutBuffer` and :func:`mixed_batch`: MBPO's layer, shared by Dyna and the offline agents: a replay
  buffer refilled with branched rollouts from given start states (it keeps the last ``capacity`` rows, i.e. the
  configured number of refills), and SAC batches that mix ``real_ratio`` real rows with model rows.
* :class:`ModelEnv`: a ``gymnasium.Env`` whose dynamics are a WorldModel, starting from dataset states.
* :class:`VectorModelEnv`: ``N`` of them as one ``gymnasium.vector.VectorEnv`` with a single batched model call
  per step (same-step autoreset).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from mbrl.data import ReplayBuffer
from mbrl.gym_env import make_seeded
from mbrl.models.contract import require_world_model, validate_step
from mbrl.models.protocol import WorldModel
from mbrl.types import EnvInfo, ModelStep, TransitionBatch

TermFn = Callable[[Tensor, Tensor, Tensor], Tensor]
TensorPolicy = Callable[[Tensor], Tensor]

# Start states per chunk on CPU. Measured with a 7x4x200 ensemble at 1 thread (32k start states, horizon 5):
# throughput is flat from 8k to 32k start states per chunk (the ensemble chunks its own forward passes at
# 4096 rows) and ~5 % lower at 2k; 25k keeps the full-info [E, B, D] member outputs of a step at ~12 MB.
# Start states on a GPU are not chunked (an H100 ran fastest with the largest batches).
DEFAULT_CHUNK_SIZE = 25_000


@dataclass(frozen=True)
class RolloutStats:
    """Counts over one :func:`rollout` call.

    Attributes:
        n_start: rollouts started (start states).
        n_transitions: valid transitions returned.
        n_terminated: returned transitions with ``terminated = 1``.
        n_truncated: returned transitions with ``truncated = 1`` (rollouts that reached the horizon).
        n_nonfinite: predicted rows dropped for NaN/Inf in next_obs or reward (each stops its rollout).
        mean_length: mean number of returned transitions per start state.
        mean_reward: mean reward over returned transitions (NaN when none).
        mean_uncertainty: mean ``info["uncertainty"]`` over returned transitions, ``None`` if the model gives none.
    """

    n_start: int
    n_transitions: int
    n_terminated: int
    n_truncated: int
    n_nonfinite: int
    mean_length: float
    mean_reward: float
    mean_uncertainty: float | None

    def metrics(self, prefix: str = "rollout/") -> dict[str, float]:
        """Scalars for a logger (``rollout/...``)."""
        out = {
            f"{prefix}n_transitions": float(self.n_transitions),
            f"{prefix}n_nonfinite": float(self.n_nonfinite),
            f"{prefix}terminated_fraction": self.n_terminated / max(self.n_transitions, 1),
            f"{prefix}mean_length": self.mean_length,
            f"{prefix}mean_reward": self.mean_reward,
        }
        if self.mean_uncertainty is not None:
            out[f"{prefix}mean_uncertainty"] = self.mean_uncertainty
        return out


def rollout(
    model: WorldModel,
    policy: TensorPolicy,
    start_obs: Tensor,
    horizon: int,
    *,
    term_fn: TermFn | None = None,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    chunk_size: int | None = None,
    clip_obs: tuple[Tensor, Tensor] | None = None,
) -> tuple[TransitionBatch, RolloutStats]:
    """Roll ``model`` forward ``horizon`` steps from every row of ``start_obs`` under ``policy``.

    Per step, for the live rollouts of a chunk: ``action = policy(obs)``, one ``model.predict`` call; rows with
    non-finite ``next_obs`` or ``reward`` are dropped and stop; ``next_obs`` is clipped to ``clip_obs``;
    ``terminated = term_fn(obs, action, next_obs)`` if given (else the model's); terminated rows are returned
    and stop; the rest continue; at ``t = horizon - 1`` live rows get ``truncated = 1``.

    Args:
        model: any WorldModel.
        policy: ``obs [b, D] -> action [b, A]`` torch tensors in env units (called on live rows only).
        start_obs: ``[B, D]``.
        horizon: steps per rollout (>= 1).
        term_fn: known termination function overriding the model's ``terminated``.
        generator: passed to ``model.predict`` (same state -> same rollouts).
        deterministic: passed to ``model.predict``.
        chunk_size: start states rolled out together (``None``: :data:`DEFAULT_CHUNK_SIZE` for CPU tensors,
            all of them on a GPU).
        clip_obs: ``(low [D], high [D])``: clamp predicted next_obs into the data's range (after the
            non-finite check, so an Inf is still dropped, not clipped).

    Returns:
        ``(batch, stats)``: all valid transitions (step-major within each chunk) on the model's output device,
        and :class:`RolloutStats`.

    Raises:
        ContractError: ``model`` lacks a WorldModel member, or its first ``predict`` of the call returns a
            wrongly shaped ``ModelStep`` (the message names the model class, the method and the expected shape).
    """
    if start_obs.ndim != 2:
        raise ValueError(f"rollout: expected start_obs [B, D], got {tuple(start_obs.shape)}")
    if horizon < 1:
        raise ValueError(f"rollout: horizon must be >= 1, got {horizon}")
    n_start = int(start_obs.shape[0])
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE if start_obs.device.type == "cpu" else max(n_start, 1)
    if chunk_size < 1:
        raise ValueError(f"rollout: chunk_size must be >= 1, got {chunk_size}")
    require_world_model(model)
    parts: list[TransitionBatch] = []
    unc_sum, unc_count, n_nonfinite = 0.0, 0, 0
    has_unc = False
    with torch.no_grad():
        for c0 in range(0, n_start, chunk_size):
            obs = start_obs[c0 : c0 + chunk_size].float()
            for t in range(horizon):
                if obs.shape[0] == 0:
                    break
                action = policy(obs)
                step = model.predict(obs, action, deterministic=deterministic, generator=generator)
                if c0 == 0 and t == 0:  # structure only, once per call: a wrong shape would broadcast silently
                    validate_step(model, step, obs)
                next_obs, reward = step.next_obs, step.reward
                obs = obs.to(next_obs.device)
                action = action.to(next_obs.device, next_obs.dtype)
                finite = torch.isfinite(next_obs).all(dim=1) & torch.isfinite(reward)
                n_bad = int((~finite).sum())
                if n_bad:
                    n_nonfinite += n_bad
                    keep = finite.nonzero().squeeze(1)
                    obs, action, next_obs, reward = obs[keep], action[keep], next_obs[keep], reward[keep]
                    step = ModelStep(
                        next_obs, reward, step.terminated[keep], {k: v[keep] for k, v in _row_info(step, finite).items()}
                    )
                if clip_obs is not None:
                    low, high = clip_obs
                    next_obs = torch.clamp(next_obs, low.to(next_obs), high.to(next_obs))
                if term_fn is not None:
                    terminated = term_fn(obs, action, next_obs).to(next_obs.dtype)
                else:
                    terminated = step.terminated.to(next_obs.dtype)
                ended = terminated > 0
                truncated = (~ended).to(next_obs.dtype) if t == horizon - 1 else torch.zeros_like(terminated)
                parts.append(TransitionBatch(obs, action, reward, next_obs, (ended).to(next_obs.dtype), truncated))
                unc = step.info.get("uncertainty")
                if unc is not None:
                    has_unc = True
                    unc_sum += float(unc.sum())
                    unc_count += int(unc.numel())
                obs = next_obs[~ended]
    if parts:
        batch = TransitionBatch.cat(parts)
    else:
        d = int(start_obs.shape[1])
        empty = torch.zeros(0)
        batch = TransitionBatch(torch.zeros(0, d), torch.zeros(0, model.action_dim), empty, torch.zeros(0, d), empty, empty)
    n = len(batch)
    stats = RolloutStats(
        n_start=n_start,
        n_transitions=n,
        n_terminated=int(batch.terminated.sum()),
        n_truncated=int(batch.truncated.sum()),
        n_nonfinite=n_nonfinite,
        mean_length=n / max(n_start, 1),
        mean_reward=float(batch.reward.mean()) if n else float("nan"),
        mean_uncertainty=(unc_sum / max(unc_count, 1)) if has_unc else None,
    )
    return batch, stats


class RolloutBuffer(ReplayBuffer):
    """MBPO's model buffer: a :class:`ReplayBuffer` (FIFO, its own sampling RNG) refilled with branched rollouts.

    Size it ``rollouts_per_refill * horizon * refills_kept`` to keep exactly the last ``refills_kept`` refills.
    """

    def refill(
        self,
        model: WorldModel,
        policy: TensorPolicy,
        start_obs: Tensor,
        horizon: int,
        *,
        term_fn: TermFn | None = None,
        generator: torch.Generator | None = None,
        clip_obs: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[TransitionBatch, RolloutStats]:
        """Roll ``model`` out ``horizon`` steps from every row of ``start_obs`` (see :func:`rollout`) and append
        the transitions; returns them and the stats."""
        batch, stats = rollout(
            model, policy, start_obs, horizon, term_fn=term_fn, generator=generator, clip_obs=clip_obs
        )
        if len(batch) > 0:
            self.add_batch(batch)  # device storage: the rollouts never pass through the host
        return batch, stats


def mixed_batch(
    sample_real: Callable[[int], TransitionBatch], model_rows: ReplayBuffer, batch_size: int, real_ratio: float
) -> TransitionBatch:
    """A SAC batch of ``round(real_ratio * batch_size)`` real rows (``sample_real(n)``) followed by model rows;
    all real while the model buffer is empty. The batch lives on the model buffer's device (real rows are moved
    there when they come from elsewhere, e.g. a host dataset beside a GPU buffer)."""
    if len(model_rows) == 0:
        return sample_real(batch_size)
    n_real = round(batch_size * real_ratio)
    parts = []
    if n_real > 0:
        parts.append(sample_real(n_real))
    if batch_size - n_real > 0:
        parts.append(model_rows.sample(batch_size - n_real))
    device = parts[-1].obs.device
    parts = [p if p.obs.device == device else p.to(device) for p in parts]
    return TransitionBatch.cat(parts) if len(parts) > 1 else parts[0]


def _row_info(step: ModelStep, rows: Tensor) -> dict[str, Tensor]:
    """The per-row ``[B]`` / ``[B, ...]`` entries of ``step.info`` (``[E, B, ...]`` entries are left out)."""
    n = rows.shape[0]
    return {k: v for k, v in step.info.items() if v.ndim >= 1 and v.shape[0] == n and k != "members"}


# ------------------------------------------------------------------------------------------------- envs
def _spaces_and_term(
    spec: EnvInfo | None,
    obs_dim: int,
    observation_space: spaces.Box | None,
    action_space: spaces.Box | None,
    term_fn: TermFn | None,
    max_episode_steps: int | None,
) -> tuple[spaces.Box, spaces.Box, TermFn | None, int]:
    if spec is not None:
        env = make_seeded(spec.env_id)
        try:
            if observation_space is None:
                obs_space = env.observation_space
                assert isinstance(obs_space, spaces.Box)
                observation_space = spaces.Box(
                    obs_space.low.astype(np.float32), obs_space.high.astype(np.float32), obs_space.shape, np.float32
                )
            if action_space is None:
                act_space = env.action_space
                assert isinstance(act_space, spaces.Box)
                action_space = spaces.Box(
                    act_space.low.astype(np.float32), act_space.high.astype(np.float32), act_space.shape, np.float32
                )
        finally:
            env.close()
        term_fn = spec.term_fn if term_fn is None else term_fn
        max_episode_steps = spec.max_episode_steps if max_episode_steps is None else max_episode_steps
    if action_space is None:
        raise ValueError("ModelEnv: give action_space or spec")
    if observation_space is None:
        observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    if observation_space.shape != (obs_dim,):
        raise ValueError(f"ModelEnv: observation_space shape {observation_space.shape} != model obs_dim ({obs_dim},)")
    return observation_space, action_space, term_fn, int(max_episode_steps or 1000)


def _check_start(start_obs: np.ndarray, obs_dim: int) -> np.ndarray:
    start = np.asarray(start_obs, dtype=np.float32)
    if start.ndim != 2 or start.shape[1] != obs_dim or start.shape[0] == 0:
        raise ValueError(f"ModelEnv: expected start_obs [N >= 1, {obs_dim}], got {start.shape}")
    if not np.isfinite(start).all():
        raise ValueError("ModelEnv: start_obs holds NaN/Inf")
    return start


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


class ModelEnv(gym.Env[np.ndarray, np.ndarray]):
    """A gymnasium env whose transitions are a WorldModel's predictions.

    ``reset`` draws a start observation uniformly from ``start_obs`` with the env's ``np_random`` and reseeds
    a ``torch.Generator`` from it for the model's sampling, so ``reset(seed=s)`` makes the whole episode
    reproducible. ``step`` clips the action to ``action_space``, predicts one step, applies ``term_fn`` (the
    env's own termination function) and truncates after ``max_episode_steps``. A non-finite prediction
    truncates the episode (the previous observation is returned, reward 0, ``info["nonfinite"] = True``):
    NaN never reaches the agent. Observations are float32 numpy arrays.

    Args:
        model: the WorldModel.
        start_obs: ``[N, D]`` start observations (e.g. a dataset's ``observations``).
        spec: the env's :class:`mbrl.types.EnvInfo` (e.g. ``mbrl.envs.get_spec("Hopper-v5")``): default spaces (from
            ``gymnasium.make(spec.env_id)``), ``term_fn`` and ``max_episode_steps`` come from it.
        observation_space: overrides (default: the env's, or an unbounded Box).
        action_space: overrides (required without ``spec``).
        term_fn: overrides the env's termination function (``None`` without ``spec``: the model's flag).
        max_episode_steps: truncation horizon (default: the env's time limit, else 1000).
        deterministic: use the model's mean prediction.
        clip_obs: ``(low [D], high [D])`` numpy bounds to clamp predicted observations into.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        model: WorldModel,
        start_obs: np.ndarray,
        *,
        spec: EnvInfo | None = None,
        observation_space: spaces.Box | None = None,
        action_space: spaces.Box | None = None,
        term_fn: TermFn | None = None,
        max_episode_steps: int | None = None,
        deterministic: bool = False,
        clip_obs: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.start_obs = _check_start(start_obs, model.obs_dim)
        self.observation_space, self.action_space, self.term_fn, self.max_episode_steps = _spaces_and_term(
            spec, model.obs_dim, observation_space, action_space, term_fn, max_episode_steps
        )
        self._box: spaces.Box = self.action_space
        self.deterministic = deterministic
        self.clip_obs = clip_obs
        self._obs: np.ndarray | None = None
        self._t = 0
        self._generator: torch.Generator | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._generator = _torch_generator(self.np_random)
        i = int(self.np_random.integers(len(self.start_obs)))
        self._obs = self.start_obs[i].copy()
        self._t = 0
        return self._obs.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("ModelEnv.step called before reset")
        box = self._box
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(box.shape), box.low, box.high)
        obs_t = torch.from_numpy(self._obs).unsqueeze(0)
        act_t = torch.from_numpy(a).unsqueeze(0)
        step = self.model.predict(obs_t, act_t, deterministic=self.deterministic, generator=self._generator)
        next_obs = step.next_obs[0].detach().cpu().float().numpy()
        reward = float(step.reward[0])
        self._t += 1
        info: dict[str, Any] = {}
        if "uncertainty" in step.info:
            info["uncertainty"] = float(step.info["uncertainty"][0])
        if not (np.isfinite(next_obs).all() and np.isfinite(reward)):
            info["nonfinite"] = True
            return self._obs.copy(), 0.0, False, True, info
        if self.clip_obs is not None:
            next_obs = np.clip(next_obs, self.clip_obs[0], self.clip_obs[1]).astype(np.float32)
        if self.term_fn is not None:
            next_t = torch.from_numpy(next_obs).unsqueeze(0)
            terminated = bool(self.term_fn(obs_t, act_t, next_t)[0] > 0)
        else:
            terminated = bool(step.terminated[0] > 0)
        truncated = self._t >= self.max_episode_steps and not terminated
        self._obs = next_obs.astype(np.float32)
        return self._obs.copy(), reward, terminated, truncated, info


class VectorModelEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """``num_envs`` model envs stepped by one batched ``model.predict`` call; same-step autoreset.

    Semantics match :class:`ModelEnv` row by row. When a sub-env terminates or truncates, ``step`` returns its
    reset observation and puts the last observation in ``info["final_obs"]`` (an object array, ``None`` for
    the others) with the mask ``info["_final_obs"]`` (gymnasium's ``AutoresetMode.SAME_STEP``).
    ``reset(seed=s)`` seeds one numpy Generator for start draws and the model's torch Generator.

    Args:
        model, start_obs, spec, observation_space, action_space, term_fn, max_episode_steps,
        deterministic, clip_obs: as :class:`ModelEnv`.
        num_envs: ``N``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(
        self,
        model: WorldModel,
        start_obs: np.ndarray,
        num_envs: int,
        *,
        spec: EnvInfo | None = None,
        observation_space: spaces.Box | None = None,
        action_space: spaces.Box | None = None,
        term_fn: TermFn | None = None,
        max_episode_steps: int | None = None,
        deterministic: bool = False,
        clip_obs: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"VectorModelEnv: num_envs must be >= 1, got {num_envs}")
        self.model = model
        self.num_envs = num_envs
        self.start_obs = _check_start(start_obs, model.obs_dim)
        obs_space, act_space, self.term_fn, self.max_episode_steps = _spaces_and_term(
            spec, model.obs_dim, observation_space, action_space, term_fn, max_episode_steps
        )
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.observation_space = batch_space(obs_space, num_envs)
        self.action_space = batch_space(act_space, num_envs)
        self.deterministic = deterministic
        self.clip_obs = clip_obs
        self._obs = np.zeros((num_envs, model.obs_dim), dtype=np.float32)
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._generator: torch.Generator | None = None

    def _draw(self, n: int) -> np.ndarray:
        return self.start_obs[self.np_random.integers(len(self.start_obs), size=n)].copy()

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, list):
            seed = seed[0] if seed else None
        super().reset(seed=seed)
        self._generator = _torch_generator(self.np_random)
        self._obs = self._draw(self.num_envs)
        self._t[:] = 0
        return self._obs.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._generator is None:
            raise RuntimeError("VectorModelEnv.step called before reset")
        space = self.single_action_space
        assert isinstance(space, spaces.Box)
        a = np.clip(np.asarray(actions, dtype=np.float32).reshape(self.num_envs, *space.shape), space.low, space.high)
        obs_t = torch.from_numpy(self._obs)
        act_t = torch.from_numpy(a)
        step = self.model.predict(obs_t, act_t, deterministic=self.deterministic, generator=self._generator)
        next_obs = step.next_obs.detach().cpu().float().numpy().astype(np.float32)
        reward = step.reward.detach().cpu().double().numpy()
        nonfinite = ~(np.isfinite(next_obs).all(axis=1) & np.isfinite(reward))
        next_obs[nonfinite] = self._obs[nonfinite]
        reward[nonfinite] = 0.0
        if self.clip_obs is not None:
            next_obs = np.clip(next_obs, self.clip_obs[0], self.clip_obs[1]).astype(np.float32)
        if self.term_fn is not None:
            terminated = (self.term_fn(obs_t, act_t, torch.from_numpy(next_obs)) > 0).cpu().numpy()
        else:
            terminated = (step.terminated > 0).cpu().numpy()
        terminated = terminated & ~nonfinite
        self._t += 1
        truncated = ((self._t >= self.max_episode_steps) | nonfinite) & ~terminated
        infos: dict[str, Any] = {}
        if "uncertainty" in step.info:
            infos["uncertainty"] = step.info["uncertainty"].detach().cpu().numpy()
        if nonfinite.any():
            infos["nonfinite"] = nonfinite
        done = terminated | truncated
        obs_out = next_obs.copy()
        if done.any():
            final = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final[i] = next_obs[i].copy()
            infos["final_obs"] = final
            infos["_final_obs"] = done.copy()
            obs_out[done] = self._draw(int(done.sum()))
            self._t[done] = 0
        self._obs = obs_out
        return obs_out.copy(), reward.astype(np.float64), terminated, truncated, infos
