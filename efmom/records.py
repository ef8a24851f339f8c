"""A run's record on disk: per-epoch metric series plus what produced them.

Each run writes two files with the same stem into its run directory:

``<stem>.pickle``
    The released format: a plain ``dict`` mapping a metric key to a ``list`` of ``float`` or ``int``,
    one value per epoch (``gpu_seconds`` has one value per *trained* epoch, so one fewer). This is the
    format of the runs released with Sadiev et al., "Improved Convergence in Parameter-Agnostic Error
    Feedback through Momentum" (arXiv:2511.14501), so tools written for those runs read it unchanged.
``<stem>.json``
    ``{"metrics": {...}, "status": ..., "error": ..., "method": ..., "config": {...}, "seed": ...}``.
    Strict JSON: a non-finite float is written as one of the strings ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"``, and :func:`read_record` turns those strings in ``metrics`` back into floats.
    Non-finite floats elsewhere in the document (for example in ``config``) come back as these strings.

Both files are replaced atomically, so a reader sees either the previous version or the new one.
Pickles are read without executing code (see :func:`read_record`).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import os
import pickle
import pickletools
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

log = logging.getLogger(__name__)

#: Metric keys of the released pickles (arXiv:2511.14501).
RELEASED_KEYS = (
    "epoch",
    "lr",
    "eta",
    "train_loss",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "cum_bp_eq_total",
    "cum_ex_bp_total",
    "wall_seconds",
    "gpu_seconds",
)

#: Metric keys that efmom records in addition to the released ones.
#:
#: ``cum_bits_total``
#:     Bits sent by one worker, cumulative, averaged over workers; 0 at epoch 0. The uncompressed first
#:     message of the EF21 family is sent in the first round, so it counts towards epoch 1.
#: ``grad_norm``
#:     Euclidean norm of the master's estimate gᵗ (the running average of the messages), before any
#:     normalisation, averaged over the epoch's rounds. Like ``gpu_seconds`` it has one value per
#:     trained epoch and none for epoch 0, because no round has run before training.
EXTRA_KEYS = ("cum_bits_total", "grad_norm")

#: Values allowed for ``info["status"]``.
STATUSES = ("running", "completed", "failed")

#: Method config name -> its label in the figures of arXiv:2511.14501.
METHOD_LABELS = {
    "sgd": "SGD",
    "ef14": "EF",
    "ef21": "EF21",
    "econtrol": "ECONTROL",
    "ef21_sgdm": "EF21-SGDM",
    "ef21_sgdm_norm": "‖EF21-SGDM‖",
    "ef21_igt_norm": "‖EF21-IGT‖",
    "ef21_mvr_norm": "‖EF21-MVR‖",
    "ef21_hm_norm": "‖EF21-HM‖",
    "ef21_rhm_norm": "‖EF21-RHM‖",
}

# JSON has no NaN or infinity, so these strings stand in for them.
_NONFINITE_TO_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NONFINITE_FROM_JSON = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# Pickle opcodes that build only None, bool, int, float, str, list, tuple and dict, plus framing and
# memo bookkeeping. Every opcode that names a global, calls an object or builds another type is left out.
_SAFE_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
        "NONE", "NEWTRUE", "NEWFALSE",
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
        "FLOAT", "BINFLOAT",
        "STRING", "BINSTRING", "SHORT_BINSTRING",
        "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
        "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    }
)  # fmt: skip

# Released file names: model_dataset_METHOD_compressor[-ratio]_lr-γ₀_eta-η₀_p-p_q-q, '.' written as ','.
_STEM_PATTERN = re.compile(
    r"^(?P<prefix>[a-z0-9_]+?)_(?P<method>[A-Z][A-Z0-9_]*)_(?P<compressor>[a-z][a-z0-9]*)"
    r"(?:-(?P<ratio>[^_]+))?_lr-(?P<lr>[^_]+)_eta-(?P<eta>[^_]+)_p-(?P<p>[^_]+)_q-(?P<q>[^_]+)$"
)


class RecordError(ValueError):
    """A record file that cannot be read: corrupt, truncated, unsafe or not in the record layout."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Record:
    """One run's metric series and its description.

    ``info`` is the JSON document without ``metrics``. For a pickle read on its own it contains the fields
    parsed from the file name (model, dataset, method, compressor, ratio, lr, eta, p, q) and ``stem``.
    """

    path: Path
    metrics: dict[str, list[float]]
    info: dict[str, Any]

    @property
    def method(self) -> str | None:
        """Method config name, such as ``ef21_igt_norm``; None when the record has no method field."""
        return self.info.get("method")

    @property
    def label(self) -> str:
        """Method label from :data:`METHOD_LABELS`; falls back to the config name, then the file stem."""
        if self.method is None:
            return self.path.stem
        return METHOD_LABELS.get(self.method, self.method)

    @property
    def seed(self) -> int | None:
        """Random seed of the run; None for released pickles, whose file names do not carry it."""
        return self.info.get("seed")

    @property
    def status(self) -> str | None:
        """``running``, ``completed`` or ``failed``; None for a pickle read without its JSON."""
        return self.info.get("status")


