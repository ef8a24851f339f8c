"""Unbiased compressors, E[C(x)] = x: Rand-K, natural compression, random dithering, gradient sparsification.

All of them draw their randomness from the ``torch.Generator`` they are given (the global RNG when it
is None). The generator must live on the same device as the tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from efmom.compressors.base import Compressor, Sparsifier, check_ratio, index_bits

#: Bits of natural compression's code for one entry: a sign bit and the 8-bit exponent of a float32.
NATURAL_BITS = 9


def uniform_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Draw U[0, 1) noise of the shape, dtype and device of ``x``."""
    return torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def round_between(low: Tensor, high: Tensor, value: Tensor, generator: torch.Generator | None) -> Tensor:
    """Round ``value`` to ``high`` with probability (value − low)/(high − low), else to ``low``, so E = value.

    Entries with ``high == low`` stay at ``low``.
    """
    width = high - low
    up_probability = torch.where(width > 0, (value - low) / torch.where(width > 0, width, 1), 0)
    rounds_up = uniform_like(value, generator) < up_probability
    return torch.where(rounds_up, high, low)


def power_of_two_floor(x: Tensor) -> Tensor:
    """Return 2^⌊log₂ x⌋ for positive entries, computed exactly from the float's exponent."""
    _, exponent = torch.frexp(x)  # x = mantissa · 2^exponent with mantissa in [0.5, 1)
    return torch.ldexp(torch.ones_like(x), exponent - 1)


class RandK(Sparsifier):
    """Keep k = max(1, ⌊ratio·m⌋) uniformly random entries of each block of m entries, scaled by m/k.

    Every entry is kept with probability k/m, so the scaling makes it unbiased, with variance
    E‖C(x) − x‖² = (m/k − 1)‖x‖². Each row draws its own entries. Bits per block: k·32, because
    sender and receiver share the generator's seed and so the indices cost nothing.
    """

    name = "randk"

    def __init__(self, ratio: float = 0.1, scope: str = "layer"):
        super().__init__(scope)
        self.ratio = check_ratio("compressor.ratio", ratio)

    def kept(self, size: int) -> int:
        """Return the number of entries kept in a block of ``size`` entries."""
        return min(size, max(1, math.floor(self.ratio * size)))

    def position_bits(self, size):
        return 0

    def sparsify_block(self, x, generator):
        size = x.shape[-1]
        k = self.kept(size)
        if k == size:
            return x.clone(), torch.ones_like(x, dtype=torch.bool)

        # The k largest of m i.i.d. uniforms form a uniformly random k-subset, independently per row.
        indices = uniform_like(x, generator).topk(k, dim=-1, sorted=False).indices
        values = x.gather(-1, indices) * (size / k)
        message = torch.zeros_like(x).scatter_(-1, indices, values)
        sent = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, indices, True)
        return message, sent


class Natural(Compressor):
    """Natural compression (Horváth et al., 2019): round each entry randomly to a neighbouring power of two.

    An entry with 2^e ≤ |x| < 2^(e+1) becomes sign(x)·2^(e+1) with probability |x|/2^e − 1 and
    sign(x)·2^e otherwise, so E[C(x)] = x and E‖C(x) − x‖² ≤ ‖x‖²/8. Zero stays zero. Bits per
    block of m entries: 9·m (a sign bit and an 8-bit exponent per entry).
    """

    name = "natural"

    def compress_block(self, x, generator):
        magnitude = x.abs()
        low = power_of_two_floor(magnitude)
        rounded = round_between(low, 2 * low, magnitude, generator)
        message = torch.where(magnitude > 0, torch.sign(x) * rounded, torch.zeros_like(x))
        bits = torch.full((x.shape[0],), float(NATURAL_BITS * x.shape[-1]), dtype=torch.float64, device=x.device)
        return message, bits


