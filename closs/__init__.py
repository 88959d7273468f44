"""closs: loss functions and their gradients for NumPy arrays.

torch.nn semantics, computed by a Cython/C++ core on the CPU::

    import closs
    import closs.functional as F
"""
from ._kernels._runtime import get_num_threads, set_num_threads
from ._version import __version__
from .modules import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    GaussianNLLLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    MultiLabelSoftMarginLoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
)
from . import functional

__all__ = [
    "__version__",
    "functional",
    "get_num_threads",
    "set_num_threads",
    "L1Loss",
    "MSELoss",
    "SmoothL1Loss",
    "HuberLoss",
    "PoissonNLLLoss",
    "GaussianNLLLoss",
    "CrossEntropyLoss",
    "NLLLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "KLDivLoss",
    "MultiLabelSoftMarginLoss",
]
