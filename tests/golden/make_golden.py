"""Generate the golden files tests/golden/<functional>.json with torch.

Run from the repository root with an environment that has torch::

    python tests/golden/make_golden.py                  # every family
    python tests/golden/make_golden.py classification   # only one of them

Each file holds small, seeded float64 cases of one loss family: the call
(options, reduction, arguments, upstream gradient) and torch's value and
autograd gradients (w.r.t. input, and var for gaussian_nll_loss; a Python
float var gets d value / d var of the scalar).  tests/test_regression.py checks
closs against these files without torch.  Arrays are stored as
{"shape": [...], "data": [flat list]}; floats use repr (exact round trip);
NaN / Infinity use Python's json extensions.

The classification family (cross_entropy, nll_loss, binary_cross_entropy,
binary_cross_entropy_with_logits, kl_div, multilabel_soft_margin_loss) goes to
tests/golden/classification/<functional>.json, checked by
tests/test_classification.py.  There, integer arrays (class-index targets)
carry "dtype": "int64", and array options (weight, pos_weight) are stored in
"kwargs" in the same {"shape", "data"} form.
"""
import json
import os
import sys
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


def regression():
    difference_family("l1_loss", 11, [{}], True)
    difference_family("mse_loss", 22, [{}], True)
    difference_family("smooth_l1_loss", 33, [{"beta": 1.0}, {"beta": 0.0}, {"beta": 0.5},
                                             {"beta": 2.5}], False)
    difference_family("huber_loss", 44, [{"delta": 1.0}, {"delta": 0.5}, {"delta": 2.5}], True)
    poisson_family()
    gaussian_family()


# ---------------------------------------------------------------------------------
# classification / probabilistic losses (tests/golden/classification/)
# ---------------------------------------------------------------------------------

CLASS_DIR = os.path.join(HERE, "classification")


def enc_any(a):
    """enc() that keeps integer arrays (class indices) integer."""
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return {"shape": list(a.shape), "data": [int(v) for v in a.ravel()], "dtype": "int64"}
    return enc(a)


def enc_kwargs(kwargs):
    return {k: enc_any(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def torch_class_call(func, args, kwargs, grad_output):
    """torch's value and gradient w.r.t. input (float64; index targets int64)."""
    x = torch.from_numpy(np.array(args[0], dtype=np.float64)).requires_grad_(True)
    y = np.asarray(args[1])
    y = torch.from_numpy(y.astype(np.int64) if y.dtype.kind in "iu" else
                         np.array(y, dtype=np.float64))
    kw = {k: torch.from_numpy(np.array(v, dtype=np.float64)) if isinstance(v, np.ndarray)
          else v for k, v in kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(torch.nn.functional, func)(x, y, **kw)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output, dtype=np.float64)).reshape(out.shape)
    out.backward(go)
    g = x.grad if x.grad is not None else torch.zeros_like(x)
    return out.detach().numpy(), g.numpy()


class ClassFamily(Family):
    def add(self, case_id, args, kwargs, reduction, grad_output=None):
        kw = dict(kwargs)
        kw["reduction"] = reduction
        value, grad = torch_class_call(self.func, args, kw, grad_output)
        self.cases.append({
            "id": case_id,
            "kwargs": enc_kwargs(kwargs),
            "reduction": reduction,
            "args": [enc_any(a) for a in args],
            "grad_output": None if grad_output is None else enc(
                grad_output if reduction == "none" else float(grad_output)),
            "value": enc(value) if reduction == "none" else float(value),
            "grads": [enc(grad)],
        })

    def write(self):
        os.makedirs(CLASS_DIR, exist_ok=True)
        path = os.path.join(CLASS_DIR, self.func + ".json")
        with open(path, "w") as f:
            json.dump({"generator": "tests/golden/make_golden.py",
                       "torch_version": torch.__version__,
                       "func": self.func, "cases": self.cases}, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(self.cases)} cases, {os.path.getsize(path)} bytes")


def _loss_shape(func, x):
    if func in ("cross_entropy", "nll_loss"):
        return () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]
    if func == "multilabel_soft_margin_loss":
        return x.shape[:-1]
    return x.shape


