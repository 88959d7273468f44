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
    "MarginRankingLoss",
    "HingeEmbeddingLoss",
    "SoftMarginLoss",
    "FocalLoss",
    "MultiMarginLoss",
    "MultiLabelMarginLoss",
    "CTCLoss",
    "DiceLoss",
    "TverskyLoss",
    "CosineEmbeddingLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
]


class _Loss:
    """Base of every loss class: reduction handling and the three methods.

    A subclass defines ``_operands(*args)``, which validates the forward
    arguments into the operands of one kernel sweep.
    """

    _sweep = staticmethod(F._evaluate)

    # the forward arguments that have a gradient, in the order backward returns them
    _grad_args = (0,)

    # the reductions the loss accepts, and whether 'elementwise_mean' is an alias of 'mean'
    _reductions = _v.REDUCTIONS
    _alias = True

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        self.reduction = _v.reduction(reduction, size_average, reduce,
                                      allowed=self._reductions, alias=self._alias)
        self._saved = None

    def _operands(self, *args):
        raise NotImplementedError

    def _held_arrays(self):
        """The arrays this loss keeps (weights), which a grad_out may not overwrite."""
        return [v for v in vars(self).values() if isinstance(v, np.ndarray)]

    def forward(self, *args):
        """The loss value (a NumPy scalar, or an array for reduction='none')."""
        ops = self._operands(*args)
        value = self._sweep(ops, self.reduction, True, False, None)[0]
        # saved once the sweep has succeeded (it checks some inputs' ranges)
        self._saved, self._saved_args = ops, args
        return value

    __call__ = forward

    def backward(self, grad_output=None, *, grad_out=None):
        """The gradient of the last forward's value w.r.t. its differentiable inputs.

        grad_output: the upstream gradient, a scalar for a reduced loss (default
        1.0) or an array of the loss's shape for reduction='none' (default ones).
        grad_out: preallocated gradient buffers to write into and return instead
        of fresh arrays (one writeable C-contiguous array of its argument's shape
        and the gradient's dtype, or a tuple of them for losses with several
        gradients), for callers that loop.
        """
        if self._saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): "
                "there is no value to differentiate"
            )
        outs = _v.grad_out(grad_out, self._saved_args, self._grad_args,
                           (grad_output, *self._held_arrays()))
        grad = self._sweep(self._saved, self.reduction, False, True, grad_output, outs)[1]
        return _v.deliver(grad, outs)

    def value_and_grad(self, *args, grad_output=None, grad_out=None):
        """``(value, grad)`` computed together in one sweep over the inputs;
        grad_out as in :meth:`backward`."""
        outs = None if grad_out is None else _v.grad_out(grad_out, args, self._grad_args,
                                                         (grad_output, *self._held_arrays()))
        ops = self._operands(*args)
        value, grad = self._sweep(ops, self.reduction, True, True, grad_output, outs)
        self._saved, self._saved_args = ops, args
        return value, (grad if outs is None else _v.deliver(grad, outs))

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

    _grad_args = (0, 2)  # input, var

    _alias = False

    def __init__(self, *, full=False, eps=1e-6, reduction="mean"):
        super().__init__(None, None, reduction)
        self.full = _v.flag(full, "full")
        self.eps = _v.real_number(eps, "eps")

    def _operands(self, input, target, var):
        return F._gaussian_operands(input, target, var, self.full, self.eps)


class _ClassLoss(_Loss):
    """Base of the class-axis losses (cross-entropy, NLL): weight and ignore_index."""

    _probabilities = False

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(size_average, reduce, reduction)
        self.weight = weight
        self.ignore_index, self.label_smoothing = F._class_options(ignore_index, label_smoothing)

    def _operands(self, input, target):
        return F._class_operands(input, target, self.weight, self.ignore_index,
                                 self.label_smoothing, self._probabilities)


class CrossEntropyLoss(_ClassLoss):
    """Cross-entropy of logits; see :func:`closs.functional.cross_entropy`.

    >>> import numpy as np, closs
    >>> closs.CrossEntropyLoss()(np.array([[2., 1.], [1., 2.]]), np.array([1, 0]))
    np.float64(1.3132616875182228)
    """

    _sweep = staticmethod(F._cross_entropy_sweep)
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

    _sweep = staticmethod(F._nll_sweep)

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
        # torch's module passes 'mean' on by name (so it warns), even when it
        # comes from the legacy arguments, but not 'elementwise_mean'
        self._warn_mean = reduction != "elementwise_mean" or size_average is not None \
            or reduce is not None
        self.log_target = _v.flag(log_target, "log_target")

    def _operands(self, input, target):
        if self._warn_mean and self.reduction == "mean":
            F._kl_reduction(self.reduction)  # torch warns for 'mean' at every forward
        ops = F._kl_operands(input, target, self.log_target)
        self._kernel_reduction = F._kl_batchmean(self.reduction, ops, np.shape(input))
        return ops

    def _sweep(self, ops, reduction, want_value, want_grad, grad_output, grad_out=None):
        return F._evaluate(ops, self._kernel_reduction, want_value, want_grad, grad_output,
                           grad_out)


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

    _sweep = staticmethod(F._multilabel_soft_margin_sweep)


