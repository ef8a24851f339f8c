"""train.py end to end: every config file composes, every experiment runs shrunk, bad input fails clearly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from efmom.config import register_configs
from efmom.records import RELEASED_KEYS, read_record

from test_data import write_cifar10

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHRINK = ["epochs=1", "max_steps_per_epoch=3", "device=cpu", "logger=none", "threads=1", "progress=false"]
TIMINGS = {"wall_seconds", "gpu_seconds"}


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def compose_config(overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_train(run_dir: Path, *overrides: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py in a subprocess with its run folder at ``run_dir``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def only_record(run_dir: Path):
    records = sorted(run_dir.glob("*.json"))
    assert len(records) == 1, records
    return read_record(records[0])


@pytest.mark.parametrize("group", ["method", "compressor", "logger"])
def test_group_options_instantiate(group):
    for name in options(group):
        cfg = compose_config([f"{group}={name}"])
        part = instantiate(cfg[group])
        assert part is not None, name


def test_model_options_instantiate():
    for name in options("model"):
        cfg = compose_config([f"model={name}"])
        model = instantiate(cfg.model, num_classes=10, input_shape=(3, 32, 32))
        outputs = model(torch.zeros(2, 3, 32, 32))
        assert outputs.shape == (2, 10), name


def test_dataset_options_compose():
    for name in options("dataset"):
        cfg = compose_config([f"dataset={name}"])
        assert cfg.dataset.name == name
        assert cfg.dataset.split == "paper"


def test_default_config_is_paper_setting():
    cfg = compose_config([])
    assert cfg.model._target_ == "efmom.models.resnet18"
    assert cfg.dataset.name == "cifar10"
    assert (cfg.n_workers, cfg.batch_size, cfg.epochs, cfg.seed) == (10, 64, 90, 42)
    assert (cfg.compressor._target_, cfg.compressor.topk, cfg.compressor.scope) == ("efmom.compressors.TopK", 0.1, "layer")
    assert cfg.method._target_ == "efmom.methods.EF21IGTNorm"
    assert (cfg.method.lr, cfg.method.eta, cfg.method.p, cfg.method.q) == (0.1, 1.0, None, 0.57)


@pytest.mark.parametrize(
    "method, lr, eta, q",
    [("ef21", 1.0, None, None), ("econtrol", 1.0, 0.1, None), ("ef21_sgdm", 0.1, 0.1, None),
     ("ef21_sgdm_norm", 0.1, 1.0, 0.5), ("ef21_hm_norm", 0.1, 1.0, 0.67), ("ef21_rhm_norm", 0.1, 1.0, 0.67),
     ("ef21_mvr_norm", 0.1, 1.0, 0.67), ("ef21_igt_norm", 0.1, 1.0, 0.57)],
)
def test_method_presets(method, lr, eta, q):
    cfg = compose_config([f"method={method}"])
    assert (cfg.method.lr, cfg.method.eta, cfg.method.p, cfg.method.q) == (lr, eta, None, q)


def test_cfg_job_prints_paper_setting():
    result = subprocess.run(
        [sys.executable, "train.py", "method=ef21_igt_norm", "compressor.topk=0.1", "--cfg", "job"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for line in ["_target_: efmom.models.resnet18", "name: cifar10", "topk: 0.1", "n_workers: 10", "batch_size: 64", "epochs: 90", "seed: 42", "q: 0.57"]:
        assert line in result.stdout


def test_quickstart_record(tmp_path):
    run_train(tmp_path, "experiment=quickstart", "epochs=3", "progress=false")
    record = only_record(tmp_path)
    pickles = list(tmp_path.glob("*.pickle"))
    assert [p.name for p in pickles] == ["small_cnn_digits_EF21_IGT_NORM_topk-0,1_lr-0,1_eta-1,0_p-None_q-0,57.pickle"]
    assert record.status == "completed"
    for key in RELEASED_KEYS + ("cum_bits_total", "grad_norm"):
        values = record.metrics[key]
        assert values, key
        assert all(math.isfinite(v) for v in values), key
    assert record.metrics["epoch"] == [0, 1, 2, 3]
    assert len(record.metrics["gpu_seconds"]) == 3
    assert record.metrics["eta"] == pytest.approx([1.0, 1.0, (2 / 3) ** 0.57, 0.5**0.57])
    steps = 8  # 121 samples per worker in batches of 16
    assert record.metrics["cum_bp_eq_total"] == [0.0, steps, 2 * steps, 3 * steps]
    assert record.metrics["cum_ex_bp_total"][-1] == 3 * 121
    assert record.metrics["test_acc"][-1] > 50.0  # chance is 10 %
    assert (tmp_path / "checkpoint.pt").exists()


def test_bits_count_first_round_uncompressed(tmp_path):
    run_train(tmp_path, "experiment=quickstart", "method=ef21", *SHRINK, "max_steps_per_epoch=2")
    record = only_record(tmp_path)
    # small_cnn on digits: conv 144, bn 32, conv 4608, bn 64, linear 1280 + 10 parameters.
    sizes = [144, 16, 16, 4608, 32, 32, 1280, 10]
    uncompressed = 32 * sum(sizes)
    topk = sum(max(1, int(0.1 * m)) * (32 + math.ceil(math.log2(m))) for m in sizes)
    assert record.metrics["cum_bits_total"] == [0.0, uncompressed + topk]


def test_same_seed_same_record(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        run_train(folder, "experiment=quickstart", "method=ef21_rhm_norm", "compressor=randk", *SHRINK, "epochs=2")
    a, b = only_record(first), only_record(second)
    for key in a.metrics:
        if key not in TIMINGS:
            assert a.metrics[key] == b.metrics[key], key


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_runs_shrunk(tmp_path, experiment):
    cfg = compose_config([f"experiment={experiment}"])
    if cfg.dataset.name != "digits":
        pytest.skip(f"experiment {experiment} needs dataset {cfg.dataset.name}, which is not available offline")
    run_train(tmp_path, f"experiment={experiment}", *SHRINK)
    assert only_record(tmp_path).status == "completed"


def test_cifar_files_through_train(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=20, test_size=10)
    run_dir = tmp_path / "run"
    run_train(run_dir, "model=logreg", "dataset.download=false", f"dataset.root={tmp_path / 'data'}",
              "n_workers=2", "batch_size=8", *SHRINK)
    record = only_record(run_dir)
    assert record.info["dataset"] == "cifar10"
    assert record.metrics["epoch"] == [0, 1]


def test_dataset_root_relative_to_start_directory(tmp_path):
    write_cifar10(tmp_path / "mydata", per_batch=20, test_size=10)
    run_train(tmp_path / "run", "model=logreg", "dataset.download=false", "dataset.root=mydata",
              "n_workers=2", "batch_size=8", *SHRINK, cwd=tmp_path)
    assert only_record(tmp_path / "run").status == "completed"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=ef99"], "Could not find 'method/ef99'"),
        (["compressor.topk=1.5"], "compressor.topk must be in (0, 1], got 1.5"),
        (["compressor.topk=0"], "compressor.topk must be in (0, 1], got 0"),
        (["method.lr=-0.1"], "method.lr must be a finite number > 0, got -0.1"),
        (["method.lr='0.1'"], "method.lr must be a finite number > 0, got '0.1'"),
        (["method.eta=None"], "method.eta must be in (0, 1], got 'None'"),
        (["method.normalize=row"], "method.normalize must be one of ('layer', 'global'), got 'row'"),
        (["compressor.scope=row"], "compressor.scope must be one of ('layer', 'global'), got 'row'"),
        (["method.lrr=0.1"], "Key 'lrr' not in 'MethodSchema'"),
        (["n_workers=None"], "n_workers"),
        (["dataset.split=banana"], "dataset.split"),
    ],
)
def test_bad_input_message(tmp_path, overrides, message):
    result = run_train(tmp_path, "experiment=quickstart", *SHRINK, *overrides, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(tmp_path.glob("*.pickle"))


def test_missing_dataset_names_path(tmp_path):
    result = run_train(tmp_path / "run", "dataset=cifar10", "dataset.download=false", f"dataset.root={tmp_path / 'none'}",
                       *SHRINK, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert str(tmp_path / "none" / "cifar-10-batches-py") in output
    assert "Traceback" not in output


def test_divergence_stops_with_record(tmp_path):
    result = run_train(tmp_path, "experiment=quickstart", "method=sgd", "model=mlp", "method.lr=1e15", *SHRINK, "epochs=2", check=False)
    assert result.returncode != 0
    record = only_record(tmp_path)
    assert record.status == "failed"
    assert "non-finite" in record.info["error"]
    assert "non-finite training loss at epoch 1, step 3 on workers [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in record.info["error"]
    assert "non-finite parameters: 1.weight" in record.info["error"]
    assert record.metrics["epoch"] == [0]
    assert "Traceback" not in result.stdout + result.stderr
    assert (tmp_path / "traceback.txt").exists()


def test_completed_run_not_overwritten(tmp_path):
    run_train(tmp_path, "experiment=quickstart", *SHRINK)
    path = next(tmp_path.glob("*.json"))
    before = path.read_bytes()
    result = run_train(tmp_path, "experiment=quickstart", *SHRINK)
    assert "already completed" in result.stdout + result.stderr
    assert path.read_bytes() == before


def test_batched_oracle_matches_loop_through_train(tmp_path):
    records = {}
    for oracle in ("loop", "batched"):
        run_train(tmp_path / oracle, "experiment=quickstart", "method=ef21_hm_norm", "method.eta=0.5", "dtype=float64",
                  f"oracle={oracle}", *SHRINK, "epochs=2")
        records[oracle] = only_record(tmp_path / oracle)
    for key, values in records["loop"].metrics.items():
        if key not in TIMINGS:
            assert records["batched"].metrics[key] == pytest.approx(values, rel=1e-9, abs=1e-12), key


def test_rerun_with_other_config_rejected(tmp_path):
    run_train(tmp_path, "experiment=quickstart", *SHRINK)
    path = next(tmp_path.glob("*.json"))
    before = path.read_bytes()
    result = run_train(tmp_path, "experiment=quickstart", *SHRINK, "epochs=2", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "belongs to a run with another config (epochs: 1 -> 2)" in output
    assert path.read_bytes() == before
    assert not (tmp_path / "traceback.txt").exists()


def test_record_files_readable_by_others(tmp_path):
    run_train(tmp_path, "experiment=quickstart", *SHRINK)
    umask = os.umask(0)
    os.umask(umask)
    for path in list(tmp_path.glob("*.json")) + list(tmp_path.glob("*.pickle")) + [tmp_path / "checkpoint.pt"]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
