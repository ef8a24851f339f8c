"""Figures and summary tables from run records, free of Hydra (``plot.py`` is the command-line entry).

``load_records`` reads runs from disk, ``plot_records`` draws one figure per metric against one
x-axis (:data:`X_AXES`) with one curve per group of seeds, and ``summarize`` with ``format_summary``
builds the Markdown summary table. ``save_sensitivity`` draws the final train loss and test accuracy
against the γ₀ multiplier ``lr_scale`` of an ``lr_grid`` sweep. Matplotlib runs with the Agg
backend, so no display is needed.
"""

from efmom.plotting.curves import (
    BANDS,
    DEFAULT_IGNORED_FIELDS,
    X_AXES,
    Curve,
    build_curves,
    group_records,
    truncate_curves,
    x_values,
)
from efmom.plotting.figures import (
    DEFAULT_LOG_METRICS,
    DEFAULT_STYLES,
    PlottedFigure,
    load_records,
    plot_metric,
    plot_records,
    resolve_styles,
)
from efmom.plotting.sensitivity import has_lr_grid, plot_sensitivity, save_sensitivity, sensitivity_curves
from efmom.plotting.summary import SummaryRow, format_summary, summarize

__all__ = [
    "BANDS",
    "DEFAULT_IGNORED_FIELDS",
    "DEFAULT_LOG_METRICS",
    "DEFAULT_STYLES",
    "X_AXES",
    "Curve",
    "PlottedFigure",
    "SummaryRow",
    "build_curves",
    "format_summary",
    "group_records",
    "has_lr_grid",
    "load_records",
    "plot_metric",
    "plot_records",
    "plot_sensitivity",
    "resolve_styles",
    "save_sensitivity",
    "sensitivity_curves",
    "summarize",
    "truncate_curves",
    "x_values",
]
