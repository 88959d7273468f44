# distutils: language = c++
"""Margin losses over the class axis: MultiMargin and MultiLabelMargin
(csrc/closs_margin.hpp), one sweep per row of C classes.

The caller (closs/functional.py) has validated everything into `Operands`: a
C-contiguous float input of rows * classes elements, int64 targets checked by
`first_out_of_range` (one per row for MultiMargin, a row of C for
MultiLabelMargin) and a class weight of the input's dtype.  `evaluate`
allocates the outputs, releases the GIL, runs the sweep over threads and
finishes the reduction.
"""
cimport numpy as cnp
import numpy as np
from libc.stdint cimport int64_t

from closs._kernels._arrays cimport (data_or_null, grad_buffer, index_data, native_carray, real,
                                     scalar_of, upstream)
from closs._kernels._runtime cimport threads_for

cnp.import_array()

cdef extern from "closs_margin.hpp" namespace "closs":
    ctypedef Py_ssize_t index

    cdef cppclass MarginArgs[T]:
        index rows, classes
        const T* x
        const int64_t* target
        const T* weight
        double margin
        int kind
        T* loss
        T* grad
        const T* grad_output
        double gscale

    int MARGIN_P1, MARGIN_P2, MARGIN_MULTILABEL

ctypedef double chunk_f32_t(const MarginArgs[float]&, index, index) noexcept nogil
ctypedef double chunk_f64_t(const MarginArgs[double]&, index, index) noexcept nogil

cdef extern from "closs_margin.hpp" namespace "closs":
    chunk_f32_t* margin_f32_for(int isa)
    chunk_f64_t* margin_f64_for(int isa)
    double margin_sweep[T](double (*chunk)(const MarginArgs[T]&, index, index) noexcept nogil,
                           const MarginArgs[T]& p, int threads) except + nogil

cdef extern from "closs_checks.hpp" namespace "closs":
    index first_out_of_range_c "closs::first_out_of_range"(
        const int64_t* t, index n, int64_t low, int64_t high, int threads) except + nogil

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

P1 = MARGIN_P1
P2 = MARGIN_P2
MULTILABEL = MARGIN_MULTILABEL

# Below two grains of input elements a second thread costs more than it saves.
DEF GRAIN = 32768

cdef chunk_f32_t* chunk_f32 = margin_f32_for(closs_isa_selected())
cdef chunk_f64_t* chunk_f64 = margin_f64_for(closs_isa_selected())


cdef Py_ssize_t first_bad(const int64_t* t, Py_ssize_t n, int64_t low, int64_t high):
    # the position of the first of t[0..n) outside [low, high), or -1
    cdef Py_ssize_t bad
    if n == 0:
        return -1
    cdef int threads = threads_for(n, GRAIN)
    with nogil:
        bad = first_out_of_range_c(t, n, low, high, threads)
    return bad


def first_out_of_range(cnp.ndarray target, int64_t low, int64_t high):
    """The position of the first entry of target (1-D int64) outside [low,
    high), or -1 (counted per instruction set and over threads, without the GIL)."""
    return first_bad(index_data(target), cnp.PyArray_DIM(target, 0), low, high)


cdef class Operands:
    """The validated operands of one MultiMargin / MultiLabelMargin call.

    x: the input, C-contiguous, of rows * classes elements in any shape ((),
    (C,) or (N, C): the gradient gets x's shape).  target: int64, C-contiguous
    (rows entries for MultiMargin, rows * classes for MultiLabelMargin).
    weight: (classes,) of x's dtype, or None.  kind: P1, P2 or MULTILABEL.
    loss_shape: the shape of the 'none' loss (rows elements).
    """

    cdef public cnp.ndarray x, target
    cdef public object weight, loss_shape
    cdef public Py_ssize_t rows, classes
    cdef public int kind
    cdef public double margin

    def __init__(self, int kind, cnp.ndarray x, Py_ssize_t rows, Py_ssize_t classes,
                 cnp.ndarray target, loss_shape, weight=None, double margin=1.0):
        self.kind = kind
        self.x = x
        self.rows = rows
        self.classes = classes
        self.target = target
        self.loss_shape = loss_shape
        self.weight = weight
        self.margin = margin


