"""``mbrl train <algo>`` generated from the agent's config: every field a flag with the preset's value as its
default, ``--preset`` with one meaning, ``--config`` files (a run's own config.json reproduces it), ``--overwrite``."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mbrl.agents.commands import TRAIN_DYNA, TRAIN_SAC
from mbrl.agents.dyna import DynaConfig, sac_preset
from mbrl.agents.lipschitz import TRAIN_LIPSCHITZ
from mbrl.agents.offline_commands import TRAIN_BC, TRAIN_MOPO, TRAIN_RAVL
from mbrl.cli import ConfigCommand, RunOptions, command_flags, config_flags, main, run_config_command
from mbrl.logging import read_csv
from mbrl.sweep.spec import command_info
from mbrl.utils import native_bf16

COMMANDS = {
    "sac": TRAIN_SAC, "dyna": TRAIN_DYNA, "lipschitz": TRAIN_LIPSCHITZ, "ravl": TRAIN_RAVL, "mopo": TRAIN_MOPO,
    "bc": TRAIN_BC,
}


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _leaf_fields(kind: type, hidden: tuple[str, ...] = ()) -> int:
    hints = typing.get_type_hints(kind)
    return sum(
        _leaf_fields(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else 1
        for f in dataclasses.fields(kind)  # type: ignore[arg-type]
        if f.name not in hidden
    )


def _default_of(help_text: str, flag: str) -> str:
    """The ``(default: X)`` tyro prints for ``--flag`` (its entry may wrap over several lines)."""
    entry = re.split(rf"--{re.escape(flag)}[ ,]", help_text, maxsplit=1)[1].split("\n│ --", 1)[0]
    found = re.search(r"\(default:\s*([^)]*)\)", re.sub(r"\s*│\s*", " ", entry))
    assert found, entry
    return found.group(1).strip()


@pytest.mark.parametrize("algo", sorted(COMMANDS))
def test_every_config_field_is_a_flag_in_the_help(algo: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = COMMANDS[algo]
    target = ["--env", "Hopper-v5"] if command.target == "env" else ["--dataset", "mbrl/hopper/medium-v0"]
    text = _help(capsys, algo, *target)
    flags = config_flags(command.config_type, hidden=command.hidden)
    # one flag per leaf field the command uses (plus the aliases), each shown in the help under the name the
    # sweep uses
    assert len([f for f in flags if f != "threads"]) == _leaf_fields(command.config_type, command.hidden)
    missing = [f for f in flags if f"--{f} " not in text and f"--{f}," not in text]
    assert not missing
    assert command_info(algo).flags == command_flags(command)
    for option in ("preset", "config", "device", "run-dir", "resume", "overwrite"):
        assert f"--{option}" in text


def test_train_sac_offers_no_model_flags_and_still_stores_the_whole_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mbrl train sac` has no model: Dyna's model fields are not its flags (dyna keeps them), a model flag is
    refused, and the config it runs is the full DynaConfig with the preset's values in those fields."""
    sac_help, dyna_help = _help(capsys, "sac"), _help(capsys, "dyna")
    for flag in ("--use-model", "--ensemble.hidden", "--fit.max-epochs", "--real-ratio", "--rollout.max-length"):
        assert flag not in sac_help and flag in dyna_help, flag
    assert "--sac.critic-lr" in sac_help and "--utd" in sac_help
    command, seen = _capturing(TRAIN_SAC)
    with pytest.raises(SystemExit):
        run_config_command(command, ["--use-model"], "mbrl train sac")
    assert "--use-model" in capsys.readouterr().err
    assert run_config_command(command, ["--env", "Hopper-v5", "--utd", "3"], "mbrl train sac") == 0
    config, _ = seen[-1]
    assert type(config) is DynaConfig
    assert config == dataclasses.replace(sac_preset("Hopper-v5", "cpu"), utd=3)
    assert "utd" in command_flags(TRAIN_SAC) and "use-model" not in command_flags(TRAIN_SAC)


