"""Figures and summary tables from run records, through the library and through plot.py."""

from __future__ import annotations

import logging
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from matplotlib.colors import to_hex

from efmom.plotting import (
    DEFAULT_STYLES,
    build_curves,
    format_summary,
    load_records,
    plot_records,
    summarize,
    x_values,
)
from efmom.records import read_record, write_record

REPO = Path(__file__).resolve().parents[1]
RELEASE_DATA = Path(__file__).resolve().parents[2] / "shared" / "release_data"
RELEASED_AXES = ("epoch", "bp_total", "exbp_total", "time", "gpu_seconds")
PANELS = ("train_loss", "test_loss", "test_acc")

sys.path.insert(0, str(REPO))
import plot  # noqa: E402 - plot.py sits in the repository root


def write_run(folder: Path, method: str, seed: int, test_acc: list, lr: float = 0.1, **extra) -> Path:
    """Write a small synthetic record and return its JSON path."""
    epochs = len(test_acc)
    metrics = {
        "epoch": list(range(epochs)),
        "test_acc": test_acc,
        "train_loss": [2.0 / (i + 1) + seed for i in range(epochs)],
        "test_loss": [3.0 / (i + 1) for i in range(epochs)],
        "wall_seconds": [10.0 * i * (seed + 1) for i in range(epochs)],
        "cum_bp_eq_total": [70.0 * i for i in range(epochs)],
        "cum_bits_total": [1000.0 * i for i in range(epochs)],
        "gpu_seconds": [2.0] * (epochs - 1),
    }
    metrics.update(extra)
    info = {"status": "completed", "error": None, "method": method, "config": {"lr": lr}, "seed": seed}
    _, json_path = write_record(folder / f"{method}_{lr}_{seed}", "record", metrics, info)
    return json_path


@pytest.fixture
def release_records():
    if not RELEASE_DATA.is_dir():
        pytest.skip(f"released runs folder {RELEASE_DATA} is absent")
    return load_records(RELEASE_DATA)


def released_series(label: str, key: str) -> list:
    for path in RELEASE_DATA.glob("*.pickle"):
        record = read_record(path)
        if record.label == label:
            return record.metrics[key]
    raise KeyError(label)


def compose_plot_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="plot", overrides=overrides)


@pytest.mark.parametrize("x_axis", RELEASED_AXES)
def test_release_panels_every_axis(release_records, tmp_path, x_axis):
    truncate = x_axis == "time"
    figures = plot_records(release_records, PANELS, x_axis, out_dir=tmp_path, truncate=truncate)

    assert [f.metric for f in figures] == list(PANELS)
    for figure in figures:
        assert len(figure.lines) == 8
        for suffix in ("png", "pdf"):
            assert (tmp_path / f"{figure.metric}_vs_{x_axis}.{suffix}").stat().st_size > 0

    accuracy = figures[2]
    if not truncate:
        assert accuracy.line("‖EF21-HM‖").get_ydata()[-1] == 83.11
        assert accuracy.line("‖EF21-IGT‖").get_ydata()[-1] == 81.92
        expected_x = x_values(read_record(next(RELEASE_DATA.glob("*_EF21_HM_NORM_*"))), x_axis)
        np.testing.assert_array_equal(accuracy.line("‖EF21-HM‖").get_xdata(), expected_x)
        np.testing.assert_array_equal(
            accuracy.line("EF21").get_ydata(), released_series("EF21", "test_acc")
        )


def test_release_log_scale_for_losses(release_records):
    figures = plot_records(release_records, PANELS, "epoch")
    scales = [f.figure.axes[0].get_yscale() for f in figures]
    assert scales == ["log", "log", "linear"]


def test_release_time_truncation(release_records):
    (figure,) = plot_records(release_records, ["test_acc"], "time", truncate=True)
    fastest = min(read_record(p).metrics["wall_seconds"][-1] for p in RELEASE_DATA.glob("*.pickle"))
    assert fastest == released_series("EF21", "wall_seconds")[-1]
    assert fastest < released_series("‖EF21-HM‖", "wall_seconds")[-1]
    assert figure.line("EF21").get_xdata()[-1] == fastest
    assert len(figure.line("EF21").get_xdata()) == 91

    for line in figure.lines:
        assert max(line.get_xdata()) <= fastest
    assert max(max(line.get_xdata()) for line in figure.lines) == fastest
    assert figure.figure.axes[0].get_xlim()[1] == fastest

    hm_x = figure.line("‖EF21-HM‖").get_xdata()
    full_hm_x = np.asarray(released_series("‖EF21-HM‖", "wall_seconds"))
    np.testing.assert_array_equal(hm_x, full_hm_x[full_hm_x <= fastest])


