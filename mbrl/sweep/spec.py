"""Sweep specs: a YAML file naming agents, envs or datasets, seeds and CLI overrides, expanded into trials.

A spec::

    name: ip-dyna-vs-sac            # required; letters, digits, '.', '_', '-' (default dir runs/sweeps/<name>)
    command: train                  # optional; the only command: every trial is `mbrl train <agent> ...`
    agents: [sac, dyna]             # names registered under `mbrl train`
    # ... or per-agent blocks, each with args / grid merged over the top-level ones:
    # agents:
    #   sac: {}
    #   dyna: {args: {utd: 10}, grid: {model: [ensemble, single]}}
    envs: [InvertedPendulum-v5]     # online agents (sac, dyna, lipschitz) get --env
    # datasets: [data/hopper.npz]   # offline agents (bc, ravl, mopo, idm-label) get --dataset; give exactly one
    seeds: [0, 1, 2]                # or a count: `seeds: 3` means [0, 1, 2]
    args: {total-steps: 2000}       # fixed CLI args of every trial
    grid: {utd: [1, 2]}             # cartesian product of these lists
    metric: eval/return_mean        # optional: what `mbrl report` aggregates (default: eval/normalized_score
                                    # where a trial logs it, else eval/return_mean)

Keys of ``args`` and ``grid`` are the flag names of ``mbrl train <agent>`` without ``--`` (``total-steps``;
``total_steps`` is accepted too) and are checked against that command's signature. Values: a string, a number,
``true``/``false`` (passed as ``--flag`` / ``--no-flag``), ``null`` (passed as ``None``), or a list of those for
a tuple option. The sweep itself sets ``--env``/``--dataset``, ``--seed``, ``--run-dir`` and ``--resume``; they
may not appear in ``args`` or ``grid``.

Merging, per agent: top-level args < top-level grid < agent args < agent grid; a later level replaces an earlier
one's key (so an agent's fixed arg removes that key from its grid).

Trials: agents x envs/datasets x grid points x seeds, in that order. A trial's id is
``<agent>__<env-or-dataset label>[__<key>=<value>,...]__s<seed>`` (grid keys sorted): filesystem-safe and stable,
so re-expanding the same spec gives the same ids. Its run directory is ``SWEEP_DIR/trials/<id>/``. A dataset's
label is its file stem (``data/hopper.npz`` -> ``hopper``) or, for a Minari id, the id with ``/`` -> ``-``; two
datasets with the same label get a short hash of the full string appended.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Scalar = str | int | float | bool | None
"""A CLI value in a spec."""
ArgValue = Scalar | tuple[Scalar, ...]
"""A scalar, or a tuple of scalars for a tuple option (``--keys a b``)."""

TargetKind = Literal["env", "dataset"]
RESERVED_ARGS: frozenset[str] = frozenset({"env", "dataset", "seed", "run-dir", "resume"})
"""Flags the sweep sets itself."""

_TOP_KEYS = ("name", "command", "agents", "envs", "datasets", "seeds", "args", "grid", "metric")
_AGENT_KEYS = ("args", "grid")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._=+,-]+")
_DATASET_SUFFIXES = (".npz", ".hdf5", ".h5")


@dataclass(frozen=True)
class CommandInfo:
    """What the sweep needs to know about ``mbrl train <agent>`` (read from its function signature).

    Attributes:
        agent: The agent name under ``mbrl train``.
        target: ``"env"`` (online agents) or ``"dataset"`` (offline agents): the flag a trial's target goes to.
        flags: Every flag of the command (dashed names, without ``--``).
        resumable: The command takes ``--resume`` (an interrupted trial continues from its checkpoint).
        threads: The command takes ``--threads`` (the runner passes its threads per trial).
    """

    agent: str
    target: TargetKind
    flags: frozenset[str]
    resumable: bool
    threads: bool


def train_agents() -> list[str]:
    """The agent names registered under ``mbrl train`` (``mbrl.cli.COMMANDS["train"]``)."""
    from mbrl.cli import COMMANDS

    table = COMMANDS["train"]
    assert isinstance(table, dict)
    return sorted(table)


def command_info(agent: str) -> CommandInfo:
    """Inspect the function behind ``mbrl train <agent>``.

    Raises:
        ValueError: Unknown agent, or a command without ``--run-dir``/``--seed``/``--env``/``--dataset``.
    """
    from mbrl.cli import COMMANDS

    table = COMMANDS["train"]
    assert isinstance(table, dict)
    if agent not in table:
        raise ValueError(f"unknown agent {agent!r}: `mbrl train` has {', '.join(sorted(table))}")
    module, func = table[agent].split(":")
    params = inspect.signature(getattr(importlib.import_module(module), func)).parameters
    flags = frozenset(name.replace("_", "-") for name in params)
    missing = [f for f in ("run-dir", "seed") if f not in flags]
    if missing:
        raise ValueError(
            f"`mbrl train {agent}` has no {', '.join('--' + m for m in missing)}: cannot sweep it"
        )
    if "env" in flags:
        target: TargetKind = "env"
    elif "dataset" in flags:
        target = "dataset"
    else:
        raise ValueError(f"`mbrl train {agent}` takes neither --env nor --dataset: cannot sweep it")
    return CommandInfo(agent, target, flags, "resume" in flags, "threads" in flags)


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a sweep with its own overrides (merged over the sweep's; see the module docstring).

    Attributes:
        name: Agent name under ``mbrl train``.
        args: Fixed flag -> value pairs of this agent.
        grid: Flag -> candidate values of this agent.
    """

    name: str
    args: tuple[tuple[str, ArgValue], ...] = ()
    grid: tuple[tuple[str, tuple[ArgValue, ...]], ...] = ()