# ----------------------------------------------------------------------------------
# Margin, ranking and focal losses: more pointwise kernels (closs/_kernels/_pointwise.pyx).
# ----------------------------------------------------------------------------------


class MarginRankingLoss(_Loss):
    """Ranking loss of two inputs; see :func:`closs.functional.margin_ranking_loss`.

    ``forward(input1, input2, target)``; ``backward`` returns
    ``(grad_input1, grad_input2)``.

    >>> import numpy as np, closs
    >>> closs.MarginRankingLoss()(np.array([1., 2., 3.]), np.array([2., 3., 4.]),
    ...                           np.array([1., -1., 1.]))
    np.float64(0.6666666666666666)
    """

    _grad_args = (0, 1)

    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = _v.real_number(margin, "margin")

    def _operands(self, input1, input2, target):
        return F._margin_ranking_operands(input1, input2, target, self.margin)

    def extra_repr(self):
        return ", ".join(filter(None, [f"margin={self.margin}", super().extra_repr()]))


class HingeEmbeddingLoss(_Loss):
    """Hinge embedding loss; see :func:`closs.functional.hinge_embedding_loss`.

    >>> import numpy as np, closs
    >>> closs.HingeEmbeddingLoss()(np.array([.3, -.5, 2, .3, 1.5, .7]),
    ...                            np.array([1, 1, -1, -1, -1, 0]))
    np.float64(0.25)
    """

    def __init__(self, margin=1.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = _v.real_number(margin, "margin")

    def _operands(self, input, target):
        return F._input_target_operands(F._pw.HINGE_EMBEDDING, input, target, self.margin)

    def extra_repr(self):
        return ", ".join(filter(None, [f"margin={self.margin}", super().extra_repr()]))


class SoftMarginLoss(_Loss):
    """Two-class logistic loss; see :func:`closs.functional.soft_margin_loss`.

    >>> import numpy as np, closs
    >>> round(float(closs.SoftMarginLoss()(np.array([0., 40.]), np.array([1., 1.]))), 6)
    0.346574
    """

    def _operands(self, input, target):
        return F._input_target_operands(F._pw.SOFT_MARGIN, input, target, input_shaped=True)


class FocalLoss(_Loss):
    """Sigmoid focal loss (torchvision's formula); see
    :func:`closs.functional.sigmoid_focal_loss`.  torchvision has no class: this
    one takes its ``alpha=0.25`` and ``gamma=2.0`` and, like every loss class,
    ``reduction='mean'`` (the functional's default is 'none').

    >>> import numpy as np, closs
    >>> closs.FocalLoss()(np.array([-3., -.5, 0, .5, 3, 20]), np.array([0., 1, 1, 0, 1, 0]))
    np.float64(2.5701404204466924)
    """

    _alias = False

    def __init__(self, alpha=0.25, gamma=2.0, reduction="mean"):
        super().__init__(None, None, reduction)
        self.alpha, self.gamma = F._focal_options(alpha, gamma)

    def _operands(self, input, target):
        return F._sigmoid_focal_operands(input, target, self.alpha, self.gamma,
                                         ("input", "target"))

    def extra_repr(self):
        return ", ".join(filter(None, [f"alpha={self.alpha}, gamma={self.gamma}",
                                       super().extra_repr()]))


# ----------------------------------------------------------------------------------
# Margin losses over the class axis: MultiMargin, MultiLabelMargin (closs/_kernels/_margin.pyx).
# ----------------------------------------------------------------------------------


class MultiMarginLoss(_Loss):
    """Multi-class hinge loss; see :func:`closs.functional.multi_margin_loss`.

    >>> import numpy as np, closs
    >>> closs.MultiMarginLoss()(np.array([[.25, .5, 1, 2], [1, -1, .5, 0]]), np.array([3, 0]))
    np.float64(0.0625)
    """

    _sweep = staticmethod(F._margin.evaluate)

    def __init__(self, p=1, margin=1.0, weight=None, size_average=None, reduce=None,
                 reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.p = F._multi_margin_p(p)
        self.margin = _v.real_number(margin, "margin")
        F._multi_margin_weight_dims(weight)
        self.weight = weight

    def _operands(self, input, target):
        return F._multi_margin_operands(input, target, self.p, self.margin, self.weight)

    def extra_repr(self):
        return ", ".join(filter(None, [f"p={self.p}, margin={self.margin}",
                                       super().extra_repr()]))


class MultiLabelMarginLoss(_Loss):
    """Multi-label hinge loss; see :func:`closs.functional.multilabel_margin_loss`.

    >>> import numpy as np, closs
    >>> closs.MultiLabelMarginLoss()(np.array([[1., 2, 3, 4]]), np.array([[0, 3, -1, -1]]))
    np.float64(1.25)
    """

    _sweep = staticmethod(F._margin.evaluate)

    def _operands(self, input, target):
        return F._multilabel_margin_operands(input, target)


# ----------------------------------------------------------------------------------
# Losses over feature rows: CosineEmbedding, TripletMargin(+WithDistance) (closs/_kernels/_features.pyx).
# ----------------------------------------------------------------------------------


class CosineEmbeddingLoss(_Loss):
    """Cosine embedding loss of pairs of rows; see
    :func:`closs.functional.cosine_embedding_loss`.

    ``forward(input1, input2, target)``; ``backward`` returns
    ``(grad_input1, grad_input2)``.

    >>> import numpy as np, closs
    >>> closs.CosineEmbeddingLoss()(np.array([[1e-7, 0.]]), np.array([[1e-7, 0.]]), np.array([1]))
    np.float64(0.9900990098618194)
    """

    _grad_args = (0, 1)

    _sweep = staticmethod(F._features.evaluate)

    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = _v.real_number(margin, "margin")

    def _operands(self, input1, input2, target):
        return F._cosine_embedding_operands(input1, input2, target, self.margin)

    def extra_repr(self):
        return ", ".join(filter(None, [f"margin={self.margin}", super().extra_repr()]))


class TripletMarginLoss(_Loss):
    """Triplet margin loss with torch's pairwise distance; see
    :func:`closs.functional.triplet_margin_loss`.

    ``forward(anchor, positive, negative)``; ``backward`` returns
    ``(grad_anchor, grad_positive, grad_negative)``.

    >>> import numpy as np, closs
    >>> closs.TripletMarginLoss(reduction="sum")(np.array([[1., 1]]), np.array([[1., 1]]),
    ...                                          np.array([[1., 1.5]]))
    np.float64(0.5000024142125624)
    """

    _grad_args = (0, 1, 2)

    _sweep = staticmethod(F._features.evaluate)

    def __init__(self, margin=1.0, p=2.0, eps=1e-06, swap=False, size_average=None, reduce=None,
                 reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin, self.p, self.eps, self.swap = F._triplet_options(
            margin, p, eps, swap, owner="TripletMarginLoss")

    def _operands(self, anchor, positive, negative):
        return F._triplet_operands(anchor, positive, negative, F._features.TRIPLET_NORM,
                                   self.margin, self.p, self.eps, self.swap)

    def extra_repr(self):
        extra = [f"margin={self.margin}", f"p={self.p}", f"eps={self.eps}", f"swap={self.swap}"]
        return ", ".join(filter(None, extra + [super().extra_repr()]))


class TripletMarginWithDistanceLoss(_Loss):
    """Triplet margin loss with a chosen distance (None / 'pairwise', 'cosine'
    or a callable that can supply its gradient); see
    :func:`closs.functional.triplet_margin_with_distance_loss`.

    ``forward(anchor, positive, negative)``; ``backward`` returns
    ``(grad_anchor, grad_positive, grad_negative)``.

    >>> import numpy as np, closs
    >>> loss = closs.TripletMarginWithDistanceLoss(distance_function="cosine", reduction="none")
    >>> loss(np.array([[1., 0], [1, 1]]), np.array([[1., 1], [0, 1]]), np.array([[0., 1], [1, 0]]))
    array([0.29289322, 1.        ])
    """

    _grad_args = (0, 1, 2)

    _alias = False
    _sweep = staticmethod(F._triplet_distance_evaluate)

    def __init__(self, *, distance_function=None, margin=1.0, swap=False, reduction="mean"):
        super().__init__(None, None, reduction)
        self.distance_function = F._distance_function(distance_function)
        self.margin = F._triplet_margin(margin, owner="TripletMarginWithDistanceLoss")
        self.swap = _v.flag(swap, "swap")

    def _operands(self, anchor, positive, negative):
        return F._triplet_distance_operands(anchor, positive, negative, self.distance_function,
                                            self.margin, self.swap)

    def extra_repr(self):
        extra = [f"distance_function={self.distance_function!r}", f"margin={self.margin}",
                 f"swap={self.swap}"]
        return ", ".join(filter(None, extra + [super().extra_repr()]))


# ----------------------------------------------------------------------------------
# Overlap losses: Dice, Tversky (closs/_kernels/_overlap.pyx).
# ----------------------------------------------------------------------------------


class _OverlapLoss(_Loss):
    """Base of the MONAI-style overlap losses: options validated at construction
    (the reduction too, MONAI's set without 'elementwise_mean'), MONAI's pipeline
    per forward (closs.functional._overlap_operands)."""

    _alias = False
    _sweep = staticmethod(F._overlap.evaluate)

    def _keep(self, opts, sigmoid, softmax):
        """Keep the validated options, and MONAI's attributes for the reader."""
        self._options = opts
        self.include_background = opts.include_background
        self.to_onehot_y = opts.to_onehot_y
        self.sigmoid, self.softmax = bool(sigmoid), bool(softmax)
        self.smooth_nr, self.smooth_dr = opts.coefficients[4:]
        self.batch = opts.batch

    def _operands(self, input, target):
        # F._overlap_operands inlined: a Python frame less on the common call
        ops = F._overlap.fast_operands(self._options, input, target)
        return F._overlap_checked(self._options, input, target) if ops is None else ops


class DiceLoss(_OverlapLoss):
    """Soft Dice loss with MONAI's ``DiceLoss`` parameters; see
    :func:`closs.functional.dice_loss`.

    ``forward(input, target)``: input (B, C, spatial...); target of input's
    shape, or labels (B, 1, spatial...) with ``to_onehot_y=True``.

    >>> import numpy as np, closs
    >>> p1 = np.array([[0.9, 0.2], [0.6, 0.1]])
    >>> x, y = np.stack([1 - p1, p1])[None], np.array([[[[1, 0], [1, 0]]]])
    >>> closs.DiceLoss(to_onehot_y=True, include_background=False)(x, y)
    np.float64(0.21052576177431115)
    """

    def __init__(self, include_background=True, to_onehot_y=False, sigmoid=False, softmax=False,
                 other_act=None, squared_pred=False, jaccard=False, reduction="mean",
                 smooth_nr=1e-5, smooth_dr=1e-5, batch=False, weight=None):
        super().__init__(None, None, reduction)
        opts = F._dice_options(include_background, to_onehot_y, sigmoid, softmax, other_act,
                               squared_pred, jaccard, smooth_nr, smooth_dr, batch, weight)
        self._keep(opts, sigmoid, softmax)
        self.squared_pred, self.jaccard = opts.squared, bool(jaccard)
        self.weight = opts.weight


class TverskyLoss(_OverlapLoss):
    """Tversky loss with MONAI's ``TverskyLoss`` parameters; see
    :func:`closs.functional.tversky_loss`.

    >>> import numpy as np, closs
    >>> p1 = np.array([[0.9, 0.2], [0.6, 0.1]])
    >>> x, y = np.stack([1 - p1, p1])[None], np.array([[[[1, 0], [1, 0]]]])
    >>> closs.TverskyLoss(to_onehot_y=True, alpha=0.3, beta=0.7)(x, y)
    np.float64(0.20077969392257156)
    """

    def __init__(self, include_background=True, to_onehot_y=False, sigmoid=False, softmax=False,
                 other_act=None, alpha=0.5, beta=0.5, reduction="mean", smooth_nr=1e-5,
                 smooth_dr=1e-5, batch=False):
        super().__init__(None, None, reduction)
        opts = F._tversky_options(include_background, to_onehot_y, sigmoid, softmax, other_act,
                                  alpha, beta, smooth_nr, smooth_dr, batch)
        self._keep(opts, sigmoid, softmax)
        self.alpha, self.beta = opts.coefficients[2:4]


# ----------------------------------------------------------------------------------
# Sequence loss: CTC (closs/_kernels/_ctc.pyx).
# ----------------------------------------------------------------------------------


class CTCLoss(_Loss):
    """Connectionist temporal classification loss; see :func:`closs.functional.ctc_loss`.

    ``forward(log_probs, targets, input_lengths, target_lengths)``; ``backward``
    returns the gradient w.r.t. log_probs in torch's convention
    (``exp(log_probs) - gamma``: exact once passed back through the
    ``log_softmax`` that produced log_probs).

    >>> import numpy as np, closs
    >>> closs.CTCLoss(reduction="sum")(np.log(np.full((3, 1, 2), 0.5)), np.array([[1]]), [3], [1])
    np.float64(0.2876820724517809)
    """

    def __init__(self, blank=0, reduction="mean", zero_infinity=False):
        super().__init__(None, None, reduction)
        self.blank = _v.integer(blank, "blank")
        self.zero_infinity = _v.flag(zero_infinity, "zero_infinity")

    def _operands(self, log_probs, targets, input_lengths, target_lengths):
        return F._ctc_operands(log_probs, targets, input_lengths, target_lengths, self.blank,
                               self.zero_infinity)

    _sweep = staticmethod(F._ctc.evaluate)

    def extra_repr(self):
        extra = [super().extra_repr()]
        if self.blank:
            extra.append(f"blank={self.blank}")
        if self.zero_infinity:
            extra.append("zero_infinity=True")
        return ", ".join(filter(None, extra))
