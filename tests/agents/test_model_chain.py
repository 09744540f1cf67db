"""The offline agents' model chain (``mbrl/models/chain.py``) and the RAVL / MOPO sibling configs built on it:
each link wraps the previous one as configured, the chain's rules refuse what cannot run, and every preset gives
the values the code gave before the chain existed (``offline_presets_reference.json``, written once by that code)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mbrl.agents.mopo import MOPO_DEFAULT_TASK, MOPO_TASKS, MOPOConfig, dataset_task, mopo_preset
from mbrl.agents.ravl import RAVL_CPU_ROLLOUT_LENGTH, RAVLConfig, ravl_preset
from mbrl.envs import get_spec
from mbrl.models.chain import ModelChainConfig, build_model_chain
from mbrl.models.dynamics_reward import DynamicsReward
from mbrl.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl.models.morec import RewardConsistentFilter
from mbrl.models.true_dynamics import TrueDynamicsModel
from mbrl.models.wrappers import KnownFunctionsModel, UncertaintyPenalty
from mbrl.run import config_to_dict
from mbrl.utils import native_bf16

REFERENCE = json.loads((Path(__file__).parent / "offline_presets_reference.json").read_text())
PRESETS = ("paper", "cpu", "quick")
MAKERS = {"ravl": ravl_preset, "mopo": mopo_preset}
HOPPER = get_spec("Hopper-v5")
SMALL = EnsembleConfig(num_members=3, num_elites=2, hidden=16, depth=2, full_info=True)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


# ---------------------------------------------------------------------------------------- presets, before / after
@pytest.mark.parametrize("algo", ["ravl", "mopo"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dataset", sorted(REFERENCE["mopo_tasks"]))
def test_preset_equals_the_config_before_the_chain(algo: str, preset: str, dataset: str) -> None:
    """Every field the old ``ravl_preset`` / ``mopo_preset`` set has the same value (config.json, flags and the
    resume check of existing run dirs depend on it)."""
    expected = dict(REFERENCE[algo][preset], **{"loop.dataset": dataset})
    if algo == "mopo":
        expected["penalty_coef"], expected["rollout_length"] = REFERENCE["mopo_tasks"][dataset]
    if (algo, preset) == ("ravl", "cpu"):  # the cpu preset's stabiliser (ours, added after the reference): MOPO's
        # penalty with MOPO's lambda for the dataset, 20-step rollouts, every member's sigma
        coef = REFERENCE["mopo_tasks"][dataset][0]
        expected |= {"penalty": "uncertainty", "penalty_coef": coef, "rollout_length": RAVL_CPU_ROLLOUT_LENGTH,
                     "ensemble.full_info": True}
    if preset == "cpu":  # bf16 only where the CPU has it (added after the reference, which was written on one)
        expected["sac.use_bf16"] = native_bf16("cpu")
    actual = _flat(config_to_dict(MAKERS[algo](dataset, preset)))  # type: ignore[operator]
    differing = {k: (v, actual.get(k, "<absent>")) for k, v in expected.items() if actual.get(k, "<absent>") != v}
    assert not differing, f"{algo}:{preset}@{dataset}: (before, now) {differing}"


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_rolls_out_through_its_algorithms_chain(preset: str) -> None:
    ravl = ravl_preset("mbrl/hopper/medium-v0", preset)  # type: ignore[arg-type]
    # RAVL as released has no penalty; the cpu preset adds MOPO's, with MOPO's lambda for hopper/medium (5)
    penalty, coef = ("uncertainty", 5.0) if preset == "cpu" else ("none", 1.0)
    assert ravl.model_chain == ModelChainConfig(dynamics="learned", ensemble=ravl.ensemble, filter="none",
                                                morec=ravl.morec, penalty=penalty, penalty_coef=coef)
    for dataset in REFERENCE["mopo_tasks"]:
        mopo = mopo_preset(dataset, preset)  # type: ignore[arg-type]
        coef, length = MOPO_TASKS.get(dataset_task(dataset), MOPO_DEFAULT_TASK)  # type: ignore[arg-type]
        chain = mopo.model_chain
        assert (chain.dynamics, chain.filter, chain.penalty, chain.penalty_coef) == ("learned", "none", "uncertainty", coef)
        assert chain.ensemble.full_info and mopo.rollout_length == length


def test_overrides_reach_the_loop_and_the_fields() -> None:
    for make in MAKERS.values():
        base = make("mbrl/hopper/medium-v0", "quick")  # type: ignore[operator]
        changed = make("mbrl/hopper/medium-v0", "quick", loop_seed=3, real_ratio=0.5, filter="morec")  # type: ignore[operator]
        assert changed == replace(base, loop=replace(base.loop, seed=3), real_ratio=0.5, filter="morec")
        assert changed.model_chain.filter == "morec"
    with pytest.raises(ValueError, match="unknown preset"):
        ravl_preset("x", "huge")  # type: ignore[arg-type]


def test_the_siblings_name_their_algorithm_and_default_to_its_chain() -> None:
    assert (RAVLConfig.algo, MOPOConfig.algo) == ("ravl", "mopo")
    assert RAVLConfig().model_chain.penalty == "none" and RAVLConfig().sac.num_critics == 10
    assert MOPOConfig().model_chain.penalty == "uncertainty" and MOPOConfig().sac.num_critics == 2
    assert MOPOConfig().ensemble.full_info
    assert config_to_dict(RAVLConfig()).keys() == config_to_dict(MOPOConfig()).keys()  # one run-dir layout


# ------------------------------------------------------------------------------------------------ the rules
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"penalty": "uncertainty", "ensemble": replace(SMALL, full_info=False)}, "full_info"),
        ({"filter": "morec", "dynamics": "true"}, "needs dynamics='learned'"),
        ({"dynamics_reward": "reward.pt"}, "only used with filter='morec'"),
        ({"dynamics": "simulated"}, "dynamics must be"),
        ({"filter": "best"}, "filter must be"),
        ({"penalty": "variance"}, "penalty must be"),
    ],
)
def test_the_chain_refuses_what_cannot_run(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelChainConfig(**{"ensemble": SMALL, **changes})
    # ... and so does an agent config holding those fields, naming itself.
    with pytest.raises(ValueError, match=f"^MOPOConfig: .*{message}"):
        replace(mopo_preset("x", "quick"), **changes)


def test_true_dynamics_take_the_penalty_without_full_info() -> None:
    """The true model reports zero uncertainty itself: the full_info rule is the learned ensemble's."""
    config = ModelChainConfig(dynamics="true", ensemble=replace(SMALL, full_info=False), penalty="uncertainty")
    assert config.penalty == "uncertainty"


