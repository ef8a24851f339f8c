"""The training run: rounds over every epoch, per-epoch evaluation and the metric series.

The trainer uses neither Hydra nor files. It hands each epoch's metrics to a callback, which
train.py uses to write records and checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from efmom.compressors import Compressor
from efmom.data import DatasetSplits, WorkerBatches, WorkerSplit, iterate_batches
from efmom.layout import bind_flat_parameters
from efmom.ledger import Ledger
from efmom.methods import Method
from efmom.oracles import build_oracle
from efmom.simulation import Simulation

log = logging.getLogger(__name__)

EpochCallback = Callable[["Trainer"], None]


class NonFiniteError(FloatingPointError):
    """Training produced NaN or infinity; the message names the epoch, step and where it appeared."""


@dataclass
class RunSettings:
    """Sizes of a run. ``max_steps_per_epoch`` shortens every epoch (smoke tests); None runs all steps."""

    epochs: int = 90
    batch_size: int = 64
    seed: int = 42
    val_batch_size: int = 64
    test_batch_size: int = 1000
    max_steps_per_epoch: int | None = None
    progress: bool = True

    def __post_init__(self):
        for key in ("epochs", "batch_size", "val_batch_size", "test_batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "epochs" else 1):
                raise ValueError(f"{key} must be an integer >= {0 if key == 'epochs' else 1}, got {value!r}")
        steps = self.max_steps_per_epoch
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"max_steps_per_epoch must be null or an integer >= 1, got {steps!r}")


class Trainer:
    """Runs one experiment: n workers on their shards, the method, the compressor and the master.

    These metric series have one value per epoch, epoch 0 being before training: ``epoch, lr,
    eta, train_loss, val_loss, val_acc, test_loss, test_acc, cum_bp_eq_total, cum_ex_bp_total,
    cum_bits_total, wall_seconds``. Two have one value per trained epoch: ``gpu_seconds`` (the
    epoch's training time, from CUDA events on a GPU and the wall clock on a CPU) and ``grad_norm``
    (the mean over the epoch's rounds of ‖g^t‖, the master's estimate). ``eta`` is left out for
    methods without η.
    Epoch 0's train loss is the mean loss over every worker's shard at x⁰ in eval mode. Later
    epochs report the mean of the minibatch losses seen during the epoch (at z for IGT).
    """

    def __init__(
        self,
        model: nn.Module,
        data: DatasetSplits,
        split: WorkerSplit,
        method: Method,
        compressor: Compressor,
        settings: RunSettings,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        on_epoch_end: EpochCallback | None = None,
        oracle: str = "loop",
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype)
        self.data = data
        self.split = split
        self.method = method
        self.settings = settings
        self.on_epoch_end = on_epoch_end
        self.n_workers = len(split.worker_indices)

        self.x, self.layout = bind_flat_parameters(self.model)
        self.generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        oracle = build_oracle(oracle, self.model, self.layout)
        self.simulation = Simulation(method, compressor, oracle, self.x, self.layout, self.generator)
        self.batches = WorkerBatches(data.train_inputs, data.train_targets, split, settings.batch_size, settings.seed, self.device)
        self.ledger = Ledger()
        self.metrics: dict[str, list] = {}
        self.epoch = 0  # epochs finished
        self.wall_offset = 0.0  # wall seconds spent before a resume

    # --- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, inputs: Tensor, targets: Tensor, batch_size: int) -> tuple[float, float]:
        """Return the mean loss and the accuracy in percent of the model in eval mode."""
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for batch_inputs, batch_targets in iterate_batches(inputs, targets, batch_size, self.device):
            outputs = self.model(batch_inputs.to(self.dtype))
            total_loss += float(F.cross_entropy(outputs, batch_targets, reduction="sum"))
            correct += int((outputs.argmax(dim=1) == batch_targets).sum())
            count += len(batch_targets)
        return total_loss / max(count, 1), 100.0 * correct / max(count, 1)

    @torch.no_grad()
    def initial_train_loss(self) -> float:
        """Return the mean loss over every worker's whole shard at x⁰, in eval mode."""
        self.model.eval()
        total, count = 0.0, 0
        for inputs, targets in self.batches.full_shards():
            outputs = self.model(inputs.to(self.dtype))
            total += float(F.cross_entropy(outputs, targets, reduction="sum"))
            count += len(targets)
        return total / max(count, 1)

    def _record_evaluation(self) -> None:
        data, split = self.data, self.split
        val_loss, val_acc = float("nan"), float("nan")
        if len(split.val_indices) > 0:
            val_loss, val_acc = self.evaluate(
                data.train_inputs[split.val_indices], data.train_targets[split.val_indices], self.settings.val_batch_size
            )
        test_loss, test_acc = self.evaluate(data.test_inputs, data.test_targets, self.settings.test_batch_size)
        for key, value in (("val_loss", val_loss), ("val_acc", val_acc), ("test_loss", test_loss), ("test_acc", test_acc)):
            self.metrics[key].append(value)

    def _append(self, **values) -> None:
        for key, value in values.items():
            self.metrics.setdefault(key, []).append(value)

    # --- training ---------------------------------------------------------------------------

    def _check_finite(self, loss: Tensor, epoch: int, step: int) -> None:
        if bool(torch.isfinite(loss).all() & torch.isfinite(self.x).all()):
            return
        where = f"epoch {epoch + 1}, step {step + 1}"
        names = [name for name, value in self.layout.unflatten(self.x).items() if not bool(torch.isfinite(value).all())]
        parameters = f"non-finite parameters: {', '.join(names)}" if names else "all parameters finite"
        if not bool(torch.isfinite(loss).all()):
            workers = torch.nonzero(~torch.isfinite(loss)).flatten().tolist()
            raise NonFiniteError(f"non-finite training loss at {where} on workers {workers} ({parameters})")
        raise NonFiniteError(f"non-finite parameters at {where}: {', '.join(names)}")

    def _start(self) -> None:
        method = self.method
        self.metrics = {key: [] for key in ("epoch", "lr", "eta", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc")}
        self._append(epoch=0, lr=method.lr(0, 0), eta=method.eta(0, 0), train_loss=self.initial_train_loss())
        self._record_evaluation()
        self._append(cum_bp_eq_total=0.0, cum_ex_bp_total=0.0, cum_bits_total=0.0, wall_seconds=0.0)
        self.metrics["gpu_seconds"] = []
        self.metrics["grad_norm"] = []
        if not method.uses_eta:
            del self.metrics["eta"]
        self._log_epoch()

    def _train_epoch(self, epoch: int, started: float) -> None:
        method, settings = self.method, self.settings
        steps = len(self.batches) if settings.max_steps_per_epoch is None else min(len(self.batches), settings.max_steps_per_epoch)
        timer = _EpochTimer(self.device)
        losses, norms = [], []
        lr = eta = None
        progress = tqdm(total=steps, desc=f"epoch {epoch + 1}/{settings.epochs}", leave=False,
                        disable=None if settings.progress else True)
        for step, (inputs, targets) in enumerate(self.batches.epoch(epoch)):
            if step >= steps:
                break
            global_step = self.simulation.t
            lr, eta = method.lr(epoch, global_step), method.eta(epoch, global_step)
            result = self.simulation.round(inputs.to(self.dtype), targets, lr, eta)
            self._check_finite(result.loss, epoch, step)
            losses.append(result.loss.mean())
            norms.append(result.estimate_norm)
            self.ledger.add_round(method.backprops_per_step, inputs.shape[1], float(result.bits.mean()))
            progress.update()
        progress.close()

        seconds = timer.stop()
        self._append(epoch=epoch + 1, lr=lr, train_loss=float(torch.stack(losses).mean()))
        if method.uses_eta:
            self._append(eta=eta)
        self._record_evaluation()
        self._append(
            cum_bp_eq_total=self.ledger.backprop_equivalents,
            cum_ex_bp_total=self.ledger.examples_backprops,
            cum_bits_total=self.ledger.bits,
            wall_seconds=self.wall_offset + time.perf_counter() - started,
            gpu_seconds=seconds,
            grad_norm=sum(norms) / len(norms),
        )
        self._log_epoch()

    def _log_epoch(self) -> None:
        m = self.metrics
        log.info(
            "epoch %d: train_loss %.4f  test_loss %.4f  test_acc %.2f  lr %.4g%s  bits/worker %.3g",
            m["epoch"][-1], m["train_loss"][-1], m["test_loss"][-1], m["test_acc"][-1], m["lr"][-1],
            f"  eta {m['eta'][-1]:.4g}" if "eta" in m else "", m["cum_bits_total"][-1],
        )

    def run(self) -> dict[str, list]:
        """Train the remaining epochs and return the metric series."""
        if self.epoch == 0:
            self._start()
            if self.on_epoch_end:
                self.on_epoch_end(self)
        started = time.perf_counter()
        while self.epoch < self.settings.epochs:
            self._train_epoch(self.epoch, started)
            self.epoch += 1
            if self.on_epoch_end:
                self.on_epoch_end(self)
        self.wall_offset = self.metrics["wall_seconds"][-1]
        return self.metrics

    # --- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue the run bit for bit (the data order is seeded per epoch)."""
        return {
            "epoch": self.epoch,
            "x": self.x.detach().clone(),
            "buffers": {name: buffer.clone() for name, buffer in self.model.named_buffers()},
            "simulation": self.simulation.state_dict(),
            "generator": self.generator.get_state(),
            "ledger": self.ledger.state_dict(),
            "metrics": {key: list(values) for key, values in self.metrics.items()},
            "wall_seconds": self.metrics["wall_seconds"][-1] if self.metrics.get("wall_seconds") else 0.0,
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.x.copy_(state["x"])
            buffers = dict(self.model.named_buffers())
            for name, value in state["buffers"].items():
                buffers[name].copy_(value)
        self.simulation.load_state_dict(state["simulation"])
        self.generator.set_state(state["generator"])
        self.ledger.load_state_dict(state["ledger"])
        self.metrics = {key: list(values) for key, values in state["metrics"].items()}
        self.epoch = state["epoch"]
        self.wall_offset = state["wall_seconds"]


class _EpochTimer:
    """Times one epoch of training: CUDA events on a GPU, the wall clock otherwise."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()
        self.started = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.end_event.record()
            self.end_event.synchronize()
            return self.start_event.elapsed_time(self.end_event) / 1000.0
        return time.perf_counter() - self.started
