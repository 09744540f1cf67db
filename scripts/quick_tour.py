"""Run the README's quick tour, every command as written and in order, in a fresh directory, at quick size.

``--preset quick`` for the training commands, small step/update/epoch counts for the flags that set them, and a
sweep over one seed: the tour's commands, flags, files and run directories are exercised, not its budgets.
``tests/test_quick_tour.py`` runs it in ``make test``; this script also writes a transcript (each command as run
and the last lines it printed) for the README. Usage::

    python scripts/quick_tour.py --dir /tmp/tour --transcript docs/results/quick_tour.txt
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def tour_commands(readme: Path = REPO / "README.md") -> list[list[str]]:
    """The lines of the README's ``<!-- quick-tour -->`` bash block, split as the shell would (comments dropped)."""
    text = readme.read_text()
    block = text.split("<!-- quick-tour -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced by ``value`` (or the flag appended)."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[: i + 1], value, *argv[i + 2 :]]
    return [*argv, flag, value]


def at_quick_size(argv: list[str], workdir: Path) -> list[str]:
    """A tour command at quick size: quick presets, few steps/updates/epochs, a sweep over one seed (its spec
    rewritten into ``workdir``)."""
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


def prepare(workdir: Path) -> None:
    """A fresh working directory that sees the repository's ``scripts/`` (the tour names files in it)."""
    workdir.mkdir(parents=True, exist_ok=False)
    (workdir / "scripts").symlink_to(REPO / "scripts")


def subprocess_argv(argv: list[str]) -> list[str]:
    """How to run a tour command with this interpreter: ``mbrl ...`` as ``python -m mbrl.cli ...``."""
    return [sys.executable, "-m", "mbrl.cli", *argv[1:]] if argv[0] == "mbrl" else [sys.executable, *argv[1:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="a new directory to run the tour in")
    parser.add_argument("--transcript", type=Path, default=None, help="write commands and their last lines here")
    parser.add_argument("--lines", type=int, default=2, help="last output lines kept per command")
    args = parser.parse_args(argv)
    prepare(args.dir)
    env = dict(os.environ)
    log: list[str] = []
    start = time.perf_counter()
    for words in tour_commands():
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name] = value
            log.append(f"$ {shlex.join(words)}")
            continue
        quick = at_quick_size(words, args.dir.resolve())
        t0 = time.perf_counter()
        proc = subprocess.run(subprocess_argv(quick), cwd=args.dir, env=env, capture_output=True, text=True)
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and "\r" not in ln]
        log.append(f"$ {shlex.join(quick)}    # {time.perf_counter() - t0:.1f} s, exit {proc.returncode}")
        log += [f"  {ln[:160]}" for ln in lines[-args.lines :]]
        print(log[-1 - min(len(lines), args.lines)], flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
    log.append(f"# the whole tour at quick size: {time.perf_counter() - start:.0f} s")
    if args.transcript is not None:
        args.transcript.parent.mkdir(parents=True, exist_ok=True)
        args.transcript.write_text("\n".join(log) + "\n")
    print(log[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
