"""The round loop: the oracle evaluates every worker's gradient request, methods produce messages, the master steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import Tensor

from efmom.compressors import Compressor
from efmom.layout import Layout
from efmom.methods import GradientRequest, Master, Method, OracleAnswer, RequestKind


class Oracle(Protocol):
    def evaluate(
        self,
        request: GradientRequest,
        x: Tensor,
        x_prev: Tensor,
        inputs: Tensor | Sequence[Tensor],
        targets: Tensor | Sequence[Tensor],
        generator: torch.Generator | None = None,
    ) -> OracleAnswer: ...


@dataclass
class RoundResult:
    """Outputs of one round, for the cost ledger and the metrics."""

    loss: Tensor  # [n]: each worker's minibatch loss
    bits: Tensor  # [n]: bits each worker sent
    estimate_norm: float  # ‖g^t‖ of the master's estimate after this round


class Simulation:
    """n simulated workers and a master sharing the flat parameter vector ``x``.

    ``x`` is updated in place: x^{t+1} = x^t − γ_t·D(g^t), so a model whose parameters are views
    of ``x`` (see :func:`efmom.layout.bind_flat_parameters`) moves with it. Round 0 requests a plain
    gradient for every method (x^{−1} = x⁰) and calls its ``first_round``.
    """

    def __init__(
        self,
        method: Method,
        compressor: Compressor,
        oracle: Oracle,
        x: Tensor,
        layout: Layout,
        generator: torch.Generator | None = None,
    ):
        self.method = method
        self.compressor = compressor
        self.oracle = oracle
        self.x = x
        self.x_prev = x.detach().clone()
        self.layout = layout
        self.generator = generator
        self.master = Master.for_method(method, layout)
        self.worker_state: dict[str, Tensor] = {}
        self.t = 0

    def compress(self, vectors: Tensor):
        return self.compressor(vectors, self.layout, self.generator)

    def round(self, inputs: Tensor, targets: Tensor, lr: float, eta: float) -> RoundResult:
        """Run iteration t on one stacked minibatch per worker and move ``x`` to x^{t+1}."""
        with torch.no_grad():
            first = self.t == 0
            request = GradientRequest(RequestKind.GRADIENT) if first else self.method.request(eta)
        answer = self.oracle.evaluate(request, self.x, self.x_prev, inputs, targets, self.generator)

        with torch.no_grad():
            if first:
                self.worker_state = self.method.initial_state(answer.gradient)
                sent = self.method.first_round(self.worker_state, answer, eta, self.compress)
            else:
                sent = self.method.step(self.worker_state, answer, eta, self.compress)
            estimate = self.master.receive(sent.message)
            direction = self.master.direction()
            self.x_prev.copy_(self.x)
            self.x.sub_(direction, alpha=lr)
            self.t += 1
            return RoundResult(answer.loss, sent.bits, float(torch.linalg.vector_norm(estimate)))

    def state_dict(self) -> dict:
        return {
            "t": self.t,
            "x_prev": self.x_prev.clone(),
            "worker_state": {key: value.clone() for key, value in self.worker_state.items()},
            "master": self.master.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.t = state["t"]
        self.x_prev.copy_(state["x_prev"])
        self.worker_state = {key: value.to(self.x.device) for key, value in state["worker_state"].items()}
        estimate = state["master"]["estimate"]
        self.master.load_state_dict({"estimate": None if estimate is None else estimate.to(self.x.device)})
