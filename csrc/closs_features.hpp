// Losses over rows of D features: CosineEmbedding, and TripletMargin with a
// p-norm distance (torch's pairwise_distance) or a cosine distance
// (1 - torch's cosine_similarity).
//
// Design:
// 1. Every operand is a C-contiguous (rows, D) array of one dtype (the caller
//    broadcasts); a row's loss depends only on that row of each operand.
// 2. One inline function per loss computes a row's loss and, when GRAD, its
//    gradient: cosine_embedding_row, triplet_norm_row (one template for every
//    p-norm, the norm being a small struct below) and triplet_cosine_row.
//    Each makes two passes over its row:
//      pass 1 reads the row's operands once and accumulates the few sums the
//      loss needs (dot products, squared norms, p-norm terms) over LANES
//      independent lanes so the loop vectorises (row_sums; as row_max/row_expsum
//      in closs_softmax.hpp);  the row's loss and a handful of per-row
//      gradient coefficients follow from those sums;
//      pass 2 (gradient only) reads the row again, from cache for any D up to
//      thousands of features, and writes each gradient element once, as a
//      linear combination of the operands with the row's coefficients.
//    The gradient cannot be written in pass 1: every element's derivative
//    depends on the whole row's norms.  The max-norm (p = +-inf) adds a pass
//    that counts the entries at the maximum, for torch's even split of its
//    subgradient; it is not a hot path.
// 3. Precision: sums in double beyond runs of 8 terms per lane (row_sums);
//    the distances, cosines and the hinge margin + d+ - d- are then rounded
//    to T and combined in T as torch does, so a float32 hinge exactly at the
//    margin is decided as in torch (the kink passes the gradient, spec 0.6);
//    gradient coefficients are computed in double and applied in T.
// 4. feature_range() runs the rows of one chunk and returns the pairwise sum
//    of their losses; feature_sweep() splits the rows into chunks of about
//    ROW_CHUNK_ELEMENTS elements (a split that depends only on the shape)
//    spread over threads by sum_chunks (closs_sum.hpp), so sums are
//    bit-identical for any thread count.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>

#include "closs_isa.hpp"
#include "closs_math.hpp"
#include "closs_sum.hpp"

namespace closs {

enum FeatureKind {
    FT_COSINE_EMBEDDING = 0,  // x1, x2, target
    FT_TRIPLET_NORM,          // anchor, positive, negative; ||x - y + eps||_p
    FT_TRIPLET_COSINE,        // anchor, positive, negative; 1 - cosine_similarity(x, y, eps)
};

template <class T>
struct FeatureArgs {
    index rows, D;
    const T* x1;              // input1 / anchor
    const T* x2;              // input2 / positive
    const T* x3;              // negative, or null
    const double* target;     // CosineEmbedding's y per row, or null
    T* loss;                  // per-row loss ('none'), or null
    T* g1;                    // gradients like x1, x2, x3, or null (no gradient)
    T* g2;
    T* g3;
    const T* grad_output;     // per-row upstream gradient, or null: gscale
    double gscale;            // scalar upstream gradient times the reduction's scale
    double margin;
    double p;                 // FT_TRIPLET_NORM: the norm's order
    double eps;               // FT_TRIPLET_NORM: added to each difference;
                              // FT_TRIPLET_COSINE: the lower clamp of each norm
    int kind;
    int swap;                 // triplet: d- = min(d(a, n), d(p, n))
};

// torch's cosine_embedding_loss adds EPSILON = 1e-12, a float, to each squared norm.
constexpr double COSINE_EMBEDDING_EPS = double(1e-12f);

// Calls f(lane, i) for i in [0, n), element i in lane i % LANES: the inner
// loop runs over the lanes, so it vectorises without reassociating a sum.
template <class F>
inline void over_lanes(index n, const F& f) {
    index i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; ++j) f(j, i + j);
    for (int j = 0; i + j < n; ++j) f(j, i + j);
}

