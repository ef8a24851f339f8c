"""One run's folder: its record after every epoch, its checkpoint, its status and its failure.

``execute`` wraps a :class:`~efmom.trainer.Trainer`. It resumes from ``checkpoint.pt`` when the
folder has one and skips a run whose record has status ``completed``. It writes the record
(released pickle and JSON) after every epoch. On any error it writes the record so far with status
``failed``, the error and ``traceback.txt``, then re-raises. Finished results are never overwritten.

The checkpoint holds the trainer's state (parameters, buffers, every worker's and the master's
method state, the ledger, the metric series and the trainer's generator), the global RNG states of
Python, NumPy and torch (CPU and CUDA), the wandb run id and the run's config. A folder whose
record or checkpoint was made with another config is rejected rather than resumed or skipped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from efmom.records import RecordError, default_file_mode, read_record, write_record
from efmom.trainer import Trainer

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
TRACEBACK = "traceback.txt"

# Config keys that may differ between attempts of one run: they change no number in the record.
RESUMABLE_CHANGES = ("progress",)


class RunCompleted(Exception):
    """The run folder already contains a completed record, so nothing was trained."""


@dataclass
class RunFolder:
    """Folder of one run, with its ``<stem>.pickle``, ``<stem>.json``, ``checkpoint.pt`` and ``traceback.txt``."""

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
            os.chmod(temporary, default_file_mode())
            torch.save(state, temporary)
            os.replace(temporary, self.checkpoint_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

    def check_config(self, stored: dict[str, Any] | None, source: Path) -> None:
        """Raise ValueError when ``stored`` (the config of an earlier attempt) differs from this run's config.

        Keys in :data:`RESUMABLE_CHANGES` are not compared. A ``stored`` of None (a checkpoint written
        before checkpoints carried the config) is accepted.
        """
        if stored is None:
            return
        differences = _config_differences(_plain(stored), _plain(self.info["config"]))
        if differences:
            listed = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
            raise ValueError(
                f"{source} belongs to a run with another config ({listed}); "
                "start this run in another folder (hydra.run.dir or hydra.sweep.dir), or delete the folder to start over"
            )


def _plain(config: dict[str, Any]) -> Any:
    """Return ``config`` as JSON would store it, so that a config read back from a record compares equal."""
    return json.loads(json.dumps(config, default=str))


def _config_differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """List the dotted keys whose values differ, as ``key: before -> after``."""
    if isinstance(before, dict) and isinstance(after, dict):
        differences = []
        for key in sorted(set(before) | set(after)):
            name = f"{prefix}{key}"
            if name in RESUMABLE_CHANGES:
                continue
            differences += _config_differences(before.get(key), after.get(key), f"{name}.")
        return differences
    if before != after:
        return [f"{prefix.rstrip('.')}: {before!r} -> {after!r}"]
    return []


def global_rng_states() -> dict[str, Any]:
    """Return the global RNG states of Python, NumPy and torch; code outside the trainer (dropout, say) draws from them."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_global_rng_states(states: dict[str, Any]) -> None:
    """Restore the states saved by :func:`global_rng_states`; the CUDA states only when CUDA is available."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_traceback(path: Path, error: BaseException) -> None:
    """Write the traceback of ``error`` to ``<path>/traceback.txt``, creating the folder when needed.

    A folder whose record is completed gets no traceback, so that it never looks like a failed run
    (this happens when a finished run is started again with another config and rejected).
    """
    for record_path in path.glob("*.json"):
        try:
            if read_record(record_path).status == "completed":
                log.warning("not writing a traceback into %s because it contains a completed record", path)
                return
        except RecordError:
            continue
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    (path / TRACEBACK).write_text(text, encoding="utf-8")


def execute(trainer: Trainer, folder: RunFolder, logger, checkpoint: bool = True) -> dict[str, list]:
    """Run (or resume) ``trainer`` inside ``folder`` and return its metric series.

    Raises :class:`RunCompleted` when the folder's record is already completed.
    """
    if folder.status() == "completed":
        folder.check_config(read_record(folder.json_path).info.get("config"), folder.json_path)
        raise RunCompleted(f"{folder.json_path} is already completed; choose another hydra.run.dir to train again")

    state = folder.load_checkpoint() if checkpoint else None
    run_id = None
    if state is not None:
        folder.check_config(state.get("config"), folder.checkpoint_path)
        trainer.load_state_dict(state["trainer"])
        if "rng" in state:
            set_global_rng_states(state["rng"])
        run_id = state.get("logger_run_id")
        log.info("resuming from %s after epoch %d", folder.checkpoint_path, trainer.epoch)
    # A traceback left by an earlier attempt no longer describes this folder's run.
    (folder.path / TRACEBACK).unlink(missing_ok=True)

    logger.start(folder.stem, folder.info["config"], str(folder.path), run_id)

    def on_epoch_end(current: Trainer) -> None:
        metrics = current.metrics
        folder.write(metrics, "running")
        logger.log({key: values[-1] for key, values in metrics.items() if values}, step=metrics["epoch"][-1])
        if checkpoint:
            folder.save_checkpoint({
                "trainer": current.state_dict(),
                "rng": global_rng_states(),
                "logger_run_id": logger.run_id,
                "config": folder.info["config"],
            })

    trainer.on_epoch_end = on_epoch_end
    failed = True
    try:
        metrics = trainer.run()
        folder.write(metrics, "completed")
        failed = False
        return metrics
    except BaseException as error:
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            # Ctrl-C, or submitit stopping a job it requeues after a timeout or preemption.
            message = f"interrupted ({message}); start the run again in the same folder to resume"
        write_traceback(folder.path, error)
        if trainer.metrics:
            folder.write(trainer.metrics, "failed", message)
        log.error("run failed: %s (record so far and traceback in %s)", message, folder.path)
        raise
    finally:
        logger.finish(failed=failed)
