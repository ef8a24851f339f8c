"""Run reference-trajectory files through the real method code and report the largest deviation.

Usage: ``python -m efmom.conformance FILE...``. Each file describes a tiny deterministic problem
(an MLP with cross-entropy loss in float64, one fixed batch per worker) and the parameters after
every round as recorded from a reference implementation. The exit status is 0 only when every
file's iterates are reproduced within the tolerance (1e-9 by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import torch
from torch import nn

from efmom.compressors import build_compressor
from efmom.layout import bind_flat_parameters
from efmom.methods import build_method
from efmom.oracles import LoopOracle
from efmom.simulation import Simulation

log = logging.getLogger(__name__)

TOLERANCE = 1e-9
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
REQUIRED = ("method", "model", "n_workers", "lr", "compressor", "initial_parameters", "workers", "rounds", "iterates")


class ConformanceError(ValueError):
    """A reference-trajectory file that cannot be run, with the file and the reason."""


class MLP(nn.Module):
    """Linear layers ``fc1, fc2, ...`` with one activation between them, as the reference files name them."""

    def __init__(self, layers: list[int], activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.depth = len(layers) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(layers[i], layers[i + 1]))
        self.activation = ACTIVATIONS[activation]()

    def forward(self, inputs):
        out = inputs
        for i in range(self.depth):
            out = getattr(self, f"fc{i + 1}")(out)
            if i < self.depth - 1:
                out = self.activation(out)
        return out


def _schedule_exponent(spec, key: str):
    if spec is None or isinstance(spec, (int, float)):
        return spec
    raise ConformanceError(f"{key} must be null or an exponent, got {spec!r}")


def run_trajectory(spec: dict) -> torch.Tensor:
    """Run the problem described by a reference-trajectory dict; return the ``[rounds, d]`` iterates."""
    missing = [key for key in REQUIRED if key not in spec]
    if missing:
        raise ConformanceError(f"missing fields {missing}")
    dtype = DTYPES.get(spec.get("dtype", "float64"))
    if dtype is None:
        raise ConformanceError(f"unsupported dtype {spec['dtype']!r}; choose one of {sorted(DTYPES)}")
    if spec.get("loss", "cross_entropy_mean") != "cross_entropy_mean":
        raise ConformanceError(f"unsupported loss {spec['loss']!r}; only cross_entropy_mean is defined")

    model_spec = spec["model"]
    if model_spec.get("kind", "mlp") != "mlp":
        raise ConformanceError(f"unsupported model kind {model_spec['kind']!r}")
    torch.manual_seed(int(spec.get("seed", 0)))
    model = MLP(list(model_spec["layers"]), model_spec.get("activation", "tanh")).to(dtype)
    order = list(model_spec.get("parameter_order", [name for name, _ in model.named_parameters()]))
    named = dict(model.named_parameters())
    if sorted(order) != sorted(named):
        raise ConformanceError(f"parameter_order {order} does not match the model's parameters {sorted(named)}")
    with torch.no_grad():
        for name in order:
            value = torch.tensor(spec["initial_parameters"][name], dtype=dtype)
            if value.shape != named[name].shape:
                raise ConformanceError(f"initial_parameters[{name!r}] has shape {tuple(value.shape)}, expected {tuple(named[name].shape)}")
            named[name].copy_(value)
    if order != [name for name, _ in model.named_parameters()]:
        raise ConformanceError(f"parameter_order {order} differs from the module's order; only module order is supported")
    x, layout = bind_flat_parameters(model)

    workers = spec["workers"]
    if len(workers) != spec["n_workers"]:
        raise ConformanceError(f"n_workers is {spec['n_workers']} but {len(workers)} workers are listed")
    inputs = [torch.tensor(worker["x"], dtype=dtype) for worker in workers]
    targets = [torch.tensor(worker["y"], dtype=torch.long) for worker in workers]

    options = dict(spec["compressor"])
    compressor = build_compressor(options.pop("name"), **options)
    method = build_method(
        spec["method"],
        lr=spec["lr"],
        eta=spec.get("eta", 1.0),
        p=_schedule_exponent(spec.get("lr_schedule"), "lr_schedule"),
        q=_schedule_exponent(spec.get("eta_schedule"), "eta_schedule"),
        normalize=spec.get("normalize", "layer"),
    )
    generator = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    simulation = Simulation(method, compressor, LoopOracle(model, layout), x, layout, generator)

    iterates = []
    for t in range(int(spec["rounds"])):
        # One fixed batch per worker, so the epoch index of the schedules is the round index.
        simulation.round(inputs, targets, lr=method.lr(t, t), eta=method.eta(t, t))
        iterates.append(x.detach().clone())
    return torch.stack(iterates)


def max_deviation(path: Path) -> float:
    """Run one reference-trajectory file and return the largest absolute deviation from its iterates."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConformanceError(f"cannot read {path}: {error}") from error
    iterates = run_trajectory(spec)
    expected = torch.tensor(spec["iterates"], dtype=iterates.dtype)
    if expected.shape != iterates.shape:
        raise ConformanceError(f"iterates have shape {tuple(expected.shape)}, the run produced {tuple(iterates.shape)}")
    return float((iterates - expected).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efmom.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="reference-trajectory JSON files")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest allowed absolute deviation (default 1e-9)")
    args = parser.parse_args(argv)

    failures = 0
    for path in args.files:
        try:
            deviation = max_deviation(path)
        except (ConformanceError, ValueError, KeyError, TypeError) as error:
            print(f"ERROR {path}: {error}")
            failures += 1
            continue
        passed = deviation <= args.tolerance and not math.isnan(deviation)
        failures += not passed
        print(f"{'PASS' if passed else 'FAIL'} {path}: max deviation {deviation:.3e}")
    print(f"{len(args.files) - failures} passed, {failures} failed")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
