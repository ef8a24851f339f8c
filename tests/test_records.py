"""Run records: file names, atomic writes, NaN handling and the safe pickle reader."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import pytest

from efmom import records
from efmom.records import (
    METHOD_LABELS,
    RecordError,
    find_records,
    parse_stem,
    read_record,
    record_stem,
    write_record,
)

RELEASE_DATA = Path(__file__).resolve().parents[2] / "shared" / "release_data"

INFO = {
    "status": "completed",
    "error": None,
    "method": "ef21_igt_norm",
    "config": {"lr": 0.1, "eta": 1.0, "q": 0.57, "compressor": {"name": "topk", "ratio": 0.1}},
    "seed": 3,
}


def metrics_of(length: int = 4) -> dict[str, list]:
    return {
        "epoch": list(range(length)),
        "test_acc": [10.0 + 5 * i for i in range(length)],
        "train_loss": [2.3 / (i + 1) for i in range(length)],
        "gpu_seconds": [1.5] * (length - 1),
        "grad_norm": [math.nan] + [0.5] * (length - 1),
    }


def test_record_stem_matches_released_names():
    stem = record_stem("resnet18", "cifar10", "ef21_igt_norm", "topk", 0.1, 0.1, 1.0, None, 0.57)
    assert stem == "resnet18_cifar10_EF21_IGT_NORM_topk-0,1_lr-0,1_eta-1,0_p-None_q-0,57"
    stem = record_stem("resnet18", "cifar10", "ef21", "topk", 0.1, 1.0, None, None, None)
    assert stem == "resnet18_cifar10_EF21_topk-0,1_lr-1,0_eta-None_p-None_q-None"


def test_record_stem_without_ratio():
    stem = record_stem("mlp", "mnist", "sgd", "identity", None, 0.05, None, 1.0, None)
    assert stem == "mlp_mnist_SGD_identity_lr-0,05_eta-None_p-1,0_q-None"


def test_parse_stem_round_trip():
    stem = record_stem("resnet_18", "cifar100", "ef21_rhm_norm", "randk", 1e-05, 0.1, 1.0, 0.5, 0.67)
    assert parse_stem(stem) == {
        "model": "resnet_18",
        "dataset": "cifar100",
        "method": "ef21_rhm_norm",
        "compressor": "randk",
        "ratio": 1e-05,
        "lr": 0.1,
        "eta": 1.0,
        "p": 0.5,
        "q": 0.67,
    }
    assert parse_stem("not_a_record") is None


def test_record_stem_rejects_compressor_with_separator():
    with pytest.raises(ValueError, match="top_k"):
        record_stem("resnet18", "cifar10", "ef21", "top_k", 0.1, 1.0, None, None, None)


def test_write_read_round_trip(tmp_path):
    pickle_path, json_path = write_record(tmp_path / "run", "stem", metrics_of(), INFO)
    assert pickle_path == tmp_path / "run" / "stem.pickle"
    assert json_path == tmp_path / "run" / "stem.json"

    from_json = read_record(json_path)
    assert from_json.info == INFO
    assert from_json.metrics["test_acc"] == [10.0, 15.0, 20.0, 25.0]
    assert from_json.metrics["epoch"] == [0, 1, 2, 3]
    assert from_json.method == "ef21_igt_norm"
    assert from_json.label == "‖EF21-IGT‖"
    assert from_json.seed == 3
    assert from_json.status == "completed"

    from_pickle = read_record(pickle_path)
    assert from_pickle.metrics["gpu_seconds"] == [1.5, 1.5, 1.5]
    assert from_pickle.status is None


def test_pickle_is_plain_dict_of_lists(tmp_path):
    import numpy as np

    import torch

    metrics = {
        "epoch": [np.int64(0), 1],
        "test_acc": [np.float32(9.5), torch.tensor(12.25)],
        "flag": [True, False],
    }
    pickle_path, _ = write_record(tmp_path, "stem", metrics, INFO)
    with open(pickle_path, "rb") as handle:
        loaded = pickle.load(handle)
    assert type(loaded) is dict
    assert loaded == {"epoch": [0, 1], "test_acc": [9.5, 12.25], "flag": [1, 0]}
    assert all(type(v) is list for v in loaded.values())
    assert [type(x) for x in loaded["epoch"]] == [int, int]
    assert [type(x) for x in loaded["test_acc"]] == [float, float]


def test_nan_and_inf_round_trip(tmp_path):
    metrics = {"grad_norm": [math.nan, math.inf, -math.inf, 1.0]}
    pickle_path, json_path = write_record(tmp_path, "stem", metrics, INFO)

    text = json_path.read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert '"NaN"' in text
    assert '"Infinity"' in text

    for path in (json_path, pickle_path):
        values = read_record(path).metrics["grad_norm"]
        assert math.isnan(values[0])
        assert values[1:] == [math.inf, -math.inf, 1.0]


def test_write_record_rejects_bad_info(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        write_record(tmp_path, "stem", metrics_of(), {k: v for k, v in INFO.items() if k != "seed"})
    with pytest.raises(ValueError, match="'done'"):
        write_record(tmp_path, "stem", metrics_of(), {**INFO, "status": "done"})
    with pytest.raises(ValueError, match="test_acc"):
        write_record(tmp_path, "stem", {"test_acc": ["high"]}, INFO)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    pickle_path, json_path = write_record(tmp_path, "stem", metrics_of(3), INFO)
    old_pickle = pickle_path.read_bytes()
    old_json = json_path.read_bytes()

    def dump_half_then_fail(obj, handle, protocol=None):
        handle.write(pickle.dumps(obj, protocol=protocol)[:20])
        raise OSError("disk full")

    monkeypatch.setattr(records.pickle, "dump", dump_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_record(tmp_path, "stem", metrics_of(5), {**INFO, "status": "running"})

    assert pickle_path.read_bytes() == old_pickle
    assert json_path.read_bytes() == old_json
    assert read_record(pickle_path).metrics["epoch"] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.json", "stem.pickle"]


def test_unsafe_pickle_does_not_run(tmp_path):
    marker = tmp_path / "marker"

    class RunsCommand:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "resnet18_cifar10_EF21_topk-0,1_lr-1,0_eta-None_p-None_q-None.pickle"
    path.write_bytes(pickle.dumps({"test_acc": [1.0], "payload": [RunsCommand()]}))

    with pytest.raises(RecordError, match="unsafe") as caught:
        read_record(path)
    assert str(path) in str(caught.value)
    assert caught.value.path == path
    assert not marker.exists()


@pytest.mark.parametrize(
    "value", [{1, 2}, b"bytes", bytearray(b"x"), frozenset({1}), complex(1, 2)], ids=repr
)
def test_pickle_of_other_types_rejected(tmp_path, value):
    path = tmp_path / "other.pickle"
    path.write_bytes(pickle.dumps({"test_acc": [value]}, protocol=5))
    with pytest.raises(RecordError, match="other.pickle"):
        read_record(path)


def test_pickle_of_wrong_shape_rejected(tmp_path):
    path = tmp_path / "shape.pickle"
    path.write_bytes(pickle.dumps([1.0, 2.0]))
    with pytest.raises(RecordError, match="dict of lists"):
        read_record(path)
    path.write_bytes(pickle.dumps({"test_acc": [None]}))
    with pytest.raises(RecordError, match="not a number"):
        read_record(path)


def test_truncated_pickle_names_file(tmp_path):
    pickle_path, _ = write_record(tmp_path, "stem", metrics_of(), INFO)
    pickle_path.write_bytes(pickle_path.read_bytes()[:-30])
    with pytest.raises(RecordError, match="truncated") as caught:
        read_record(pickle_path)
    assert str(pickle_path) in str(caught.value)


def test_corrupt_json_names_file(tmp_path):
    _, json_path = write_record(tmp_path, "stem", metrics_of(), INFO)
    json_path.write_text('{"metrics": {"test_acc": [1.0, ', encoding="utf-8")
    with pytest.raises(RecordError, match="corrupt JSON") as caught:
        read_record(json_path)
    assert str(json_path) in str(caught.value)


def test_json_without_metrics_rejected(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"name": "wandb summary"}', encoding="utf-8")
    with pytest.raises(RecordError, match="'metrics'"):
        read_record(path)


def test_find_records_prefers_json(tmp_path):
    write_record(tmp_path / "a", "one", metrics_of(), INFO)
    write_record(tmp_path / "b" / "deep", "two", metrics_of(), INFO)
    (tmp_path / "b" / "lone.pickle").write_bytes(pickle.dumps({"test_acc": [1.0]}))
    (tmp_path / "b" / "wandb-summary.json").write_text("{}", encoding="utf-8")
    (tmp_path / "a" / ".one.pickle.abc.tmp").write_bytes(b"partial")

    found = find_records(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/one.json",
        "b/deep/two.json",
        "b/lone.pickle",
    ]


def test_find_records_globs_and_lists(tmp_path, caplog):
    write_record(tmp_path / "a", "one", metrics_of(), INFO)
    write_record(tmp_path / "b", "two", metrics_of(), INFO)

    assert find_records(str(tmp_path / "*" / "*.json")) == sorted(
        [(tmp_path / "a" / "one.json").resolve(), (tmp_path / "b" / "two.json").resolve()]
    )
    both = find_records([tmp_path / "a" / "one.pickle", tmp_path / "a" / "one.json"])
    assert both == [(tmp_path / "a" / "one.json").resolve()]
    assert find_records([tmp_path / "a" / "one.pickle"]) == [(tmp_path / "a" / "one.pickle").resolve()]

    assert find_records(str(tmp_path / "missing*")) == []
    assert "missing*" in caplog.text


def test_method_labels_cover_every_method():
    assert METHOD_LABELS["ef21_hm_norm"] == "‖EF21-HM‖"
    assert METHOD_LABELS["ef14"] == "EF"
    assert len(METHOD_LABELS) == 10


def test_released_pickles_read_safely():
    if not RELEASE_DATA.is_dir():
        pytest.skip(f"released runs folder {RELEASE_DATA} is absent")
    paths = find_records(RELEASE_DATA)
    assert len(paths) == 8

    by_label = {read_record(p).label: read_record(p) for p in paths}
    assert by_label["‖EF21-HM‖"].metrics["test_acc"][-1] == 83.11
    assert by_label["‖EF21-IGT‖"].info["q"] == 0.57
    assert set(by_label["EF21"].metrics) == set(records.RELEASED_KEYS) - {"eta"}
    for record in by_label.values():
        assert len(record.metrics["epoch"]) == 91
        assert len(record.metrics["gpu_seconds"]) == 90
