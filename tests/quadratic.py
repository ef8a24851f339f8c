"""Quadratic test problems fᵢ(x) = ½xᵀAᵢx − bᵢᵀx with exact gradients, as a module the oracle can run."""

import torch
from torch import nn

from efmom.layout import bind_flat_parameters
from efmom.oracles import LoopOracle


class Quadratic(nn.Module):
    """Quadratic with parameter x: ``forward(problem)`` returns ½xᵀAx − bᵀx for ``problem = [A | b]`` of shape [d, d+1]."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x = nn.Parameter(x0.clone())

    def forward(self, problem):
        a, b = problem[:, :-1], problem[:, -1]
        return 0.5 * self.x @ a @ self.x - b @ self.x


def identity_loss(outputs, targets):
    return outputs


def make_problem(n_workers=4, d=6, seed=0):
    """Return stacked [A | b] per worker (symmetric positive definite A) and x⁰, in float64."""
    generator = torch.Generator().manual_seed(seed)
    problems = []
    for _ in range(n_workers):
        m = torch.randn(d, d, generator=generator, dtype=torch.float64)
        a = m @ m.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
        b = torch.randn(d, generator=generator, dtype=torch.float64)
        problems.append(torch.cat([a, b[:, None]], dim=1))
    x0 = torch.randn(d, generator=generator, dtype=torch.float64)
    return torch.stack(problems), x0


def full_gradient(problems, x):
    """∇f(x) = mean over workers of Aᵢx − bᵢ."""
    return torch.stack([p[:, :-1] @ x - p[:, -1] for p in problems]).mean(0)


def worker_gradients(problems, x):
    return torch.stack([p[:, :-1] @ x - p[:, -1] for p in problems])


def quadratic_setup(x0):
    """Return (model, flat x, layout, oracle) for a quadratic problem starting at x0."""
    model = Quadratic(x0)
    x, layout = bind_flat_parameters(model)
    return model, x, layout, LoopOracle(model, layout, loss_fn=identity_loss)
