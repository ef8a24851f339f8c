"""Train one experiment, or a sweep with -m: n simulated workers, error feedback, compressed messages.

    python train.py                                          # ResNet-18 on CIFAR-10, the setting of the released runs
    python train.py experiment=quickstart                    # bundled digits data, about a minute on a CPU
    python train.py method=ef21_hm_norm compressor.topk=0.05
    python train.py method=ef21_igt_norm --cfg job           # print the composed config only

Every option is described in conf/; the record, its JSON twin, a checkpoint and the log land in
the Hydra run folder (outputs/<date>/<time>_<method> by default).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from efmom.config import register_configs
from efmom.data import DatasetError, load_dataset, split_workers
from efmom.records import record_stem
from efmom.runner import RunCompleted, RunFolder, execute, write_traceback
from efmom.trainer import NonFiniteError, RunSettings, Trainer

log = logging.getLogger("train")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

register_configs()


def resolve_device(name: str) -> torch.device:
    """Map ``device`` (auto, cpu, cuda, cuda:N) to a torch device; auto takes CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} was requested but CUDA is not available; use device=cpu or device=auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device(name)


def initial_lr(cfg: DictConfig) -> float:
    """Return γ₀ = method.lr × lr_scale; raise ValueError naming lr_scale unless it is a finite number > 0."""
    scale = cfg.lr_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"lr_scale must be a finite number > 0, got {scale!r}")
    lr = cfg.method.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        return lr  # left as given, so that the method's own check rejects it naming method.lr
    return lr * scale


def describe(cfg: DictConfig, method, compressor) -> tuple[str, dict]:
    """Return the record's file stem and the fields that describe the run's setting."""
    model = cfg.model._target_.rsplit(".", 1)[-1]
    ratio = getattr(compressor, "topk", getattr(compressor, "ratio", None))
    eta = cfg.method.eta if method.uses_eta else None
    stem = record_stem(model, cfg.dataset.name, method.name, compressor.name, ratio, initial_lr(cfg), eta, cfg.method.p, cfg.method.q)
    info = {
        "method": method.name,
        "model": model,
        "dataset": cfg.dataset.name,
        "compressor": compressor.name,
        "seed": cfg.seed,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    return stem, info


def train(cfg: DictConfig) -> float:
    """Build every part from the config, train, and return the final test accuracy."""
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    settings = RunSettings(
        epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, val_batch_size=cfg.val_batch_size,
        test_batch_size=cfg.test_batch_size, max_steps_per_epoch=cfg.max_steps_per_epoch, progress=cfg.progress,
    )
    method = instantiate(cfg.method, lr=initial_lr(cfg))
    compressor = instantiate(cfg.compressor)
    logger = instantiate(cfg.logger)
    log.info("method %r, compressor %r, %d workers, device %s", method, compressor, cfg.n_workers, device)

    root = Path(to_absolute_path(cfg.dataset.root))
    data = load_dataset(cfg.dataset.name, root, download=cfg.dataset.download)
    split = split_workers(
        data.train_targets, cfg.n_workers, cfg.dataset.split, seed=cfg.seed,
        val_fraction=cfg.dataset.val_fraction, alpha=cfg.dataset.alpha, num_classes=data.num_classes,
    )
    log.info("dataset %s: %d workers with %s samples, %d for validation, %d for testing", data.name, cfg.n_workers,
             sorted({len(shard) for shard in split.worker_indices}), len(split.val_indices), len(data.test_targets))

    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model, num_classes=data.num_classes, input_shape=data.input_shape)
    trainer = Trainer(model, data, split, method, compressor, settings, device, DTYPES[cfg.dtype], oracle=cfg.oracle)
    log.info("model %s with %d trainable parameters", cfg.model._target_, trainer.layout.numel)

    stem, info = describe(cfg, method, compressor)
    folder = RunFolder(Path(HydraConfig.get().runtime.output_dir), stem, info)
    log.info("training for %d epochs of %d steps; record %s", cfg.epochs, len(trainer.batches), folder.json_path)
    metrics = execute(trainer, folder, logger, checkpoint=cfg.checkpoint)

    log.info("finished: test accuracy %.2f %% after %d epochs", metrics["test_acc"][-1], cfg.epochs)
    return float(metrics["test_acc"][-1])


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except RunCompleted as done:
        log.info("%s", done)
        return None
    except (ValueError, DatasetError, InstantiationException, NonFiniteError) as error:
        # Configuration, data and divergence problems: one clear line instead of a stack trace in a
        # single run (the run folder keeps traceback.txt).
        # A multirun re-raises, so the launcher reports the failed job and the others go on.
        log.error("%s", error)
        write_traceback(Path(HydraConfig.get().runtime.output_dir), error)
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