// Sums over a row of n elements, vectorised: f(acc, j, i) adds element i's
// terms to acc[k][j] (lane j = i % LANES).  The terms of RUN elements are
// added in T first, then those partial sums in double: float32 rows keep
// full-width float vectors in the hot loop (double lanes cost two conversions
// and twice the registers per element), and a float partial sum holds only
// RUN / LANES = 8 terms.
template <class T, int K, class F>
inline void row_sums(index n, double (&sums)[K][LANES], const F& f) {
    constexpr index RUN = 8 * LANES;
    for (index i0 = 0; i0 < n; i0 += RUN) {
        T part[K][LANES] = {};
        over_lanes(std::min(RUN, n - i0), [&](int j, index i) { f(part, j, i0 + i); });
        for (int k = 0; k < K; ++k)
            for (int j = 0; j < LANES; ++j) sums[k][j] += double(part[k][j]);
    }
}

// Pass 2 of a row: f(x_i, y_i, gx_i, gy_i) (two operands) or
// f(x_i, y_i, z_i, gx_i, gy_i, gz_i) (three) for each element, the operands
// read and the gradients written through restrict pointers, so the loop
// vectorises without run-time alias checks.
template <class T, class F>
inline void write_rows(index D, const T* __restrict x, const T* __restrict y, T* __restrict gx,
                       T* __restrict gy, const F& f) {
    for (index i = 0; i < D; ++i) f(x[i], y[i], gx[i], gy[i]);
}

template <class T, class F>
inline void write_rows(index D, const T* __restrict x, const T* __restrict y,
                       const T* __restrict z, T* __restrict gx, T* __restrict gy,
                       T* __restrict gz, const F& f) {
    for (index i = 0; i < D; ++i) f(x[i], y[i], z[i], gx[i], gy[i], gz[i]);
}

template <class T>
inline double row_scale(const FeatureArgs<T>& p, index r) {
    return p.grad_output ? p.gscale * double(p.grad_output[r]) : p.gscale;
}

// max(0, h) as torch's clamp_min: NaN stays NaN; `active` is its gradient
// mask, true for h >= 0 (the kink passes, spec 0.6), false for h < 0 and NaN.
// torch applies such masks with where(), so a masked gradient is 0 even for a
// NaN upstream gradient: callers select, never multiply by the mask.
template <class T>
inline T hinge(T h, bool& active) {
    active = h >= T(0);
    return h < T(0) ? T(0) : h;
}

// ---------------------------------------------------------------------------
// CosineEmbedding: cos = x1.x2 / sqrt((|x1|^2 + e)(|x2|^2 + e));
// loss 1 - cos for y = 1, max(0, cos - margin) for y = -1, 0 otherwise.
// d cos / d x1 = x2 / den - cos x1 / m1 (m1 = |x1|^2 + e); symmetric for x2.
// ---------------------------------------------------------------------------

template <class T, bool GRAD>
inline double cosine_embedding_row(const FeatureArgs<T>& p, index r) {
    const index D = p.D;
    const T* __restrict x = p.x1 + r * D;
    const T* __restrict y = p.x2 + r * D;
    double sums[3][LANES] = {};
    row_sums<T>(D, sums, [&](T (&acc)[3][LANES], int j, index i) {
        const T a = x[i], b = y[i];
        acc[0][j] += a * b;
        acc[1][j] += a * a;
        acc[2][j] += b * b;
    });
    const double dot = lanes_total(sums[0]);
    const double m1 = lanes_total(sums[1]) + COSINE_EMBEDDING_EPS;
    const double m2 = lanes_total(sums[2]) + COSINE_EMBEDDING_EPS;
    // The product in T, as torch: a float32 product of huge norms overflows to
    // inf there (cos = 0, gradient 0), and here too.
    const double den = std::sqrt(double(T(m1) * T(m2)));
    const T cos = T(dot / den);
    const double t = p.target[r];
    double dloss = 0.0;  // d loss / d cos
    T loss = T(0);       // any target value other than 1 and -1: loss 0, as torch
    if (t == 1.0) {
        loss = T(1) - cos;
        dloss = -1.0;
    } else if (t == -1.0) {
        bool active;
        loss = hinge(T(cos - T(p.margin)), active);
        dloss = active ? 1.0 : 0.0;
    }
    if constexpr (GRAD) {
        // Computed even where dloss = 0: 0 times a NaN/inf row is NaN, as in torch.
        const double c = dloss == 0.0 ? 0.0 : row_scale(p, r) * dloss;
        const T k = T(c / den), k1 = T(c * double(cos) / m1), k2 = T(c * double(cos) / m2);
        write_rows(D, x, y, p.g1 + r * D, p.g2 + r * D, [=](T a, T b, T& g1, T& g2) {
            g1 = k * b - k1 * a;
            g2 = k * a - k2 * b;
        });
    }
    return double(loss);
}

