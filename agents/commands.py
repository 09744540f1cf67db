"""``mbrl train dyna|sac``, ``mbrl eval`` and ``mbrl run-demo``: thin wrappers that build configs and run loops."""

from __future__ import annotations

import json as json_lib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mbrl.agents.dyna import DynaAgent, DynaConfig, dyna_preset, sac_preset
from mbrl.checkpoint import config_to_dict
from mbrl.cli import ConfigCommand, RunOptions
from mbrl.logging import Logger, write_tensorboard_video
from mbrl.plotting import plot_run
from mbrl.rl.runtime import tune_allocator
from mbrl.run import RunDir, check_run_dir, prepare_run_dir, write_json_atomic
from mbrl.types import Metrics
from mbrl.utils import with_device


def default_run_dir(algo: str, env: str) -> str:
    """``runs/<algo>-<env>-<YYYYmmdd-HHMMSS>``: a new run's directory when none is given (never an old run's)."""
    import time

    base = f"runs/{algo}-{env}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while Path(name).exists():  # a second run within the same second
        n += 1
        name = f"{base}-{n}"
    return name


def run_online(
    config: DynaConfig,
    run_dir: str | None,
    resume: bool,
    on_model_refit: Callable[[DynaAgent, int], Metrics] | None = None,
    algo: str | None = None,
) -> dict[str, float]:
    """Run (or resume) an online Dyna/SAC run in ``run_dir``; returns the final evaluation.

    ``run_dir=None`` makes a new one (:func:`default_run_dir`; ``algo`` names it, default dyna/sac);
    ``on_model_refit`` is passed to :class:`DynaAgent` (extra metrics after each model refit, e.g. the Lipschitz
    agent's diagnostics).
    """
    if run_dir is None:
        if resume:
            raise ValueError("--resume needs the --run-dir of the run to continue")
        run_dir = default_run_dir(algo or ("dyna" if config.use_model else "sac"), config.env_id)
    tune_allocator()
    check_run_dir(run_dir, config, resume=resume)
    agent = DynaAgent(config, run_dir=Path(run_dir), on_model_refit=on_model_refit)  # validates env and model
    run = prepare_run_dir(run_dir, config, resume=resume)
    if config.total_steps <= agent.policy_start:
        print(
            f"warning: --total-steps {config.total_steps} ends within the {agent.policy_start} random warm-up steps: "
            "no SAC update will be made (give more steps)",
            file=sys.stderr,
        )
    resumed = agent.resume() if resume else False
    start = agent.step if resumed else None
    if resumed:
        print(f"resumed {run.path} at step {agent.step}", file=sys.stderr)
    desc = f"{algo or ('dyna' if config.use_model else 'sac')} {config.env_id}"
    with Logger(run.path, total=config.total_steps, desc=desc, resume_step=start) as logger:
        logger.set_step(agent.step)
        result = agent.learn(logger)
    plots = plot_run(run.path)
    print(json_lib.dumps({k.removeprefix("eval/"): v for k, v in result.items()}))
    print(
        f"run dir: {run.path}  (TensorBoard: tensorboard --logdir {run.path}; plots: {', '.join(map(str, plots))})"
    )
    return result


@dataclass(frozen=True)
class DynaOptions:
    """Options of ``mbrl train dyna`` outside its config.

    Attributes:
        model: ensemble (probabilistic, the preset's members), single (one probabilistic member), or losse
            (Losse-FTL sparse linear model, updated once per new batch of real transitions, no replay). It sets
            the config fields it implies (ensemble.num-members/num-elites; model-kind and model-training); the
            flags override them.
    """

    model: Literal["ensemble", "single", "losse"] = "ensemble"


def dyna_config(env: str, preset: str, model: str = "ensemble") -> DynaConfig:
    """The ``preset``'s Dyna config for ``env`` with the ``--model`` choice applied."""
    config = dyna_preset(env, preset)  # type: ignore[arg-type]
    if model == "single":
        config = replace(config, ensemble=replace(config.ensemble, num_members=1, num_elites=1))
    elif model == "losse":
        config = replace(config, model_kind="losse", model_training="online")
    return config


def _run_online_command(algo: str) -> Callable[[DynaConfig, RunOptions, object], int]:
    def run(config: DynaConfig, options: RunOptions, _: object) -> int:
        run_online(config, options.run_dir, options.resume, algo=algo)
        return 0

    return run


TRAIN_DYNA = ConfigCommand(
    name="dyna",
    description="Train MBPO-style Dyna (SAC on real + model rollouts) on a real env.",
    config_type=DynaConfig,
    target="env",
    target_path="env_id",
    preset=lambda env, preset, options: dyna_config(env, preset, options.model),
    run=_run_online_command("dyna"),
    options=DynaOptions,
    default_target="InvertedPendulum-v5",
)

