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
    scheduler:                      # optional: ASHA early stopping (Ray Tune's ASHAScheduler)
      type: asha                    # the only type
      metric: eval/return_mean      # the progress.csv column compared at each rung (default: `metric` above)
      mode: max                     # max or min: which way is better
      time_attr: step               # step (the CSV's step column; default) or time_total_s (trial seconds)
      grace_period: 1000            # no trial is stopped before this; the first rung
      max_t: 3000                   # the top of the rungs (grace_period * reduction_factor**k up to it)
      reduction_factor: 2           # at each rung the best 1/reduction_factor go on (default 4)
      brackets: 1                   # ASHA brackets (default 1)
    search:                         # optional: random search, sampled when the spec is expanded
      algorithm: random             # the only algorithm
      num_samples: 8                # points sampled; each runs with every grid point and seed
      seed: 0                       # the sampling seed (default 0)
      space:                        # flag -> {loguniform: [low, high]}, {uniform: [low, high]},
        sac.critic-lr: {loguniform: [1.0e-4, 1.0e-3]}  # {randint: [low, high]} (high excluded) or {choice: [...]}
        utd: {choice: [1, 2]}

Keys of ``args``, ``grid`` and ``search.space`` are the flag names of ``mbrl train <agent>`` without ``--``
(``total-steps``; ``total_steps`` is accepted too; a dotted config path such as ``sac.critic-lr`` is the flag
``--sac.critic-lr``) and are checked against that command's flags. Values: a string, a number, ``true``/``false``
(passed as ``--flag`` / ``--no-flag``), ``null`` (passed as ``None``), or a list of those for a tuple option.
The sweep itself sets ``--env``/``--dataset``, ``--seed``, ``--run-dir`` and ``--resume``; they may not appear
in ``args``, ``grid`` or the search space, and a search dimension may not also be a fixed arg or a grid key.

Merging, per agent: top-level args < top-level grid < agent args < agent grid; a later level replaces an earlier
one's key (so an agent's fixed arg removes that key from its grid).

Trials: agents x envs/datasets x grid points x seeds, in that order. A trial's id is
``<agent>__<env-or-dataset label>[__<key>=<value>,...]__s<seed>`` (grid keys sorted): filesystem-safe and stable,
so re-expanding the same spec gives the same ids. Its run directory is ``SWEEP_DIR/trials/<id>/``. A dataset's
label is its file stem (``data/hopper.npz`` -> ``hopper``) or, for a Minari id, the id with ``/`` -> ``-``; two
datasets with the same label get a short hash of the full string appended.

