"""Loss functions and their gradients, one function per loss, with the names
and signatures of ``torch.nn.functional``.

Every function also takes ``return_grad=False``; with ``return_grad=True`` it
returns ``(value, grad)`` exactly as the loss class's ``value_and_grad`` does,
and ``grad_output`` (keyword) is the upstream gradient: a scalar for a reduced
loss, an array of the loss's shape for ``reduction='none'``.

How a call runs: validate and normalise the arguments into operands (once),
run exactly one kernel sweep that computes the value, the gradient or both,
then finish the reduction here (``_reduce``).  The loss classes in
``closs.modules`` use the same operand builders and the same sweep.
"""
import warnings

import numpy as np

from . import _validation as _v
from ._kernels import _pointwise as _pw
from ._kernels import _softmax as _softmax

__all__ = [
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "multilabel_soft_margin_loss",
]

# ----------------------------------------------------------------------------------
# Pointwise losses: validated Operands, then one sweep of
# closs/_kernels/_pointwise.pyx (`evaluate`), which also allocates the outputs
# and finishes the reduction (kernels return sums, pairwise in double).
# ----------------------------------------------------------------------------------

_Operands = _pw.Operands
_same_layout = _pw.same_layout
_evaluate = _pw.evaluate


def _finish(ops, reduction, return_grad, grad_output):
    value, grad = _evaluate(ops, reduction, True, return_grad, grad_output)
    return (value, grad) if return_grad else value


def _broadcast_operands(arrays, shape):
    """Each array as a C-contiguous array of `shape` (a copy only where needed)."""
    return [
        None if arr is None
        else _v.contiguous(arr if arr.shape == shape else np.broadcast_to(arr, shape))
        for arr in arrays
    ]


def _difference_operands(kind, input, target, weight, p0=0.0, *, weighted_mean_by="weight"):
    """Operands of the losses of input - target (L1, MSE, SmoothL1, Huber).

    A target of another shape broadcasts with torch's warning.  The functional
    `weight` must have input's shape; a weighted 'mean' divides by sum(weight)
    (L1, MSE) or by the number of elements (Huber), as torch.
    """
    if weight is None and _same_layout(input, target):  # the common case, kept fast
        return _Operands(kind, input, target, None, None, p0)
    a = _v.float_array(input, "input")
    b = _v.operand(target, "target", a.dtype)
    w = None if weight is None else _v.operand(weight, "weight", a.dtype)
    count = None
    if w is not None:
        _v.same_shape(w, a.shape, "weight")
        if weighted_mean_by == "weight":
            count = float(np.sum(w, dtype=np.float64))
    if b.shape == a.shape:
        a, b, w = _broadcast_operands((a, b, w), a.shape)
        return _Operands(kind, a, b, None, w, p0, count=count)
    _v.warn_target_size(a.shape, b.shape)
    shape = _v.broadcast_shape(a.shape, b.shape, "input", "target")
    a_shape = a.shape
    a, b, w = _broadcast_operands((a, b, w), shape)
    return _Operands(kind, a, b, None, w, p0, a_shape=a_shape, count=count)


def _weighted_reduction(reduction, size_average, reduce, weight):
    # torch checks the weighted functionals' reduction with a plain comparison
    if weight is None:
        return _v.reduction(reduction, size_average, reduce)
    return _v.reduction(reduction, size_average, reduce, alias=False)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *,
            return_grad=False, grad_output=None):
    """Mean absolute error: ``l = |input - target|`` (times ``weight`` if given).

    Parameters
    ----------
    input, target : array_like
        Any shape; target broadcasts against input with torch's warning.
    reduction : {'mean', 'sum', 'none'}
        'mean' divides by the number of elements, or by ``weight.sum()`` when
        ``weight`` (input's shape) is given.
    return_grad : bool
        Also return d value / d input; the derivative at ``input == target``
        is 0, as torch's ``sign(0)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.l1_loss(np.array([1., 2., 3.]), np.array([1., 2., 5.]))
    np.float64(0.6666666666666666)
    """
    reduction = _weighted_reduction(reduction, size_average, reduce, weight)
    ops = _difference_operands(_pw.L1, input, target, weight)
    return _finish(ops, reduction, return_grad, grad_output)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *,
             return_grad=False, grad_output=None):
    """Mean squared error: ``l = (input - target)**2`` (times ``weight`` if given).

    Shapes, ``weight`` and reductions as :func:`l1_loss`; the gradient is
    ``2 (input - target)`` times the reduction's scale.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> value, grad = F.mse_loss(np.array([1., 2., 3.]), np.array([1., 2., 5.]), return_grad=True)
    >>> value, grad
    (np.float64(1.3333333333333333), array([ 0.        ,  0.        , -1.33333333]))
    """
    reduction = _weighted_reduction(reduction, size_average, reduce, weight)
    ops = _difference_operands(_pw.MSE, input, target, weight)
    return _finish(ops, reduction, return_grad, grad_output)


