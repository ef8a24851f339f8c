"""Structured-config schemas for train.py, registered in Hydra's ConfigStore.

Each option file under ``conf/<group>/`` starts from one of these schemas (its ``defaults`` list
names it), so a misspelt key fails when the config is composed, naming the key. Hyper-parameters
that must be numbers are typed ``Any`` here on purpose: OmegaConf would silently turn the string
``'0.1'`` into a float, whereas the constructors reject anything but a number with a message naming
the key (``method.lr must be a finite number > 0, got '0.1'``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class MethodSchema:
    _target_: str = MISSING
    lr: Any = MISSING  # γ₀
    eta: Any = None  # η₀ in (0, 1]; null for methods without η
    p: Any = None  # stepsize exponent, γ_e = γ₀/(e+1)^p; null = constant
    q: Any = None  # momentum exponent, η_e = η₀·(2/(e+2))^q; null = constant
    normalize: str = "layer"  # layer | global
    schedule_unit: str = "epoch"  # epoch | step


@dataclass
class TopKSchema:
    _target_: str = "efmom.compressors.TopK"
    topk: Any = 0.1
    scope: str = "layer"


@dataclass
class RatioCompressorSchema:
    _target_: str = MISSING
    ratio: Any = 0.1
    scope: str = "layer"


@dataclass
class ScopeOnlySchema:
    _target_: str = MISSING
    scope: str = "layer"


@dataclass
class DitheringSchema:
    _target_: str = "efmom.compressors.Dithering"
    levels: Any = 4
    norm: Any = 2
    natural: bool = False
    scope: str = "layer"


@dataclass
class ComposeSchema:
    _target_: str = "efmom.compressors.Compose"
    inner: Any = MISSING
    outer: Any = MISSING
    scope: Optional[str] = None


@dataclass
class PlainModelSchema:
    _target_: str = MISSING


@dataclass
class MLPSchema:
    _target_: str = "efmom.models.mlp"
    hidden: list[int] = field(default_factory=lambda: [512])
    activation: str = "relu"


@dataclass
class SmallCNNSchema:
    _target_: str = "efmom.models.small_cnn"
    channels: list[int] = field(default_factory=lambda: [16, 32])
    batch_norm: bool = True


@dataclass
class DatasetSchema:
    name: str = MISSING
    root: str = "data"  # resolved against the directory train.py was started in
    download: bool = True
    split: str = "paper"  # paper | iid | dirichlet
    alpha: float = 0.5  # Dirichlet concentration, used by split=dirichlet
    val_fraction: float = 0.1


@dataclass
class LoggerSchema:
    _target_: str = MISSING
    project: str = "efmom"
    mode: str = "offline"  # offline | online | disabled
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # seconds to wait for the wandb service before going on offline


@dataclass
class NoLoggerSchema:
    _target_: str = "efmom.loggers.NullLogger"


@dataclass
class TrainSchema:
    model: Any = MISSING
    dataset: DatasetSchema = MISSING
    method: MethodSchema = MISSING
    compressor: Any = MISSING
    logger: Any = MISSING
    sweep: Any = None
    lr_scale: Any = 1.0  # multiplier on method.lr: the run uses γ₀ = method.lr × lr_scale (sweep=lr_grid varies it)
    n_workers: int = 10
    batch_size: int = 64  # per worker
    epochs: int = 90
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float64
    threads: Optional[int] = None  # CPU threads for torch; null keeps torch's default
    oracle: str = "loop"
    max_steps_per_epoch: Optional[int] = None
    val_batch_size: int = 64
    test_batch_size: int = 1000
    progress: bool = True
    checkpoint: bool = True


SCHEMAS = {
    ("method", "base_method"): MethodSchema,
    ("compressor", "base_topk"): TopKSchema,
    ("compressor", "base_ratio"): RatioCompressorSchema,
    ("compressor", "base_scope_only"): ScopeOnlySchema,
    ("compressor", "base_dithering"): DitheringSchema,
    ("compressor", "base_compose"): ComposeSchema,
    ("model", "base_plain"): PlainModelSchema,
    ("model", "base_mlp"): MLPSchema,
    ("model", "base_small_cnn"): SmallCNNSchema,
    ("dataset", "base_dataset"): DatasetSchema,
    ("logger", "base_wandb"): LoggerSchema,
    ("logger", "base_none"): NoLoggerSchema,
}


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore; train.py calls this before composing."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=TrainSchema)
    for (group, name), schema in SCHEMAS.items():
        store.store(group=group, name=name, node=schema)
