"""``mbrl dataset info`` and ``mbrl dataset convert``. Bad input raises ``DatasetError`` (the CLI prints it, exit 2)."""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Annotated, Any

import tyro

from mbrl.data.io import HDF5_SUFFIXES, NPZ_SUFFIXES, load_dataset, save_hdf5, save_minari, save_npz
from mbrl.data.validate import DatasetError

Source = Annotated[str, tyro.conf.arg(metavar="SOURCE")]
EnvId = Annotated[str | None, tyro.conf.arg(metavar="ENV_ID")]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def info(source: Source, /, env: EnvId = None, json: bool = False, check: bool = False) -> int:
    """Print a summary of an offline dataset (HDF5 in D4RL layout, .npz, or a local Minari dataset id).

    Args:
        source: a .hdf5/.h5/.npz file, or a Minari dataset id under $MINARI_DATASETS_PATH.
        env: gymnasium env id to check obs/action dims against (when the dataset does not name one).
        json: print one JSON object instead of text.
        check: validate only: print every problem of the file, one per line, and exit 1 if there is any
            (0 and "ok" when there is none).
    """
    if check:
        try:
            load_dataset(source, env_id=env)
        except DatasetError as exc:
            print(f"{source}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}")
            for problem in exc.problems:
                print(f"  - {problem}")
            return 1
        print(f"{source}: ok")
        return 0
    ds = load_dataset(source, env_id=env)
    summary = ds.summary()
    if json:
        print(_json.dumps(summary))
        return 0
    s = summary
    lines = [
        f"source        {s['source']}",
        f"env           {s['env_id'] if s['env_id'] is not None else 'unknown'}",
        f"transitions   {s['n_transitions']}",
        f"episodes      {s['n_episodes']} (length mean {_fmt(s['episode_length_mean'])}, "
        f"min {s['episode_length_min']}, max {s['episode_length_max']}; "
        f"{s['n_terminals']} terminals, {s['n_timeouts']} timeouts)",
        f"obs_dim       {s['obs_dim']}",
        f"action_dim    {s['action_dim'] if s['has_actions'] else 'none (action-free)'}",
        f"reward        mean {_fmt(s['reward_mean'])}  std {_fmt(s['reward_std'])}  "
        f"min {_fmt(s['reward_min'])}  max {_fmt(s['reward_max'])}",
        f"return        mean {_fmt(s['return_mean'])}  std {_fmt(s['return_std'])}  "
        f"min {_fmt(s['return_min'])}  max {_fmt(s['return_max'])}",
        f"fingerprint   {s['fingerprint']} (SHA-256 of the transitions: equal fingerprints, equal data)",
    ]
    if "normalized_return_mean" in s:
        lines.append(
            f"normalized    {_fmt(s['normalized_return_mean'])} "
            f"(ref_min_score {_fmt(s['ref_min_score'])}, ref_max_score {_fmt(s['ref_max_score'])})"
        )
    if "n_proxy_actions" in s:
        lines.append(f"proxy actions {s['n_proxy_actions']}")
    print("\n".join(lines))
    return 0


def convert(
    source: Source,
    out: Annotated[str, tyro.conf.arg(metavar="OUT")],
    /,
    env: EnvId = None,
) -> int:
    """Convert a dataset between formats: OUT ending in .npz or .hdf5/.h5 is a file, anything else a Minari id.

    Args:
        source: a .hdf5/.h5/.npz file, or a Minari dataset id under $MINARI_DATASETS_PATH.
        out: output .npz / .hdf5 / .h5 path, or a new Minari dataset id such as mbrl/hopper/medium-v0.
        env: gymnasium env id to check dims against and record in the output.
    """
    ds = load_dataset(source, env_id=env)
    suffix = Path(out).suffix.lower()
    if suffix in NPZ_SUFFIXES:
        save_npz(ds, out)
    elif suffix in HDF5_SUFFIXES:
        save_hdf5(ds, out)
    else:
        save_minari(ds, out)
    print(f"wrote {len(ds)} transitions ({ds.n_episodes} episodes) from {ds.source} to {out}")
    return 0