def _format_number(value: float | None) -> str:
    if value is None:
        return "None"
    return repr(float(value)).replace(".", ",")


def record_stem(
    model: str,
    dataset: str,
    method: str,
    compressor: str,
    ratio: float | None,
    lr: float,
    eta: float | None,
    p: float | None,
    q: float | None,
) -> str:
    """Build the released file-name stem of a run.

    ``record_stem("resnet18", "cifar10", "ef21_igt_norm", "topk", 0.1, 0.1, 1.0, None, 0.57)`` returns
    ``"resnet18_cifar10_EF21_IGT_NORM_topk-0,1_lr-0,1_eta-1,0_p-None_q-0,57"``. A ``ratio`` of None
    leaves the compressor name alone. The compressor name must not contain ``_`` or ``-`` because
    :func:`parse_stem` could not split it back.
    """
    if not re.fullmatch(r"[a-z][a-z0-9]*", compressor):
        raise ValueError(
            f"compressor name {compressor!r} must be lower-case letters and digits, "
            "so that the file name can be parsed back"
        )
    compressor_part = compressor if ratio is None else f"{compressor}-{_format_number(ratio)}"
    parts = [
        model,
        dataset,
        method.upper(),
        compressor_part,
        f"lr-{_format_number(lr)}",
        f"eta-{_format_number(eta)}",
        f"p-{_format_number(p)}",
        f"q-{_format_number(q)}",
    ]
    return "_".join(parts)


def _parse_number(text: str) -> float | None:
    if text == "None":
        return None
    return float(text.replace(",", "."))


def parse_stem(stem: str) -> dict[str, Any] | None:
    """Parse a released file-name stem into its fields; None when the stem does not follow the scheme.

    The model and dataset are split at the last ``_`` before the method, so a model name may contain
    ``_`` but a dataset name must not.
    """
    match = _STEM_PATTERN.match(stem)
    if match is None:
        return None
    model, _, dataset = match["prefix"].rpartition("_")
    if not model:
        return None
    try:
        numbers = {key: _parse_number(match[key]) for key in ("lr", "eta", "p", "q")}
        ratio = None if match["ratio"] is None else _parse_number(match["ratio"])
    except ValueError:
        return None
    return {
        "model": model,
        "dataset": dataset,
        "method": match["method"].lower(),
        "compressor": match["compressor"],
        "ratio": ratio,
        **numbers,
    }


def _plain_number(key: str, value: Any) -> int | float:
    if hasattr(value, "item"):  # numpy scalars and 0-d tensors become Python numbers
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {key!r} contains {value!r}, which is not a number") from None


