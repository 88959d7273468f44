"""Generate tests/golden/ctc/ctc_loss.json with torch.

Run from the repository root with an environment that has torch::

    python tests/golden/ctc/make_golden.py

Small seeded CTC cases (spec section 21): the call (blank, zero_infinity,
reduction, log_probs, targets, lengths, upstream gradient) and torch's value
and autograd gradient w.r.t. log_probs, in float64 and float32.  Among them
the spec's anchor (section 21.4), padded, concatenated and unbatched targets,
blank at both ends, repeated labels, target length 0, input length 0 and
impossible alignments with and without zero_infinity.  tests/test_ctc.py
checks closs against this file without torch.  Arrays are stored as
{"shape": [...], "data": [flat list]} (integer arrays with "dtype": "int64");
lengths are lists, or plain ints for unbatched calls; floats use repr (exact
round trip, float32 values exactly); NaN / Infinity use Python's json
extensions.
"""
import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REDUCTIONS = ("none", "mean", "sum")


def enc(a, integer=False):
    a = np.asarray(a)
    if integer:
        return {"shape": list(a.shape), "data": [int(v) for v in a.ravel()], "dtype": "int64"}
    return {"shape": list(a.shape), "data": [float(v) for v in a.astype(np.float64).ravel()]}


def log_softmax(rng, shape, scale=1.5):
    """float64 log-probabilities rounded to 3 decimals (short in the file; CTC
    takes log_probs as given).  A float32 case casts them, as the test does."""
    x = scale * rng.standard_normal(shape)
    x -= np.log(np.sum(np.exp(x), axis=-1, keepdims=True))
    return np.round(x, 3)


def torch_case(case_id, lp64, dtype, targets, il, tl, reduction, grad_output=None, **kwargs):
    lp = lp64.astype(dtype)
    x = torch.from_numpy(lp).requires_grad_(True)
    t = torch.from_numpy(np.asarray(targets, np.int64))
    lengths = [torch.tensor(v) for v in (il, tl)]
    out = torch.nn.functional.ctc_loss(x, t, *lengths, reduction=reduction, **kwargs)
    go = torch.ones_like(out) if grad_output is None else torch.as_tensor(
        np.asarray(grad_output), dtype=out.dtype).reshape(out.shape)
    out.backward(go)
    return {
        "id": case_id, "dtype": str(lp.dtype), "kwargs": kwargs, "reduction": reduction,
        "log_probs": enc(lp64), "targets": enc(targets, integer=True),
        "input_lengths": il, "target_lengths": tl,
        "grad_output": None if grad_output is None else (
            float(grad_output) if np.ndim(grad_output) == 0 else enc(grad_output)),
        "value": enc(out.detach().numpy()), "grad": enc(x.grad.numpy()),
    }


def cases():
    out = []
    # the spec's anchor (section 21.4)
    torch.manual_seed(0)
    anchor = torch.randn(6, 3, 4, dtype=torch.float64).log_softmax(2).numpy()
    for r in REDUCTIONS:
        out.append(torch_case(f"anchor-{r}", anchor, np.float64, [[1, 2, 2], [3, 1, 0], [1, 1, 1]],
                              [6, 5, 6], [3, 2, 0], r))
    rng = np.random.default_rng(20240604)
    for dtype in (np.float64, np.float32):
        dt = np.dtype(dtype).name
        T, N, C = 8, 5, 5
        lp = log_softmax(rng, (T, N, C))
        # repeated labels, length 0, an impossible alignment (T_n = 2 < 3 needed), padding junk
        padded = np.array([[1, 1, 2, 9, -1], [3, 4, 2, 1, 1], [2, 0, 0, 0, 0],
                           [4, 4, 4, 4, 0], [1, 2, 3, 4, 2]])
        il, tl = [8, 8, 5, 2, 7], [3, 5, 0, 2, 4]
        for r in REDUCTIONS:
            go = (rng.uniform(-2, 2, N).astype(dtype) if r == "none"
                  else float(rng.uniform(0.5, 2)))
            out.append(torch_case(f"padded-{dt}-{r}", lp, dtype, padded, il, tl, r, go))
        out.append(torch_case(f"padded-zero_infinity-{dt}-mean", lp, dtype, padded, il, tl, "mean",
                              zero_infinity=True))
        concat = np.concatenate([padded[n, :tl[n]] for n in range(N)])
        out.append(torch_case(f"concatenated-{dt}-mean", lp, dtype, concat, il, tl, "mean"))
        # blank at the end of the class range; an input length of 0 (loss 0 and inf)
        padded_b = np.array([[0, 0, 2, 3, 3], [3, 1, 2, 1, 0], [2, 2, 0, 1, 1],
                             [1, 0, 3, 3, 3], [0, 1, 2, 3, 0]])
        il_b, tl_b = [8, 0, 0, 6, 8], [5, 0, 3, 1, 4]
        for zi in (False, True):
            out.append(torch_case(f"blank4-input0-zi={zi}-{dt}-sum", lp, dtype, padded_b, il_b, tl_b,
                                  "sum", blank=4, zero_infinity=zi))
        # unbatched: (S,) concatenated and (1, S) padded
        lp1 = log_softmax(rng, (7, 4))
        out.append(torch_case(f"unbatched-{dt}-none", lp1, dtype, [1, 3, 3], 7, 3, "none", 0.75))
        out.append(torch_case(f"unbatched-padded-{dt}-mean", lp1, dtype, [[2, 1, 2, 0]], [6], [3],
                              "mean", blank=3))
    return out


def main():
    path = os.path.join(HERE, "ctc_loss.json")
    doc = {"generator": "tests/golden/ctc/make_golden.py", "torch_version": torch.__version__,
           "func": "ctc_loss", "cases": cases()}
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
