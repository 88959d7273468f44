"""Thread count shared by every kernel, and what the build and the CPU offer."""
import numbers
import os

import numpy as np

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
    value = os.environ.get("CLOSS_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"CLOSS_NUM_THREADS: expected a positive int, got {value!r}") from None
        set_num_threads(_check_count(n, "CLOSS_NUM_THREADS"))
    else:
        set_num_threads(available_cores())


_init_from_environment()


cdef int threads_for(Py_ssize_t work, Py_ssize_t grain) noexcept nogil:
    """Threads for `work` units: one below two grains, never more than one per grain."""
    if not CLOSS_OPENMP or _num_threads == 1 or work < 2 * grain:
        return 1
    if work // grain < _num_threads:
        return <int>(work // grain)
    return _num_threads
