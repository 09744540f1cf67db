"""Sweep specs: parsing, expansion counts and order, trial ids and CLI args, validation errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mbrl.sweep.spec import Trial, cli_args, load_spec, parse_spec, target_labels


def _spec(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "ip",
        "agents": ["sac", "dyna"],
        "envs": ["InvertedPendulum-v5"],
        "seeds": [0, 1, 2],
        "args": {"total-steps": 2000},
    }
    data.update(over)
    return data


def test_list_spec_expands_agents_targets_seeds_in_order() -> None:
    spec = parse_spec(_spec(envs=["InvertedPendulum-v5", "Hopper-v5"]))
    assert spec.target_kind == "env" and spec.seeds == (0, 1, 2) and spec.metric is None
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 3
    assert [t.id for t in trials[:4]] == [
        "sac__InvertedPendulum-v5__s0",
        "sac__InvertedPendulum-v5__s1",
        "sac__InvertedPendulum-v5__s2",
        "sac__Hopper-v5__s0",
    ]
    assert trials[-1].id == "dyna__Hopper-v5__s2"
    assert trials[4].args == ("--env", "Hopper-v5", "--seed", "1", "--total-steps", "2000")
    assert all(t.threads_flag and t.resumable for t in trials)  # sac/dyna take --threads and --resume
    assert trials[0].run_dir("/s") == Path("/s/trials/sac__InvertedPendulum-v5__s0")


def test_grid_is_a_cartesian_product_with_sorted_keys_in_the_id() -> None:
    spec = parse_spec(_spec(grid={"utd": [1, 2], "model": ["ensemble", "single", "losse"]}, agents=["dyna"]))
    trials = spec.trials()
    assert len(trials) == 2 * 3 * 3
    ids = [t.id for t in trials]
    assert len(set(ids)) == len(ids)
    assert "dyna__InvertedPendulum-v5__model=single,utd=2__s1" in ids
    t = next(t for t in trials if t.id == "dyna__InvertedPendulum-v5__model=single,utd=2__s1")
    assert t.grid_point == (("model", "single"), ("utd", 2))
    assert t.grid_label == "model=single,utd=2"
    assert t.args[-4:] == ("--model", "single", "--utd", "2")
    # Stable: the grid's key order in the file does not change the ids.
    swapped = parse_spec(
        _spec(grid={"model": ["ensemble", "single", "losse"], "utd": [1, 2]}, agents=["dyna"])
    )
    assert [x.id for x in swapped.trials()] == ids


def test_per_agent_blocks_merge_over_top_level() -> None:
    spec = parse_spec(
        _spec(
            agents={"sac": {"args": {"utd": 1}}, "dyna": {"grid": {"model": ["single", "losse"]}}},
            grid={"utd": [5, 10]},
            seeds=2,
        )
    )
    trials = spec.trials()
    sac = [t for t in trials if t.agent == "sac"]
    dyna = [t for t in trials if t.agent == "dyna"]
    assert len(sac) == 2 and all(t.grid_point == () for t in sac)  # sac's fixed utd removes the grid key
    assert "--utd" in sac[0].args and sac[0].args[sac[0].args.index("--utd") + 1] == "1"
    assert len(dyna) == 2 * 2 * 2
    assert {t.grid_label for t in dyna} == {
        "model=single,utd=5",
        "model=single,utd=10",
        "model=losse,utd=5",
        "model=losse,utd=10",
    }


def test_cli_args_of_each_value_kind() -> None:
    assert cli_args("bf16", True) == ["--bf16"]
    assert cli_args("bf16", False) == ["--no-bf16"]
    assert cli_args("utd", None) == ["--utd", "None"]
    assert cli_args("keys", ("a", 2)) == ["--keys", "a", "2"]
    assert cli_args("lr", 0.001) == ["--lr", "0.001"]
    spec = parse_spec(_spec(agents=["sac"], seeds=[4], args={"total_steps": 10, "bf16": True}))
    (trial,) = spec.trials()
    assert trial.args == ("--env", "InvertedPendulum-v5", "--seed", "4", "--total-steps", "10", "--bf16")


def test_dataset_targets_labels_and_offline_agents() -> None:
    spec = parse_spec(
        {
            "name": "off",
            "agents": ["bc"],
            "datasets": ["a/hopper.npz", "b/hopper.npz", "mbrl/Hopper-v5/medium-v0"],
            "seeds": [0],
            "metric": "eval/normalized_score",
        }
    )
    trials = spec.trials()
    assert spec.metric == "eval/normalized_score"
    assert [t.args[:2] for t in trials] == [("--dataset", d) for d in spec.targets]
    assert not trials[0].threads_flag and trials[0].resumable  # bc has --resume but no --threads
    labels = target_labels(spec.targets, "dataset")
    assert labels["mbrl/Hopper-v5/medium-v0"] == "mbrl-Hopper-v5-medium-v0"
    assert labels["a/hopper.npz"] != labels["b/hopper.npz"]
    assert labels["a/hopper.npz"].startswith("hopper-") and len(labels["a/hopper.npz"]) == len("hopper-") + 6
    assert trials[2].id == "bc__mbrl-Hopper-v5-medium-v0__s0"
    assert target_labels(["d/walker.hdf5"], "dataset") == {"d/walker.hdf5": "walker"}


def test_trial_json_round_trip() -> None:
    spec = parse_spec(_spec(agents=["dyna"], grid={"bf16": [True, False]}, seeds=[3]))
    for trial in spec.trials():
        assert Trial.from_json(trial.to_json()) == trial
    with pytest.raises(ValueError, match="lacks key 'seed'"):
        data = spec.trials()[0].to_json()
        del data["seed"]
        Trial.from_json(data)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"agents": ["sac", "nope"]}, r"key 'agents'.*unknown agent 'nope'"),
        ({"agents": []}, r"key 'agents'.*empty list"),
        ({"envs": []}, r"key 'envs'.*empty list"),
        ({"seeds": []}, r"key 'seeds'.*empty list"),
        ({"seeds": "abc"}, r"key 'seeds'.*expected a list of integers"),
        ({"seeds": [0, -1]}, r"key 'seeds'\[1\].*>= 0"),
        ({"seeds": [1, 1]}, r"key 'seeds'.*duplicate"),
        ({"grid": {"utd": 3}}, r"key 'grid'.utd: expected a list"),
        ({"grid": {"utd": []}}, r"key 'grid'.utd: empty list"),
        ({"args": {"utd": {"a": 1}}}, r"key 'args'.utd: value .* is a dict"),
        ({"args": {"seed": 3}}, r"key 'args'.*--seed is set by the sweep"),
        ({"grid": {"run_dir": ["a", "b"]}}, r"key 'grid'.*--run-dir is set by the sweep"),
        ({"datasets": ["x.npz"]}, r"exactly one of 'envs'"),
        ({"extra": 1}, r"unknown key\(s\) 'extra'"),
        ({"name": "a b"}, r"key 'name'"),
        ({"command": "eval"}, r"key 'command'.*only 'train'"),
        ({"metric": "return_mean"}, r"key 'metric'.*not namespaced"),
        ({"agents": {"sac": {"argz": {}}}}, r"agents'.sac: unknown key\(s\) 'argz'"),
    ],
)
def test_validation_errors_name_the_key(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_spec(_spec(**over), "spec.yaml")


def test_missing_keys_and_top_level_type() -> None:
    data = _spec()
    del data["seeds"]
    with pytest.raises(ValueError, match=r"spec\.yaml: missing key 'seeds'"):
        parse_spec(data, "spec.yaml")
    with pytest.raises(ValueError, match="expected a mapping at the top level"):
        parse_spec([1, 2], "spec.yaml")


def test_expansion_checks_flags_and_target_kind() -> None:
    with pytest.raises(ValueError, match=r"`mbrl train sac` has no --bogus-flag"):
        parse_spec(_spec(args={"bogus-flag": 1})).trials()
    with pytest.raises(
        ValueError, match=r"agent 'bc' trains on datasets \(--dataset\), but the spec gives envs"
    ):
        parse_spec(_spec(agents=["bc"])).trials()


def test_load_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sweep spec not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML"):
        load_spec(bad)
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: ip\nagents: [sac]\nenvs: [InvertedPendulum-v5]\nseeds: 2\nargs: {total-steps: 100}\n"
    )
    spec = load_spec(good)
    assert [t.id for t in spec.trials()] == ["sac__InvertedPendulum-v5__s0", "sac__InvertedPendulum-v5__s1"]
    example = Path(__file__).resolve().parents[2] / "scripts" / "sweeps" / "ip_sac_dyna.yaml"
    assert len(load_spec(example).trials()) == 6
