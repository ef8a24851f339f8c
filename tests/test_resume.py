"""Resuming a run: killed after an epoch and started again, it writes the record an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from efmom.records import read_record
from efmom.runner import CHECKPOINT, RunCompleted, RunFolder, execute, global_rng_states, set_global_rng_states

REPO = Path(__file__).resolve().parents[1]
# A quick-start run long enough to be killed in the middle: about half a second per epoch on one core.
RUN = ["experiment=quickstart", "method=ef21_rhm_norm", "compressor=randk", "epochs=6", "max_steps_per_epoch=8",
       "logger=none", "progress=false"]
TIMINGS = {"wall_seconds", "gpu_seconds"}


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *RUN, *overrides, f"hydra.run.dir={run_dir}"]


def run_to_end(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(train_command(run_dir, *overrides), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"train.py failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def only_json(run_dir: Path) -> Path:
    records = sorted(run_dir.glob("*.json"))
    assert len(records) == 1, records
    return records[0]


def epochs_written(run_dir: Path) -> int:
    """Return the last epoch in the run's JSON record, or -1 while there is no readable record."""
    try:
        return json.loads(only_json(run_dir).read_text())["metrics"]["epoch"][-1]
    except (AssertionError, OSError, ValueError, KeyError, IndexError):
        return -1


def kill_after_epoch(run_dir: Path, epoch: int) -> None:
    """Start train.py and SIGKILL it as soon as its record contains ``epoch``; fail when it finished first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(train_command(run_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while epochs_written(run_dir) < epoch:
            assert process.poll() is None, f"train.py exited with {process.returncode} before epoch {epoch}"
            assert time.monotonic() < deadline, f"no record of epoch {epoch} after 240 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()


def compare_records(resumed: Path, reference: Path) -> None:
    first, second = read_record(only_json(resumed)), read_record(only_json(reference))
    assert first.status == "completed"
    assert set(first.metrics) == set(second.metrics)
    for key in sorted(set(first.metrics) - TIMINGS):
        assert first.metrics[key] == second.metrics[key], f"{key} differs after resuming"
    assert first.info["config"] == second.info["config"]


def test_killed_run_resumes_identically(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_to_end(reference)

    kill_after_epoch(resumed, epoch=2)
    interrupted = read_record(only_json(resumed))
    assert interrupted.status == "running", "the run finished before it could be killed; raise epochs in RUN"
    assert len(interrupted.metrics["epoch"]) < 7
    assert (resumed / CHECKPOINT).exists()

    result = run_to_end(resumed)
    assert "resuming from" in result.stdout + result.stderr
    compare_records(resumed, reference)


def test_completed_run_skipped(tmp_path):
    run_to_end(tmp_path)
    record = only_json(tmp_path)
    before = (record.read_bytes(), record.stat().st_mtime_ns)

    result = run_to_end(tmp_path)
    assert "already completed" in result.stdout + result.stderr
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before


def test_other_config_not_resumed(tmp_path):
    run_to_end(tmp_path, "epochs=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(train_command(tmp_path, "epochs=2"), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "belongs to a run with another config" in output
    assert "epochs: 1 -> 2" in output
    assert read_record(only_json(tmp_path)).metrics["epoch"] == [0, 1]


def test_global_rng_states_round_trip():
    states = global_rng_states()
    expected = (torch.rand(3), torch.randn(2).tolist())
    torch.rand(5)
    set_global_rng_states(states)
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.randn(2).tolist() == expected[1]


class _FailingTrainer:
    """Stands in for a Trainer whose first epoch raises, with the record of epoch 0 already made."""

    epoch = 0
    metrics = {"epoch": [0], "train_loss": [2.3]}
    on_epoch_end = None

    def run(self):
        raise KeyboardInterrupt


class _NoLogger:
    run_id = None

    def start(self, *args):
        pass

    def finish(self, failed=False):
        self.failed = failed


def test_interrupted_run_marked_for_resume(tmp_path):
    folder = RunFolder(tmp_path, "run", {"method": "ef21", "seed": 0, "config": {"epochs": 1}})
    logger = _NoLogger()
    with pytest.raises(KeyboardInterrupt):
        execute(_FailingTrainer(), folder, logger)
    record = read_record(folder.json_path)
    assert record.status == "failed"
    assert record.info["error"].startswith("interrupted (KeyboardInterrupt")
    assert "KeyboardInterrupt" in (tmp_path / "traceback.txt").read_text()
    assert logger.failed


def test_completed_folder_raises_run_completed(tmp_path):
    folder = RunFolder(tmp_path, "run", {"method": "ef21", "seed": 0, "config": {"epochs": 1}})
    folder.write({"epoch": [0, 1]}, "completed")
    with pytest.raises(RunCompleted):
        execute(_FailingTrainer(), folder, _NoLogger())
