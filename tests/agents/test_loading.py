"""``mbrl.load(run_dir).predict(obs)`` for every run type, and ``mbrl export``: the policy alone, loadable with
``weights_only=True``, giving the same deterministic actions without the toolkit's classes."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import mbrl
from mbrl.agents.loading import exported_action
from mbrl.cli import main
from mbrl.data import save_npz
from tests.agents.test_offline import _random_hopper


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "hopper.npz"
    save_npz(_random_hopper(800, seed=5), path)
    return str(path)


def _train(kind: str, run: Path, hopper_file: str) -> None:
    if kind == "sac":
        args = ["train", "sac", "--env", "Pendulum-v1", "--total-steps", "1050", "--run-dir", str(run)]
    elif kind == "dyna":
        args = ["train", "dyna", "--env", "InvertedPendulum-v5", "--total-steps", "600", "--run-dir", str(run)]
    else:
        args = ["train", kind, "--dataset", hopper_file, "--run-dir", str(run), "--preset", "quick", "--updates", "20"]
    assert main(args) == 0


@pytest.mark.parametrize("kind", ["sac", "dyna", "bc", "mopo", "ravl"])
def test_load_predict_and_export_every_run_type(kind: str, hopper_file: str, tmp_path: Path) -> None:
    run = tmp_path / kind
    _train(kind, run, hopper_file)
    agent = mbrl.load(run)
    assert agent.algo == kind and agent.kind == ("online" if kind in ("sac", "dyna") else "offline")
    env = gym.make({"sac": "Pendulum-v1", "dyna": "InvertedPendulum-v5"}.get(kind, "Hopper-v5"))
    obs, _ = env.reset(seed=0)
    action, state = agent.predict(obs, deterministic=True)
    assert state is None and action.shape == env.action_space.shape and env.action_space.contains(action)
    batch = np.stack([obs, obs + 0.01])
    actions, _ = agent.predict(batch)
    assert actions.shape == (2, *env.action_space.shape)
    np.testing.assert_allclose(actions[0], action, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="obs must be"):
        agent.predict(np.zeros(obs.shape[0] + 1))
    # export: weights only, and the README snippet's arithmetic gives the same actions
    out = tmp_path / f"{kind}.pt"
    assert main(["export", str(run), str(out)]) == 0
    policy = torch.load(out, weights_only=True)
    assert policy["obs_dim"] == obs.shape[0]
    np.testing.assert_allclose(exported_action(policy, batch), actions, rtol=1e-5, atol=1e-6)


def test_readme_snippet_runs_an_exported_policy_without_the_toolkit(hopper_file: str, tmp_path: Path) -> None:
    _train("bc", tmp_path / "bc", hopper_file)
    assert main(["export", str(tmp_path / "bc"), str(tmp_path / "policy.pt")]) == 0
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = readme.split("<!-- export-snippet -->")[1].split("```python")[1].split("```")[0]
    namespace: dict[str, object] = {"__name__": "snippet"}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(snippet, "README snippet", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert isinstance(namespace["total"], float) and namespace["steps"] > 0


def test_eval_video_writes_a_playable_mp4(hopper_file: str, tmp_path: Path) -> None:
    """`mbrl eval RUN --video` (a subprocess: MuJoCo picks its GL backend at import) writes RUN_DIR/videos/eval.mp4
    with one frame per step of the evaluation episode plus the first, at the env's frame rate."""
    import json
    import subprocess
    import sys

    import imageio.v2 as imageio

    run = tmp_path / "bc"
    _train("bc", run, hopper_file)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from mbrl.cli import main; sys.exit(main())", "eval", str(run),
         "--episodes", "1", "--json", "--video"],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "MUJOCO_GL": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    video = Path(out["video"])
    assert video == run / "videos" / "eval.mp4" and video.stat().st_size > 1000
    reader = imageio.get_reader(video)
    meta = reader.get_meta_data()
    frames = [f for f in reader]
    assert frames[0].shape == (240, 320, 3) and frames[0].std() > 1  # a picture, not a blank
    env = gym.make("Hopper-v5")
    assert meta["fps"] == env.metadata["render_fps"]
    length = mbrl.load(run).agent.evaluate(1, seed=12345)["eval/length_mean"]
    assert len(frames) == int(length) + 1
    # ... and the same episode in TensorBoard: an animated GIF under eval/video at the run's last update
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    (image,) = events.Images("eval/video")
    gif = Image.open(__import__("io").BytesIO(image.encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == len(frames) and image.step == mbrl.load(run).agent.num_updates
    assert (image.width, image.height) == (160, 120)
