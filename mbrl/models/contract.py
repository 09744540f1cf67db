"""The WorldModel contract as executable checks: run them on your own model class.

Example::

    from mbrl.models.contract import check_world_model

    check_world_model(lambda: MyModel(obs_dim=11, action_dim=3))

``check_world_model`` raises :class:`ContractError` (an ``AssertionError``) whose message names the model,
the method and what was expected. It checks, on a synthetic batch (or one you pass):

* ``obs_dim`` / ``action_dim`` are positive ints;
* ``predict``: ``next_obs [B, D]``, ``reward [B]``, ``terminated [B]`` float32 (0/1), finite; no grad
  required; ``info`` values are tensors, ``"uncertainty"`` is ``[B]`` and non-negative, ``"members"`` is
  ``[E, B, D]``; ``deterministic=True`` repeats exactly;
* sampling: the same generator seed gives the same sample; a different seed a different one (for a model
  declared or detected stochastic);
* ``update`` returns finite float metrics; ``evaluate`` returns finite ``"loss"`` and ``"mse"``;
* ``state_dict`` survives ``torch.save`` -> ``torch.load(weights_only=True)`` (tensors and plain data only)
  and loading it into a fresh model from ``factory`` gives identical predictions (deterministic and sampled
  with the same seed);
* for an ``Ensemble``: ``num_members``, ``elites`` in range, ``predict_members`` shapes.

From a shell, on a model defined anywhere (a module or a ``.py`` file; the attribute is a zero-argument
factory or class)::

    mbrl model check my_package.my_module:make_model
    mbrl model check path/to/my_model.py:make_model --env InvertedPendulum-v5

prints ``PASS ...`` (exit 0) or ``FAIL <model>.<method>: <what was expected>`` (exit 1).

At run time, :func:`rollout <mbrl.rollouts.rollout>` calls :func:`require_world_model` and
:func:`validate_step` on the first step of every call, so a model that lacks a method or returns a wrongly
shaped ``ModelStep`` fails there with the same kind of message (NaN rows are dropped and counted there, by
design; ``check_world_model`` reports them).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mbrl.models.protocol import Ensemble, WorldModel
from mbrl.types import ModelStep, TransitionBatch


class ContractError(AssertionError):
    """A model broke the WorldModel contract; the message names the model, method and expectation."""


def synthetic_batch(obs_dim: int, action_dim: int, n: int = 64, *, seed: int = 0) -> TransitionBatch:
    """A smooth random-but-learnable batch: ``next_obs = obs + 0.1 * tanh(obs @ W + action @ V)``."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    action = torch.rand(n, action_dim, generator=g) * 2 - 1
    w = torch.randn(obs_dim, obs_dim, generator=g) / math.sqrt(obs_dim)
    v = torch.randn(action_dim, obs_dim, generator=g) / math.sqrt(action_dim)
    next_obs = obs + 0.1 * torch.tanh(obs @ w + action @ v)
    reward = obs[:, 0] - 0.1 * (action**2).sum(1)
    zeros = torch.zeros(n)
    return TransitionBatch(obs, action, reward, next_obs, zeros, zeros.clone())


def _fail(name: str, method: str, expected: str) -> ContractError:
    return ContractError(f"{name}.{method}: {expected}")


_METHODS = ("predict", "update", "evaluate", "state_dict", "load_state_dict")
_PREDICT_SIGNATURE = "predict(obs [B, D], action [B, A], *, deterministic: bool = False, generator: torch.Generator | None = None) -> ModelStep"


