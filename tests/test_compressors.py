"""Tests of the compressors: contraction, unbiasedness, bit counts, composition and config validation."""

from __future__ import annotations

import math
import re

import pytest
import torch

from efmom.compressors import (
    COMPRESSORS,
    Compose,
    Dithering,
    GradSpars,
    Identity,
    Natural,
    RandK,
    TopK,
    build_compressor,
)
from efmom.layout import Layout

#: Independent draws per unbiasedness test; every draw is one row of a single stacked call.
DRAWS = 20_000

#: Allowed distance of the sample mean from x, in standard errors of that mean. A normal deviation
#: this large has probability about 2e-9 per entry, so a correct compressor passes. A bias fails once
#: it exceeds 6 standard errors, which is 7 % of |x_j| for Rand-K at ratio 0.25 (variance 3x_j²).
STANDARD_ERRORS = 6.0


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draws_of(compressor, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Return ``DRAWS`` independent compressions of the vector ``x`` as a [DRAWS, d] tensor."""
    stacked = x.expand(DRAWS, -1)  # a non-contiguous view whose rows all share the storage of x
    return compressor(stacked, None, seeded(seed)).message


def assert_unbiased(compressor, x: torch.Tensor) -> None:
    samples = draws_of(compressor, x.double()).double()
    mean = samples.mean(dim=0)
    standard_error = samples.std(dim=0) / math.sqrt(DRAWS)
    tolerance = STANDARD_ERRORS * standard_error + 1e-9 * x.abs().double()
    deviation = (mean - x.double()).abs()
    assert torch.all(deviation <= tolerance), f"max deviation {deviation.max():.3g} at {deviation.argmax()}"


def nonzero_vector(size: int, seed: int = 0) -> torch.Tensor:
    """Return a random vector whose entries span several orders of magnitude and are never zero."""
    generator = seeded(seed)
    magnitude = torch.exp(torch.randn(size, generator=generator, dtype=torch.float64) * 2)
    sign = torch.where(torch.rand(size, generator=generator) < 0.5, -1.0, 1.0).double()
    return sign * magnitude


# ---------------------------------------------------------------- Top-K


@pytest.mark.parametrize("size", [1, 10, 64])
def test_topk_keeps_exactly_k_largest(size):
    compressor = TopK(topk=0.25)
    k = max(1, math.floor(0.25 * size))
    x = torch.randn(3, size, generator=seeded(size))

    message = compressor(x).message

    assert torch.equal((message != 0).sum(dim=-1), torch.full((3,), k))
    for row, compressed in zip(x, message):
        largest = row.abs().topk(k).indices
        assert torch.equal(compressed[largest], row[largest])


@pytest.mark.parametrize("size", [1, 10, 64])
def test_topk_contractive_with_alpha_k_over_d(size):
    compressor = TopK(topk=0.25)
    alpha = max(1, math.floor(0.25 * size)) / size
    x = torch.randn(50, size, generator=seeded(size), dtype=torch.float64)

    error = (compressor(x).message - x).pow(2).sum(dim=-1)

    assert torch.all(error <= (1 - alpha) * x.pow(2).sum(dim=-1) + 1e-12)


def test_topk_all_zero_rows():
    compressed = TopK(topk=0.1)(torch.zeros(2, 64))

    assert torch.equal(compressed.message, torch.zeros(2, 64))
    assert compressed.bits.tolist() == [6 * (32 + 6)] * 2  # k = 6 entries still go on the wire


def test_topk_non_contiguous_input():
    base = torch.randn(64, 4, generator=seeded())
    transposed = base.T
    assert not transposed.is_contiguous()

    assert torch.equal(TopK(topk=0.1)(transposed).message, TopK(topk=0.1)(transposed.contiguous()).message)


def test_topk_rows_compressed_independently():
    x = torch.randn(4, 32, generator=seeded())
    x[2] *= 1000  # a row of large entries must not take the other rows' places

    stacked = TopK(topk=0.125)(x).message

    for row in range(4):
        assert torch.equal(stacked[row], TopK(topk=0.125)(x[row]).message)


def test_topk_k_equal_to_size_returns_input():
    x = torch.randn(3, 10, generator=seeded())
    compressed = TopK(topk=1.0)(x)

    assert torch.equal(compressed.message, x)
    assert compressed.message.data_ptr() != x.data_ptr()
    assert compressed.bits.tolist() == [10 * (32 + 4)] * 3


def test_topk_one_dimensional_input():
    x = torch.tensor([0.1, -3.0, 2.0, 0.5])
    compressed = TopK(topk=0.5)(x)

    assert torch.equal(compressed.message, torch.tensor([0.0, -3.0, 2.0, 0.0]))
    assert compressed.bits.item() == 2 * (32 + 2)


def test_topk_layer_scope_keeps_entries_in_every_tensor():
    layout = Layout.from_named_shapes([("bias", (3,)), ("scale", (1,)), ("weight", (4, 16))])
    x = torch.randn(2, layout.numel, generator=seeded())
    x[:, :4] *= 1e-3  # small tensors that global Top-K would skip

    layer = TopK(topk=0.1, scope="layer")(x, layout)
    global_ = TopK(topk=0.1, scope="global")(x, layout)

    kept_per_tensor = [(segment != 0).sum(dim=-1).tolist() for segment in layout.segments(layer.message)]
    assert kept_per_tensor == [[1, 1], [1, 1], [6, 6]]
    assert (global_.message[:, :4] != 0).sum().item() == 0
    assert (global_.message != 0).sum(dim=-1).tolist() == [6, 6]  # k = ⌊0.1 · 68⌋


def test_topk_bits_layer_and_global_scope():
    layout = Layout.from_named_shapes([("a", (3,)), ("b", (10,)), ("c", (64,))])
    x = torch.randn(2, 77, generator=seeded())

    # Layer scope: k = 1, 1, 6 with index widths 2, 4, 6 bits.
    assert TopK(topk=0.1, scope="layer")(x, layout).bits.tolist() == [34 + 36 + 6 * 38] * 2
    # Global scope: k = 7 of 77 entries, 7-bit indices.
    assert TopK(topk=0.1, scope="global")(x, layout).bits.tolist() == [7 * 39] * 2


def test_layout_size_mismatch_raises():
    with pytest.raises(ValueError, match="layout has 5 entries but the tensor has 6"):
        TopK()(torch.zeros(2, 6), Layout.single(5))


# ---------------------------------------------------------------- Rand-K


def test_randk_keeps_k_scaled_entries_per_row():
    x = nonzero_vector(40).expand(5, -1)

    message = RandK(ratio=0.1)(x, None, seeded()).message

    sent = message != 0
    assert sent.sum(dim=-1).tolist() == [4] * 5
    assert torch.allclose(message[sent], (x * 10)[sent])


def test_randk_rows_draw_different_entries():
    x = torch.ones(8, 100)

    sent = RandK(ratio=0.1)(x, None, seeded()).message != 0

    assert len({tuple(row.nonzero().squeeze(-1).tolist()) for row in sent}) == 8


def test_randk_seed_reproducible():
    x = torch.randn(3, 50, generator=seeded())

    first = RandK(ratio=0.2)(x, None, seeded(7)).message
    second = RandK(ratio=0.2)(x, None, seeded(7)).message
    other = RandK(ratio=0.2)(x, None, seeded(8)).message

    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_randk_global_rng_when_no_generator():
    torch.manual_seed(3)
    first = RandK(ratio=0.2)(torch.ones(2, 50)).message
    torch.manual_seed(3)
    second = RandK(ratio=0.2)(torch.ones(2, 50)).message

    assert torch.equal(first, second)


def test_randk_unbiased():
    assert_unbiased(RandK(ratio=0.25), nonzero_vector(12))


def test_randk_bits():
    assert RandK(ratio=0.1)(torch.randn(3, 100)).bits.tolist() == [10 * 32] * 3
    assert RandK(ratio=0.1)(torch.randn(3, 5)).bits.tolist() == [1 * 32] * 3  # k = max(1, ⌊0.5⌋)


# ---------------------------------------------------------------- natural compression


def test_natural_rounds_to_neighbouring_powers_of_two():
    x = torch.tensor([3.0, -0.3, 8.0, 0.0, -1.0, 1e-30])

    message = Natural()(x.expand(1000, -1), None, seeded()).message

    assert set(message[:, 0].tolist()) == {2.0, 4.0}
    assert set(message[:, 1].tolist()) == {-0.25, -0.5}
    assert set(message[:, 2].tolist()) == {8.0}
    assert set(message[:, 3].tolist()) == {0.0}
    assert set(message[:, 4].tolist()) == {-1.0}
    assert torch.all((message[:, 5] > 0) & (message[:, 5] <= 2e-30))


def test_natural_unbiased():
    assert_unbiased(Natural(), nonzero_vector(12))


def test_natural_bits():
    assert Natural()(torch.randn(2, 10)).bits.tolist() == [90, 90]


# ---------------------------------------------------------------- random dithering


@pytest.mark.parametrize("norm", [1, 2, math.inf])
def test_dithering_unbiased(norm):
    assert_unbiased(Dithering(levels=3, norm=norm), nonzero_vector(12))


@pytest.mark.parametrize("levels", [1, 3])
def test_natural_dithering_unbiased(levels):
    assert_unbiased(Dithering(levels=levels, natural=True), nonzero_vector(12))


def test_dithering_values_on_levels():
    x = nonzero_vector(20)
    norm = x.norm()

    message = Dithering(levels=4)(x.expand(200, -1), None, seeded()).message

    levels = (message.abs() / norm * 4).flatten()
    assert torch.allclose(levels, levels.round(), atol=1e-9)
    assert torch.all(torch.sign(message[message != 0]) == torch.sign(x.expand(200, -1)[message != 0]))


def test_natural_dithering_values_on_powers_of_two():
    x = nonzero_vector(20)
    norm = x.norm()
    allowed = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)  # s = 3

    message = Dithering(levels=3, natural=True)(x.expand(200, -1), None, seeded()).message

    levels = (message.abs() / norm).flatten()
    distance = (levels[:, None] - allowed[None, :]).abs().min(dim=-1).values
    assert torch.all(distance < 1e-12)


def test_dithering_zero_row_stays_zero():
    compressed = Dithering(levels=2)(torch.zeros(2, 8), None, seeded())

    assert torch.equal(compressed.message, torch.zeros(2, 8))
    assert not compressed.message.isnan().any()


def test_dithering_infinity_norm_from_config_string():
    assert Dithering(norm="inf").norm == math.inf


def test_dithering_bits():
    x = torch.randn(2, 10)

    # 32 for the norm, then per entry a sign bit and ⌈log₂(s + 1)⌉ level bits.
    assert Dithering(levels=4)(x).bits.tolist() == [32 + 10 * (1 + 3)] * 2
    assert Dithering(levels=3)(x).bits.tolist() == [32 + 10 * (1 + 2)] * 2
    assert Dithering(levels=1, natural=True)(x).bits.tolist() == [32 + 10 * (1 + 1)] * 2


# ---------------------------------------------------------------- gradient sparsification


def greedy_probabilities(x: torch.Tensor, ratio: float, rounds: int = 1000) -> torch.Tensor:
    """Compute keep probabilities of one vector by greedy rebalancing in float64, iterated to convergence."""
    magnitude = x.abs().double()
    target = ratio * len(x)
    probability = (target * magnitude / magnitude.sum()).clamp(max=1)
    for _ in range(rounds):
        active = probability < 1
        saturated = (~active).sum().item()
        scale = (target - saturated) / probability[active].sum()
        if scale <= 1 + 1e-15:
            break
        probability = torch.where(active, (scale * probability).clamp(max=1), probability)
    return probability


def test_gradspars_probabilities_match_greedy_rebalancing():
    x = nonzero_vector(50, seed=4).expand(2, -1).clone()
    x[1, :10] = 0.0

    probability = GradSpars(ratio=0.2).keep_probabilities(x)

    for row in range(2):
        assert torch.allclose(probability[row], greedy_probabilities(x[row], 0.2), atol=1e-12)
    assert torch.allclose(probability.sum(dim=-1), torch.full((2,), 10.0, dtype=torch.float64))
    assert torch.all(probability[1, :10] == 0)


def test_gradspars_few_nonzeros_sent_unscaled():
    x = torch.zeros(1, 20)
    x[0, [3, 11]] = torch.tensor([0.5, -2.0])

    compressed = GradSpars(ratio=0.5)(x, None, seeded())

    assert torch.equal(compressed.message, x)


def test_gradspars_unbiased():
    assert_unbiased(GradSpars(ratio=0.25), nonzero_vector(12))


def test_gradspars_expected_count_matches_ratio():
    messages = draws_of(GradSpars(ratio=0.1), nonzero_vector(200))

    mean_count = (messages != 0).sum(dim=-1).double().mean().item()
    # The count's variance is Σ p_j(1 − p_j) ≤ 20, so the standard error of its mean is at most 0.032.
    assert abs(mean_count - 20) < 0.2


def test_gradspars_bits_per_sent_entry():
    compressed = GradSpars(ratio=0.1)(nonzero_vector(100).expand(6, -1), None, seeded())

    sent = (compressed.message != 0).sum(dim=-1).double()
    assert torch.equal(compressed.bits, sent * (32 + 7))
    assert len(set(compressed.bits.tolist())) > 1  # the count is random


def test_gradspars_all_zero_row_sends_nothing():
    compressed = GradSpars(ratio=0.3)(torch.zeros(2, 16), None, seeded())

    assert torch.equal(compressed.message, torch.zeros(2, 16))
    assert compressed.bits.tolist() == [0, 0]


# ---------------------------------------------------------------- composition


def test_compose_builds_from_config():
    compressor = build_compressor("compose", inner={"name": "topk", "topk": 0.1}, outer={"name": "natural"})

    assert isinstance(compressor.inner, TopK)
    assert compressor.inner.topk == 0.1
    assert isinstance(compressor.outer, Natural)


def test_compose_topk_natural_message_and_bits():
    x = nonzero_vector(100).float().expand(3, -1)
    compressor = Compose(outer={"name": "natural"}, inner={"name": "topk", "topk": 0.1})

    compressed = compressor(x, None, seeded())

    top = TopK(topk=0.1)(x).message != 0
    assert torch.equal(compressed.message != 0, top)
    ratio = compressed.message[top] / x[top]
    assert torch.all((ratio >= 0.5) & (ratio <= 2.0))
    assert compressed.bits.tolist() == [10 * 7 + 10 * 9] * 3


def test_compose_topk_dithering_bits():
    x = torch.randn(2, 100, generator=seeded())
    compressor = Compose(outer=Dithering(levels=4), inner=TopK(topk=0.1))

    # Indices of the k = 10 kept entries, then dithering of those 10 values.
    assert compressor(x).bits.tolist() == [10 * 7 + 32 + 10 * (1 + 3)] * 2


def test_compose_dithering_norm_over_kept_values():
    x = torch.tensor([[4.0, 0.1, -3.0, 0.2]])
    compressor = Compose(outer=Dithering(levels=1), inner=TopK(topk=0.5))

    message = compressor(x, None, seeded()).message

    # One level in the 2-norm of (4, −3): every kept value becomes 0 or ±5.
    assert set(message[0, [0, 2]].abs().tolist()) <= {0.0, 5.0}
    assert message[0, [1, 3]].tolist() == [0.0, 0.0]


def test_compose_identity_parts_reduce_to_other_part():
    x = torch.randn(3, 64, generator=seeded())

    inner_only = Compose(outer=Identity(), inner=TopK(topk=0.1))(x)
    outer_only = Compose(outer=Natural(), inner=Identity())(x, None, seeded(5))

    assert torch.equal(inner_only.message, TopK(topk=0.1)(x).message)
    assert torch.equal(inner_only.bits, TopK(topk=0.1)(x).bits)
    assert torch.equal(outer_only.message, Natural()(x, None, seeded(5)).message)
    assert torch.equal(outer_only.bits, Natural()(x).bits)


def test_compose_randk_natural_unbiased():
    assert_unbiased(Compose(outer=Natural(), inner=RandK(ratio=0.25)), nonzero_vector(12))


def test_compose_gradspars_rows_with_different_counts():
    x = nonzero_vector(100).expand(8, -1)

    compressed = Compose(outer=Natural(), inner=GradSpars(ratio=0.1))(x, None, seeded())

    sent = (compressed.message != 0).sum(dim=-1).double()
    assert len(set(sent.tolist())) > 1
    assert torch.equal(compressed.bits, sent * (7 + 9))


def test_compose_layer_scope_from_inner():
    layout = Layout.from_named_shapes([("a", (3,)), ("b", (64,))])
    compressor = Compose(outer=Natural(), inner=TopK(topk=0.1, scope="layer"))

    compressed = compressor(torch.randn(2, 67, generator=seeded()), layout, seeded())

    assert compressor.scope == "layer"
    assert compressed.bits.tolist() == [(2 + 9) + 6 * (6 + 9)] * 2


# ---------------------------------------------------------------- validation and registry


def test_registry_contains_every_compressor():
    assert set(COMPRESSORS) >= {"identity", "topk", "randk", "natural", "dithering", "gradspars", "compose"}


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("topk", {"topk": 1.5}, "compressor.topk must be in (0, 1], got 1.5"),
        ("randk", {"ratio": 1.5}, "compressor.ratio must be in (0, 1], got 1.5"),
        ("randk", {"ratio": 0}, "compressor.ratio must be in (0, 1], got 0"),
        ("randk", {"ratio": "0.1"}, "compressor.ratio must be a number in (0, 1], got '0.1'"),
        ("gradspars", {"ratio": -0.2}, "compressor.ratio must be in (0, 1], got -0.2"),
        ("dithering", {"levels": 0}, "compressor.levels must be an integer >= 1, got 0"),
        ("dithering", {"levels": 2.5}, "compressor.levels must be an integer >= 1, got 2.5"),
        ("dithering", {"norm": 0.5}, "compressor.norm must be a number >= 1 or inf, got 0.5"),
        ("dithering", {"norm": "two"}, "compressor.norm must be a number >= 1 or inf, got 'two'"),
        ("dithering", {"natural": "yes"}, "compressor.natural must be true or false, got 'yes'"),
        ("natural", {"scope": "row"}, "compressor.scope must be one of ('layer', 'global'), got 'row'"),
        ("randk", {"topk": 0.1}, "compressor.topk is not an option of 'randk'"),
        ("compose", {"inner": {"name": "natural"}, "outer": {"name": "natural"}},
         "compressor.inner must be a sparsifier (topk, randk, gradspars or identity), got 'natural'"),
        ("compose", {"inner": {"topk": 0.1}, "outer": {"name": "natural"}},
         "compressor.inner must be a compressor or a mapping with a 'name' key, got {'topk': 0.1}"),
        ("compose", {"inner": {"name": "topk", "topk": 2}, "outer": {"name": "natural"}},
         "compressor.inner: compressor.topk must be in (0, 1], got 2"),
        ("compose", {"inner": {"name": "topk"}, "outer": {"name": "dithering", "levels": -1}},
         "compressor.outer: compressor.levels must be an integer >= 1, got -1"),
    ],
)
def test_bad_option_raises_naming_key_and_value(name, options, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        build_compressor(name, **options)


def test_unknown_compressor_name_raises():
    with pytest.raises(ValueError, match=re.escape("unknown compressor 'topq'")):
        build_compressor("topq")
