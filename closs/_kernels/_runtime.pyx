"""Thread count shared by every kernel, and what the build and the CPU offer."""
import numbers
import os

import numpy as np

cimport numpy as cnp
from cpython.ref cimport Py_REFCNT

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CLOSS_OPENMP 1
    #else
    #define CLOSS_OPENMP 0
    #endif
    #ifndef CLOSS_BUILD_FLAGS
    #define CLOSS_BUILD_FLAGS ""
    #endif
    """
    int CLOSS_OPENMP
    const char* CLOSS_BUILD_FLAGS

cdef extern from "closs_isa.hpp":
    int closs_isa_supported()
    int closs_isa_selected()
    const char* closs_isa_name(int isa)

OPENMP = bool(CLOSS_OPENMP)
BUILD_FLAGS = CLOSS_BUILD_FLAGS.decode()
SIMD_SUPPORTED = closs_isa_name(closs_isa_supported()).decode()
SIMD_SELECTED = closs_isa_name(closs_isa_selected()).decode()

cdef int _num_threads = 1


def contiguous(cnp.ndarray arr):
    """A C-contiguous, aligned view or copy of `arr` (closs._validation's; in
    Cython, where the flag test costs a fraction of `arr.flags`)."""
    if cnp.PyArray_ISCARRAY_RO(arr):
        return arr
    return np.array(arr, order="C", copy=True)


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_count(n, name):
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n}")
    return int(n)


def set_num_threads(n):
    """Use at most ``n`` threads in every kernel (1 = serial)."""
    global _num_threads
    _num_threads = _check_count(n, "set_num_threads(n)")


def get_num_threads():
    """The number of threads kernels may use (see set_num_threads)."""
    return _num_threads


def _init_from_environment():
    global _cache_limit
    value = os.environ.get("CLOSS_GRAD_CACHE_MB", "").strip()
    if value:
        try:
            megabytes = float(value)
        except ValueError:
            megabytes = -1.0
        if not megabytes >= 0:
            raise ValueError(f"CLOSS_GRAD_CACHE_MB: expected a number of megabytes >= 0, "
                             f"got {value!r}")
        _cache_limit = <Py_ssize_t> (megabytes * 2**20)
    value = os.environ.get("CLOSS_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"CLOSS_NUM_THREADS: expected a positive int, got {value!r}") from None
        set_num_threads(_check_count(n, "CLOSS_NUM_THREADS"))
    else:
        set_num_threads(available_cores())


# ----------------------------------------------------------------------------------
# Gradient memory.  A fresh large array costs its page faults: glibc maps every
# allocation above 32 MiB anew, and the kernel zeroes each page at its first touch
# (about 3 ms per 65 MB on the benchmark machine, as long as a large loss's
# arithmetic).  A loop that gets a gradient per call and drops it would pay that at
# every call.  So a gradient of CACHE_FROM (32 MiB) or more is a view of a block
# kept here, and a block whose arrays are all gone (this list holds its only
# reference) is handed out again.  Idle blocks are kept up to _cache_limit bytes
# (CLOSS_GRAD_CACHE_MB; 0: every gradient is fresh memory); empty_cache() frees
# them.
# ----------------------------------------------------------------------------------

cdef Py_ssize_t _cache_from = 32 << 20
CACHE_FROM = _cache_from
MAX_BLOCKS = 8  # blocks referenced here, in use or idle, most recently handed out last
cdef Py_ssize_t _cache_limit = 512 << 20
cdef list _blocks = []


cdef inline bint _idle(object block) noexcept:
    return Py_REFCNT(block) <= 2  # _blocks's reference and the caller's


cdef bint reuses_memory(cnp.ndarray a) noexcept:
    """Whether gradient_like(a) is a view of a kept block (its memory may hold
    anything) rather than fresh memory from the system."""
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(a)
    return _cache_from <= nbytes <= _cache_limit


cdef cnp.ndarray gradient_like(cnp.ndarray a):
    """An uninitialised C-contiguous array of a's shape and dtype, for a gradient."""
    if not reuses_memory(a):
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a), 0)
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(a)
    block = _take_block(nbytes)
    return block[:nbytes].view((<object> a).dtype).reshape((<object> a).shape)


cdef object _take_block(Py_ssize_t nbytes):
    cdef Py_ssize_t i
    for i in range(len(_blocks)):
        block = _blocks[i]
        if _idle(block) and nbytes <= block.size <= 2 * nbytes:
            del _blocks[i]
            _blocks.append(block)
            return block
    block = np.empty(nbytes, np.uint8)
    _blocks.append(block)
    _trim()
    return block


cdef void _trim():
    """Forget the oldest blocks past MAX_BLOCKS (an array still using one keeps it
    alive and frees it as usual), then free the oldest idle ones past _cache_limit."""
    cdef Py_ssize_t i, idle_bytes = 0
    del _blocks[:max(0, len(_blocks) - MAX_BLOCKS)]
    for i in range(len(_blocks) - 1, -1, -1):  # newest first: the oldest go
        block = _blocks[i]
        if _idle(block):
            idle_bytes += block.size
            if idle_bytes > _cache_limit:
                del _blocks[i]


def empty_cache():
    """Free the gradient memory closs keeps for reuse (the blocks no array uses)."""
    cdef Py_ssize_t i
    for i in range(len(_blocks) - 1, -1, -1):
        if _idle(_blocks[i]):
            del _blocks[i]


def cache_limit():
    """The bytes of idle gradient blocks kept for reuse (0: reuse is off)."""
    return _cache_limit


def cached_blocks():
    """(bytes in use, bytes idle) of the kept gradient blocks."""
    cdef Py_ssize_t i, used = 0, idle = 0
    for i in range(len(_blocks)):
        block = _blocks[i]
        if _idle(block):
            idle += block.size
        else:
            used += block.size
    return used, idle


_init_from_environment()


cdef int threads_for(Py_ssize_t work, Py_ssize_t grain) noexcept nogil:
    """Threads for `work` units: one below two grains, never more than one per grain."""
    if not CLOSS_OPENMP or _num_threads == 1 or work < 2 * grain:
        return 1
    if work // grain < _num_threads:
        return <int>(work // grain)
    return _num_threads
