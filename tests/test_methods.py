"""Closed-form checks of the methods on quadratics, and their input validation."""

import pytest
import torch

from efmom.compressors import Identity, TopK
from efmom.methods import METHODS, Master, build_method
from efmom.layout import Layout
from efmom.simulation import Simulation

from quadratic import full_gradient, make_problem, quadratic_setup, worker_gradients

MOMENTUM_METHODS = ["ef21_sgdm", "ef21_sgdm_norm", "ef21_igt_norm", "ef21_mvr_norm", "ef21_hm_norm", "ef21_rhm_norm"]
TARGETS = torch.zeros(4, 1)


def run(method_name, compressor, rounds=15, lr=0.1, eta=1.0, seed=0, **options):
    problems, x0 = make_problem(seed=seed)
    model, x, layout, oracle = quadratic_setup(x0)
    method = build_method(method_name, lr=lr, eta=eta, **options)
    simulation = Simulation(method, compressor, oracle, x, layout, torch.Generator().manual_seed(1))
    iterates = []
    for _ in range(rounds):
        simulation.round(problems, TARGETS, lr, eta)
        iterates.append(x.clone())
    return torch.stack(iterates), simulation, problems


def test_ef21_identity_equals_gradient_descent():
    iterates, _, problems = run("ef21", Identity(), lr=0.2)
    _, x = make_problem()
    for t in range(len(iterates)):
        x = x - 0.2 * full_gradient(problems, x)
        torch.testing.assert_close(iterates[t], x, rtol=0, atol=1e-12)


