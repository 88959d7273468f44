# distutils: language = c++
"""Class-axis kernel family: cross-entropy and NLL (csrc/closs_softmax.hpp).

The caller (closs/functional.py) has validated everything into `Operands`:
a C-contiguous float input viewed as (outer, classes, inner), int64 targets
already range-checked (`target_weight_sum`) or probability targets of the
input's shape, and a class weight of the input's dtype.
"""
cimport numpy as cnp
import numpy as np
from libc.math cimport copysign
from libc.stdint cimport int64_t

from closs._kernels._arrays cimport data_or_null, grad_buffer, index_data, real, scalar_of, upstream
from closs._kernels._runtime cimport reuses_memory, threads_for

cnp.import_array()

cdef extern from "closs_softmax.hpp" namespace "closs":
    ctypedef Py_ssize_t index

    cdef cppclass SoftmaxArgs[T]:
        index outer, classes, inner
        const T* x
        const int64_t* target
        const T* prob
        const T* weight
        int64_t ignore_index
        double smoothing, weight_sum
        T* loss
        T* grad
        const T* grad_output
        double gscale
        bint grad_zeroed

ctypedef double chunk_f32_t(const SoftmaxArgs[float]&, index, index) noexcept nogil
ctypedef double chunk_f64_t(const SoftmaxArgs[double]&, index, index) noexcept nogil

cdef extern from "closs_softmax.hpp" namespace "closs":
    chunk_f32_t* softmax_f32_for(int isa)
    chunk_f64_t* softmax_f64_for(int isa)
    double softmax_sweep[T](double (*chunk)(const SoftmaxArgs[T]&, index, index) noexcept nogil,
                            const SoftmaxArgs[T]& p, int threads) except + nogil
    double nll_sweep[T](const SoftmaxArgs[T]& p, int threads) except + nogil
    double check_targets "closs::target_weight_sum"[T](
        const int64_t* t, index n, index classes, int64_t ignore, const T* weight, int threads,
        index* bad) except + nogil

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

# Below two grains of input elements a second thread costs more than it saves.
DEF GRAIN = 32768

cdef chunk_f32_t* chunk_f32 = softmax_f32_for(closs_isa_selected())
cdef chunk_f64_t* chunk_f64 = softmax_f64_for(closs_isa_selected())


def target_weight_sum(cnp.ndarray target, Py_ssize_t classes, int64_t ignore_index, weight):
    """Check class indices (1-D int64); returns sum of weight[t] over the
    non-ignored t (their count when weight is None): the 'mean' denominator
    of CE and NLL."""
    cdef const int64_t* t = index_data(target)
    cdef Py_ssize_t n = cnp.PyArray_DIM(target, 0), bad = -1
    cdef int threads = threads_for(n, GRAIN)
    cdef double total
    cdef const float* w32 = NULL
    cdef const double* w64 = NULL
    if weight is not None and cnp.PyArray_TYPE(<cnp.ndarray> weight) == cnp.NPY_FLOAT32:
        w32 = <const float*> cnp.PyArray_DATA(<cnp.ndarray> weight)
        with nogil:
            total = check_targets[float](t, n, classes, ignore_index, w32, threads, &bad)
    else:
        if weight is not None:
            w64 = <const double*> cnp.PyArray_DATA(<cnp.ndarray> weight)
        with nogil:
            total = check_targets[double](t, n, classes, ignore_index, w64, threads, &bad)
    if bad >= 0:
        v = target[bad]
        raise IndexError(
            f"target: expected class indices in [0, {classes}) or ignore_index "
            f"({ignore_index}), got {v} (Target {v} is out of bounds.)")
    return total


def plain_rows(x, t):
    """True for the common case that needs no conversion: x a C-contiguous,
    aligned (N, C) float32/float64 array and t a contiguous int64 array of N
    class indices."""
    if type(x) is not cnp.ndarray or type(t) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray> x, b = <cnp.ndarray> t
    cdef int kind = cnp.PyArray_TYPE(a)
    return ((kind == cnp.NPY_FLOAT32 or kind == cnp.NPY_FLOAT64)
            and cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_ISCARRAY_RO(a)
            and not cnp.PyArray_ISBYTESWAPPED(a)
            and cnp.PyArray_TYPE(b) == cnp.NPY_INT64 and cnp.PyArray_NDIM(b) == 1
            and cnp.PyArray_ISCARRAY_RO(b) and not cnp.PyArray_ISBYTESWAPPED(b)
            and cnp.PyArray_DIM(b, 0) == cnp.PyArray_DIM(a, 0))


cdef class Operands:
    """The validated operands of one cross-entropy / NLL call.

    x: the input, C-contiguous, viewed as (outer, classes, inner).  target:
    int64 class indices of outer*inner rows (or None); prob: probability
    targets of x's shape (or None); weight: (classes,) of x's dtype or None.
    count: the 'mean' denominator; loss_shape: the shape of the 'none' loss.
    """

    cdef public cnp.ndarray x
    cdef public object target, prob, weight, loss_shape
    cdef public Py_ssize_t outer, classes, inner
    cdef public int64_t ignore_index
    cdef public double smoothing, weight_sum, count

    def __init__(self, cnp.ndarray x, Py_ssize_t outer, Py_ssize_t classes, Py_ssize_t inner,
                 loss_shape, target, prob, weight, int64_t ignore_index, double smoothing,
                 double weight_sum, double count):
        self.x = x
        self.outer = outer
        self.classes = classes
        self.inner = inner
        self.loss_shape = loss_shape
        self.target = target
        self.prob = prob
        self.weight = weight
        self.ignore_index = ignore_index
        self.smoothing = smoothing
        self.weight_sum = weight_sum
        self.count = count


