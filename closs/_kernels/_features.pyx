# distutils: language = c++
"""Feature-row kernel family (csrc/closs_features.hpp): CosineEmbedding and
TripletMargin with a p-norm or cosine distance, one sweep over rows of D features.

The caller (closs/functional.py) has validated everything into `Operands`:
C-contiguous, aligned (rows, D) arrays of one float dtype (broadcast already),
and for CosineEmbedding the targets as float64 (rows,).  This module allocates
the outputs, releases the GIL, runs the chunks of rows over threads, and sums
each gradient back to its argument's shape and dtype.
"""
cimport numpy as cnp
import numpy as np

from closs._kernels._arrays cimport (data_or_null, grad_buffer, native_carray, real, scalar_of,
                                     upstream)
from closs._kernels._runtime cimport threads_for

from closs import _validation as _v

cnp.import_array()

cdef extern from "closs_features.hpp" namespace "closs":
    ctypedef Py_ssize_t index

    cdef cppclass FeatureArgs[T]:
        index rows, D
        const T* x1
        const T* x2
        const T* x3
        const double* target
        T* loss
        T* g1
        T* g2
        T* g3
        const T* grad_output
        double gscale, margin, p, eps
        int kind, swap

    int FT_COSINE_EMBEDDING, FT_TRIPLET_NORM, FT_TRIPLET_COSINE

ctypedef double chunk_f32_t(const FeatureArgs[float]&, index, index) noexcept nogil
ctypedef double chunk_f64_t(const FeatureArgs[double]&, index, index) noexcept nogil

cdef extern from "closs_features.hpp" namespace "closs":
    chunk_f32_t* feature_f32_for(int isa)
    chunk_f64_t* feature_f64_for(int isa)
    double feature_sweep[T](double (*chunk)(const FeatureArgs[T]&, index, index) noexcept nogil,
                            const FeatureArgs[T]& p, int threads) except + nogil

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

COSINE_EMBEDDING = FT_COSINE_EMBEDDING
TRIPLET_NORM = FT_TRIPLET_NORM
TRIPLET_COSINE = FT_TRIPLET_COSINE

# Below two grains of input elements a second thread costs more than it saves.
DEF GRAIN = 32768

cdef chunk_f32_t* chunk_f32 = feature_f32_for(closs_isa_selected())
cdef chunk_f64_t* chunk_f64 = feature_f64_for(closs_isa_selected())


def plain_rows(a, b, c=None):
    """True when a, b (and c) are float32/float64 arrays of one dtype and one
    2-D shape, C-contiguous, aligned and in native byte order: the common case
    that needs no conversion."""
    if type(a) is not cnp.ndarray or type(b) is not cnp.ndarray:
        return False
    if c is not None and type(c) is not cnp.ndarray:
        return False
    cdef cnp.ndarray x = <cnp.ndarray> a
    cdef int t = cnp.PyArray_TYPE(x)
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or cnp.PyArray_NDIM(x) != 2:
        return False
    for other in (a, b, c):
        if other is None:
            continue
        y = <cnp.ndarray> other
        if (cnp.PyArray_TYPE(y) != t or cnp.PyArray_NDIM(y) != 2
                or not native_carray(y)
                or cnp.PyArray_DIM(y, 0) != cnp.PyArray_DIM(x, 0)
                or cnp.PyArray_DIM(y, 1) != cnp.PyArray_DIM(x, 1)):
            return False
    return True


def float64_target(t):
    """The 1-D target t as a C-contiguous float64 array (the kernel's); a
    native float32 one converted here, in a fraction of astype's call cost."""
    cdef cnp.ndarray a = <cnp.ndarray> t
    if (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64 and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and not cnp.PyArray_ISBYTESWAPPED(a)):
        return a
    if (cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(a) != 1
            or not native_carray(a)):
        return t.astype(np.float64)
    cdef cnp.npy_intp n = cnp.PyArray_DIM(a, 0), i
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &n, cnp.NPY_FLOAT64, 0)
    cdef const float* src = <const float*> cnp.PyArray_DATA(a)
    cdef double* dst = <double*> cnp.PyArray_DATA(out)
    for i in range(n):
        dst[i] = src[i]
    return out


