"""The batched oracle against the reference loop: same iterates in float64, same BatchNorm statistics, flat state."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from efmom.compressors import TopK
from efmom.conformance import run_trajectory
from efmom.layout import bind_flat_parameters
from efmom.methods import METHODS, build_method
from efmom.oracles import ORACLES, build_oracle
from efmom.oracles_batched import BatchedOracle
from efmom.simulation import Simulation

ROUNDS = 6


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one CPU thread: OpenMP threads on a busy two-core machine are slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cnn_with_batch_norm() -> nn.Module:
    """Two convolutions with BatchNorm; the second keeps a cumulative average (``momentum=None``).

    The convolutions have no bias: BatchNorm cancels it, so its gradient is rounding noise, which
    the layer-wise normalised step would blow up to a full step and the comparison would be void.
    """
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4, momentum=None), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    ).double()


def run_cnn(method_name: str, oracle: str):
    """Run ROUNDS rounds on the CNN; return the iterates, the losses, the buffers and the worker state."""
    model = small_cnn_with_batch_norm()
    x, layout = bind_flat_parameters(model)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(ROUNDS, 3, 5, 1, 8, 8, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (ROUNDS, 3, 5), generator=generator)
    method = build_method(method_name, lr=0.05, eta=0.5)
    simulation = Simulation(method, TopK(0.3), build_oracle(oracle, model, layout), x, layout, torch.Generator().manual_seed(7))

    iterates, losses = [], []
    for t in range(ROUNDS):
        result = simulation.round(inputs[t], targets[t], lr=0.05, eta=0.5)
        iterates.append(x.clone())
        losses.append(result.loss)
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    return torch.stack(iterates), torch.stack(losses), buffers, simulation.worker_state


def test_batched_is_registered():
    assert ORACLES["batched"] is BatchedOracle


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_cnn_iterates_equal_loop(method_name):
    loop_iterates, loop_losses, loop_buffers, loop_state = run_cnn(method_name, "loop")
    batched_iterates, batched_losses, batched_buffers, batched_state = run_cnn(method_name, "batched")

    torch.testing.assert_close(batched_iterates, loop_iterates, rtol=0, atol=1e-12)
    torch.testing.assert_close(batched_losses, loop_losses, rtol=0, atol=1e-12)
    assert batched_state.keys() == loop_state.keys()
    for key in loop_state:
        torch.testing.assert_close(batched_state[key], loop_state[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method_name", ["ef21", "ef21_mvr_norm", "ef21_rhm_norm"])
def test_cnn_running_statistics_equal_loop(method_name):
    _, _, loop_buffers, _ = run_cnn(method_name, "loop")
    _, _, batched_buffers, _ = run_cnn(method_name, "batched")

    assert batched_buffers.keys() == loop_buffers.keys()
    for name, value in loop_buffers.items():
        torch.testing.assert_close(batched_buffers[name], value, rtol=0, atol=1e-12, msg=name)
    assert int(batched_buffers["1.num_batches_tracked"]) == ROUNDS * 3


def test_cnn_rejects_other_changed_buffer():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros((), dtype=torch.float64))

        def forward(self, inputs):
            self.calls.add_(1.0)
            return inputs

    model = nn.Sequential(Counter(), nn.Flatten(), nn.Linear(4, 2)).double()
    x, layout = bind_flat_parameters(model)
    oracle = BatchedOracle(model, layout)
    method = build_method("ef21", lr=0.1)
    with pytest.raises(ValueError, match="oracle=loop"):
        Simulation(method, TopK(0.5), oracle, x, layout).round(
            torch.randn(2, 3, 4, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.long), lr=0.1, eta=1.0
        )


def test_ragged_batches_fall_back_to_loop():
    model = small_cnn_with_batch_norm()
    x, layout = bind_flat_parameters(model)
    inputs = [torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.randn(4, 1, 8, 8, dtype=torch.float64)]
    targets = [torch.zeros(5, dtype=torch.long), torch.ones(4, dtype=torch.long)]
    request = build_method("ef21", lr=0.1).request(1.0)

    batched = BatchedOracle(model, layout).evaluate(request, x, x, inputs, targets)
    reference = build_oracle("loop", small_cnn_with_batch_norm(), layout).evaluate(request, x, x, inputs, targets)

    torch.testing.assert_close(batched.gradient, reference.gradient, rtol=0, atol=1e-12)


def test_golden_trajectories_equal_loop(shared_dir, monkeypatch):
    import efmom.conformance as conformance

    for path in sorted((shared_dir / "golden").glob("*.json")):
        spec = json.loads(path.read_text())
        monkeypatch.setattr(conformance, "LoopOracle", ORACLES["loop"])
        loop_iterates = run_trajectory(spec)
        monkeypatch.setattr(conformance, "LoopOracle", BatchedOracle)
        batched_iterates = run_trajectory(spec)
        expected = torch.tensor(spec["iterates"], dtype=batched_iterates.dtype)

        torch.testing.assert_close(batched_iterates, loop_iterates, rtol=0, atol=1e-12, msg=path.name)
        torch.testing.assert_close(batched_iterates, expected, rtol=0, atol=1e-9, msg=path.name)


def test_ef21_sgdm_state_flat_over_200_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, layout = bind_flat_parameters(model)
    n_workers = 4
    simulation = Simulation(
        build_method("ef21_sgdm", lr=0.01, eta=0.5), TopK(0.2), BatchedOracle(model, layout), x, layout
    )
    inputs = torch.randn(n_workers, 8, 6, dtype=torch.float64)
    targets = torch.randint(0, 3, (n_workers, 8))
    expected_bytes = 2 * n_workers * layout.numel * 8  # momentum and estimate, float64

    sizes = []
    for _ in range(200):
        simulation.round(inputs, targets, lr=0.01, eta=0.5)
        state = simulation.worker_state
        sizes.append(sum(value.numel() * value.element_size() for value in state.values()))

    assert sorted(simulation.worker_state) == ["estimate", "momentum"]
    assert sizes[0] == expected_bytes
    assert sizes[-1] == expected_bytes
    assert max(sizes) == expected_bytes