def _smooth_l1_operands(input, target, beta):
    beta = _v.non_negative(beta, "beta")
    if beta == 0.0:  # torch computes plain L1 (value and gradient) for beta == 0
        return _difference_operands(_pw.L1, input, target, None)
    return _difference_operands(_pw.SMOOTH_L1, input, target, None, beta)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0, *,
                   return_grad=False, grad_output=None):
    """Smooth L1: ``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``,
    with ``d = input - target``.

    ``beta = 0`` is exactly :func:`l1_loss`; ``beta < 0`` raises ValueError.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.smooth_l1_loss(np.array([2., 4., 6.]), np.array([1., 3., 5.]))
    np.float64(0.5)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _smooth_l1_operands(input, target, beta)
    return _finish(ops, reduction, return_grad, grad_output)


def _huber_operands(input, target, delta, weight=None):
    delta = _v.positive(delta, "delta")
    return _difference_operands(_pw.HUBER, input, target, weight, delta,
                                weighted_mean_by="count")


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None, *, return_grad=False,
               grad_output=None):
    """Huber loss: ``0.5 d**2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``.

    ``delta`` must be > 0.  With ``weight`` (input's shape), 'mean' divides the
    weighted sum by the number of elements (not by the sum of weights), as torch.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.huber_loss(np.array([0., 3.]), np.array([0.5, 0.]), delta=2.0)
    np.float64(2.0625)
    """
    reduction = _weighted_reduction(reduction, None, None, weight)
    ops = _huber_operands(input, target, delta, weight)
    return _finish(ops, reduction, return_grad, grad_output)


def _silent_broadcast(a, others):
    """The shape a and the other (name, array) operands broadcast to (no warning)."""
    shape = a.shape
    for name, arr in others:
        if arr is not None and arr.shape != shape:
            shape = _v.broadcast_shape(shape, arr.shape, "input", name)
    return shape


def _poisson_operands(log_input, target, log_input_flag, full, eps):
    """log_input_flag, full (bools) and eps (a float) come validated."""
    kind = _pw.POISSON_LOG if log_input_flag else _pw.POISSON
    if _same_layout(log_input, target):  # the common case, kept fast
        return _Operands(kind, log_input, target, None, None, eps, float(full))
    a = _v.float_array(log_input, "input")
    b = _v.operand(target, "target", a.dtype)
    shape = _silent_broadcast(a, [("target", b)])
    a_shape = a.shape
    a, b = _broadcast_operands((a, b), shape)
    return _Operands(kind, a, b, None, None, eps, float(full), a_shape=a_shape)


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8,
                     reduce=None, reduction="mean", *, return_grad=False, grad_output=None):
    """Poisson negative log likelihood.

    ``log_input=True``: ``l = exp(input) - target * input``;
    ``log_input=False``: ``l = input - target * log(input + eps)``.
    ``full=True`` adds Stirling's term ``t log t - t + 0.5 log(2 pi t)`` where
    ``target > 1``.  target broadcasts silently against input.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.poisson_nll_loss(np.array([2., 4., 6.]), np.array([1., 3., 5.]), log_input=False)
    np.float64(-0.6036092102977416)
    """
    reduction = _v.reduction(reduction, size_average, reduce, alias=False)
    ops = _poisson_operands(input, target, _v.flag(log_input, "log_input"), _v.flag(full, "full"),
                            _v.real_number(eps, "eps"))
    return _finish(ops, reduction, return_grad, grad_output)


def _gaussian_var(var, input_shape, dtype):
    """torch's checks and shape rules for GaussianNLL's var; returns the array
    that broadcasts against input and the shapes of its gradient (as
    _gradient_like takes them)."""
    if not isinstance(var, np.ndarray) and np.ndim(var) == 0 and not isinstance(var, (list, tuple)):
        value = _v.real_number(var, "var")
        if value < 0:
            raise ValueError(f"var: expected entries >= 0 (var has negative entry/entries), "
                             f"got {value}")
        return np.asarray(value, dtype=dtype), None
    v = _v.operand(var, "var", dtype)
    if np.any(v < 0):
        raise ValueError("var: expected entries >= 0 (var has negative entry/entries), "
                         f"got a minimum of {v.min()}")
    if v.shape == input_shape:
        return v, (v.shape, v.shape)
    if v.shape == input_shape[:-1]:  # homoscedastic: one variance per row
        return v[..., None], (v.shape + (1,), v.shape)
    if v.ndim == len(input_shape) and sum(
            vs for xs, vs in zip(input_shape, v.shape) if xs != vs) == 1:
        return v, (v.shape, v.shape)
    raise ValueError(f"var: expected the shape of input {input_shape}, input.shape[:-1] "
                     f"{input_shape[:-1]} or a shape with one dimension of size 1 "
                     f"(var is of incorrect size), got {v.shape}")


def _gaussian_operands(input, target, var, full, eps):
    """full (a bool) and eps (a float) come validated."""
    if (_same_layout(input, target) and _same_layout(input, var)  # the common case, kept fast
            and not _pw.has_negative(var)):
        return _Operands(_pw.GAUSSIAN, input, target, var, None, eps, float(full),
                         c_shape=(var.shape, var.shape))
    a = _v.float_array(input, "input")
    b = _v.operand(target, "target", a.dtype)
    c, c_shape = _gaussian_var(var, a.shape, a.dtype)
    shape = _silent_broadcast(a, [("target", b), ("var", c)])
    a_shape = a.shape
    a, b, c = _broadcast_operands((a, b, c), shape)
    return _Operands(_pw.GAUSSIAN, a, b, c, None, eps, float(full), a_shape=a_shape,
                      c_shape=c_shape)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean", *,
                      return_grad=False, grad_output=None):
    """Gaussian negative log likelihood:
    ``l = 0.5 (log v + (input - target)**2 / v)`` with ``v = max(var, eps)``,
    plus ``0.5 log(2 pi)`` if ``full``.

    var has input's shape, or input.shape[:-1], or input's shape with one
    dimension of size 1 (homoscedastic), or is a Python number.  With
    ``return_grad=True`` the gradient is ``(grad_input, grad_var)``; as in
    torch, the var gradient is not masked where the eps clamp is active.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.gaussian_nll_loss(np.array([1., 2.]), np.array([1.5, 2.]), np.array([0.5, 1.]))
    np.float64(-0.04828679513998632)
    """
    reduction = _v.reduction(reduction, allowed=_v.REDUCTIONS, alias=False)
    ops = _gaussian_operands(input, target, var, _v.flag(full, "full"), _v.real_number(eps, "eps"))
    return _finish(ops, reduction, return_grad, grad_output)


# ----------------------------------------------------------------------------------
# Class-axis losses (cross-entropy, NLL): Operands over (outer, classes, inner),
# then one sweep of closs/_kernels/_softmax.pyx.
# ----------------------------------------------------------------------------------


def _class_layout(x):
    """(outer, classes, inner, the 'none' loss shape) of a (C,), (N, C) or
    (N, C, d1, ..., dK) input."""
    if x.ndim == 0:
        raise ValueError("input: expected an array of shape (C,), (N, C) or (N, C, d1, ..., dK), "
                         "got a 0-d array")
    if x.ndim == 1:
        return 1, x.shape[0], 1, ()
    inner = 1
    for d in x.shape[2:]:
        inner *= d
    # A zero spatial dim leaves no positions at all: say so with outer = 0 (the
    # kernels' layout choice looks at inner > 1 and would otherwise treat an
    # (N, C, 0) input as N rows of C contiguous values, past the empty buffers).
    outer = x.shape[0] if inner else 0
    return outer, x.shape[1], inner, (x.shape[0],) + x.shape[2:]


def _class_targets(target, x, loss_shape):
    """Class indices as a flat C-contiguous int64 array of the 'none' loss's size."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target: expected an integer array of class indices (or probabilities "
                        f"of input's shape {x.shape}), got {_v._describe(t)} of shape {t.shape}")
    if x.ndim == 1:
        if t.shape not in ((), (1,)):
            raise ValueError(f"target: expected shape () or (1,) for a 1-D input (For 1D input, "
                             f"1D target must have size 1), got {t.shape}")
    elif t.ndim == 0 or t.shape[0] != x.shape[0]:
        got = t.shape[0] if t.ndim else 0
        raise ValueError(f"target: expected batch size {x.shape[0]} (Expected input batch_size "
                         f"({x.shape[0]}) to match target batch_size ({got})), got shape {t.shape}")
    elif t.shape != loss_shape:
        raise ValueError(f"target: expected shape {loss_shape} for input of shape {x.shape}, "
                         f"got {t.shape}")
    if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
        raise IndexError(f"target: expected class indices below {x.shape[x.ndim > 1]}, "
                         f"got {t.max()}")
    return np.ascontiguousarray(t, dtype=np.int64).reshape(-1)


