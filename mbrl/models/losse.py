"""Losse-FTL: a linear world model on a locality-sensitive sparse encoding, learned online in one pass.

Follows Liu, Du, Lee and Lin, "Locality Sensitive Sparse Encoding for Learning World Models Online"
(ICLR 2024). A linear regressor on a very wide, very sparse nonlinear encoding of ``[obs, action]`` keeps the
exact sufficient statistics of ALL data seen (``A = XᵀX + λI``, ``B = XᵀY``), so its follow-the-leader (FTL)
solution never forgets under covariate shift; each update touches only the features the new batch activates,
so its cost does not grow with the amount of data seen. No replay, no epochs.

Encoding (:class:`LosseEncoder`, the paper's Sec. 3 "Losse"):

1. ``x`` (normalised ``[obs, action]``, ``d`` dims) is projected by a fixed random matrix ``P [d, L·ρ]``
   (truncated normal in ±2 std, std ``projection_scale / sqrt(d)``, as in the authors' public code) and
   squashed by a sigmoid to ``(0, 1)``, then scaled to ``n`` bins: ``u = n · sigmoid(x P)``.
2. The ``L·ρ`` coordinates are split into ``L`` groups of ``ρ``. Each group's ``u_g ∈ (0, n)^ρ`` lies in one
   cell of a ``ρ``-dimensional grid with ``n+1`` vertices per axis; the ``2^ρ`` corners of that cell get
   multilinear (soft-binning) weights ``∏_j (f_j if corner bit j else 1 - f_j)`` with ``f`` the fractional
   position inside the cell. The weights of a group sum to one and their weighted mean of corner coordinates
   is ``u_g`` itself.
3. Feature ``g·(n+1)^ρ + Σ_j c_j (n+1)^(ρ-1-j)`` for corner ``c`` of group ``g``: ``F = L·(n+1)^ρ`` features,
   exactly ``s = L·2^ρ`` non-zeros per row. The feature space is enumerated, not hashed: ``F`` stays small
   enough for the dense ``A`` below (hashing would only add collisions).

FTL learner (:class:`FTLRegressor`, the paper's Algorithm 2 "sparse incremental update"):

- ``A = λI + Σ φφᵀ`` is a dense ``[F, F]`` float64 matrix (as in the authors' code); ``B = Σ φ yᵀ``
  ``[F, out]``. A batch touching the feature set ``S`` changes only ``A[S, S]`` and ``B[S]``.
- The residual ``R = B - A W`` (the negative gradient of the ridge objective) is maintained incrementally.
  A block step on features ``S`` sets ``W_S ← W_S + A_SS⁻¹ R_S``: the exact minimiser of the full ridge
  objective over ``W_S`` with every other weight held fixed (the paper's update, with ``λ`` fixed rather
  than the authors' code's ``A/count + ε I``, so that every step minimises one and the same objective).
  Its cost is ``O(|S|·F·out + |S|³)``: it reads the ``|S|`` rows of ``A`` (to update ``R``) and solves an
  ``|S|``-block; it depends on the batch, never on how much data was seen. Touched sets larger than
  ``block_size`` are solved in consecutive blocks (block Gauss–Seidel).

What is exact and what is approximate:

- Exact (to float64 rounding): ``A``, ``B`` and ``R`` over all data seen; each block step's minimisation;
  the first update (no other weight is coupled yet); any point where ``R = 0``.
- Approximate: after a step, the weights of seen features that the batch did not touch but that are coupled
  to touched ones through ``A`` are not re-optimised, so ``W`` tracks the FTL solution ``A⁻¹B`` rather than
  equalling it. Each step lowers the objective (block coordinate descent on a strictly convex quadratic), so
  the gap does not accumulate; ``update`` reports it as ``ftl_residual = ‖R‖ / ‖B‖`` (0 at the FTL solution).
  ``refine_blocks`` extra block steps per update on the features with the largest residual (Gauss–Southwell)
  shrink it at a fixed extra cost; ``refine()`` drives it to zero (it converges to ``A⁻¹B``).

Targets: ``[next_obs - obs, reward]``, normalised by a shift and scale FIXED when first set (by
``fit_normalizer`` or from the first ``update`` batch): ``A`` and ``B`` are sums in the normalised spaces, so
the statistics cannot move afterwards. Inputs likewise (or from known bounds, ``input_bounds``). Scale
floors: a dimension whose standard deviation is below ``std_floor`` gets scale 1.

Threads: the dense linear algebra runs in numpy/scipy (measured 3–5× faster than torch for these float64
gathers and solves on one thread). numpy's BLAS threads are set by ``OMP_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS`` before numpy is imported; scripts pin them to 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse
import torch
from torch import Tensor

from mbrl.types import Metrics, ModelStep, TransitionBatch


@dataclass(frozen=True)
class LosseConfig:
    """Hyperparameters of :class:`LosseModel`.

    Defaults: the authors' public example uses ``L = 50, n = 5, ρ = 2`` and ``ε = 1e-5`` on ``A/count``; ours
    (``L = 64, n = 6, ρ = 2``, fixed ``λ = 1e-2``) are of that size, checked on Pendulum-v1 / HalfCheetah-v5
    streams (all-data error vs update cost). Per update with the default, a batch of ``N`` transitions
    touches at most ``min(F, N·256)`` features.

    Attributes:
        num_groups: ``L``, the number of ``ρ``-dimensional soft-binning grids (the authors' ``num_features``).
        group_dim: ``ρ``, random-projection coordinates per grid (the authors' ``bin_dim``); each grid
            activates ``2^ρ`` corners.
        num_bins: ``n``, bins per grid axis (``n+1`` vertices). ``F = L·(n+1)^ρ`` features; the dense
            ``A`` takes ``8·F²`` bytes (the default: ``F = 3136``, 79 MB).
        ridge: ``λ`` in ``A = XᵀX + λI`` (targets are normalised, so it is scale-free in the targets).
        block_size: at most this many features are solved jointly in one block step; larger touched sets
            are split into consecutive blocks.
        refine_blocks: extra block steps per update on the features with the largest residual
            (Gauss–Southwell); 0 is the paper's update alone.
        projection_scale: the projection's std is ``projection_scale / sqrt(d)`` (authors: 1).
        std_floor: a normaliser dimension whose std is below this gets scale 1.
        predict_chunk: rows encoded at once in ``predict`` / ``evaluate`` (bounds memory).
    """

    num_groups: int = 64
    group_dim: int = 2
    num_bins: int = 6
    ridge: float = 1e-2
    block_size: int = 1024
    refine_blocks: int = 0
    projection_scale: float = 1.0
    std_floor: float = 1e-6
    predict_chunk: int = 8192

    def __post_init__(self) -> None:
        for name in ("num_groups", "group_dim", "num_bins", "block_size", "predict_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"LosseConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.refine_blocks < 0:
            raise ValueError(f"LosseConfig.refine_blocks: must be >= 0, got {self.refine_blocks}")
        if not self.ridge > 0:
            raise ValueError(
                f"LosseConfig.ridge: must be > 0 (A must stay positive definite), got {self.ridge}"
            )
        if not self.projection_scale > 0:
            raise ValueError(f"LosseConfig.projection_scale: must be > 0, got {self.projection_scale}")

    @property
    def num_features(self) -> int:
        """``F = L·(n+1)^ρ``."""
        return self.num_groups * (self.num_bins + 1) ** self.group_dim

    @property
    def nnz_per_row(self) -> int:
        """``s = L·2^ρ`` non-zeros per encoded row."""
        return self.num_groups * 2**self.group_dim


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], bound: float = 2.0) -> np.ndarray:
    """Standard normal draws redrawn until inside ``[-bound, bound]``."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > bound
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > bound
    return z


class LosseEncoder:
    """The locality-sensitive sparse encoding ``x [B, d] -> (indices [B, s], values [B, s])`` (see module doc).

    Args:
        input_dim: ``d``.
        num_groups: ``L``.
        group_dim: ``ρ``.
        num_bins: ``n``.
        rng: draws the fixed projection.
        projection_scale: projection std is ``projection_scale / sqrt(d)``.
    """

    def __init__(
        self,
        input_dim: int,
        num_groups: int,
        group_dim: int,
        num_bins: int,
        rng: np.random.Generator,
        projection_scale: float = 1.0,
    ) -> None:
        if input_dim < 1:
            raise ValueError(f"LosseEncoder: input_dim must be >= 1, got {input_dim}")
        self.input_dim = input_dim
        self.num_groups = num_groups
        self.group_dim = group_dim
        self.num_bins = num_bins
        self.vertices_per_group = (num_bins + 1) ** group_dim
        self.num_features = num_groups * self.vertices_per_group
        self.nnz_per_row = num_groups * 2**group_dim
        std = projection_scale / np.sqrt(input_dim)
        self.projection = std * _truncated_normal(rng, (input_dim, num_groups * group_dim))
        # corner_bits[c, j]: bit j of corner c (corner 0 = lower-left of the cell); strides: row-major vertex id.
        corners = np.arange(2**group_dim)
        self._corner_bits = (corners[:, None] >> np.arange(group_dim - 1, -1, -1)[None, :]) & 1
        self._strides = (num_bins + 1) ** np.arange(group_dim - 1, -1, -1)
        self._group_offsets = np.arange(num_groups) * self.vertices_per_group

    def positions(self, x: np.ndarray) -> np.ndarray:
        """Grid positions ``u = n · sigmoid(x P)`` as ``[B, L, ρ]`` in ``(0, n)``."""
        z = np.asarray(x, dtype=np.float64) @ self.projection
        # sigmoid via tanh: no overflow warnings for large |z|
        u = self.num_bins * (0.5 + 0.5 * np.tanh(0.5 * z))
        return u.reshape(len(z), self.num_groups, self.group_dim)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encode rows of ``x``.

        Args:
            x: ``[B, d]`` normalised inputs.

        Returns:
            ``indices [B, L·2^ρ]`` int64 in ``[0, F)`` (distinct within a row) and ``values [B, L·2^ρ]``
            float64 in ``[0, 1]``; group ``g`` owns columns ``g·2^ρ ... (g+1)·2^ρ - 1`` and its values sum to 1.
        """
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"LosseEncoder.encode: expected x of shape [B, {self.input_dim}], got {x.shape}")
        u = self.positions(x)  # [B, L, ρ]
        # u < n for finite x, but sigmoid rounds to exactly 1 for large z: keep the cell index at most n-1.
        cell = np.minimum(np.floor(u), self.num_bins - 1)
        frac = u - cell  # [B, L, ρ] in [0, 1]
        bits = self._corner_bits  # [2^ρ, ρ]
        coords = cell[:, :, None, :].astype(np.int64) + bits[None, None]  # [B, L, 2^ρ, ρ]
        indices = (coords * self._strides).sum(-1) + self._group_offsets[None, :, None]
        f = frac[:, :, None, :]
        values = np.where(bits[None, None] == 1, f, 1.0 - f).prod(-1)  # multilinear weights [B, L, 2^ρ]
        b = len(x)
        return indices.reshape(b, -1), values.reshape(b, -1)

    def vertex_coordinates(self, indices: np.ndarray) -> np.ndarray:
        """Grid coordinates ``[..., ρ]`` (in ``0..n``) of feature ``indices`` within their group."""
        local = np.asarray(indices) % self.vertices_per_group
        return (local[..., None] // self._strides) % (self.num_bins + 1)


class FTLRegressor:
    """Ridge regression on sparse features kept at (or near) its follow-the-leader solution incrementally.

    Holds ``A = λI + XᵀX`` (dense ``[F, F]``), ``B = XᵀY``, ``W`` and the residual ``R = B - A W``
    (all float64). See the module docstring for the update, its cost and what is exact.

    Args:
        num_features: ``F``.
        out_dim: target width.
        ridge: ``λ``.
        block_size: most features per block solve.
    """

    def __init__(self, num_features: int, out_dim: int, ridge: float, block_size: int) -> None:
        self.num_features = num_features
        self.out_dim = out_dim
        self.ridge = float(ridge)
        self.block_size = block_size
        self.a = self.ridge * np.eye(num_features)
        self.b = np.zeros((num_features, out_dim))
        self.w = np.zeros((num_features, out_dim))
        self.r = np.zeros((num_features, out_dim))
        self.count = 0

    def accumulate(self, indices: np.ndarray, values: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Add a batch to ``A``, ``B`` (and ``R``); returns the sorted touched feature set ``S``.

        Args:
            indices: ``[N, s]`` feature indices.
            values: ``[N, s]`` feature values.
            targets: ``[N, out]``.
        """
        n = len(indices)
        touched, inverse = np.unique(indices, return_inverse=True)
        k = len(touched)
        rows = np.repeat(np.arange(n), indices.shape[1])
        # The batch's design matrix restricted to S, dense [N, |S|] (bincount sums duplicate indices).
        phi = np.bincount(rows * k + inverse.ravel(), weights=values.ravel(), minlength=n * k).reshape(n, k)
        d_a = phi.T @ phi
        d_b = phi.T @ targets
        self.a[np.ix_(touched, touched)] += d_a
        self.b[touched] += d_b
        # R = B - A W changes only on S: ΔR_S = ΔB_S - ΔA_SS W_S.
        self.r[touched] += d_b - d_a @ self.w[touched]
        self.count += n
        return touched

    def solve_block(self, block: np.ndarray) -> int:
        """Minimise the ridge objective exactly over ``W[block]`` with every other weight fixed.

        Returns the number of entries of ``A`` read (``|block|·F``).
        """
        rows = self.a[block]  # [k, F]; A is symmetric, so these rows are also its columns
        a_bb = rows[:, block]
        delta = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a_bb, lower=True), self.r[block])
        self.w[block] += delta
        self.r -= rows.T @ delta
        return int(rows.size)

    def solve_touched(self, touched: np.ndarray) -> int:
        """Block steps over ``touched`` in consecutive blocks of at most ``block_size``; entries of A read."""
        read = 0
        for start in range(0, len(touched), self.block_size):
            read += self.solve_block(touched[start : start + self.block_size])
        return read

    def refine(self, num_blocks: int) -> int:
        """``num_blocks`` block steps, each on the ``block_size`` features with the largest residual.

        Returns the number of entries of ``A`` read. Stops early when the residual is exactly zero.
        """
        read = 0
        for _ in range(num_blocks):
            norms = np.einsum("fo,fo->f", self.r, self.r)
            k = min(self.block_size, self.num_features)
            block = np.argpartition(norms, -k)[-k:] if k < self.num_features else np.arange(self.num_features)
            block = np.sort(block[norms[block] > 0])
            if len(block) == 0:
                break
            read += self.solve_block(block)
        return read

    def residual_norm(self) -> float:
        """``‖B - A W‖_F / ‖B‖_F`` (0 at the FTL solution; 0 before any data)."""
        b = float(np.linalg.norm(self.b))
        return float(np.linalg.norm(self.r)) / b if b > 0 else 0.0

    def predict(self, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``X W`` for sparse rows ``(indices, values)`` ``[N, s]``; returns ``[N, out]``."""
        n, s = indices.shape
        x = scipy.sparse.csr_matrix(
            (values.ravel(), indices.ravel(), np.arange(0, n * s + 1, s)), shape=(n, self.num_features)
        )
        return np.asarray(x @ self.w)


def _stats(x: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the rows of ``x``; std below ``floor`` becomes 1 (a constant dimension is not rescaled)."""
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std < floor, 1.0, std)