# ---------------------------------------------------------------------------------------------- the links
def _build(config: ModelChainConfig, **kwargs: Any) -> Any:
    return build_model_chain(
        config, obs_dim=11, action_dim=3, env_id="Hopper-v5", term_fn=HOPPER.term_fn, ensemble_seed=0, **kwargs
    )


def test_without_filter_or_penalty_the_chain_is_the_dynamics_and_rollouts_terminate() -> None:
    chain = _build(ModelChainConfig(ensemble=SMALL))
    assert isinstance(chain.dynamics, ProbabilisticEnsemble) and chain.model is chain.dynamics
    assert chain.rollout_term_fn is HOPPER.term_fn and chain.dynamics_reward is None


def test_the_penalty_link_subtracts_lambda_times_the_uncertainty() -> None:
    chain = _build(ModelChainConfig(ensemble=SMALL, penalty="uncertainty", penalty_coef=2.5))
    assert isinstance(chain.model, UncertaintyPenalty) and chain.model.model is chain.dynamics
    obs, action = torch.randn(6, 11), torch.randn(6, 3)
    raw = chain.dynamics.predict(obs, action, deterministic=True)
    step = chain.model.predict(obs, action, deterministic=True)
    assert raw.info["uncertainty"].abs().sum() > 0
    torch.testing.assert_close(step.reward, raw.reward - 2.5 * raw.info["uncertainty"])
    torch.testing.assert_close(step.info["raw_reward"], raw.reward)


def test_the_filter_link_applies_the_termination_to_every_candidate() -> None:
    chain = _build(ModelChainConfig(ensemble=SMALL, filter="morec", penalty="uncertainty"))
    assert isinstance(chain.model, UncertaintyPenalty)
    filtered = chain.model.model
    assert isinstance(filtered, RewardConsistentFilter)
    known = filtered.model
    assert isinstance(known, KnownFunctionsModel) and known.term_fn is HOPPER.term_fn and known.model is chain.dynamics
    assert chain.rollout_term_fn is None  # rollout() must not override the filter's stops
    assert isinstance(chain.dynamics_reward, DynamicsReward) and filtered.dynamics_reward is chain.dynamics_reward


def test_the_true_dynamics_link_and_a_model_passed_in() -> None:
    chain = _build(ModelChainConfig(dynamics="true", penalty="uncertainty"))
    assert isinstance(chain.dynamics, TrueDynamicsModel)
    own = ProbabilisticEnsemble(11, 3, SMALL, seed=1)
    assert _build(ModelChainConfig(ensemble=SMALL), dynamics=own).dynamics is own
    with pytest.raises(ValueError, match="another env's data"):
        _build(ModelChainConfig(ensemble=SMALL), dynamics=ProbabilisticEnsemble(4, 1, SMALL, seed=1))
    with pytest.raises(ValueError, match="no Ensemble capability"):
        _build(ModelChainConfig(filter="morec"), dynamics=TrueDynamicsModel("Hopper-v5"))
