"""Figures of one metric against one x-axis, one curve per method, saved as PNG and PDF."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen before pyplot loads
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from efmom.plotting.curves import (  # noqa: E402
    DEFAULT_IGNORED_FIELDS,
    X_AXES,
    Curve,
    build_curves,
    check_x_axis,
)
from efmom.records import Record, RecordError, find_records, read_record  # noqa: E402

log = logging.getLogger(__name__)

#: Metrics drawn on a logarithmic y-axis unless the caller passes another list.
DEFAULT_LOG_METRICS = ("train_loss", "test_loss", "val_loss")

#: Axis labels of the recorded metrics; other metric keys are shown as they are.
METRIC_LABELS = {
    "train_loss": "Train loss",
    "val_loss": "Validation loss",
    "test_loss": "Test loss",
    "val_acc": "Validation accuracy (%)",
    "test_acc": "Test accuracy (%)",
    "lr": "Stepsize γ",
    "eta": "Momentum weight η",
    "grad_norm": "‖gᵗ‖",
}

#: Colour and marker of each method, fixed so that a method looks the same in every figure.
DEFAULT_STYLES = {
    "sgd": {"color": "#7f7f7f", "marker": "x"},
    "ef14": {"color": "#8c564b", "marker": "v"},
    "ef21": {"color": "#1f77b4", "marker": "o"},
    "econtrol": {"color": "#ff7f0e", "marker": "s"},
    "ef21_sgdm": {"color": "#2ca02c", "marker": "^"},
    "ef21_sgdm_norm": {"color": "#d62728", "marker": "D"},
    "ef21_igt_norm": {"color": "#9467bd", "marker": "P"},
    "ef21_mvr_norm": {"color": "#e377c2", "marker": "X"},
    "ef21_hm_norm": {"color": "#17becf", "marker": "*"},
    "ef21_rhm_norm": {"color": "#bcbd22", "marker": "h"},
}

# Methods without a default style take these in order of first appearance in a figure.
_SPARE_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
_SPARE_MARKERS = ("p", "d", "<", ">", "8", "H", "+")
# Curves of one method with different settings share its colour and differ in line style.
_LINESTYLES = ("-", "--", "-.", ":")
_STYLE_KEYS = ("color", "marker", "label", "linestyle")


@dataclass
class PlottedFigure:
    """A drawn figure with its curves, the line drawn for each curve and the files it was saved to."""

    metric: str
    x_axis: str
    figure: Figure
    curves: list[Curve]
    lines: list[Line2D]
    paths: list[Path] = field(default_factory=list)

    def line(self, label: str) -> Line2D:
        """Return the line whose curve has ``label`` (without the seed count); KeyError when absent."""
        for curve, line in zip(self.curves, self.lines):
            if curve.label == label:
                return line
        raise KeyError(f"no curve labelled {label!r}; labels: {[c.label for c in self.curves]}")


def load_records(runs: str | Path | Sequence[str | Path]) -> list[Record]:
    """Find and read every record under ``runs``, logging and skipping those that cannot be read.

    A JSON record that fails to read is replaced by the pickle beside it when that one reads.
    Raises FileNotFoundError naming ``runs`` when no record could be read.
    """
    records = []
    for path in find_records(runs):
        try:
            records.append(read_record(path))
            continue
        except (RecordError, OSError) as error:
            log.error("skipping unreadable record: %s", error)
        fallback = path.with_suffix(".pickle")
        if path.suffix == ".json" and fallback.is_file():
            try:
                records.append(read_record(fallback))
                log.warning("using %s in place of %s", fallback, path)
            except (RecordError, OSError) as error:
                log.error("skipping unreadable record: %s", error)
    if not records:
        raise FileNotFoundError(
            f"no readable run records found in runs={runs!r}; "
            "pass runs=<folder, glob or list> pointing at .json or .pickle records"
        )
    return records


def resolve_styles(
    curves: Sequence[Curve], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Return the matplotlib style of each curve: the method's default, then the caller's overrides.

    ``overrides`` maps a method config name to any of ``color``, ``marker``, ``label``, ``linestyle``.
    Raises ValueError for another key, because matplotlib would otherwise fail far from the config.
    """
    overrides = dict(overrides or {})
    for method, style in overrides.items():
        unknown = set(style) - set(_STYLE_KEYS)
        if unknown:
            raise ValueError(
                f"styles.{method} has unknown keys {sorted(unknown)}; allowed: {', '.join(_STYLE_KEYS)}"
            )

    spare: dict[str | None, dict[str, Any]] = {}
    seen_per_method: dict[str | None, int] = {}
    styles = []
    for curve in curves:
        if curve.method in DEFAULT_STYLES:
            base = dict(DEFAULT_STYLES[curve.method])
        else:
            if curve.method not in spare:
                index = len(spare)
                spare[curve.method] = {
                    "color": _SPARE_COLORS[index % len(_SPARE_COLORS)],
                    "marker": _SPARE_MARKERS[index % len(_SPARE_MARKERS)],
                }
            base = dict(spare[curve.method])
        repeat = seen_per_method.get(curve.method, 0)
        seen_per_method[curve.method] = repeat + 1
        base["linestyle"] = _LINESTYLES[repeat % len(_LINESTYLES)]
        base.update(overrides.get(curve.method or "", {}))
        styles.append(base)
    return styles


