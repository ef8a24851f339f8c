"""Shared parts of every method: gradient requests, the method interface and the master.

A method is a pure rule over stacked tensors. Worker state is a dict of ``[n_workers, d]`` tensors
(one row per worker, over the flat parameter vector); the master keeps its own estimate. Neither
side holds references to the other, so the same rules can later run with workers in separate
processes.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor

from efmom.compressors import Compressed
from efmom.layout import Layout
from efmom.schedules import MomentumSchedule, StepsizeSchedule

NORMALIZATIONS = ("layer", "global")

#: Method classes by config name, filled by ``Method.__init_subclass__``.
METHODS: dict[str, type["Method"]] = {}

Compress = Callable[[Tensor], Compressed]


class RequestKind(enum.Enum):
    """Kind of evaluation a worker needs from its loss on this round's minibatch ξ."""

    GRADIENT = "gradient"  # ∇fᵢ(x^t; ξ)
    EXTRAPOLATED_GRADIENT = "extrapolated_gradient"  # ∇fᵢ(z; ξ) only, z = x^t + c·(x^t − x^{t−1})
    GRADIENT_DIFFERENCE = "gradient_difference"  # ∇fᵢ(x^t; ξ) and ∇fᵢ(x^t; ξ) − ∇fᵢ(x^{t−1}; ξ)
    HESSIAN_VECTOR = "hessian_vector"  # ∇fᵢ(x^t; ξ) and ∇²fᵢ(x^t; ξ)(x^t − x^{t−1})
    RANDOM_HESSIAN_VECTOR = "random_hessian_vector"  # as above with the product at x̂ = q x^t + (1−q) x^{t−1}

    @property
    def backprops(self) -> int:
        """Cost in backprop equivalents: 1 for one gradient, 2 for two gradients or one Hessian-vector product."""
        return _BACKPROPS[self]


_BACKPROPS = {
    RequestKind.GRADIENT: 1,
    RequestKind.EXTRAPOLATED_GRADIENT: 1,
    RequestKind.GRADIENT_DIFFERENCE: 2,
    RequestKind.HESSIAN_VECTOR: 2,
    RequestKind.RANDOM_HESSIAN_VECTOR: 3,
}


@dataclass(frozen=True)
class GradientRequest:
    """One round's request to the oracle; ``extrapolation`` is c in z = x^t + c(x^t − x^{t−1})."""

    kind: RequestKind
    extrapolation: float = 0.0


@dataclass
class OracleAnswer:
    """The oracle's reply for every worker, stacked over the worker dimension."""

    gradient: Tensor  # [n, d]: at x^t, or at z for EXTRAPOLATED_GRADIENT
    loss: Tensor  # [n]: minibatch loss at the point where ``gradient`` was taken
    correction: Tensor | None = None  # [n, d]: the difference or Hessian-vector product, if requested


