"""closs: loss functions and their gradients for NumPy arrays.

torch.nn semantics, computed by a Cython/C++ core on the CPU::

    import closs
    import closs.functional as F
"""
from ._kernels._runtime import empty_cache, get_num_threads, set_num_threads
from ._version import __version__
from . import functional, modules
from .modules import *  # noqa: F401,F403  (the loss classes, listed in modules.__all__)

__all__ = (["__version__", "empty_cache", "functional", "get_num_threads", "set_num_threads"]
           + modules.__all__)
