"""Generate tests/golden/margin_pointwise/<functional>.json with torch.

Run from the repository root with an environment that has torch (torchvision
is not needed: its sigmoid_focal_loss is written out below, line for line)::

    python tests/golden/margin_pointwise/make_golden.py

Each file holds small, seeded float64 cases of one loss: the call (kwargs with
the reduction, the arguments, the upstream gradient) and torch's value and
autograd gradients w.r.t. the differentiable arguments (input1 and input2 for
margin_ranking_loss, input otherwise).  tests/test_margin_pointwise.py checks
closs against these files without torch, and imports `torch_reference` from
here for its torch parity tests.  Arrays are {"shape": [...], "data": [...]}
(floats by repr: an exact round trip; NaN / Infinity as Python's json writes them).
"""
import json
import os
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FUNCS = ("margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss", "sigmoid_focal_loss")
DIFF = {"margin_ranking_loss": (0, 1)}  # the differentiable arguments (default: input only)
REDUCTIONS = ("none", "mean", "sum")


def torchvision_sigmoid_focal_loss(torch, inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """torchvision 0.28's ops.sigmoid_focal_loss (its checks aside)."""
    F = torch.nn.functional
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def torch_reference(func, args, kwargs, grad_output=None, dtype=None):
    """torch's value and autograd gradients (NumPy arrays) for closs.functional.<func>.

    args: NumPy arrays (float arguments are cast to `dtype` when given);
    kwargs: the call's keywords, reduction included; grad_output: None (ones)
    or the upstream gradient.  Returns (value, [gradient per DIFF argument]).
    """
    import torch

    diff = DIFF.get(func, (0,))
    tensors = []
    for i, a in enumerate(args):
        a = np.array(a, copy=True)
        if dtype is not None and a.dtype.kind == "f":
            a = a.astype(dtype)
        t = torch.from_numpy(a)
        if i in diff:
            t.requires_grad_(True)
        tensors.append(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if func == "sigmoid_focal_loss":
            out = torchvision_sigmoid_focal_loss(torch, *tensors, **kwargs)
        else:
            out = getattr(torch.nn.functional, func)(*tensors, **kwargs)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output), dtype=out.dtype).reshape(out.shape)
    out.backward(go)
    grads = [tensors[i].grad for i in diff]
    grads = [np.zeros(tensors[i].shape) if g is None else g.numpy() for i, g in zip(diff, grads)]
    return out.detach().numpy(), grads


def enc(a):
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


def dec(obj):
    """The inverse of enc (numbers pass through)."""
    if isinstance(obj, dict):
        return np.array(obj["data"], dtype=np.float64).reshape(obj["shape"])
    return obj


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
                value, grads = torch_reference(self.func, args, kw, go)
                self.cases.append({
                    "id": f"{case_id}-{reduction}-{go_kind}",
                    "kwargs": kw,
                    "args": [enc(a) for a in args],
                    "grad_output": None if go is None else (go if np.ndim(go) == 0 else enc(go)),
                    "value": enc(value),
                    "grads": [enc(g) for g in grads],
                })

    def write(self):
        path = os.path.join(HERE, f"{self.func}.json")
        with open(path, "w") as f:
            json.dump({"func": self.func, "cases": self.cases}, f, indent=0)
            f.write("\n")
        print(f"{path}: {len(self.cases)} cases")


def signs(rng, shape, others=()):
    """+-1 targets, with some entries replaced by the values in `others`."""
    y = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    if others:
        mask = rng.random(shape) < 0.3
        y = np.where(mask, rng.choice(np.asarray(others, float), shape), y)
    return y


