"""The ``mbrl`` command. Thin: every subcommand is a typed function elsewhere; tyro builds its CLI.

Two levels: ``mbrl GROUP COMMAND ...`` (e.g. ``mbrl dataset info``) or ``mbrl COMMAND ...`` (e.g. ``mbrl eval``).
Commands are registered as ``"module:function"`` strings and imported lazily, so ``mbrl --help`` is fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tyro

from mbrl.utils import with_device

# group -> command -> "module:function" (or a top-level command -> "module:function").
COMMANDS: dict[str, dict[str, str] | str] = {
    "dataset": {
        "info": "mbrl.data.commands:info",
        "convert": "mbrl.data.commands:convert",
        "make": "mbrl.agents.offline_commands:make_dataset",
        "label": "mbrl.agents.idm_labeling:label_dataset",
    },
    "train": {
        "ravl": "mbrl.agents.offline_commands:TRAIN_RAVL",
        "mopo": "mbrl.agents.offline_commands:TRAIN_MOPO",
        "bc": "mbrl.agents.offline_commands:TRAIN_BC",
        "dyna": "mbrl.agents.commands:TRAIN_DYNA",
        "sac": "mbrl.agents.commands:TRAIN_SAC",
        "idm-label": "mbrl.agents.idm_labeling:train_idm_label",
        "lipschitz": "mbrl.agents.lipschitz:TRAIN_LIPSCHITZ",
    },
    "eval": "mbrl.agents.commands:eval_run",
    "export": "mbrl.agents.loading:export_command",
    "run-demo": "mbrl.agents.commands:run_demo",
    "plot": "mbrl.plotting:plot_command",
    "sweep": "mbrl.sweep.runner:sweep_command",
    "report": "mbrl.sweep.report:report_command",
    "model": {
        "train": "mbrl.models.commands:train_model",
        "eval": "mbrl.models.commands:eval_model",
        "check": "mbrl.models.contract:check_command",
        "train-dynamics-reward": "mbrl.models.morec_commands:train_dynamics_reward_command",
    },
}


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


PRESETS = ("paper", "cpu", "quick")
"""What ``--preset`` means for every agent: ``paper`` = the paper's released values and budget, ``cpu`` = the same
method on a budget one CPU core affords (``docs/presets.md`` names each change), ``quick`` = smoke-test sizes."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where a ``mbrl train`` run goes and how it starts (not part of the agent's config).

    Attributes:
        run_dir: where config, checkpoints, CSV, TensorBoard events and plots go (None: a new
            runs/<algo>-<target>-<date-time>).
        resume: continue the run in run_dir from its latest checkpoint.
        overwrite: delete run_dir's previous run first (only a directory holding a run's config.json).
    """

    run_dir: str | None = None
    resume: bool = False
    overwrite: bool = False


@dataclasses.dataclass(frozen=True)
class ConfigCommand:
    """A ``mbrl train <algo>`` command generated from the agent's config dataclass.

    Every field of ``config_type`` is a flag (nested ones dotted: ``--sac.critic-lr``), its default the preset's
    value for the given env or dataset; ``--preset`` picks the preset, ``--config FILE`` (YAML or JSON, e.g. a
    run's ``config.json``) lays its fields over the preset, ``--device`` sets every part's device, and flags
    override all of them.

    Attributes:
        name: the algorithm (``sac``, ``ravl``, ...).
        description: the command's help text.
        config_type: the agent's frozen config dataclass.
        target: ``"env"`` or ``"dataset"``: the flag naming what the agent trains on (a field of the config
            spelled so by its annotation).
        target_path: that field's dotted path in the config (``env_id``, ``loop.dataset``).
        preset: ``(target, preset_name, options) -> config``.
        run: ``(config, run_options, options) -> exit status``.
        options: a frozen dataclass of command options outside the config (e.g. a model to reuse), or None.
            ``preset`` sees them, so an option may shape the base config before flags override it.
        default_target: the target when the flag is not given (None: required).
        presets: the accepted ``--preset`` values.
        stored_extras: keys a run's config.json holds beside the config's fields (ignored by ``--config``).
        hidden: top-level fields of ``config_type`` that this command's agent never reads (``mbrl train sac``
            has no model): not offered as flags, so the help shows only what the command uses; they keep the
            preset's (or the ``--config`` file's) values and the run's config.json still holds every field.
    """

    name: str
    description: str
    config_type: type
    target: str
    target_path: str
    preset: Callable[[str, str, Any], Any]
    run: Callable[[Any, RunOptions, Any], int]
    options: type | None = None
    default_target: str | None = None
    presets: tuple[str, ...] = PRESETS
    stored_extras: tuple[str, ...] = ("algo",)
    hidden: tuple[str, ...] = ()


def read_config_file(path: str, command: ConfigCommand) -> dict[str, Any]:
    """The fields in ``path`` (YAML or JSON; a run directory means its ``config.json``), checked against
    ``command``: a run's stored extras (``algo``) are dropped, an ``algo`` of another command is refused."""
    import yaml

    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = file.read_text()
    try:  # JSON first: YAML 1.1 reads a JSON number such as 1e-06 as a string
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    try:
        data = yaml.safe_load(text) if data is None else data
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {file}: not YAML or JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {file}: expected a mapping of config fields, got {type(data).__name__}")
    algo = data.get("algo")
    if algo is not None and algo != command.name:
        raise ValueError(f"--config {file}: a {algo!r} run's config, not {command.name!r}")
    return {k: v for k, v in data.items() if k not in command.stored_extras}


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values, nested mappings merged key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _path_value(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _fields_of(kind: type | None) -> list[tuple[str, Any, dataclasses.Field[Any]]]:
    if kind is None:
        return []
    hints = typing.get_type_hints(kind, include_extras=True)
    return [(f.name, hints[f.name], f) for f in dataclasses.fields(kind)]


@dataclasses.dataclass(frozen=True)
class _Start:
    """What the first pass reads: the preset, the target, a config file's fields and the command's options."""

    preset: str
    target: str | None
    file_fields: dict[str, Any]
    options: Any
    device: str | None


def _first_pass(command: ConfigCommand, args: list[str], prog: str) -> _Start:
    """``--preset``, the target flag, ``--config`` and the command's options from ``args`` (the config's own
    flags are left for the second pass)."""
    pre = dataclasses.make_dataclass(
        "Pre",
        [
            ("preset", typing.Literal[command.presets], dataclasses.field(default="cpu")),  # type: ignore[valid-type]
            ("config", str | None, dataclasses.field(default=None)),
            ("device", str | None, dataclasses.field(default=None)),
            (command.target, str | None, dataclasses.field(default=None)),
            *[(n, t, dataclasses.field(default=f.default)) for n, t, f in _fields_of(command.options)],
        ],
        frozen=True,
    )
    rest = [a for a in args if a not in ("-h", "--help")]
    parsed: Any
    parsed, _ = tyro.cli(pre, args=rest, prog=prog, return_unknown_args=True, add_help=False)
    options = None
    if command.options is not None:
        options = command.options(**{n: getattr(parsed, n) for n, _, _ in _fields_of(command.options)})
    fields = read_config_file(parsed.config, command) if parsed.config is not None else {}
    target = getattr(parsed, command.target) or _path_value(fields, command.target_path) or command.default_target
    return _Start(parsed.preset, target, fields, options, parsed.device)


def run_config_command(command: ConfigCommand, args: list[str], prog: str) -> int:
    """Parse ``args`` for ``command`` and run it: the preset for the target, then the ``--config`` file's fields
    over it, then every flag over both (two passes: tyro shows the resulting values as the flags' defaults)."""
    from mbrl.run import config_from_dict, config_to_dict

    start = _first_pass(command, args, prog)
    target = start.target
    if target is None and ("-h" in args or "--help" in args):
        target = command.target.upper()  # help without a target: the preset's values for an unnamed one
    if target is None:
        raise CommandError(f"--{command.target} is required (or a --config file that names it)")
    base = command.preset(target, start.preset, start.options)
    if start.file_fields:
        try:
            base = config_from_dict(command.config_type, _merged(config_to_dict(base), start.file_fields))
        except ValueError as exc:
            raise ValueError(f"--config: {exc}") from None
    if start.device is not None:
        base = with_device(base, start.device)
    _plain_type_help(command.config_type)
    flag_type, flag_default = _with_hidden_fields(command.config_type, command.hidden, base)
    wrapper = dataclasses.make_dataclass(
        "Args",
        [
            ("preset", typing.Literal[command.presets], dataclasses.field(default=start.preset)),  # type: ignore[valid-type]
            ("config", str | None, dataclasses.field(default=None)),
            ("device", str | None, dataclasses.field(default=start.device)),
            *[(n, t, dataclasses.field(default=getattr(start.options, n))) for n, t, _ in _fields_of(command.options)],
            *[(n, t, dataclasses.field(default=f.default)) for n, t, f in _fields_of(RunOptions)],
            ("cfg", typing.Annotated[flag_type, tyro.conf.arg(name="")], dataclasses.field(default=flag_default)),
        ],
        frozen=True,
    )
    wrapper.__doc__ = plain_help(
        command.description + _WRAPPER_HELP + _attribute_help(command.options) + _attribute_help(RunOptions)
    )
    _plain_type_help(command.options)
    parsed: Any = tyro.cli(wrapper, args=args, prog=prog)
    run_options = RunOptions(**{n: getattr(parsed, n) for n, _, _ in _fields_of(RunOptions)})
    if run_options.overwrite and run_options.resume:
        raise CommandError("--overwrite deletes the run that --resume would continue: give one of them")
    if run_options.overwrite and run_options.run_dir is not None:
        clear_run_dir(Path(run_options.run_dir))
    config = parsed.cfg
    if command.hidden:  # back to the config type itself (the flags' subclass only hid fields)
        config = command.config_type(**{f.name: getattr(config, f.name) for f in dataclasses.fields(command.config_type)})
    return command.run(config, run_options, start.options)


def _with_hidden_fields(kind: type, hidden: tuple[str, ...], default: Any) -> tuple[type, Any]:
    """``(kind, default)`` when nothing is hidden; else a frozen subclass of ``kind`` whose ``hidden`` fields tyro
    suppresses (no flag, the default's value kept) and ``default`` as an instance of it."""
    if not hidden:
        return kind, default
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(hidden) - names)
    if unknown:
        raise ValueError(f"hidden: {kind.__name__} has no field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(kind, include_extras=True)
    suppressed = [
        (n, typing.Annotated[hints[n], tyro.conf.Suppress], dataclasses.field(default=getattr(default, n)))
        for n in hidden
    ]
    sub = dataclasses.make_dataclass(kind.__name__, suppressed, bases=(kind,), frozen=True)
    sub.__doc__ = kind.__doc__
    return sub, sub(**{n: getattr(default, n) for n in names})


_WRAPPER_HELP = """

Args:
    preset: paper (the released values and budget), cpu (the same method on a one-core budget, see
        docs/presets.md) or quick (smoke-test sizes); the flags below show its values.
    config: a YAML or JSON file of config fields (nested as in a run's config.json; a run directory means its
        config.json): they replace the preset's values, and flags replace theirs. A run's own config.json
        reproduces the run.
    device: the device of every part that has one (cpu, cuda, auto = cuda when available); the per-part
        flags (sac.device, ensemble.device, ...) override it.
"""


_ARG_CONFIG: Any = type(tyro.conf.arg())


def config_flags(kind: type, prefix: str = "", hidden: tuple[str, ...] = ()) -> list[str]:
    """The flags (without ``--``) tyro makes of a config dataclass's fields, nested ones dotted
    (``sac.critic-lr``), a field annotated ``tyro.conf.arg(name=...)`` under its name (``""``: its fields
    unprefixed) plus its aliases; none for the top-level fields named in ``hidden``."""
    flags: list[str] = []
    for name, hint, _ in _fields_of(kind):
        if name in hidden:
            continue
        meta: Any = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, _ARG_CONFIG)), None)
        kind_of_field = typing.get_args(hint)[0] if meta is not None else hint
        flag = (meta.name if meta is not None and meta.name is not None else name).replace("_", "-")
        if dataclasses.is_dataclass(kind_of_field) and isinstance(kind_of_field, type):
            flags += config_flags(kind_of_field, f"{prefix}{flag}." if flag else prefix)
            continue
        flags.append(prefix + flag)
        if meta is not None and meta.aliases:
            flags += [alias.removeprefix("--") for alias in meta.aliases]
    return flags


