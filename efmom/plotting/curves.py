"""From records to curves: x-axis series, grouping over seeds, seed mean and spread, truncation."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from efmom.records import METHOD_LABELS, Record

log = logging.getLogger(__name__)

#: x-axis name -> (metric key it is built from, axis label).
X_AXES = {
    "epoch": ("epoch", "Epoch"),
    "bp_total": ("cum_bp_eq_total", "Backpropagation equivalents per worker"),
    "exbp_total": ("cum_ex_bp_total", "Examples × backpropagations per worker"),
    "time": ("wall_seconds", "Wall-clock time (s)"),
    "gpu_seconds": ("gpu_seconds", "GPU time (s)"),
    "bits": ("cum_bits_total", "Bits sent per worker"),
}

#: Ways to draw the spread over seeds.
BANDS = ("minmax", "std", "none")

#: Fields left out of the grouping key by default: runs that differ only in these are one curve.
# ``sweep`` describes the sweep a run belonged to, not the run itself.
DEFAULT_IGNORED_FIELDS = ("seed", "status", "error", "sweep")
#: Metrics with one value per trained epoch and none for epoch 0.
PER_TRAINED_EPOCH = ("gpu_seconds", "grad_norm")


def check_x_axis(x_axis: str) -> str:
    """Return the metric key behind ``x_axis``; raise ValueError naming the choices when it is unknown."""
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis={x_axis!r} is not one of: {', '.join(X_AXES)}")
    return X_AXES[x_axis][0]


def x_values(record: Record, x_axis: str) -> np.ndarray | None:
    """Return the record's x-axis series, one value per epoch; None when the record lacks it.

    ``gpu_seconds`` contains one duration per trained epoch, so the axis is their running sum with 0
    prepended for epoch 0.
    """
    key = check_x_axis(x_axis)
    values = record.metrics.get(key)
    if values is None:
        return None
    values = np.asarray(values, dtype=float)
    if x_axis == "gpu_seconds":
        return np.concatenate(([0.0], np.cumsum(values)))
    return values


def _flatten(info: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def setting_fields(record: Record, ignored: Iterable[str] = DEFAULT_IGNORED_FIELDS) -> dict[str, Any]:
    """Return the record's info flattened to dotted keys, without the ignored fields.

    A field is ignored when its dotted key (``config.seed``) or its last part (``seed``) is listed.
    """
    ignored = set(ignored)
    return {
        key: value
        for key, value in _flatten(record.info).items()
        if key not in ignored and key.rpartition(".")[2] not in ignored
    }


def group_records(
    records: Sequence[Record], ignored: Iterable[str] = DEFAULT_IGNORED_FIELDS
) -> list[list[Record]]:
    """Group records whose settings match apart from the ignored fields, in first-seen order."""
    ignored = tuple(ignored)
    groups: dict[str, list[Record]] = {}
    for record in records:
        key = json.dumps(setting_fields(record, ignored), sort_keys=True, default=str)
        groups.setdefault(key, []).append(record)
    return list(groups.values())


@dataclass
class Curve:
    """One plotted line: the seed mean of a metric over an x-axis, with its spread.

    ``low`` and ``high`` bound the band (None when ``band`` is ``none`` or only one seed is present).
    """

    method: str | None
    label: str
    records: list[Record]
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return len(self.records)

    @property
    def legend(self) -> str:
        """Label with the number of seeds appended when the curve averages more than one."""
        if self.n_seeds > 1:
            return f"{self.label} ({self.n_seeds} seeds)"
        return self.label


def _aligned_series(records: Sequence[Record], metric: str, x_axis: str) -> tuple[list, list, list]:
    """Return the records that have both series, with their x and y cut to a common length."""
    with_series, xs, ys = [], [], []
    for record in records:
        x = x_values(record, x_axis)
        y = record.metrics.get(metric)
        if x is None:
            log.warning(
                "skipping %s: it has no %r series, which x_axis=%s needs",
                record.path, X_AXES[x_axis][0], x_axis,
            )
            continue
        if y is None:
            log.warning("skipping %s: it has no %r series", record.path, metric)
            continue
        y = np.asarray(y, dtype=float)
        if metric in PER_TRAINED_EPOCH and len(y) == len(x) - 1:
            # One value per trained epoch: epoch 0 (before training) has none.
            y = np.concatenate(([np.nan], y))
        if len(x) != len(y):
            log.warning(
                "%s: %r has %d values but the %s axis has %d; plotting the first %d",
                record.path, metric, len(y), x_axis, len(x), min(len(x), len(y)),
            )
        length = min(len(x), len(y))
        with_series.append(record)
        xs.append(x[:length])
        ys.append(y[:length])
    return with_series, xs, ys


def _seed_curve(
    records: Sequence[Record], metric: str, x_axis: str, band: str, ignored: Sequence[str]
) -> Curve | None:
    with_series, xs, ys = _aligned_series(records, metric, x_axis)
    if not with_series:
        return None

    # Seeds are aligned by epoch, so a run that is still going limits the group to its length.
    length = min(len(x) for x in xs)
    if any(len(x) != length for x in xs):
        log.info("%s: averaging %d seeds over their first %d epochs", with_series[0].label, len(with_series), length)
    x_stack = np.stack([x[:length] for x in xs])
    y_stack = np.stack([y[:length] for y in ys])

    low = high = None
    if len(with_series) > 1 and band == "minmax":
        low, high = y_stack.min(axis=0), y_stack.max(axis=0)
    elif len(with_series) > 1 and band == "std":
        spread = y_stack.std(axis=0, ddof=1)
        low, high = y_stack.mean(axis=0) - spread, y_stack.mean(axis=0) + spread
    return Curve(
        method=with_series[0].method,
        label=with_series[0].label,
        records=list(with_series),
        x=x_stack.mean(axis=0),
        y=y_stack.mean(axis=0),
        low=low,
        high=high,
        settings=setting_fields(with_series[0], ignored),
    )


def _method_order(curve: Curve) -> tuple[int, str]:
    names = list(METHOD_LABELS)
    position = names.index(curve.method) if curve.method in names else len(names)
    return position, curve.legend


def _disambiguate(curves: list[Curve]) -> None:
    """Append the differing settings to the labels of curves that share a label."""
    by_label: dict[str, list[Curve]] = {}
    for curve in curves:
        by_label.setdefault(curve.label, []).append(curve)
    for same in by_label.values():
        if len(same) < 2:
            continue
        keys = sorted({key for curve in same for key in curve.settings})
        differing = [k for k in keys if len({repr(c.settings.get(k)) for c in same}) > 1]
        differing = [k for k in differing if k != "stem"] or differing
        for curve in same:
            details = ", ".join(f"{k.rpartition('.')[2]}={curve.settings.get(k)}" for k in differing)
            curve.label = f"{curve.label} ({details})"


def truncate_curves(curves: Sequence[Curve]) -> float:
    """Cut every curve at the last x value of the curve that ends first; return that value.

    Points past the cut are dropped, and no point is interpolated at the cut.
    """
    end = min(float(np.nanmax(curve.x)) for curve in curves)
    for curve in curves:
        keep = curve.x <= end
        curve.x, curve.y = curve.x[keep], curve.y[keep]
        if curve.low is not None:
            curve.low, curve.high = curve.low[keep], curve.high[keep]
    return end


def build_curves(
    records: Sequence[Record],
    metric: str,
    x_axis: str = "epoch",
    band: str = "minmax",
    truncate: bool = False,
    ignored: Sequence[str] = DEFAULT_IGNORED_FIELDS,
) -> list[Curve]:
    """Turn records into one curve per group of seeds, ordered as :data:`METHOD_LABELS` lists methods.

    Records lacking the metric or the x-axis series are skipped with a warning naming the file.
    Raises ValueError for an unknown ``x_axis`` or ``band``, and when no record has both series.
    """
    check_x_axis(x_axis)
    if band not in BANDS:
        raise ValueError(f"band={band!r} is not one of: {', '.join(BANDS)}")

    curves = []
    for group in group_records(records, ignored):
        curve = _seed_curve(group, metric, x_axis, band, tuple(ignored))
        if curve is not None:
            curves.append(curve)
    if not curves:
        raise ValueError(
            f"none of the {len(records)} records has both {metric!r} and "
            f"{X_AXES[x_axis][0]!r}, which x_axis={x_axis} needs"
        )

    _disambiguate(curves)
    curves.sort(key=_method_order)
    if truncate:
        truncate_curves(curves)
    return curves
