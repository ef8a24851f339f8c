"""The conformance runner on the reference trajectories and on files it has never seen."""

import copy
import json
import math

import pytest
import torch

from efmom import conformance


def test_reference_trajectories_pass(shared_dir, capsys):
    files = sorted((shared_dir / "golden").glob("*.json"))
    assert len(files) == 8
    assert conformance.main([str(f) for f in files]) == 0
    output = capsys.readouterr().out
    assert output.count("PASS") == 8
    assert "8 passed, 0 failed" in output


def _hand_written_ef21(spec):
    """EF21 with global Top-K and a globally normalised step, written independently of efmom."""
    dtype = torch.float64
    params = {k: torch.tensor(v, dtype=dtype) for k, v in spec["initial_parameters"].items()}
    order = spec["model"]["parameter_order"]

    def loss(flat, x, y):
        sizes = [params[k].numel() for k in order]
        pieces = dict(zip(order, torch.split(flat, sizes)))
        w1 = pieces["fc1.weight"].view_as(params["fc1.weight"])
        w2 = pieces["fc2.weight"].view_as(params["fc2.weight"])
        hidden = torch.tanh(x @ w1.T + pieces["fc1.bias"])
        return torch.nn.functional.cross_entropy(hidden @ w2.T + pieces["fc2.bias"], y)

    def grad(flat, worker):
        flat = flat.detach().requires_grad_(True)
        x = torch.tensor(worker["x"], dtype=dtype)
        y = torch.tensor(worker["y"])
        return torch.autograd.grad(loss(flat, x, y), flat)[0]

    def topk(v):
        k = max(1, math.floor(spec["compressor"]["topk"] * v.numel()))
        out = torch.zeros_like(v)
        idx = v.abs().argsort(descending=True)[:k]
        out[idx] = v[idx]
        return out

    x = torch.cat([params[k].reshape(-1) for k in order])
    estimates = [grad(x, w) for w in spec["workers"]]
    g = sum(estimates) / len(estimates)
    iterates = []
    for _ in range(spec["rounds"]):
        x = x - spec["lr"] * g / g.norm()
        messages = []
        for i, worker in enumerate(spec["workers"]):
            message = topk(grad(x, worker) - estimates[i])
            estimates[i] = estimates[i] + message
            messages.append(message)
        g = g + sum(messages) / len(messages)
        iterates.append(x.tolist())
    return iterates


def _new_problem(seed=7, layers=(5, 7, 4), n_workers=2, batch=6):
    generator = torch.Generator().manual_seed(seed)
    params = {
        "fc1.weight": torch.randn(layers[1], layers[0], generator=generator).tolist(),
        "fc1.bias": torch.randn(layers[1], generator=generator).tolist(),
        "fc2.weight": torch.randn(layers[2], layers[1], generator=generator).tolist(),
        "fc2.bias": torch.randn(layers[2], generator=generator).tolist(),
    }
    workers = [
        {"x": torch.randn(batch, layers[0], generator=generator).tolist(),
         "y": torch.randint(0, layers[2], (batch,), generator=generator).tolist()}
        for _ in range(n_workers)
    ]
    return {
        "method": "ef21_sgdm_norm", "dtype": "float64", "loss": "cross_entropy_mean",
        "model": {"kind": "mlp", "layers": list(layers), "activation": "tanh",
                  "parameter_order": ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]},
        "n_workers": n_workers, "lr": 0.05, "eta": 1.0, "lr_schedule": None, "eta_schedule": None,
        "normalize": "global", "compressor": {"name": "topk", "topk": 0.25, "scope": "global"},
        "initial_parameters": params, "workers": workers, "rounds": 9,
    }


def test_unseen_file_passes_and_perturbed_file_fails(tmp_path, capsys):
    spec = _new_problem()
    spec["iterates"] = _hand_written_ef21(spec)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(spec))
    bad_spec = copy.deepcopy(spec)
    bad_spec["iterates"][4][3] += 1e-8
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_spec))

    assert conformance.main([str(good)]) == 0
    assert conformance.main([str(good), str(bad)]) == 1
    output = capsys.readouterr().out
    assert f"FAIL {bad}: max deviation 1.000e-08" in output


def test_broken_file_reported(tmp_path, capsys):
    spec = _new_problem()
    del spec["workers"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(spec))
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"method": "ef21"')
    assert conformance.main([str(path), str(truncated)]) == 1
    output = capsys.readouterr().out
    assert f"ERROR {path}: missing fields ['workers', 'iterates']" in output
    assert f"ERROR {truncated}: cannot read" in output