def _plain_metrics(metrics: dict[str, Iterable]) -> dict[str, list[int | float]]:
    plain = {}
    for key, values in metrics.items():
        if not isinstance(key, str):
            raise ValueError(f"metric key {key!r} is not a string")
        plain[key] = [_plain_number(key, value) for value in values]
    return plain


def _encode_nonfinite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _NONFINITE_TO_JSON[repr(value)]
    if isinstance(value, dict):
        return {key: _encode_nonfinite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_nonfinite(item) for item in value]
    return value


def default_file_mode() -> int:
    """Return the permissions a plainly created file gets: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through a temporary file in the same directory, then rename it over ``path``.

    The temporary file is created private (0600). It gets the ordinary permissions before the rename,
    because otherwise records on a shared file system would be unreadable to colleagues.
    """
    handle = tempfile.NamedTemporaryFile(
        mode="wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        os.chmod(handle.name, default_file_mode())
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_record(
    run_dir: Path | str, stem: str, metrics: dict[str, Iterable], info: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``<stem>.pickle`` and ``<stem>.json`` into ``run_dir`` and return their paths.

    ``metrics`` maps a metric key (:data:`RELEASED_KEYS`, :data:`EXTRA_KEYS` or any other) to its
    per-epoch values. Numpy scalars and 0-d tensors are unwrapped with ``.item()``, ints stay ints,
    bools become 0 or 1, and every other value is converted with ``float()``.

    ``info`` must hold ``status`` (one of :data:`STATUSES`), ``error`` (a message or None), ``method``,
    ``config`` (a plain dict) and ``seed``. Keep only fields that describe the run's setting in
    ``info``, because plotting groups runs whose fields match apart from the seed, status and error.

    Call it after every epoch: each file is replaced atomically, the pickle first and the JSON second.
    Raises ValueError for a missing info field, an unknown status or a metric value that is not a number.
    """
    missing = [key for key in ("status", "error", "method", "config", "seed") if key not in info]
    if missing:
        raise ValueError(f"record info is missing {', '.join(missing)}")
    if info["status"] not in STATUSES:
        raise ValueError(f"record status {info['status']!r} is not one of {', '.join(STATUSES)}")
    if "metrics" in info:
        raise ValueError("record info must not contain 'metrics'; pass the series as metrics")

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plain = _plain_metrics(metrics)
    document = _encode_nonfinite({"metrics": plain, **info})
    text = json.dumps(document, indent=1, allow_nan=False, ensure_ascii=False)

    pickle_path = run_dir / f"{stem}.pickle"
    json_path = run_dir / f"{stem}.json"
    _write_atomic(pickle_path, lambda handle: pickle.dump(plain, handle, protocol=4))
    _write_atomic(json_path, lambda handle: handle.write(text.encode("utf-8")))
    return pickle_path, json_path


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler that rejects every class or function reference, as a second line after the opcode scan."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"reference to {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are not allowed")


def _check_opcodes(path: Path, data: bytes) -> None:
    try:
        for opcode, _, position in pickletools.genops(data):
            if opcode.name not in _SAFE_OPCODES:
                raise RecordError(
                    path,
                    f"unsafe pickle: opcode {opcode.name} at byte {position} could build an object or "
                    "run code; only dict, list, tuple, str, int, float, bool and None are allowed",
                )
    except RecordError:
        raise
    except Exception as error:  # genops raises ValueError and others on truncated or garbled data
        raise RecordError(path, f"corrupt or truncated pickle ({error})") from None


def _load_pickle(path: Path) -> dict[str, list]:
    data = path.read_bytes()
    _check_opcodes(path, data)
    try:
        loaded = _PlainUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise RecordError(path, f"unsafe or corrupt pickle ({error})") from None
    except Exception as error:  # noqa: BLE001 - a garbled stream can fail in many ways
        raise RecordError(path, f"corrupt pickle ({type(error).__name__}: {error})") from None
    return _check_metrics(path, loaded)


def _decode_metric_value(path: Path, key: str, value: Any) -> float | int:
    if isinstance(value, str):
        if value in _NONFINITE_FROM_JSON:
            return _NONFINITE_FROM_JSON[value]
        raise RecordError(path, f"metric {key!r} contains the string {value!r}, which is not a number")
    return value


def _check_metrics(path: Path, metrics: Any) -> dict[str, list]:
    if not isinstance(metrics, dict):
        raise RecordError(path, f"metrics must be a dict of lists, found {type(metrics).__name__}")
    checked = {}
    for key, values in metrics.items():
        if not isinstance(key, str) or not isinstance(values, (list, tuple)):
            raise RecordError(path, f"metric {key!r} is not a list under a string key")
        decoded = [_decode_metric_value(path, key, value) for value in values]
        for value in decoded:
            # bool is an int subclass, but a boolean is not a metric value.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError(path, f"metric {key!r} contains {value!r}, which is not a number")
        checked[key] = decoded
    return checked


def _load_json(path: Path) -> tuple[dict[str, list], dict[str, Any]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecordError(path, f"corrupt JSON ({error})") from None
    if not isinstance(document, dict) or "metrics" not in document:
        raise RecordError(path, "not a record: expected a JSON object with a 'metrics' field")
    info = {key: value for key, value in document.items() if key != "metrics"}
    return _check_metrics(path, document["metrics"]), info


def read_record(path: Path | str) -> Record:
    """Read one ``.json`` or ``.pickle`` record.

    A pickle is scanned opcode by opcode before it is loaded. Any opcode that could name a class, call
    a function or build something other than dict, list, tuple, str, int, float, bool or None makes it
    fail without executing anything. Raises :class:`RecordError`, naming the file, for unsafe, corrupt,
    truncated or wrongly shaped files, and ``OSError`` when the file cannot be read.
    This function reads exactly the file it is given. :func:`find_records` is where a
    ``.json``/``.pickle`` pair is reduced to its JSON.
    """
    path = Path(path)
    if path.suffix == ".json":
        metrics, info = _load_json(path)
    elif path.suffix == ".pickle":
        metrics = _load_pickle(path)
        info = parse_stem(path.stem) or {}
        info["stem"] = path.stem
    else:
        raise RecordError(path, "unknown record type; expected a .json or .pickle file")
    return Record(path=path, metrics=metrics, info=info)


def _search_folder(folder: Path) -> list[Path]:
    pickles = sorted(folder.rglob("*.pickle"))
    # Run folders can hold JSON files that are not records (wandb writes several), so a folder search
    # takes a JSON file only beside a pickle of the same stem.
    paired = [p.with_suffix(".json") for p in pickles if p.with_suffix(".json").is_file()]
    return pickles + paired


def _expand(entry: str | Path) -> list[Path]:
    path = Path(entry)
    if path.is_dir():
        return _search_folder(path)
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(entry), recursive=True))
    files = []
    for match in matches:
        files.extend(_expand(match) if match.is_dir() else [match])
    return [p for p in files if p.suffix in (".json", ".pickle")]


def find_records(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Find record files under ``paths``: files, folders (searched recursively) or glob patterns.

    Returns sorted, de-duplicated ``.json`` and ``.pickle`` paths. When both ``<stem>.json`` and
    ``<stem>.pickle`` are found, only the JSON is returned, because it carries the same metrics plus
    status and config. A folder search returns a JSON file only when a pickle of the same stem sits
    beside it, while a JSON file named directly or by a glob is always returned. Hidden files, such as
    the temporary files of an interrupted write, are skipped. An entry that matches nothing is logged
    as a warning.
    """
    entries = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found: set[Path] = set()
    for entry in entries:
        matched = [p for p in _expand(entry) if not p.name.startswith(".")]
        if not matched:
            log.warning("no .json or .pickle records found at %s", entry)
        found.update(p.resolve() for p in matched)
    return sorted(p for p in found if not (p.suffix == ".pickle" and p.with_suffix(".json") in found))
