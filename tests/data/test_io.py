"""Readers and writers: derived next_observations, exact round trips HDF5/npz/Minari, bad input refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from mbrl.cli import main
from mbrl.data import DatasetError, OfflineDataset, load_dataset, save_hdf5, save_minari, save_npz
from tests.data.conftest import THREE_EPISODES, Episodes, write_d4rl_hdf5

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def assert_same(a: OfflineDataset, b: OfflineDataset) -> None:
    """Identical arrays (values and dtypes), env id and flags."""
    for key in (*KEYS, "proxy_actions"):
        x, y = getattr(a, key), getattr(b, key)
        if x is None or y is None:
            assert x is None and y is None, key
            continue
        assert x.dtype == y.dtype, key
        np.testing.assert_array_equal(x, y, err_msg=key)
    assert a.env_id == b.env_id
    assert a.episode_slices() == b.episode_slices()


def hopper_dataset(eps: Episodes, **kwargs: object) -> OfflineDataset:
    return OfflineDataset(**eps.transitions(), **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ derived next_obs
def test_derived_next_observations_match_hand_computed(three_episode_file: Path) -> None:
    ds = load_dataset(three_episode_file)
    # qlearning_dataset: keep i < N-1 unless timeouts[i]; rows 5 (timeout) and 7 (last) are dropped.
    np.testing.assert_array_equal(ds.observations, [[0, 0], [1, 10], [2, 20], [3, 30], [4, 40], [6, 60]])
    np.testing.assert_array_equal(
        ds.next_observations, [[1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [7, 70]]
    )
    np.testing.assert_array_equal(ds.actions, [[0], [-1], [-2], [-3], [-4], [-6]])  # type: ignore[arg-type]
    np.testing.assert_array_equal(ds.rewards, [1, 2, 3, 4, 5, 7])
    np.testing.assert_array_equal(ds.terminals, [False, False, True, False, False, False])
    # Row 4 is the last kept step of the timed-out episode: it ends by truncation.
    np.testing.assert_array_equal(ds.timeouts, [False, False, False, False, True, False])
    assert ds.episode_slices() == [(0, 3), (3, 5), (5, 6)]
    np.testing.assert_array_equal(ds.episode_returns(), [6.0, 9.0, 7.0])
    # Row 2 is a terminal: its derived next state [3, 30] is the next episode's reset, not a true next state.
    np.testing.assert_array_equal(ds.known_next_obs(), [True, True, False, True, True, True])


def test_unknown_next_states_survive_subsets_concat_and_files(three_episode_file: Path, tmp_path: Path) -> None:
    ds = load_dataset(three_episode_file)
    np.testing.assert_array_equal(ds.subset_episodes([0]).known_next_obs(), [True, True, False])
    both = OfflineDataset.concat([ds, ds.subset_episodes([1])])
    np.testing.assert_array_equal(both.known_next_obs(), [True, True, False, True, True, True, True, True])
    for path in (tmp_path / "d.npz", tmp_path / "d.hdf5"):
        (save_npz if path.suffix == ".npz" else save_hdf5)(ds, path)
        np.testing.assert_array_equal(load_dataset(path).known_next_obs(), ds.known_next_obs())


def test_derived_without_timeouts_key(tmp_path: Path) -> None:
    arrays = {k: v for k, v in THREE_EPISODES.items() if k != "timeouts"}
    ds = load_dataset(write_d4rl_hdf5(tmp_path / "nt.h5", arrays))
    np.testing.assert_array_equal(ds.observations[:, 0], [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(ds.next_observations[:, 0], [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(ds.rewards, [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(ds.terminals, [False, False, True, False, False, False, False])
    assert not ds.timeouts.any()
    assert ds.episode_slices() == [(0, 3), (3, 7)]


def test_next_observations_in_file_are_used(tmp_path: Path) -> None:
    arrays = dict(THREE_EPISODES, next_observations=THREE_EPISODES["observations"] + 0.5)
    ds = load_dataset(write_d4rl_hdf5(tmp_path / "with_next.hdf5", arrays))
    assert len(ds) == 8
    np.testing.assert_array_equal(ds.next_observations, THREE_EPISODES["observations"] + 0.5)
    np.testing.assert_array_equal(ds.timeouts, THREE_EPISODES["timeouts"])


def test_derived_on_real_hopper_data(tmp_path: Path, hopper_episodes: Episodes) -> None:
    full = hopper_episodes.transitions()
    raw = {k: full[k] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    ds = load_dataset(write_d4rl_hdf5(tmp_path / "hopper.hdf5", raw))
    keep = ~full["timeouts"]
    keep[-1] = False
    np.testing.assert_array_equal(ds.observations, full["observations"][keep])
    np.testing.assert_array_equal(ds.actions, full["actions"][keep])  # type: ignore[arg-type]
    # next obs is the env's own next obs everywhere except at terminal steps (there: the next episode's start)
    live = ~full["terminals"][keep]
    np.testing.assert_array_equal(ds.next_observations[live], full["next_observations"][keep][live])
    assert ds.n_episodes == len(hopper_episodes.rewards)  # the last episode loses its last step only


# ----------------------------------------------------------------------------------------- round trips
def test_npz_and_hdf5_round_trips(tmp_path: Path, hopper_episodes: Episodes) -> None:
    ds = hopper_dataset(
        hopper_episodes,
        env_id="Hopper-v5",
        metadata={"ref_min_score": -20.0, "ref_max_score": 3234.3, "note": "x"},
    )
    proxy = np.zeros(len(ds), bool)
    proxy[::3] = True
    labelled = ds.with_actions(np.asarray(ds.actions) * 0.5)
    labelled.proxy_actions = proxy
    for data in (ds, labelled, ds.without_actions()):
        for name, save in (("d.npz", save_npz), ("d.hdf5", save_hdf5)):
            save(data, tmp_path / name)
            back = load_dataset(tmp_path / name)
            assert_same(data, back)
            assert back.metadata == data.metadata
            assert back.source == name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.hdf5", "d.npz"]  # no temp files left


def test_hdf5_to_minari_to_dataset_is_identical(
    tmp_path: Path, minari_root: Path, hopper_episodes: Episodes
) -> None:
    full = hopper_episodes.transitions()
    # A classic D4RL file without next_observations (derived on load) and one with them.
    raw = {k: full[k] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    sources = [write_d4rl_hdf5(tmp_path / "classic.hdf5", raw), tmp_path / "ours.hdf5"]
    save_hdf5(hopper_dataset(hopper_episodes, env_id="Hopper-v5"), sources[1])
    for k, path in enumerate(sources):
        ds = load_dataset(path, env_id="Hopper-v5")
        ds.metadata.update(ref_min_score=-20.0, ref_max_score=3234.3)
        save_minari(ds, f"test/hopper/roundtrip{k}-v0", author="tests")
        assert (minari_root / f"test/hopper/roundtrip{k}-v0" / "data" / "main_data.hdf5").is_file()
        back = load_dataset(f"test/hopper/roundtrip{k}-v0")
        assert_same(ds, back)
        assert back.env_id == "Hopper-v5"
        assert back.metadata["ref_min_score"] == -20.0 and back.metadata["ref_max_score"] == 3234.3
        # ... and Minari itself reads what we wrote.
        md = minari.load_dataset(f"test/hopper/roundtrip{k}-v0")
        assert md.total_steps == len(ds) and md.total_episodes == ds.n_episodes
        assert md.recover_environment().spec.id == "Hopper-v5"  # type: ignore[union-attr]
    # Back to HDF5: still identical.
    save_hdf5(back, tmp_path / "again.hdf5")
    assert_same(back, load_dataset(tmp_path / "again.hdf5"))


def test_minari_proxy_flags_and_no_env(minari_root: Path) -> None:
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    ds = OfflineDataset(obs, np.ones((6, 1)), np.ones(6), obs + 100, np.array([0, 1, 0, 0, 0, 0], bool))
    ds = ds.with_actions(np.full((6, 1), 0.25))
    ds.proxy_actions = np.array([1, 0, 1, 0, 1, 0], bool)
    save_minari(ds, "toy-v1")
    back = load_dataset("toy-v1")
    assert_same(ds, back)
    assert back.env_id is None


def test_minari_dataset_created_with_minari_api(minari_root: Path, hopper_episodes: Episodes) -> None:
    env = gymnasium.make("Hopper-v5", max_episode_steps=40)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=list(o),
            actions=list(a),
            rewards=list(r),
            terminations=list(te),
            truncations=list(tr),
        )
        for i, (o, a, r, te, tr) in enumerate(
            zip(
                hopper_episodes.observations,
                hopper_episodes.actions,
                hopper_episodes.rewards,
                hopper_episodes.terminations,
                hopper_episodes.truncations,
            )
        )
    ]
    with pytest.warns(UserWarning):  # minari warns about the optional fields left out
        minari.create_dataset_from_buffers(
            "ext/hopper/random-v0", buffers, env=env, ref_min_score=-20.0, ref_max_score=3234.3
        )
    ds = load_dataset("ext/hopper/random-v0")
    expected = hopper_episodes.transitions()
    for key in KEYS:
        np.testing.assert_array_equal(getattr(ds, key), expected[key], err_msg=key)
    assert ds.env_id == "Hopper-v5" and ds.obs_dim == 11 and ds.action_dim == 3
    assert ds.n_episodes == len(hopper_episodes.rewards)
    assert ds.metadata["ref_max_score"] == pytest.approx(3234.3)
    np.testing.assert_allclose(
        ds.episode_returns(), [r.astype(np.float32).sum() for r in hopper_episodes.rewards], rtol=1e-6
    )
    with pytest.raises(DatasetError, match="obs_dim 11 but env 'Walker2d-v5' has observation shape"):
        load_dataset("ext/hopper/random-v0", env_id="Walker2d-v5")


def test_save_minari_refusals_and_cleanup(
    minari_root: Path, hopper_episodes: Episodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = hopper_dataset(hopper_episodes, env_id="Hopper-v5")
    with pytest.raises(DatasetError, match="action-free"):
        save_minari(ds.without_actions(), "tst/b-v0")
    with pytest.raises(DatasetError, match="not a valid Minari dataset id"):
        save_minari(ds, "no version")
    with pytest.raises(DatasetError, match="give both ref_min_score and ref_max_score"):
        save_minari(ds, "tst/b-v0", ref_max_score=1.0)
    save_minari(ds, "tst/b-v0")
    with pytest.raises(DatasetError, match="already exists"):
        save_minari(ds, "tst/b-v0")
    assert_same(ds, load_dataset("tst/b-v0"))  # the existing one is untouched

    # A failure while episodes are written leaves no partial dataset behind.
    from minari.dataset._storages.hdf5_storage import HDF5Storage

    def disk_full(self: object, episodes: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(HDF5Storage, "update_episodes", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_minari(ds, "tst/c-v0")
    assert not (minari_root / "tst" / "c-v0").exists()
    with pytest.raises(DatasetError, match="no local Minari dataset") as err:
        load_dataset("tst/c-v0")
    assert "minari download tst/c-v0" in str(err.value) and "mbrl dataset make" in str(err.value)


def test_atomic_file_writers_keep_old_file_on_failure(
    tmp_path: Path, hopper_episodes: Episodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = hopper_dataset(hopper_episodes)
    path = tmp_path / "d.npz"
    save_npz(ds, path)
    before = path.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_npz(ds.subset_episodes([0]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]
    with pytest.raises(DatasetError, match="not JSON-serialisable"):
        save_hdf5(hopper_dataset(hopper_episodes, metadata={"bad": object()}), tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()


# ------------------------------------------------------------------------------------------- bad input
def _hopper_arrays(n: int = 100, obs_dim: int = 11, action_dim: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.isin(np.arange(n), [49, 99]),
    }


def _npz(tmp: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(tmp / "data.npz", **arrays)  # type: ignore[arg-type]
    return tmp / "data.npz"


def _h5(tmp: Path, arrays: dict[str, np.ndarray], attrs: dict[str, object] | None = None) -> Path:
    return write_d4rl_hdf5(tmp / "data.hdf5", arrays, attrs)


def _with(**changes: np.ndarray) -> dict[str, np.ndarray]:
    return _hopper_arrays() | changes


def _nan_obs() -> dict[str, np.ndarray]:
    a = _hopper_arrays()
    a["observations"][7, 3] = np.nan
    return a


def _inf_next() -> dict[str, np.ndarray]:
    a = _hopper_arrays()
    a["next_observations"] = a["observations"].copy()
    a["next_observations"][42, 0] = -np.inf
    return a


def _corrupt(name: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(b"\x89HDF\r\n not really " * 20)
        return tmp / name

    return build


def _env_in_file(tmp: Path) -> Path:
    f = _h5(tmp, _hopper_arrays(action_dim=2))
    import h5py

    with h5py.File(f, "a") as h:
        h.create_group("metadata").attrs["env_id"] = "Hopper-v5"
    return f


BAD_INPUTS: list[tuple[str, Callable[[Path], Path], str | None, str]] = [
    (
        "missing key",
        lambda t: _h5(t, {k: v for k, v in _hopper_arrays().items() if k != "terminals"}),
        None,
        "data.hdf5: missing required key 'terminals' (found: actions, observations, rewards, timeouts)",
    ),
    (
        "length mismatch",
        lambda t: _h5(t, _with(rewards=np.zeros(99, np.float32))),
        None,
        "data.hdf5: key 'rewards' has 99 rows, expected 100 (as 'observations')",
    ),
    (
        "nan",
        lambda t: _npz(t, _nan_obs()),
        None,
        "data.npz: key 'observations' contains 1 NaN (first at row 7)",
    ),
    (
        "inf",
        lambda t: _h5(t, _inf_next()),
        None,
        "data.hdf5: key 'next_observations' contains 1 Inf (first at row 42)",
    ),
    (
        "empty",
        lambda t: _npz(t, {k: v[:0] for k, v in _hopper_arrays().items()}),
        None,
        "data.npz: dataset is empty (key 'observations' has 0 rows)",
    ),
    (
        "wrong ndim",
        lambda t: _h5(t, _with(actions=np.zeros(100, np.float32))),
        None,
        "data.hdf5: key 'actions' has shape (100,) (ndim 1), expected ndim 2 [N, action_dim]",
    ),
    (
        "wrong obs dim for --env",
        lambda t: _h5(t, _hopper_arrays(obs_dim=5)),
        "Hopper-v5",
        "data.hdf5: key 'observations' has obs_dim 5 but env 'Hopper-v5' has observation shape (11,)",
    ),
    (
        "wrong action dim for env named in file",
        _env_in_file,
        None,
        "data.hdf5: key 'actions' has action_dim 2 but env 'Hopper-v5' has action shape (3,)",
    ),
    (
        "unknown env",
        lambda t: _h5(t, _hopper_arrays()),
        "NoSuchEnv-v0",
        "data.hdf5: cannot build env 'NoSuchEnv-v0'",
    ),
    (
        "object array in npz",
        lambda t: _npz(t, _hopper_arrays() | {"infos": np.array([{"a": 1}, None], dtype=object)}),
        None,
        "data.npz: key 'infos' is an object array (needs pickle); refusing to load it",
    ),
    (
        "string array in npz",
        lambda t: _npz(t, _with(rewards=np.array(["1.0"] * 100))),
        None,
        "data.npz: key 'rewards' has non-numeric dtype <U3",
    ),
    ("corrupt hdf5", _corrupt("data.hdf5"), None, "data.hdf5: not a readable HDF5 file"),
    ("corrupt npz", _corrupt("data.npz"), None, "data.npz: not a readable npz file"),
    ("missing file", lambda t: t / "missing.h5", None, "missing.h5: no such file"),
    (
        "unknown suffix",
        lambda t: (t / "data.csv", (t / "data.csv").write_text("1,2"))[0],
        None,
        "data.csv: unknown dataset format '.csv'",
    ),
]


@pytest.mark.parametrize(
    ("build", "env", "message"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_refused_with_its_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    build: Callable[[Path], Path],
    env: str | None,
    message: str,
) -> None:
    path = build(tmp_path)
    with pytest.raises(DatasetError) as exc:
        load_dataset(path, env_id=env)
    # The message names the file first (missing files by their full path).
    assert str(exc.value).startswith(message) or str(exc.value) == f"{path}: no such file", str(exc.value)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    # Through the command: exit status 2, one line on stderr, nothing on stdout, no traceback.
    argv = ["dataset", "info", str(path)] + (["--env", env] if env else [])
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1 and out.err.endswith("\n")
    assert out.err.startswith(f"mbrl dataset info: error: {str(exc.value)[: len(message) + 80]}")


def test_every_problem_of_a_file_is_named_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's file: 4 NaN rewards and one Inf observation, plus a short timeouts key: one error names all."""
    arrays = _hopper_arrays()
    arrays["rewards"][[3, 10, 11, 50]] = np.nan
    arrays["observations"][1000 % len(arrays["observations"]), 2] = np.inf
    arrays["timeouts"] = arrays["timeouts"][:-1]
    path = _h5(tmp_path, arrays)
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    row = 1000 % len(arrays["observations"])
    assert info.value.problems == [
        f"key 'timeouts' has {len(arrays['rewards']) - 1} rows, expected {len(arrays['rewards'])} (as 'observations')",
        f"key 'observations' contains 1 Inf (first at row {row})",
        "key 'rewards' contains 4 NaN (first at rows 3, 10, 11, ...)",
    ]
    assert str(info.value).startswith("data.hdf5: 3 problems: key 'timeouts'")
    hdf5_problems = info.value.problems
    # npz: a pickled key is refused (never unpickled) and reported beside the others
    bad = dict(arrays)
    bad["terminals"] = np.array([object()] * len(arrays["rewards"]), dtype=object)
    npz = tmp_path / "pickled.npz"
    np.savez(npz, **bad)  # type: ignore[arg-type]
    with pytest.raises(DatasetError) as info:
        load_dataset(npz)
    assert info.value.problems[0] == "key 'terminals' is an object array (needs pickle); refusing to load it"
    assert len(info.value.problems) == 4
    # `mbrl dataset info --check` lists them, one per line, and exits 1; a good file prints ok and exits 0
    capsys.readouterr()
    assert main(["dataset", "info", str(path), "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{path}: 3 problems", *(f"  - {p}" for p in hdf5_problems)]
    (tmp_path / "ok").mkdir()
    good = _h5(tmp_path / "ok", _hopper_arrays())
    assert main(["dataset", "info", str(good), "--check"]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok"