def command_flags(command: ConfigCommand) -> frozenset[str]:
    """Every flag of a config command: ``--preset``, ``--config``, its options, the run options, its config's."""
    fixed = ["preset", "config", "device", *(n.replace("_", "-") for n, _, _ in _fields_of(command.options))]
    fixed += [n.replace("_", "-") for n, _, _ in _fields_of(RunOptions)]
    return frozenset(fixed + config_flags(command.config_type, hidden=command.hidden))


def _attribute_help(kind: type | None) -> str:
    """The ``Attributes:`` section of a dataclass's docstring, indented as entries of an ``Args:`` section."""
    import inspect

    doc = inspect.cleandoc(kind.__doc__ or "") if kind is not None else ""
    _, found, section = doc.partition("Attributes:\n")
    if not found:
        return ""
    lines = section.split("\n\n")[0].splitlines()
    return "".join(f"    {line.strip() if not line.startswith('        ') else '    ' + line.strip()}\n" for line in lines)


def clear_run_dir(path: Path) -> None:
    """Delete the run in ``path`` (``--overwrite``): only a directory that holds a run's ``config.json``."""
    import shutil

    if not path.exists():
        return
    if not (path / "config.json").is_file():
        if path.is_dir() and not any(path.iterdir()):
            return
        raise CommandError(f"--overwrite: {path} holds no run (no config.json); not deleting it, remove it yourself")
    shutil.rmtree(path)