# DynaConfig fields that model-free SAC never reads (use_model is False): not flags of `mbrl train sac`.
SAC_HIDDEN_FIELDS = (
    "use_model", "model_training", "model_kind", "epoch_length", "model_train_every", "rollouts_per_step",
    "rollout", "model_retain_refits", "real_ratio", "ensemble", "losse", "fit",
)

TRAIN_SAC = ConfigCommand(
    name="sac",
    description=(
        "Train model-free SAC (the toolkit's learner, in the Dyna loop without a model) on a real env: the "
        "reference for model-based agents. Any gymnasium env with a Box action space."
    ),
    config_type=DynaConfig,
    target="env",
    target_path="env_id",
    preset=lambda env, preset, _: sac_preset(env, preset),  # type: ignore[arg-type]
    run=_run_online_command("sac"),
    default_target="InvertedPendulum-v5",
    hidden=SAC_HIDDEN_FIELDS,
)


def eval_run(
    run_dir: str,
    /,
    episodes: int = 10,
    json: bool = False,
    seed: int = 12345,
    video: bool = False,
    video_episodes: int = 1,
    device: str | None = None,
) -> int:
    """Evaluate the latest checkpoint of a run: mean/std return (and normalized score for offline runs).

    Args:
        run_dir: a run directory written by ``mbrl train ...``.
        episodes: evaluation episodes.
        json: print one JSON object (``return_mean, return_std, episodes``[, ``normalized_score``]).
        seed: seed of the first evaluation episode.
        video: also write ``RUN_DIR/videos/eval.mp4``: ``video_episodes`` deterministic episodes rendered
            off-screen (MuJoCo's EGL backend unless MUJOCO_GL says otherwise).
        video_episodes: episodes in the video.
        device: where the policy runs (cpu, cuda, auto = cuda when available; default: the run's own device).
    """
    run = RunDir(Path(run_dir))
    if not run.config_path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    stored = run.read_config()
    if stored.get("algo") == "hypercrl":  # MPC on a learned model (mbrl run-demo)
        from mbrl.agents.loading import load

        result = load(run_dir, device=device).agent.evaluate(episodes, seed=seed)
        out = {k.removeprefix("eval/"): v for k, v in result.items()}
    elif "algo" in stored or "dataset" in stored:  # an offline run (RAVL, MOPO, BC)
        from mbrl.agents.offline_commands import evaluate_run

        out = evaluate_run(run_dir, episodes, seed=seed, device=device)
    else:
        from mbrl.agents.loading import load_online_agent

        result = load_online_agent(run, device=device).evaluate(episodes, seed=seed)
        out = {
            "return_mean": result["eval/return_mean"],
            "return_std": result["eval/return_std"],
            "episodes": episodes,
        }
    if video:
        out["video"] = str(record_video(run, video_episodes, seed))
    if json:
        print(json_lib.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>18}: {value:.3f}" if isinstance(value, float) else f"{key:>18}: {value}")
    return 0


def record_video(run: RunDir, episodes: int, seed: int) -> Path:
    """``RUN_DIR/videos/eval.mp4`` of the run's deterministic policy (``episodes`` episodes from ``seed``), also
    added to the run's TensorBoard events as ``eval/video`` (an animated GIF, IMAGES tab) at the run's last step."""
    from mbrl.agents.loading import load
    from mbrl.envs import make_env
    from mbrl.evaluation import record_episodes, write_mp4

    if episodes < 1:
        raise ValueError(f"--video-episodes must be >= 1, got {episodes}")
    loaded = load(run.path)
    if loaded.kind == "planning":
        raise ValueError(f"--video: {run.path} is a planning run (MPC on a task family's env); only runs of a "
                         "registered env (mbrl train ...) are rendered")
    env_id = getattr(loaded.agent, "env_id", None) or loaded.agent.config.env_id
    env = make_env(env_id, render_mode="rgb_array", width=320, height=240)
    try:
        frames, _ = record_episodes(env, lambda o: loaded.predict(o, deterministic=True)[0], episodes, seed)
        fps = int(env.metadata.get("render_fps", 30))
    finally:
        env.close()
    step = int(getattr(loaded.agent, "step", 0) or getattr(loaded.agent, "num_updates", 0))
    write_tensorboard_video(run.path, "eval/video", frames, fps, step)
    return write_mp4(frames, run.path / "videos" / "eval.mp4", fps)


DEMO_TASK = "Pendulum-v1"


