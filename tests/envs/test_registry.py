"""The registry: every env passes gymnasium's checker, specs match the real envs, seeding, MuJoCo warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mbrl.envs import EnvSpec, get_spec, make_env, supported_envs

REQUIRED = (
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "Pendulum-v1",
)


def test_required_envs_are_registered() -> None:
    assert set(REQUIRED) <= set(supported_envs())
    for env_id in supported_envs():
        spec = get_spec(env_id)
        assert isinstance(spec, EnvSpec) and spec.env_id == env_id


@pytest.mark.parametrize("env_id", REQUIRED)
def test_check_env(env_id: str) -> None:
    """gymnasium's checker; any warning beyond its two advisory ones (infinite observation bounds, action
    space not in [-1, 1]: both by design of these envs) fails. Rendering needs a GL backend: not checked."""
    env = make_env(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings(
            "ignore", message=r".*observation space (maximum|minimum) value is -?infinity"
        )
        warnings.filterwarnings("ignore", message=r".*symmetric and normalized space")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", REQUIRED)
def test_spec_matches_env(env_id: str) -> None:
    spec = get_spec(env_id)
    env = make_env(env_id)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.action_dim,)
    assert env.spec is not None and env.spec.max_episode_steps == spec.max_episode_steps
    assert gym.spec(env_id).max_episode_steps == spec.max_episode_steps
    assert spec.reward_note
    env.close()


def test_d4rl_names() -> None:
    assert get_spec("HalfCheetah-v5").d4rl_name == "halfcheetah"
    assert get_spec("Hopper-v5").d4rl_name == "hopper"
    assert get_spec("Walker2d-v5").d4rl_name == "walker2d"
    assert get_spec("Ant-v5").d4rl_name == "ant"
    assert get_spec("Pendulum-v1").d4rl_name is None


def test_unknown_env_lists_supported_ids() -> None:
    with pytest.raises(ValueError, match="unknown env id 'Hopper-v9'") as err:
        get_spec("Hopper-v9")
    for env_id in supported_envs():
        assert env_id in str(err.value)
    assert "registered here: HalfCheetah-v5" in str(err.value)
    with pytest.raises(ValueError, match="needs a 1-d Box action space"):
        make_env("CartPole-v1")  # gymnasium knows it, but the toolkit's agents act in Box spaces


def test_spec_is_frozen() -> None:
    spec = get_spec("Hopper-v5")
    with pytest.raises(AttributeError):
        spec.obs_dim = 3  # type: ignore[misc]


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Pendulum-v1"])
def test_make_env_seed_is_reproducible(env_id: str) -> None:
    def run(seed: int) -> np.ndarray:
        env = make_env(env_id, seed=seed)
        obs = [env.reset()[0]]  # an unseeded reset continues the seeded RNG
        for _ in range(5):
            obs.append(env.step(env.action_space.sample())[0])
        env.close()
        return np.stack(obs)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_make_env_passes_kwargs() -> None:
    env = make_env("Ant-v5", include_cfrc_ext_in_observation=False)
    assert env.observation_space.shape == (27,)
    env.close()


def test_mujoco_warnings_do_not_write_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_env("HalfCheetah-v5").close()  # its XML triggers the settotalmass deprecation
        model = mujoco.MjModel.from_xml_string(
            "<mujoco><worldbody><body><freejoint/><geom size='.1'/></body></worldbody></mujoco>"
        )
        data = mujoco.MjData(model)
        data.qvel[0] = np.nan
        mujoco.mj_step(model, data)  # an unstable simulation: MuJoCo warns
    messages = [str(w.message) for w in caught]
    assert not any("settotalmass" in m for m in messages)
    assert any(m.startswith("MuJoCo:") and "QVEL" in m for m in messages), messages
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_any_gymnasium_env_for_sac_and_a_registered_termination_for_dyna(tmp_path: Path) -> None:
    """An env the registry did not know: model-free SAC trains on it as it is; Dyna refuses it by name until a
    termination function is registered, then trains."""
    from mbrl.agents.dyna import DynaAgent, cpu_preset
    from mbrl.cli import main
    from mbrl.envs import register_env, termination

    assert "MountainCarContinuous-v0" not in supported_envs()
    run = tmp_path / "mcc"
    assert main(["train", "sac", "--env", "MountainCarContinuous-v0", "--total-steps", "1100", "--run-dir", str(run)]) == 0
    spec = get_spec("MountainCarContinuous-v0")
    assert (spec.obs_dim, spec.action_dim, spec.max_episode_steps, spec.term_fn) == (2, 1, 999, None)
    with pytest.raises(ValueError, match="no registered termination function"):
        DynaAgent(cpu_preset("Swimmer-v5"))
    register_env("Swimmer-v5", term_fn=termination.never_terminates)
    agent = DynaAgent(cpu_preset("Swimmer-v5", total_steps=300, init_random_steps=200, model_train_every=100,
                                 epoch_length=100, utd=1, eval_every=0, checkpoint_every=0))
    result = agent.learn()
    assert len(agent.model_buffer) > 0 and np.isfinite(result["eval/return_mean"])
    with pytest.raises(ValueError, match="gymnasium does not know"):
        get_spec("NoSuchEnv-v9")
    with pytest.raises(ValueError, match="Box action space"):
        register_env("CartPole-v1")