cdef class Operands:
    """The validated operands of one call (kept by a loss class for backward).

    x1, x2, x3: C-contiguous (rows, D) arrays of one float dtype (x3: None for
    CosineEmbedding); target: float64 (rows,) or None.  loss_shape: the shape
    of the 'none' loss (rows elements).  full_shape: the shape the arguments
    broadcast to (the (rows, D) arrays are views of it).  grad_shapes: None
    when every gradient is a (rows, D) array of the argument's own shape and
    dtype, else per differentiable argument (its shape, its dtype) or None.
    """

    cdef public int kind, swap
    cdef public cnp.ndarray x1, x2
    cdef public object x3, target, loss_shape, full_shape, grad_shapes
    cdef public Py_ssize_t rows, D
    cdef public double margin, p, eps

    def __init__(self, int kind, cnp.ndarray x1, cnp.ndarray x2, x3, target, loss_shape,
                 double margin, double p=2.0, double eps=0.0, bint swap=False,
                 full_shape=None, grad_shapes=None):
        self.kind = kind
        self.x1 = x1
        self.x2 = x2
        self.x3 = x3
        self.target = target
        self.loss_shape = loss_shape
        self.rows = cnp.PyArray_DIM(x1, 0)
        self.D = cnp.PyArray_DIM(x1, 1)
        self.margin = margin
        self.p = p
        self.eps = eps
        self.swap = swap
        self.full_shape = full_shape
        self.grad_shapes = grad_shapes


cdef double sweep(real tag, Operands ops, object loss, object g1, object g2, object g3,
                  object grad_output, double gscale) except? -1.0:
    cdef FeatureArgs[real] p
    p.rows = ops.rows
    p.D = ops.D
    p.x1 = <const real*> cnp.PyArray_DATA(ops.x1)
    p.x2 = <const real*> cnp.PyArray_DATA(ops.x2)
    p.x3 = data_or_null(ops.x3, tag)
    p.target = NULL
    if ops.target is not None:
        p.target = <const double*> cnp.PyArray_DATA(<cnp.ndarray> ops.target)
    p.loss = data_or_null(loss, tag)
    p.g1 = data_or_null(g1, tag)
    p.g2 = data_or_null(g2, tag)
    p.g3 = data_or_null(g3, tag)
    p.grad_output = data_or_null(grad_output, tag)
    p.gscale = gscale
    p.margin = ops.margin
    p.p = ops.p
    p.eps = ops.eps
    p.kind = ops.kind
    p.swap = ops.swap
    cdef int threads = threads_for(cnp.PyArray_SIZE(ops.x1), GRAIN)
    with nogil:
        if real is float:
            return feature_sweep[float](chunk_f32, p, threads)
        else:
            return feature_sweep[double](chunk_f64, p, threads)


cdef object gradient_like(cnp.ndarray grad, full_shape, shapes):
    """A (rows, D) gradient as its argument's: reshaped to the broadcast shape,
    summed back over the dimensions the argument was broadcast along, cast to
    the argument's dtype."""
    g = grad.reshape(full_shape)
    if shapes is None:
        return g
    shape, dtype = shapes
    return _v.sum_to_shape(g, shape).astype(dtype, copy=False)


def evaluate(Operands ops, str reduction, bint want_value, bint want_grad, grad_output,
             grad_out=None):
    """One sweep; returns (value or None, grad or None) as
    closs._kernels._pointwise.evaluate.  grad is a tuple with one gradient per
    differentiable argument: (input1, input2) or (anchor, positive, negative)."""
    cdef cnp.ndarray x = ops.x1
    cdef bint reduced = reduction != "none", mean = reduction == "mean"
    cdef double gscale = 1.0, total
    dtype = (<object> x).dtype
    loss = g1 = g2 = g3 = gout = None
    if want_grad:
        gscale, gout = upstream(grad_output, reduction, ops.loss_shape, dtype, ops.rows)
        g1 = grad_buffer(grad_out, 0, x)
        g2 = grad_buffer(grad_out, 1, x)
        if ops.x3 is not None:
            g3 = grad_buffer(grad_out, 2, x)
    if want_value and not reduced:
        loss = np.empty(ops.loss_shape, dtype)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        total = sweep(<float> 0, ops, loss, g1, g2, g3, gout, gscale)
    else:
        total = sweep(<double> 0, ops, loss, g1, g2, g3, gout, gscale)
    value = grad = None
    if want_value:
        value = scalar_of(total / ops.rows if mean else total, x) if reduced else loss
    if want_grad:
        grads = (g1, g2) if g3 is None else (g1, g2, g3)
        if ops.grad_shapes is not None:
            grads = tuple(gradient_like(g, ops.full_shape, shapes)
                          for g, shapes in zip(grads, ops.grad_shapes))
        grad = grads
    return value, grad
