"""LazyMetrics: a dict[str, float] every existing caller can use, filled from one tensor on first read."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

from mbrl.metrics import LazyMetrics, metric_names, prefixed


def lazy() -> LazyMetrics:
    return LazyMetrics(["a", "b", "c"], torch.tensor([1.5, -2.0, 0.25]))


@pytest.mark.parametrize(
    "read",
    [
        lambda m: {k: v for k, v in m.items()},
        lambda m: dict(m),
        lambda m: {**m},
        lambda m: json.loads(json.dumps(m)),
        lambda m: json.loads(json.dumps(m, indent=1)),
        lambda m: dict(zip(m.keys(), m.values())),
        lambda m: {k: m[k] for k in m},
        lambda m: {k: m.get(k) for k in ["a", "b", "c"]},
        lambda m: pickle.loads(pickle.dumps(m)),
        lambda m: copy.deepcopy(m),
        lambda m: m.copy(),
        lambda m: m | {},
    ],
)
def test_every_way_of_reading_sees_the_values(read: object) -> None:
    m = lazy()
    assert not m.materialised
    assert read(m) == {"a": 1.5, "b": -2.0, "c": 0.25}  # type: ignore[operator]
    assert m.materialised


def test_keys_length_and_truth_need_no_read() -> None:
    m = lazy()
    assert len(m) == 3 and "b" in m and "z" not in m and bool(m)
    assert not m.materialised


def test_writes_do_not_materialise_and_override_pending_values() -> None:
    m = lazy()
    m["b"] = 7.0
    m.update({"rollout/x": 1.0}, y=2.0)
    m |= {"z": 3.0}
    assert not m.materialised
    assert float(m["a"]) == 1.5 and m["b"] == 7.0
    assert dict(m) == {"a": 1.5, "b": 7.0, "c": 0.25, "rollout/x": 1.0, "y": 2.0, "z": 3.0}
    assert m == {"a": 1.5, "b": 7.0, "c": 0.25, "rollout/x": 1.0, "y": 2.0, "z": 3.0}
    assert repr(m).startswith("{'a': 1.5")


def test_values_are_python_floats_and_the_shape_is_checked() -> None:
    m = LazyMetrics(["x"], torch.tensor([3.0], dtype=torch.float64))
    assert type(m["x"]) is float
    with pytest.raises(ValueError, match="2 names"):
        LazyMetrics(["a", "b"], torch.zeros(3))


def test_with_prefix_keeps_values_pending_and_right() -> None:
    m = LazyMetrics(["a", "b"], torch.tensor([1.5, -2.0]))
    p = m.with_prefix("train/")
    assert not p.materialised and not m.materialised
    assert p.names() == ["train/a", "train/b"] and not p.materialised
    assert dict(p) == {"train/a": 1.5, "train/b": -2.0}
    assert prefixed({"x": 1.0}, "eval/") == {"eval/x": 1.0}
    assert metric_names({"x": 1.0}) == ["x"]
    m.materialise()
    assert m.with_prefix("p/") == {"p/a": 1.5, "p/b": -2.0}
