"""Generate the golden files tests/golden/<functional>.json with torch.

Run from the repository root with an environment that has torch::

    python tests/golden/make_golden.py

Each file holds small, seeded float64 cases of one loss family: the call
(options, reduction, arguments, upstream gradient) and torch's value and
autograd gradients (w.r.t. input, and var for gaussian_nll_loss; a Python
float var gets d value / d var of the scalar).  tests/test_regression.py checks
closs against these files without torch.  Arrays are stored as
{"shape": [...], "data": [flat list]}; floats use repr (exact round trip);
NaN / Infinity use Python's json extensions.
"""
import json
import os
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REDUCTIONS = ("none", "mean", "sum")


def enc(a):
    if isinstance(a, float):
        return a
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


def torch_call(func, args, kwargs, grad_output, diff):
    tensors = []
    scalar_var = False
    for i, a in enumerate(args):
        if func == "gaussian_nll_loss" and i == 2 and isinstance(a, float):
            scalar_var = True
            t = torch.full(np.shape(args[0]), a, dtype=torch.float64)
        else:
            t = torch.from_numpy(np.array(a, dtype=np.float64))
        if i in diff:
            t.requires_grad_(True)
        tensors.append(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, func)(*tensors, **kwargs)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output, dtype=np.float64)).reshape(out.shape)
    out.backward(go)
    grads = []
    for i in diff:
        g = tensors[i].grad
        g = np.zeros(tensors[i].shape) if g is None else g.numpy()
        grads.append(float(np.sum(g)) if (scalar_var and i == 2) else g)
    return out.detach().numpy(), grads


def r3(a):
    """Short decimal inputs keep the files small."""
    return np.round(a, 3)


class Family:
    def __init__(self, func, seed):
        self.func = func
        self.rng = np.random.default_rng(seed)
        self.cases = []

    def add(self, case_id, args, kwargs, reduction, grad_output=None):
        diff = (0, 2) if self.func == "gaussian_nll_loss" else (0,)
        kw = dict(kwargs)
        kw["reduction"] = reduction
        value, grads = torch_call(self.func, args, kw, grad_output, diff)
        self.cases.append({
            "id": case_id,
            "kwargs": kwargs,
            "reduction": reduction,
            "args": [enc(a) for a in args],
            "grad_output": None if grad_output is None else enc(
                grad_output if reduction == "none" else float(grad_output)),
            "value": enc(value) if reduction == "none" else float(value),
            "grads": [enc(g) for g in grads],
        })

    def grad_output(self, reduction, shape, k):
        if k % 2 == 0:
            return None
        if reduction == "none":
            return r3(self.rng.uniform(-2, 2, shape))
        return float(r3(self.rng.uniform(0.25, 2)))

    def write(self):
        path = os.path.join(HERE, self.func + ".json")
        with open(path, "w") as f:
            json.dump({"generator": "tests/golden/make_golden.py",
                       "torch_version": torch.__version__,
                       "func": self.func, "cases": self.cases}, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(self.cases)} cases, {os.path.getsize(path)} bytes")


def difference_family(func, seed, option_sets, weighted):
    fam = Family(func, seed)
    rng = fam.rng
    k = 0
    for opts in option_sets:
        for reduction in REDUCTIONS:
            for shape in [(5,), (2, 3)]:
                x = r3(rng.uniform(-3, 3, shape))
                y = r3(rng.uniform(-3, 3, shape))
                fam.add(f"{opts}-{reduction}-{shape}", [x, y], opts, reduction,
                        fam.grad_output(reduction, shape, k))
                k += 1
    opts = option_sets[0]
    # 0-d, empty, broadcast target (gradient summed back), NaN / inf, exact kinks
    fam.add("0-d", [np.array(1.25), np.array(-0.5)], opts, "mean")
    for reduction in REDUCTIONS:
        fam.add(f"empty-{reduction}", [np.zeros((0,)), np.zeros((0,))], opts, reduction)
        x = r3(rng.uniform(-3, 3, (2, 1)))
        y = r3(rng.uniform(-3, 3, (2, 3)))
        fam.add(f"broadcast-input-{reduction}", [x, y], opts, reduction,
                fam.grad_output(reduction, (2, 3), 1))
        x = r3(rng.uniform(-3, 3, (2, 3)))
        y = r3(rng.uniform(-3, 3, (3,)))
        fam.add(f"broadcast-target-{reduction}", [x, y], opts, reduction)
        x = np.array([np.nan, 1.0, np.inf, -np.inf, np.inf, 2.0, 0.5])
        y = np.array([0.0, np.nan, 1.0, 1.0, np.inf, 2.0, 0.5 + 1.0])
        fam.add(f"nonfinite-{reduction}", [x, y], opts, reduction)
    thr = opts.get("beta", opts.get("delta", 1.0))
    x = np.array([0.0, 1.0, -1.0, 2.0, thr, -thr])
    fam.add("kinks", [x, np.zeros(6)], opts, "sum")
    if weighted:
        for reduction in REDUCTIONS:
            x = r3(rng.uniform(-3, 3, (2, 3)))
            y = r3(rng.uniform(-3, 3, (2, 3)))
            w = r3(rng.uniform(0, 2, (2, 3)))
            diffs = (0,)
            kwd = dict(opts)
            kwd["reduction"] = reduction
            kwd["weight"] = torch.from_numpy(w)
            go = fam.grad_output(reduction, (2, 3), 1)
            value, grads = torch_call(func, [x, y], kwd, go, diffs)
            fam.cases.append({
                "id": f"weight-{reduction}", "kwargs": opts, "reduction": reduction,
                "weight": enc(w), "args": [enc(x), enc(y)],
                "grad_output": None if go is None else enc(go),
                "value": enc(value) if reduction == "none" else float(value),
                "grads": [enc(g) for g in grads],
            })
    fam.write()