// ---------------------------------------------------------------------------
// Triplet margin: loss = max(0, margin + d(a, p) - d-), d- = d(a, n), or
// min(d(a, n), d(p, n)) with swap.
// ---------------------------------------------------------------------------

// The hinge of one triplet from its three distances (d_pn unused without
// SWAP); sets the coefficients c_ap, c_an, c_pn of d loss / d distance, times
// the row's upstream gradient `scale`.  With swap the minimum follows
// torch.minimum: NaN propagates, the gradient goes to the smaller distance,
// half to each at a tie, and all of it to both when either is NaN.
template <class T, bool SWAP>
inline T triplet_hinge(const FeatureArgs<T>& p, T d_ap, T d_an, T d_pn, double scale,
                       double& c_ap, double& c_an, double& c_pn) {
    T d_neg = d_an;
    double share_an = 1.0, share_pn = 0.0;
    if constexpr (SWAP) {
        d_neg = d_an != d_an ? d_an : d_pn != d_pn ? d_pn : std::min(d_an, d_pn);
        share_an = d_an == d_pn ? 0.5 : d_an > d_pn ? 0.0 : 1.0;
        share_pn = d_an == d_pn ? 0.5 : d_an < d_pn ? 0.0 : 1.0;
    }
    bool active;
    const T loss = hinge(T(T(p.margin) + d_ap) - d_neg, active);
    c_ap = active ? scale : 0.0;
    c_an = share_an == 0.0 ? 0.0 : -c_ap * share_an;
    c_pn = share_pn == 0.0 ? 0.0 : -c_ap * share_pn;
    return loss;
}

// The p-norms of torch's linalg_vector_norm and their derivatives, as torch's
// norm_backward computes them.  Where torch masks (x / norm at norm = 0, the
// entries off the max) the mask multiplies the upstream factor, as there, so a
// NaN factor still gives NaN.  A norm struct has:
//   ADDITIVE, term(u): the norm is a function of the sum of term(u) over the
//     row (summed by row_sums); otherwise START, add(acc, u, p) accumulate
//     one lane and one element u;
//   combine(lanes): the lanes' total (consumes them);  norm(total, p);
//   factor(d, c, p): the row factor k of the derivative (c = d loss / d norm);
//   COUNT: whether k is further divided by the number of entries at the max;
//   deriv(u, k, d, p): c * d norm / d u for one element.
struct NormTwo {  // p = 2: sqrt(sum u^2); u / d, 0 where d = 0
    static constexpr bool COUNT = false;
    static constexpr bool ADDITIVE = true;
    template <class T>
    static T term(T u) {
        return u * u;
    }
    static double combine(double* lanes) { return lanes_total(lanes); }
    static double norm(double s, double) { return std::sqrt(s); }
    static double factor(double d, double c, double) { return c * (d == 0.0 ? 0.0 : 1.0 / d); }
    template <class T>
    static T deriv(T u, T k, T, double) {
        return u * k;
    }
};

struct NormOne {  // p = 1: sum |u|; sign(u) (sign(0) = sign(nan) = 0)
    static constexpr bool COUNT = false;
    static constexpr bool ADDITIVE = true;
    template <class T>
    static T term(T u) {
        return std::abs(u);
    }
    static double combine(double* lanes) { return lanes_total(lanes); }
    static double norm(double s, double) { return s; }
    static double factor(double, double c, double) { return c; }
    template <class T>
    static T deriv(T u, T k, T, double) {
        return sign(u) * k;
    }
};

