# distutils: language = c++
"""Overlap kernel family: MONAI's Dice and Tversky losses (csrc/closs_overlap.hpp).

The caller (closs/functional.py) has validated everything into `Operands`: a
C-contiguous float input of shape (B, C, spatial...), viewed as (B, C, S); a
dense target of the same shape and dtype, or int64 labels (B, S) already
range-checked by `labels_as_int64`; the class weights; and the coefficients of
the score L = 1 - (k I + nr) / (u I + a P + b G + dr).  `evaluate` runs the
whole computation (two sweeps when the gradient is wanted) in one nogil call.
"""
cimport numpy as cnp
import numpy as np
from libc.stdint cimport int64_t

from closs._kernels._arrays cimport (data_or_null, grad_buffer, native_carray, real,
                                    same_float_layout, scalar_of, upstream)
from closs._kernels._runtime cimport threads_for

cnp.import_array()

cdef extern from "closs_overlap.hpp" namespace "closs":
    ctypedef Py_ssize_t index

    cdef cppclass OverlapArgs[T]:
        index batch, classes, spatial
        const T* x
        const T* target
        const int64_t* labels
        int act, squared
        index first
        int batch_sum
        double k, u, a, b, nr, dr
        const double* weight
        T* loss
        T* grad
        const T* grad_output
        double gscale

    int OV_NONE, OV_SIGMOID, OV_SOFTMAX

ctypedef double unit_f32_t(const OverlapArgs[float]&, index) noexcept nogil
ctypedef double unit_f64_t(const OverlapArgs[double]&, index) noexcept nogil

cdef extern from "closs_overlap.hpp" namespace "closs":
    unit_f32_t* overlap_f32_for(int isa)
    unit_f64_t* overlap_f64_for(int isa)
    double overlap_run[T](double (*unit)(const OverlapArgs[T]&, index) noexcept nogil,
                          const OverlapArgs[T]& p, int threads) except + nogil

cdef extern from "closs_checks.hpp" namespace "closs":
    index first_out_of_range(const int64_t* t, index n, int64_t low, int64_t high,
                             int threads) except + nogil

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

NONE = OV_NONE
SIGMOID = OV_SIGMOID
SOFTMAX = OV_SOFTMAX

# Below two grains of input elements a second thread costs more than it saves.
DEF GRAIN = 32768

cdef unit_f32_t* unit_f32 = overlap_f32_for(closs_isa_selected())
cdef unit_f64_t* unit_f64 = overlap_f64_for(closs_isa_selected())


# ----------------------------------------------------------------------------------
# Labels (to_onehot_y)
# ----------------------------------------------------------------------------------

ctypedef fused label_t:
    float
    double


cdef Py_ssize_t first_bad_label(const label_t* v, int64_t* out, Py_ssize_t n,
                                Py_ssize_t classes) noexcept nogil:
    """The index of the first float label that is not a whole number in
    [0, classes), or -1; the labels are converted into out on the way."""
    cdef Py_ssize_t i, inside = 0
    cdef int64_t w
    for i in range(n):  # branch-free count, so it vectorises; NaN is outside too
        inside += (v[i] >= 0) & (v[i] < classes)
    if inside == n:
        for i in range(n):
            w = <int64_t> v[i]  # in range, so the conversion is defined
            out[i] = w
            inside -= w != v[i]
    if inside == n:
        return -1
    for i in range(n):
        if not (v[i] >= 0 and v[i] < classes) or <int64_t> v[i] != v[i]:
            return i
    return -1