Random search (``search``): the points are drawn when the spec is expanded, not by a live searcher, so trials
keep stable ids and resume per trial like a grid's: Ray Tune's distributions (``tune.loguniform``,
``tune.uniform``, ``tune.randint``, ``tune.choice``) sampled from one numpy ``Generator`` seeded with ``seed``,
point after point and flag after flag in sorted order. The same spec therefore gives the same points, and a
larger ``num_samples`` keeps the earlier ones (a search can be extended in its sweep directory). Sampled floats
are rounded to 6 significant digits, so the value passed on the command line is the one recorded. Trials: agents
x envs/datasets x grid points x points x seeds; the id gains ``__sample=<k>`` before the seed (the sampled
values are in ``sweep.json`` and in the trial's grid point, which `mbrl report` groups by). A point drawn twice
(a small discrete space) runs twice, under two sample numbers. Bounds YAML reads as strings (``1e-4``; YAML 1.1
needs ``1.0e-4``) are read as numbers.

Scheduler (``scheduler``): every progress.csv row a trial writes is reported to Tune; ASHA decides on the rows
holding its ``metric`` (e.g. the evaluation rows) and ignores the others. A trial it stops ends its run and is
marked stopped early (a ``STOPPED`` marker, see :mod:`mbrl.sweep.runner`): not failed, not finished; later
invocations skip it and `mbrl report` counts it as stopped, not in the aggregates. Reaching ``max_t`` stops no
trial: a trial's own budget (``total-steps``) ends it, so set ``max_t`` to about that budget. ASHA compares the
trials of one invocation: a re-run starts its rungs afresh for the trials it runs.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import itertools
import math
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
Mode = Literal["max", "min"]
DistributionKind = Literal["loguniform", "uniform", "randint", "choice"]
RESERVED_ARGS: frozenset[str] = frozenset({"env", "dataset", "seed", "run-dir", "resume"})
"""Flags the sweep sets itself."""
SCHEDULER_TYPES = ("asha",)
SEARCH_ALGORITHMS = ("random",)
TIME_ATTRS = ("step", "time_total_s")
"""What ASHA may count time in: the CSV's step column, or the seconds Tune counts since the trial started."""
DISTRIBUTIONS: tuple[DistributionKind, ...] = ("loguniform", "uniform", "randint", "choice")
SAMPLE_DIGITS = 6
"""Significant digits kept of a sampled float."""

_TOP_KEYS = (
    "name",
    "command",
    "agents",
    "envs",
    "datasets",
    "seeds",
    "args",
    "grid",
    "metric",
    "scheduler",
    "search",
)
_SCHEDULER_KEYS = (
    "type",
    "metric",
    "mode",
    "time_attr",
    "grace_period",
    "max_t",
    "reduction_factor",
    "brackets",
)
_SEARCH_KEYS = ("algorithm", "num_samples", "seed", "space")
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
    from mbrl.cli import COMMANDS, ConfigCommand, command_flags

    table = COMMANDS["train"]
    assert isinstance(table, dict)
    if agent not in table:
        raise ValueError(f"unknown agent {agent!r}: `mbrl train` has {', '.join(sorted(table))}")
    module, func = table[agent].split(":")
    command = getattr(importlib.import_module(module), func)
    if isinstance(command, ConfigCommand):  # every config field is a flag (dotted: sac.critic-lr)
        flags = command_flags(command)
    else:
        flags = frozenset(name.replace("_", "-") for name in inspect.signature(command).parameters)
    missing = [f for f in ("run-dir", "seed") if f not in flags]
    if missing:
        raise ValueError(
            f"`mbrl train {agent}` has no {', '.join('--' + m for m in missing)}: cannot sweep it"
        )
    if "dataset" in flags:  # offline agents also take --env (the evaluation env): the dataset is what they train on
        target: TargetKind = "dataset"
    elif "env" in flags:
        target = "env"
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
        grid_point: The grid and sampled values of this trial, ``((flag, value), ...)`` sorted by flag.
        seed: The run seed.
        args: CLI args after ``mbrl train <agent>``: target, seed, fixed args, grid values and sampled values,
            without ``--run-dir``, ``--resume`` and ``--threads`` (the runner adds those).
        resumable: The command takes ``--resume``.
        threads_flag: The command takes ``--threads``.
        sample: The number of the random-search point (``None`` without a search).
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
    sample: int | None = None

    @property
    def grid_label(self) -> str:
        """``"key=value,key=value"`` of the grid point, after ``"sample=<k>,"`` for a random-search trial
        (``""`` without a grid or a search)."""
        pairs = [f"{k}={_value_label(v)}" for k, v in self.grid_point]
        if self.sample is not None:
            pairs.insert(0, f"sample={self.sample}")
        return ",".join(pairs)

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
            "sample": self.sample,
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
                sample=None if data.get("sample") is None else int(data["sample"]),
            )
        except KeyError as exc:
            raise ValueError(f"trial entry lacks key {exc.args[0]!r}: {dict(data)}") from None


