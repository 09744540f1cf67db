"""mbrl-toolkit: model-based reinforcement learning (world models, Dyna/MBPO, offline RAVL/MOPO, planners).

``mbrl.load(run_dir)`` returns the trained agent of any ``mbrl train`` run, with SB3's
``predict(obs, deterministic=True)``.
"""

from __future__ import annotations

from typing import Any


def load(run_dir: Any, *, device: str | None = None) -> Any:
    """The agent of ``run_dir`` at its latest checkpoint (see ``mbrl.agents.loading.load``); ``.predict(obs)`` acts.

    The one entry point of the core that reaches the agents layer, lazily (as the ``mbrl`` command does).
    """
    from mbrl.agents.loading import load as load_run

    return load_run(run_dir, device=device)
