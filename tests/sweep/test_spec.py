"""Sweep specs: parsing, expansion counts and order, trial ids and CLI args, validation errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mbrl.sweep.spec import AshaSpec, CommandInfo, Trial, cli_args, load_spec, parse_spec, target_labels


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
    assert cli_args("sac.use-bf16", False) == ["--sac.no-use-bf16"]  # tyro's spelling of a nested bool
    assert cli_args("utd", None) == ["--utd", "None"]
    assert cli_args("keys", ("a", 2)) == ["--keys", "a", "2"]
    assert cli_args("lr", 0.001) == ["--lr", "0.001"]
    spec = parse_spec(_spec(agents=["sac"], seeds=[4], args={"total_steps": 10, "sac.use_bf16": True}))
    (trial,) = spec.trials()
    assert trial.args == ("--env", "InvertedPendulum-v5", "--seed", "4", "--total-steps", "10", "--sac.use-bf16")
    with pytest.raises(ValueError, match=r"has no --sac\.learning-rate"):  # config paths are checked too
        parse_spec(_spec(agents=["sac"], args={"sac.learning_rate": 1e-3})).trials()


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
    assert trials[0].threads_flag and trials[0].resumable  # bc has --resume and --threads (its --num-threads)
    labels = target_labels(spec.targets, "dataset")
    assert labels["mbrl/Hopper-v5/medium-v0"] == "mbrl-Hopper-v5-medium-v0"
    assert labels["a/hopper.npz"] != labels["b/hopper.npz"]
    assert labels["a/hopper.npz"].startswith("hopper-") and len(labels["a/hopper.npz"]) == len("hopper-") + 6
    assert trials[2].id == "bc__mbrl-Hopper-v5-medium-v0__s0"
    assert target_labels(["d/walker.hdf5"], "dataset") == {"d/walker.hdf5": "walker"}


def test_trial_json_round_trip() -> None:
    spec = parse_spec(_spec(agents=["dyna"], grid={"sac.use-bf16": [True, False]}, seeds=[3]))
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


# ---------------------------------------------------------------------------------------------------------
# Scheduler (ASHA) and random search


def _dotted_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mbrl train sac` with dotted config flags (as a config-generated command has), whatever the CLI is now."""
    flags = frozenset(
        {"env", "seed", "run-dir", "resume", "threads", "utd", "total-steps", "sac.lr", "rollout.length"}
    )
    monkeypatch.setattr(
        "mbrl.sweep.spec.command_info", lambda agent: CommandInfo(agent, "env", flags, True, True)
    )


ASHA = {"type": "asha", "metric": "eval/return_mean", "mode": "max", "grace_period": 100, "max_t": 400}
SEARCH = {
    "algorithm": "random",
    "num_samples": 5,
    "seed": 0,
    "space": {"sac.lr": {"loguniform": ["1e-4", 1.0e-3]}, "utd": {"randint": [1, 4]}},
}


def test_scheduler_block_parses_with_defaults_and_the_spec_metric() -> None:
    spec = parse_spec(_spec(scheduler={**ASHA, "reduction_factor": 2, "max_t": "4e2"}))
    assert spec.scheduler == AshaSpec("eval/return_mean", "max", 100, 400, 2.0, 1, "step")
    block = {k: v for k, v in ASHA.items() if k != "metric"}
    assert parse_spec(_spec(scheduler=block, metric="eval/normalized_score")).scheduler == AshaSpec(
        "eval/normalized_score", "max", 100, 400
    )
    timed = parse_spec(_spec(scheduler={**ASHA, "time_attr": "time_total_s"})).scheduler
    assert timed is not None and timed.time_attr == "time_total_s"
    assert spec.to_json()["scheduler"]["reduction_factor"] == 2.0 and spec.to_json()["search"] is None


