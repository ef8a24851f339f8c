"""Gradient oracles: evaluate a method's gradient request on any ``torch.nn.Module``.

The oracle never moves the model: it evaluates ``torch.func.functional_call`` on parameter views
of a flat vector (x^t, the extrapolated point z, x^{t−1} or x̂), so the module's own parameters
are untouched and nothing needs restoring afterwards. Gradients and Hessian-vector products are
taken with respect to that flat vector. Frozen parameters are left out of the layout, and
parameters the loss does not use get zero entries. A Hessian-vector product through a function
that is linear in some parameters is zero there, not an error.

BatchNorm in training mode normalises each worker's minibatch with that minibatch's own
statistics. Running statistics (used only for evaluation) are updated once per worker and
round, by the forward pass at the point whose loss is reported: x^t, or z for IGT. The extra
evaluations of MVR (at x^{t−1}) and RHM (at x̂) run on copies of the buffers that are thrown
away. So every method updates the running statistics exactly as plain SGD would, whatever its
backprop cost, and evaluation results stay comparable between methods. Workers update the
shared running statistics one after another, in worker order.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from efmom.layout import Layout
from efmom.methods import GradientRequest, OracleAnswer, RequestKind

LossFunction = Callable[[Tensor, Tensor], Tensor]


class LoopOracle:
    """Reference oracle: evaluates the workers one after another with plain autograd.

    Args:
        model: the network; its trainable parameters must follow ``layout``.
        layout: where each trainable parameter sits in the flat vector.
        loss_fn: mean loss of a minibatch, ``loss_fn(outputs, targets)``.
    """

    def __init__(self, model: nn.Module, layout: Layout, loss_fn: LossFunction = F.cross_entropy):
        self.model = model
        self.layout = layout
        self.loss_fn = loss_fn

    def _loss(self, point: Tensor, inputs: Tensor, targets: Tensor, track_statistics: bool) -> Tensor:
        tensors: dict[str, Tensor] = dict(self.layout.unflatten(point))
        if not track_statistics:
            tensors.update({name: buffer.clone() for name, buffer in self.model.named_buffers()})
        outputs = functional_call(self.model, tensors, (inputs,))
        return self.loss_fn(outputs, targets)

    def gradient(self, point: Tensor, inputs: Tensor, targets: Tensor, track_statistics: bool = True) -> tuple[Tensor, Tensor]:
        """Return ∇f(point; batch) as a flat vector, and the loss."""
        point = point.detach().requires_grad_(True)
        loss = self._loss(point, inputs, targets, track_statistics)
        (gradient,) = torch.autograd.grad(loss, point, allow_unused=True)
        if gradient is None:
            gradient = torch.zeros_like(point)
        return gradient.detach(), loss.detach()

    def hessian_vector(
        self, point: Tensor, vector: Tensor, inputs: Tensor, targets: Tensor, track_statistics: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return ∇f(point), ∇²f(point)·vector (by double backward, no Hessian formed) and the loss."""
        point = point.detach().requires_grad_(True)
        loss = self._loss(point, inputs, targets, track_statistics)
        (gradient,) = torch.autograd.grad(loss, point, create_graph=True, allow_unused=True)
        if gradient is None:
            zeros = torch.zeros_like(point)
            return zeros, zeros.clone(), loss.detach()
        product = None
        if gradient.requires_grad:
            (product,) = torch.autograd.grad(gradient, point, grad_outputs=vector, allow_unused=True)
        if product is None:
            product = torch.zeros_like(point)
        return gradient.detach(), product.detach(), loss.detach()

    def evaluate(
        self,
        request: GradientRequest,
        x: Tensor,
        x_prev: Tensor,
        inputs: Tensor,
        targets: Tensor,
        generator: torch.Generator | None = None,
    ) -> OracleAnswer:
        """Evaluate ``request`` for every worker: ``inputs`` is ``[n, B, ...]``, ``targets`` ``[n, B]``."""
        self.model.train()
        n = len(inputs)
        kind = request.kind
        step = x - x_prev
        gradients, losses, corrections = [], [], []
        random_weights = None
        if kind is RequestKind.RANDOM_HESSIAN_VECTOR:
            random_weights = torch.rand(n, generator=generator, dtype=x.dtype, device=x.device)

        for i in range(n):
            batch = (inputs[i], targets[i])
            if kind is RequestKind.GRADIENT:
                gradient, loss = self.gradient(x, *batch)
            elif kind is RequestKind.EXTRAPOLATED_GRADIENT:
                gradient, loss = self.gradient(x + request.extrapolation * step, *batch)
            elif kind is RequestKind.GRADIENT_DIFFERENCE:
                gradient, loss = self.gradient(x, *batch)
                previous, _ = self.gradient(x_prev, *batch, track_statistics=False)
                corrections.append(gradient - previous)
            elif kind is RequestKind.HESSIAN_VECTOR:
                gradient, product, loss = self.hessian_vector(x, step, *batch)
                corrections.append(product)
            elif kind is RequestKind.RANDOM_HESSIAN_VECTOR:
                gradient, loss = self.gradient(x, *batch)
                point = x_prev + random_weights[i] * step
                _, product, _ = self.hessian_vector(point, step, *batch, track_statistics=False)
                corrections.append(product)
            else:
                raise ValueError(f"unsupported gradient request {kind}")
            gradients.append(gradient)
            losses.append(loss)

        correction = torch.stack(corrections) if corrections else None
        return OracleAnswer(torch.stack(gradients), torch.stack(losses), correction)


#: Oracle classes by the name train.py's ``oracle`` option takes; ``batched`` is added by
#: :mod:`efmom.oracles_batched`, imported at the end of this module.
ORACLES: dict[str, type] = {"loop": LoopOracle}


def build_oracle(name: str, model: nn.Module, layout: Layout, loss_fn: LossFunction = F.cross_entropy):
    """Create the oracle registered under ``name`` for ``model``."""
    if name not in ORACLES:
        raise ValueError(f"oracle must be one of {sorted(ORACLES)}, got {name!r}")
    return ORACLES[name](model, layout, loss_fn)


# Registers "batched" in ORACLES; at the end because that module imports LoopOracle from here.
import efmom.oracles_batched  # noqa: E402, F401
