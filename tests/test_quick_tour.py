"""The README's quick tour, every command as written, in order, in a fresh directory, at quick size
(``scripts/quick_tour.py``: the tour's commands, flags, files and run directories are checked, not its budgets)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mbrl.cli import main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from quick_tour import at_quick_size, prepare, subprocess_argv, tour_commands  # noqa: E402


def test_the_tour_parses_into_the_commands_it_shows() -> None:
    commands = tour_commands()
    assert len(commands) >= 25
    assert commands[0][0] == "export" and all(c[0] in ("mbrl", "python", "export") for c in commands)
    firsts = [" ".join(c[:3]) for c in commands]
    for expected in ("mbrl dataset make", "mbrl train ravl", "mbrl train sac", "mbrl sweep scripts/sweeps/ip_sac_dyna.yaml"):
        assert expected in firsts


@pytest.mark.xdist_group("ray")  # the tour runs a Ray sweep: on the Ray tests' worker (see tests/sweep/test_sweep_ray.py)
def test_every_tour_command_runs_at_quick_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "tour"
    prepare(workdir)
    monkeypatch.chdir(workdir)
    ran = []
    for argv in tour_commands():
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            monkeypatch.setenv(name, value)
            continue
        argv = at_quick_size(argv, workdir)
        if argv[0] == "python" or argv[:2] == ["mbrl", "sweep"]:  # Ray's workers cannot pickle pytest's capture
            proc = subprocess.run(subprocess_argv(argv), capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, (argv, proc.stderr[-2000:])
        else:
            assert main(argv[1:]) == 0, argv
        ran.append(argv)
    # what the tour says it writes is there
    for path in ("data/hopper-medium.hdf5", "data/expert-labelled.npz", "runs/ip/videos/eval.mp4",
                 "runs/hopper-sac-s1/config.json", "runs/model/err.png", "runs/sweeps/ip-sac-vs-dyna/report.md"):
        assert (workdir / path).is_file(), path
    assert re.search(r'"seed": 1\b', (workdir / "runs/hopper-sac-s1/config.json").read_text())
    assert len(ran) == len(tour_commands()) - 1