struct NormZero {  // p = 0: the number of nonzero entries; torch gives no gradient (0)
    static constexpr bool COUNT = false;
    static constexpr bool ADDITIVE = true;
    template <class T>
    static T term(T u) {
        return T(u != T(0));
    }
    static double combine(double* lanes) { return lanes_total(lanes); }
    static double norm(double s, double) { return s; }
    static double factor(double, double, double) { return 0.0; }
    template <class T>
    static T deriv(T, T, T, double) {
        return T(0);
    }
};

// p = +inf (MIN false) / -inf (MIN true): max / min |u|, NaN propagating.
// Derivative: sign(u) / count at the entries where |u| = d or u is NaN.
template <bool MIN>
struct NormMax {
    static constexpr double START = MIN ? std::numeric_limits<double>::infinity() : 0.0;
    static constexpr bool ADDITIVE = false;
    static constexpr bool COUNT = true;
    static double pick(double acc, double a) {
        return (MIN ? a < acc : a > acc) || a != a ? a : acc;
    }
    template <class T>
    static double add(double acc, T u, double) {
        return pick(acc, double(std::abs(u)));
    }
    static double combine(double* lanes) {
        double m = START;
        for (int j = 0; j < LANES; ++j) m = lanes[j] != lanes[j] ? lanes[j] : pick(m, lanes[j]);
        return m;
    }
    static double norm(double s, double) { return s; }
    static double factor(double, double c, double) { return c; }
    template <class T>
    static bool at_max(T u, T d) {
        return std::abs(u) == d || u != u;
    }
    template <class T>
    static T deriv(T u, T k, T d, double) {
        return sign(u) * (k * T(at_max(u, d)));
    }
};

// Any other p (fractional, negative, NaN): (sum |u|^p)^(1/p), powers as
// exp(p log|u|) in double (vectorisable; accurate to a few ulp of double).
// Derivative sign(u) (|u| / d)^(p-1) = sign(u) exp((p-1) (log|u| - log d)):
// 0 where u = 0 (torch masks p < 1 there) and where d = 0 (all terms 0, or
// |u|^p underflowed; torch masks it).  Not torch's |u|^(p-1) / d^(p-1): a
// float32 row factor d^(1-p) overflows for small d (d = 1e-6, p = 8: 1e41)
// where the gradient is of order 1, and not the ratio's power: |u| / d
// underflows for a subnormal u (p < 1: a huge power).
struct NormGeneral {
    static constexpr double START = 0.0;
    static constexpr bool ADDITIVE = false;
    static constexpr bool COUNT = false;
    static double power(double a, double e) { return vexp(e * vlog(a)); }  // a >= 0; 0^e>0 = 0
    template <class T>
    static double add(double acc, T u, double p) {
        return acc + power(double(std::abs(u)), p);
    }
    static double combine(double* lanes) { return lanes_total(lanes); }
    static double norm(double s, double p) { return power(s, 1.0 / p); }
    static double factor(double, double c, double) { return c; }  // deriv masks d = 0
    template <class T>
    static T deriv(T u, T k, T d, double p) {
        const double a = std::abs(double(u));
        const double q = vselect(a == 0.0 || d == T(0), 0.0,
                                 vexp((p - 1.0) * (vlog(a) - vlog(double(d)))));
        return T(double(sign(u)) * q * double(k));
    }
};

// N over rows of one entry (D = 1, p = 2 or general): the norm is NormOne's,
// |u| itself, as torch's norm over a dimension of size 1 returns it, where
// u^2 or |u|^p would overflow or underflow (float32 p = 2 past |u| = 1.8e19);
// the derivative is N's.
template <class N>
struct SingleEntry : NormOne {
    static double factor(double d, double c, double p) { return N::factor(d, c, p); }
    template <class T>
    static T deriv(T u, T k, T d, double p) {
        return N::deriv(u, k, d, p);
    }
};

// The number of entries of one row's difference at its max-norm (NormMax).
template <class T, class N>
inline double count_at_max(const T* x, const T* y, index D, T eps, T d) {
    double count = 0.0;
    for (index i = 0; i < D; ++i) count += N::at_max(T(x[i] - y[i] + eps), d) ? 1.0 : 0.0;
    return count;
}

