// Pointwise losses: one value per element, from the element's input `a`,
// target `b` and, for some losses, a third operand `c` (GaussianNLL's var).
// MarginRanking's operands are (input1, input2, target), and it differentiates
// both `a` and `b`.
//
// Design:
// 1. Each loss is a small functor whose call returns the element's loss and
//    writes its derivatives w.r.t. `a` (and `b` or `c`).  value, gradient and
//    value-and-gradient are all built from that one function, so they cannot
//    disagree.
// 2. loop<>() sweeps one chunk [lo, hi): it reads each operand once and writes
//    the per-element loss ('none') and/or the gradient once; for 'mean'/'sum'
//    the values go to a block buffer that closs_sum.hpp reduces.  The mode
//    (which outputs are wanted) is a template parameter so every combination
//    compiles to a branch-free, vectorised loop.
// 3. pointwise_chunk() turns the run-time kind and mode into those template
//    arguments; it is compiled once per instruction set (closs_isa.hpp).
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "closs_checks.hpp"
#include "closs_isa.hpp"
#include "closs_math.hpp"
#include "closs_sum.hpp"

namespace closs {

enum PointwiseKind {
    PW_L1 = 0,
    PW_MSE,
    PW_SMOOTH_L1,
    PW_HUBER,
    PW_POISSON_LOG,  // PoissonNLL with log_input=True
    PW_POISSON,      // PoissonNLL with log_input=False
    PW_GAUSSIAN,
    PW_BCE,
    PW_BCE_LOGITS,      // BCEWithLogits without pos_weight
    PW_BCE_LOGITS_POS,  // BCEWithLogits, pos_weight as the third operand
    PW_KL,              // KLDiv, probability target
    PW_KL_LOG,          // KLDiv, log-probability target
    PW_SOFT_MARGIN_ML,  // MultiLabelSoftMargin's element term (divided by C by the caller)
    PW_MARGIN_RANKING,  // a = input1, b = input2, c = target; p0 = margin
    PW_HINGE_EMBEDDING, // p0 = margin
    PW_SOFT_MARGIN,
    PW_SIGMOID_FOCAL,   // p0 = alpha (< 0: none), p1 = gamma
};

// Input ranges the sweep checks block by block, where the block is in L1
// anyway, instead of a pass of its own over memory before it (BCE float32
// 1e7: two such passes were 16% of its time).  The caller wants nothing
// written when they fail, and finds the first bad entry itself.
enum PointwiseCheck {
    PW_CHECK_NONE = 0,
    PW_CHECK_UNIT,  // a and b in [0, 1] (BCE's input and target)
    PW_CHECK_VAR,   // c >= 0 (GaussianNLL's var)
};

// Everything one call needs.  Null pointers mark what is absent or not wanted.
template <class T>
struct PointwiseArgs {
    index n;
    const T* a;            // input
    const T* b;            // target
    const T* c;            // third operand (var), or null
    const T* w;            // element weight multiplying loss and gradient, or null
    T* loss;               // per-element loss ('none'), or null
    T* grad_a;             // d loss / d a, or null
    T* grad_b;             // d loss / d b (MarginRanking's input2), or null
    T* grad_c;             // d loss / d c, or null
    const T* grad_output;  // per-element upstream gradient, or null: use gscale
    T gscale;              // scalar upstream gradient times the reduction's scale
    double p0, p1;         // the loss's parameters (see each functor)
    int kind;
    int want_sum;          // return the sum of the (weighted) losses
    int check = PW_CHECK_NONE;  // a PointwiseCheck
    std::atomic<bool>* failed = nullptr;  // set by pointwise_sweep: a block failed the check
};

// Whether block [s, s + m) passes p.check (count_outside: branch-free, it vectorises).
template <class T>
inline bool block_in_range(const PointwiseArgs<T>& p, index s, index m) {
    if (p.check == PW_CHECK_UNIT)
        return both_in_unit_fast(p.a + s, p.b + s, m) ||
               count_outside<T, false>(p.a + s, m) + count_outside<T, false>(p.b + s, m) == 0;
    return count_outside<T, true>(p.c + s, m) == 0;
}

// ---------------------------------------------------------------------------
// The losses.  operator()(a, b, c, da, dc) returns the loss, sets da (and dc).
// ---------------------------------------------------------------------------

// Losses of (input, target) only; a loss with a third operand sets `third`,
// and `grad_third` when that operand is differentiated.  A loss that
// differentiates `b` sets `grad_second`; its call then takes (a, b, c, da, db, dc).
struct TwoOperands {
    static constexpr bool third = false, grad_third = false, grad_second = false;
};

struct L1 : TwoOperands {
    template <class T>
    T operator()(T x, T y, T, T& dx, T&) const {
        const T d = x - y;
        dx = sign(d);
        return std::abs(d);
    }
};

// dx is half the derivative: the loop multiplies the upstream gradient by
// upstream_factor = 2, which keeps torch's order (2 / n) (x - y), finite
// for |x - y| > max / 2 where 2 (x - y) is not.
struct MSE : TwoOperands {
    static constexpr int upstream_factor = 2;
    template <class T>
    T operator()(T x, T y, T, T& dx, T&) const {
        const T d = x - y;
        dx = d;
        return d * d;
    }
};

template <class T>
struct SmoothL1 : TwoOperands {  // beta > 0 (beta == 0 is L1, chosen by the caller as torch does)
    T beta;
    T operator()(T x, T y, T, T& dx, T&) const {
        const T d = x - y, z = std::abs(d);
        dx = d <= -beta ? T(-1) : d >= beta ? T(1) : d / beta;
        return z < beta ? T(0.5) * z * z / beta : z - T(0.5) * beta;
    }
};

template <class T>
struct Huber : TwoOperands {  // delta > 0
    T delta;
    T operator()(T x, T y, T, T& dx, T&) const {
        const T d = x - y, z = std::abs(d);
        dx = d <= -delta ? -delta : d >= delta ? delta : d;
        return z < delta ? T(0.5) * z * z : delta * (z - T(0.5) * delta);
    }
};

// Stirling's approximation of log(y!) that full=True adds where y > 1.
template <class T>
inline T stirling(T y) {
    return y > T(1) ? y * vlog(y) - y + T(0.5) * vlog(T(TWO_PI) * y) : T(0);
}

template <class T, bool FULL>
struct PoissonLog : TwoOperands {  // exp(x) - y x
    T operator()(T x, T y, T, T& dx, T&) const {
        const T e = vexp(x);
        dx = e - y;
        const T loss = e - y * x;
        if constexpr (FULL) return loss + stirling(y);
        return loss;
    }
};

template <class T, bool FULL>
struct Poisson : TwoOperands {  // x - y log(x + eps)
    T eps;
    T operator()(T x, T y, T, T& dx, T&) const {
        const T xe = x + eps;
        dx = T(1) - y / xe;
        const T loss = x - y * vlog(xe);
        if constexpr (FULL) return loss + stirling(y);
        return loss;
    }
};

template <class T, bool FULL>
struct Gaussian {  // (log v + (x - y)^2 / v) / 2 with v = max(var, eps)
    static constexpr bool third = true, grad_third = true, grad_second = false;
    T eps;
    T operator()(T x, T y, T var, T& dx, T& dvar) const {
        const T v = var < eps ? eps : var;  // NaN stays NaN, as torch's clamp
        const T d = x - y, q = d * d / v;
        dx = d / v;
        // torch does not mask the clamp out of the var gradient
        dvar = T(0.5) * (T(1) / v - q / v);
        // v >= 0 or NaN (var is checked for negative entries first); NaN
        // reaches the loss through q, so only +inf needs vlog's select
        const T log_v = vselect(v == std::numeric_limits<T>::infinity(), v, vlog_nonneg(v));
        const T loss = T(0.5) * (log_v + q);
        if constexpr (FULL) return loss + T(HALF_LOG_2PI);
        return loss;
    }
};

// torch clamps each of BCE's logs at -100.
template <class T>
inline T bce_clamp(T log_value) {
    return log_value < T(-100) ? T(-100) : log_value;
}

// BCE's clamped log of u in [0, 1], plus c: 0, or one_minus's correction,
// which makes it torch's log1p(-x).  No vlog selects: at 0 both dtypes give a
// finite number far below -100.  Every float64 below the least normal number
// has a log below -708, so float64 skips the pre-scaling of subnormals; a
// float32 subnormal's log may lie above -100, and float32 takes vlog_unit's
// unconditional pre-scaling (its 0 is -105, not -88).  u must not be -0 (its
// bits make a large log): the callers clear x's sign (1 - x is never -0).
template <class T>
inline T bce_log(T u, T c) {
    using C = vmath_detail::log_consts<T>;
    T dk, f;
    if constexpr (sizeof(T) == 8) f = vmath_detail::log_split(u, dk, T(C::bias));
    else f = vmath_detail::log_split(u * C::prescale, dk, T(C::bias_scaled));
    return bce_clamp(vmath_detail::log_kernel<true>(f, dk, c));
}

// u = 1 - x for x in [0, 1], and in cu the exact rounding error of that
// difference over u: log(u) + cu is log1p(-x), torch's form (x = 1e-8 gives
// -1e-8, where the log of the rounded 1 - x is 0).  The error is 0 for
// x >= 1/2 (1 - x is exact); the max keeps x = 1 (u = 0) from 0 / 0.
template <class T>
inline T one_minus(T x, T& cu) {
    const T u = T(1) - x;
    cu = ((T(1) - u) - x) / std::max(u, T(0.5));
    return u;
}

// BCE's gradient in torch's form: not the derivative of the clamped loss, and
// its eps is float32(1e-12) in both dtypes.
template <class T>
inline T bce_grad(T x, T y) {
    const T q = x * (T(1) - x), eps = T(1e-12f);
    return (x - y) / (q < eps ? eps : q);
}

template <class T>
struct BCE : TwoOperands {  // -(y log x + (1 - y) log1p(-x)), each log clamped at -100
    // A block whose targets are all 0 or 1 takes Hard (pointwise_loop).
    struct Hard;
    static bool hard_block(const T* y, index m) {
        // groups of 16, each a branch-free count (count_like: it vectorises): soft
        // targets are rejected after the first group (soft BCE: 1-3% slower, not 5%)
        using Count = count_like<T>;
        for (index g = 0; g < m; g += 16) {
            const index n = std::min<index>(16, m - g);
            Count hard = 0;
            for (index i = g; i < g + n; ++i) hard += Count((y[i] == T(0)) | (y[i] == T(1)));
            if (index(hard) != n) return false;
        }
        return true;
    }
    T operator()(T x, T y, T, T& dx, T&) const {
        // x in [0, 1] (checked before its block)
        T cu;
        const T u = one_minus(x, cu);
        const T cx = bce_log(std::abs(x), T(0)), c1x = bce_log(u, cu);
        dx = bce_grad(x, y);
        return (y - T(1)) * c1x - y * cx;  // torch's form: +0 where both terms are 0
    }
};

// BCE for y in {0, 1}: one log, of x or log1p(-x).  The same bits as BCE: its
// other term is 0 times a finite clamped log, a zero that leaves the sum as it
// is but for the sign of a zero loss: +0 for y = 0 (-0 - (-0)), -0 for y = 1
// (-0 - 0).
template <class T>
struct BCE<T>::Hard : TwoOperands {
    T operator()(T x, T y, T, T& dx, T&) const {
        dx = bce_grad(x, y);
        T cu;
        const T u = one_minus(x, cu);
        const bool one = y == T(1);
        const T log_term = bce_log(vselect(one, std::abs(x), u), vselect(one, T(0), cu));
        return vselect(one, T(-0.0), T(0)) - log_term;
    }
};

// sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x), each to a few ulp (no 1 - p
// cancellation), from exp(-|x|): the same expression softplus and log_sigmoid
// evaluate, so a caller that needs both gets one exp after inlining.
template <class T>
inline void sigmoid_pair(T x, T& p, T& pm) {
    const T t = vexp_nonpos(vmath_detail::neg_abs(x)), r = T(1) / (T(1) + t), tr = t * r;
    p = x < T(0) ? tr : r;
    pm = x < T(0) ? r : tr;
}

template <class T>
struct BCELogits : TwoOperands {  // (1 - y) x - log_sigmoid(x), torch's form
    T operator()(T x, T y, T, T& dx, T&) const {
        T p, pm;
        sigmoid_pair(x, p, pm);
        dx = p - y;
        return (T(1) - y) * x - log_sigmoid(x);
    }
};

template <class T>
struct BCELogitsPos {  // (1 - y) x - (1 + (pw - 1) y) log_sigmoid(x), pw the third operand
    static constexpr bool third = true, grad_third = false, grad_second = false;
    T operator()(T x, T y, T pw, T& dx, T&) const {
        const T lw = T(1) + (pw - T(1)) * y;
        T p, pm;
        sigmoid_pair(x, p, pm);
        dx = lw * p - pw * y;
        return (T(1) - y) * x - lw * log_sigmoid(x);
    }
};

template <class T>
struct KL : TwoOperands {  // xlogy(y, y) - y x, with xlogy(0, 0) = 0
    T operator()(T x, T y, T, T& dx, T&) const {
        dx = -y;
        // vlog's selects for +inf and NaN are not needed: y log y is inf / NaN
        // there through the product; y < 0 is NaN, as torch's xlogy; y = 0 is
        // the select below
        const T ylogy = vselect(y < T(0), std::numeric_limits<T>::quiet_NaN(), y * vlog_positive(y));
        return (y == T(0) ? T(0) : ylogy) - y * x;
    }
};

template <class T>
struct KLLog : TwoOperands {  // exp(y) (y - x), y a log-probability
    T operator()(T x, T y, T, T& dx, T&) const {
        const T ey = vexp(y);
        dx = -ey;
        return ey * (y - x);
    }
};

template <class T>
struct SoftMarginML : TwoOperands {  // -y log_sigmoid(x) - (1 - y) log_sigmoid(-x)
    T operator()(T x, T y, T, T& dx, T&) const {
        // d log_sigmoid(x) / dx = sigmoid(-x)
        T p, pm;
        sigmoid_pair(x, p, pm);
        dx = (T(1) - y) * p - y * pm;
        // log_sigmoid(+-x) = min(+-x, 0) - log1p(exp(-|x|)), one log1p for both
        // (bit-identical to two log_sigmoid calls)
        const T l = vmath_detail::log1p_unit(vexp_nonpos(vmath_detail::neg_abs(x)));
        const T ls_pos = vselect(x < T(0), x, T(0)) - l, ls_neg = vselect(-x < T(0), -x, T(0)) - l;
        return -(y * ls_pos + (T(1) - y) * ls_neg);
    }
};

// ---------------------------------------------------------------------------
// Margin, ranking and focal losses.
// ---------------------------------------------------------------------------

template <class T>
struct MarginRanking {  // max(0, -y (x1 - x2) + margin); a = x1, b = x2, c = y
    static constexpr bool third = true, grad_third = false, grad_second = true;
    T margin;
    T operator()(T x1, T x2, T y, T& d1, T& d2, T&) const {
        const T v = -y * (x1 - x2) + margin;  // torch's order of operations
        // clamp_min's gradient passes at the hinge (v == 0) and is 0 for a NaN v,
        // as torch 2.13's.  A product, not a select, so that a NaN target gives
        // a NaN gradient, as torch's.
        const T active = v >= T(0) ? T(1) : T(0);
        d1 = -y * active;
        d2 = y * active;
        return v < T(0) ? T(0) : v;  // clamp_min: NaN stays NaN
    }
};

template <class T>
struct HingeEmbedding : TwoOperands {  // [y != -1] x + [y != 1] max(0, margin - x)
    T margin;
    T operator()(T x, T y, T, T& dx, T&) const {
        // Any y other than +-1 (0.5, NaN) takes both terms, as torch's where()s.
        // Selects, not products: y = -1 drops an infinite x instead of giving 0 * inf.
        const bool self = y != T(-1), hinge = y != T(1);
        const T h = margin - x;
        // clamp_min's gradient passes at the hinge (h == 0), as torch's
        dx = (self ? T(1) : T(0)) - (hinge && h >= T(0) ? T(1) : T(0));
        return (hinge ? (h < T(0) ? T(0) : h) : T(0)) + (self ? x : T(0));
    }
};

template <class T>
struct SoftMargin : TwoOperands {  // log(1 + exp(-y x))
    T operator()(T x, T y, T, T& dx, T&) const {
        // The stable softplus: finite (and the gradient -y sigmoid(z), not
        // inf / inf) where torch's log1p(exp(z)) overflows, z > 88.7 (f32) / 709.8 (f64).
        const T z = -y * x;
        T sz, s_nz;
        sigmoid_pair(z, sz, s_nz);
        dx = -y * sz;
        // softplus(z), with sigmoid_pair's exp(-|z|) spelled out so that it is shared
        const T t = vexp_nonpos(vmath_detail::neg_abs(z));
        return vselect(z > T(0), z, T(0)) + vmath_detail::log1p_unit(t);
    }
};

// torchvision's sigmoid_focal_loss: alpha_t ce (1 - p_t)^gamma with p = sigmoid(x),
// ce = BCEWithLogits(x, y), p_t = p y + (1 - p)(1 - y), alpha_t = alpha y +
// (1 - alpha)(1 - y) (1 without alpha).  Evaluated without cancellation:
// ce = (1 - y) softplus(x) - y log_sigmoid(x), q = 1 - p_t = p (1 - y) + (1 - p) y.
// GAMMA2: gamma == 2 (the default), q^2 as q * q.
template <class T, bool GAMMA2>
struct SigmoidFocal : TwoOperands {
    T alpha, one_minus_alpha;  // alpha < 0: no alpha weighting
    T gamma;
    T rate_at_zero;  // q^(gamma - 1) at q = 0: 0, 1 or inf
    T neg_sign;      // sign of q^gamma for q < 0 (y outside [0, 1]), as pow():
                     // 1 for an even integer gamma, -1 for an odd one, NaN otherwise