def test_release_gpu_seconds_axis(release_records):
    (figure,) = plot_records(release_records, ["test_acc"], "gpu_seconds")
    for label in ("‖EF21-HM‖", "‖EF21-IGT‖", "ECONTROL"):
        x = figure.line(label).get_xdata()
        durations = released_series(label, "gpu_seconds")
        assert len(x) == 91
        assert x[0] == 0.0
        assert x[-1] == pytest.approx(sum(durations), rel=1e-12)


def test_release_bits_axis_reports_missing(release_records, caplog):
    with pytest.raises(ValueError, match="cum_bits_total"):
        plot_records(release_records, ["test_acc"], "bits")
    assert "_EF21_HM_NORM_" in caplog.text


def test_release_styles_stable_across_figures(release_records):
    colours = []
    for x_axis in ("epoch", "time"):
        for figure in plot_records(release_records, PANELS, x_axis):
            colours.append({c.label: to_hex(l.get_color()) for c, l in zip(figure.curves, figure.lines)})
    assert all(c == colours[0] for c in colours)
    assert colours[0]["‖EF21-HM‖"] == DEFAULT_STYLES["ef21_hm_norm"]["color"]
    assert len(set(colours[0].values())) == 8


@pytest.mark.parametrize("x_axis", RELEASED_AXES)
def test_plot_entry_composed_config(release_records, tmp_path, x_axis):
    cfg = compose_plot_config([f"runs={RELEASE_DATA}", f"out_dir={tmp_path}", f"x_axis={x_axis}"])
    assert plot.run(cfg) == tmp_path
    for metric in PANELS:
        assert (tmp_path / f"{metric}_vs_{x_axis}.pdf").is_file()
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| ‖EF21-HM‖ | 1 | 83.11 | 83.75 |" in summary
    assert "| ‖EF21-IGT‖ | 1 | 81.92 | 82.90 |" in summary


def test_plot_entry_command_line(release_records, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "plot.py"), f"runs={RELEASE_DATA}", "x_axis=time", "truncate=true",
         "hydra.run.dir=hydra_out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "hydra_out"
    assert sorted(p.name for p in out.glob("*.png")) == [f"{m}_vs_time.png" for m in sorted(PANELS)]
    assert (out / "summary.md").is_file()
    assert "| ‖EF21-HM‖ | 1 | 83.11 |" in result.stdout