def _load(target: str) -> Callable[..., Any]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|obj):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


_OWN_DEFAULT = re.compile(r"\(default: ([^)]*)\)")


def plain_help(text: str) -> str:
    """Docstring text for a terminal: Sphinx roles and double backquotes removed (``:func:`~a.b.c``` -> ``c``;
    ````x```` -> ``x``), and a docstring's own ``(default: the preset's)`` written ``(None: the preset's)``,
    so that it reads with the ``(default: None)`` tyro adds instead of repeating the word."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1), text)
    text = _LITERAL.sub(r"\1", text)
    return _OWN_DEFAULT.sub(r"(None: \1)", text)


def _for_terminal(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its docstring in :func:`plain_help` form, for tyro's help (tyro reads the description and
    the ``Args:`` section from the function itself; only this CLI process sees the change)."""
    func.__doc__ = plain_help(func.__doc__ or "")
    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError):  # pragma: no cover - an unresolvable annotation: leave the help as it is
        hints = {}
    for hint in hints.values():
        _plain_type_help(hint)
    return func


def _plain_type_help(kind: Any, seen: set[type] | None = None) -> None:
    """A config dataclass, the ones it derives from and the ones nested in it (their fields' help is in their
    docstrings) with their docstrings in :func:`plain_help` form."""
    seen = set() if seen is None else seen
    if dataclasses.is_dataclass(kind) and isinstance(kind, type) and kind not in seen:
        seen.add(kind)
        kind.__doc__ = plain_help(kind.__doc__ or "")
        for base in kind.__mro__[1:]:  # tyro reads a field's help from the first class in the MRO that has it
            _plain_type_help(base, seen)
        for field_type in typing.get_type_hints(kind).values():
            _plain_type_help(field_type, seen)


