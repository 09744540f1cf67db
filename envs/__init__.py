"""Gymnasium environments: the registry of supported envs with their termination and reward functions."""

from mbrl.envs.registry import EnvSpec, get_spec, make_env, register_env, require_term_fn, supported_envs

__all__ = ["EnvSpec", "get_spec", "make_env", "register_env", "require_term_fn", "supported_envs"]
