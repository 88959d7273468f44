"""torch.nn-style loss classes.

A class holds its hyper-parameters (validated once, at construction) and has
three methods: ``forward(*args)`` (also ``__call__``) returns the value,
``backward(grad_output=None)`` the gradient of the last forward's value
w.r.t. its differentiable inputs, and ``value_and_grad(*args,
grad_output=None)`` both from one kernel sweep.  The work is done by the same
operand builders and kernel sweep as ``closs.functional``.
"""
import numpy as np

from . import _validation as _v
from . import functional as F

__all__ = [
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


class _Loss:
    """Base of every loss class: reduction handling and the three methods.

    A subclass defines ``_operands(*args)``, which validates the forward
    arguments into the operands of one kernel sweep.
    """

    _sweep = staticmethod(F._evaluate)

    # the reductions the loss accepts, and whether 'elementwise_mean' is an alias of 'mean'
    _reductions = _v.REDUCTIONS
    _alias = True

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        self.reduction = _v.reduction(reduction, size_average, reduce,
                                      allowed=self._reductions, alias=self._alias)
        self._saved = None

    def _operands(self, *args):
        raise NotImplementedError

    def forward(self, *args):
        """The loss value (a NumPy scalar, or an array for reduction='none')."""
        ops = self._saved = self._operands(*args)
        return self._sweep(ops, self.reduction, True, False, None)[0]

    __call__ = forward

    def backward(self, grad_output=None):
        """The gradient of the last forward's value w.r.t. its differentiable inputs.

        grad_output: the upstream gradient, a scalar for a reduced loss (default
        1.0) or an array of the loss's shape for reduction='none' (default ones).
        """
        if self._saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): "
                "there is no value to differentiate"
            )
        return self._sweep(self._saved, self.reduction, False, True, grad_output)[1]

    def value_and_grad(self, *args, grad_output=None):
        """``(value, grad)`` computed together in one sweep over the inputs."""
        ops = self._saved = self._operands(*args)
        return self._sweep(ops, self.reduction, True, True, grad_output)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


class L1Loss(_Loss):
    """Mean absolute error ``|input - target|``; see :func:`closs.functional.l1_loss`.

    >>> import numpy as np, closs
    >>> closs.L1Loss()(np.array([1., 2., 3.]), np.array([1., 2., 5.]))
    np.float64(0.6666666666666666)
    """

    def _operands(self, input, target):
        return F._difference_operands(F._pw.L1, input, target, None)


class MSELoss(_Loss):
    """Mean squared error ``(input - target)**2``; see :func:`closs.functional.mse_loss`.

    >>> import numpy as np, closs
    >>> closs.MSELoss()(np.array([1., 2., 3.]), np.array([1., 2., 5.]))
    np.float64(1.3333333333333333)
    """

    def _operands(self, input, target):
        return F._difference_operands(F._pw.MSE, input, target, None)


class SmoothL1Loss(_Loss):
    """Smooth L1 with threshold ``beta``; see :func:`closs.functional.smooth_l1_loss`.

    >>> import numpy as np, closs
    >>> closs.SmoothL1Loss()(np.array([2., 4., 6.]), np.array([1., 3., 5.]))
    np.float64(0.5)
    """

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = _v.non_negative(beta, "beta")

    def _operands(self, input, target):
        return F._smooth_l1_operands(input, target, self.beta)

    def extra_repr(self):
        return ", ".join(filter(None, [super().extra_repr(), f"beta={self.beta}"]))


class HuberLoss(_Loss):
    """Huber loss with threshold ``delta``; see :func:`closs.functional.huber_loss`.

    >>> import numpy as np, closs
    >>> closs.HuberLoss(delta=2.0)(np.array([0., 3.]), np.array([0.5, 0.]))
    np.float64(2.0625)
    """

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(None, None, reduction)
        self.delta = _v.positive(delta, "delta")

    def _operands(self, input, target):
        return F._huber_operands(input, target, self.delta)

    def extra_repr(self):
        return ", ".join(filter(None, [super().extra_repr(), f"delta={self.delta}"]))


