"""The gradient oracle on real modules: BatchNorm, frozen and linear parameters, untouched models."""

import torch
from torch import nn

from efmom.layout import bind_flat_parameters
from efmom.methods import GradientRequest, RequestKind
from efmom.oracles import LoopOracle

ALL_KINDS = [
    GradientRequest(RequestKind.GRADIENT),
    GradientRequest(RequestKind.EXTRAPOLATED_GRADIENT, extrapolation=2.0),
    GradientRequest(RequestKind.GRADIENT_DIFFERENCE),
    GradientRequest(RequestKind.HESSIAN_VECTOR),
    GradientRequest(RequestKind.RANDOM_HESSIAN_VECTOR),
]


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).double()


def batches(n=2, b=5):
    generator = torch.Generator().manual_seed(3)
    return torch.randn(n, b, 1, 8, 8, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n, b), generator=generator)


def test_model_untouched_by_any_request():
    model = small_cnn()
    x, layout = bind_flat_parameters(model)
    x_prev = x + 0.01
    before = x.clone()
    oracle = LoopOracle(model, layout)
    inputs, targets = batches()
    for request in ALL_KINDS:
        oracle.evaluate(request, x, x_prev, inputs, targets, torch.Generator().manual_seed(0))
        assert torch.equal(x, before)
        assert torch.equal(torch.cat([p.reshape(-1) for p in model.parameters()]), before)


def test_running_statistics_updated_once_per_worker():
    inputs, targets = batches()
    means = []
    for request in ALL_KINDS[:1] + ALL_KINDS[2:]:
        model = small_cnn()
        x, layout = bind_flat_parameters(model)
        LoopOracle(model, layout).evaluate(request, x, x + 0.05, inputs, targets, torch.Generator().manual_seed(0))
        means.append(model[1].running_mean.clone())
        assert int(model[1].num_batches_tracked) == 2
    for mean in means[1:]:
        assert torch.equal(mean, means[0])


def test_gradient_matches_autograd():
    model = small_cnn()
    x, layout = bind_flat_parameters(model)
    inputs, targets = batches()
    answer = LoopOracle(model, layout).evaluate(ALL_KINDS[0], x, x, inputs, targets)
    reference = small_cnn()
    loss = nn.functional.cross_entropy(reference(inputs[1]), targets[1])
    loss.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(answer.gradient[1], expected, rtol=0, atol=1e-12)
    assert answer.loss[1].item() == loss.item()


def test_hessian_vector_matches_finite_difference():
    model = small_cnn()
    x, layout = bind_flat_parameters(model)
    oracle = LoopOracle(model, layout)
    inputs, targets = batches(n=1)
    direction = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    _, product, _ = oracle.hessian_vector(x, direction, inputs[0], targets[0], track_statistics=False)
    h = 1e-6
    plus, _ = oracle.gradient(x + h * direction, inputs[0], targets[0], track_statistics=False)
    minus, _ = oracle.gradient(x - h * direction, inputs[0], targets[0], track_statistics=False)
    torch.testing.assert_close(product, (plus - minus) / (2 * h), rtol=1e-5, atol=1e-7)


class LinearLoss(nn.Module):
    """Loss linear in its parameters, so its Hessian is zero; ``frozen`` takes no gradient."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, dtype=torch.float64))
        self.frozen = nn.Parameter(torch.ones(3, dtype=torch.float64), requires_grad=False)

    def forward(self, inputs):
        return (inputs @ (self.weight + self.frozen)).mean()


def test_linear_model_hessian_vector_is_zero():
    model = LinearLoss()
    x, layout = bind_flat_parameters(model)
    assert layout.names == ("weight",)
    oracle = LoopOracle(model, layout, loss_fn=lambda outputs, targets: outputs)
    inputs = torch.arange(6, dtype=torch.float64).reshape(1, 2, 3)
    answer = oracle.evaluate(GradientRequest(RequestKind.HESSIAN_VECTOR), x, x - 1.0, inputs, torch.zeros(1, 2))
    assert answer.correction.tolist() == [[0.0, 0.0, 0.0]]
    assert answer.gradient.tolist() == [[1.5, 2.5, 3.5]]


def test_extrapolated_gradient_at_z():
    model = LinearLoss()
    x, layout = bind_flat_parameters(model)
    # A quadratic in the weight, so the gradient reveals the point: ∇ ½‖w‖² = w.
    oracle = LoopOracle(model, layout, loss_fn=lambda outputs, targets: outputs)
    oracle._loss = lambda point, inputs, targets, track: 0.5 * (point * point).sum()
    x_prev = x - torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    answer = oracle.evaluate(GradientRequest(RequestKind.EXTRAPOLATED_GRADIENT, 0.5), x, x_prev, torch.zeros(1, 1, 3), torch.zeros(1, 1))
    assert answer.gradient.tolist() == [[1.5, 1.0, 2.0]]