def cross_entropy_family(func, seed):
    fam = ClassFamily(func, seed)
    rng = fam.rng
    nll = func == "nll_loss"
    w3 = np.array([0.5, 2.0, 1.25])
    option_sets = [{}, {"weight": w3}, {"ignore_index": 1}, {"weight": w3, "ignore_index": 1}]
    if not nll:
        option_sets += [{"label_smoothing": 0.25},
                        {"weight": w3, "ignore_index": 1, "label_smoothing": 0.25}]
    shapes = [(3,), (4, 3), (2, 3, 2), (2, 3, 2, 2)]
    k = 0
    for opts in option_sets:
        for reduction in REDUCTIONS:
            for shape in shapes[k % 2::2]:  # half of the shapes per option set/reduction
                x = r3(rng.uniform(-3, 3, shape))
                if nll:
                    x = -np.abs(x)
                tshape = () if len(shape) == 1 else (shape[0],) + shape[2:]
                t = rng.integers(0, 3, tshape)
                fam.add(f"{opts}-{reduction}-{shape}", [x, t], opts, reduction,
                        fam.grad_output(reduction, tshape, k))
                k += 1
    if not nll:  # probability targets (need not sum to 1)
        for opts in [{}, {"weight": w3, "label_smoothing": 0.25}]:
            for reduction in REDUCTIONS:
                shape = [(4, 3), (2, 3, 2)][k % 2]
                x = r3(rng.uniform(-3, 3, shape))
                y = r3(rng.uniform(0, 1, shape))
                fam.add(f"prob-{opts}-{reduction}-{shape}", [x, y], opts, reduction,
                        fam.grad_output(reduction, _loss_shape(func, x), k))
                k += 1
    for reduction in REDUCTIONS:
        # every target ignored: 'mean' is nan with a zero gradient
        fam.add(f"all-ignored-{reduction}", [r3(rng.uniform(-3, 3, (2, 3))),
                                              np.array([-100, -100])], {}, reduction)
        fam.add(f"empty-{reduction}", [np.zeros((0, 3)), np.zeros((0,), np.int64)], {},
                reduction)
    fam.add("C=1", [np.array([[0.25], [-1.5]]), np.array([0, 0])], {}, "sum")
    if not nll:
        fam.add("extreme", [np.array([1000.0, 0.0, -1000.0]), np.array(1)], {}, "mean")
        fam.add("-inf-non-target", [np.array([[-np.inf, 0.5, 1.0], [0.25, -np.inf, 2.0]]),
                                    np.array([1, 2])], {}, "none")
        fam.add("nonfinite", [np.array([[np.inf, 0.5, 1.0], [np.nan, 0.0, 2.0],
                                        [1.0, 2.0, 3.0]]), np.array([1, 2, 0])], {}, "none")
    else:  # spec section 4 anchor
        x = np.array([[1, 2, .5], [.1, -1, 3], [2, 2, 2], [0, 1, -1]])
        x = x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))
        t = np.array([1, 2, 0, 2])
        w = np.array([0.2, 1.0, 3.0])
        fam.add("anchor", [x, t], {}, "mean")
        fam.add("anchor-weight", [x, t], {"weight": w}, "mean")
        fam.add("anchor-weight-ignore", [x, t], {"weight": w, "ignore_index": 2}, "sum")
    fam.write()


def binary_family(func, seed):
    fam = ClassFamily(func, seed)
    rng = fam.rng
    logits = func == "binary_cross_entropy_with_logits"
    option_sets = [{}, {"weight": np.array([0.5, 2.0, 1.25])}]
    if logits:
        option_sets += [{"pos_weight": np.array([3.0, 0.5, 1.0])},
                        {"weight": np.array([[1.5], [0.25]]),
                         "pos_weight": np.array([3.0, 0.5, 1.0])}]
    k = 0
    for opts in option_sets:
        for reduction in REDUCTIONS:
            shape = (2, 3)
            x = r3(rng.uniform(-4, 4, shape) if logits else rng.uniform(0.01, 0.99, shape))
            y = r3(rng.uniform(0, 1, shape))
            fam.add(f"{opts}-{reduction}", [x, y], opts, reduction,
                    fam.grad_output(reduction, shape, k))
            k += 1
    for reduction in REDUCTIONS:
        fam.add(f"empty-{reduction}", [np.zeros((0, 2)), np.zeros((0, 2))], {}, reduction)
    if logits:  # spec section 6 anchor, with and without pos_weight
        x = np.array([-200, -30, -1, 0, 2, 40, 800.0])
        y = np.array([1, 0, .3, 1, 0, 1, 0])
        fam.add("anchor", [x, y], {}, "none")
        fam.add("anchor-pos_weight", [x, y], {"pos_weight": np.array([3.0])}, "none")
        fam.add("nonfinite", [np.array([np.inf, -np.inf, np.inf, np.nan, 1.0]),
                              np.array([1.0, 0.0, 0.0, 1.0, 0.5])], {}, "none")
    else:  # spec section 5: clamped logs, float32(1e-12) in the gradient
        x = np.array([0.0, 1.0, 0.0, 1.0, 0.999999, 1e-20, 0.5])
        y = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.25])
        fam.add("extremes", [x, y], {}, "none")
        fam.add("extremes-sum", [x, y], {}, "sum")
        fam.add("0-d", [np.array(0.375), np.array(0.75)], {}, "mean")
    fam.write()


