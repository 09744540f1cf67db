"""The installed toolkit owns one import name: a wheel built from this repository installs ``mbrl`` with the
``agents/`` and ``envs/`` folders as ``mbrl.agents`` and ``mbrl.envs``, and no top-level ``agents`` or ``envs``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, capture_output=True)


def _source_copy(dest: Path) -> Path:
    """The repository's tracked files (as in the working tree, links kept as links): building there leaves
    no ``build/`` folder in the repository."""
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    for name in listed.splitlines():
        source, target = REPO / name, dest / name
        if not source.is_symlink() and not source.is_file():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


def test_wheel_installs_agents_and_envs_under_mbrl(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source))
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.endswith(".dist-info/")}
    assert {"agents", "envs"}.isdisjoint(tops), sorted(tops)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mbrl/agents/dyna.py", "mbrl/envs/registry.py", "mbrl/loops.py"} <= names
    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    probe = (
        "import importlib.util, mbrl, mbrl.agents.loading, mbrl.envs; "
        f"assert mbrl.__file__.startswith({str(target)!r}), mbrl.__file__; "
        "assert importlib.util.find_spec('agents') is None and importlib.util.find_spec('envs') is None; "
        "print(mbrl.envs.get_spec('Hopper-v5').obs_dim)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "11"
    failed = subprocess.run([sys.executable, "-c", "import agents"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and "No module named 'agents'" in failed.stderr
