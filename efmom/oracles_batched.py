"""A gradient oracle that evaluates every worker in one call, with ``torch.func.vmap`` over the worker dimension.

:class:`BatchedOracle` serves the same gradient requests as :class:`efmom.oracles.LoopOracle` and returns
the same numbers up to floating-point summation order: the workers' minibatches go through the
model together, and ``vmap`` keeps each worker's loss, gradient and Hessian-vector product
separate. The flat parameter point is shared by all workers (not copied per worker), except for
the random points x̂ᵢ of RHM, which differ between workers.

BatchNorm: under ``vmap`` each worker's minibatch is normalised with its own batch statistics, as
in the loop, so training iterates are the same. Running statistics are computed per worker on
copies of the buffers and then folded into the module's buffers in worker order. For a momentum
m that is r ← (1−m)ⁿ r + Σᵢ (1−m)^{n−1−i} m μᵢ over workers i = 0 … n−1, which is what the
loop's n successive updates give. With ``momentum=None`` (cumulative average) it is the
average over all batches seen so far. Only the forward pass whose loss is reported updates the
running statistics (x^t, or z for IGT), as in the loop. The results equal the loop's up to
rounding. Buffers of other modules must not change in the forward pass, and the oracle raises
``ValueError`` if one does.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from efmom.layout import Layout
from efmom.methods import GradientRequest, OracleAnswer, RequestKind
from efmom.oracles import ORACLES, LoopOracle, LossFunction


class BatchedOracle:
    """Oracle that computes all workers' gradients and Hessian-vector products in one vectorised call.

    Inputs must be one stacked ``[n, B, ...]`` tensor (or a sequence of equally shaped per-worker
    batches). Sequences of differently sized batches are handed to the reference loop.

    Args:
        model: the network; its trainable parameters must follow ``layout``.
        layout: where each trainable parameter sits in the flat vector.
        loss_fn: mean loss of a minibatch, ``loss_fn(outputs, targets)``.
    """

    def __init__(self, model: nn.Module, layout: Layout, loss_fn: LossFunction = F.cross_entropy):
        self.model = model
        self.layout = layout
        self.loss_fn = loss_fn
        self.reference = LoopOracle(model, layout, loss_fn)
        self.batch_norms = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, _BatchNorm) and module.track_running_stats and module.running_mean is not None
        }
        # Argument order: point, [vector,] per-worker buffers, shared buffers, inputs, targets.
        self._gradient = vmap(grad(self._loss, has_aux=True), in_dims=(None, 0, None, 0, 0))
        self._hessian_vector = vmap(self._gradient_and_product, in_dims=(None, None, 0, None, 0, 0))
        self._hessian_vector_at_points = vmap(self._gradient_and_product, in_dims=(0, None, 0, None, 0, 0))

    # --- one worker, written as if unbatched; vmap adds the worker dimension ----------------

    def _loss(self, point, buffers, shared, inputs, targets) -> tuple[Tensor, Tensor]:
        tensors: dict[str, Tensor] = dict(self.layout.unflatten(point))
        tensors.update(buffers)
        tensors.update(shared)
        loss = self.loss_fn(functional_call(self.model, tensors, (inputs,)), targets)
        return loss, loss.detach()

    def _gradient_and_product(self, point, vector, buffers, shared, inputs, targets) -> tuple[Tensor, Tensor, Tensor]:
        # Reverse over reverse: ∇(∇f·v) = ∇²f·v. Forward-over-reverse (jvp) would capture the
        # buffers that BatchNorm updates in place, which torch.func rejects.
        def directional_derivative(p, buffers, shared):
            gradient, loss = grad(self._loss, has_aux=True)(p, buffers, shared, inputs, targets)
            return torch.dot(gradient, vector), (gradient, loss)

        product, (gradient, loss) = grad(directional_derivative, has_aux=True)(point, buffers, shared)
        return gradient, product, loss

    # --- buffers ----------------------------------------------------------------------------

    def _worker_buffers(self, n: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Return copies of the buffers: floating ones once per worker (``[n, ...]``), integer ones shared.

        Integer buffers are BatchNorm's batch counters. BatchNorm reads them as Python numbers, which
        ``vmap`` does not allow on a per-worker tensor, and every worker's copy would hold the same value.
        """
        copies, shared = {}, {}
        for name, buffer in self.model.named_buffers():
            if buffer.is_floating_point():
                copies[name] = buffer.unsqueeze(0).repeat(n, *([1] * buffer.dim()))
            else:
                shared[name] = buffer.clone()
        return copies, shared

    @torch.no_grad()
    def _fold_statistics(self, worker_buffers: dict[str, Tensor], shared: dict[str, Tensor]) -> None:
        """Fold the workers' updated running statistics into the module in worker order, as the loop would."""
        owned = set()
        for prefix, module in self.batch_norms.items():
            names = {key: f"{prefix}.{key}" if prefix else key for key in ("running_mean", "running_var", "num_batches_tracked")}
            owned.update(names.values())
            n = worker_buffers[names["running_mean"]].shape[0]
            tracked = module.num_batches_tracked
            if module.momentum is None:
                seen = int(tracked)  # batches already averaged into the running statistics
                first = 1.0 / (seen + 1)
            for key in ("running_mean", "running_var"):
                old = getattr(module, key)
                updated = worker_buffers[names[key]]
                if module.momentum is None:
                    # Each worker's copy is old + (μᵢ − old)/(seen+1); the loop averages all μᵢ in.
                    batch_statistics = old + (updated - old) / first
                    old.mul_(seen / (seen + n)).add_(batch_statistics.sum(dim=0), alpha=1.0 / (seen + n))
                else:
                    keep = 1.0 - module.momentum
                    contributions = updated - keep * old  # m·μᵢ for each worker
                    weights = keep ** torch.arange(n - 1, -1, -1, dtype=old.dtype, device=old.device)
                    folded = torch.tensordot(weights, contributions, dims=1)
                    old.mul_(keep**n).add_(folded)
            tracked.add_(n)

        buffers = dict(self.model.named_buffers())
        for name, copies in {**worker_buffers, **shared}.items():
            if name not in owned and not torch.equal(copies, buffers[name].expand_as(copies)):
                raise ValueError(
                    f"buffer {name!r} changed in the forward pass; the batched oracle only combines BatchNorm "
                    "running statistics, so use oracle=loop for this model"
                )

    # --- the request ------------------------------------------------------------------------

    def evaluate(
        self,
        request: GradientRequest,
        x: Tensor,
        x_prev: Tensor,
        inputs: Tensor | Sequence[Tensor],
        targets: Tensor | Sequence[Tensor],
        generator: torch.Generator | None = None,
    ) -> OracleAnswer:
        """Compute what ``request`` needs for every worker: ``inputs`` is ``[n, B, ...]``, ``targets`` ``[n, B]``."""
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            if len({tuple(batch.shape) for batch in inputs}) > 1:
                return self.reference.evaluate(request, x, x_prev, inputs, targets, generator)
            inputs, targets = torch.stack(list(inputs)), torch.stack(list(targets))

        self.model.train()
        n = len(inputs)
        kind = request.kind
        x = x.detach()
        step = x - x_prev
        correction = None
        random_weights = None
        if kind is RequestKind.RANDOM_HESSIAN_VECTOR:
            # Drawn before any gradient, with the same call as the loop, so both use the same q.
            random_weights = torch.rand(n, generator=generator, dtype=x.dtype, device=x.device)

        # Only the pass whose loss is reported sees the buffers in ``tracked``; the others get copies
        # that are thrown away.
        tracked, shared = self._worker_buffers(n)
        if kind is RequestKind.GRADIENT:
            gradient, loss = self._gradient(x, tracked, shared, inputs, targets)
        elif kind is RequestKind.EXTRAPOLATED_GRADIENT:
            gradient, loss = self._gradient(x + request.extrapolation * step, tracked, shared, inputs, targets)
        elif kind is RequestKind.GRADIENT_DIFFERENCE:
            gradient, loss = self._gradient(x, tracked, shared, inputs, targets)
            previous, _ = self._gradient(x_prev.detach(), *self._worker_buffers(n), inputs, targets)
            correction = gradient - previous
        elif kind is RequestKind.HESSIAN_VECTOR:
            gradient, correction, loss = self._hessian_vector(x, step, tracked, shared, inputs, targets)
        elif kind is RequestKind.RANDOM_HESSIAN_VECTOR:
            gradient, loss = self._gradient(x, tracked, shared, inputs, targets)
            points = x_prev.detach() + random_weights[:, None] * step
            _, correction, _ = self._hessian_vector_at_points(points, step, *self._worker_buffers(n), inputs, targets)
        else:
            raise ValueError(f"unsupported gradient request {kind}")

        self._fold_statistics(tracked, shared)
        return OracleAnswer(gradient.detach(), loss.detach(), None if correction is None else correction.detach())


ORACLES["batched"] = BatchedOracle
