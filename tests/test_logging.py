"""Logger: real TensorBoard event files read back by tensorboard's reader, CSV growth/resume, console, plots."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import SupportsFloat

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mbrl.cli import main as cli_main
from mbrl.logging import Logger, read_csv
from mbrl.plotting import plot_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scalars(run_dir: Path, tag: str) -> tuple[list[int], list[float]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    events = acc.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def test_tensorboard_events_read_back(tmp_path: Path) -> None:
    with Logger(tmp_path, console=False, csv=False) as logger:
        for step in range(0, 50, 10):
            metrics: dict[str, SupportsFloat] = {
                "train/loss": 1.0 / (step + 1),
                "time/fps": np.float32(step * 2.5),
            }
            if step % 20 == 0:
                metrics["eval/return"] = torch.tensor(step * -3.25)
            logger.log(metrics, step)
    assert list(tmp_path.glob("events.out.tfevents.*")), "no event file written"
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "time/fps", "eval/return"}
    steps, values = _scalars(tmp_path, "train/loss")
    assert steps == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(values, [1.0 / (s + 1) for s in steps], rtol=1e-6)
    steps, values = _scalars(tmp_path, "eval/return")
    assert steps == [0, 20, 40]
    np.testing.assert_allclose(values, [0.0, -65.0, -130.0])
    _, values = _scalars(tmp_path, "time/fps")
    np.testing.assert_allclose(values, [0.0, 25.0, 50.0, 75.0, 100.0])


def test_csv_growing_keys_flushed_before_close(tmp_path: Path) -> None:
    logger = Logger(tmp_path, console=False, tensorboard=False)
    logger.log({"train/a": 1.0}, 0)
    logger.log({"train/a": 2.0, "eval/b": 3.5}, 1)
    logger.log({"model/c": -1.0}, 2)
    # Every row is on disk before close: a killed run keeps its rows.
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert lines[0] == "step,wall_time,train/a,eval/b,model/c"
    assert len(lines) == 4
    cols = read_csv(tmp_path / "progress.csv")
    assert cols["step"].tolist() == [0, 1, 2]
    assert cols["step"].dtype == np.int64
    np.testing.assert_array_equal(cols["train/a"], [1.0, 2.0, np.nan])
    np.testing.assert_array_equal(cols["eval/b"], [np.nan, 3.5, np.nan])
    np.testing.assert_array_equal(cols["model/c"], [np.nan, np.nan, -1.0])
    assert np.all(np.isfinite(cols["wall_time"]))
    logger.close()
    logger.close()  # idempotent


def test_csv_values_exact(tmp_path: Path) -> None:
    values = [0.1, 1e-300, 123456789.123456789, float("nan"), float("inf")]
    with Logger(tmp_path, console=False, tensorboard=False) as logger:
        for i, v in enumerate(values):
            logger.log({"train/x": v}, i)
    got = read_csv(tmp_path)["train/x"]
    np.testing.assert_array_equal(got, values)


def test_resume_appends_and_truncates_after_checkpoint(tmp_path: Path) -> None:
    with Logger(tmp_path, console=False) as logger:
        for step in range(10):
            logger.log({"train/x": float(step)}, step)
    # Reopen without resume_step: append.
    with Logger(tmp_path, console=False, tensorboard=False) as logger:
        logger.log({"train/x": 100.0}, 10)
    assert read_csv(tmp_path)["step"].tolist() == list(range(11))

    # Resume from a checkpoint at step 4: rows after it go, new rows follow, no duplicated steps.
    with Logger(tmp_path, console=False, resume_step=4) as logger:
        assert logger.step == 4
        assert read_csv(tmp_path)["step"].tolist() == [0, 1, 2, 3, 4]
        for step in range(5, 8):
            logger.log({"train/x": -float(step), "eval/new": 1.0}, step)
    cols = read_csv(tmp_path)
    assert cols["step"].tolist() == list(range(8))
    np.testing.assert_array_equal(cols["train/x"], [0, 1, 2, 3, 4, -5, -6, -7])
    np.testing.assert_array_equal(cols["eval/new"], [np.nan] * 5 + [1.0] * 3)

    # TensorBoard gets the resumed values; the writer is opened with purge_step so TensorBoard hides the stale
    # events after the resume step. (Whether the reader applies the purge depends on event-file ordering, which
    # is timing-dependent when both files are written in the same second, so only the last value per step is
    # checked here.)
    steps, values = _scalars(tmp_path, "train/x")
    last = dict(zip(steps, values))
    assert set(range(8)) <= set(last)
    np.testing.assert_allclose([last[s] for s in range(8)], [0, 1, 2, 3, 4, -5, -6, -7])


def test_each_step_is_one_csv_row_also_across_a_resume(tmp_path: Path) -> None:
    """A second write at the same step (train metrics, then the final evaluation) merges into that step's row;
    a resumed run that logs again at its checkpoint step merges too, instead of repeating the step."""
    with Logger(tmp_path, console=False, tensorboard=False) as logger:
        logger.log({"train/x": 1.0}, 5)
        logger.log({"train/x": 2.0}, 10)
        logger.log({"eval/return_mean": 7.0}, 10)  # same step, a new key: merged
        logger.log({"time/s": 3.0}, 10)  # same step again
    cols = read_csv(tmp_path)
    assert cols["step"].tolist() == [5, 10]
    assert cols["train/x"].tolist() == [1.0, 2.0] and cols["eval/return_mean"][1] == 7.0 and cols["time/s"][1] == 3.0
    with Logger(tmp_path, console=False, tensorboard=False, resume_step=10) as logger:
        logger.log({"eval/return_mean": 8.0}, 10)  # the resumed run re-evaluates at its checkpoint step
        logger.log({"train/x": 4.0}, 12)
    cols = read_csv(tmp_path)
    assert cols["step"].tolist() == [5, 10, 12]
    assert cols["eval/return_mean"][1] == 8.0 and cols["train/x"][1] == 2.0  # the newer value, the rest kept


def test_partial_last_line_dropped_on_reopen(tmp_path: Path) -> None:
    with Logger(tmp_path, console=False, tensorboard=False) as logger:
        logger.log({"train/x": 1.0}, 0)
        logger.log({"train/x": 2.0}, 1)
    path = tmp_path / "progress.csv"
    path.write_text(path.read_text() + "2,17000.0,3.")  # a kill mid-row
    with Logger(tmp_path, console=False, tensorboard=False) as logger:
        logger.log({"train/x": 4.0}, 3)
    cols = read_csv(path)
    assert cols["step"].tolist() == [0, 1, 3]
    np.testing.assert_array_equal(cols["train/x"], [1.0, 2.0, 4.0])


def test_any_namespace_is_accepted_and_plotted(tmp_path: Path) -> None:
    with Logger(tmp_path, console=False, tensorboard=False) as logger:
        logger.log({"train/x": 1.0, "my_probe/loss": 2.0, "Grad-norms/actor": 3.0}, 0)
        logger.log({"train/x": 2.0, "my_probe/loss": 1.0, "Grad-norms/actor": 2.0}, 1)
    cols = read_csv(tmp_path / "progress.csv")
    assert cols["my_probe/loss"].tolist() == [2.0, 1.0]
    assert {p.name for p in plot_run(tmp_path)} == {"train.png", "my_probe.png", "Grad-norms.png"}


@pytest.mark.parametrize("key", ["loss", "train/", "/loss", "a b/loss", "1x/loss"])
def test_unnamespaced_key_refused(tmp_path: Path, key: str) -> None:
    with (
        Logger(tmp_path, console=False, tensorboard=False) as logger,
        pytest.raises(ValueError, match="not namespaced"),
    ):
        logger.log({"train/ok": 1.0, key: 2.0}, 0)
    # Refused before anything was written.
    assert (tmp_path / "progress.csv").read_text().splitlines() == ["step,wall_time"]


def test_non_scalar_value_refused(tmp_path: Path) -> None:
    with (
        Logger(tmp_path, console=False, tensorboard=False) as logger,
        pytest.raises(ValueError, match=r"train/v.*not a scalar"),
    ):
        logger.log({"train/v": np.ones(3)}, 0)  # type: ignore[dict-item]


def test_console_line_rate_eta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = [100.0]
    logger = Logger(None, total=100, desc="dyna", print_every_s=10.0, bar=False, clock=lambda: now[0])
    logger.log({"train/loss": 0.25, "eval/return": 1234.5}, 0)
    now[0] += 5.0
    logger.advance(20)
    assert capsys.readouterr().err == ""  # less than print_every_s since the start
    now[0] += 5.0
    logger.advance(30)  # 50 steps in 10 s: 5 steps/s, 50 to go: ETA 10 s
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    line = err[0]
    assert line.startswith("dyna step 50/100 (50.0%)")
    assert "5.0 steps/s" in line
    assert "ETA 0:00:10" in line
    assert "eval/return=1234" in line and "train/loss=0.25" in line
    assert line.index("eval/return") < line.index("train/loss")  # eval first
    now[0] += 1.0
    logger.set_step(60)
    assert capsys.readouterr().err == ""
    logger.close()
    last = capsys.readouterr().err.strip()
    assert last.startswith("dyna step 60/100") and last.endswith("done")


def test_console_resume_rate_counts_from_resume_step(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    logger = Logger(None, total=1000, resume_step=900, print_every_s=1.0, bar=False, clock=lambda: now[0])
    now[0] = 2.0
    logger.advance(50)
    line = capsys.readouterr().err
    assert "step 950/1000 (95.0%)" in line and "25.0 steps/s" in line and "ETA 0:00:02" in line
    logger.close()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_run_writes_pngs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Logger(run, console=False, tensorboard=False) as logger:
        for step in range(20):
            logger.log({"train/loss": 1.0 / (step + 1), "train/q": float(step), "time/fps": 100.0}, step)
            if step % 5 == 0:
                logger.log({"eval/return": float(step) ** 2, "eval/episodes": 5.0}, step)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["eval.png", "time.png", "train.png"]
    for p in paths:
        assert p.parent == run / "plots"
        assert p.stat().st_size > 2000
        width, height = _png_size(p)
        assert width >= 300 and height >= 200
    # Two subplots side by side: wider than the single-key figure (eval/episodes, a setting, is not drawn).
    assert _png_size(run / "plots" / "train.png")[0] > _png_size(run / "plots" / "eval.png")[0]

    only = plot_run(run, out_dir=tmp_path / "elsewhere", keys=["eval/return"])
    assert only == [tmp_path / "elsewhere" / "eval.png"]
    with pytest.raises(ValueError, match="no column 'eval/missing'"):
        plot_run(run, keys=["eval/missing"])


def test_plot_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    with Logger(run, console=False, tensorboard=False) as logger:
        for step in range(5):
            logger.log({"train/loss": float(step), "model/mse": 2.0 * step}, step)
    assert cli_main(["plot", str(run)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(run / "plots" / "model.png"), str(run / "plots" / "train.png")]
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in out)

    assert cli_main(["plot", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["plot", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no progress.csv" in err and "Traceback" not in err


def test_console_bar_when_interactive(capsys: pytest.CaptureFixture[str]) -> None:
    with Logger(None, total=10, desc="fit", bar=True) as logger:
        logger.log({"model/mse": 0.125}, 0)
        logger.advance(7)
    err = capsys.readouterr().err
    assert "fit" in err and "7/10" in err and "model/mse=0.125" in err
    assert "steps/s" not in err  # the bar replaces the plain line
