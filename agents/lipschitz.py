"""MBPO-style Dyna with ONE dynamics model and a Lipschitz-regularised critic.

Zheng, Wang, Xu and Huang, "Is Model Ensemble Necessary? Model-based RL via a Single Model with Lipschitz
Regularized Value Function" (ICLR 2023): the gap between the Bellman operators induced by a learned and by the
true dynamics is bounded by the value function's Lipschitz constant times the model error, so the benefit of a
probabilistic ensemble can be obtained by regularising the critic's Lipschitz constant directly, with a single
model. The paper's two mechanisms act on the value function only (its abstract: "computing the adversarial
noise and regularizing the value network's spectral norm"); here they are:

1. spectral normalisation of critic layers (Miyato et al. 2018), which bounds each layer's Lipschitz constant;
2. adversarial perturbation of the critic's state input inside an epsilon ball (a few projected-gradient
   steps), with an extra TD loss on the perturbed inputs (the loss form is this toolkit's: the paper's method
   section was not available, see :class:`LipschitzConfig` for what is and is not from the paper).

Both are options of :class:`mbrl.rl.sac.SACConfig` (``critic_spectral_norm_layers``, ``adv_*``);
:class:`LipschitzConfig` holds this agent's defaults and writes them into a SAC config. There is no separate
training loop: the agent is :class:`mbrl.agents.dyna.DynaAgent` with the config of :func:`lipschitz_preset` and the
:class:`LipschitzDiagnostics` refit hook, which logs ``train/critic_lipschitz`` and, where the toolkit has the
true dynamics (Hopper, HalfCheetah, Walker2d), ``model/bellman_gap``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from mbrl.agents.commands import run_online
from mbrl.agents.dyna import DynaAgent, DynaConfig, dyna_preset
from mbrl.cli import ConfigCommand, RunOptions
from mbrl.models.protocol import WorldModel
from mbrl.models.true_dynamics import SUPPORTED as TRUE_DYNAMICS_ENVS
from mbrl.models.true_dynamics import TrueDynamicsModel
from mbrl.rl.lipschitz import bellman_gap, critic_lipschitz_estimate
from mbrl.rl.sac import SACConfig
from mbrl.types import Metrics


@dataclass(frozen=True)
class LipschitzConfig:
    """The critic regulariser of Zheng et al. (ICLR 2023), written into a :class:`SACConfig` by :meth:`apply`.

    Provenance (checked again for this version): the paper's abstract (ICLR 2023 text copy, OpenReview
    ``hNyJBk3CwR``, arXiv 2302.01244) and its project page (ruijiezheng.com/project/mbrl_lipschitz) were
    retrieved; its method section, hyperparameter appendix and code were not. What those sources establish:
    MBPO is the base algorithm; the regulariser acts on the value function only, through "two practical robust
    training mechanisms": computing adversarial noise, and regularising the value network's spectral norm;
    the comparison is a single dynamics model against an ensemble of probabilistic models (the project page:
    MBPO with a probabilistic ensemble beats a single model and an ensemble of deterministic models).

    Not found in the paper, so every numeric default below is this toolkit's choice, not the paper's, and the
    README must say so: which critic layers get spectral normalisation, the radius ``epsilon`` and its norm,
    the number of PGD/FGSM steps and the step size, the loss weight, whether the perturbed loss replaces or adds
    to the clean one, whether the perturbation hits the current or the next state, whether both mechanisms are
    used together or one at a time (the abstract calls them two mechanisms; here both are on), and whether the
    single model is probabilistic or deterministic (:func:`lipschitz_preset` defaults to one probabilistic
    member, the member type of the ensemble it is compared with; ``deterministic_model=True`` switches).

    Attributes:
        spectral_norm_layers: critic layers (``0 .. depth``; ``depth`` = output layer) spectrally normalised.
            Default (ours): the hidden layers (0, 1) of the 2-hidden-layer critic, leaving the output layer free
            so the Q scale (returns in the hundreds) is not capped at a 1-Lipschitz map of the features.
        adv_epsilon: radius of the state perturbation, in observation units (the toolkit's SAC sees raw
            observations); 0 disables the adversarial term. Default (ours): 0.01.
        adv_steps: projected-gradient ascent steps (1 = FGSM). Default (ours): 3.
        adv_step_size: ascent step; None = ``adv_epsilon`` for one step, ``2.5 * eps / steps`` otherwise (Madry
            et al.'s PGD rule; ours).
        adv_norm: the ball's norm, ``"linf"`` or ``"l2"``. Default (ours): L-infinity.
        adv_weight: critic loss = ``TD(s) + adv_weight * TD(s + delta)`` (added to, not replacing, the clean
            loss; ours). Default (ours): 1.
    """

    spectral_norm_layers: tuple[int, ...] = (0, 1)
    adv_epsilon: float = 0.01
    adv_steps: int = 3
    adv_step_size: float | None = None
    adv_norm: Literal["linf", "l2"] = "linf"
    adv_weight: float = 1.0

    def apply(self, sac: SACConfig) -> SACConfig:
        """``sac`` with this regulariser switched on (every other SAC setting kept)."""
        return replace(
            sac,
            critic_spectral_norm_layers=self.spectral_norm_layers,
            adv_epsilon=self.adv_epsilon,
            adv_steps=self.adv_steps,
            adv_step_size=self.adv_step_size,
            adv_norm=self.adv_norm,
            adv_weight=self.adv_weight,
        )


def lipschitz_preset(
    env_id: str,
    regularized: bool = True,
    *,
    base: Literal["paper", "cpu", "quick"] = "cpu",
    deterministic_model: bool = False,
    lipschitz: LipschitzConfig | None = None,
    **overrides: Any,
) -> DynaConfig:
    """Dyna with a single dynamics model, and (``regularized``) the Lipschitz-regularised critic.

    Args:
        env_id: a registered env id.
        regularized: switch the critic regulariser on (False: the paper's "single model" baseline).
        base: the Dyna preset (:func:`mbrl.agents.dyna.dyna_preset`: ``"paper"`` = MBPO's released config, ``"cpu"``,
            ``"quick"``); everything but the model size and the critic is taken from it, so the three arms of the
            experiment differ only in those.
        deterministic_model: one deterministic network instead of one probabilistic (Gaussian) member.
        lipschitz: the regulariser (default :class:`LipschitzConfig`).
        **overrides: :class:`DynaConfig` fields replaced last.
    """
    config = dyna_preset(env_id, base)
    ensemble = replace(config.ensemble, num_members=1, num_elites=1, deterministic=deterministic_model)
    sac = config.sac
    if regularized:
        sac = (lipschitz or LipschitzConfig()).apply(sac)
    config = replace(config, ensemble=ensemble, sac=sac)
    return replace(config, **overrides)


class LipschitzDiagnostics:
    """``on_model_refit`` hook: the critic's Lipschitz estimate and (if available) the model's Bellman gap.

    States are drawn uniformly from the agent's real replay buffer with a numpy generator seeded by
    ``(seed, step)``, and actions with a torch generator seeded likewise, so the hook never advances the
    agent's own random streams (a run with and without diagnostics trains identically, and a resumed run logs
    the same values).

    Args:
        env_id: the run's env; the Bellman gap is computed for envs with a ``TrueDynamicsModel``.
        num_states: states per diagnostic.
        seed: base seed of the diagnostic draws.
        bellman: compute the Bellman gap when the env supports it (it steps MuJoCo once per state per model).
    """

    def __init__(self, env_id: str, *, num_states: int = 256, seed: int = 0, bellman: bool = True) -> None:
        if num_states < 1:
            raise ValueError(f"LipschitzDiagnostics: num_states must be >= 1, got {num_states}")
        self.env_id = env_id
        self.num_states = num_states
        self.seed = seed
        self.true_model: WorldModel | None = (
            TrueDynamicsModel(env_id) if bellman and env_id in TRUE_DYNAMICS_ENVS else None
        )

    def __call__(self, agent: DynaAgent, step: int) -> Metrics:
        n = len(agent.real_buffer)
        if n == 0:
            return {}
        rows = np.random.default_rng([self.seed, step]).integers(0, n, size=min(self.num_states, n))
        obs = torch.from_numpy(agent.real_buffer.obs[rows])
        metrics: Metrics = {"train/critic_lipschitz": critic_lipschitz_estimate(agent.sac, obs)}
        if self.true_model is not None and agent.model is not None:
            metrics["model/bellman_gap"] = bellman_gap(
                agent.sac,
                agent.model,
                self.true_model,
                obs,
                gamma=agent.config.sac.gamma,
                generator=torch.Generator().manual_seed(self.seed * 1_000_003 + step),
                term_fn=agent.spec.term_fn,
            )
        return metrics


def make_lipschitz_agent(
    config: DynaConfig, *, run_dir: str | None = None, diagnostics: bool = True, diag_states: int = 256
) -> DynaAgent:
    """A :class:`DynaAgent` for ``config`` with the :class:`LipschitzDiagnostics` hook (if ``diagnostics``)."""
    hook = LipschitzDiagnostics(config.env_id, num_states=diag_states, seed=config.seed) if diagnostics else None
    return DynaAgent(config, run_dir=run_dir, on_model_refit=hook)


@dataclass(frozen=True)
class LipschitzOptions:
    """Options of ``mbrl train lipschitz`` outside its config.

    Attributes:
        regularized: spectral norm + adversarial critic (--no-regularized: the single-model baseline); sets the
            sac.critic-spectral-norm-layers and sac.adv-* fields, which the flags override.
        deterministic_model: a single deterministic network instead of a single Gaussian one.
        diag_states: replay states used by the diagnostics.
    """

    regularized: bool = True
    deterministic_model: bool = False
    diag_states: int = 256


def _run_lipschitz(config: DynaConfig, options: RunOptions, extra: LipschitzOptions) -> int:
    hook = LipschitzDiagnostics(config.env_id, num_states=extra.diag_states, seed=config.seed)
    run_online(config, options.run_dir, options.resume, on_model_refit=hook, algo="lipschitz")
    return 0


TRAIN_LIPSCHITZ = ConfigCommand(
    name="lipschitz",
    description=(
        "Train Dyna with ONE dynamics model and a Lipschitz-regularised critic (Zheng et al., ICLR 2023). Logs "
        "train/critic_lipschitz (max critic state-gradient norm on real states) and, on Hopper, HalfCheetah and "
        "Walker2d, model/bellman_gap (learned vs true one-step Bellman backup) after every model refit."
    ),
    config_type=DynaConfig,
    target="env",
    target_path="env_id",
    preset=lambda env, preset, o: lipschitz_preset(
        env, o.regularized, base=preset, deterministic_model=o.deterministic_model  # type: ignore[arg-type]
    ),
    run=_run_lipschitz,
    options=LipschitzOptions,
    default_target="Hopper-v5",
)