def kl_family():
    fam = ClassFamily("kl_div", 7070)
    rng = fam.rng
    k = 0
    for log_target in (False, True):
        for reduction in REDUCTIONS + ("batchmean",):
            shape = (3, 4)
            x = r3(np.log(rng.dirichlet(np.ones(4), 3)))
            y = r3(rng.dirichlet(np.ones(4), 3))
            if log_target:
                y = r3(np.log(y))
            fam.add(f"log_target={log_target}-{reduction}", [x, y], {"log_target": log_target},
                    reduction, fam.grad_output(reduction, shape, k))
            k += 1
    x = np.array([[-1.2, -.5, -2], [-.1, -3, -.7]])
    y = np.array([[.3, .7, 0], [.5, .2, .3]])
    for reduction in ("sum", "batchmean", "mean"):
        fam.add(f"anchor-{reduction}", [x, y], {}, reduction)
    fam.add("anchor-log_target", [x, y], {"log_target": True}, "sum")
    fam.add("broadcast-target-batchmean", [r3(rng.uniform(-3, 0, (1, 3))),
                                          r3(rng.uniform(0, 1, (4, 3)))], {}, "batchmean")
    fam.add("broadcast-input-sum", [r3(rng.uniform(-3, 0, (2, 3))),
                                    r3(rng.uniform(0, 1, (3,)))], {}, "sum")
    fam.add("special", [np.array([np.inf, -np.inf, np.nan, 1.0, 1.0, 0.5]),
                        np.array([0.0, 0.0, 0.0, -0.5, np.inf, 0.0])], {}, "none")
    fam.add("0-d-batchmean", [np.array(-0.75), np.array(0.25)], {}, "batchmean")
    fam.add("empty-batchmean", [np.zeros((0, 3)), np.zeros((0, 3))], {}, "batchmean")
    fam.write()


def multilabel_soft_margin_family():
    fam = ClassFamily("multilabel_soft_margin_loss", 8080)
    rng = fam.rng
    k = 0
    for opts in [{}, {"weight": np.array([1.0, 2.0, 0.5])}]:
        for reduction in REDUCTIONS:
            for shape in [(3,), (2, 3), (2, 2, 3)][k % 3:k % 3 + 2]:
                x = r3(rng.uniform(-4, 4, shape))
                y = (rng.random(shape) < 0.5).astype(np.float64)
                fam.add(f"{opts}-{reduction}-{shape}", [x, y], opts, reduction,
                        fam.grad_output(reduction, shape[:-1], k))
                k += 1
    x = np.array([[.3, -.5, 2], [1, 0, -40]])
    y = np.array([[1.0, 0, 1], [0, 1, 0]])
    fam.add("anchor-none", [x, y], {}, "none")
    fam.add("anchor-weight", [x, y], {"weight": np.array([1, 2, .5])}, "mean")
    fam.add("broadcast-target", [r3(rng.uniform(-4, 4, (3, 4))), np.array([1.0, 0, 0, 1])], {},
            "sum")
    fam.add("extreme", [np.array([[1e4, -1e4, 40.0], [-40.0, 0.0, 800.0]]),
                        np.array([[0.0, 1.0, 1.0], [0.0, 0.5, 1.0]])], {}, "none")
    fam.add("empty", [np.zeros((0, 3)), np.zeros((0, 3))], {}, "mean")
    fam.write()


def classification():
    cross_entropy_family("cross_entropy", 3030)
    cross_entropy_family("nll_loss", 4040)
    binary_family("binary_cross_entropy", 5050)
    binary_family("binary_cross_entropy_with_logits", 6060)
    kl_family()
    multilabel_soft_margin_family()


FAMILIES = {"regression": regression, "classification": classification}


def main(argv=()):
    torch.set_default_dtype(torch.float64)
    for name in argv or FAMILIES:
        FAMILIES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
