"""Metric sinks for experiment trackers: Weights & Biases (offline by default) or none.

A logger receives each epoch's metrics as a flat dict. ``efmom.runner.execute`` finishes it once
with the run's status, also when the run fails.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")


class NullLogger:
    """Logs nothing; the run record and the log file still hold every metric."""

    run_id: str | None = None

    def start(self, name: str, config: dict[str, Any], run_dir: str, run_id: str | None = None) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


class WandbLogger:
    """Weights & Biases run, one per job, written offline unless ``mode='online'``.

    Offline mode needs no account and no network: runs are stored under the run folder's
    ``wandb/`` and can be uploaded later with ``wandb sync``. In online mode a wandb that cannot
    reach its server within ``init_timeout`` seconds makes the run continue offline, with a warning.
    ``run_id`` resumes the same wandb run after a restart.
    """

    def __init__(
        self,
        project: str = "efmom",
        mode: str = "offline",
        entity: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        init_timeout: float = 30.0,
    ):
        if mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {mode!r}")
        if isinstance(init_timeout, bool) or not isinstance(init_timeout, (int, float)) or init_timeout <= 0:
            raise ValueError(f"logger.init_timeout must be a number of seconds > 0, got {init_timeout!r}")
        self.project = project
        self.mode = mode
        self.entity = entity
        self.tags = list(tags)
        self.init_timeout = float(init_timeout)
        self.run = None
        self.run_id: str | None = None

    def start(self, name: str, config: dict[str, Any], run_dir: str, run_id: str | None = None) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        options = dict(
            project=self.project, entity=self.entity, name=name, config=config, dir=run_dir, tags=self.tags,
            id=run_id, resume="allow" if run_id else None, reinit="finish_previous",
        )
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(init_timeout=self.init_timeout), **options)
        except Exception as error:  # wandb raises its own CommError/UsageError types, varying by version
            if self.mode != "online":
                raise
            log.warning("wandb could not start online (%s); continuing offline in %s", error, run_dir)
            self.run = wandb.init(mode="offline", **options)
        self.run_id = self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