def demo_config(seed: int = 0, total_steps: int = 1000) -> Any:
    """The demo's agent (ours): model-based MPC on Pendulum-v1, PETS-style without the ensemble. One MLP dynamics
    model (:class:`MLPDynamicsConfig`, the HyperCRL loop's single-task baseline) learns from the env steps (200
    uniform-random, then planned; 400 gradient steps every 200 env steps) and MPPI plans on it (horizon 30 =
    1.5 s, 200 samples, 5 iterations); 3 evaluation episodes every 250 steps."""
    from mbrl.agents.hypercrl import HyperCRLConfig
    from mbrl.planning import MPPIConfig

    return HyperCRLConfig(
        method="finetune", family="pendulum", num_tasks=1, seed=seed, steps_per_task=total_steps,
        random_steps=min(200, total_steps - 1), train_every=200, eval_episodes=3, eval_every=250,
        mppi=MPPIConfig(horizon=30, population=200, iterations=5, temperature=0.5),
    )


def run_demo(run_dir: str = "runs/demo", total_steps: int = 1000, seed: int = 0, device: str | None = None) -> int:
    """The README's main job: a planning agent learns Pendulum-v1's dynamics and swings the pendulum up.

    Model-based MPC (:func:`demo_config`) for ``total_steps`` env steps, logged to CSV and TensorBoard; prints one
    line with the result and writes ``RUN_DIR/demo.png``: the evaluation return against env steps with the
    uniform-random policy's return as the reference, and the wall-clock. About a minute on one core. A finished
    run dir is reported again; an unfinished one starts over (the run is short).

    Args:
        run_dir: where the run goes.
        total_steps: env steps.
        seed: seed.
        device: the model's and the planner's device (cpu, cuda, auto = cuda when available; default cpu).
    """
    import time

    from mbrl.agents.hypercrl import HyperCRLAgent
    from mbrl.cli import clear_run_dir
    from mbrl.logging import read_csv
    from mbrl.utils import set_threads

    set_threads(1)  # small networks: one thread is the fast setting, and 2 collapse beside any other load
    config = demo_config(seed, total_steps)
    config = with_device(config, device)
    path = Path(run_dir)
    done = path / "demo.json"
    stored = config_to_dict(config)  # JSON-ready: compares equal to what demo.json holds
    finished = json_lib.loads(done.read_text()) if done.is_file() else None
    if finished is not None and finished.get("config") == stored:
        print(_demo_line(finished, path / "demo.png"))
        return 0
    clear_run_dir(path)
    run = prepare_run_dir(path, {"algo": "hypercrl", **stored}, resume=False)
    agent = HyperCRLAgent(config)
    start = time.perf_counter()
    with Logger(run.path, total=total_steps, desc=f"mpc {DEMO_TASK}") as logger:
        random_return = agent.random_return(0)
        agent.learn_task(0, logger)
    wall = time.perf_counter() - start
    agent.save(run.checkpoint_path(total_steps))  # `mbrl eval runs/demo` plans with it
    cols = read_csv(run.path)
    evals = cols["eval/return_task0"][np.isfinite(cols["eval/return_task0"])]
    result: dict[str, Any] = {"return": float(evals[-1]), "random_return": random_return, "wall_s": wall, "steps": total_steps,
              "config": stored}
    png = demo_plot(run.path, cols, random_return, wall)
    write_json_atomic(done, result)
    plot_run(run.path)
    print(_demo_line(result, png))
    return 0 if np.isfinite(result["return"]) else 1


def _demo_line(result: dict[str, Any], png: Path) -> str:
    return (
        f"MPC on a learned model, {DEMO_TASK}, after {result['steps']} env steps ({result['wall_s']:.0f} s): eval return "
        f"{result['return']:.1f} (uniform random {result['random_return']:.1f}; 0 is the best possible); curve: {png}"
    )


def demo_plot(run_dir: Path, cols: dict[str, np.ndarray], random_return: float, wall_s: float) -> Path:
    """``run_dir/demo.png``: the evaluation return vs env steps, with the uniform-random policy's return."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = np.isfinite(cols["eval/return_task0"])
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(cols["step"][rows], cols["eval/return_task0"][rows], marker="o",
            label="MPC (MPPI) on a learned dynamics model, eval return")
    ax.axhline(random_return, color="gray", linestyle=":", label=f"uniform random policy ({random_return:.0f})")
    ax.axhline(0.0, color="green", linestyle="--", label="upper bound (0: upright from the start)")
    ax.axvline(200, color="black", alpha=0.2, label="end of the 200 random steps")
    ax.set(xlabel="env steps", ylabel="return (3 episodes, mean)", xlim=(0, None),
           title=f"Model-based MPC on {DEMO_TASK} ({wall_s:.0f} s wall-clock, one core)")
    ax.legend(loc="lower right", fontsize=8)
    out = run_dir / "demo.png"
    fig.savefig(out, dpi=100)
    return out