@dataclass(frozen=True)
class AshaSpec:
    """ASHA early stopping (``ray.tune.schedulers.ASHAScheduler``) on a metric the trials log.

    Attributes:
        metric: The progress.csv column compared at each rung (``eval/return_mean``).
        mode: ``"max"`` or ``"min"``: which way is better.
        grace_period: No trial is stopped before this much ``time_attr``; the first rung.
        max_t: The top of the rungs (``grace_period * reduction_factor**k`` up to it). Reaching it stops no trial
            (Tune's ``stop_last_trials=False``): the trial's own budget ends it.
        reduction_factor: At each rung a trial goes on only if it is in the best ``1/reduction_factor`` of the
            trials recorded there so far.
        brackets: ASHA brackets (1: plain asynchronous successive halving).
        time_attr: ``"step"`` (the CSV's step column) or ``"time_total_s"`` (seconds since the trial started).
    """

    metric: str
    mode: Mode
    grace_period: int
    max_t: int
    reduction_factor: float = 4.0
    brackets: int = 1
    time_attr: str = "step"

    def to_json(self) -> dict[str, Any]:
        """The spec's ``scheduler`` block."""
        return {
            "type": "asha",
            "metric": self.metric,
            "mode": self.mode,
            "time_attr": self.time_attr,
            "grace_period": self.grace_period,
            "max_t": self.max_t,
            "reduction_factor": self.reduction_factor,
            "brackets": self.brackets,
        }


@dataclass(frozen=True)
class Distribution:
    """One dimension of a random search: Ray Tune's ``tune.<kind>(...)``.

    Attributes:
        kind: ``loguniform``/``uniform`` (floats in ``[low, high]``), ``randint`` (integers in ``[low, high)``)
            or ``choice`` (one of the values).
        args: ``(low, high)``, or the values of a ``choice``.
    """

    kind: DistributionKind
    args: tuple[ArgValue, ...]

    def domain(self) -> Any:
        """The ``ray.tune`` distribution object (``tune.loguniform(low, high)``, ...)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)

    def to_json(self) -> dict[str, Any]:
        """``{kind: [args]}`` as in the spec."""
        return {self.kind: [list(a) if isinstance(a, tuple) else a for a in self.args]}


@dataclass(frozen=True)
class RandomSearch:
    """Random search over a space, sampled up front (see the module docstring).

    Attributes:
        num_samples: Points drawn.
        seed: Seed of the sampling.
        space: Flag -> distribution, sorted by flag.
    """

    num_samples: int
    seed: int
    space: tuple[tuple[str, Distribution], ...]

    @property
    def flags(self) -> tuple[str, ...]:
        """The flags the search sets."""
        return tuple(flag for flag, _ in self.space)

    def points(self) -> list[tuple[tuple[str, ArgValue], ...]]:
        """The ``num_samples`` points, each ``((flag, value), ...)`` sorted by flag (deterministic in ``seed``).

        Raises:
            ModuleNotFoundError: Ray Tune (whose distributions are sampled) is not installed.
        """
        import numpy as np

        try:
            domains = [(flag, dist, dist.domain()) for flag, dist in sorted(self.space, key=lambda d: d[0])]
        except ImportError as exc:
            raise ModuleNotFoundError(
                f"random search samples Ray Tune's distributions; install it: pip install 'mbrl-toolkit[sweep]' "
                f"({exc})"
            ) from None
        rng = np.random.default_rng(self.seed)
        return [
            tuple((flag, _sampled(dist, domain.sample(random_state=rng))) for flag, dist, domain in domains)
            for _ in range(self.num_samples)
        ]

    def to_json(self) -> dict[str, Any]:
        """The spec's ``search`` block."""
        return {
            "algorithm": "random",
            "num_samples": self.num_samples,
            "seed": self.seed,
            "space": {flag: dist.to_json() for flag, dist in self.space},
        }


