"""``mbrl dataset info`` / ``convert`` through the real command dispatcher and console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from mbrl.cli import main
from mbrl.data import load_dataset
from tests.data.conftest import Episodes


@pytest.fixture
def minari_hopper(minari_root: Path, hopper_episodes: Episodes) -> str:
    """A Minari dataset made with Minari's own API from real Hopper-v5 random-action episodes."""
    e = hopper_episodes
    buffers = [
        EpisodeBuffer(
            observations=list(o),
            actions=list(a),
            rewards=list(r),
            terminations=list(te),
            truncations=list(tr),
        )
        for o, a, r, te, tr in zip(e.observations, e.actions, e.rewards, e.terminations, e.truncations)
    ]
    env = gymnasium.make("Hopper-v5", max_episode_steps=40)
    minari.create_dataset_from_buffers(
        "ext/hopper/random-v0", buffers, env=env, eval_env=env, algorithm_name="random", author="tests",
        author_email="t@example.org", code_permalink="https://example.org", description="random Hopper",
    )  # fmt: skip
    return "ext/hopper/random-v0"


def test_info_json_on_minari_dataset(
    minari_hopper: str, hopper_episodes: Episodes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dataset", "info", minari_hopper, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one JSON object on one line
    info = json.loads(out)
    returns = np.array([r.astype(np.float32).sum(dtype=np.float64) for r in hopper_episodes.rewards])
    assert info["n_transitions"] == sum(len(r) for r in hopper_episodes.rewards)
    assert info["n_episodes"] == len(hopper_episodes.rewards)
    assert info["obs_dim"] == 11 and info["action_dim"] == 3
    assert info["env_id"] == "Hopper-v5"
    assert info["return_mean"] == pytest.approx(returns.mean(), rel=1e-6)
    assert info["return_min"] == pytest.approx(returns.min(), rel=1e-6)
    assert info["return_max"] == pytest.approx(returns.max(), rel=1e-6)
    assert info["n_terminals"] == sum(int(t.sum()) for t in hopper_episodes.terminations)
    assert info["n_timeouts"] == sum(int(t.sum()) for t in hopper_episodes.truncations)


def test_info_text_on_hdf5(three_episode_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "info", str(three_episode_file)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["transitions"].split()[1] == "6"
    assert lines["episodes"].split()[1] == "3"
    assert lines["obs_dim"].split()[1] == "2" and lines["action_dim"].split()[1] == "1"
    assert lines["env"].split()[1] == "unknown"
    assert lines["return"].split()[1:] == ["mean", "7.33333", "std", "1.24722", "min", "6", "max", "9"]
    assert lines["reward"].split()[1:3] == ["mean", "3.66667"]
    assert lines["fingerprint"].split()[1] == load_dataset(three_episode_file).fingerprint()


def test_convert_chain_is_lossless(
    tmp_path: Path, minari_root: Path, three_episode_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = load_dataset(three_episode_file)
    assert main(["dataset", "convert", str(three_episode_file), str(tmp_path / "a.npz")]) == 0
    assert main(["dataset", "convert", str(tmp_path / "a.npz"), "mine/toy-v0"]) == 0
    assert main(["dataset", "convert", "mine/toy-v0", str(tmp_path / "b.h5")]) == 0
    assert "wrote 6 transitions (3 episodes)" in capsys.readouterr().out
    final = load_dataset(tmp_path / "b.h5")
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(final, key), getattr(original, key), err_msg=key)
    # the derived next state of the terminal row (the next episode's reset) stays marked unknown through Minari
    np.testing.assert_array_equal(final.known_next_obs(), [True, True, False, True, True, True])
    assert final.fingerprint() == original.fingerprint()  # the data's, whatever the file format
    # Converting onto an existing Minari id is refused with one line, exit 2.
    assert main(["dataset", "convert", str(tmp_path / "a.npz"), "mine/toy-v0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err


def test_help_names_the_positional_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "info", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "SOURCE" in out and "--env" in out and "--json" in out


def test_console_script(tmp_path: Path, three_episode_file: Path) -> None:
    """The installed ``mbrl`` script: JSON on success, one line and exit 2 on bad input."""
    mbrl = Path(sys.executable).parent / "mbrl"
    ok = subprocess.run(
        [mbrl, "dataset", "info", three_episode_file, "--json"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n_transitions"] == 6
    bad = tmp_path / "bad.npz"
    np.savez(bad, observations=np.zeros((4, 2)), rewards=np.zeros(4))
    res = subprocess.run([mbrl, "dataset", "info", bad], capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == ""
    assert (
        res.stderr
        == "mbrl dataset info: error: bad.npz: missing required keys 'actions', 'terminals' (found: observations, rewards)\n"
    )


def test_version_and_a_closed_pipe(three_episode_file: Path) -> None:
    """`mbrl --version` names the version; `mbrl dataset info F | head` (the reader gone) ends without a traceback."""
    mbrl = Path(sys.executable).parent / "mbrl"
    out = subprocess.run([mbrl, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mbrl ") and out.stdout.split()[1][0].isdigit()
    reader_gone = subprocess.Popen([mbrl, "dataset", "info", three_episode_file], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
    assert reader_gone.stdout is not None and reader_gone.stderr is not None
    reader_gone.stdout.close()  # before the command writes anything
    err = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("command", [["train", "ravl"], ["train", "dyna"], ["run-demo"], ["model", "train"]])
def test_help_has_no_sphinx_markup_and_says_each_default_once(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and ":class:" not in out, out
    flat = " ".join(out.split())
    assert "(default: the preset's). (default:" not in flat


def test_plain_help_rewrites_roles_literals_and_own_defaults() -> None:
    from mbrl.cli import plain_help

    assert plain_help("see :func:`~mbrl.models.fit.fit` and :class:`Foo`") == "see fit and Foo"
    assert plain_help("``run_dir`` (default: the preset's).") == "run_dir (None: the preset's)."