def test_the_help_shows_the_presets_values(capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--dataset", "mbrl/hopper/medium-v0"]
    paper, cpu = _help(capsys, "ravl", *data, "--preset", "paper"), _help(capsys, "ravl", *data)
    assert (_default_of(paper, "updates"), _default_of(cpu, "updates")) == ("3000000", "50000")
    assert (_default_of(paper, "rollout-length"), _default_of(cpu, "rollout-length")) == ("5", "20")
    # bf16 only where the CPU has it natively (mbrl.utils.native_bf16)
    assert (_default_of(paper, "sac.use-bf16"), _default_of(cpu, "sac.use-bf16")) == ("False", str(native_bf16("cpu")))
    # MOPO's lambda is the released one for the dataset the flag names
    assert _default_of(_help(capsys, "mopo", "--dataset", "mbrl/halfcheetah/medium-replay-v0"), "penalty-coef") == "1.0"
    assert _default_of(_help(capsys, "mopo", "--dataset", "mbrl/hopper/medium-v0"), "penalty-coef") == "5.0"
    quick = _help(capsys, "dyna", "--preset", "quick")
    assert (_default_of(quick, "total-steps"), _default_of(quick, "env")) == ("600", "InvertedPendulum-v5")


def _capturing(command: ConfigCommand) -> tuple[ConfigCommand, list[Any]]:
    """``command`` with its run replaced by recording the config it would run (the parsing is the real one)."""
    seen: list[Any] = []

    def record(config: Any, options: RunOptions, _: object) -> int:
        seen.append((config, options))
        return 0

    return dataclasses.replace(command, run=record), seen


def test_a_config_file_replaces_the_presets_values_and_flags_replace_the_files(tmp_path: Path) -> None:
    command, seen = _capturing(TRAIN_SAC)
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("env_id: Hopper-v5\ntotal_steps: 300\nsac:\n  critic_lr: 0.002\n  hidden: 64\n")
    assert run_config_command(command, ["--config", str(yaml_file), "--total-steps", "250"], "mbrl train sac") == 0
    config, _ = seen[-1]
    preset = sac_preset("Hopper-v5", "cpu")
    assert (config.env_id, config.total_steps, config.sac.critic_lr, config.sac.hidden) == ("Hopper-v5", 250, 0.002, 64)
    assert config == dataclasses.replace(
        preset, total_steps=250, sac=dataclasses.replace(preset.sac, critic_lr=0.002, hidden=64)
    )
    # the preset under the file is the one --preset names
    assert run_config_command(command, ["--config", str(yaml_file), "--preset", "paper"], "mbrl train sac") == 0
    assert seen[-1][0].total_steps == 300 and seen[-1][0].checkpoint_every == sac_preset("Hopper-v5", "paper").checkpoint_every
    assert sac_preset("Hopper-v5", "paper").checkpoint_every != preset.checkpoint_every


def test_bad_config_files_are_refused_with_their_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_field = tmp_path / "bad.yaml"
    bad_field.write_text("sac:\n  critic_learning_rate: 0.1\n")
    other_algo = tmp_path / "ravl.json"
    other_algo.write_text(json.dumps({"algo": "ravl"}))
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- 1\n- 2\n")
    for path, message in [
        (bad_field, "critic_learning_rate"),
        (other_algo, "a 'ravl' run's config, not 'sac'"),
        (not_a_mapping, "expected a mapping"),
        (tmp_path / "missing.yaml", "no such file"),
    ]:
        assert main(["train", "sac", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
    assert main(["train", "ravl", "--preset", "quick"]) == 2
    assert "--dataset is required" in capsys.readouterr().err


def test_a_runs_config_json_reproduces_the_run(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    flags = ["--env", "Pendulum-v1", "--preset", "quick", "--total-steps", "400", "--eval-every", "400",
             "--sac.critic-lr", "1e-3", "--seed", "3"]
    assert main(["train", "sac", *flags, "--run-dir", str(first)]) == 0
    stored = json.loads((first / "config.json").read_text())
    assert (stored["sac"]["critic_lr"], stored["seed"], stored["total_steps"]) == (1e-3, 3, 400)
    assert main(["train", "sac", "--config", str(first), "--run-dir", str(second)]) == 0
    assert json.loads((second / "config.json").read_text()) == stored
    a, b = read_csv(first / "progress.csv"), read_csv(second / "progress.csv")
    for key in ("eval/return_mean", "train/critic_loss"):  # the same run, step for step
        np.testing.assert_array_equal(a[key], b[key])


def test_overwrite_replaces_a_run_and_nothing_else(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    flags = ["train", "sac", "--env", "Pendulum-v1", "--preset", "quick", "--total-steps", "250", "--run-dir", str(run)]
    assert main(flags) == 0
    assert main(flags) == 2  # a second run into the same directory is refused ...
    assert "not empty" in capsys.readouterr().err
    assert main([*flags, "--seed", "5", "--overwrite"]) == 0  # ... unless --overwrite
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    assert main([*flags, "--overwrite", "--resume"]) == 2
    assert "give one of them" in capsys.readouterr().err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main([*flags[:-1], str(other), "--overwrite"]) == 2
    assert "holds no run" in capsys.readouterr().err and (other / "keep.txt").read_text() == "mine"


def test_dyna_model_choice_sets_its_fields_and_flags_still_win() -> None:
    command, seen = _capturing(TRAIN_DYNA)
    run_config_command(command, ["--model", "single"], "mbrl train dyna")
    run_config_command(command, ["--model", "single", "--ensemble.num-members", "3"], "mbrl train dyna")
    run_config_command(command, ["--model", "losse"], "mbrl train dyna")
    (single, _), (three, _), (losse, _) = seen
    assert (single.ensemble.num_members, single.ensemble.num_elites) == (1, 1)
    assert three.ensemble.num_members == 3
    assert (losse.model_kind, losse.model_training) == ("losse", "online")
    assert isinstance(losse, DynaConfig)


def test_device_sets_every_part_and_part_flags_override_it() -> None:
    command, seen = _capturing(TRAIN_RAVL)
    data = ["--dataset", "mbrl/hopper/medium-v0"]
    run_config_command(command, [*data, "--device", "auto"], "mbrl train ravl")
    run_config_command(command, [*data, "--device", "auto", "--sac.device", "cpu"], "mbrl train ravl")
    (every, _), (mixed, _) = seen
    assert (every.sac.device, every.ensemble.device, every.morec.reward.device) == ("auto", "auto", "auto")
    assert (mixed.sac.device, mixed.ensemble.device) == ("cpu", "auto")



TORCH_COMMANDS = [  # every command that builds a model, a learner or a planner
    ["train", "ravl"], ["train", "mopo"], ["train", "bc"], ["train", "dyna"], ["train", "sac"], ["train", "lipschitz"],
    ["train", "idm-label"], ["model", "train"], ["model", "eval"], ["model", "train-dynamics-reward"],
    ["dataset", "make"], ["dataset", "label"], ["eval"], ["run-demo"],
]


@pytest.mark.parametrize("command", TORCH_COMMANDS, ids=" ".join)
def test_every_torch_command_takes_device(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert re.search(r"--device\b", capsys.readouterr().out), f"mbrl {' '.join(command)} has no --device"


def test_model_train_device_reaches_the_saved_ensemble(tmp_path: Path) -> None:
    from mbrl.checkpoint import load_checkpoint
    from mbrl.data import save_npz
    from mbrl.envs.datasets import uniform_random_dataset
    from mbrl.models.commands import load_model

    data = tmp_path / "d.npz"
    save_npz(uniform_random_dataset("Hopper-v5", 300, seed=0), data)
    args = ["model", "train", str(data), "--fit.max-epochs", "1", "--ensemble.hidden", "16", "--ensemble.device", "auto"]
    assert main([*args, "--run-dir", str(tmp_path / "m"), "--device", "cpu"]) == 0
    assert main([*args, "--run-dir", str(tmp_path / "n")]) == 0
    spec = [load_checkpoint(tmp_path / run / "model.pt").config["model"]["config"]["device"] for run in "mn"]
    assert spec == ["cpu", "auto"]  # --device replaced the ensemble's own setting; without it, the flag stands
    assert load_model(str(tmp_path / "m"), device="cpu").device.type == "cpu"