@dataclass(frozen=True)
class Trial:
    """One run of ``mbrl train <agent>``: an agent on one env/dataset at one grid point and seed.

    Attributes:
        id: Stable, filesystem-safe id (see the module docstring); the run directory is ``trials/<id>``.
        agent: Agent name under ``mbrl train``.
        target_kind: ``"env"`` or ``"dataset"``.
        target: The env id or dataset path/id.
        grid_point: The grid values of this trial, ``((flag, value), ...)`` sorted by flag.
        seed: The run seed.
        args: CLI args after ``mbrl train <agent>``: target, seed, fixed args and grid values, without
            ``--run-dir``, ``--resume`` and ``--threads`` (the runner adds those).
        resumable: The command takes ``--resume``.
        threads_flag: The command takes ``--threads``.
    """

    id: str
    agent: str
    target_kind: TargetKind
    target: str
    grid_point: tuple[tuple[str, ArgValue], ...]
    seed: int
    args: tuple[str, ...]
    resumable: bool = True
    threads_flag: bool = False

    @property
    def grid_label(self) -> str:
        """``"key=value,key=value"`` of the grid point (``""`` without a grid)."""
        return ",".join(f"{k}={_value_label(v)}" for k, v in self.grid_point)

    def run_dir(self, sweep_dir: Path | str) -> Path:
        """``SWEEP_DIR/trials/<id>``."""
        return Path(sweep_dir) / "trials" / self.id

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (lists for tuples, the grid point as an object)."""
        return {
            "id": self.id,
            "agent": self.agent,
            "target_kind": self.target_kind,
            "target": self.target,
            "grid_point": {k: list(v) if isinstance(v, tuple) else v for k, v in self.grid_point},
            "seed": self.seed,
            "args": list(self.args),
            "resumable": self.resumable,
            "threads_flag": self.threads_flag,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trial:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: A missing key or a wrong type (the key is named).
        """
        try:
            kind = data["target_kind"]
            if kind not in ("env", "dataset"):
                raise ValueError(f"target_kind {kind!r} is not 'env' or 'dataset'")
            return cls(
                id=str(data["id"]),
                agent=str(data["agent"]),
                target_kind=kind,
                target=str(data["target"]),
                grid_point=tuple(
                    (str(k), tuple(v) if isinstance(v, list) else v)
                    for k, v in dict(data["grid_point"]).items()
                ),
                seed=int(data["seed"]),
                args=tuple(str(a) for a in data["args"]),
                resumable=bool(data.get("resumable", True)),
                threads_flag=bool(data.get("threads_flag", False)),
            )
        except KeyError as exc:
            raise ValueError(f"trial entry lacks key {exc.args[0]!r}: {dict(data)}") from None


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (see the module docstring for the YAML form).

    Attributes:
        name: Sweep name.
        agents: The agents, each with its own overrides.
        target_kind: ``"env"`` (``envs:``) or ``"dataset"`` (``datasets:``).
        targets: Env ids or dataset paths/ids.
        seeds: Run seeds.
        args: Fixed flag -> value pairs of every trial.
        grid: Flag -> candidate values (cartesian product).
        metric: The metric ``mbrl report`` aggregates (``None``: per trial, ``eval/normalized_score`` if logged,
            else ``eval/return_mean``).
        command: The ``mbrl`` command group of the trials (only ``"train"``).
    """

    name: str
    agents: tuple[AgentSpec, ...]
    target_kind: TargetKind
    targets: tuple[str, ...]
    seeds: tuple[int, ...]
    args: tuple[tuple[str, ArgValue], ...] = ()
    grid: tuple[tuple[str, tuple[ArgValue, ...]], ...] = ()
    metric: str | None = None
    command: str = "train"

    def trials(self) -> list[Trial]:
        """Expand into trials: agents x targets x grid points x seeds (see the module docstring).

        Raises:
            ValueError: A flag unknown to an agent's command, an agent that takes the other kind of target, or
                two trials with the same id.
        """
        labels = target_labels(self.targets, self.target_kind)
        out: list[Trial] = []
        for agent in self.agents:
            info = command_info(agent.name)
            if info.target != self.target_kind:
                have = "envs" if self.target_kind == "env" else "datasets"
                want = "envs" if info.target == "env" else "datasets"
                raise ValueError(
                    f"agent {agent.name!r} trains on {want} (--{info.target}), but the spec gives {have}"
                )
            args, grid = _merge(self.args, self.grid, agent.args, agent.grid)
            for flag in [*args, *grid]:
                if flag not in info.flags:
                    raise ValueError(
                        f"agents.{agent.name}: `mbrl train {agent.name}` has no --{flag} "
                        f"(flags: {', '.join(sorted(info.flags - RESERVED_ARGS))})"
                    )
            keys = sorted(grid)
            for target in self.targets:
                for values in itertools.product(*(grid[k] for k in keys)):
                    point = tuple(zip(keys, values))
                    for seed in self.seeds:
                        parts = [agent.name, labels[target]]
                        if point:
                            parts.append(",".join(f"{k}={_value_label(v)}" for k, v in point))
                        parts.append(f"s{seed}")
                        cli = [f"--{info.target}", target, "--seed", str(seed)]
                        for flag, value in [*args.items(), *point]:
                            cli += cli_args(flag, value)
                        out.append(
                            Trial(
                                id=_safe("__".join(parts)),
                                agent=agent.name,
                                target_kind=info.target,
                                target=target,
                                grid_point=point,
                                seed=seed,
                                args=tuple(cli),
                                resumable=info.resumable,
                                threads_flag=info.threads,
                            )
                        )
        seen: dict[str, Trial] = {}
        for trial in out:
            if trial.id in seen:
                raise ValueError(f"two trials share the id {trial.id!r} (duplicate values in the spec?)")
            seen[trial.id] = trial
        return out

    def to_json(self) -> dict[str, Any]:
        """The spec in its YAML form (per-agent blocks, lists), as stored in ``sweep.json``."""

        def pairs(items: Sequence[tuple[str, Any]]) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in items}

        def grid(items: Sequence[tuple[str, tuple[ArgValue, ...]]]) -> dict[str, Any]:
            return {k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in items}

        return {
            "name": self.name,
            "command": self.command,
            "agents": {a.name: {"args": pairs(a.args), "grid": grid(a.grid)} for a in self.agents},
            "envs" if self.target_kind == "env" else "datasets": list(self.targets),
            "seeds": list(self.seeds),
            "args": pairs(self.args),
            "grid": grid(self.grid),
            "metric": self.metric,
        }


def cli_args(flag: str, value: ArgValue) -> list[str]:
    """CLI tokens of one flag: ``--flag v``; bools as ``--flag`` / ``--no-flag``; tuples as ``--flag a b``."""
    if isinstance(value, bool):
        return [f"--{flag}" if value else f"--no-{flag}"]
    if isinstance(value, tuple):
        return [f"--{flag}", *(_token(v) for v in value)]
    return [f"--{flag}", _token(value)]


def _token(value: Scalar) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _value_label(value: ArgValue) -> str:
    if isinstance(value, tuple):
        return "+".join(_value_label(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _token(value)


def _safe(text: str) -> str:
    return _UNSAFE_RE.sub("-", text)


def target_labels(targets: Sequence[str], kind: TargetKind) -> dict[str, str]:
    """Filesystem-safe labels of envs/datasets as used in trial ids (see the module docstring)."""
    labels: dict[str, str] = {}
    for target in targets:
        if kind == "dataset" and target.lower().endswith(_DATASET_SUFFIXES):
            label = Path(target).stem
        else:
            label = target.strip("/").replace("/", "-")
        labels[target] = _safe(label) or "target"
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    for target, label in labels.items():
        if counts[label] > 1:  # e.g. a/hopper.npz and b/hopper.npz
            labels[target] = f"{label}-{hashlib.sha1(target.encode()).hexdigest()[:6]}"
    return labels


def _merge(
    args: tuple[tuple[str, ArgValue], ...],
    grid: tuple[tuple[str, tuple[ArgValue, ...]], ...],
    agent_args: tuple[tuple[str, ArgValue], ...],
    agent_grid: tuple[tuple[str, tuple[ArgValue, ...]], ...],
) -> tuple[dict[str, ArgValue], dict[str, tuple[ArgValue, ...]]]:
    fixed: dict[str, ArgValue] = {}
    points: dict[str, tuple[ArgValue, ...]] = {}
    for level_args, level_grid in ((args, grid), (agent_args, agent_grid)):
        for key, value in level_args:
            points.pop(key, None)
            fixed[key] = value
        for key, values in level_grid:
            fixed.pop(key, None)
            points[key] = values
    return fixed, points


# ---------------------------------------------------------------------------------------------------------
# Parsing


def _where(source: str, key: str) -> str:
    return f"{source}: key {key!r}"


def _flag(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key.strip("-"):
        raise ValueError(f"{where}: flag name {key!r} is not a non-empty string")
    flag = key.lstrip("-").replace("_", "-")
    if flag in RESERVED_ARGS:
        raise ValueError(f"{where}: --{flag} is set by the sweep itself (per trial); remove it")
    return flag


def _scalar(value: Any, where: str) -> Scalar:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value  # type: ignore[no-any-return]
    raise ValueError(
        f"{where}: value {value!r} is a {type(value).__name__}, not a string, number, bool or null"
    )


def _arg_value(value: Any, where: str) -> ArgValue:
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{where}: empty list")
        return tuple(_scalar(v, f"{where}[{i}]") for i, v in enumerate(value))
    return _scalar(value, where)


def _args(data: Any, where: str) -> tuple[tuple[str, ArgValue], ...]:
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of flag -> value, got {type(data).__name__}")
    out: dict[str, ArgValue] = {}
    for key, value in data.items():
        flag = _flag(key, where)
        if flag in out:
            raise ValueError(f"{where}: --{flag} given twice")
        out[flag] = _arg_value(value, f"{where}.{key}")
    return tuple(out.items())


def _grid(data: Any, where: str) -> tuple[tuple[str, tuple[ArgValue, ...]], ...]:
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of flag -> list of values, got {type(data).__name__}")
    out: dict[str, tuple[ArgValue, ...]] = {}
    for key, values in data.items():
        flag = _flag(key, where)
        if flag in out:
            raise ValueError(f"{where}: --{flag} given twice")
        if not isinstance(values, list):
            raise ValueError(
                f"{where}.{key}: expected a list of values, got {type(values).__name__} {values!r}"
            )
        if not values:
            raise ValueError(f"{where}.{key}: empty list")
        parsed = tuple(_arg_value(v, f"{where}.{key}[{i}]") for i, v in enumerate(values))
        if len(set(map(repr, parsed))) != len(parsed):
            raise ValueError(f"{where}.{key}: duplicate values {values!r}")
        out[flag] = parsed
    return tuple(out.items())


def _str_list(data: Any, where: str) -> tuple[str, ...]:
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list, got {type(data).__name__} {data!r}")
    if not data:
        raise ValueError(f"{where}: empty list")
    for i, item in enumerate(data):
        if not isinstance(item, str) or not item:
            raise ValueError(f"{where}[{i}]: expected a non-empty string, got {item!r}")
    if len(set(data)) != len(data):
        raise ValueError(f"{where}: duplicate entries {data!r}")
    return tuple(data)


def _seeds(data: Any, where: str) -> tuple[int, ...]:
    if isinstance(data, int) and not isinstance(data, bool):
        if data < 1:
            raise ValueError(f"{where}: a seed count must be >= 1, got {data}")
        return tuple(range(data))
    if not isinstance(data, list):
        raise ValueError(
            f"{where}: expected a list of integers or a count, got {type(data).__name__} {data!r}"
        )
    if not data:
        raise ValueError(f"{where}: empty list")
    for i, seed in enumerate(data):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{where}[{i}]: expected an integer >= 0, got {seed!r}")
    if len(set(data)) != len(data):
        raise ValueError(f"{where}: duplicate seeds {data!r}")
    return tuple(data)


def _agents(data: Any, where: str, known: Sequence[str]) -> tuple[AgentSpec, ...]:
    entries: list[tuple[str, Any]]
    if isinstance(data, list):
        names = _str_list(data, where)
        entries = [(name, None) for name in names]
    elif isinstance(data, Mapping):
        if not data:
            raise ValueError(f"{where}: empty mapping")
        entries = list(data.items())
    else:
        raise ValueError(f"{where}: expected a list of agent names or a mapping name -> block, got {data!r}")
    out = []
    for name, block in entries:
        if name not in known:
            raise ValueError(f"{where}: unknown agent {name!r}; `mbrl train` has {', '.join(known)}")
        if block is None:
            block = {}
        if not isinstance(block, Mapping):
            raise ValueError(f"{where}.{name}: expected a mapping with args/grid, got {type(block).__name__}")
        unknown = sorted(set(block) - set(_AGENT_KEYS))
        if unknown:
            raise ValueError(
                f"{where}.{name}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: args, grid)"
            )
        out.append(
            AgentSpec(
                name,
                _args(block.get("args"), f"{where}.{name}.args"),
                _grid(block.get("grid"), f"{where}.{name}.grid"),
            )
        )
    return tuple(out)


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Parse a spec mapping (see the module docstring).

    Args:
        data: The loaded YAML document.
        source: Name used in error messages (the file path).

    Raises:
        ValueError: Naming ``source`` and the key: a missing or unknown key, an unknown agent, an empty list, a
            wrong type, a flag the sweep sets itself, or both/neither of ``envs`` and ``datasets``.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(_TOP_KEYS)})"
        )
    for key in ("name", "agents", "seeds"):
        if key not in data:
            raise ValueError(f"{source}: missing key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"{_where(source, 'name')}: {name!r} must be a non-empty string of letters, digits, '.', '_', '-'"
        )
    command = data.get("command", "train")
    if command != "train":
        raise ValueError(f"{_where(source, 'command')}: {command!r} is not supported (only 'train')")
    has_envs, has_datasets = "envs" in data, "datasets" in data
    if has_envs == has_datasets:
        raise ValueError(
            f"{source}: give exactly one of 'envs' (online agents) or 'datasets' (offline agents)"
        )
    kind: TargetKind = "env" if has_envs else "dataset"
    target_key = "envs" if has_envs else "datasets"
    metric = data.get("metric")
    if metric is not None:
        from mbrl.logging import check_key

        if not isinstance(metric, str):
            raise ValueError(
                f"{_where(source, 'metric')}: expected a string like 'eval/return_mean', got {metric!r}"
            )
        try:
            check_key(metric)
        except ValueError as exc:
            raise ValueError(f"{_where(source, 'metric')}: {exc}") from None
    return SweepSpec(
        name=name,
        agents=_agents(data["agents"], _where(source, "agents"), train_agents()),
        target_kind=kind,
        targets=_str_list(data[target_key], _where(source, target_key)),
        seeds=_seeds(data["seeds"], _where(source, "seeds")),
        args=_args(data.get("args"), _where(source, "args")),
        grid=_grid(data.get("grid"), _where(source, "grid")),
        metric=metric,
        command=command,
    )


def load_spec(path: Path | str) -> SweepSpec:
    """Read and parse a YAML spec file.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not valid YAML, or an invalid spec (see :func:`parse_spec`); the message names the file.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return parse_spec(data, str(path))