def _class_weight(weight, classes, dtype):
    if weight is None:
        return None
    w = _v.operand(weight, "weight", dtype)
    if w.shape != (classes,):
        raise ValueError(f"weight: expected shape ({classes},), one weight per class, "
                         f"got {w.shape}")
    return _v.contiguous(w)


def _class_options(ignore_index, label_smoothing):
    """Validated (ignore_index, label_smoothing) of cross-entropy and NLL."""
    ignore_index = _v.integer(ignore_index, "ignore_index")
    if not -2 ** 63 <= ignore_index < 2 ** 63:  # torch's int64; else an OverflowError below
        raise ValueError(f"ignore_index: expected an integer in the int64 range, "
                         f"got {ignore_index}")
    smoothing = _v.real_number(label_smoothing, "label_smoothing")
    if smoothing > 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {smoothing}")
    return ignore_index, max(smoothing, 0.0)  # torch treats a negative value as 0


def _class_operands(input, target, weight, ignore_index, smoothing, probabilities):
    """Operands of cross-entropy (probabilities=True allows probability targets) and
    NLL; ignore_index and smoothing come validated from _class_options."""
    if weight is None and _softmax.plain_rows(input, target):  # the common case, kept fast
        outer, classes = input.shape
        count = _softmax.target_weight_sum(target, classes, ignore_index, None)
        return _softmax.Operands(input, outer, classes, 1, (outer,), target, None, None,
                                 ignore_index, smoothing, float(classes), count)
    x = _v.contiguous(_v.float_array(input, "input"))
    outer, classes, inner, loss_shape = _class_layout(x)
    w = _class_weight(weight, classes, x.dtype)
    weight_sum = float(classes) if w is None else float(np.sum(w, dtype=np.float64))
    if probabilities and np.shape(target) == x.shape:
        y = np.asarray(target)
        if y.dtype.kind != "f":
            raise TypeError(f"target: expected floating-point class probabilities of input's "
                            f"shape {x.shape}, got {_v._describe(y)}")
        if ignore_index >= 0:
            raise ValueError(f"ignore_index: expected a negative value with probability targets "
                             f"(not supported for floating point target), got {ignore_index}")
        prob = _v.contiguous(_v.operand(y, "target", x.dtype))
        return _softmax.Operands(x, outer, classes, inner, loss_shape, None, prob, w,
                                 ignore_index, smoothing, weight_sum, float(outer * inner))
    t = _class_targets(target, x, loss_shape)
    count = _softmax.target_weight_sum(t, classes, ignore_index, w)
    return _softmax.Operands(x, outer, classes, inner, loss_shape, t, None, w, ignore_index,
                             smoothing, weight_sum, count)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0, *, return_grad=False, grad_output=None):
    """Cross-entropy of logits over the class axis (dim 1; dim 0 for a 1-D input).

    target: class indices (any integer dtype) of shape (), (N,) or
    (N, d1, ..., dK); or class probabilities of input's shape.  'mean' divides
    by the summed weight of the non-ignored targets (by N*d1*...*dK for
    probability targets).  Computed in one sweep per row: max, sum of
    exponentials, loss, gradient ``softmax - onehot`` (smoothing and weights
    folded in); never a full log-softmax array.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.cross_entropy(np.array([[0.1, 0.2, 0.3]]), np.array([1]))
    np.float64(1.1019428482292442)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ignore_index, smoothing = _class_options(ignore_index, label_smoothing)
    ops = _class_operands(input, target, weight, ignore_index, smoothing, True)
    value, grad = _softmax.evaluate(ops, "ce", reduction, True, return_grad, grad_output)
    return (value, grad) if return_grad else value


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean", *, return_grad=False, grad_output=None):
    """Negative log likelihood ``-weight[t] * input[t]`` over the class axis.

    Shapes, weight, ignore_index and the 'mean' denominator as
    :func:`cross_entropy` with class-index targets.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.nll_loss(np.array([[3., 1.], [2., 4.]]), np.array([0, 1]))
    np.float64(-3.5)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ignore_index = _class_options(ignore_index, 0.0)[0]
    ops = _class_operands(input, target, weight, ignore_index, 0.0, False)
    value, grad = _softmax.evaluate(ops, "nll", reduction, True, return_grad, grad_output)
    return (value, grad) if return_grad else value


