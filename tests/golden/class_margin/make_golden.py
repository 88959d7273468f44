"""Generate tests/golden/class_margin/<functional>.json with torch.

Run from the repository root with an environment that has torch::

    python tests/golden/class_margin/make_golden.py

Each file holds small, seeded float64 cases of one loss (multi_margin_loss,
multilabel_margin_loss): the call (kwargs with the reduction; a `weight` is
stored as an array), the arguments (class-index targets as int64), the
upstream gradient, and torch's value and autograd gradient w.r.t. input.
tests/test_class_margin.py checks closs against these files without torch and
imports `torch_reference` from here for its torch parity tests.  Arrays are
{"shape": [...], "data": [...]} with "dtype": "int64" for integer arrays
(floats by repr: an exact round trip; NaN / Infinity as Python's json writes
them).  Empty batches are left out: torch returns uninitialised memory for
their 'mean' / 'sum' (spec section 0.1).
"""
import json
import os
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FUNCS = ("multi_margin_loss", "multilabel_margin_loss")
REDUCTIONS = ("none", "mean", "sum")


def torch_reference(func, args, kwargs, grad_output=None, dtype=None):
    """torch's value and gradient w.r.t. input (NumPy arrays) for
    closs.functional.<func>(*args, **kwargs).

    Float arguments (and a `weight` array) are cast to `dtype` (default: the
    input's); integer targets go to torch as int64, the one dtype it takes.
    grad_output: None (ones) or the upstream gradient.  Returns (value, grad).
    """
    import torch

    x = np.array(args[0], copy=True)
    if dtype is not None:
        x = x.astype(dtype)
    tx = torch.from_numpy(x).requires_grad_(True)
    tt = torch.from_numpy(np.array(args[1], dtype=np.int64))
    kw = {k: torch.from_numpy(np.array(v, dtype=x.dtype)) if isinstance(v, np.ndarray) else v
          for k, v in kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, func)(tx, tt, **kw)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output), dtype=out.dtype).reshape(out.shape)
    out.backward(go)
    g = tx.grad if tx.grad is not None else torch.zeros_like(tx)
    return out.detach().numpy(), g.numpy()


def enc(a):
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return {"shape": list(a.shape), "data": [int(v) for v in a.ravel()], "dtype": "int64"}
    a = a.astype(np.float64)
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


def r3(a):
    """Short decimal inputs keep the files small."""
    return np.round(a, 3)


class Cases:
    def __init__(self, func, seed):
        self.func = func
        self.rng = np.random.default_rng(seed)
        self.cases = []

    def add(self, case_id, args, kwargs, reductions=REDUCTIONS, with_grad_output=True):
        for reduction in reductions:
            for go_kind in ("ones", "random") if with_grad_output else ("ones",):
                kw = dict(kwargs, reduction=reduction)
                go = None
                if go_kind == "random":
                    shape = torch_reference(self.func, args, kw)[0].shape
                    go = r3(self.rng.uniform(-2, 2, shape)) if reduction == "none" else 0.75
                value, grad = torch_reference(self.func, args, kw, go)
                self.cases.append({
                    "id": f"{case_id}-{reduction}-{go_kind}",
                    "kwargs": {k: enc(v) if isinstance(v, np.ndarray) else v
                               for k, v in kw.items()},
                    "args": [enc(a) for a in args],
                    "grad_output": None if go is None else (go if np.ndim(go) == 0 else enc(go)),
                    "value": enc(value),
                    "grads": [enc(grad)],
                })

    def write(self):
        path = os.path.join(HERE, f"{self.func}.json")
        with open(path, "w") as f:
            json.dump({"generator": "tests/golden/class_margin/make_golden.py",
                       "func": self.func, "cases": self.cases}, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(self.cases)} cases, {os.path.getsize(path)} bytes")


# spec sections 14 and 18: the anchors
ANCHOR_X = np.array([[.1, .2, .4, .8], [1, -1, .5, 0], [.3, .3, .3, .3]])