class Dithering(Compressor):
    """Random dithering with s levels in the p-norm (QSGD for p = 2); optionally natural dithering.

    Each row of a block is sent as ‖x‖_p and, per entry, sign(x_j) and a level ℓ_j with
    C(x)_j = ‖x‖_p · sign(x_j) · ℓ_j. Standard dithering uses the levels 0, 1/s, ..., 1; natural
    dithering (Horváth et al., 2019) uses 0, 1/2^(s−1), ..., 1/2, 1. The level of t = |x_j|/‖x‖_p is
    drawn from the two levels around t so that E[ℓ_j] = t, which makes C unbiased.

    Bits per block of m entries: 32 + m·(1 + ⌈log₂(s + 1)⌉), a float32 norm plus a sign bit and a
    fixed-width level code per entry (both variants have s + 1 levels). No entropy coding is counted.
    """

    name = "dithering"

    def __init__(self, levels: int = 4, norm: float | str = 2, natural: bool = False, scope: str = "layer"):
        super().__init__(scope)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"compressor.levels must be an integer >= 1, got {levels!r}")
        if not isinstance(natural, bool):
            raise ValueError(f"compressor.natural must be true or false, got {natural!r}")
        self.levels = levels
        self.norm = self._check_norm(norm)
        self.natural = natural

    @staticmethod
    def _check_norm(norm: float | str) -> float:
        # YAML configs spell infinity as `.inf` (a float) or `inf` (a string), so both are accepted.
        if isinstance(norm, str) and norm.strip().lower() in ("inf", "infinity"):
            return math.inf
        if isinstance(norm, bool) or not isinstance(norm, (int, float)) or math.isnan(norm) or norm < 1:
            raise ValueError(f"compressor.norm must be a number >= 1 or inf, got {norm!r}")
        return float(norm)

    def block_bits(self, size: int) -> int:
        """Return the bits of one row of a block of ``size`` entries."""
        return self.value_bits + size * (1 + index_bits(self.levels + 1))

    def compress_block(self, x, generator):
        norm = torch.linalg.vector_norm(x, ord=self.norm, dim=-1, keepdim=True)
        safe_norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        # Since |x_j| ≤ ‖x‖_p for p ≥ 1, the clamp only removes rounding error of the norm.
        ratio = (x.abs() / safe_norm).clamp(max=1.0)

        if self.natural:
            level = self._natural_level(ratio, generator)
        else:
            scaled = ratio * self.levels
            low = scaled.floor()
            level = round_between(low, low + 1, scaled, generator) / self.levels

        message = torch.sign(x) * norm * level
        bits = torch.full((x.shape[0],), float(self.block_bits(x.shape[-1])), dtype=torch.float64, device=x.device)
        return message, bits

    def _natural_level(self, ratio: Tensor, generator: torch.Generator | None) -> Tensor:
        """Round each ratio in [0, 1] randomly to a level among 0, 2^(1−s), ..., 1/2, 1, unbiased."""
        smallest = 2.0 ** (1 - self.levels)
        below_smallest = ratio < smallest
        power = power_of_two_floor(ratio)
        low = torch.where(below_smallest, torch.zeros_like(ratio), power)
        high = torch.where(below_smallest, torch.full_like(ratio, smallest), 2 * power)
        return round_between(low, high, ratio, generator)


class GradSpars(Sparsifier):
    """Gradient sparsification of Wangni et al. (2018): keep entry j with probability p_j, scaled by 1/p_j.

    The probabilities are p_j = min(1, λ|x_j|) with λ chosen so that Σ_j p_j = ratio·m, the
    expected number of kept entries. Greedy rebalancing reaches this λ by starting from
    p_j = min(1, ratio·m·|x_j|/‖x‖₁) and rescaling the probabilities below 1 until the sum is back
    at ratio·m. This class computes the fixed point of that rebalancing exactly from the sorted
    magnitudes, in O(m log m), instead of iterating. Zero entries are never sent. A row with at
    most ratio·m non-zeros sends all of them unscaled.

    Bits per block of m entries: s·(32 + ⌈log₂ m⌉) for the s entries a row actually sends, so the
    bits differ between rows and draws.
    """

    name = "gradspars"

    def __init__(self, ratio: float = 0.1, scope: str = "layer"):
        super().__init__(scope)
        self.ratio = check_ratio("compressor.ratio", ratio)

    def keep_probabilities(self, x: Tensor) -> Tensor:
        """Return p = min(1, λ|x|) per row with Σ p = ratio·m (fewer when a row has fewer non-zeros)."""
        size = x.shape[-1]
        target = self.ratio * size
        magnitude = x.abs().to(torch.promote_types(x.dtype, torch.float32))

        # With the j largest entries saturated at p = 1, λ_j = (target − j) / (sum of the rest).
        # The smallest j whose (j+1)-th largest entry stays at or below 1 under λ_j is the fixed
        # point. It always exists because j = m − 1 satisfies the test whenever target ≤ m.
        descending = magnitude.sort(dim=-1, descending=True).values
        rest = descending.flip(-1).cumsum(-1).flip(-1)  # rest[:, j] = sum of descending[:, j:]
        saturated = torch.arange(size, device=x.device, dtype=magnitude.dtype)
        fits = (target - saturated) * descending <= rest
        first_fit = fits.to(torch.uint8).argmax(dim=-1, keepdim=True)

        rest_at_fit = rest.gather(-1, first_fit)
        remaining = target - first_fit.to(magnitude.dtype)
        scale = remaining / torch.where(rest_at_fit > 0, rest_at_fit, 1)
        probability = (scale * magnitude).clamp(max=1.0)

        # When everything past the saturated entries is zero, every non-zero entry is sent for sure.
        all_nonzeros_fit = (rest_at_fit == 0).expand_as(magnitude)
        return torch.where(all_nonzeros_fit, (magnitude > 0).to(magnitude.dtype), probability)

    def sparsify_block(self, x, generator):
        probability = self.keep_probabilities(x)
        sent = uniform_like(probability, generator) < probability
        scaled = x / torch.where(sent, probability, 1).to(x.dtype)
        message = torch.where(sent, scaled, torch.zeros_like(x))
        return message, sent