// One triplet row with the norm N: u = a - p + eps, v = a - n + eps,
// w = p - n + eps (swap).
template <class T, class N, bool SWAP, bool GRAD>
inline double triplet_norm_row(const FeatureArgs<T>& p, index r) {
    const index D = p.D;
    const T* __restrict a = p.x1 + r * D;
    const T* __restrict q = p.x2 + r * D;
    const T* __restrict n = p.x3 + r * D;
    const T eps = T(p.eps);
    const double order = p.p;
    double sums[3][LANES] = {};  // over u, v, w
    if constexpr (N::ADDITIVE) {
        row_sums<T>(D, sums, [&](T (&acc)[3][LANES], int j, index i) {
            acc[0][j] += N::term(T(a[i] - q[i] + eps));
            acc[1][j] += N::term(T(a[i] - n[i] + eps));
            if constexpr (SWAP) acc[2][j] += N::term(T(q[i] - n[i] + eps));
        });
    } else {
        for (int j = 0; j < LANES; ++j) sums[0][j] = sums[1][j] = sums[2][j] = N::START;
        over_lanes(D, [&](int j, index i) {
            sums[0][j] = N::add(sums[0][j], T(a[i] - q[i] + eps), order);
            sums[1][j] = N::add(sums[1][j], T(a[i] - n[i] + eps), order);
            if constexpr (SWAP) sums[2][j] = N::add(sums[2][j], T(q[i] - n[i] + eps), order);
        });
    }
    const T d_ap = T(N::norm(N::combine(sums[0]), order));
    const T d_an = T(N::norm(N::combine(sums[1]), order));
    const T d_pn = SWAP ? T(N::norm(N::combine(sums[2]), order)) : T(0);
    double c_ap, c_an, c_pn;
    const T loss = triplet_hinge<T, SWAP>(p, d_ap, d_an, d_pn, GRAD ? row_scale(p, r) : 0.0,
                                           c_ap, c_an, c_pn);
    if constexpr (GRAD) {
        double f_ap = N::factor(d_ap, c_ap, order), f_an = N::factor(d_an, c_an, order);
        double f_pn = SWAP ? N::factor(d_pn, c_pn, order) : 0.0;
        if constexpr (N::COUNT) {
            f_ap /= count_at_max<T, N>(a, q, D, eps, d_ap);
            f_an /= count_at_max<T, N>(a, n, D, eps, d_an);
            if constexpr (SWAP) f_pn /= count_at_max<T, N>(q, n, D, eps, d_pn);
        }
        const T k_ap = T(f_ap), k_an = T(f_an), k_pn = T(f_pn);
        write_rows(D, a, q, n, p.g1 + r * D, p.g2 + r * D, p.g3 + r * D,
                   [=](T x, T y, T z, T& ga, T& gp, T& gn) {
            const T du = N::deriv(T(x - y + eps), k_ap, d_ap, order);
            const T dv = N::deriv(T(x - z + eps), k_an, d_an, order);
            const T dw = SWAP ? N::deriv(T(y - z + eps), k_pn, d_pn, order) : T(0);
            ga = du + dv;
            gp = dw - du;
            gn = -dv - dw;
        });
    }
    return double(loss);
}