def plain_multilabel(x, t):
    """MultiLabelMargin's common case, which needs no conversion: x a
    C-contiguous, aligned (N, C) float32/float64 array with C > 0 and t a
    C-contiguous int64 array of x's shape, every entry in [-1, C).  Returns its
    Operands, or None for any other case (which the caller converts, and
    where it raises for a bad entry)."""
    if type(x) is not cnp.ndarray or type(t) is not cnp.ndarray:
        return None
    cdef cnp.ndarray a = <cnp.ndarray> x, b = <cnp.ndarray> t
    cdef int kind = cnp.PyArray_TYPE(a)
    if not ((kind == cnp.NPY_FLOAT32 or kind == cnp.NPY_FLOAT64) and native_carray(a)
            and cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_DIM(a, 1) > 0
            and cnp.PyArray_TYPE(b) == cnp.NPY_INT64 and native_carray(b)
            and cnp.PyArray_NDIM(b) == 2 and cnp.PyArray_DIM(b, 0) == cnp.PyArray_DIM(a, 0)
            and cnp.PyArray_DIM(b, 1) == cnp.PyArray_DIM(a, 1)):
        return None
    cdef Py_ssize_t rows = cnp.PyArray_DIM(a, 0), classes = cnp.PyArray_DIM(a, 1)
    if first_bad(<const int64_t*> cnp.PyArray_DATA(b), rows * classes, -1, classes) >= 0:
        return None
    return Operands(MARGIN_MULTILABEL, a, rows, classes, b, (rows,))


cdef double sweep(real tag, Operands ops, object loss, object grad, object grad_output,
                  double gscale) except? -1.0:
    cdef MarginArgs[real] p
    p.rows = ops.rows
    p.classes = ops.classes
    p.x = <const real*> cnp.PyArray_DATA(ops.x)
    p.target = <const int64_t*> cnp.PyArray_DATA(ops.target)
    p.weight = data_or_null(ops.weight, tag)
    p.margin = ops.margin
    p.kind = ops.kind
    p.loss = data_or_null(loss, tag)
    p.grad = data_or_null(grad, tag)
    p.grad_output = data_or_null(grad_output, tag)
    p.gscale = gscale
    cdef int threads = threads_for(cnp.PyArray_SIZE(ops.x), GRAIN)
    with nogil:
        if real is float:
            return margin_sweep[float](chunk_f32, p, threads)
        else:
            return margin_sweep[double](chunk_f64, p, threads)


def evaluate(Operands ops, str reduction, bint want_value, bint want_grad, grad_output,
             grad_out=None):
    """One sweep; returns (value or None, grad or None) as
    closs._kernels._pointwise.evaluate.  'mean' divides by the number of rows
    (each row's loss is already divided by C); an empty 'mean' is nan."""
    cdef cnp.ndarray x = ops.x
    cdef bint reduced = reduction != "none", mean = reduction == "mean"
    cdef double gscale = 1.0, total
    loss = grad = gout = None
    if want_grad:
        gscale, gout = upstream(grad_output, reduction, ops.loss_shape, (<object> x).dtype,
                                ops.rows)
        grad = grad_buffer(grad_out, 0, x)
    if want_value and not reduced:
        loss = np.empty(ops.loss_shape, (<object> x).dtype)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        total = sweep(<float> 0, ops, loss, grad, gout, gscale)
    else:
        total = sweep(<double> 0, ops, loss, grad, gout, gscale)
    value = None
    if want_value:
        value = scalar_of(total / ops.rows if mean else total, x) if reduced else loss
    return value, grad
