"""The README's quick tour, every command as written, in order, in a fresh directory: at quick size (``--preset
quick`` for the training commands and small step/update counts for the flags that set them), so the tour's
commands, flags, files and run directories are checked, not its budgets."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mbrl.cli import main

REPO = Path(__file__).resolve().parents[1]


def tour_commands() -> list[list[str]]:
    """The lines of the README's ``<!-- quick-tour -->`` bash block, split as the shell would (comments dropped)."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- quick-tour -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced by ``value`` (or the flag appended)."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[: i + 1], value, *argv[i + 2 :]]
    return [*argv, flag, value]


def at_quick_size(argv: list[str], workdir: Path) -> list[str]:
    """A tour command at quick size: quick presets, few steps/updates/epochs, a sweep over one seed."""
    head = argv[:3]
    if head[:2] == ["mbrl", "train"]:
        argv = [*head, "--preset", "quick", *argv[3:]]
        if "--total-steps" in argv:
            argv = _set(argv, "--total-steps", "300")
        if "--updates" in argv or head[2] == "idm-label":
            argv = _set(argv, "--updates", "40")
        if head[2] == "idm-label":
            argv = _set(argv, "--idm-preset", "quick")
    elif head == ["mbrl", "model", "train"]:
        argv = [*argv, "--fit.max-epochs", "2", "--ensemble.hidden", "32"]
    elif head == ["mbrl", "model", "train-dynamics-reward"]:
        argv = [*argv, "--preset", "quick", "--iterations", "40"]
    elif head[:2] == ["mbrl", "sweep"]:
        spec = yaml.safe_load((REPO / argv[2]).read_text())
        spec.update(seeds=[0], args={**spec.get("args", {}), "total-steps": 300, "preset": "quick"})
        quick = workdir / "quick_sweep.yaml"
        quick.write_text(yaml.safe_dump(spec))
        argv = [*argv[:2], str(quick), *argv[3:]]
    return argv


def test_the_tour_parses_into_the_commands_it_shows() -> None:
    commands = tour_commands()
    assert len(commands) >= 25
    assert commands[0][0] == "export" and all(c[0] in ("mbrl", "python", "export") for c in commands)
    firsts = [" ".join(c[:3]) for c in commands]
    for expected in ("mbrl dataset make", "mbrl train ravl", "mbrl train sac", "mbrl sweep scripts/sweeps/ip_sac_dyna.yaml"):
        assert expected in firsts


def test_every_tour_command_runs_at_quick_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    ran = []
    for argv in tour_commands():
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            monkeypatch.setenv(name, value)
            continue
        argv = at_quick_size(argv, tmp_path)
        if argv[0] == "python" or argv[:2] == ["mbrl", "sweep"]:  # Ray's workers cannot pickle pytest's capture
            command = [sys.executable, *argv[1:]] if argv[0] == "python" else [sys.executable, "-m", "mbrl.cli", *argv[1:]]
            proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, (argv, proc.stderr[-2000:])
        else:
            assert main(argv[1:]) == 0, argv
        ran.append(argv)
    # what the tour says it writes is there
    for path in ("data/hopper-medium.hdf5", "data/expert-labelled.npz", "runs/ip/videos/eval.mp4",
                 "runs/hopper-sac-s1/config.json", "runs/model/err.png", "runs/sweeps/ip-sac-vs-dyna/report.md"):
        assert (tmp_path / path).is_file(), path
    assert re.search(r'"seed": 1\b', (tmp_path / "runs/hopper-sac-s1/config.json").read_text())
    assert len(ran) == len(tour_commands()) - 1
