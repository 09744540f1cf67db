"""The ``mbrl`` command. Thin: every subcommand is a typed function elsewhere; tyro builds its CLI.

Two levels: ``mbrl GROUP COMMAND ...`` (e.g. ``mbrl dataset info``) or ``mbrl COMMAND ...`` (e.g. ``mbrl eval``).
Commands are registered as ``"module:function"`` strings and imported lazily, so ``mbrl --help`` is fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import typing
from collections.abc import Callable
from typing import Any

import tyro

# group -> command -> "module:function" (or a top-level command -> "module:function").
COMMANDS: dict[str, dict[str, str] | str] = {
    "dataset": {
        "info": "mbrl.data.commands:info",
        "convert": "mbrl.data.commands:convert",
        "make": "agents.offline_commands:make_dataset",
        "label": "agents.idm_labeling:label_dataset",
    },
    "train": {
        "ravl": "agents.offline_commands:train_ravl",
        "mopo": "agents.offline_commands:train_mopo",
        "bc": "agents.offline_commands:train_bc",
        "dyna": "agents.commands:train_dyna",
        "sac": "agents.commands:train_sac",
        "idm-label": "agents.idm_labeling:train_idm_label",
        "lipschitz": "agents.lipschitz:train_lipschitz",
    },
    "eval": "agents.commands:eval_run",
    "export": "agents.loading:export_command",
    "run-demo": "agents.commands:run_demo",
    "plot": "mbrl.logging:plot_command",
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
    seen: set[type] = set()

    def clean(kind: Any) -> None:  # nested config dataclasses carry their fields' help in their docstrings
        if dataclasses.is_dataclass(kind) and isinstance(kind, type) and kind not in seen:
            seen.add(kind)
            kind.__doc__ = plain_help(kind.__doc__ or "")
            for field_type in typing.get_type_hints(kind).values():
                clean(field_type)

    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError):  # pragma: no cover - an unresolvable annotation: leave the help as it is
        hints = {}
    for hint in hints.values():
        clean(hint)
    return func


def _usage(table: dict[str, Any], prefix: str) -> str:
    lines = [f"usage: {prefix} COMMAND [--help]", "", "commands:"]
    for name, target in sorted(table.items()):
        if isinstance(target, dict):
            lines.append(f"  {name} {{{', '.join(sorted(target))}}}")
        else:
            doc = (_load(target).__doc__ or "").strip().splitlines()
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
            result = tyro.cli(_for_terminal(func), args=args, prog=prefix)
        except (CommandError, FileNotFoundError, ValueError, KeyError) as exc:
            # KeyError's str() wraps its message in quotes; other messages may end in a quoted value.
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            print(f"{prefix}: error: {message}", file=sys.stderr)
            return 2
        return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