class Method(ABC):
    """One error-feedback rule: worker state, the round's request and the message each worker sends.

    Subclasses set ``name`` (the config name, which registers the class), ``label`` (as plots
    write it), ``backprops_per_step`` (the nominal cost that ``cum_bp_eq_total`` counts),
    ``normalized`` (master step D(g) = g/‖g‖), ``accumulates`` (the master adds the averaged
    message to its estimate, as in EF21, instead of replacing it) and ``uses_eta`` (False where
    the rule has no η, so records leave η out as the released EF21 record does).

    Args:
        lr: initial stepsize γ₀ (> 0).
        eta: initial momentum weight η₀ in (0, 1]; its meaning is the method's own.
        p: stepsize decay exponent, γ_e = γ₀/(e+1)^p; ``None`` is constant.
        q: momentum decay exponent, η_e = η₀·(2/(e+2))^q; ``None`` is constant.
        normalize: ``layer`` divides each parameter tensor of the averaged message by its own norm
            (released code); ``global`` divides the whole message by its norm (the equation of Sadiev
            et al. 2025, arXiv:2511.14501).
            Ignored by methods that are not normalised.
        schedule_unit: ``epoch`` (released code) or ``step`` (the paper's theory) as the schedule index.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    backprops_per_step: ClassVar[int] = 1
    normalized: ClassVar[bool] = False
    accumulates: ClassVar[bool] = True
    uses_eta: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            METHODS[cls.name] = cls

    def __init__(
        self,
        lr: float,
        eta: float | None = 1.0,
        p: float | None = None,
        q: float | None = None,
        normalize: str = "layer",
        schedule_unit: str = "epoch",
    ):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"method.normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.lr = StepsizeSchedule(lr, p, schedule_unit)
        self.eta = MomentumSchedule(1.0 if eta is None else eta, q, schedule_unit)
        self.normalize = normalize

    def request(self, eta: float) -> GradientRequest:
        """Return what the oracle must compute this round; η = 1 drops terms of weight zero."""
        return GradientRequest(RequestKind.GRADIENT)

    def initial_state(self, gradient: Tensor) -> dict[str, Tensor]:
        """Return the worker state before round 0, shaped like the stacked first gradients."""
        return {}

    def first_round(self, state: dict[str, Tensor], answer: OracleAnswer, eta: float, compress: Compress) -> Compressed:
        """Run round 0 (x^{−1} = x⁰). By default it is an ordinary round."""
        return self.step(state, answer, eta, compress)

    @abstractmethod
    def step(self, state: dict[str, Tensor], answer: OracleAnswer, eta: float, compress: Compress) -> Compressed:
        """Update ``state`` in place from the oracle's reply and return the compressed messages."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(lr={self.lr.initial}, eta={self.eta.initial}, p={self.lr.power}, "
            f"q={self.eta.power}, normalize={self.normalize!r}, schedule_unit={self.lr.unit!r})"
        )


def uncompressed(message: Tensor) -> Compressed:
    """Wrap a full-precision message: 32 bits for each of the d entries of every worker's row."""
    bits = torch.full((message.shape[0],), 32.0 * message.shape[-1], dtype=torch.float64, device=message.device)
    return Compressed(message, bits)


class Master:
    """The master: averages the workers' messages into its estimate g and returns the step direction.

    ``accumulate=True`` keeps g ← g + mean(messages) (EF21 family); otherwise g = mean(messages).
    ``normalize`` is ``None`` (plain step), ``'layer'`` or ``'global'``; a zero direction, or a
    zero parameter tensor under ``'layer'``, gives a zero step, never NaN.
    """

    def __init__(self, layout: Layout, accumulate: bool, normalize: str | None):
        if normalize is not None and normalize not in NORMALIZATIONS:
            raise ValueError(f"method.normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.layout = layout
        self.accumulate = accumulate
        self.normalize = normalize
        self.estimate: Tensor | None = None
        self._segment_ids: Tensor | None = None

    @classmethod
    def for_method(cls, method: Method, layout: Layout) -> "Master":
        return cls(layout, method.accumulates, method.normalize if method.normalized else None)

    def receive(self, messages: Tensor) -> Tensor:
        """Fold the ``[n, d]`` messages of one round into the estimate and return it."""
        average = messages.mean(dim=0)
        if self.accumulate and self.estimate is not None:
            self.estimate.add_(average)
        else:
            self.estimate = average
        return self.estimate

    def direction(self) -> Tensor:
        """Return D(g): the estimate itself, or its layer-wise or global normalisation."""
        g = self.estimate
        if self.normalize is None:
            return g
        if self.normalize == "global":
            norm = torch.linalg.vector_norm(g)
            return g / norm if norm > 0 else torch.zeros_like(g)

        if self._segment_ids is None or self._segment_ids.device != g.device:
            self._segment_ids = self.layout.segment_ids(g.device)
        squares = torch.zeros(len(self.layout), dtype=g.dtype, device=g.device)
        squares.index_add_(0, self._segment_ids, g * g)
        norms = squares.sqrt()
        scale = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
        return g * scale[self._segment_ids]

    def state_dict(self) -> dict[str, Tensor | None]:
        return {"estimate": self.estimate}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        self.estimate = state["estimate"]
