"""EF21 with momentum: Polyak (SGDM), implicit gradient transport (IGT), STORM/MVR and Hessian correction.

Every method here keeps a momentum vᵢ and the EF21 estimate gᵢ, with vᵢ⁰ = gᵢ⁰ = ∇fᵢ(x⁰) sent
uncompressed, and sends C(vᵢ − gᵢ) with gᵢ ← gᵢ + C(vᵢ − gᵢ). They differ in the momentum update
at iteration t ≥ 1 (x^{t−1} is the previous iterate; x^{−1} = x⁰):

- ``ef21_sgdm``: vᵢ ← (1−η)vᵢ + η∇fᵢ(x^t)
- ``ef21_igt_norm``: vᵢ ← (1−η)vᵢ + η∇fᵢ(z), z = x^t + ((1−η)/η)(x^t − x^{t−1})
- ``ef21_mvr_norm``: vᵢ ← (1−η)(vᵢ + ∇fᵢ(x^t;ξ) − ∇fᵢ(x^{t−1};ξ)) + η∇fᵢ(x^t;ξ), one minibatch ξ
- ``ef21_hm_norm``: vᵢ ← (1−η)(vᵢ + ∇²fᵢ(x^t;ξ)(x^t − x^{t−1})) + η∇fᵢ(x^t;ξ)
- ``ef21_rhm_norm``: as HM with the Hessian-vector product at x̂ = q x^t + (1−q) x^{t−1}, q ~ U[0, 1]

The ``*_norm`` methods take the normalised master step x^{t+1} = x^t − γ g/‖g‖. With η = 1 each
rule reduces to EF21 on ∇fᵢ(x^t), and the request drops the work of weight zero.
"""

from __future__ import annotations

import torch

from efmom.methods.base import GradientRequest, RequestKind
from efmom.methods.classic import EF21Family


class EF21SGDM(EF21Family):
    """EF21-SGDM (Fatkhullin et al. 2023): Polyak momentum before the EF21 difference."""

    name = "ef21_sgdm"
    label = "EF21-SGDM"

    def initial_state(self, gradient):
        return {"estimate": torch.zeros_like(gradient), "momentum": torch.zeros_like(gradient)}

    def update_momentum(self, state, answer, eta) -> None:
        """vᵢ ← (1−η)(vᵢ + correction) + η·gradient, the correction being zero unless requested."""
        momentum = state["momentum"]
        if answer.correction is not None:
            momentum.add_(answer.correction)
        momentum.mul_(1.0 - eta).add_(answer.gradient, alpha=eta)

    def step(self, state, answer, eta, compress):
        self.update_momentum(state, answer, eta)
        return self.send_difference(state, state["momentum"], compress)


class EF21SGDMNorm(EF21SGDM):
    """‖EF21-SGDM‖: EF21-SGDM with the normalised master step."""

    name = "ef21_sgdm_norm"
    label = "‖EF21-SGDM‖"
    normalized = True


class EF21IGTNorm(EF21SGDM):
    """‖EF21-IGT‖: momentum on the gradient at the extrapolated point z (implicit gradient transport).

    The loss reported for the round is the loss at z, as in the released code.
    """

    name = "ef21_igt_norm"
    label = "‖EF21-IGT‖"
    normalized = True

    def request(self, eta):
        if eta == 1.0:
            return GradientRequest(RequestKind.GRADIENT)
        return GradientRequest(RequestKind.EXTRAPOLATED_GRADIENT, extrapolation=(1.0 - eta) / eta)


class EF21MVRNorm(EF21SGDM):
    """‖EF21-MVR‖ (STORM): momentum corrected by a gradient difference on the same minibatch."""

    name = "ef21_mvr_norm"
    label = "‖EF21-MVR‖"
    normalized = True
    backprops_per_step = 2
    correction = RequestKind.GRADIENT_DIFFERENCE

    def request(self, eta):
        if eta == 1.0:
            return GradientRequest(RequestKind.GRADIENT)
        return GradientRequest(self.correction)


class EF21HMNorm(EF21MVRNorm):
    """‖EF21-HM‖: momentum corrected by a Hessian-vector product at x^t along x^t − x^{t−1}."""

    name = "ef21_hm_norm"
    label = "‖EF21-HM‖"
    correction = RequestKind.HESSIAN_VECTOR


class EF21RHMNorm(EF21MVRNorm):
    """‖EF21-RHM‖: as ‖EF21-HM‖, with the product at a random point between x^{t−1} and x^t.

    Each worker draws its own q ~ U[0, 1] every round from the run's generator.
    """

    name = "ef21_rhm_norm"
    label = "‖EF21-RHM‖"
    backprops_per_step = 3
    correction = RequestKind.RANDOM_HESSIAN_VECTOR