def poisson_family():
    fam = Family("poisson_nll_loss", 1010)
    rng = fam.rng
    k = 0
    for log_input in (True, False):
        for full in (False, True):
            for eps in ((1e-8,) if log_input else (1e-8, 0.5)):
                opts = {"log_input": log_input, "full": full, "eps": eps}
                for reduction in REDUCTIONS:
                    shape = (2, 3)
                    x = r3(rng.uniform(-2, 2, shape) if log_input else rng.uniform(0, 5, shape))
                    y = r3(rng.uniform(0, 5, shape))
                    y[0, :2] = [0.0, 1.0]  # Stirling boundary: y <= 1 adds nothing
                    fam.add(f"{opts}-{reduction}", [x, y], opts, reduction,
                            fam.grad_output(reduction, shape, k))
                    k += 1
    opts = {"log_input": True, "full": False, "eps": 1e-8}
    for reduction in REDUCTIONS:
        fam.add(f"empty-{reduction}", [np.zeros((0, 2)), np.zeros((0, 2))], opts, reduction)
        fam.add(f"broadcast-{reduction}", [r3(rng.uniform(-2, 2, (3, 1))),
                                          r3(rng.uniform(0, 5, (2, 1, 4)))], opts, reduction)
    fam.add("0-d", [np.array(0.5), np.array(2.0)], opts, "sum")
    for log_input in (True, False):
        x = np.array([np.nan, 1.0, np.inf, -np.inf, 0.0, 800.0, -1.0])
        y = np.array([1.0, np.nan, 1.0, 2.0, 1.0, 1.0, 0.0])
        fam.add(f"nonfinite-log_input={log_input}", [x, y],
                {"log_input": log_input, "full": True, "eps": 1e-8}, "none")
    fam.add("eps0", [np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 2.0])],
            {"log_input": False, "full": False, "eps": 0.0}, "none")
    fam.write()


def gaussian_family():
    fam = Family("gaussian_nll_loss", 2020)
    rng = fam.rng
    k = 0
    var_shapes = [
        ((2, 3), (2, 3)), ((2, 3), (2,)), ((2, 3), (2, 1)), ((2, 3), (1, 3)), ((2, 3), "float"),
        ((2, 2, 3), (2, 2)), ((2, 2, 3), (2, 1, 3)), ((4,), ()), ((4,), (1,)), ((), ()),
    ]
    for full in (False, True):
        for eps in (1e-6, 0.3):
            opts = {"full": full, "eps": eps}
            for reduction in REDUCTIONS:
                for shape, vshape in var_shapes:
                    if (k % 3) and vshape != "float" and len(shape) < 2:
                        k += 1
                        continue
                    x = r3(rng.uniform(-2, 2, shape))
                    y = r3(rng.uniform(-2, 2, shape))
                    if vshape == "float":
                        var = float(r3(rng.uniform(0.01, 2)))
                    else:
                        var = r3(rng.uniform(0.01, 2, vshape))
                    fam.add(f"{opts}-{reduction}-{shape}-var{vshape}", [x, y, var], opts,
                            reduction, fam.grad_output(reduction, shape, k))
                    k += 1
    opts = {"full": False, "eps": 1e-6}
    for reduction in REDUCTIONS:
        fam.add(f"empty-{reduction}", [np.zeros((0, 3)), np.zeros((0, 3)), np.ones((0, 1))],
                opts, reduction)
        # target broadcasts silently; the loss takes the broadcast shape
        fam.add(f"broadcast-target-{reduction}",
                [r3(rng.uniform(-2, 2, (2, 3))), r3(rng.uniform(-2, 2, (4, 2, 3))),
                 r3(rng.uniform(0.1, 2, (2, 1)))], opts, reduction)
    # var below eps: the var gradient is computed at the clamped value (not masked)
    fam.add("clamp", [np.array([0.0, 1.0, 0.5]), np.array([2.0, 1.0, 0.5]),
                      np.array([1e-8, 0.0, 1e-7])], opts, "none")
    fam.add("nonfinite", [np.array([np.nan, 1.0, np.inf, 0.0]), np.array([0.0, np.nan, 1.0, 0.0]),
                          np.array([1.0, 1.0, 1.0, np.nan])], opts, "none")
    fam.write()


def main():
    torch.set_default_dtype(torch.float64)
    difference_family("l1_loss", 11, [{}], True)
    difference_family("mse_loss", 22, [{}], True)
    difference_family("smooth_l1_loss", 33, [{"beta": 1.0}, {"beta": 0.0}, {"beta": 0.5},
                                             {"beta": 2.5}], False)
    difference_family("huber_loss", 44, [{"delta": 1.0}, {"delta": 0.5}, {"delta": 2.5}], True)
    poisson_family()
    gaussian_family()


if __name__ == "__main__":
    main()