class PoissonNLLLoss(_Loss):
    """Poisson negative log likelihood; see :func:`closs.functional.poisson_nll_loss`.

    >>> import numpy as np, closs
    >>> closs.PoissonNLLLoss(log_input=False)(np.array([2., 4., 6.]), np.array([1., 3., 5.]))
    np.float64(-0.6036092102977416)
    """

    _alias = False

    def __init__(self, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
                 reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.log_input = _v.flag(log_input, "log_input")
        self.full = _v.flag(full, "full")
        self.eps = _v.real_number(eps, "eps")

    def _operands(self, log_input, target):
        return F._poisson_operands(log_input, target, self.log_input, self.full, self.eps)


class GaussianNLLLoss(_Loss):
    """Gaussian negative log likelihood; see :func:`closs.functional.gaussian_nll_loss`.

    ``forward(input, target, var)``; ``backward`` returns ``(grad_input, grad_var)``.

    >>> import numpy as np, closs
    >>> closs.GaussianNLLLoss()(np.array([1., 2.]), np.array([1.5, 2.]), np.array([0.5, 1.]))
    np.float64(-0.04828679513998632)
    """

    _alias = False

    def __init__(self, *, full=False, eps=1e-6, reduction="mean"):
        super().__init__(None, None, reduction)
        self.full = _v.flag(full, "full")
        self.eps = _v.real_number(eps, "eps")

    def _operands(self, input, target, var):
        return F._gaussian_operands(input, target, var, self.full, self.eps)


class _ClassLoss(_Loss):
    """Base of the class-axis losses (cross-entropy, NLL): weight and ignore_index."""

    _kind = None
    _probabilities = False

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(size_average, reduce, reduction)
        self.weight = weight
        self.ignore_index, self.label_smoothing = F._class_options(ignore_index, label_smoothing)

    def _operands(self, input, target):
        return F._class_operands(input, target, self.weight, self.ignore_index,
                                 self.label_smoothing, self._probabilities)

    def _sweep(self, ops, reduction, want_value, want_grad, grad_output):
        return F._softmax.evaluate(ops, self._kind, reduction, want_value, want_grad, grad_output)


class CrossEntropyLoss(_ClassLoss):
    """Cross-entropy of logits; see :func:`closs.functional.cross_entropy`.

    >>> import numpy as np, closs
    >>> closs.CrossEntropyLoss()(np.array([[2., 1.], [1., 2.]]), np.array([1, 0]))
    np.float64(1.3132616875182228)
    """

    _kind = "ce"
    _probabilities = True

    def extra_repr(self):
        extra = [super().extra_repr()]
        if self.label_smoothing:
            extra.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(filter(None, extra))


class NLLLoss(_ClassLoss):
    """Negative log likelihood; see :func:`closs.functional.nll_loss`.

    >>> import numpy as np, closs
    >>> closs.NLLLoss()(np.array([[3., 1.], [2., 4.]]), np.array([0, 1]))
    np.float64(-3.5)
    """

    _kind = "nll"

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities; see :func:`closs.functional.binary_cross_entropy`.

    >>> import numpy as np, closs
    >>> closs.BCELoss()(np.array([0.4, 0.1]), np.array([0.2, 0.8]))
    np.float64(1.2275294114572126)
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.weight = weight

    def _operands(self, input, target):
        return F._bce_operands(input, target, self.weight)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits; see
    :func:`closs.functional.binary_cross_entropy_with_logits`.

    >>> import numpy as np, closs
    >>> round(float(closs.BCEWithLogitsLoss()(np.array([0.4, 0.1]), np.array([0.2, 0.8]))), 4)
    0.7487
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.weight = weight
        self.pos_weight = pos_weight

    def _operands(self, input, target):
        return F._bce_logits_operands(input, target, self.weight, self.pos_weight)


class KLDivLoss(_Loss):
    """Kullback-Leibler divergence; see :func:`closs.functional.kl_div`.

    >>> import numpy as np, closs
    >>> round(float(closs.KLDivLoss(reduction="sum")(np.log([0.5, 0.2, 0.3]),
    ...                                              np.array([0.1, 0.2, 0.7]))), 4)
    0.4322
    """

    _reductions = ("none", "batchmean", "sum", "mean")

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self._warn_mean = size_average is None and reduce is None
        self.log_target = _v.flag(log_target, "log_target")

    def _operands(self, input, target):
        if self._warn_mean:
            F._kl_reduction(self.reduction)  # torch warns for 'mean' at every forward
        ops = F._kl_operands(input, target, self.log_target)
        self._kernel_reduction = F._kl_batchmean(self.reduction, ops, np.shape(input))
        return ops

    def _sweep(self, ops, reduction, want_value, want_grad, grad_output):
        return F._evaluate(ops, self._kernel_reduction, want_value, want_grad, grad_output)


class MultiLabelSoftMarginLoss(_Loss):
    """Multi-label one-versus-all loss; see :func:`closs.functional.multilabel_soft_margin_loss`.

    >>> import numpy as np, closs
    >>> closs.MultiLabelSoftMarginLoss()(np.array([[.3, -.5, 2], [1, 0, -40]]),
    ...                                  np.array([[1, 0, 1], [0, 1, 0]]))
    np.float64(0.526961517961629)
    """

    _alias = False

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.weight = weight

    def _operands(self, input, target):
        return F._multilabel_soft_margin_operands(input, target, self.weight)

    def _sweep(self, ops, reduction, want_value, want_grad, grad_output):
        out = F._multilabel_soft_margin_finish(ops, reduction, want_grad, grad_output)
        return out if want_grad else (out, None)
