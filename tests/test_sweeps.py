"""Sweeps: named sweeps compose, the submitit launchers run and isolate jobs, plot.py reads a sweep folder."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from efmom.plotting import has_lr_grid, plot_sensitivity, sensitivity_curves
from efmom.records import Record, read_record

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TINY = ["experiment=quickstart", "epochs=1", "max_steps_per_epoch=3", "logger=none", "progress=false"]
ALL_METHODS = sorted(path.stem for path in (CONF / "method").glob("*.yaml"))
PAPER_METHODS = ["ef21", "econtrol", "ef21_sgdm", "ef21_sgdm_norm", "ef21_hm_norm", "ef21_rhm_norm", "ef21_mvr_norm", "ef21_igt_norm"]


def run_script(script: str, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / script), *arguments]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def hydra_config(*overrides: str) -> dict:
    """Return the composed ``hydra`` node, as ``train.py --cfg hydra`` prints it, without resolving it."""
    result = run_script("train.py", *overrides, "--cfg", "hydra")
    assert result.returncode == 0, result.stdout + result.stderr
    return yaml.safe_load(result.stdout)["hydra"]


def job_folders(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: int(p.name.split("_")[0]))


def only_record(folder: Path) -> Record:
    records = sorted(folder.glob("*.json"))
    assert len(records) == 1, f"{folder}: {records}"
    return read_record(records[0])


def log_span(folder: Path) -> tuple[datetime, datetime]:
    """Return the times of the first and last line of the job's train.log."""
    lines = (folder / "train.log").read_text().splitlines()
    stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in lines if line.startswith("[")]
    return stamps[0], stamps[-1]


@pytest.mark.parametrize(
    ("sweep", "key", "expected"),
    [
        ("paper", "method", ",".join(PAPER_METHODS)),
        ("seeds", "seed", "range(0,${sweep.seeds})"),
        ("lr_grid", "lr_scale", "0.125,0.25,0.5,1,2,4,8"),
    ],
)
def test_named_sweep_params(sweep, key, expected):
    params = hydra_config(f"sweep={sweep}")["sweeper"]["params"]
    assert params[key] == expected


def test_smoke_sweep_covers_every_method():
    params = hydra_config("sweep=smoke")["sweeper"]["params"]
    assert sorted(params["method"].split(",")) == ALL_METHODS
    assert params["experiment"] == "smoke"


def test_slurm_preset_fields():
    launcher = hydra_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu")["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["partition"] == "gpu"
    assert launcher["gpus_per_node"] == 1
    assert launcher["nodes"] == 1
    assert launcher["tasks_per_node"] == 1
    assert launcher["timeout_min"] > 0
    assert launcher["max_num_timeout"] > 0, "jobs that time out must be requeued to resume"
    assert 0 < launcher["signal_delay_s"] < launcher["timeout_min"] * 60


def test_local_preset_fields():
    launcher = hydra_config("hydra/launcher=local")["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert launcher["cpus_per_task"] == 1
    assert launcher["setup"][0] == "export OMP_NUM_THREADS=${hydra.launcher.cpus_per_task}"
    assert "flock -n 9" in launcher["setup"][1]


@pytest.fixture(scope="module")
def two_job_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Two quick-start jobs through the local preset with one job slot, so they must run one after the other."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = run_script(
        "train.py", "-m", *TINY, "method=ef21,ef21_igt_norm", "hydra/launcher=local",
        f"hydra.launcher.cpus_per_task={os.cpu_count()}", f"hydra.sweep.dir={sweep_dir}",
    )
    return sweep_dir, result


def test_local_sweep_two_records(two_job_sweep):
    sweep_dir, result = two_job_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    folders = job_folders(sweep_dir)
    assert [folder.name for folder in folders] == ["0_ef21", "1_ef21_igt_norm"]
    for folder, method in zip(folders, ["ef21", "ef21_igt_norm"]):
        record = only_record(folder)
        assert record.status == "completed"
        assert record.method == method
        assert record.metrics["epoch"] == [0, 1]


def test_local_sweep_one_slot_serialises(two_job_sweep):
    sweep_dir, result = two_job_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    (first_start, first_end), (second_start, second_end) = sorted(log_span(folder) for folder in job_folders(sweep_dir))
    assert first_end <= second_start, "with one slot the second job must start after the first has ended"