def _legend_text(curve: Curve, style: Mapping[str, Any]) -> str:
    if "label" not in style:
        return curve.legend
    text = style["label"] + curve.label[len(curve.records[0].label):]
    return f"{text} ({curve.n_seeds} seeds)" if curve.n_seeds > 1 else text


def plot_metric(
    curves: Sequence[Curve],
    metric: str,
    x_axis: str,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    log_y: bool = False,
    x_end: float | None = None,
) -> PlottedFigure:
    """Draw the curves on a new figure: one line per curve, a shaded band where the curve has one."""
    check_x_axis(x_axis)
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    lines = []
    for curve, style in zip(curves, resolve_styles(curves, styles)):
        (line,) = axes.plot(
            curve.x,
            curve.y,
            color=style["color"],
            marker=style["marker"],
            linestyle=style["linestyle"],
            markevery=max(1, len(curve.x) // 10),
            markersize=5,
            linewidth=1.5,
            label=_legend_text(curve, style),
        )
        lines.append(line)
        if curve.low is not None:
            axes.fill_between(curve.x, curve.low, curve.high, color=style["color"], alpha=0.2, lw=0)

    if log_y:
        axes.set_yscale("log")
    if x_end is not None:
        axes.set_xlim(right=x_end)
    axes.set_xlabel(X_AXES[x_axis][1])
    axes.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return PlottedFigure(metric=metric, x_axis=x_axis, figure=figure, curves=list(curves), lines=lines)


def plot_records(
    records: Sequence[Record],
    metrics: Sequence[str],
    x_axis: str = "epoch",
    out_dir: Path | str | None = None,
    band: str = "minmax",
    truncate: bool = False,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    log_metrics: Sequence[str] = DEFAULT_LOG_METRICS,
    ignored: Sequence[str] = DEFAULT_IGNORED_FIELDS,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[PlottedFigure]:
    """Draw one figure per metric and, when ``out_dir`` is given, save ``<metric>_vs_<x_axis>.<fmt>``.

    Figures are closed after saving. Their lines keep their data, so callers can still inspect them.
    """
    check_x_axis(x_axis)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)

    plotted = []
    for metric in metrics:
        curves = build_curves(records, metric, x_axis, band=band, truncate=truncate, ignored=ignored)
        x_end = max(c.x[-1] for c in curves if len(c.x)) if truncate else None
        result = plot_metric(curves, metric, x_axis, styles, metric in log_metrics, x_end)
        if out_dir is not None:
            for suffix in formats:
                path = out_dir / f"{metric}_vs_{x_axis}.{suffix}"
                result.figure.savefig(path, dpi=dpi)
                result.paths.append(path)
            log.info("saved %s", ", ".join(str(p) for p in result.paths))
            plt.close(result.figure)
        plotted.append(result)
    return plotted
