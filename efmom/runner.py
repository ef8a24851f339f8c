"""One run's folder: its record after every epoch, its checkpoint, its status and its failure.

``execute`` wraps a :class:`~efmom.trainer.Trainer`: it resumes from ``checkpoint.pt`` when the
folder has one, skips a run whose record says ``completed``, writes the record (released pickle
and JSON) after every epoch, and on any error writes the record so far with status ``failed``,
the error and ``traceback.txt`` before re-raising. Finished results are never overwritten.
"""

from __future__ import annotations

import logging
import os
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from efmom.records import RecordError, read_record, write_record
from efmom.trainer import Trainer

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class RunCompleted(Exception):
    """The run folder already holds a completed record; nothing was trained."""


@dataclass
class RunFolder:
    """Where one run writes: ``<stem>.pickle``, ``<stem>.json``, ``checkpoint.pt`` and ``traceback.txt``."""

    path: Path
    stem: str
    info: dict[str, Any]  # the run's setting: method, config, seed, ... (no status)

    @property
    def json_path(self) -> Path:
        return self.path / f"{self.stem}.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def status(self) -> str | None:
        """Return the status in the folder's record, or None when there is no readable record."""
        if not self.json_path.exists():
            return None
        try:
            return read_record(self.json_path).status
        except RecordError as error:
            log.warning("ignoring unreadable record %s: %s", self.json_path, error)
            return None

    def write(self, metrics: dict[str, list], status: str, error: str | None = None) -> None:
        write_record(self.path, self.stem, metrics, {**self.info, "status": status, "error": error})

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the checkpoint atomically: a crash mid-write leaves the previous one intact."""
        handle, temporary = tempfile.mkstemp(dir=self.path, prefix=".checkpoint-", suffix=".tmp")
        os.close(handle)
        try:
            torch.save(state, temporary)
            os.replace(temporary, self.checkpoint_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)


def execute(trainer: Trainer, folder: RunFolder, logger, checkpoint: bool = True) -> dict[str, list]:
    """Run (or resume) ``trainer`` inside ``folder`` and return its metric series.

    Raises :class:`RunCompleted` when the folder's record is already completed.
    """
    if folder.status() == "completed":
        raise RunCompleted(f"{folder.json_path} is already completed; choose another hydra.run.dir to train again")

    state = folder.load_checkpoint() if checkpoint else None
    run_id = None
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        run_id = state.get("logger_run_id")
        log.info("resuming from %s after epoch %d", folder.checkpoint_path, trainer.epoch)

    logger.start(folder.stem, folder.info["config"], str(folder.path), run_id)

    def on_epoch_end(current: Trainer) -> None:
        metrics = current.metrics
        folder.write(metrics, "running")
        logger.log({key: values[-1] for key, values in metrics.items() if values}, step=metrics["epoch"][-1])
        if checkpoint:
            folder.save_checkpoint({"trainer": current.state_dict(), "logger_run_id": logger.run_id})

    trainer.on_epoch_end = on_epoch_end
    failed = True
    try:
        metrics = trainer.run()
        folder.write(metrics, "completed")
        failed = False
        return metrics
    except BaseException as error:
        message = f"{type(error).__name__}: {error}"
        (folder.path / "traceback.txt").write_text(traceback.format_exc())
        if trainer.metrics:
            folder.write(trainer.metrics, "failed", message)
        log.error("run failed: %s (record so far and traceback in %s)", message, folder.path)
        raise
    finally:
        logger.finish(failed=failed)