@pytest.mark.parametrize(
    ("over", "match"),
    [
        (
            {"scheduler": {**ASHA, "type": "hyperband"}},
            r"key 'scheduler'.type: unknown scheduler 'hyperband'",
        ),
        (
            {"scheduler": {k: v for k, v in ASHA.items() if k != "metric"}},
            r"key 'scheduler': missing key 'metric'",
        ),
        ({"scheduler": {**ASHA, "metric": "return"}}, r"key 'scheduler'.metric: .*not namespaced"),
        ({"scheduler": {**ASHA, "mode": "maximize"}}, r"key 'scheduler'.mode: expected 'max' or 'min'"),
        ({"scheduler": {**ASHA, "max_t": 50}}, r"key 'scheduler'.max_t: must be >= grace_period \(100\)"),
        ({"scheduler": {**ASHA, "grace_period": 0}}, r"key 'scheduler'.grace_period: must be > 0"),
        (
            {"scheduler": {**ASHA, "grace_period": 0.5}},
            r"key 'scheduler'.grace_period: expected a whole number",
        ),
        ({"scheduler": {**ASHA, "reduction_factor": 1}}, r"key 'scheduler'.reduction_factor: must be > 1"),
        (
            {"scheduler": {**ASHA, "time_attr": "training_iteration"}},
            r"key 'scheduler'.time_attr: .*not one of",
        ),
        ({"scheduler": {**ASHA, "patience": 3}}, r"key 'scheduler': unknown key\(s\) 'patience'"),
        ({"scheduler": "asha"}, r"key 'scheduler': expected a mapping"),
        ({"search": {**SEARCH, "algorithm": "optuna"}}, r"key 'search'.algorithm: unknown search algorithm"),
        ({"search": {**SEARCH, "num_samples": 0}}, r"key 'search'.num_samples: must be >= 1"),
        ({"search": {k: v for k, v in SEARCH.items() if k != "space"}}, r"key 'search': missing key 'space'"),
        ({"search": {**SEARCH, "space": {}}}, r"key 'search'.space: expected a non-empty mapping"),
        (
            {"search": {**SEARCH, "space": {"lr": {"normal": [0, 1]}}}},
            r"key 'search'.space.lr: expected one of",
        ),
        ({"search": {**SEARCH, "space": {"lr": [1, 2]}}}, r"key 'search'.space.lr: expected one of"),
        (
            {"search": {**SEARCH, "space": {"lr": {"loguniform": [0, 1]}}}},
            r"space.lr.loguniform: expected 0 < low",
        ),
        (
            {"search": {**SEARCH, "space": {"lr": {"uniform": [2, 1]}}}},
            r"space.lr.uniform: expected low < high",
        ),
        (
            {"search": {**SEARCH, "space": {"lr": {"uniform": ["x", 1]}}}},
            r"space.lr.uniform\[0\]: expected a finite",
        ),
        (
            {"search": {**SEARCH, "space": {"utd": {"randint": [1, 2.5]}}}},
            r"space.utd.randint\[1\]: expected an int",
        ),
        (
            {"search": {**SEARCH, "space": {"utd": {"randint": [3, 3]}}}},
            r"space.utd.randint: expected low < high",
        ),
        (
            {"search": {**SEARCH, "space": {"utd": {"choice": []}}}},
            r"space.utd.choice: expected a non-empty list",
        ),
        ({"search": {**SEARCH, "space": {"utd": {"choice": [1, 1]}}}}, r"space.utd.choice: duplicate values"),
        (
            {"search": {**SEARCH, "space": {"seed": {"choice": [1, 2]}}}},
            r"key 'search'.space: --seed is set by",
        ),
        (
            {"search": {**SEARCH, "space": {"total_steps": {"choice": [1, 2]}}}},
            r"--total-steps is also in args",
        ),
        (
            {
                "agents": {"sac": {"grid": {"utd": [1, 2]}}},
                "search": {**SEARCH, "space": {"utd": {"choice": [1]}}},
            },
            r"--utd is also in agents.sac.grid",
        ),
    ],
)
def test_scheduler_and_search_errors_name_the_key(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_spec(_spec(**over), "spec.yaml")


def test_random_search_is_deterministic_in_its_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    _dotted_flags(monkeypatch)
    data = _spec(agents=["sac"], seeds=[0, 1], grid={"rollout.length": [1, 5]}, search=SEARCH)
    trials = parse_spec(data).trials()
    assert len(trials) == 2 * 5 * 2  # grid points x samples x seeds
    again = parse_spec(_spec(agents=["sac"], seeds=[0, 1], grid={"rollout.length": [1, 5]}, search=SEARCH))
    assert again.trials() == trials  # same spec, same trials (ids, values, args)
    points: list[dict[str, Any]] = [
        dict(t.grid_point) for t in trials if t.seed == 0 and dict(t.grid_point)["rollout.length"] == 1
    ]
    assert all(1e-4 <= p["sac.lr"] <= 1e-3 and p["utd"] in (1, 2, 3) for p in points)
    assert len({p["sac.lr"] for p in points}) == 5
    assert all(p["sac.lr"] == float(f"{p['sac.lr']:.6g}") for p in points)  # rounded: the CLI gets this value
    # Every seed and grid point of a sample runs the same sampled values.
    drawn: dict[int, set[tuple[Any, ...]]] = {}
    for t in trials:
        assert t.sample is not None
        drawn.setdefault(t.sample, set()).add(tuple(kv for kv in t.grid_point if kv[0] != "rollout.length"))
    assert sorted(drawn) == [0, 1, 2, 3, 4] and all(len(values) == 1 for values in drawn.values())
    other = parse_spec(
        _spec(agents=["sac"], seeds=[0, 1], grid={"rollout.length": [1, 5]}, search={**SEARCH, "seed": 1})
    )
    assert [t.id for t in other.trials()] == [t.id for t in trials]  # ids name the sample, not its values
    assert [t.args for t in other.trials()] != [t.args for t in trials]
    more = parse_spec(
        _spec(
            agents=["sac"], seeds=[0, 1], grid={"rollout.length": [1, 5]}, search={**SEARCH, "num_samples": 7}
        )
    )
    assert set(trials) < set(more.trials())  # more samples keep the first ones


def test_search_trials_ids_args_and_labels_with_dotted_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    _dotted_flags(monkeypatch)
    spec = parse_spec(
        _spec(
            agents=["sac"],
            seeds=[3],
            grid={"rollout.length": [1, 5]},
            search={
                **SEARCH,
                "num_samples": 1,
                "space": {"sac.lr": {"choice": [0.001]}, "utd": {"uniform": [1, 2]}},
            },
        )
    )
    first = spec.trials()[0]
    assert first.id == "sac__InvertedPendulum-v5__rollout.length=1__sample=0__s3"
    assert re.fullmatch(r"[A-Za-z0-9._=+,-]+", first.id)  # filesystem-safe with dots in keys
    utd = dict(first.grid_point)["utd"]
    assert first.grid_point == (("rollout.length", 1), ("sac.lr", 0.001), ("utd", utd))
    assert first.grid_label == f"sample=0,rollout.length=1,sac.lr=0.001,utd={utd}"
    assert first.args[-6:] == ("--rollout.length", "1", "--sac.lr", "0.001", "--utd", str(utd))
    assert Trial.from_json(first.to_json()) == first
    assert spec.to_json()["search"]["space"] == {
        "sac.lr": {"choice": [0.001]},
        "utd": {"uniform": [1.0, 2.0]},
    }


def test_example_specs_with_scheduler_and_search() -> None:
    root = Path(__file__).resolve().parents[2] / "scripts" / "sweeps"
    asha = load_spec(root / "ip_dyna_asha.yaml")
    assert asha.scheduler is not None and asha.scheduler.reduction_factor == 2 and len(asha.trials()) == 6
    random = load_spec(root / "ip_dyna_random.yaml")
    assert random.search is not None and random.search.num_samples == 4
    pytest.importorskip("ray")
    assert len(random.trials()) == 8