# ----------------------------------------------------------------------------------
# Binary and distribution losses: more pointwise kernels.
# ----------------------------------------------------------------------------------


def _weight_like(weight, shape, dtype, name="weight"):
    """An element weight (or pos_weight) broadcast to the loss's shape; it may
    not be larger than the loss, as torch."""
    if weight is None:
        return None
    w = _v.operand(weight, name, dtype)
    if w.shape != shape:
        full = _v.broadcast_shape(shape, w.shape, "input", name)
        if full != shape:
            raise ValueError(f"{name}: expected a shape that broadcasts to input's shape "
                             f"{shape}, got {w.shape}")
        w = np.broadcast_to(w, shape)
    return _v.contiguous(w)


def _in_unit_interval(arr, name):
    """arr: C-contiguous, of a float dtype."""
    bad = _pw.first_outside_unit_interval(arr)
    if bad >= 0:
        raise ValueError(f"{name}: expected all elements between 0 and 1, "
                         f"got {arr.reshape(-1)[bad]}")


def _bce_operands(input, target, weight):
    if weight is None and _same_layout(input, target):  # the common case, kept fast
        _in_unit_interval(input, "input")
        _in_unit_interval(target, "target")
        return _Operands(_pw.BCE, input, target)
    a = _v.contiguous(_v.float_array(input, "input"))
    b = _v.contiguous(_v.operand(target, "target", a.dtype))
    _v.same_shape(b, a.shape, "target")
    _in_unit_interval(a, "input")
    _in_unit_interval(b, "target")
    return _Operands(_pw.BCE, a, b, None, _weight_like(weight, a.shape, a.dtype))


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean", *, return_grad=False, grad_output=None):
    """Binary cross-entropy of probabilities:
    ``-w (y log x + (1 - y) log(1 - x))``, each log clamped at -100.

    input and target (same shape) must lie in [0, 1] (ValueError otherwise);
    weight broadcasts to input's shape.  The gradient is torch's
    ``w (x - y) / max(x (1 - x), 1e-12)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.binary_cross_entropy(np.array([0.4, 0.1]), np.array([0.2, 0.8]))
    np.float64(1.2275294114572126)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _bce_operands(input, target, weight)
    return _finish(ops, reduction, return_grad, grad_output)


def _bce_logits_operands(input, target, weight, pos_weight):
    a = _v.contiguous(_v.float_array(input, "input"))
    b = _v.contiguous(_v.operand(target, "target", a.dtype))
    if b.shape != a.shape:
        raise ValueError(f"target: expected the shape of input {a.shape} (Target size must be "
                         f"the same as input size), got {b.shape}")
    w = _weight_like(weight, a.shape, a.dtype)
    if pos_weight is None:
        return _Operands(_pw.BCE_LOGITS, a, b, None, w)
    pw = _weight_like(pos_weight, a.shape, a.dtype, "pos_weight")
    return _Operands(_pw.BCE_LOGITS_POS, a, b, pw, w)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None, *, return_grad=False,
                                     grad_output=None):
    """Binary cross-entropy of logits, in torch's stable form
    ``w ((1 - y) x - (1 + (pos_weight - 1) y) log_sigmoid(x))``.

    target has input's shape (not range-checked); weight and pos_weight
    broadcast against it (pos_weight usually one value per class, the last
    dim).  The gradient is ``w ((pos_weight y + 1 - y) sigmoid(x) - pos_weight y)``.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.binary_cross_entropy_with_logits(np.array([0.4, 0.1]), np.array([0.2, 0.8]))
    np.float64(0.7487...)
    """
    reduction = _v.reduction(reduction, size_average, reduce)
    ops = _bce_logits_operands(input, target, weight, pos_weight)
    return _finish(ops, reduction, return_grad, grad_output)


_KL_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release.")


def _kl_operands(input, target, log_target):
    log_target = _v.flag(log_target, "log_target")
    a = _v.float_array(input, "input")
    b = _v.operand(target, "target", a.dtype)
    shape = _silent_broadcast(a, [("target", b)])
    a_shape = a.shape
    a, b = _broadcast_operands((a, b), shape)
    return _Operands(_pw.KL_LOG if log_target else _pw.KL, a, b, a_shape=a_shape)


def _kl_reduction(reduction, size_average=None, reduce=None):
    """kl_div's reduction (it also has 'batchmean'), with torch's warning for 'mean'."""
    legacy = size_average is not None or reduce is not None
    reduction = _v.reduction(reduction, size_average, reduce,
                             allowed=("none", "batchmean", "sum", "mean"))
    if reduction == "mean" and not legacy:
        warnings.warn(_KL_MEAN_WARNING, UserWarning, stacklevel=3)
    return reduction


def _kl_batchmean(reduction, ops, input_shape):
    """'batchmean' is a mean over input.shape[0] (1 for a 0-d input)."""
    if reduction == "batchmean":
        ops.count = input_shape[0] if input_shape else 1
        return "mean"
    return reduction


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False, *,
           return_grad=False, grad_output=None):
    """Kullback-Leibler divergence of log-probabilities ``input`` from ``target``:
    ``xlogy(y, y) - y x`` (``exp(y) (y - x)`` with ``log_target=True``).

    'batchmean' divides the sum by ``input.shape[0]``; 'mean' divides by the
    number of elements (with torch's warning).  target broadcasts silently.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.kl_div(np.log([0.5, 0.2, 0.3]), np.array([0.1, 0.2, 0.7]), reduction="sum")
    np.float64(0.43216...)
    """
    reduction = _kl_reduction(reduction, size_average, reduce)
    ops = _kl_operands(input, target, log_target)
    reduction = _kl_batchmean(reduction, ops, np.shape(input))
    return _finish(ops, reduction, return_grad, grad_output)


class _NoClassDimError(ValueError, IndexError):
    """A 0-d input where a class dim is needed: ValueError (a wrong shape, API.md)
    that is also torch's IndexError ("Dimension specified as -1 but tensor has no
    dimensions"), as NumPy's AxisError is both."""


def _multilabel_soft_margin_operands(input, target, weight):
    a = _v.float_array(input, "input")
    if a.ndim == 0:
        raise _NoClassDimError("input: expected at least 1 dimension (the classes), "
                               "got a 0-d array")
    b = _v.operand(target, "target", a.dtype)
    shape = _silent_broadcast(a, [("target", b)])
    if shape != a.shape:
        raise ValueError(f"target: expected a shape that broadcasts to input's shape {a.shape}, "
                         f"got {b.shape}")
    a, b = _broadcast_operands((a, b), shape)
    return _Operands(_pw.SOFT_MARGIN_ML, a, b, None, _weight_like(weight, shape, a.dtype))


def _multilabel_soft_margin_finish(ops, reduction, return_grad, grad_output):
    """Rows are the last dim: the value sums each row's C element terms and
    divides by C; the kernel's 'mean' with count C (or n) does that in one sweep."""
    a = ops.a
    classes = a.shape[-1]
    if reduction == "none":  # two sweeps: the per-element terms, then the gradient
        loss = _evaluate(ops, "none", True, False, None)[0]
        with np.errstate(invalid="ignore", divide="ignore"):  # C = 0: rows of 0/0 = nan, quietly
            value = np.asarray(np.sum(loss, axis=-1, dtype=np.float64) / classes,
                               dtype=a.dtype)
        if not return_grad:
            return value
        if grad_output is None:
            ops.count = classes
            return value, _evaluate(ops, "mean", False, True, None)[1]
        g = _v.grad_output(grad_output, "none", a.shape[:-1], a.dtype)[1]
        gout = np.ascontiguousarray(np.broadcast_to(g[..., None] / classes, a.shape))
        return value, _evaluate(ops, "none", False, True, gout)[1]
    ops.count = a.size if reduction == "mean" else classes
    return _finish(ops, "mean", return_grad, grad_output)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None,
                                reduction="mean", *, return_grad=False, grad_output=None):
    """Multi-label one-versus-all loss over the last dim (the C classes):
    ``(1/C) sum_c w_c (-y_c log_sigmoid(x_c) - (1 - y_c) log_sigmoid(-x_c))``.

    'none' gives one value per row (input.shape[:-1]); 'mean' averages rows.

    Examples
    --------
    >>> import numpy as np, closs.functional as F
    >>> F.multilabel_soft_margin_loss(np.array([[.3, -.5, 2], [1, 0, -40]]),
    ...                               np.array([[1, 0, 1], [0, 1, 0]]))
    np.float64(0.526961517961629)
    """
    reduction = _v.reduction(reduction, size_average, reduce, alias=False)
    ops = _multilabel_soft_margin_operands(input, target, weight)
    return _multilabel_soft_margin_finish(ops, reduction, return_grad, grad_output)