// One triplet row with torch's cosine distance D(x, y) = 1 - cos(x, y),
// cos = x.y / (c_x c_y), c_x = max(|x|, eps) (torch clamps the norms under
// no_grad, so its gradient sees the clamped value in the division but not in
// the norm's own derivative):
//   d D(x, y) / d x = x h_x - y k,  k = 1 / (c_x c_y),  h_x = x.y / (c_x^2 c_y |x|)
// (the factor 1 / |x| is 0 where |x| = 0: torch masks x / |x| and then
// multiplies, so a NaN dot still gives NaN).  Each gradient is then a
// combination of the rows a, p, n with nine per-row coefficients.
template <class T, bool SWAP, bool GRAD>
inline double triplet_cosine_row(const FeatureArgs<T>& p, index r) {
    const index D = p.D;
    const T* __restrict a = p.x1 + r * D;
    const T* __restrict q = p.x2 + r * D;
    const T* __restrict n = p.x3 + r * D;
    double sums[6][LANES] = {};
    row_sums<T>(D, sums, [&](T (&acc)[6][LANES], int j, index i) {
        const T x = a[i], y = q[i], z = n[i];
        acc[0][j] += x * x;
        acc[1][j] += y * y;
        acc[2][j] += z * z;
        acc[3][j] += x * y;
        acc[4][j] += x * z;
        if constexpr (SWAP) acc[5][j] += y * z;
    });
    const T eps = T(p.eps);
    const T n_a = T(std::sqrt(lanes_total(sums[0]))), n_q = T(std::sqrt(lanes_total(sums[1])));
    const T n_n = T(std::sqrt(lanes_total(sums[2])));
    auto clamp = [eps](T v) { return v < eps ? eps : v; };  // NaN stays NaN
    const double c_a = clamp(n_a), c_q = clamp(n_q), c_n = clamp(n_n);
    const double aq = lanes_total(sums[3]), an = lanes_total(sums[4]);
    const double qn = SWAP ? lanes_total(sums[5]) : 0.0;
    const double k_aq = 1.0 / (c_a * c_q), k_an = 1.0 / (c_a * c_n), k_qn = 1.0 / (c_q * c_n);
    const T d_ap = T(1) - T(aq * k_aq), d_an = T(1) - T(an * k_an);
    const T d_pn = SWAP ? T(1) - T(qn * k_qn) : T(0);
    double c_ap, c_an, c_pn;
    const T loss = triplet_hinge<T, SWAP>(p, d_ap, d_an, d_pn, GRAD ? row_scale(p, r) : 0.0,
                                           c_ap, c_an, c_pn);
    if constexpr (GRAD) {
        // h of x in the pair (x, y): dot / (c_x^2 c_y |x|) = dot k / (c_x |x|)
        auto h = [](double dot, double k, double c_x, double n_x) {
            return dot * k / c_x * (n_x == 0.0 ? 0.0 : 1.0 / n_x);
        };
        const double h_a_aq = h(aq, k_aq, c_a, n_a), h_q_aq = h(aq, k_aq, c_q, n_q);
        const double h_a_an = h(an, k_an, c_a, n_a), h_n_an = h(an, k_an, c_n, n_n);
        const double h_q_qn = SWAP ? h(qn, k_qn, c_q, n_q) : 0.0;
        const double h_n_qn = SWAP ? h(qn, k_qn, c_n, n_n) : 0.0;
        // ga = a (c_ap h + c_an h) - q c_ap k_aq - n c_an k_an, and so on
        const T aa = T(c_ap * h_a_aq + c_an * h_a_an), aq_ = T(-c_ap * k_aq), an_ = T(-c_an * k_an);
        const T qq = T(c_ap * h_q_aq + c_pn * h_q_qn), qa = aq_;
        const T qn_ = T(-c_pn * k_qn);
        const T nn = T(c_an * h_n_an + c_pn * h_n_qn), na = an_, nq = qn_;
        write_rows(D, a, q, n, p.g1 + r * D, p.g2 + r * D, p.g3 + r * D,
                   [=](T x, T y, T z, T& ga, T& gp, T& gn) {
            ga = aa * x + aq_ * y + an_ * z;
            if constexpr (SWAP) {
                gp = qa * x + qq * y + qn_ * z;
                gn = na * x + nq * y + nn * z;
            } else {  // p and n do not meet: no 0 * (a NaN of the other row)
                gp = qa * x + qq * y;
                gn = na * x + nn * z;
            }
        });
    }
    return double(loss);
}

// ---------------------------------------------------------------------------
// The sweep.
// ---------------------------------------------------------------------------

// At most this many rows per chunk: their losses fit BLOCKS_PER_CHUNK blocks.
inline index feature_rows_per_chunk(index D) {
    const index rows = ROW_CHUNK_ELEMENTS / std::max<index>(D, 1);
    return std::max<index>(1, std::min<index>(CHUNK, rows));
}