def _usage(table: dict[str, Any], prefix: str) -> str:
    lines = [f"usage: {prefix} COMMAND [--help]", "", "commands:"]
    for name, target in sorted(table.items()):
        if isinstance(target, dict):
            lines.append(f"  {name} {{{', '.join(sorted(target))}}}")
        else:
            command = _load(target)
            doc = (command.description if isinstance(command, ConfigCommand) else command.__doc__ or "").strip().splitlines()
            lines.append(f"  {name:<12} {doc[0] if doc else ''}")
    return "\n".join(lines)


def version() -> str:
    """The installed toolkit's version (``mbrl --version``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("mbrl-toolkit")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mbrl`` console script. A closed output pipe (``mbrl ... | head``) ends it quietly."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a reader that left early is met here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away: silence the interpreter's flush of stdout at exit, as `head` users expect.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--video" in args and not os.environ.get("MUJOCO_GL"):
        os.environ["MUJOCO_GL"] = "egl"  # off-screen rendering on a machine without a display (read at import)
    table: dict[str, Any] = COMMANDS
    prefix = "mbrl"
    if args[:1] == ["--version"]:
        print(f"mbrl {version()}")
        return 0
    while True:
        if not args or args[0] in ("-h", "--help"):
            print(_usage(table, prefix))
            return 0
        name = args.pop(0)
        if name not in table:
            print(f"{prefix}: unknown command {name!r}\n\n{_usage(table, prefix)}", file=sys.stderr)
            return 2
        prefix = f"{prefix} {name}"
        if isinstance(table[name], dict):
            table = table[name]
            continue
        func = _load(table[name])
        try:
            if isinstance(func, ConfigCommand):
                result = run_config_command(func, args, prefix)
            else:
                result = tyro.cli(_for_terminal(func), args=args, prog=prefix)
        except (CommandError, FileNotFoundError, ValueError, KeyError) as exc:
            # KeyError's str() wraps its message in quotes; other messages may end in a quoted value.
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            print(f"{prefix}: error: {message}", file=sys.stderr)
            return 2
        return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    # `python -m mbrl.cli`: run the imported module's main, so that the command objects registered in the table
    # (instances of mbrl.cli.ConfigCommand) are recognised as such, not as instances of this __main__ copy.
    from mbrl.cli import main as _imported_main

    raise SystemExit(_imported_main())