def labels_as_int64(cnp.ndarray labels, Py_ssize_t classes):
    """(int64 C-contiguous array of labels' shape, the flat index of the first
    label that is not a whole number in [0, classes) or -1).

    labels: a C-contiguous, aligned, native array of int64, float32 or float64
    (the caller converts other integer dtypes to int64).  int64 labels are
    returned as they are (no copy)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(labels), bad
    cdef int kind = cnp.PyArray_TYPE(labels)
    cdef cnp.ndarray out = labels
    if kind != cnp.NPY_INT64:
        out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(labels), cnp.PyArray_DIMS(labels),
                                cnp.NPY_INT64, 0)
    cdef int64_t* o = <int64_t*> cnp.PyArray_DATA(out)
    cdef void* v = cnp.PyArray_DATA(labels)
    cdef int threads = threads_for(n, GRAIN)
    with nogil:
        if kind == cnp.NPY_INT64:
            bad = first_out_of_range(<const int64_t*> v, n, 0, classes, threads)
        elif kind == cnp.NPY_FLOAT32:
            bad = first_bad_label(<const float*> v, o, n, classes)
        else:
            bad = first_bad_label(<const double*> v, o, n, classes)
    return out, bad


# ----------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------

cdef class Operands:
    """The validated operands of one Dice / Tversky call.

    x: the input, C-contiguous, (B, C, spatial...); target: a dense target of
    x's shape and dtype, or None; labels: int64 (B, S) labels in [0, C), or
    None.  act: NONE / SIGMOID / SOFTMAX; first: the first scored channel;
    weight: float64 (C - first,) or None; k, u, a, b, nr, dr: the score's
    coefficients.  count: the number of entries (the 'mean' denominator);
    loss_shape: the shape of the 'none' loss, (B, C - first) or with batch_sum
    (C - first,), and with keep_spatial (Dice) a 1 per spatial dim.
    """

    cdef public cnp.ndarray x
    cdef public object target, labels, weight, loss_shape
    cdef public Py_ssize_t batch, classes, spatial, first
    cdef public int act
    cdef public bint squared, batch_sum
    cdef public double k, u, a, b, nr, dr, count

    def __init__(self, cnp.ndarray x, target, labels, int act, Py_ssize_t first, bint squared,
                 bint batch_sum, coefficients, weight, bint keep_spatial):
        cdef int d
        cdef Py_ssize_t scored
        cdef tuple lead
        self.x = x
        self.batch = x.shape[0]
        self.classes = x.shape[1]
        self.spatial = 1
        for d in range(2, x.ndim):
            self.spatial *= x.shape[d]
        self.target = target
        self.labels = labels
        self.act = act
        self.first = first
        self.squared = squared
        self.batch_sum = batch_sum
        self.k, self.u, self.a, self.b, self.nr, self.dr = coefficients
        self.weight = weight
        scored = self.classes - first
        if batch_sum:
            lead = (scored,)
        else:
            lead = (self.batch, scored)
        if keep_spatial:
            lead += (1,) * (x.ndim - 2)
        self.loss_shape = lead
        self.count = scored * (1 if batch_sum else self.batch)


def fast_operands(opts, input, target):
    """The Operands of the common call, or None for closs.functional's
    _overlap_operands to validate (and raise for) any other: a native
    C-contiguous float32/float64 input (B, C >= 2, spatial...), no class
    weight, and a target of the input's layout or, with to_onehot_y, native
    C-contiguous int64 labels (B, 1, spatial...) in [0, C)."""
    act, onehot, include_background, squared, batch, coefficients, weight, keep_spatial = opts
    if weight is not None or type(input) is not cnp.ndarray:
        return None
    cdef cnp.ndarray x = <cnp.ndarray> input, t
    cdef int kind = cnp.PyArray_TYPE(x), ndim = cnp.PyArray_NDIM(x), d
    if (kind != cnp.NPY_FLOAT32 and kind != cnp.NPY_FLOAT64) or not native_carray(x):
        return None
    if ndim < 3 or cnp.PyArray_DIM(x, 1) < 2:
        return None
    cdef Py_ssize_t classes = cnp.PyArray_DIM(x, 1), n
    labels = y = None
    if onehot:
        if type(target) is not cnp.ndarray:
            return None
        t = <cnp.ndarray> target
        if cnp.PyArray_TYPE(t) != cnp.NPY_INT64 or not native_carray(t):
            return None
        if cnp.PyArray_NDIM(t) != ndim or cnp.PyArray_DIM(t, 1) != 1:
            return None
        for d in range(ndim):
            if d != 1 and cnp.PyArray_DIM(t, d) != cnp.PyArray_DIM(x, d):
                return None
        n = cnp.PyArray_SIZE(t)
        if first_out_of_range(<const int64_t*> cnp.PyArray_DATA(t), n, 0, classes,
                              threads_for(n, GRAIN)) >= 0:
            return None
        labels = t
    elif same_float_layout(x, target):
        y = target
    else:
        return None
    return Operands(x, y, labels, act, 0 if include_background else 1, squared, batch,
                    coefficients, None, keep_spatial)


cdef double run(real tag, Operands ops, object loss, object grad, object grad_output,
                double gscale) except? -1.0:
    cdef OverlapArgs[real] p
    p.batch = ops.batch
    p.classes = ops.classes
    p.spatial = ops.spatial
    p.x = <const real*> cnp.PyArray_DATA(ops.x)
    p.target = data_or_null(ops.target, tag)
    p.labels = NULL
    if ops.labels is not None:
        p.labels = <const int64_t*> cnp.PyArray_DATA(<cnp.ndarray> ops.labels)
    p.act = ops.act
    p.squared = ops.squared
    p.first = ops.first
    p.batch_sum = ops.batch_sum
    p.k, p.u, p.a, p.b, p.nr, p.dr = ops.k, ops.u, ops.a, ops.b, ops.nr, ops.dr
    p.weight = NULL
    if ops.weight is not None:
        p.weight = <const double*> cnp.PyArray_DATA(<cnp.ndarray> ops.weight)
    p.loss = data_or_null(loss, tag)
    p.grad = data_or_null(grad, tag)
    p.grad_output = data_or_null(grad_output, tag)
    p.gscale = gscale
    cdef int threads = threads_for(cnp.PyArray_SIZE(ops.x), GRAIN)
    with nogil:
        if real is float:
            return overlap_run[float](unit_f32, p, threads)
        else:
            return overlap_run[double](unit_f64, p, threads)


def evaluate(Operands ops, str reduction, bint want_value, bint want_grad, grad_output,
             grad_out=None):
    """The Dice / Tversky value and/or gradient w.r.t. the input; returns
    (value or None, grad or None) as closs._kernels._pointwise.evaluate.

    reduction 'mean' averages the count entries, 'sum' adds them, 'none'
    returns them in ops.loss_shape."""
    cdef cnp.ndarray x = ops.x
    cdef bint reduced = reduction != "none", mean = reduction == "mean"
    cdef double gscale = 1.0, total
    loss = grad = gout = None
    if want_grad:
        gscale, gout = upstream(grad_output, reduction, ops.loss_shape, (<object> x).dtype,
                                ops.count)
        grad = grad_buffer(grad_out, 0, x)
    if want_value and not reduced:
        loss = np.empty(ops.loss_shape, (<object> x).dtype)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        total = run(<float> 0, ops, loss, grad, gout, gscale)
    else:
        total = run(<double> 0, ops, loss, grad, gout, gscale)
    value = None
    if want_value:
        value = scalar_of(total / ops.count if mean else total, x) if reduced else loss
    return value, grad
