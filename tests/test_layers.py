"""The core (``mbrl/``) does not import the layers above it: no ``agents`` import anywhere in ``mbrl/`` but the
lazy ``mbrl.load`` re-export, no ``envs`` import at all (the env knowledge is passed in: ``mbrl.types.EnvInfo``),
and only the command layer (the CLI, its command modules, the sweep tools) imports the CLI or the sweeps."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "mbrl"
AGENTS_ALLOWED = {"mbrl/__init__.py"}  # mbrl.load(run_dir): a lazy re-export of mbrl.agents.loading.load
COMMAND_LAYER = ("mbrl/cli.py", "mbrl/sweep/", "commands.py")  # the CLI, the sweeps, the command modules


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_nothing_above_it() -> None:
    agents, envs, commands = set(), set(), set()
    for path in sorted(CORE.rglob("*.py")):
        name = str(path.relative_to(CORE.parent))
        if name.startswith(("mbrl/agents/", "mbrl/envs/")):  # the layers above, installed under mbrl (links)
            continue
        found = _imports(path)
        layers = {".".join(module.split(".")[:2]) if module.startswith("mbrl.") else module.split(".")[0]
                  for module in found}
        if layers & {"agents", "mbrl.agents"}:
            agents.add(name)
        if layers & {"envs", "mbrl.envs"}:
            envs.add(name)
        in_command_layer = name.startswith(COMMAND_LAYER[:2]) or name.endswith(COMMAND_LAYER[2])
        if not in_command_layer and any(m.startswith(("mbrl.cli", "mbrl.sweep")) or m.endswith("commands") for m in found):
            commands.add(name)
    assert agents == AGENTS_ALLOWED, f"mbrl/ modules importing agents/: {sorted(agents - AGENTS_ALLOWED)}"
    assert not envs, f"mbrl/ modules importing envs/: {sorted(envs)}"
    assert not commands, f"core modules importing the CLI, the sweeps or a command module: {sorted(commands)}"