class LosseModel:
    """Losse-FTL world model: ``[obs, action] -> [next_obs - obs, reward]``, one FTL step per ``update``.

    Satisfies :class:`~mbrl.models.protocol.WorldModel`. Deterministic: ``predict`` ignores ``deterministic``
    and ``generator``; ``info["uncertainty"]`` is zeros. No termination head: ``terminated`` is zeros (a known
    termination function from ``envs/`` overrides it through a wrapper).

    Args:
        obs_dim: ``D``.
        action_dim: ``A``.
        config: hyperparameters.
        seed: seeds the fixed random projection.
        input_bounds: optional ``(low [D+A], high [D+A])`` of ``[obs, action]``: if given (all finite, low <
            high), inputs are normalised to ``[-1, 1]`` by these bounds instead of first-batch statistics —
            better under covariate shift, where the first batch covers one region only.
    """

    single_pass = True
    """``update`` accumulates FTL statistics: each transition must be given once (``fit()`` refuses it)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: LosseConfig | None = None,
        *,
        seed: int = 0,
        input_bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.config = config or LosseConfig()
        c = self.config
        in_dim, out_dim = self.obs_dim + self.action_dim, self.obs_dim + 1
        self.encoder = LosseEncoder(
            in_dim, c.num_groups, c.group_dim, c.num_bins, np.random.default_rng(seed), c.projection_scale
        )
        self.regressor = FTLRegressor(self.encoder.num_features, out_dim, c.ridge, c.block_size)
        self.input_shift = np.zeros(in_dim)
        self.input_scale = np.ones(in_dim)
        self.target_shift = np.zeros(out_dim)
        self.target_scale = np.ones(out_dim)
        self._inputs_set = False
        self._targets_set = False
        if input_bounds is not None:
            low = np.asarray(input_bounds[0], dtype=np.float64)
            high = np.asarray(input_bounds[1], dtype=np.float64)
            if low.shape != (in_dim,) or high.shape != (in_dim,):
                raise ValueError(
                    f"LosseModel: input_bounds must be two arrays of shape [{in_dim}] (obs_dim + action_dim), "
                    f"got {low.shape} and {high.shape}"
                )
            if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
                raise ValueError("LosseModel: input_bounds must be finite with low < high in every dimension")
            self.input_shift = (high + low) / 2
            self.input_scale = (high - low) / 2
            self._inputs_set = True

    # ----------------------------------------------------------------------------------------- normalisation
    def _check(self, obs: Tensor, action: Tensor, where: str) -> None:
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"LosseModel.{where}: obs must be [B, {self.obs_dim}], got {tuple(obs.shape)}")
        if action.ndim != 2 or action.shape[1] != self.action_dim or len(action) != len(obs):
            raise ValueError(
                f"LosseModel.{where}: action must be [{len(obs)}, {self.action_dim}], got {tuple(action.shape)}"
            )

    @staticmethod
    def _batch_arrays(batch: TransitionBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(inputs [B, D+A], targets [B, D+1], obs [B, D])`` as float64 numpy."""
        obs = batch.obs.detach().cpu().numpy().astype(np.float64)
        action = batch.action.detach().cpu().numpy().astype(np.float64)
        next_obs = batch.next_obs.detach().cpu().numpy().astype(np.float64)
        reward = batch.reward.detach().cpu().numpy().astype(np.float64)
        inputs = np.concatenate([obs, action], 1)
        targets = np.concatenate([next_obs - obs, reward[:, None]], 1)
        return inputs, targets, obs

    def fit_normalizer(self, batch: TransitionBatch) -> bool:
        """Set the input (unless ``input_bounds`` were given) and target statistics from ``batch``, once.

        ``A`` and ``B`` are sums in the normalised spaces, so the statistics are frozen once set (here or by
        the first ``update``); later calls change nothing and return ``False``.
        """
        self._check(batch.obs, batch.action, "fit_normalizer")
        inputs, targets, _ = self._batch_arrays(batch)
        if not (np.isfinite(inputs).all() and np.isfinite(targets).all()):
            raise ValueError("LosseModel.fit_normalizer: batch holds non-finite values")
        changed = False
        if not self._inputs_set:
            self.input_shift, self.input_scale = _stats(inputs, self.config.std_floor)
            self._inputs_set = changed = True
        if not self._targets_set:
            self.target_shift, self.target_scale = _stats(targets, self.config.std_floor)
            self._targets_set = changed = True
        return changed

    def _encode(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder.encode((inputs - self.input_shift) / self.input_scale)

    def _predict_normalised(self, inputs: np.ndarray) -> np.ndarray:
        chunk = self.config.predict_chunk
        out = np.empty((len(inputs), self.regressor.out_dim))
        for start in range(0, len(inputs), chunk):
            idx, val = self._encode(inputs[start : start + chunk])
            out[start : start + chunk] = self.regressor.predict(idx, val)
        return out

    # ------------------------------------------------------------------------------------------- protocol
    def predict(
        self,
        obs: Tensor,
        action: Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelStep:
        """Predict one step.

        Args:
            obs: ``[B, D]``.
            action: ``[B, A]`` in env units.
            deterministic: ignored (the model is deterministic).
            generator: ignored.

        Returns:
            ``ModelStep`` with float32 ``next_obs [B, D]``, ``reward [B]``, ``terminated [B]`` (zeros) and
            ``info["uncertainty"] [B]`` (zeros), on ``obs``'s device.
        """
        self._check(obs, action, "predict")
        o = obs.detach().cpu().numpy().astype(np.float64)
        a = action.detach().cpu().numpy().astype(np.float64)
        y = self._predict_normalised(np.concatenate([o, a], 1)) * self.target_scale + self.target_shift
        next_obs = torch.as_tensor(o + y[:, : self.obs_dim], dtype=torch.float32, device=obs.device)
        reward = torch.as_tensor(y[:, self.obs_dim], dtype=torch.float32, device=obs.device)
        zeros = torch.zeros(len(o), dtype=torch.float32, device=obs.device)
        return ModelStep(next_obs, reward, zeros, {"uncertainty": zeros.clone()})

    def update(self, batch: TransitionBatch) -> Metrics:
        """One incremental FTL step on the new transitions ``batch`` (each transition is used once, ever).

        Returns:
            ``touched_features`` (``|S|``), ``touched_entries`` (entries of ``A`` written and read:
            ``|S|² + reads of the block solves``), ``prequential_loss`` (normalised target MSE on ``batch``
            BEFORE learning from it), ``ftl_residual`` (``‖B - AW‖/‖B‖`` after the step), ``num_samples``
            (seen so far) and ``seconds`` (wall-clock of the step).
        """
        start = time.perf_counter()
        self._check(batch.obs, batch.action, "update")
        if len(batch) == 0:
            raise ValueError("LosseModel.update: empty batch")
        self.fit_normalizer(batch)  # no-op once the statistics are set
        inputs, targets, _ = self._batch_arrays(batch)
        if not (np.isfinite(inputs).all() and np.isfinite(targets).all()):
            raise ValueError("LosseModel.update: batch holds non-finite values")
        idx, val = self._encode(inputs)
        y = (targets - self.target_shift) / self.target_scale
        prequential = float(np.mean((self.regressor.predict(idx, val) - y) ** 2))
        reg = self.regressor
        touched = reg.accumulate(idx, val, y)
        entries = len(touched) ** 2 + reg.solve_touched(touched)
        if self.config.refine_blocks:
            entries += reg.refine(self.config.refine_blocks)
        return {
            "touched_features": float(len(touched)),
            "touched_entries": float(entries),
            "prequential_loss": prequential,
            "ftl_residual": reg.residual_norm(),
            "num_samples": float(reg.count),
            "seconds": time.perf_counter() - start,
        }

    def refine(self, num_blocks: int) -> Metrics:
        """Extra block steps towards the exact FTL solution (see :meth:`FTLRegressor.refine`)."""
        entries = self.regressor.refine(num_blocks)
        return {"touched_entries": float(entries), "ftl_residual": self.regressor.residual_norm()}

    def evaluate(self, batch: TransitionBatch) -> Metrics:
        """Holdout metrics: ``loss`` (MSE of the normalised ``[Δobs, reward]`` targets), ``mse`` (next_obs
        MSE in env units) and ``reward_mse``."""
        self._check(batch.obs, batch.action, "evaluate")
        inputs, targets, _ = self._batch_arrays(batch)
        pred = self._predict_normalised(inputs)
        y = (targets - self.target_shift) / self.target_scale
        raw = pred * self.target_scale + self.target_shift
        return {
            "loss": float(np.mean((pred - y) ** 2)),
            "mse": float(np.mean((raw[:, : self.obs_dim] - targets[:, : self.obs_dim]) ** 2)),
            "reward_mse": float(np.mean((raw[:, self.obs_dim] - targets[:, self.obs_dim]) ** 2)),
        }

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only. ``XᵀX`` (without ``λ``) is stored as its upper triangle in COO form:
        ``xtx_index [2, nnz]`` int64 and ``xtx_value [nnz]`` float64."""
        reg = self.regressor
        xtx = reg.a - reg.ridge * np.eye(reg.num_features)
        rows, cols = np.nonzero(np.triu(xtx))
        t = torch.from_numpy
        return {
            "projection": t(self.encoder.projection.copy()),
            "input_shift": t(self.input_shift.copy()),
            "input_scale": t(self.input_scale.copy()),
            "target_shift": t(self.target_shift.copy()),
            "target_scale": t(self.target_scale.copy()),
            "normalizer_set": torch.tensor([self._inputs_set, self._targets_set]),
            "xtx_index": t(np.stack([rows, cols]).astype(np.int64)),
            "xtx_value": t(xtx[rows, cols].copy()),
            "xty": t(reg.b.copy()),
            "weight": t(reg.w.copy()),
            "residual": t(reg.r.copy()),
            "count": torch.tensor(reg.count, dtype=torch.int64),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (shapes must match this model's config and dims)."""
        reg = self.regressor
        f, out, in_dim = reg.num_features, reg.out_dim, self.obs_dim + self.action_dim
        expected = {
            "projection": (in_dim, self.encoder.projection.shape[1]),
            "input_shift": (in_dim,),
            "input_scale": (in_dim,),
            "target_shift": (out,),
            "target_scale": (out,),
            "normalizer_set": (2,),
            "xty": (f, out),
            "weight": (f, out),
            "residual": (f, out),
            "count": (),
        }
        for key, shape in expected.items():
            if key not in state_dict:
                raise KeyError(f"LosseModel.load_state_dict: missing key {key!r}")
            if tuple(state_dict[key].shape) != shape:
                raise ValueError(
                    f"LosseModel.load_state_dict: {key!r} has shape {tuple(state_dict[key].shape)}, expected "
                    f"{shape} (different config or dims?)"
                )
        for key in ("xtx_index", "xtx_value"):
            if key not in state_dict:
                raise KeyError(f"LosseModel.load_state_dict: missing key {key!r}")
        index = state_dict["xtx_index"].cpu().numpy().astype(np.int64)
        value = state_dict["xtx_value"].cpu().numpy().astype(np.float64)
        if index.ndim != 2 or index.shape[0] != 2 or index.shape[1] != value.shape[0]:
            raise ValueError(
                "LosseModel.load_state_dict: 'xtx_index' must be [2, nnz] matching 'xtx_value' [nnz]"
            )
        if index.size and (index.min() < 0 or index.max() >= f):
            raise ValueError(f"LosseModel.load_state_dict: 'xtx_index' holds indices outside [0, {f})")

        def arr(key: str) -> np.ndarray:
            return np.array(state_dict[key].cpu().numpy(), dtype=np.float64)

        self.encoder.projection = arr("projection")
        self.input_shift, self.input_scale = arr("input_shift"), arr("input_scale")
        self.target_shift, self.target_scale = arr("target_shift"), arr("target_scale")
        flags = state_dict["normalizer_set"].cpu().numpy()
        self._inputs_set, self._targets_set = bool(flags[0]), bool(flags[1])
        a = np.zeros((f, f))
        a[index[0], index[1]] = value
        a = a + np.triu(a, 1).T + reg.ridge * np.eye(f)
        reg.a = a
        reg.b, reg.w, reg.r = arr("xty"), arr("weight"), arr("residual")
        reg.count = int(state_dict["count"])
