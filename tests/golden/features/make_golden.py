"""Generate tests/golden/features/<functional>.json with torch.

Run from the repository root with an environment that has torch::

    python tests/golden/features/make_golden.py

Each file holds small, seeded float64 cases of one loss over feature rows
(cosine_embedding_loss, triplet_margin_loss, triplet_margin_with_distance_loss):
the call (keyword options, reduction, arguments, upstream gradient) and
torch's value and autograd gradients w.r.t. the differentiable arguments
(input1, input2; or anchor, positive, negative).  tests/test_features.py
checks closs against these files without torch.  Arrays are stored as
{"shape": [...], "data": [flat list]}; floats use repr (exact round trip);
NaN / Infinity use Python's json extensions.  triplet_margin_with_distance_loss
stores its distance by closs's name ("pairwise", "cosine"); the torch
expression for each is in DISTANCES below.
"""
import json
import os
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REDUCTIONS = ("none", "mean", "sum")
DISTANCES = {
    "pairwise": None,  # torch's default: pairwise_distance(x, y) (p = 2, eps = 1e-6)
    "cosine": lambda x, y: 1.0 - torch.nn.functional.cosine_similarity(x, y, dim=-1),
}


def enc(a):
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


def torch_call(func, args, kwargs, reduction, grad_output):
    ndiff = 2 if func == "cosine_embedding_loss" else 3
    tensors = [torch.from_numpy(np.array(a, dtype=np.float64)) for a in args]
    for t in tensors[:ndiff]:
        t.requires_grad_(True)
    kw = dict(kwargs, reduction=reduction)
    if "distance_function" in kw:
        kw["distance_function"] = DISTANCES[kw["distance_function"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, func)(*tensors, **kw)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output, dtype=np.float64)).reshape(out.shape)
    out.backward(go)
    grads = [np.zeros(t.shape) if t.grad is None else t.grad.numpy() for t in tensors[:ndiff]]
    return out.detach().numpy(), grads


def rounded(rng, shape, scale=1.0):
    return np.round(rng.normal(0.0, scale, shape), 3)


def case(func, case_id, kwargs, reduction, args, rng):
    value, grads = torch_call(func, args, kwargs, reduction, None)
    grad_output = None
    if reduction == "none":
        grad_output = np.round(rng.uniform(-2, 2, np.shape(value)), 3)
    elif rng.random() < 0.5:
        grad_output = float(np.round(rng.uniform(0.25, 2.0), 3))
    value, grads = torch_call(func, args, kwargs, reduction, grad_output)
    return {
        "id": f"{case_id}-{reduction}",
        "kwargs": kwargs,
        "reduction": reduction,
        "args": [enc(a) for a in args],
        "grad_output": None if grad_output is None else (
            grad_output if isinstance(grad_output, float) else enc(grad_output)),
        "value": enc(value) if np.ndim(value) else float(value),
        "grads": [enc(g) for g in grads],
    }


def cosine_cases(rng):
    func = "cosine_embedding_loss"
    out = []
    for margin in (0.0, 0.2, -0.3):
        for reduction in REDUCTIONS:
            x1, x2 = rounded(rng, (5, 4)), rounded(rng, (5, 4))
            x1[3] = 0.0  # a zero vector: cos 0, huge gradient
            y = np.array([1.0, -1.0, 1.0, -1.0, 0.0])  # 0: any other value has loss 0
            out.append(case(func, f"margin={margin}", {"margin": margin}, reduction,
                            [x1, x2, y], rng))
    for reduction in REDUCTIONS:
        out.append(case(func, "unbatched", {"margin": 0.1}, reduction,
                        [rounded(rng, 6), rounded(rng, 6), np.array(-1.0)], rng))
        out.append(case(func, "broadcast", {}, reduction,
                        [rounded(rng, (1, 3)), rounded(rng, (4, 3)),
                         np.array([1.0, -1.0, -1.0, 1.0])], rng))
    return out


def triplet_args(rng, shapes):
    return [rounded(rng, s) for s in shapes]


def triplet_cases(rng):
    func = "triplet_margin_loss"
    out = []
    for p in (2.0, 1.0, 3.0, 0.5, float("inf")):
        for swap in (False, True):
            for reduction in REDUCTIONS:
                out.append(case(func, f"p={p}-swap={swap}", {"p": p, "swap": swap, "margin": 1.5},
                                reduction, triplet_args(rng, [(3, 4)] * 3), rng))
    for reduction in REDUCTIONS:
        out.append(case(func, "eps=0", {"eps": 0.0, "margin": 0.5}, reduction,
                        triplet_args(rng, [(4, 3)] * 3), rng))
        out.append(case(func, "unbatched", {}, reduction, triplet_args(rng, [(5,)] * 3), rng))
        out.append(case(func, "3d", {"swap": True}, reduction,
                        triplet_args(rng, [(2, 3, 4)] * 3), rng))
        out.append(case(func, "broadcast", {"margin": 2.0}, reduction,
                        triplet_args(rng, [(1, 4), (3, 4), (3, 1)]), rng))
    return out


def distance_cases(rng):
    func = "triplet_margin_with_distance_loss"
    out = []
    for name in DISTANCES:
        for swap in (False, True):
            for reduction in REDUCTIONS:
                kwargs = {"distance_function": name, "swap": swap, "margin": 0.8}
                out.append(case(func, f"{name}-swap={swap}", kwargs, reduction,
                                triplet_args(rng, [(5, 4)] * 3), rng))
    for reduction in REDUCTIONS:
        args = triplet_args(rng, [(3, 4)] * 3)
        args[1][1] = 0.0  # a zero vector: the eps clamp of the cosine distance
        args[2][2] *= 1e-9  # a tiny one, below the clamp
        out.append(case(func, "cosine-small", {"distance_function": "cosine"}, reduction, args,
                        rng))
    return out


def main():
    rng = np.random.default_rng(20240417)
    for func, make in (("cosine_embedding_loss", cosine_cases),
                       ("triplet_margin_loss", triplet_cases),
                       ("triplet_margin_with_distance_loss", distance_cases)):
        doc = {"generator": "tests/golden/features/make_golden.py",
               "torch_version": torch.__version__, "func": func, "cases": make(rng)}
        path = os.path.join(HERE, f"{func}.json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