def multi_margin():
    c = Cases("multi_margin_loss", 18)
    rng = c.rng
    w4 = np.array([1.0, 2.0, 0.5, 3.0])
    for p in (1, 2):
        for kw in ({}, {"margin": 0.5}, {"weight": w4}, {"margin": -0.25, "weight": w4}):
            kw = dict(kw, p=p)
            x = r3(rng.uniform(-1.5, 1.5, (5, 4)))
            c.add(f"{kw}-(5, 4)", [x, rng.integers(0, 4, 5)], kw)
            x = r3(rng.uniform(-1.5, 1.5, 4))
            c.add(f"{kw}-(4,)", [x, np.array(rng.integers(0, 4))], kw, with_grad_output=False)
    c.add("anchor", [ANCHOR_X, np.array([3, 0, 1])], {}, with_grad_output=False)
    c.add("anchor-weight", [ANCHOR_X, np.array([3, 0, 1])], {"weight": w4}, ("mean",), False)
    c.add("anchor-p2", [ANCHOR_X, np.array([3, 0, 1])], {"p": 2}, ("mean",), False)
    x = r3(rng.uniform(-1, 1, 3))
    c.add("(C,)-target(1,)", [x, np.array([2])], {})
    c.add("(1, C)-target()", [x[None], np.array(1)], {}, with_grad_output=False)
    c.add("0-d", [np.array(0.5), np.array(0)], {"p": 2}, with_grad_output=False)
    # exact hinges (z = 0: gradient 0) and ties, for both p
    x = np.array([[1.0, 0.0, 0.5, 1.0], [0.25, 0.25, -0.75, 1.25]])
    for p in (1, 2):
        c.add(f"kinks-p={p}", [x, np.array([0, 1])], {"p": p}, ("none", "sum"), False)
        c.add(f"ties-margin=0-p={p}", [x, np.array([0, 1])], {"p": p, "margin": 0.0},
              ("sum",), False)
    nan, inf = np.nan, np.inf
    x = np.array([[0, nan, 0, 1], [nan, 1, 0, 2], [0, inf, -inf, 0.5], [-inf, 1, 0.5, 2],
                  [inf, inf, 0, 1]])
    t = np.array([0, 0, 0, 0, 0])
    for p in (1, 2):
        c.add(f"nonfinite-p={p}", [x, t], {"p": p}, ("none", "sum"), False)
    c.add("nonfinite-weight0", [x, t], {"p": 2, "weight": np.array([0.0, 1, 1, 1])}, ("none",),
          False)
    c.write()


def multilabel_targets(rng, n, C, junk=True):
    """n rows of C targets: a random number of distinct classes, then -1, then
    (junk=True) random classes and -1s that torch ignores."""
    t = np.full((n, C), -1)
    for r in range(n):
        k = rng.integers(0, C + 1)
        t[r, :k] = rng.permutation(C)[:k]
        if junk and k + 1 < C:
            t[r, k + 1:] = rng.integers(-1, C, C - k - 1)
    return t


def multilabel_margin():
    c = Cases("multilabel_margin_loss", 14)
    rng = c.rng
    for shape in [(6, 5), (5,), (1, 7)]:
        x = r3(rng.uniform(-1.5, 1.5, shape))
        t = multilabel_targets(rng, 1 if len(shape) == 1 else shape[0], shape[-1])
        c.add(f"{shape}", [x, t.reshape(shape)], {})
    t = np.array([[3, 0, -1, 1], [1, 2, 3, -1], [-1, 0, 1, 2]])
    c.add("anchor", [ANCHOR_X, t], {}, with_grad_output=False)
    c.add("worked-example", [np.array([[1.0, 2, 3, 4]]), np.array([[0, 3, -1, -1]])], {},
          with_grad_output=False)
    # repeated targets count again; all classes targets; no targets
    t = np.array([[3, 3, -1, 0], [1, 1, 1, 1], [0, 1, 2, 3], [-1, 2, 2, 2]])
    c.add("repeats", [r3(rng.uniform(-1, 1, (4, 4))), t], {}, ("none", "sum"))
    c.add("0-d", [np.array(0.5), np.array(0)], {}, with_grad_output=False)
    c.add("(1,)-target()", [np.array([0.5]), np.array(-1)], {}, with_grad_output=False)
    x = np.array([[1.0, 0.0, 0.5, 2.0], [0.5, 0.5, 0.5, -0.5]])
    c.add("kinks-and-ties", [x, np.array([[0, -1, 0, 0], [0, 3, -1, 2]])], {}, ("none", "sum"),
          False)
    nan, inf = np.nan, np.inf
    x = np.array([[0, nan, 0, 1], [nan, 0, 1, 2], [inf, 0, 1, -inf], [0, 1, inf, nan]])
    t = np.array([[0, -1, 0, 0], [0, 2, -1, 0], [1, 3, -1, 0], [3, 0, -1, 2]])
    c.add("nonfinite", [x, t], {}, ("none", "sum"), False)
    c.write()


def main():
    import torch

    torch.set_default_dtype(torch.float64)
    multi_margin()
    multilabel_margin()


if __name__ == "__main__":
    main()