    static SigmoidFocal make(double alpha, double gamma) {
        const double inf = std::numeric_limits<double>::infinity();
        const double sign = std::floor(gamma) != gamma ? std::numeric_limits<double>::quiet_NaN()
                            : std::fmod(gamma, 2.0) == 0.0 ? 1.0 : -1.0;
        return {{}, T(alpha), T(1.0 - alpha), T(gamma),
                T(gamma > 1 ? 0.0 : gamma == 1 ? 1.0 : inf), T(sign)};
    }

    T operator()(T x, T y, T, T& dx, T&) const {
        T p, pm;
        sigmoid_pair(x, p, pm);
        // log_sigmoid(x) and softplus(x) from one log1p(exp(-|x|)) (bit-identical)
        const T l = vmath_detail::log1p_unit(vexp_nonpos(vmath_detail::neg_abs(x)));
        const T ls = vselect(x < T(0), x, T(0)) - l, sp = vselect(x > T(0), x, T(0)) + l;
        // At x = +-inf torch's form (1 - y) x - log_sigmoid(x) (NaN where it is 0 * inf).
        const T ce = std::abs(x) == std::numeric_limits<T>::infinity()
                         ? (T(1) - y) * x - ls
                         : (T(1) - y) * sp - y * ls;
        const T q = p * (T(1) - y) + pm * y;
        // w = q^gamma; rate_ce = q^(gamma - 1) ce, as w (ce / q): for hard targets
        // ce / q is about 1 however small q is, where q^(gamma - 1) alone
        // overflows (q = 1e-42, gamma < 1)
        T w, rate_ce;
        if constexpr (GAMMA2) {
            w = q * q;
            rate_ce = q * ce;
        } else {
            // Selects on members by vselect: a ternary lets GCC turn the member's
            // load into a masked load it cannot vectorise.
            const T m = vexp(gamma * vlog(std::abs(q)));
            w = vselect(gamma == T(0), T(1), vselect(q < T(0), m * neg_sign, m));  // pow(q, 0) = 1
            rate_ce = vselect(q == T(0), rate_at_zero * ce, w * (ce / q));
        }
        const T at = vselect(alpha < T(0), T(1), alpha * y + one_minus_alpha * (T(1) - y));
        // d/dx [ce q^gamma] = (p - y) q^gamma - gamma ce q^(gamma-1) p (1 - p) (2y - 1),
        // with p - y as p (1 - y) - (1 - p) y: exact for hard targets, where
        // sigmoid(x) - 1 would lose all digits of a tiny 1 - p.  torch's pow
        // backward drops the second term for gamma == 0 (no 0 * inf).
        // grouped as gamma (rate_ce (p (1 - p))): p (1 - p) is tiny where ce is
        // huge, so no factor overflows that the product does not (gamma ce did
        // at x = 2e38)
        T dq = gamma * (rate_ce * (p * pm)) * (T(2) * y - T(1));
        if constexpr (!GAMMA2)  // p (1 - p) = 0 at a finite x (|x| past ~104 / ~745):
            // the term's limit is 0, not inf * 0 = NaN (gamma < 1: q^(gamma-1) = inf at q = 0)
            dq = vselect(p * pm == T(0) && std::abs(x) != std::numeric_limits<T>::infinity(),
                         T(0), dq);
        dx = at * ((p * (T(1) - y) - pm * y) * w - vselect(gamma == T(0), T(0), dq));
        return at * (ce * w);
    }
};

// ---------------------------------------------------------------------------
// The sweep.
// ---------------------------------------------------------------------------

// A loss with a faster form for blocks of hard targets (F::Hard, chosen per
// block by F::hard_block(b, m)).
template <class F, class = void>
struct has_hard_form : std::false_type {};
template <class F>
struct has_hard_form<F, std::void_t<typename F::Hard>> : std::true_type {};

// The factor a loss's derivative leaves to the upstream gradient (1 unless the
// loss sets upstream_factor).
template <class F, class = void>
struct upstream_factor_of : std::integral_constant<int, 1> {};
template <class F>
struct upstream_factor_of<F, std::void_t<decltype(F::upstream_factor)>>
    : std::integral_constant<int, F::upstream_factor> {};

enum PointwiseMode { M_SUM = 1, M_LOSS = 2, M_GRAD = 4, M_GOUT = 8 };

template <class T, class F, bool WEIGHTED, int MODE>
double pointwise_loop(const F& f, const PointwiseArgs<T>& p, index lo, index hi) {
    double block_sums[BLOCKS_PER_CHUNK];
    T values[BLOCK];
    int nblocks = 0;
    constexpr T factor = T(upstream_factor_of<F>::value);
    const T gscale = p.gscale * factor;  // a local: a load through p would need an alias check
    for (index s = lo; s < hi; s += BLOCK) {
        const index m = std::min(BLOCK, hi - s);
        if (p.check != PW_CHECK_NONE && !block_in_range(p, s, m)) {
            p.failed->store(true, std::memory_order_relaxed);
            return 0.0;  // the caller raises: what this chunk wrote is discarded
        }
        const T* __restrict a = p.a + s;
        const T* __restrict b = p.b + s;
        const T* __restrict c = F::third ? p.c + s : nullptr;
        const T* __restrict w = WEIGHTED ? p.w + s : nullptr;
        const T* __restrict go = (MODE & M_GOUT) ? p.grad_output + s : nullptr;
        T* __restrict loss = (MODE & M_LOSS) ? p.loss + s : nullptr;
        T* __restrict ga = (MODE & M_GRAD) ? p.grad_a + s : nullptr;
        T* __restrict gb = ((MODE & M_GRAD) && F::grad_second) ? p.grad_b + s : nullptr;
        T* __restrict gc = ((MODE & M_GRAD) && F::grad_third) ? p.grad_c + s : nullptr;
        // The outputs are fresh arrays that never overlap the inputs.  Saying so
        // keeps loops with many streams vectorised: GCC gives up on more than
        // 10 run-time alias checks (e.g. Gaussian and MarginRanking with gradients).
        auto sweep = [&](const auto& g) {
#pragma GCC ivdep
            for (index i = 0; i < m; ++i) {
                T da, db = T(0), dc = T(0);
                T v;
                if constexpr (F::grad_second) v = g(a[i], b[i], F::third ? c[i] : T(0), da, db, dc);
                else if constexpr (F::third) v = g(a[i], b[i], c[i], da, dc);
                else v = g(a[i], b[i], T(0), da, dc);
                if constexpr (WEIGHTED) {
                    v *= w[i];
                    da *= w[i];
                    db *= w[i];
                }
                if constexpr ((MODE & M_SUM) != 0) values[i] = v;
                if constexpr ((MODE & M_LOSS) != 0) loss[i] = v;
                if constexpr ((MODE & M_GRAD) != 0) {
                    const T up = (MODE & M_GOUT) ? go[i] * factor : gscale;
                    ga[i] = da * up;
                    if constexpr (F::grad_second) gb[i] = db * up;
                    if constexpr (F::grad_third) gc[i] = dc * up;
                }
            }
        };
        if constexpr (has_hard_form<F>::value) {
            if (F::hard_block(b, m)) sweep(typename F::Hard{});
            else sweep(f);
        } else {
            sweep(f);
        }
        if constexpr ((MODE & M_SUM) != 0) block_sums[nblocks++] = block_sum(values, m);
    }
    return (MODE & M_SUM) ? pairwise_sum(block_sums, nblocks) : 0.0;
}

template <class T, class F, bool WEIGHTED>
double pointwise_modes(const F& f, const PointwiseArgs<T>& p, index lo, index hi) {
    const int mode = (p.want_sum ? M_SUM : 0) | (p.loss ? M_LOSS : 0) | (p.grad_a ? M_GRAD : 0) |
                     (p.grad_a && p.grad_output ? M_GOUT : 0);
    switch (mode) {
        case M_SUM: return pointwise_loop<T, F, WEIGHTED, M_SUM>(f, p, lo, hi);
        case M_LOSS: return pointwise_loop<T, F, WEIGHTED, M_LOSS>(f, p, lo, hi);
        case M_SUM | M_GRAD: return pointwise_loop<T, F, WEIGHTED, M_SUM | M_GRAD>(f, p, lo, hi);
        case M_LOSS | M_GRAD: return pointwise_loop<T, F, WEIGHTED, M_LOSS | M_GRAD>(f, p, lo, hi);
        case M_LOSS | M_GRAD | M_GOUT:
            return pointwise_loop<T, F, WEIGHTED, M_LOSS | M_GRAD | M_GOUT>(f, p, lo, hi);
        case M_GRAD: return pointwise_loop<T, F, WEIGHTED, M_GRAD>(f, p, lo, hi);
        case M_GRAD | M_GOUT: return pointwise_loop<T, F, WEIGHTED, M_GRAD | M_GOUT>(f, p, lo, hi);
        default: return 0.0;
    }
}

template <class T, class F>
double pointwise_run(const F& f, const PointwiseArgs<T>& p, index lo, index hi) {
    return p.w ? pointwise_modes<T, F, true>(f, p, lo, hi) : pointwise_modes<T, F, false>(f, p, lo, hi);
}

template <class T, class F>
double unweighted(const F& f, const PointwiseArgs<T>& p, index lo, index hi) {
    return pointwise_modes<T, F, false>(f, p, lo, hi);
}

// One chunk [lo, hi) of any pointwise loss; returns the chunk's sum of losses
// when p.want_sum is set.
template <class T>
double pointwise_chunk(const PointwiseArgs<T>& p, index lo, index hi) {
    switch (p.kind) {
        case PW_L1: return pointwise_run<T>(L1{}, p, lo, hi);
        case PW_MSE: return pointwise_run<T>(MSE{}, p, lo, hi);
        case PW_SMOOTH_L1: return pointwise_run<T>(SmoothL1<T>{{}, T(p.p0)}, p, lo, hi);
        case PW_HUBER: return pointwise_run<T>(Huber<T>{{}, T(p.p0)}, p, lo, hi);
        // full (p1) is a template argument: the Stirling term costs two logs
        case PW_POISSON_LOG:
            return p.p1 != 0 ? pointwise_run<T>(PoissonLog<T, true>{}, p, lo, hi)
                             : pointwise_run<T>(PoissonLog<T, false>{}, p, lo, hi);
        case PW_POISSON:
            return p.p1 != 0 ? pointwise_run<T>(Poisson<T, true>{{}, T(p.p0)}, p, lo, hi)
                             : pointwise_run<T>(Poisson<T, false>{{}, T(p.p0)}, p, lo, hi);
        case PW_GAUSSIAN:
            return p.p1 != 0 ? pointwise_run<T>(Gaussian<T, true>{T(p.p0)}, p, lo, hi)
                             : pointwise_run<T>(Gaussian<T, false>{T(p.p0)}, p, lo, hi);
        case PW_BCE: return pointwise_run<T>(BCE<T>{}, p, lo, hi);
        case PW_BCE_LOGITS: return pointwise_run<T>(BCELogits<T>{}, p, lo, hi);
        case PW_BCE_LOGITS_POS: return pointwise_run<T>(BCELogitsPos<T>{}, p, lo, hi);
        case PW_KL: return pointwise_run<T>(KL<T>{}, p, lo, hi);
        case PW_KL_LOG: return pointwise_run<T>(KLLog<T>{}, p, lo, hi);
        case PW_SOFT_MARGIN_ML: return pointwise_run<T>(SoftMarginML<T>{}, p, lo, hi);
        // losses that take no element weight: only the unweighted loops are compiled
        case PW_MARGIN_RANKING: return unweighted<T>(MarginRanking<T>{T(p.p0)}, p, lo, hi);
        case PW_HINGE_EMBEDDING: return unweighted<T>(HingeEmbedding<T>{{}, T(p.p0)}, p, lo, hi);
        case PW_SOFT_MARGIN: return unweighted<T>(SoftMargin<T>{}, p, lo, hi);
        // gamma == 2 (the default) is a template argument: q * q instead of exp(2 log q)
        case PW_SIGMOID_FOCAL:
            if (p.p1 == 2) return unweighted<T>(SigmoidFocal<T, true>::make(p.p0, 2), p, lo, hi);
            return unweighted<T>(SigmoidFocal<T, false>::make(p.p0, p.p1), p, lo, hi);
        default: return 0.0;
    }
}

using pointwise_f32_fn = double(const PointwiseArgs<float>&, index, index);
using pointwise_f64_fn = double(const PointwiseArgs<double>&, index, index);
CLOSS_MULTIVERSION(pointwise_f32_fn, pointwise_f32, pointwise_chunk<float>)
CLOSS_MULTIVERSION(pointwise_f64_fn, pointwise_f64, pointwise_chunk<double>)

// The whole sweep: chunks of CHUNK elements over `threads` threads.
// *out_of_range: a block failed args.check (the sum is then meaningless).
template <class T>
double pointwise_sweep(double (*chunk)(const PointwiseArgs<T>&, index, index),
                       const PointwiseArgs<T>& args, int threads, bool* out_of_range) {
    PointwiseArgs<T> p = args;
    std::atomic<bool> failed{false};
    p.failed = &failed;
    const double total = sum_chunks(chunk_count(p.n), threads, [&](index k) {
        return chunk(p, k * CHUNK, std::min(p.n, (k + 1) * CHUNK));
    });
    *out_of_range = failed.load();
    return total;
}

}  // namespace closs