// Rows [lo, hi) (at most CHUNK of them): writes the per-row losses when
// p.loss is set and returns their sum, pairwise over blocks of BLOCK rows.
template <class T, class Row>
double feature_range(const FeatureArgs<T>& p, index lo, index hi, const Row& row) {
    double losses[BLOCK];
    double blocks[BLOCKS_PER_CHUNK];
    index nblocks = 0;
    for (index s = lo; s < hi; s += BLOCK) {
        const index m = std::min(BLOCK, hi - s);
        for (index j = 0; j < m; ++j) losses[j] = row(s + j);
        if (p.loss)
            for (index j = 0; j < m; ++j) p.loss[s + j] = T(losses[j]);
        blocks[nblocks++] = pairwise_sum(losses, m);
    }
    return pairwise_sum(blocks, nblocks);
}

template <class T, bool GRAD, class N>
double triplet_norm_range(const FeatureArgs<T>& p, index lo, index hi) {
    if (p.swap)
        return feature_range(p, lo, hi,
                             [&](index r) { return triplet_norm_row<T, N, true, GRAD>(p, r); });
    return feature_range(p, lo, hi,
                         [&](index r) { return triplet_norm_row<T, N, false, GRAD>(p, r); });
}

template <class T, bool GRAD>
double feature_kind_range(const FeatureArgs<T>& p, index lo, index hi) {
    if (p.kind == FT_COSINE_EMBEDDING)
        return feature_range(p, lo, hi,
                             [&](index r) { return cosine_embedding_row<T, GRAD>(p, r); });
    if (p.kind == FT_TRIPLET_COSINE) {
        if (p.swap)
            return feature_range(p, lo, hi,
                                 [&](index r) { return triplet_cosine_row<T, true, GRAD>(p, r); });
        return feature_range(p, lo, hi,
                             [&](index r) { return triplet_cosine_row<T, false, GRAD>(p, r); });
    }
    const double order = p.p;
    const bool single = p.D == 1;
    if (order == 2.0)
        return single ? triplet_norm_range<T, GRAD, SingleEntry<NormTwo>>(p, lo, hi)
                      : triplet_norm_range<T, GRAD, NormTwo>(p, lo, hi);
    if (order == 1.0) return triplet_norm_range<T, GRAD, NormOne>(p, lo, hi);
    if (order == 0.0) return triplet_norm_range<T, GRAD, NormZero>(p, lo, hi);
    if (order == std::numeric_limits<double>::infinity())
        return triplet_norm_range<T, GRAD, NormMax<false>>(p, lo, hi);
    if (order == -std::numeric_limits<double>::infinity())
        return triplet_norm_range<T, GRAD, NormMax<true>>(p, lo, hi);
    return single ? triplet_norm_range<T, GRAD, SingleEntry<NormGeneral>>(p, lo, hi)
                  : triplet_norm_range<T, GRAD, NormGeneral>(p, lo, hi);
}

template <class T>
double feature_chunk(const FeatureArgs<T>& p, index lo, index hi) {
    return p.g1 ? feature_kind_range<T, true>(p, lo, hi) : feature_kind_range<T, false>(p, lo, hi);
}

using feature_f32_fn = double(const FeatureArgs<float>&, index, index);
using feature_f64_fn = double(const FeatureArgs<double>&, index, index);
CLOSS_MULTIVERSION(feature_f32_fn, feature_f32, feature_chunk<float>)
CLOSS_MULTIVERSION(feature_f64_fn, feature_f64, feature_chunk<double>)

// The whole sweep: rows in chunks of about ROW_CHUNK_ELEMENTS elements,
// spread over `threads` threads.
template <class T>
double feature_sweep(double (*chunk)(const FeatureArgs<T>&, index, index), const FeatureArgs<T>& p,
                     int threads) {
    const index per_chunk = feature_rows_per_chunk(p.D);
    return sum_unit_chunks(p.rows, per_chunk, threads,
                           [&](index lo, index hi) { return chunk(p, lo, hi); });
}

}  // namespace closs
