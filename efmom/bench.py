"""Time one simulated worker step of every method against the cost of the gradients alone.

Usage: ``python -m efmom.bench [--config mlp resnet18] [--methods ef21 ...] [--threads 1]``.

For each configuration and method the script runs whole rounds of :class:`efmom.simulation.Simulation`
(oracle, method, Top-K compression, master step) on fixed random inputs and prints, per worker
step (one round divided by the number of workers):

- ``efmom``: the median round time with the chosen oracle (``batched`` by default);
- ``floor``: one forward and backward pass over all workers' samples together, with no error
  feedback and no per-worker gradients;
- ``x floor``: efmom's time divided by the floor;
- ``loop``: the median round time of the reference, ``LoopOracle`` (workers one after another);
- ``x loop``: efmom's time divided by the loop's;
- ``state MB``: the method's worker state after the timed rounds;
- ``peak MB``: peak CUDA memory of the timed rounds on a GPU, the process's peak resident set on a
  CPU (which only grows, so it is an upper bound for later rows).

Each timing is the median of ``--repeats`` rounds after ``--warmup`` rounds. All momentum methods
run with η = 0.5, so the ones that need a second gradient or a Hessian-vector product compute it
(η = 1 skips that work).
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from efmom.compressors import TopK
from efmom.layout import bind_flat_parameters
from efmom.methods import METHODS, build_method
from efmom.models import build_model
from efmom.oracles import ORACLES, build_oracle
from efmom.simulation import Simulation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """A model and the input that every worker's minibatch takes."""

    model: str
    model_options: dict
    input_shape: tuple[int, int, int]
    batch_size: int


CONFIGS = {
    "mlp": BenchConfig("mlp", {"hidden": (512,)}, (1, 28, 28), 64),
    "resnet18": BenchConfig("resnet18", {}, (3, 32, 32), 8),
}
#: Methods in the order of the table; ``sgd`` is left out because it has no error feedback.
DEFAULT_METHODS = ("ef14", "ef21", "econtrol", "ef21_sgdm", "ef21_sgdm_norm", "ef21_igt_norm",
                   "ef21_mvr_norm", "ef21_hm_norm", "ef21_rhm_norm")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(function, warmup: int, repeats: int, device: torch.device) -> float:
    """Run ``function`` ``warmup`` times untimed, then return the median of ``repeats`` timed runs."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def make_problem(config: BenchConfig, n_workers: int, batch_size: int, device, dtype, seed: int = 0):
    """Return a fresh model and fixed random inputs ``[n, B, C, H, W]`` with labels ``[n, B]``."""
    torch.manual_seed(seed)
    model = build_model(config.model, num_classes=10, input_shape=config.input_shape, **config.model_options)
    model = model.to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n_workers, batch_size, *config.input_shape, generator=generator).to(device, dtype)
    targets = torch.randint(0, 10, (n_workers, batch_size), generator=generator).to(device)
    return model, inputs, targets


def floor_seconds(config, args, device, dtype) -> float:
    """Time one forward and backward pass over all workers' samples at once, with plain autograd."""
    model, inputs, targets = make_problem(config, args.workers, args.batch_size or config.batch_size, device, dtype)
    model.train()
    flat_inputs, flat_targets = inputs.flatten(0, 1), targets.flatten()

    def step():
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(flat_inputs), flat_targets).backward()

    return median_seconds(step, args.warmup, args.repeats, device)


def round_seconds(config, method_name: str, oracle: str, args, device, dtype) -> tuple[float, float, float]:
    """Time whole rounds of one method; return seconds per round, state megabytes and peak megabytes."""
    model, inputs, targets = make_problem(config, args.workers, args.batch_size or config.batch_size, device, dtype)
    x, layout = bind_flat_parameters(model)
    method = build_method(method_name, lr=0.01, eta=0.5)
    generator = torch.Generator(device=device).manual_seed(0)
    simulation = Simulation(method, TopK(args.topk), build_oracle(oracle, model, layout), x, layout, generator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        simulation.round(inputs, targets, lr=0.01, eta=0.5)

    seconds = median_seconds(step, args.warmup + 1, args.repeats, device)  # +1: round 0 is not a typical round
    state_bytes = sum(value.numel() * value.element_size() for value in simulation.worker_state.values())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return seconds, state_bytes / 2**20, peak / 2**20


def run_config(name: str, args, device, dtype) -> list[str]:
    """Benchmark every requested method on one configuration and return the table's lines."""
    config = CONFIGS[name]
    batch_size = args.batch_size or config.batch_size
    floor = floor_seconds(config, args, device, dtype) / args.workers
    lines = [
        f"{name}: {args.workers} workers, batch {batch_size} per worker, Top-K {args.topk:g} per layer, "
        f"{device}, {torch.get_num_threads()} threads, oracle={args.oracle}; milliseconds per worker step",
        f"{'method':<16}{'efmom':>9}{'floor':>9}{'x floor':>9}{'loop':>9}{'x loop':>8}{'state MB':>10}{'peak MB':>9}",
    ]
    print("\n".join(lines), flush=True)
    for method_name in args.methods:
        seconds, state_mb, peak_mb = round_seconds(config, method_name, args.oracle, args, device, dtype)
        efmom = seconds / args.workers
        if args.skip_loop:
            loop_text, ratio_text = f"{'-':>9}", f"{'-':>8}"
        else:
            loop = round_seconds(config, method_name, "loop", args, device, dtype)[0] / args.workers
            loop_text, ratio_text = f"{1e3 * loop:9.2f}", f"{efmom / loop:8.2f}"
        lines.append(
            f"{method_name:<16}{1e3 * efmom:9.2f}{1e3 * floor:9.2f}{efmom / floor:9.2f}{loop_text}{ratio_text}"
            f"{state_mb:10.1f}{peak_mb:9.0f}"
        )
        print(lines[-1], flush=True)
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m efmom.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=["mlp", "resnet18"],
                        help="configurations to run (default: mlp resnet18)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(DEFAULT_METHODS),
                        help="methods to time (default: every method with error feedback)")
    parser.add_argument("--oracle", choices=sorted(ORACLES), default="batched", help="oracle timed as efmom (default: batched)")
    parser.add_argument("--workers", type=int, default=10, help="number of simulated workers (default: 10)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="minibatch size per worker (default: 64 for mlp, 8 for resnet18)")
    parser.add_argument("--topk", type=float, default=0.1, help="fraction of each parameter tensor Top-K keeps (default: 0.1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement; the median is reported (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter dtype (default: float32)")
    parser.add_argument("--skip-loop", action="store_true", help="do not time the reference loop")
    args = parser.parse_args(argv)
    for key in ("workers", "repeats", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1, got {getattr(args, key)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    for name in args.config:
        run_config(name, args, device, dtype)
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