def test_ef21_topk_first_round_uncompressed():
    iterates, simulation, problems = run("ef21", TopK(0.2), rounds=1, lr=0.2)
    _, x0 = make_problem()
    torch.testing.assert_close(iterates[0], x0 - 0.2 * full_gradient(problems, x0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MOMENTUM_METHODS)
def test_momentum_eta_one_equals_ef21(name):
    compressor = TopK(0.34)
    iterates, _, problems = run(name, compressor, eta=1.0, lr=0.05)

    # EF21 written out by hand, with the same master step as the method.
    _, x = make_problem()
    d = x.numel()
    layout = Layout.single(d)
    estimates = worker_gradients(problems, x)
    master = Master(layout, accumulate=True, normalize="layer" if METHODS[name].normalized else None)
    master.receive(estimates)
    for t in range(len(iterates)):
        x = x - 0.05 * master.direction()
        torch.testing.assert_close(iterates[t], x, rtol=0, atol=1e-12)
        message = compressor(worker_gradients(problems, x) - estimates, layout).message
        estimates = estimates + message
        master.receive(message)


def test_hessian_methods_agree_on_quadratic():
    runs = {name: run(name, TopK(0.34), eta=0.3, lr=0.05) for name in ["ef21_mvr_norm", "ef21_hm_norm", "ef21_rhm_norm"]}
    reference, _, _ = runs["ef21_mvr_norm"]
    for name, (iterates, simulation, problems) in runs.items():
        torch.testing.assert_close(iterates, reference, rtol=0, atol=1e-12)
        # With exact gradients the corrected momentum tracks the gradient at the last point evaluated.
        last_point = simulation.x_prev
        torch.testing.assert_close(simulation.worker_state["momentum"], worker_gradients(problems, last_point), rtol=0, atol=1e-10)


def test_sgdm_momentum_differs_from_gradient():
    # Control for the test above: plain Polyak momentum does not track the gradient exactly.
    _, simulation, problems = run("ef21_sgdm_norm", TopK(0.34), eta=0.3, lr=0.05)
    error = (simulation.worker_state["momentum"] - worker_gradients(problems, simulation.x_prev)).abs().max()
    assert error > 1e-3


def test_igt_extrapolates_with_eta():
    iterates_igt, _, _ = run("ef21_igt_norm", TopK(0.34), eta=0.5, lr=0.05)
    iterates_sgdm, _, _ = run("ef21_sgdm_norm", TopK(0.34), eta=0.5, lr=0.05)
    # Round 0 has x^{-1} = x⁰, so IGT's extrapolated point is x⁰ itself.
    torch.testing.assert_close(iterates_igt[0], iterates_sgdm[0], rtol=0, atol=1e-12)
    assert (iterates_igt[-1] - iterates_sgdm[-1]).abs().max() > 1e-6


def test_ef14_error_plus_message_is_input():
    problems, x0 = make_problem()
    model, x, layout, oracle = quadratic_setup(x0)
    method = build_method("ef14", lr=0.1, eta=1.0)
    simulation = Simulation(method, TopK(0.2), oracle, x, layout)
    simulation.round(problems, TARGETS, 0.1, 1.0)
    error_before = simulation.worker_state["error"].clone()
    point = x.clone()
    simulation.round(problems, TARGETS, 0.1, 1.0)
    sent = (worker_gradients(problems, point) + error_before) - simulation.worker_state["error"]
    torch.testing.assert_close(sent.mean(0), simulation.master.estimate, rtol=0, atol=1e-12)
    assert (simulation.worker_state["error"] != 0).any()


def test_master_zero_direction_is_zero():
    layout = Layout.from_named_shapes([("a", (3,)), ("b", (2,))])
    for normalize in ["layer", "global"]:
        master = Master(layout, accumulate=True, normalize=normalize)
        master.receive(torch.zeros(2, 5))
        direction = master.direction()
        assert torch.equal(direction, torch.zeros(5))


def test_master_layer_normalisation():
    layout = Layout.from_named_shapes([("a", (2,)), ("b", (3,))])
    master = Master(layout, accumulate=True, normalize="layer")
    master.receive(torch.tensor([[3.0, 4.0, 0.0, 0.0, 0.0]]))
    assert master.direction().tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0, 0.0])
    master = Master(layout, accumulate=False, normalize="global")
    master.receive(torch.tensor([[3.0, 0.0, 0.0, 4.0, 0.0]]))
    assert master.direction().tolist() == pytest.approx([0.6, 0.0, 0.0, 0.8, 0.0])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr": -0.1}, "method.lr must be a finite number > 0, got -0.1"),
        ({"lr": 0.0}, "method.lr must be a finite number > 0, got 0.0"),
        ({"lr": 0.1, "eta": 1.5}, "method.eta must be in (0, 1], got 1.5"),
        ({"lr": 0.1, "eta": 0.0}, "method.eta must be in (0, 1], got 0.0"),
        ({"lr": 0.1, "normalize": "row"}, "method.normalize must be one of ('layer', 'global'), got 'row'"),
        ({"lr": 0.1, "q": -1.0}, "method.q must be a number >= 0 or null (constant), got -1.0"),
        ({"lr": 0.1, "schedule_unit": "batch"}, "method.schedule_unit must be one of ('epoch', 'step'), got 'batch'"),
    ],
)
def test_bad_hyperparameters_raise(options, message):
    with pytest.raises(ValueError) as caught:
        build_method("ef21_igt_norm", **options)
    assert str(caught.value) == message


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown method 'ef99'"):
        build_method("ef99", lr=0.1)


def test_backprop_costs_match_table():
    costs = {name: cls.backprops_per_step for name, cls in METHODS.items()}
    assert costs == {
        "sgd": 1, "ef14": 1, "ef21": 1, "econtrol": 1, "ef21_sgdm": 1, "ef21_sgdm_norm": 1,
        "ef21_igt_norm": 1, "ef21_mvr_norm": 2, "ef21_hm_norm": 2, "ef21_rhm_norm": 3,
    }


@pytest.mark.parametrize(
    "name, kind",
    [("ef21_igt_norm", "EXTRAPOLATED_GRADIENT"), ("ef21_mvr_norm", "GRADIENT_DIFFERENCE"),
     ("ef21_hm_norm", "HESSIAN_VECTOR"), ("ef21_rhm_norm", "RANDOM_HESSIAN_VECTOR")],
)
def test_eta_one_skips_extra_work(name, kind):
    method = build_method(name, lr=0.1, eta=0.5)
    assert method.request(0.5).kind.name == kind
    assert method.request(1.0).kind.name == "GRADIENT"
    assert method.request(0.5).kind.backprops == METHODS[name].backprops_per_step