def _sampled(dist: Distribution, value: Any) -> ArgValue:
    """A plain Python value of a draw: floats rounded to :data:`SAMPLE_DIGITS` significant digits."""
    if dist.kind in ("loguniform", "uniform"):
        return float(f"{float(value):.{SAMPLE_DIGITS}g}")
    if dist.kind == "randint":
        return int(value)
    return value  # one of the choice's own values (Any)


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
        scheduler: ASHA early stopping, or ``None`` (every trial runs to its end).
        search: Random search points crossed with the grid, or ``None``.
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
    scheduler: AshaSpec | None = None
    search: RandomSearch | None = None

    def trials(self) -> list[Trial]:
        """Expand into trials: agents x targets x grid points x search points x seeds (see the module docstring).

        Raises:
            ValueError: A flag unknown to an agent's command, an agent that takes the other kind of target, or
                two trials with the same id.
            ModuleNotFoundError: A search without Ray Tune installed.
        """
        labels = target_labels(self.targets, self.target_kind)
        samples: list[tuple[int | None, tuple[tuple[str, ArgValue], ...]]] = [(None, ())]
        if self.search is not None:
            samples = list(enumerate(self.search.points()))
        out: list[Trial] = []
        for agent in self.agents:
            info = self._command(agent.name)
            args, grid = _merge(self.args, self.grid, agent.args, agent.grid)
            _check_flags(info, [*args, *grid, *(self.search.flags if self.search else ())])
            keys = sorted(grid)
            points = itertools.product(*(grid[k] for k in keys))
            for target, values, (sample, drawn), seed in itertools.product(
                self.targets, list(points), samples, self.seeds
            ):
                point = tuple(zip(keys, values))
                out.append(_trial(info, target, labels[target], point, sample, drawn, seed, args))
        seen: dict[str, Trial] = {}
        for trial in out:
            if trial.id in seen:
                raise ValueError(f"two trials share the id {trial.id!r} (duplicate values in the spec?)")
            seen[trial.id] = trial
        return out

    def _command(self, agent: str) -> CommandInfo:
        info = command_info(agent)
        if info.target != self.target_kind:
            have = "envs" if self.target_kind == "env" else "datasets"
            want = "envs" if info.target == "env" else "datasets"
            raise ValueError(f"agent {agent!r} trains on {want} (--{info.target}), but the spec gives {have}")
        return info

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
            "scheduler": self.scheduler.to_json() if self.scheduler else None,
            "search": self.search.to_json() if self.search else None,
        }


def _check_flags(info: CommandInfo, flags: Sequence[str]) -> None:
    for flag in flags:
        if flag not in info.flags:
            raise ValueError(
                f"agents.{info.agent}: `mbrl train {info.agent}` has no --{flag} "
                f"(flags: {', '.join(sorted(info.flags - RESERVED_ARGS))})"
            )


def _trial(
    info: CommandInfo,
    target: str,
    label: str,
    grid_point: tuple[tuple[str, ArgValue], ...],
    sample: int | None,
    drawn: tuple[tuple[str, ArgValue], ...],
    seed: int,
    args: Mapping[str, ArgValue],
) -> Trial:
    """One trial: its id (see the module docstring) and CLI args (target, seed, args, grid, sampled values)."""
    parts = [info.agent, label]
    if grid_point:
        parts.append(",".join(f"{k}={_value_label(v)}" for k, v in grid_point))
    if sample is not None:
        parts.append(f"sample={sample}")
    parts.append(f"s{seed}")
    cli = [f"--{info.target}", target, "--seed", str(seed)]
    for flag, value in [*args.items(), *grid_point, *drawn]:
        cli += cli_args(flag, value)
    return Trial(
        id=_safe("__".join(parts)),
        agent=info.agent,
        target_kind=info.target,
        target=target,
        grid_point=tuple(sorted([*grid_point, *drawn], key=lambda pair: pair[0])),
        seed=seed,
        args=tuple(cli),
        resumable=info.resumable,
        threads_flag=info.threads,
        sample=sample,
    )


def cli_args(flag: str, value: ArgValue) -> list[str]:
    """CLI tokens of one flag: ``--flag v``; bools as ``--flag`` / ``--no-flag`` (a dotted one as tyro spells it,
    ``--sac.no-use-bf16``); tuples as ``--flag a b``."""
    if isinstance(value, bool):
        prefix, dot, name = flag.rpartition(".")
        return [f"--{flag}" if value else f"--{prefix}{dot}no-{name}"]
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