def test_rerun_sweep_skips_completed(two_job_sweep):
    sweep_dir, _ = two_job_sweep
    before = {path: path.stat().st_mtime_ns for path in sweep_dir.glob("*/*.pickle")}
    result = run_script("train.py", "-m", *TINY, "method=ef21,ef21_igt_norm", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("already completed") == 2
    assert {path: path.stat().st_mtime_ns for path in sweep_dir.glob("*/*.pickle")} == before


def test_plot_reads_sweep_folder(two_job_sweep, tmp_path):
    sweep_dir, _ = two_job_sweep
    result = run_script("plot.py", f"runs={sweep_dir}", "metrics=[test_acc]", "formats=[png]", f"out_dir={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "test_acc_vs_epoch.png").is_file()
    assert not (tmp_path / "sensitivity.png").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| EF21 |" in summary
    assert "| ‖EF21-IGT‖ |" in summary


def test_failed_job_isolated(tmp_path):
    # γ₀ = 1e15 makes plain SGD on the MLP diverge in its first epoch; the other job trains normally.
    result = run_script(
        "train.py", "-m", *TINY, "method=sgd", "model=mlp", "method.lr=0.1,1e15", "hydra/launcher=local",
        f"hydra.sweep.dir={tmp_path}",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # Hydra prints the sweep value as the float it parsed.
    assert "Error executing job with overrides" in output
    assert "'method.lr=1000000000000000.0'" in output

    healthy, diverged = job_folders(tmp_path)
    assert only_record(healthy).status == "completed"
    assert not (healthy / "traceback.txt").exists()
    failed = only_record(diverged)
    assert failed.status == "failed"
    assert "non-finite" in failed.info["error"]
    assert "NonFiniteError" in (diverged / "traceback.txt").read_text()


def test_failure_before_training_leaves_traceback(tmp_path):
    result = run_script("train.py", *TINY, "lr_scale=-1", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "lr_scale must be a finite number > 0, got -1" in result.stdout + result.stderr
    assert "ValueError: lr_scale" in (tmp_path / "traceback.txt").read_text()


def test_lr_scale_multiplies_preset(tmp_path):
    result = run_script("train.py", *TINY, "method=ef21_sgdm", "lr_scale=0.25", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    record = only_record(tmp_path)
    assert record.metrics["lr"][0] == pytest.approx(0.025)
    assert record.info["config"]["lr_scale"] == 0.25
    assert "_lr-0,025_" in record.path.name


def make_record(method: str, scale: float, seed: int, train_loss: float, test_acc: float, status: str = "completed") -> Record:
    config = {"lr_scale": scale, "seed": seed, "method": {"lr": 0.1}}
    info = {"method": method, "seed": seed, "status": status, "error": None, "config": config}
    metrics = {"epoch": [0, 1], "train_loss": [2.3, train_loss], "test_acc": [10.0, test_acc]}
    return Record(path=Path(f"{method}_{scale}_{seed}.json"), metrics=metrics, info=info)


def grid_records() -> list[Record]:
    records = []
    for scale, loss in [(0.5, 0.4), (1.0, 0.2), (2.0, 0.3)]:
        for seed, shift in [(0, 0.0), (1, 0.1)]:
            records.append(make_record("ef21_igt_norm", scale, seed, loss + shift, 90.0 - 10 * shift))
    records.append(make_record("ef21", 0.5, 0, 0.5, 80.0))
    records.append(make_record("ef21", 1.0, 0, 0.3, 85.0))
    records.append(make_record("ef21", 2.0, 0, math.inf, 10.0, status="failed"))
    return records


def test_sensitivity_curves_seed_mean_and_gap():
    curves = {curve.method: curve for curve in sensitivity_curves(grid_records(), "train_loss")}
    assert list(curves) == ["ef21", "ef21_igt_norm"]

    igt = curves["ef21_igt_norm"]
    assert igt.x.tolist() == [0.5, 1.0, 2.0]
    assert igt.y.tolist() == pytest.approx([0.45, 0.25, 0.35])
    assert igt.low.tolist() == pytest.approx([0.4, 0.2, 0.3])
    assert igt.high.tolist() == pytest.approx([0.5, 0.3, 0.4])

    ef21 = curves["ef21"]
    assert ef21.y[:2].tolist() == pytest.approx([0.5, 0.3])
    assert math.isnan(ef21.y[2]), "a failed run must leave a gap, not its last value"
    assert ef21.low is None


def test_sensitivity_needs_two_scales():
    single = [record for record in grid_records() if record.info["config"]["lr_scale"] == 1.0]
    assert not has_lr_grid(single)
    with pytest.raises(ValueError, match="at least two values of lr_scale"):
        sensitivity_curves(single, "train_loss")


def test_sensitivity_figure_panels():
    figure, curves = plot_sensitivity(grid_records())
    assert [axes.get_ylabel() for axes in figure.axes] == ["Final train loss", "Final test accuracy (%)"]
    assert figure.axes[0].get_xscale() == "log"
    assert figure.axes[0].get_yscale() == "log"
    assert [curve.method for curve in curves["test_acc"]] == ["ef21", "ef21_igt_norm"]