def test_plot_entry_relative_runs(tmp_path):
    write_run(tmp_path / "mine", "ef21", 0, [10.0, 50.0])
    result = subprocess.run(
        [sys.executable, str(REPO / "plot.py"), "runs=mine", "out_dir=figures", "metrics=[test_acc]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "figures" / "test_acc_vs_epoch.png").is_file()


def test_plot_entry_unknown_x_axis(tmp_path):
    write_run(tmp_path / "mine", "ef21", 0, [10.0, 50.0])
    result = subprocess.run(
        [sys.executable, str(REPO / "plot.py"), "runs=mine", "out_dir=figures", "x_axis=steps"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "x_axis='steps'" in output
    assert "epoch, bp_total, exbp_total, time, gpu_seconds, bits" in output
    assert "Traceback" not in output


def test_plot_entry_no_records(tmp_path):
    cfg = compose_plot_config([f"runs={tmp_path / 'empty'}", f"out_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="empty"):
        plot.run(cfg)


def test_plot_config_rejects_misspelt_key():
    with pytest.raises(Exception, match="xaxis"):
        compose_plot_config(["xaxis=time"])


def test_seed_group_mean_and_minmax(tmp_path):
    for seed, accuracy in enumerate([[10.0, 40.0, 70.0], [20.0, 50.0, 60.0], [30.0, 30.0, 80.0]]):
        write_run(tmp_path, "ef21_hm_norm", seed, accuracy)
    write_run(tmp_path, "ef21", 0, [5.0, 6.0, 7.0])

    curves = build_curves(load_records(tmp_path), "test_acc", "epoch", band="minmax")
    assert [c.legend for c in curves] == ["EF21", "‖EF21-HM‖ (3 seeds)"]
    hm = curves[1]
    np.testing.assert_array_equal(hm.x, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(hm.y, [20.0, 40.0, 70.0])
    np.testing.assert_array_equal(hm.low, [10.0, 30.0, 60.0])
    np.testing.assert_array_equal(hm.high, [30.0, 50.0, 80.0])
    assert curves[0].low is None

    (figure,) = plot_records(load_records(tmp_path), ["test_acc"], "epoch")
    legend = [t.get_text() for t in figure.figure.axes[0].get_legend().get_texts()]
    assert legend == ["EF21", "‖EF21-HM‖ (3 seeds)"]
    np.testing.assert_array_equal(figure.line("‖EF21-HM‖").get_ydata(), [20.0, 40.0, 70.0])


def test_seed_group_std_band(tmp_path):
    for seed, accuracy in enumerate([[10.0, 40.0], [20.0, 50.0], [30.0, 90.0]]):
        write_run(tmp_path, "ef21", seed, accuracy)
    (curve,) = build_curves(load_records(tmp_path), "test_acc", "epoch", band="std")
    np.testing.assert_allclose(curve.low, [10.0, 60.0 - math.sqrt(700.0)], rtol=1e-12)
    np.testing.assert_allclose(curve.high, [30.0, 60.0 + math.sqrt(700.0)], rtol=1e-12)
    (no_band,) = build_curves(load_records(tmp_path), "test_acc", "epoch", band="none")
    assert no_band.low is None


def test_seed_group_time_axis_mean(tmp_path):
    write_run(tmp_path, "ef21", 0, [10.0, 20.0, 30.0])
    write_run(tmp_path, "ef21", 1, [10.0, 20.0, 30.0])
    (curve,) = build_curves(load_records(tmp_path), "test_acc", "time")
    np.testing.assert_array_equal(curve.x, [0.0, 15.0, 30.0])


def test_seed_group_shortest_run(tmp_path):
    write_run(tmp_path, "ef21", 0, [10.0, 20.0, 30.0])
    write_run(tmp_path, "ef21", 1, [20.0, 40.0])
    (curve,) = build_curves(load_records(tmp_path), "test_acc", "epoch")
    np.testing.assert_array_equal(curve.y, [15.0, 30.0])


def test_different_settings_separate_curves(tmp_path):
    write_run(tmp_path, "ef21", 0, [10.0, 20.0], lr=0.1)
    write_run(tmp_path, "ef21", 0, [10.0, 30.0], lr=1.0)
    curves = build_curves(load_records(tmp_path), "test_acc", "epoch")
    assert [c.label for c in curves] == ["EF21 (lr=0.1)", "EF21 (lr=1.0)"]

    grouped = build_curves(load_records(tmp_path), "test_acc", "epoch", ignored=["seed", "config.lr"])
    assert len(grouped) == 1
    np.testing.assert_array_equal(grouped[0].y, [10.0, 25.0])


def test_missing_axis_warns_with_file(tmp_path, caplog):
    keep = write_run(tmp_path, "ef21", 0, [10.0, 20.0])
    lacking = write_run(tmp_path, "ef21_igt_norm", 0, [10.0, 20.0])
    record = read_record(lacking)
    del record.metrics["wall_seconds"]
    write_record(lacking.parent, "record", record.metrics, record.info)

    with caplog.at_level(logging.WARNING):
        curves = build_curves(load_records(tmp_path), "test_acc", "time")
    assert [c.label for c in curves] == ["EF21"]
    assert str(lacking) in caplog.text
    assert "wall_seconds" in caplog.text
    assert str(keep) not in caplog.text


def test_unknown_x_axis_names_choices(tmp_path):
    write_run(tmp_path, "ef21", 0, [10.0, 20.0])
    choices = "epoch, bp_total, exbp_total, time, gpu_seconds, bits"
    with pytest.raises(ValueError, match=rf"x_axis='wall'.*{choices}"):
        plot_records(load_records(tmp_path), ["test_acc"], "wall")


def test_broken_records_skipped(tmp_path, caplog):
    write_run(tmp_path, "ef21", 0, [10.0, 20.0])
    write_run(tmp_path, "ef21_hm_norm", 0, [10.0, 30.0])

    truncated = tmp_path / "truncated" / "run.pickle"
    truncated.parent.mkdir()
    truncated.write_bytes(pickle.dumps({"test_acc": [1.0, 2.0, 3.0]})[:-5])

    corrupt = write_run(tmp_path, "ef21_igt_norm", 0, [10.0, 40.0])
    corrupt.write_text('{"metrics": ', encoding="utf-8")
    corrupt.with_suffix(".pickle").write_bytes(b"\x80\x04garbage")

    marker = tmp_path / "marker"

    class RunsCommand:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(marker)],))

    unsafe = tmp_path / "unsafe" / "run.pickle"
    unsafe.parent.mkdir()
    unsafe.write_bytes(pickle.dumps({"test_acc": [1.0, 2.0], "epoch": [RunsCommand()]}))

    with caplog.at_level(logging.ERROR):
        (figure,) = plot_records(load_records(tmp_path), ["test_acc"], "epoch", out_dir=tmp_path / "fig")

    assert [c.label for c in figure.curves] == ["EF21", "‖EF21-HM‖"]
    assert (tmp_path / "fig" / "test_acc_vs_epoch.png").stat().st_size > 0
    for path in (truncated, corrupt, corrupt.with_suffix(".pickle"), unsafe):
        assert str(path) in caplog.text
    assert not marker.exists()


def test_corrupt_json_falls_back_to_pickle(tmp_path, caplog):
    json_path = write_run(tmp_path, "ef21", 0, [10.0, 20.0])
    json_path.write_text("{", encoding="utf-8")
    (record,) = load_records(tmp_path)
    assert record.path == json_path.with_suffix(".pickle")
    assert record.metrics["test_acc"] == [10.0, 20.0]
    assert str(json_path) in caplog.text


def test_style_overrides(tmp_path):
    write_run(tmp_path, "ef21", 0, [10.0, 20.0])
    write_run(tmp_path, "ef21", 1, [10.0, 20.0])
    styles = {"ef21": {"color": "#000000", "marker": "o", "label": "Plain EF21"}}
    (figure,) = plot_records(load_records(tmp_path), ["test_acc"], "epoch", styles=styles)
    line = figure.lines[0]
    assert to_hex(line.get_color()) == "#000000"
    assert line.get_marker() == "o"
    assert line.get_label() == "Plain EF21 (2 seeds)"

    with pytest.raises(ValueError, match="colour"):
        plot_records(load_records(tmp_path), ["test_acc"], "epoch", styles={"ef21": {"colour": "red"}})


def test_summary_values(tmp_path):
    write_run(tmp_path, "ef21_hm_norm", 0, [10.0, 60.0, 85.0, 82.0])
    write_run(tmp_path, "ef21_hm_norm", 1, [10.0, 70.0, 75.0, 90.0])
    write_run(tmp_path, "ef21", 0, [10.0, 50.0, 70.0, 79.0])

    rows = summarize(load_records(tmp_path), target_acc=80.0)
    assert [r.label for r in rows] == ["EF21", "‖EF21-HM‖ (2 seeds)"]
    plain, hm = rows

    assert hm.n_seeds == 2
    assert hm.final_test_acc == 86.0
    assert hm.best_test_acc == 86.0
    assert hm.final_train_loss == pytest.approx(2.0 / 4 + 0.5)
    assert hm.target_epoch == 2
    assert hm.target_wall_seconds == 30.0
    assert hm.target_bp_eq == 140.0
    assert hm.target_bits == 2000.0

    assert plain.final_test_acc == 79.0
    assert plain.target_epoch is None
    assert plain.target_wall_seconds is None

    table = format_summary(rows, 80.0)
    assert "| EF21 | 1 | 79.00 | 79.00 | 0.5000 | not reached | not reached | not reached | not reached |" in table
    assert "| ‖EF21-HM‖ (2 seeds) | 2 | 86.00 | 86.00 | 1.0000 | 2 | 30.0 | 140.0 | 2000 |" in table
    assert "bits to 80 %" in table


def test_summary_missing_cost_series(tmp_path):
    path = write_run(tmp_path, "ef21", 0, [10.0, 90.0])
    record = read_record(path)
    del record.metrics["cum_bits_total"]
    write_record(path.parent, "record", record.metrics, record.info)
    (row,) = summarize(load_records(tmp_path), target_acc=80.0)
    assert row.target_epoch == 1
    assert row.target_bits is None
    assert format_summary([row], 80.0).rstrip().endswith("| 1 | 10.0 | 70.0 | n/a |")
