"""Stepsize sensitivity: final train loss and test accuracy against the γ₀ multiplier ``lr_scale``.

Each run of an ``lr_grid`` sweep records ``config.lr_scale`` (γ₀ = method.lr × lr_scale). Runs that
differ only in ``lr_scale`` and the seed form one curve, one point per multiplier at the seed mean of
the metric's last value, with the seed minimum and maximum as the band. A run that did not complete
(diverged, failed or still running) leaves a gap at its multiplier rather than a misleading value.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from efmom.plotting.curves import DEFAULT_IGNORED_FIELDS, Curve, _disambiguate, _method_order, group_records, setting_fields
from efmom.plotting.figures import METRIC_LABELS, resolve_styles
from efmom.records import Record

log = logging.getLogger(__name__)

#: Config key of the γ₀ multiplier.
SCALE_KEY = "lr_scale"

#: Metrics of the sensitivity figure, one panel each.
SENSITIVITY_METRICS = ("train_loss", "test_acc")


def lr_scale(record: Record) -> float | None:
    """Return the record's γ₀ multiplier; 1.0 for a record whose config predates the key, None without a config."""
    config = record.info.get("config")
    if not isinstance(config, dict):
        return None
    return float(config.get(SCALE_KEY, 1.0))


def has_lr_grid(records: Sequence[Record]) -> bool:
    """Return True when the records span at least two γ₀ multipliers."""
    return len({scale for scale in map(lr_scale, records) if scale is not None}) >= 2


def final_value(record: Record, metric: str) -> float:
    """Return the metric's last value for a completed run; NaN for a run that did not complete or lacks it."""
    values = record.metrics.get(metric)
    if record.status != "completed" or not values:
        return float("nan")
    return float(values[-1])


def sensitivity_curves(
    records: Sequence[Record], metric: str, ignored: Sequence[str] = DEFAULT_IGNORED_FIELDS
) -> list[Curve]:
    """Build one curve per setting: x the multipliers, y the seed mean of the metric's final value.

    Records without a config (released pickles) are left out. Raises ValueError when fewer than two
    multipliers remain.
    """
    usable = [record for record in records if lr_scale(record) is not None]
    if not has_lr_grid(usable):
        raise ValueError(f"the sensitivity figure needs records with at least two values of {SCALE_KEY}")

    ignored = (*ignored, SCALE_KEY)
    curves = []
    for group in group_records(usable, ignored):
        by_scale: dict[float, list[float]] = {}
        for record in group:
            by_scale.setdefault(lr_scale(record), []).append(final_value(record, metric))
        scales = np.array(sorted(by_scale))
        values = [np.array(by_scale[scale]) for scale in scales]
        incomplete = [f"{scale:g}" for scale, seeds in zip(scales, values) if np.isnan(seeds).any()]
        if incomplete:
            log.info("%s: no %s at lr_scale %s (run diverged, failed or is unfinished)",
                     group[0].label, metric, ", ".join(incomplete))
        several_seeds = any(len(seeds) > 1 for seeds in values)
        curves.append(
            Curve(
                method=group[0].method,
                label=group[0].label,
                records=list(group),
                x=scales,
                y=np.array([seeds.mean() for seeds in values]),
                low=np.array([seeds.min() for seeds in values]) if several_seeds else None,
                high=np.array([seeds.max() for seeds in values]) if several_seeds else None,
                settings=setting_fields(group[0], ignored),
            )
        )
    _disambiguate(curves)
    curves.sort(key=_method_order)
    return curves


def plot_sensitivity(
    records: Sequence[Record],
    metrics: Sequence[str] = SENSITIVITY_METRICS,
    log_metrics: Sequence[str] = ("train_loss",),
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    ignored: Sequence[str] = DEFAULT_IGNORED_FIELDS,
) -> tuple[Figure, dict[str, list[Curve]]]:
    """Draw one panel per metric against lr_scale on a base-2 log axis; return the figure and its curves."""
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4), squeeze=False)
    drawn = {}
    for panel, metric in zip(axes[0], metrics):
        curves = sensitivity_curves(records, metric, ignored)
        for curve, style in zip(curves, resolve_styles(curves, styles)):
            panel.plot(curve.x, curve.y, color=style["color"], marker=style["marker"], linestyle=style["linestyle"],
                       linewidth=1.5, markersize=5, label=style.get("label", curve.label))
            if curve.low is not None:
                panel.fill_between(curve.x, curve.low, curve.high, color=style["color"], alpha=0.15, lw=0)
        panel.set_xscale("log", base=2)
        if metric in log_metrics:
            panel.set_yscale("log")
        panel.axvline(1.0, color="0.6", linewidth=0.8, linestyle=":")
        panel.set_xlabel("γ₀ multiplier (lr_scale)")
        label = METRIC_LABELS.get(metric, metric)
        panel.set_ylabel(f"Final {label[0].lower()}{label[1:]}")
        panel.grid(True, alpha=0.3)
        drawn[metric] = curves
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure, drawn


def save_sensitivity(
    records: Sequence[Record],
    out_dir: Path | str,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
    **options: Any,
) -> list[Path]:
    """Draw the sensitivity figure, save it as ``sensitivity.<format>`` in ``out_dir`` and return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure, _ = plot_sensitivity(records, **options)
    paths = []
    for suffix in formats:
        path = out_dir / f"sensitivity.{suffix}"
        figure.savefig(path, dpi=dpi)
        paths.append(path)
    plt.close(figure)
    log.info("saved %s", ", ".join(str(path) for path in paths))
    return paths
