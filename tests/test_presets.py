"""The presets against the released values in ``docs/presets.md``: each row's value is what the code builds,
every ``paper`` / ``mbpo`` row equals the paper's released value, and a ``cpu`` row that departs from it says why.
The table is the provenance record, so this test keeps the code and the record from drifting apart."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mbrl.agents.dyna import MBPO_ENVS, cpu_preset, mbpo_preset, sac_preset
from mbrl.agents.mopo import mopo_preset
from mbrl.agents.ravl import RAVL_SAC, ravl_preset
from mbrl.utils import native_bf16

DOC = Path(__file__).resolve().parents[1] / "docs" / "presets.md"


def _rows() -> list[tuple[str, str, str, str, str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and ":" in cells[0] and not cells[0].startswith("-") and cells[0] != "preset":
            rows.append((cells[0], cells[1], cells[2], cells[3], cells[4]))
    return rows


ROWS = _rows()


def _configs(name: str) -> list[Any]:
    algo, _, rest = name.partition(":")
    if algo == "ravl":
        return [ravl_preset("mbrl/hopper/medium-v0", rest)]  # type: ignore[arg-type]
    if algo == "mopo":
        preset, _, task = rest.partition("@")
        return [mopo_preset(f"mbrl/{task}-v0", preset)]  # type: ignore[arg-type]
    if algo == "sac":  # the locomotion envs (the pendulums keep MBPO's shorter run and 500-step warm-up)
        return [sac_preset(env, rest) for env in MBPO_ENVS if "Pendulum" not in env]  # type: ignore[arg-type]
    envs = list(MBPO_ENVS) if rest == "*" else [rest]
    make = mbpo_preset if algo == "mbpo" else cpu_preset
    return [make(env) for env in envs]


def _get(config: Any, path: str) -> Any:
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return list(dataclasses.astuple(value)) if dataclasses.is_dataclass(value) else value


def test_the_table_is_read() -> None:
    assert len(ROWS) >= 150
    assert {name.split(":")[0] for name, *_ in ROWS} == {"ravl", "mopo", "mbpo", "dyna-cpu", "sac"}


@pytest.mark.parametrize(("name", "field", "value", "reference", "source"), ROWS, ids=[f"{r[0]}:{r[1]}" for r in ROWS])
def test_preset_row(name: str, field: str, value: str, reference: str, source: str) -> None:
    # a machine-dependent value: bf16 only where the CPU has it in hardware (True on AVX512-BF16 / AMX machines)
    expected = native_bf16("cpu") if value == "native_bf16('cpu')" else ast.literal_eval(value)
    for config in _configs(name):
        actual = _get(config, field)
        assert actual == expected, f"{name} {field}: the code builds {actual!r}, docs/presets.md says {value}"
    assert source, f"{name} {field}: no source"
    if reference == "ours":
        assert source.startswith("no released") or "ours" in source
        return
    released = ast.literal_eval(reference)
    if name.startswith(("ravl:paper", "mopo:paper", "mbpo:", "sac:paper")):
        assert expected == released, f"{name} {field}: {value} is not the released {reference} ({source})"
    elif expected != released:
        assert source.startswith("ours:"), f"{name} {field}: differs from the paper without a reason"


def test_cpu_presets_keep_the_paper_networks_losses_and_optimisers() -> None:
    """The cpu presets may change budgets only: every SAC and ensemble field equals the paper preset's except
    the ones the table names (bf16 for the offline agents)."""
    hopper = "mbrl/hopper/medium-v0"
    # RAVL's cpu preset adds one stabiliser (ours, in the table): MOPO's penalty with MOPO's lambda, 20-step rollouts
    ravl_cpu = ravl_preset(hopper, "cpu")
    assert (ravl_cpu.penalty, ravl_cpu.penalty_coef, ravl_cpu.rollout_length, ravl_cpu.ensemble.full_info) == (
        "uncertainty", mopo_preset(hopper, "paper").penalty_coef, 20, True)
    ravl_cpu = dataclasses.replace(ravl_cpu, penalty="none", penalty_coef=1.0, rollout_length=5,
                                   ensemble=dataclasses.replace(ravl_cpu.ensemble, full_info=False))
    for cpu, paper in ((ravl_cpu, ravl_preset(hopper, "paper")), (mopo_preset(hopper, "cpu"), mopo_preset(hopper, "paper"))):
        assert dataclasses.replace(cpu.sac, use_bf16=False) == paper.sac
        assert cpu.ensemble == paper.ensemble
        assert (cpu.rollout_length, cpu.real_ratio, cpu.retain_epochs, cpu.penalty_coef, cpu.penalty) == (
            paper.rollout_length, paper.real_ratio, paper.retain_epochs, paper.penalty_coef, paper.penalty)
    assert ravl_preset("x", "paper").sac == RAVL_SAC
    for env in MBPO_ENVS:
        cpu, paper = cpu_preset(env), mbpo_preset(env)
        assert cpu.sac == paper.sac and cpu.ensemble == paper.ensemble, env
        assert (cpu.rollout, cpu.model_retain_refits, cpu.real_ratio) == (paper.rollout, paper.model_retain_refits, paper.real_ratio)
