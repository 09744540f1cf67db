"""Labelled / unlabelled splits of an offline dataset for semi-supervised offline RL.

Follows the data setup of SS-ORL (Zheng, Henaff, Amos & Grover, "Semi-Supervised Offline Reinforcement
Learning with Action-Free Trajectories", ICML 2023): a fraction ``p`` of all trajectories keeps its actions,
and those trajectories are drawn from a return quantile of the dataset (the paper's headline setting: 10 % of
the trajectories, drawn from those in the lowest 50 % of returns, i.e. highly suboptimal labelled data);
every other trajectory loses its actions (states, rewards, terminals and timeouts only).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mbrl.data.dataset import OfflineDataset
from mbrl.data.validate import DatasetError

Selection = Literal["low-return", "uniform"]


def labelled_episode_indices(
    returns: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    *,
    selection: Selection = "low-return",
    return_quantile: float = 0.5,
) -> np.ndarray:
    """Which episodes keep their actions.

    Args:
        returns: ``[n_episodes]`` episode returns.
        fraction: ``p``: ``round(p * n_episodes)`` episodes (at least 1, at most ``n_episodes - 1``) are labelled.
        rng: draws the episodes (uniformly, without replacement, from the pool).
        selection: ``"low-return"``: the pool is the ``ceil(return_quantile * n_episodes)`` episodes of lowest
            return (ties broken by episode order); ``"uniform"``: the pool is every episode.
        return_quantile: ``q`` of ``"low-return"`` (0.5 = the lower half, as in the paper).

    Returns:
        ``[k]`` sorted int64 episode indices.

    Raises:
        ValueError: bad ``fraction``/``return_quantile``/``selection``, fewer than 2 episodes, or a pool smaller
            than the number of episodes to label.
    """
    n = len(returns)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"labelled fraction must be in (0, 1), got {fraction}")
    if not 0.0 < return_quantile <= 1.0:
        raise ValueError(f"return_quantile must be in (0, 1], got {return_quantile}")
    if n < 2:
        raise ValueError(f"a labelled/unlabelled split needs at least 2 episodes, found {n}")
    k = min(max(round(fraction * n), 1), n - 1)
    if selection == "uniform":
        pool = np.arange(n)
    elif selection == "low-return":
        size = int(np.ceil(return_quantile * n))
        # stable sort: equal returns keep episode order, so the pool is a deterministic function of the data
        pool = np.argsort(np.asarray(returns, dtype=np.float64), kind="stable")[:size]
    else:
        raise ValueError(f"selection must be 'low-return' or 'uniform', got {selection!r}")
    if k > len(pool):
        raise ValueError(
            f"cannot label {k} episodes ({fraction:.0%} of {n}) from a pool of {len(pool)} "
            f"(lowest {return_quantile:.0%} of returns); raise return_quantile or lower the fraction"
        )
    return np.sort(rng.choice(pool, size=k, replace=False)).astype(np.int64)


def split_labelled(
    dataset: OfflineDataset,
    fraction: float,
    rng: np.random.Generator,
    *,
    selection: Selection = "low-return",
    return_quantile: float = 0.5,
) -> tuple[OfflineDataset, OfflineDataset]:
    """Split whole episodes into ``(labelled, unlabelled)``; the unlabelled part is action-free.

    See :func:`labelled_episode_indices` for the arguments. Both parts keep the original episode order.

    Raises:
        DatasetError: ``dataset`` has no actions.
        ValueError: see :func:`labelled_episode_indices`.
    """
    if not dataset.has_actions:
        raise DatasetError(f"{dataset.source}: cannot split an action-free dataset into labelled/unlabelled")
    returns = dataset.episode_returns()
    idx = labelled_episode_indices(returns, fraction, rng, selection=selection, return_quantile=return_quantile)
    rest = np.setdiff1d(np.arange(len(returns)), idx)
    return dataset.subset_episodes(idx), dataset.subset_episodes(rest).without_actions()