def _metric(value: Any, where: str) -> str:
    from mbrl.logging import check_key

    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string like 'eval/return_mean', got {value!r}")
    try:
        check_key(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return value


def _number(value: Any, where: str) -> float:
    """A number; a string that reads as one too (YAML 1.1 reads ``1e-4`` as a string)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(value) if isinstance(value, str) else math.nan
        except ValueError:
            number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return number


def _whole(value: Any, where: str) -> int:
    """A whole number (``1000``, ``1e3``, ``"1e3"``) as an int."""
    number = _number(value, where)
    if not number.is_integer():
        raise ValueError(f"{where}: expected a whole number, got {value!r}")
    return int(number)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return value


def _block(data: Any, where: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(allowed)})"
        )
    return data


def _scheduler(data: Any, where: str, default_metric: str | None) -> AshaSpec:
    block = _block(data, where, _SCHEDULER_KEYS)
    kind = block.get("type")
    if kind not in SCHEDULER_TYPES:
        raise ValueError(f"{where}.type: unknown scheduler {kind!r} (allowed: {', '.join(SCHEDULER_TYPES)})")
    if block.get("metric", default_metric) is None:
        raise ValueError(
            f"{where}: missing key 'metric' (the progress.csv column ASHA compares, e.g. eval/return_mean; "
            "or give the spec's top-level 'metric')"
        )
    metric = _metric(block.get("metric", default_metric), f"{where}.metric")
    mode = block.get("mode")
    if mode not in ("max", "min"):
        raise ValueError(f"{where}.mode: expected 'max' or 'min' (which way is better), got {mode!r}")
    time_attr = block.get("time_attr", "step")
    if time_attr not in TIME_ATTRS:
        raise ValueError(f"{where}.time_attr: {time_attr!r} is not one of {', '.join(TIME_ATTRS)}")
    for key in ("grace_period", "max_t"):
        if key not in block:
            raise ValueError(f"{where}: missing key {key!r}")
    grace = _whole(block["grace_period"], f"{where}.grace_period")
    max_t = _whole(block["max_t"], f"{where}.max_t")
    factor = _number(block.get("reduction_factor", 4), f"{where}.reduction_factor")
    brackets = _integer(block.get("brackets", 1), f"{where}.brackets")
    if grace <= 0:
        raise ValueError(f"{where}.grace_period: must be > 0, got {grace}")
    if max_t < grace:
        raise ValueError(f"{where}.max_t: must be >= grace_period ({grace}), got {max_t}")
    if factor <= 1:
        raise ValueError(f"{where}.reduction_factor: must be > 1, got {factor:g}")
    if brackets < 1:
        raise ValueError(f"{where}.brackets: must be >= 1, got {brackets}")
    return AshaSpec(metric, mode, grace, max_t, factor, brackets, time_attr)


def _distribution(data: Any, where: str) -> Distribution:
    forms = "{loguniform: [low, high]}, {uniform: [low, high]}, {randint: [low, high]} or {choice: [values]}"
    if not isinstance(data, Mapping) or len(data) != 1 or next(iter(data)) not in DISTRIBUTIONS:
        raise ValueError(f"{where}: expected one of {forms}, got {data!r}")
    kind, args = next(iter(data.items()))
    if not isinstance(args, list) or not args:
        raise ValueError(f"{where}.{kind}: expected a non-empty list, got {args!r}")
    if kind == "choice":
        values = tuple(_arg_value(v, f"{where}.choice[{i}]") for i, v in enumerate(args))
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"{where}.choice: duplicate values {args!r}")
        return Distribution("choice", values)
    if len(args) != 2:
        raise ValueError(f"{where}.{kind}: expected [low, high], got {args!r}")
    if kind == "randint":
        low, high = (_integer(v, f"{where}.randint[{i}]") for i, v in enumerate(args))
        if low >= high:
            raise ValueError(f"{where}.randint: expected low < high (high is excluded), got {args!r}")
        return Distribution("randint", (low, high))
    lo, hi = (_number(v, f"{where}.{kind}[{i}]") for i, v in enumerate(args))
    if lo >= hi or (kind == "loguniform" and lo <= 0):
        need = "0 < low < high" if kind == "loguniform" else "low < high"
        raise ValueError(f"{where}.{kind}: expected {need}, got {args!r}")
    return Distribution(kind, (lo, hi))


def _search(data: Any, where: str) -> RandomSearch:
    block = _block(data, where, _SEARCH_KEYS)
    algorithm = block.get("algorithm")
    if algorithm not in SEARCH_ALGORITHMS:
        raise ValueError(
            f"{where}.algorithm: unknown search algorithm {algorithm!r} (allowed: {', '.join(SEARCH_ALGORITHMS)})"
        )
    for key in ("num_samples", "space"):
        if key not in block:
            raise ValueError(f"{where}: missing key {key!r}")
    num_samples = _integer(block["num_samples"], f"{where}.num_samples")
    if num_samples < 1:
        raise ValueError(f"{where}.num_samples: must be >= 1, got {num_samples}")
    seed = _integer(block.get("seed", 0), f"{where}.seed")
    if seed < 0:
        raise ValueError(f"{where}.seed: must be >= 0, got {seed}")
    space = block["space"]
    if not isinstance(space, Mapping) or not space:
        raise ValueError(
            f"{where}.space: expected a non-empty mapping of flag -> distribution, got {space!r}"
        )
    dims: dict[str, Distribution] = {}
    for key, dist in space.items():
        flag = _flag(key, f"{where}.space")
        if flag in dims:
            raise ValueError(f"{where}.space: --{flag} given twice")
        dims[flag] = _distribution(dist, f"{where}.space.{key}")
    return RandomSearch(num_samples, seed, tuple(sorted(dims.items())))


def _check_search_overlap(spec: SweepSpec, where: str) -> None:
    """A search dimension may not also be a fixed arg or a grid key (at the top level or of an agent)."""
    if spec.search is None:
        return
    levels = [("args", spec.args), ("grid", spec.grid)]
    for agent in spec.agents:
        levels += [(f"agents.{agent.name}.args", agent.args), (f"agents.{agent.name}.grid", agent.grid)]
    for flag in spec.search.flags:
        for level, pairs in levels:
            if any(key == flag for key, _ in pairs):
                raise ValueError(
                    f"{where}.space: --{flag} is also in {level}; a flag is either fixed, a grid key or a "
                    "search dimension"
                )


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Parse a spec mapping (see the module docstring).

    Args:
        data: The loaded YAML document.
        source: Name used in error messages (the file path).

    Raises:
        ValueError: Naming ``source`` and the key: a missing or unknown key, an unknown agent, an empty list, a
            wrong type, a flag the sweep sets itself, both/neither of ``envs`` and ``datasets``, an unknown
            scheduler type or search algorithm, a scheduler without a metric, a bad distribution, or a search
            dimension that is also a fixed arg or grid key.
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
        metric = _metric(metric, _where(source, "metric"))
    scheduler = search = None
    if data.get("scheduler") is not None:
        scheduler = _scheduler(data["scheduler"], _where(source, "scheduler"), metric)
    if data.get("search") is not None:
        search = _search(data["search"], _where(source, "search"))
    spec = SweepSpec(
        name=name,
        agents=_agents(data["agents"], _where(source, "agents"), train_agents()),
        target_kind=kind,
        targets=_str_list(data[target_key], _where(source, target_key)),
        seeds=_seeds(data["seeds"], _where(source, "seeds")),
        args=_args(data.get("args"), _where(source, "args")),
        grid=_grid(data.get("grid"), _where(source, "grid")),
        metric=metric,
        command=command,
        scheduler=scheduler,
        search=search,
    )
    _check_search_overlap(spec, _where(source, "search"))
    return spec


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
