"""Checkpoints: round trip, refusal of pickled code (the side effect never happens), corrupt files, atomic save,
run-directory checkpoint files and random-state round trips."""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mbrl.checkpoint as ckpt_mod
from mbrl.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    config_to_dict,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    save_run_checkpoint,
)
from mbrl.run import config_from_dict


@dataclass(frozen=True)
class NetConfig:
    hidden: tuple[int, ...] = (200, 200)
    lr: float = 1e-3


@dataclass(frozen=True)
class RunConfig:
    env_id: str = "Hopper-v5"
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)
    data: Path = Path("/data/hopper.hdf5")


class Marker:
    """Unpickling this creates ``path``: the side effect a malicious checkpoint would have."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _state() -> dict[str, dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return {
        "model": net.state_dict(),
        "buffer": {
            "obs": np.arange(12, dtype=np.float32).reshape(4, 3),
            "flags": np.array([True, False, True]),
            "idx": np.int64(7),
            "size": 3,
            "scale": 0.5,
            "name": "replay",
            "sizes": [1, 2, (3, 4)],
        },
    }


def test_round_trip(tmp_path: Path) -> None:
    config = RunConfig(seed=3, net=NetConfig(hidden=(64, 32, 16), lr=3e-4))
    state = _state()
    path = save_checkpoint(tmp_path / "c.pt", config=config, state=state, extra={"step": 1000})
    assert path == tmp_path / "c.pt"
    ck = load_checkpoint(path)
    assert ck.version == CHECKPOINT_VERSION
    assert ck.config == config_to_dict(config)
    assert ck.config["data"] == "/data/hopper.hdf5" and ck.config["net"]["hidden"] == [64, 32, 16]
    assert config_from_dict(RunConfig, ck.config) == config
    assert ck.extra == {"step": 1000}
    assert ck.state["model"].keys() == state["model"].keys()
    for k, v in state["model"].items():
        assert torch.equal(ck.state["model"][k], v)
    buf = ck.state["buffer"]
    assert isinstance(buf["obs"], np.ndarray) and buf["obs"].dtype == np.float32
    np.testing.assert_array_equal(buf["obs"], state["buffer"]["obs"])
    assert buf["flags"].dtype == np.bool_ and buf["flags"].tolist() == [True, False, True]
    assert buf["idx"] == 7 and type(buf["idx"]) is int
    assert (buf["size"], buf["scale"], buf["name"], buf["sizes"]) == (3, 0.5, "replay", [1, 2, (3, 4)])
    # The loaded weights drive a network to the same outputs.
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    net.load_state_dict(ck.state["model"])
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ref.load_state_dict(state["model"])
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(net(x), ref(x))


def test_the_marker_payload_is_live(tmp_path: Path) -> None:
    """Control for the next test: unpickling the payload unguarded does create the marker."""
    marker = tmp_path / "control_marker"
    pickle.loads(pickle.dumps({"x": Marker(marker)}))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickled_code_refused_and_never_run(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"config": "{}", "state": {"model": {"w": Marker(marker)}}, "extra": {}, "version": 1}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "non-tensor objects" in message and "not loaded" in message
    assert not marker.exists()


def test_save_refuses_objects_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    with pytest.raises(CheckpointError, match=r"state\['model'\]\['w'\].*Marker"):
        save_checkpoint(path, config={}, state={"model": {"w": Marker(tmp_path / "m")}})
    with pytest.raises(CheckpointError, match="dtype object"):
        save_checkpoint(path, config={}, state={"model": {"w": np.array([object()])}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_file_refused(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tmp_path / "c.pt", config={"a": 1}, state=_state())
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"not a checkpoint at all " * 20)
    with pytest.raises(CheckpointError, match=r"corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "Traceback" not in str(info.value)


def test_missing_wrong_version_and_layout_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    path = tmp_path / "c.pt"
    torch.save({"config": "{}", "state": {}, "version": CHECKPOINT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match=f"version {CHECKPOINT_VERSION + 1}"):
        load_checkpoint(path)
    torch.save({"config": "{}", "version": CHECKPOINT_VERSION}, path)
    with pytest.raises(CheckpointError, match=r"missing key.*state"):
        load_checkpoint(path)
    torch.save({"config": "{not json", "state": {}, "version": CHECKPOINT_VERSION}, path)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="top level is list"):
        load_checkpoint(path)


def test_atomic_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, config={"run": 1}, state={"m": {"w": torch.ones(100)}})
    before = path.read_bytes()
    real_save = torch.save

    def crashing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:100])  # part of a real checkpoint reaches the disk
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, config={"run": 2}, state={"m": {"w": torch.zeros(100)}})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp file left
    ck = load_checkpoint(path)
    assert ck.config == {"run": 1} and torch.equal(ck.state["m"]["w"], torch.ones(100))


def test_run_checkpoints_latest_and_keep_last(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    for step in (10, 20, 30, 40):
        path = save_run_checkpoint(
            tmp_path, step, config={"a": 1}, state={"m": {"w": torch.full((2,), float(step))}}, keep_last=2
        )
        assert path.name == f"ckpt_{step:09d}.pt"
    # A leftover temp file from a crashed save is not a checkpoint.
    (tmp_path / "checkpoints" / ".ckpt_000000050.pt.abc.tmp").write_bytes(b"partial")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    latest = latest_checkpoint(tmp_path)
    assert latest == tmp_path / "checkpoints" / "ckpt_000000040.pt"
    ck = load_checkpoint(latest)
    assert ck.extra["step"] == 40 and torch.equal(ck.state["m"]["w"], torch.full((2,), 40.0))
    save_run_checkpoint(tmp_path, 1_000_000_000, config={}, state={}, keep_last=None)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40, 1_000_000_000]
    with pytest.raises(ValueError, match="keep_last"):
        save_run_checkpoint(tmp_path, 5, config={}, state={}, keep_last=0)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937, np.random.Philox])
def test_rng_state_round_trip_through_checkpoint(tmp_path: Path, bit_generator: type) -> None:
    np_rng = np.random.Generator(bit_generator(123))
    gen = torch.Generator().manual_seed(123)
    np_rng.normal(size=17)
    torch.rand(9, generator=gen)
    save_checkpoint(tmp_path / "c.pt", config={}, state={}, extra={"rng": rng_state(np_rng, gen)})
    expected_np = np_rng.normal(size=50)
    expected_int = np_rng.integers(0, 2**63, size=5)
    expected_torch = torch.randn(50, generator=gen)

    other_np = np.random.Generator(bit_generator(999))
    other_gen = torch.Generator().manual_seed(999)
    restore_rng(load_checkpoint(tmp_path / "c.pt").extra["rng"], other_np, other_gen)
    np.testing.assert_array_equal(other_np.normal(size=50), expected_np)
    np.testing.assert_array_equal(other_np.integers(0, 2**63, size=5), expected_int)
    assert torch.equal(torch.randn(50, generator=other_gen), expected_torch)


def test_restore_rng_refuses_mismatch() -> None:
    state = rng_state(np.random.default_rng(0))
    assert set(state) == {"numpy"} and json.loads(state["numpy"])["bit_generator"] == "PCG64"
    with pytest.raises(CheckpointError, match=r"'PCG64'.*'MT19937'"):
        restore_rng(state, np.random.Generator(np.random.MT19937(0)))
    with pytest.raises(CheckpointError, match="no 'torch'"):
        restore_rng(state, np.random.default_rng(1), torch.Generator())
