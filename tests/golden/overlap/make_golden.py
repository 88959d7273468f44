"""Generate tests/golden/overlap/{dice_loss,tversky_loss}.json with torch.

Run from the repository root with an environment that has torch::

    python tests/golden/overlap/make_golden.py

The values and gradients come from the torch version of the reference formula
in tests/test_overlap.py (``monai_reference``: MONAI 1.6.1's DiceLoss /
TverskyLoss forward, written once for NumPy and torch), in float64 with
autograd.  tests/test_overlap.py checks closs against these files without
torch.  Each case: the options ("kwargs"), the reduction, the arguments (input
and target; labels carry "dtype": "int64"), the upstream gradient (null,
a number, or an array for 'none'), the value and the gradient w.r.t. input.
Arrays are stored as {"shape": [...], "data": [flat list]}; floats use repr
(exact round trip); NaN uses Python's json extension.
"""
import itertools
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # tests/

from test_overlap import (  # noqa: E402
    act_kwargs, loss_shape, make_inputs, random_go, torch_value_and_grad)

REDUCTIONS = ("none", "mean", "sum")


def enc(a, dtype=None):
    if a is None or isinstance(a, float):
        return a
    a = np.asarray(a)
    out = {"shape": list(a.shape), "data": [v.item() for v in a.ravel()]}
    if dtype:
        out["dtype"] = dtype
    return out


def dice_cases():
    """(shape, kwargs): every option at least once, in combinations."""
    shape = (2, 3, 3, 2)
    for act, onehot, sq, jac in itertools.product(("none", "sigmoid", "softmax"), (False, True),
                                                  (False, True), (False, True)):
        yield shape, dict(to_onehot_y=onehot, squared_pred=sq, jaccard=jac, **act_kwargs(act))
    yield shape, dict(include_background=False, softmax=True, to_onehot_y=True)
    yield shape, dict(include_background=False, weight=[0.5, 2.0], sigmoid=True)
    yield shape, dict(weight=[0.25, 1.0, 3.0], batch=True, softmax=True)
    yield shape, dict(weight=1.5, jaccard=True)
    yield shape, dict(batch=True, squared_pred=True, to_onehot_y=True, softmax=True)
    yield shape, dict(smooth_nr=0.5, smooth_dr=0.25, sigmoid=True)
    yield shape, dict(smooth_nr=0.0, smooth_dr=0.0)
    yield (1, 2, 5), dict(softmax=True, to_onehot_y=True)
    yield (2, 2, 2, 2, 2), dict(sigmoid=True, batch=True)


def tversky_cases():
    shape = (2, 3, 3, 2)
    for act, onehot, batch in itertools.product(("none", "sigmoid", "softmax"), (False, True),
                                                (False, True)):
        yield shape, dict(to_onehot_y=onehot, batch=batch, alpha=0.3, beta=0.7,
                          **act_kwargs(act))
    for alpha, beta in ((0.5, 0.5), (1.0, 1.0), (2.0, 0.0), (0.0, 0.1)):
        yield shape, dict(alpha=alpha, beta=beta, softmax=True)
    yield shape, dict(include_background=False, sigmoid=True, to_onehot_y=True)
    yield shape, dict(smooth_nr=0.5, smooth_dr=0.25, sigmoid=True)
    yield shape, dict(smooth_nr=0.0, smooth_dr=0.0)
    yield (1, 2, 5), dict(softmax=True, to_onehot_y=True, batch=True)


def make(kind, cases):
    out = []
    for i, (shape, kw) in enumerate(cases):
        reduction = REDUCTIONS[i % 3]
        rng = np.random.default_rng([7, i, len(kind)])
        act = "sigmoid" if kw.get("sigmoid") else "softmax" if kw.get("softmax") else "none"
        onehot = kw.get("to_onehot_y", False)
        x, y = make_inputs(rng, shape, np.float64, act, onehot)
        x = np.round(x, 3)
        if kw.get("smooth_nr") == 0.0:
            y[0, 0] = 0
            x[0, 0] = 0  # an empty class, predicted empty: 0/0 = nan
        go = random_go(rng, reduction, loss_shape(kind, shape, kw), np.float64) if i % 2 else None
        go = None if go is None else float(round(go, 3)) if np.ndim(go) == 0 else np.round(go, 3)
        value, grad = torch_value_and_grad(kind, x, y, go, reduction=reduction, **kw)
        out.append({
            "id": f"{i}-{reduction}-" + "-".join(f"{k}={v}" for k, v in kw.items() if v),
            "kwargs": kw, "reduction": reduction,
            "args": [enc(x), enc(y, "int64" if onehot else None)],
            "grad_output": go if go is None or np.ndim(go) == 0 else enc(go),
            "value": enc(value), "grad": enc(grad),
        })
    return out


def main():
    for func, kind, cases in (("dice_loss", "dice", dice_cases()),
                              ("tversky_loss", "tversky", tversky_cases())):
        data = {"generator": "tests/golden/overlap/make_golden.py",
                "torch_version": torch.__version__, "func": func, "cases": make(kind, cases)}
        with open(os.path.join(HERE, func + ".json"), "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.write("\n")
        print(f"{func}: {len(data['cases'])} cases")


if __name__ == "__main__":
    main()