def require_world_model(model: object, *, name: str | None = None) -> None:
    """Raise :class:`ContractError` naming every missing ``WorldModel`` member of ``model``.

    Cheap (attribute look-ups only); ``rollout`` calls it once per call.
    """
    name = name or type(model).__name__
    for attr in ("obs_dim", "action_dim"):
        value = getattr(model, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(name, attr, f"expected a positive int attribute (WorldModel protocol), got {value!r}")
    missing = [m for m in _METHODS if not callable(getattr(model, m, None))]
    if missing:
        raise _fail(
            name, missing[0], f"expected method(s) {', '.join(missing)} (WorldModel protocol: {', '.join(_METHODS)})"
        )


def validate_step(model: object, step: object, obs: Tensor, *, method: str = "predict") -> ModelStep:
    """Check the structure of one ``predict`` output at run time: types, shapes, floating dtypes, info shapes.

    Values are not checked (no NaN test, no device sync), so this is cheap enough to call on the first step of
    every rollout. ``check_world_model`` does the full check.

    Args:
        model: the model that produced ``step`` (its class names the error).
        step: what ``predict`` returned.
        obs: the ``[B, D]`` observations it was called on.
        method: the method name for the message.

    Raises:
        ContractError: e.g. ``"MyModel.predict: expected reward of shape [256], got [256, 1]"``.
    """
    name = type(model).__name__
    n, d = int(obs.shape[0]), int(obs.shape[1])
    if not isinstance(step, ModelStep):
        raise _fail(name, method, f"expected a mbrl.types.ModelStep, got {type(step).__name__}")
    for field, shape in (("next_obs", (n, d)), ("reward", (n,)), ("terminated", (n,))):
        value = getattr(step, field)
        if not isinstance(value, Tensor):
            raise _fail(name, method, f"expected {field} to be a torch.Tensor, got {type(value).__name__}")
        if tuple(value.shape) != shape:
            raise _fail(name, method, f"expected {field} of shape {list(shape)}, got {list(value.shape)}")
        if not value.dtype.is_floating_point:
            raise _fail(name, method, f"expected {field} to be a float tensor (float32), got {value.dtype}")
    if not isinstance(step.info, Mapping):
        raise _fail(name, method, f"expected info to be a mapping of tensors, got {type(step.info).__name__}")
    unc = step.info.get("uncertainty")
    if unc is not None and (not isinstance(unc, Tensor) or tuple(unc.shape) != (n,)):
        got = list(unc.shape) if isinstance(unc, Tensor) else type(unc).__name__
        raise _fail(name, method, f"expected info['uncertainty'] of shape [{n}], got {got}")
    members = step.info.get("members")
    if members is not None and (
        not isinstance(members, Tensor) or members.ndim != 3 or tuple(members.shape[1:]) != (n, d)
    ):
        got = list(members.shape) if isinstance(members, Tensor) else type(members).__name__
        raise _fail(name, method, f"expected info['members'] of shape [E, {n}, {d}], got {got}")
    return step


def _check_step(name: str, step: Any, n: int, obs_dim: int, method: str) -> ModelStep:
    if not isinstance(step, ModelStep):
        raise _fail(name, method, f"expected a ModelStep, got {type(step).__name__}")
    for field, shape in (("next_obs", (n, obs_dim)), ("reward", (n,)), ("terminated", (n,))):
        value = getattr(step, field)
        if not isinstance(value, Tensor):
            raise _fail(name, method, f"expected {field} to be a torch.Tensor, got {type(value).__name__}")
        if tuple(value.shape) != shape:
            raise _fail(name, method, f"expected {field} of shape {list(shape)}, got {list(value.shape)}")
        if value.dtype != torch.float32:
            raise _fail(name, method, f"expected {field} float32 for float32 inputs, got {value.dtype}")
        if value.requires_grad:
            raise _fail(name, method, f"expected {field} not to require grad (predict must not build a graph)")
        if not bool(torch.isfinite(value).all()):
            raise _fail(name, method, f"expected finite {field} for in-distribution inputs, found NaN/Inf")
    term = step.terminated
    if not bool(((term == 0) | (term == 1)).all()):
        raise _fail(name, method, "expected terminated to hold only 0.0 / 1.0")
    if not isinstance(step.info, Mapping):
        raise _fail(name, method, f"expected info to be a mapping, got {type(step.info).__name__}")
    for key, value in step.info.items():
        if not isinstance(value, Tensor):
            raise _fail(name, method, f"expected info[{key!r}] to be a tensor, got {type(value).__name__}")
    if "uncertainty" in step.info:
        u = step.info["uncertainty"]
        if tuple(u.shape) != (n,):
            raise _fail(name, method, f"expected info['uncertainty'] of shape [{n}], got {list(u.shape)}")
        if not bool((u >= 0).all()):
            raise _fail(name, method, "expected info['uncertainty'] >= 0")
    if "members" in step.info:
        m = step.info["members"]
        if m.ndim != 3 or tuple(m.shape[1:]) != (n, obs_dim):
            raise _fail(name, method, f"expected info['members'] of shape [E, {n}, {obs_dim}], got {list(m.shape)}")
    return step


def _same(a: ModelStep, b: ModelStep) -> bool:
    return all(
        torch.equal(getattr(a, f).cpu(), getattr(b, f).cpu()) for f in ("next_obs", "reward", "terminated")
    )


def _finite_metrics(name: str, method: str, metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise _fail(name, method, f"expected a dict[str, float] of metrics, got {type(metrics).__name__}")
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise _fail(name, method, f"expected str metric keys, got {key!r}")
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise _fail(name, method, f"expected metric {key!r} to be a float, got {type(value).__name__}")
        if not math.isfinite(value):
            raise _fail(name, method, f"expected metric {key!r} to be finite, got {value}")
    return dict(metrics)


def check_world_model(
    factory: Callable[[], WorldModel],
    *,
    name: str | None = None,
    batch: TransitionBatch | None = None,
    stochastic: bool | None = None,
    n_updates: int = 3,
    seed: int = 0,
) -> None:
    """Check that the models ``factory`` builds meet the :class:`~mbrl.models.protocol.WorldModel` contract.

    Args:
        factory: builds a fresh, identically configured model (called twice: a model and a target for
            ``load_state_dict``).
        name: used in error messages (default: the class name).
        batch: the data to predict on / update with (default: :func:`synthetic_batch` of the model's dims).
            Pass real data for models that need in-distribution inputs (e.g. a simulator).
        stochastic: ``True``: sampled predictions must depend on the generator seed; ``False``: must not;
            ``None``: either (detected).
        n_updates: ``update`` calls made (weights change before the save/load check).
        seed: generator seed used for sampled predictions.

    Raises:
        ContractError: the first broken rule, e.g. ``"MyModel.predict: expected reward of shape [64], got [64, 1]"``.
    """
    model = factory()
    name = name or type(model).__name__
    require_world_model(model, name=name)
    d, a = model.obs_dim, model.action_dim
    if batch is None:
        batch = synthetic_batch(d, a, seed=seed)
    if batch.obs_dim != d or batch.action_dim != a:
        raise _fail(name, "check_world_model", f"batch dims ({batch.obs_dim}, {batch.action_dim}) != model ({d}, {a})")
    n = len(batch)

    fit_normalizer = getattr(model, "fit_normalizer", None)
    if callable(fit_normalizer):
        fit_normalizer(batch)
    for _ in range(n_updates):
        _finite_metrics(name, "update", model.update(batch))
    metrics = _finite_metrics(name, "evaluate", model.evaluate(batch))
    for key in ("loss", "mse"):
        if key not in metrics:
            raise _fail(name, "evaluate", f"expected key {key!r} in the metrics, got {sorted(metrics)}")

    def call_predict(m: WorldModel, **kwargs: Any) -> ModelStep:
        try:
            return m.predict(batch.obs, batch.action, **kwargs)
        except TypeError as exc:  # a signature that does not take the keywords agents pass
            raise _fail(name, "predict", f"expected the signature {_PREDICT_SIGNATURE} (TypeError: {exc})") from exc

    def sample(m: WorldModel, s: int) -> ModelStep:
        return call_predict(m, deterministic=False, generator=torch.Generator().manual_seed(s))

    det = _check_step(name, call_predict(model, deterministic=True), n, d, "predict")
    det2 = model.predict(batch.obs, batch.action, deterministic=True)
    if not _same(det, det2):
        raise _fail(name, "predict", "expected deterministic=True to give identical outputs on repeated calls")
    s1 = _check_step(name, sample(model, seed), n, d, "predict")
    if not _same(s1, sample(model, seed)):
        raise _fail(name, "predict", "expected the same generator seed to give the same sample")
    differs = not _same(s1, sample(model, seed + 1))
    if stochastic is True and not differs:
        raise _fail(name, "predict", "expected a different generator seed to give a different sample (stochastic)")
    if stochastic is False and differs:
        raise _fail(name, "predict", "expected samples not to depend on the generator (declared deterministic)")

    if isinstance(model, Ensemble):
        e = model.num_members
        elites = list(model.elites)
        if not elites or any(not 0 <= int(i) < e for i in elites):
            raise _fail(name, "elites", f"expected indices in [0, {e}), got {elites}")
        mean, logvar = model.predict_members(batch.obs, batch.action)
        for label, t in (("mean", mean), ("logvar", logvar)):
            if tuple(t.shape) != (e, n, d + 1):
                raise _fail(name, "predict_members", f"expected {label} of shape [{e}, {n}, {d + 1}], got {list(t.shape)}")
        members = det.info.get("members")
        if members is not None and members.shape[0] != e:
            raise _fail(name, "predict", f"expected info['members'] with E={e} rows, got {members.shape[0]}")

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as exc:  # what the weights-only unpickler refuses: pickled objects
        raise _fail(name, "state_dict", f"expected tensors and plain data only (weights_only load failed: {exc})") from None
    fresh = factory()
    fresh.load_state_dict(state)
    if not _same(det, fresh.predict(batch.obs, batch.action, deterministic=True)):
        raise _fail(name, "load_state_dict", "expected identical deterministic predictions after save -> load")
    if not _same(s1, sample(fresh, seed)):
        raise _fail(name, "load_state_dict", "expected identical samples (same seed) after save -> load")


# ------------------------------------------------------------------------------------------------ from a shell
def load_factory(target: str) -> Callable[[], WorldModel]:
    """Resolve ``"module.path:attr"`` or ``"path/to/file.py:attr"`` to a zero-argument model factory.

    ``attr`` is a function or a class that builds a model with no arguments.

    Raises:
        ValueError: the target is malformed, the module or file cannot be imported, or ``attr`` is missing or
            not callable (the message names which).
    """
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model factory {target!r}: expected 'module:factory' or 'file.py:factory'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise FileNotFoundError(f"model factory {target!r}: no file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"model factory {target!r}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"model factory {target!r}: cannot import module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model factory {target!r}: {module_name} has no callable {attr!r} (expected a zero-argument factory or class)")
    return factory  # type: ignore[no-any-return]


def env_batch(env_id: str, n: int = 64, *, seed: int = 0) -> TransitionBatch:
    """``n`` real transitions of ``env_id`` under uniformly random actions (resetting at episode ends)."""
    import numpy as np

    from mbrl.gym_env import make_seeded

    env = make_seeded(env_id, seed=seed)
    rng = np.random.default_rng(seed)
    space: Any = env.action_space
    rows: list[tuple[Any, ...]] = []
    obs, _ = env.reset(seed=seed)
    while len(rows) < n:
        action = rng.uniform(space.low, space.high).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, reward, next_obs, terminated, truncated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    o, a, r, o2, term, trunc = (np.array([row[i] for row in rows]) for i in range(6))
    return TransitionBatch.from_numpy(o, a, r, o2, term, trunc)


def check_command(
    target: str, /, env: str | None = None, samples: int = 64, stochastic: bool | None = None, seed: int = 0
) -> int:
    """Run the WorldModel contract checks on your model: prints PASS or the first broken rule.

    Args:
        target: ``module.path:factory`` or ``path/to/file.py:factory`` (a zero-argument function or class).
        env: check on ``samples`` real transitions of this env (random actions) instead of a synthetic batch.
        samples: rows in the check batch.
        stochastic: require (True) or forbid (False) generator-dependent samples; default: either.
        seed: seed of the batch and of the sampling generators.
    """
    factory = load_factory(target)
    try:
        probe = factory()
    except Exception as exc:  # the factory itself is broken, not the model: a usage error
        raise ValueError(
            f"model factory {target!r}: calling it with no arguments failed ({type(exc).__name__}: {exc})"
        ) from exc
    batch = env_batch(env, samples, seed=seed) if env is not None else None
    try:
        require_world_model(probe)
        if batch is None:
            batch = synthetic_batch(probe.obs_dim, probe.action_dim, n=samples, seed=seed)
        check_world_model(factory, batch=batch, stochastic=stochastic, seed=seed)
    except ContractError as exc:
        print(f"FAIL {exc}")
        return 1
    print(f"PASS {target}: meets the WorldModel contract (mbrl.models.contract)")
    return 0