def margin_ranking():
    c = Cases("margin_ranking_loss", 12)
    rng = c.rng
    for shape in [(), (6,), (4, 5)]:
        for margin in (0.0, 0.5, -0.3):
            x1, x2 = r3(rng.uniform(-2, 2, shape)), r3(rng.uniform(-2, 2, shape))
            c.add(f"{shape}-margin={margin}", [x1, x2, signs(rng, shape)], {"margin": margin})
    x1, x2 = r3(rng.uniform(-2, 2, 8)), r3(rng.uniform(-2, 2, 8))
    c.add("any-targets", [x1, x2, signs(rng, 8, (0.0, 2.0, -0.5))], {"margin": 0.25})
    for s1, s2, st in [((3, 1), (1, 4), (3, 4)), ((2, 1, 3), (2, 4, 1), (1, 1, 1)),
                       ((5,), (1,), (5,))]:
        c.add(f"broadcast-{s1}-{s2}-{st}",
              [r3(rng.uniform(-2, 2, s1)), r3(rng.uniform(-2, 2, s2)), signs(rng, st)],
              {"margin": 0.1})
    # the hinge exactly (-y (x1 - x2) + margin == 0, exact in binary): gradient 0
    c.add("kinks", [np.array([1.5, 1.0, 0.25, -1.5]), np.array([1.0, 1.5, 0.75, -2.0]),
                    np.array([1.0, -1.0, -1.0, 1.0])], {"margin": 0.5})
    inf, nan = np.inf, np.nan
    c.add("nonfinite", [np.array([nan, 1.0, inf, -inf, 1.0, 2.0]),
                        np.array([0.0, nan, 1.0, 1.0, inf, 1.0]),
                        np.array([1.0, 1.0, 1.0, 1.0, -1.0, nan])], {"margin": 0.0},
          with_grad_output=False)
    c.write()


def hinge_embedding():
    c = Cases("hinge_embedding_loss", 13)
    rng = c.rng
    for shape in [(), (7,), (3, 4)]:
        for margin in (1.0, 0.5, -0.5):
            x = r3(rng.uniform(-2, 3, shape))
            c.add(f"{shape}-margin={margin}", [x, signs(rng, shape, (0.0, 0.5, 2.0))],
                  {"margin": margin})
    for sx, sy in [((3, 1), (4,)), ((4,), (3, 1)), ((2, 3), (3,))]:
        c.add(f"broadcast-{sx}-{sy}", [r3(rng.uniform(-2, 3, sx)), signs(rng, sy, (0.0,))],
              {"margin": 1.0})
    c.add("kinks", [np.array([1.0, 1.0, 0.5, 1.0]), np.array([-1.0, 0.0, -1.0, 1.0])],
          {"margin": 1.0})
    inf, nan = np.inf, np.nan
    c.add("nonfinite", [np.array([nan, nan, inf, inf, -inf, -inf, 2.0]),
                        np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, nan])], {"margin": 1.0},
          with_grad_output=False)
    c.write()


def soft_margin():
    c = Cases("soft_margin_loss", 14)
    rng = c.rng
    for shape in [(), (7,), (3, 4), (2, 3, 2)]:
        x = r3(rng.uniform(-6, 6, shape))
        c.add(f"{shape}", [x, signs(rng, shape)], {})
    c.add("any-targets", [r3(rng.uniform(-6, 6, 8)), signs(rng, 8, (0.0, 0.5, 2.0))], {})
    for sx, sy in [((2, 3), (3,)), ((4, 3), (4, 1)), ((2, 3), (1, 1))]:
        c.add(f"broadcast-{sx}-{sy}", [r3(rng.uniform(-6, 6, sx)), signs(rng, sy)], {})
    # large |x| where torch is still finite (-y x < 709.78)
    c.add("large", [np.array([40.0, -40.0, 700.0, -700.0, 1e-20]),
                    np.array([1.0, 1.0, 1.0, 1.0, -1.0])], {})
    c.write()


def sigmoid_focal():
    c = Cases("sigmoid_focal_loss", 15)
    rng = c.rng
    for shape in [(), (7,), (3, 4)]:
        x = r3(rng.uniform(-6, 6, shape))
        y = (rng.random(shape) < 0.4).astype(float)
        c.add(f"{shape}-defaults", [x, y], {})
    for alpha, gamma in [(0.25, 0.0), (0.5, 0.5), (-1.0, 2.0), (0.0, 1.0), (1.0, 3.0),
                         (0.75, 1.7)]:
        x = r3(rng.uniform(-6, 6, (2, 5)))
        hard = (rng.random((2, 5)) < 0.4).astype(float)
        c.add(f"alpha={alpha}-gamma={gamma}", [x, hard], {"alpha": alpha, "gamma": gamma})
        soft = r3(rng.uniform(0, 1, (2, 5)))
        c.add(f"soft-alpha={alpha}-gamma={gamma}", [x, soft], {"alpha": alpha, "gamma": gamma})
    x = np.array([-3, -0.5, 0, 0.5, 3, 20])
    c.add("spec-anchor", [x, np.array([0.0, 1, 1, 0, 1, 0])], {})
    c.write()


if __name__ == "__main__":
    margin_ranking()
    hinge_embedding()
    soft_margin()
    sigmoid_focal()