cdef double sweep(real tag, bint ce, Operands ops, object loss, object grad, bint grad_zeroed,
                  object grad_output, double gscale, int threads) except? -1.0:
    """One sweep of cross-entropy (ce) or NLL on `threads` threads; returns the
    sum of the row losses."""
    cdef SoftmaxArgs[real] p
    p.outer = ops.outer
    p.classes = ops.classes
    p.inner = ops.inner
    p.x = <const real*> cnp.PyArray_DATA(ops.x)
    p.target = NULL
    if ops.target is not None:
        p.target = <const int64_t*> cnp.PyArray_DATA(<cnp.ndarray> ops.target)
    p.prob = data_or_null(ops.prob, tag)
    p.weight = data_or_null(ops.weight, tag)
    p.ignore_index = ops.ignore_index
    p.smoothing = ops.smoothing
    p.weight_sum = ops.weight_sum
    p.loss = data_or_null(loss, tag)
    p.grad = data_or_null(grad, tag)
    p.grad_output = data_or_null(grad_output, tag)
    p.gscale = gscale
    p.grad_zeroed = grad_zeroed
    with nogil:
        if real is float:
            return softmax_sweep[float](chunk_f32, p, threads) if ce else nll_sweep[float](p, threads)
        else:
            return softmax_sweep[double](chunk_f64, p, threads) if ce else nll_sweep[double](p, threads)


def evaluate(Operands ops, str kind, str reduction, bint want_value, bint want_grad,
             grad_output, grad_out=None):
    """One sweep of cross-entropy (kind 'ce') or NLL (kind 'nll'); returns
    (value or None, grad or None) as closs._kernels._pointwise.evaluate."""
    cdef cnp.ndarray x = ops.x
    cdef bint reduced = reduction != "none", mean = reduction == "mean"
    cdef double gscale = 1.0, total
    cdef bint ce = kind == "ce", zeroed = False
    cdef int threads = threads_for(cnp.PyArray_SIZE(x), GRAIN)
    loss = grad = gout = None
    if want_grad:
        # an all-ignored mean: an infinite scale, but those rows get 0
        gscale, gout = upstream(grad_output, reduction, ops.loss_shape, (<object> x).dtype,
                                ops.count)
        # NLL's gradient is zero but at the targets: zeroed memory from calloc
        # saves the kernel a pass of zeros, unless the gradient reuses memory
        # (closs._kernels._runtime) or the sweep runs on several threads, which
        # split that pass between them (calloc zeroes on this one: 1e4 x 10
        # float64 on 2 threads, 58 -> 30 us)
        zeroed = not ce and grad_out is None and not reuses_memory(x) and threads == 1
        grad = (cnp.PyArray_ZEROS(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x), 0)
                if zeroed else grad_buffer(grad_out, 0, x))
    if want_value and not reduced:
        loss = np.empty(ops.loss_shape, (<object> x).dtype)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        total = sweep(<float> 0, ce, ops, loss, grad, zeroed, gout, gscale, threads)
    else:
        total = sweep(<double> 0, ce, ops, loss, grad, zeroed, gout, gscale, threads)
    if ops.prob is not None and total == 0:
        total = copysign(0.0, -1.0)  # torch negates the whole sum: -0.0 (spec 3.4)
    value = None
    if mean and ops.count == 0 and ops.smoothing > 0 and ops.target is not None and ce:
        return smoothed_mean_of_zero_weight(ops, want_value, grad if want_grad else None)
    if want_value:
        if not reduced and cnp.PyArray_NDIM(loss) == 0:
            loss += 0.0  # torch sums an unbatched 'none' loss from +0: a zero loss is +0
        value = scalar_of(total / ops.count if mean else total, x) if reduced else loss
    return value, (grad if want_grad else None)


def smoothed_mean_of_zero_weight(Operands ops, bint want_value, grad):
    """Label-smoothed cross-entropy, 'mean', when the target weights sum to 0
    (D = 0, some targets kept): torch divides the nll and the smoothing sums by
    D each, (1 - e) (nll / 0) + (smooth / 0) (e / C), which is nan or an
    infinity by their signs (not their sum divided once); its gradient is nan
    in every kept row (an infinite scale meets 0 and -inf there)."""
    value = None
    if want_value:
        dt = ops.x.dtype.type
        nll, smooth = (  # the nll sum, then the smoothing sum / C: 'sum' sweeps
            evaluate(Operands(ops.x, ops.outer, ops.classes, ops.inner, ops.loss_shape,
                              ops.target, None, ops.weight, ops.ignore_index, e, ops.weight_sum,
                              0.0), "ce", "sum", True, False, None)[0]
            for e in (0.0, 1.0))
        e = dt(ops.smoothing)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = (dt(1) - e) * (nll / dt(0)) + (smooth / dt(0)) * e
    if grad is not None:
        kept = (ops.target != ops.ignore_index).reshape(ops.outer, 1, ops.inner)
        np.copyto(grad.reshape(ops.outer, ops.classes, ops.inner), np.nan, where=kept)
    return value, grad
