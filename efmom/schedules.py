"""Parameter-agnostic stepsize and momentum schedules.

γ_e = γ₀ / (e+1)^p and η_e = η₀ · (2/(e+2))^q, where e is the 0-based epoch (``unit='epoch'``, the
released behaviour) or the 0-based iteration t (``unit='step'``, the index of the convergence theory of Sadiev et al. 2025, arXiv:2511.14501).
An exponent of ``None`` keeps the value constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UNITS = ("epoch", "step")


def _check_exponent(key: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{key} must be a number >= 0 or null (constant), got {value!r}")
    return float(value)


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"method.schedule_unit must be one of {UNITS}, got {unit!r}")
    return unit


@dataclass(frozen=True)
class StepsizeSchedule:
    """γ_e = γ₀ / (e+1)^p; ``p=None`` is constant."""

    initial: float
    power: float | None = None
    unit: str = "epoch"

    def __post_init__(self):
        initial = self.initial
        if isinstance(initial, bool) or not isinstance(initial, (int, float)) or not initial > 0 or math.isinf(initial):
            raise ValueError(f"method.lr must be a finite number > 0, got {initial!r}")
        _check_exponent("method.p", self.power)
        check_unit(self.unit)

    def __call__(self, epoch: int, step: int) -> float:
        if self.power is None:
            return float(self.initial)
        index = epoch if self.unit == "epoch" else step
        return self.initial / (index + 1) ** self.power


@dataclass(frozen=True)
class MomentumSchedule:
    """η_e = η₀ · (2/(e+2))^q; ``q=None`` is constant. η₀ must lie in (0, 1]."""

    initial: float
    power: float | None = None
    unit: str = "epoch"

    def __post_init__(self):
        initial = self.initial
        if isinstance(initial, bool) or not isinstance(initial, (int, float)) or not 0.0 < initial <= 1.0:
            raise ValueError(f"method.eta must be in (0, 1], got {initial!r}")
        _check_exponent("method.q", self.power)
        check_unit(self.unit)

    def __call__(self, epoch: int, step: int) -> float:
        if self.power is None:
            return float(self.initial)
        index = epoch if self.unit == "epoch" else step
        return self.initial * (2.0 / (index + 2)) ** self.power
