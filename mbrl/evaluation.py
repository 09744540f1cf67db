"""Policy evaluation and the D4RL-style normalized score."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from mbrl.utils import atomic_write

# D4RL's published reference returns (random policy, expert policy), from d4rl/infos.py.
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


@dataclass(frozen=True)
class EvalResult:
    """Returns of ``episodes`` evaluation episodes."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def return_mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def return_std(self) -> float:
        return float(np.std(self.returns))

    def as_dict(self) -> dict[str, float]:
        return {
            "return_mean": self.return_mean,
            "return_std": self.return_std,
            "length_mean": float(np.mean(self.lengths)),
            "episodes": float(len(self.returns)),
        }


def evaluate_policy(
    env: gym.Env,
    act: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    *,
    seed: int,
) -> EvalResult:
    """Run ``episodes`` full episodes of ``act`` (obs ``[D]`` -> env-unit action ``[A]``) in ``env``.

    Episode ``i`` is reset with seed ``seed + i``, so evaluations are reproducible and independent of
    the training env's RNG.
    """
    if episodes < 1:
        raise ValueError(f"evaluate_policy: episodes must be >= 1, got {episodes}")
    returns: list[float] = []
    lengths: list[int] = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, length = 0.0, 0
        while True:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            length += 1
            if terminated or truncated:
                break
        returns.append(total)
        lengths.append(length)
    return EvalResult(tuple(returns), tuple(lengths))


def reference_scores(
    env_id: str | None = None,
    metadata: Mapping[str, object] | None = None,
    *,
    ref_min: float | None = None,
    ref_max: float | None = None,
) -> tuple[float, float] | None:
    """Reference (random, expert) returns; see :func:`resolve_reference_scores` for the order."""
    return resolve_reference_scores(env_id, metadata, ref_min=ref_min, ref_max=ref_max)[0]


def resolve_reference_scores(
    env_id: str | None = None,
    metadata: Mapping[str, object] | None = None,
    *,
    ref_min: float | None = None,
    ref_max: float | None = None,
) -> tuple[tuple[float, float] | None, str]:
    """Reference (random, expert) returns and where they came from, in this order:

    1. ``"command line"``: ``ref_min`` and ``ref_max`` given explicitly;
    2. ``"dataset metadata"``: ``ref_min_score`` / ``ref_max_score`` in the dataset's metadata (every dataset
       ``mbrl dataset make`` writes, and Minari's own, carry them);
    3. ``"D4RL constants"``: D4RL's published constants for the env (hopper, halfcheetah, walker2d, ant, ...),
       for any dataset of such an env *without* metadata scores. Chosen so that a D4RL HDF5 file, which carries
       no scores, gets D4RL's normalised score; a user's own dataset of such an env without scores gets it too,
       and the source says so (pass both explicitly to use other references);
    4. ``"none"``: no references known (``None``).
    """
    if ref_min is not None and ref_max is not None:
        return (float(ref_min), float(ref_max)), "command line"
    meta = dict(metadata or {})
    if "ref_min_score" in meta and "ref_max_score" in meta:
        return (float(meta["ref_min_score"]), float(meta["ref_max_score"])), "dataset metadata"  # type: ignore[arg-type]
    if env_id is not None:
        key = env_id.lower().split("-")[0].split("/")[-1]
        if key in D4RL_REF_SCORES:
            return D4RL_REF_SCORES[key], "D4RL constants"
    return None, "none"


def normalized_score(episode_return: float | np.ndarray, ref_min: float, ref_max: float) -> float | np.ndarray:
    """D4RL normalized score: ``100 * (R - ref_min) / (ref_max - ref_min)``."""
    if ref_max == ref_min:
        raise ValueError(f"normalized_score: ref_max == ref_min == {ref_min}; scores cannot be normalized")
    return 100.0 * (episode_return - ref_min) / (ref_max - ref_min)


def record_episodes(
    env: gym.Env, policy: Callable[[np.ndarray], np.ndarray], episodes: int = 1, seed: int = 0
) -> tuple[list[np.ndarray], EvalResult]:
    """:func:`evaluate_policy` on an ``rgb_array`` env, keeping every frame (gymnasium's ``RenderCollection``:
    the reset's and each step's); returns ``(frames [H, W, 3] uint8, the evaluation)``."""
    if env.render_mode != "rgb_array":
        raise ValueError(f"record_episodes: the env must be made with render_mode='rgb_array', got {env.render_mode!r}")
    recorder = gym.wrappers.RenderCollection(env, reset_clean=False)
    result = evaluate_policy(recorder, policy, episodes, seed=seed)
    return [np.asarray(frame) for frame in recorder.render()], result  # type: ignore[union-attr]


def write_mp4(frames: list[np.ndarray], path: str | Path, fps: int) -> Path:
    """Write ``frames`` as an H.264 MP4 (imageio + its bundled ffmpeg), atomically (temp file, then rename)."""
    import imageio.v2 as imageio

    return atomic_write(path, lambda tmp: imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1))  # type: ignore[arg-type]

