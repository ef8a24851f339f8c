"""Summary table of a set of runs: accuracy reached, final loss and the cost of reaching a target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from efmom.plotting.curves import DEFAULT_IGNORED_FIELDS, Curve, build_curves
from efmom.records import Record

# Cost series reported at the first epoch that reaches the target accuracy.
_COST_METRICS = ("wall_seconds", "cum_bp_eq_total", "cum_bits_total")


@dataclass
class SummaryRow:
    """One group of seeds. Accuracies are in percent, and every value is the mean over the seeds.

    The ``target_*`` fields are None when the target accuracy is never reached, or when the records
    lack that cost series.
    """

    label: str
    n_seeds: int
    final_test_acc: float
    best_test_acc: float
    final_train_loss: float | None
    target_epoch: int | None
    target_wall_seconds: float | None
    target_bp_eq: float | None
    target_bits: float | None


def _mean_series(curve: Curve, metric: str) -> np.ndarray | None:
    """Return the seed mean of another metric of the curve's records, aligned by epoch."""
    series = [record.metrics.get(metric) for record in curve.records]
    if any(values is None for values in series):
        return None
    length = min(len(values) for values in series)
    return np.mean([np.asarray(values[:length], dtype=float) for values in series], axis=0)


def _value_at(series: np.ndarray | None, index: int | None) -> float | None:
    if series is None or index is None or index >= len(series):
        return None
    return float(series[index])


def summarize(
    records: Sequence[Record],
    target_acc: float,
    ignored: Sequence[str] = DEFAULT_IGNORED_FIELDS,
) -> list[SummaryRow]:
    """Summarise each group of seeds over its whole run, in the figures' order of methods.

    The target is reached at the first epoch whose seed-mean ``test_acc`` is at least ``target_acc``.
    The costs are the seed means of ``wall_seconds``, ``cum_bp_eq_total`` and ``cum_bits_total`` at
    that epoch. Records without ``test_acc`` are skipped with a warning.
    """
    rows = []
    for curve in build_curves(records, "test_acc", "epoch", band="none", ignored=ignored):
        accuracy = curve.y
        reached = np.flatnonzero(accuracy >= target_acc)
        index = int(reached[0]) if len(reached) else None
        train_loss = _mean_series(curve, "train_loss")
        costs = {metric: _value_at(_mean_series(curve, metric), index) for metric in _COST_METRICS}
        rows.append(
            SummaryRow(
                label=curve.legend,
                n_seeds=curve.n_seeds,
                final_test_acc=float(accuracy[-1]),
                best_test_acc=float(np.nanmax(accuracy)),
                final_train_loss=None if train_loss is None else float(train_loss[-1]),
                target_epoch=None if index is None else int(curve.x[index]),
                target_wall_seconds=costs["wall_seconds"],
                target_bp_eq=costs["cum_bp_eq_total"],
                target_bits=costs["cum_bits_total"],
            )
        )
    return rows


def _cell(value: float | None, fmt: str, reached: bool) -> str:
    if not reached:
        return "not reached"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def format_summary(rows: Sequence[SummaryRow], target_acc: float) -> str:
    """Format the rows as a Markdown table; "n/a" marks a series the records do not have."""
    target = f"{target_acc:g} %"
    header = (
        "| method | seeds | final test acc (%) | best test acc (%) | final train loss "
        f"| epoch to {target} | wall time to {target} (s) | backprop equivalents to {target} "
        f"| bits to {target} |"
    )
    lines = [header, "|" + "---|" * 9]
    for row in rows:
        reached = row.target_epoch is not None
        cells = [
            row.label,
            str(row.n_seeds),
            f"{row.final_test_acc:.2f}",
            f"{row.best_test_acc:.2f}",
            _cell(row.final_train_loss, ".4f", True),
            _cell(row.target_epoch, "d", reached),
            _cell(row.target_wall_seconds, ".1f", reached),
            _cell(row.target_bp_eq, ".1f", reached),
            _cell(row.target_bits, ".4g", reached),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
