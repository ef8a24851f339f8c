"""Draw figures and a summary table from run records on disk.

    python plot.py                                   # every run under ./_release_data, x-axis = epoch
    python plot.py runs=outputs x_axis=time truncate=true
    python plot.py 'runs=[a/*.json,b]' metrics=[test_acc] band=std target_acc=75
    python plot.py runs=multirun/lr_grid             # a sweep folder; adds sensitivity.png for an lr_grid

Figures (PNG and PDF) and summary.md go to Hydra's output directory unless ``out_dir`` is set.
Every option is described in conf/plot.yaml.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig, OmegaConf

from efmom.plotting import format_summary, has_lr_grid, load_records, plot_records, save_sensitivity, summarize

log = logging.getLogger(__name__)


@dataclass
class PlotConfig:
    """Schema of conf/plot.yaml, so that a misspelt key or a wrong type fails when the config is composed."""

    runs: Any = "_release_data"
    metrics: list[str] = field(default_factory=lambda: ["train_loss", "test_loss", "test_acc"])
    x_axis: str = "epoch"
    truncate: bool = False
    band: str = "minmax"
    log_y: list[str] = field(default_factory=lambda: ["train_loss", "test_loss", "val_loss"])
    group_ignore: list[str] = field(default_factory=lambda: ["seed", "status", "error", "sweep"])
    styles: dict[str, Any] = field(default_factory=dict)
    target_acc: float = 80.0
    formats: list[str] = field(default_factory=lambda: ["png", "pdf"])
    dpi: int = 150
    out_dir: str | None = None
    sensitivity: bool = True


ConfigStore.instance().store(name="plot_schema", node=PlotConfig)


def _absolute_runs(runs: Any) -> list[str]:
    """Resolve ``runs`` (one path or glob, or a list of them) against the directory plot.py started in."""
    entries = list(runs) if isinstance(runs, (list, tuple, ListConfig)) else [runs]
    return [to_absolute_path(str(entry)) for entry in entries]


def run(cfg: DictConfig) -> Path:
    """Draw every figure the config requests, write summary.md, and return the output folder."""
    if cfg.out_dir is not None:
        out_dir = Path(to_absolute_path(cfg.out_dir))
    else:
        out_dir = Path(HydraConfig.get().runtime.output_dir)
    styles = OmegaConf.to_container(cfg.styles, resolve=True)

    log.info("reading runs from %s", cfg.runs)
    records = load_records(_absolute_runs(cfg.runs))

    log.info("drawing %s against %s from %d records", list(cfg.metrics), cfg.x_axis, len(records))
    plot_records(
        records,
        list(cfg.metrics),
        x_axis=cfg.x_axis,
        out_dir=out_dir,
        band=cfg.band,
        truncate=cfg.truncate,
        styles=styles,
        log_metrics=list(cfg.log_y),
        ignored=list(cfg.group_ignore),
        formats=list(cfg.formats),
        dpi=cfg.dpi,
    )

    if cfg.sensitivity and has_lr_grid(records):
        log.info("the records span several lr_scale values: drawing the sensitivity figure")
        save_sensitivity(
            records, out_dir, formats=list(cfg.formats), dpi=cfg.dpi, styles=styles,
            log_metrics=list(cfg.log_y), ignored=list(cfg.group_ignore),
        )

    table = format_summary(summarize(records, cfg.target_acc, list(cfg.group_ignore)), cfg.target_acc)
    (out_dir / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    log.info("figures and summary.md written to %s", out_dir)
    return out_dir


@hydra.main(version_base="1.3", config_path="conf", config_name="plot")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ValueError, FileNotFoundError) as error:
        # Bad options, missing folders and unreadable inputs: one clear line instead of a stack trace.
        log.error("%s", error)
        sys.exit(1)


if __name__ == "__main__":
    main()
