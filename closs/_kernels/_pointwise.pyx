# distutils: language = c++
"""Pointwise kernel family: one entry, `run`, for every elementwise loss.

The caller (closs/functional.py) has validated everything: all arrays are
C-contiguous, aligned, of one float dtype and of the same size n, and the
outputs are freshly allocated.  This module only takes their data pointers,
releases the GIL and splits the chunks of csrc/closs_pointwise.hpp over
threads; the sum of losses comes back as the pairwise sum of the chunks'
partial sums, so it is the same for any number of threads.
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

from closs._kernels._runtime cimport threads_for

cnp.import_array()

cdef extern from "closs_pointwise.hpp" namespace "closs":
    ctypedef Py_ssize_t index
    index CHUNK
    index chunk_count(index n) nogil
    double pairwise_sum(const double* v, index n) nogil

    cdef cppclass PointwiseArgs[T]:
        index n
        const T* a
        const T* b
        const T* c
        const T* w
        T* loss
        T* grad_a
        T* grad_c
        const T* grad_output
        T gscale
        double p0, p1
        int kind
        int want_sum

    int PW_L1, PW_MSE, PW_SMOOTH_L1, PW_HUBER, PW_POISSON_LOG, PW_POISSON, PW_GAUSSIAN

ctypedef double chunk_f32_t(const PointwiseArgs[float]&, index, index) noexcept nogil
ctypedef double chunk_f64_t(const PointwiseArgs[double]&, index, index) noexcept nogil

cdef extern from "closs_pointwise.hpp" namespace "closs":
    chunk_f32_t* pointwise_f32_for(int isa)
    chunk_f64_t* pointwise_f64_for(int isa)

cdef extern from "closs_isa.hpp":
    int closs_isa_selected()

L1 = PW_L1
MSE = PW_MSE
SMOOTH_L1 = PW_SMOOTH_L1
HUBER = PW_HUBER
POISSON_LOG = PW_POISSON_LOG
POISSON = PW_POISSON
GAUSSIAN = PW_GAUSSIAN

# Below two grains of elements a second thread costs more than it saves.
DEF GRAIN = 32768

cdef chunk_f32_t* chunk_f32 = pointwise_f32_for(closs_isa_selected())
cdef chunk_f64_t* chunk_f64 = pointwise_f64_for(closs_isa_selected())

ctypedef fused real:
    float
    double


cdef inline real* data_or_null(object arr, real tag) noexcept:
    if arr is None:
        return NULL
    return <real*> cnp.PyArray_DATA(<cnp.ndarray> arr)


cdef inline double chunk(const PointwiseArgs[real]& p, index lo, index hi) noexcept nogil:
    if real is float:
        return chunk_f32(p, lo, hi)
    else:
        return chunk_f64(p, lo, hi)


cdef double sweep(real tag, int kind, cnp.ndarray a, cnp.ndarray b, object c, object w,
                  object loss, object grad_a, object grad_c, object grad_output,
                  double gscale, double p0, double p1, bint want_sum) except? -1.0:
    cdef PointwiseArgs[real] p
    p.n = cnp.PyArray_SIZE(a)
    p.a = <const real*> cnp.PyArray_DATA(a)
    p.b = <const real*> cnp.PyArray_DATA(b)
    p.c = data_or_null(c, tag)
    p.w = data_or_null(w, tag)
    p.loss = data_or_null(loss, tag)
    p.grad_a = data_or_null(grad_a, tag)
    p.grad_c = data_or_null(grad_c, tag)
    p.grad_output = data_or_null(grad_output, tag)
    p.gscale = <real> gscale
    p.p0 = p0
    p.p1 = p1
    p.kind = kind
    p.want_sum = want_sum

    cdef index n = p.n, nchunks = chunk_count(n), k
    cdef double total
    cdef double* partials
    cdef int nthreads = threads_for(n, GRAIN)
    if nchunks <= 1:
        with nogil:
            return chunk(p, 0, n)
    partials = <double*> malloc(nchunks * sizeof(double))
    if partials == NULL:
        raise MemoryError()
    with nogil:
        if nthreads > 1:
            for k in prange(nchunks, num_threads=nthreads, schedule="static"):
                partials[k] = chunk(p, k * CHUNK, min(n, (k + 1) * CHUNK))
        else:
            for k in range(nchunks):
                partials[k] = chunk(p, k * CHUNK, min(n, (k + 1) * CHUNK))
        total = pairwise_sum(partials, nchunks)
    free(partials)
    return total


def run(int kind, cnp.ndarray a, cnp.ndarray b, object c, object w, object loss,
        object grad_a, object grad_c, object grad_output, double gscale,
        double p0, double p1, bint want_sum):
    """Sweep a pointwise loss once; returns the sum of losses (0.0 unless want_sum).

    a, b, c (or None), w (or None) are read; loss, grad_a, grad_c (each or None)
    are written; grad_output (or None, meaning the scalar gscale) scales the
    gradients.  All arrays: C-contiguous, aligned, a's dtype, a's size.
    """
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        return sweep(<float> 0, kind, a, b, c, w, loss, grad_a, grad_c, grad_output,
                     gscale, p0, p1, want_sum)
    return sweep(<double> 0, kind, a, b, c, w, loss, grad_a, grad_c, grad_output,
                 gscale, p0, p1, want_sum)
