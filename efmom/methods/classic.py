"""Baselines without momentum: SGD, EF (error feedback, 2014), EF21 and EControl.

Update rules for worker i at iteration t (C is the compressor, η the method's weight):

- ``sgd``: sends ∇fᵢ(x^t) uncompressed; the master steps along the average.
- ``ef14``: pᵢ = ∇fᵢ(x^t) + η eᵢ, mᵢ = C(pᵢ), eᵢ ← pᵢ − mᵢ, eᵢ⁰ = 0; the master averages mᵢ.
  Deviation: the classic rule has η = 1; the released code weights the stored error by η.
- ``ef21``: gᵢ ← gᵢ + C(∇fᵢ(x^t) − gᵢ), gᵢ⁰ = ∇fᵢ(x⁰) sent uncompressed.
- ``econtrol``: Δᵢ = C(η eᵢ + ∇fᵢ(x^t) − hᵢ), eᵢ ← eᵢ + ∇fᵢ(x^t) − hᵢ − Δᵢ, hᵢ ← hᵢ + Δᵢ,
  hᵢ⁰ = ∇fᵢ(x⁰) sent uncompressed, eᵢ⁰ = 0; the master keeps the average of hᵢ.

State keys: ``estimate`` is the worker's copy of what the master holds for it (gᵢ or hᵢ),
``error`` the error not yet sent (eᵢ).
"""

from __future__ import annotations

import torch

from efmom.compressors import Compressed
from efmom.methods.base import Method, uncompressed


class SGD(Method):
    """Distributed SGD baseline: every worker sends its gradient uncompressed, no error feedback."""

    name = "sgd"
    label = "SGD"
    accumulates = False
    uses_eta = False

    def step(self, state, answer, eta, compress):
        return uncompressed(answer.gradient)


class EF14(Method):
    """EF (error feedback of Seide et al. 2014 / Stich et al. 2018) with the error weighted by η."""

    name = "ef14"
    label = "EF"
    accumulates = False

    def initial_state(self, gradient):
        return {"error": torch.zeros_like(gradient)}

    def step(self, state, answer, eta, compress):
        corrected = answer.gradient + eta * state["error"]
        compressed = compress(corrected)
        state["error"] = corrected - compressed.message
        return compressed


class EF21Family(Method):
    """Shared round 0 of the EF21 family: gᵢ⁰ = vᵢ⁰ = ∇fᵢ(x⁰), sent uncompressed."""

    def initial_state(self, gradient):
        return {"estimate": torch.zeros_like(gradient)}

    def first_round(self, state, answer, eta, compress) -> Compressed:
        for key in state:
            state[key] = answer.gradient.clone() if key != "error" else torch.zeros_like(answer.gradient)
        return uncompressed(answer.gradient.clone())

    def send_difference(self, state, target, compress) -> Compressed:
        """gᵢ ← gᵢ + C(target − gᵢ); the message is the compressed difference."""
        compressed = compress(target - state["estimate"])
        state["estimate"].add_(compressed.message)
        return compressed


class EF21(EF21Family):
    """EF21 (Richtárik et al. 2021): gᵢ ← gᵢ + C(∇fᵢ(x^t) − gᵢ)."""

    name = "ef21"
    label = "EF21"
    uses_eta = False

    def step(self, state, answer, eta, compress):
        return self.send_difference(state, answer.gradient, compress)


class EControl(EF21Family):
    """EControl (Gao et al. 2024): EF21 with an η-weighted error term inside the compressor."""

    name = "econtrol"
    label = "ECONTROL"

    def initial_state(self, gradient):
        return {"estimate": torch.zeros_like(gradient), "error": torch.zeros_like(gradient)}

    def step(self, state, answer, eta, compress):
        difference = answer.gradient - state["estimate"]
        compressed = compress(eta * state["error"] + difference)
        state["error"].add_(difference - compressed.message)
        state["estimate"].add_(compressed.message)
        return compressed
