// Overlap losses: MONAI's DiceLoss and TverskyLoss, value and gradient.
//
// The input x is viewed as (B, C, S): B batch entries, C channels, S the
// product of the spatial dims, so channel c of entry b is the contiguous run
// x[(b C + c) S + s].  p = act(x) is x itself, sigmoid(x), or the softmax over
// the C channels of each position.  The target g is a dense array like x, or
// one class label per position (MONAI's to_onehot_y: g_c = [label == c],
// without ever making the one-hot array).  Channels c >= first are scored
// (first = 1 for include_background=False).
//
// Per scored (b, c), or per c with batch=True (then the sums also run over b):
//   I = sum p g,   P = sum p  (sum p^2 if squared),   G = sum g  (sum g^2 if squared)
//   N = k I + nr,  D = u I + a P + b G + dr,  L = 1 - N / D
// One form covers every option (nr, dr: smooth_nr, smooth_dr as given):
//   Dice           k = 2, u = 0,         a = b = 1:  1 - (2I + nr) / (P + G + dr)
//   Dice, jaccard  k = 2, u = -2,        a = b = 2:  1 - (2I + nr) / (2(P + G - I) + dr)
//   Tversky        k = 1, u = 1 - α - β, a = α, b = β:
//                  1 - (I + nr) / (I + α (P - I) + β (G - I) + dr)
// i.e. Tversky in its uncoupled form (FP = P - I, FN = G - I, equal to MONAI's
// coupled sums of p (1 - g) and (1 - p) g up to rounding), and Dice is Tversky
// with α = β = 1/2 and both smooth terms halved (jaccard: α = β = 1).  The
// sums and the score are in double; P - I costs D an absolute error of a few
// ulp of P + G, so L = 1 - N/D is right to a few ulp of 1, as MONAI's own
// 1 - N/D.  The gradient, from the same function (overlap_score):
//   dL/dp = dL/dI g + dL/dP (1, or 2p if squared),
//   dL/dI = -(k - u N/D) / D,   dL/dP = a N / D^2,
// times the class weight, the reduction's scale and the upstream gradient,
// then through the activation (sigmoid: times p (1 - p); softmax:
// p_c (d_c - sum_c' p_c' d_c')).
//
// Design:
// 1. Sweep 1 reads x and g once and accumulates, per piece (`chunk`
//    consecutive positions of one batch entry) and scored channel, the three
//    sums in double (LANES accumulators, as closs_sum.hpp's block_sum; each
//    lane first adds a tile's 4 terms in T).  A unit of work is one piece, or
//    several whole entries when they are small.  Units run on the threads of
//    sum_chunks; the pieces' partial sums are combined per (b, c) by
//    pairwise_sum in index order, so every sum, and so the value and the
//    gradient, is bit-identical for any thread count.
// 2. overlap_finish turns the sums into the losses and the two gradient
//    coefficients per (b, c): a few B*C numbers.
// 3. Sweep 2 (gradient only) reads x and g again and writes the gradient once.
//    Each element's gradient needs the final sums of its (b, c), which exist
//    only after sweep 1 has read every element, so two reads of the input is
//    the floor.  (Keeping p from sweep 1 in the gradient buffer would replace
//    the second read of x by a write and a read of p: one more pass over
//    memory, to save recomputing the activation.)
// 4. Within a unit, positions go OV_TILE at a time: the activation of every
//    channel of a tile is computed into a small buffer (softmax needs all C
//    channels of a position), so the loops run along positions and vectorise
//    whatever C is.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "closs_isa.hpp"
#include "closs_sum.hpp"
#include "closs_vmath.hpp"

namespace closs {

enum OverlapAct { OV_NONE = 0, OV_SIGMOID = 1, OV_SOFTMAX = 2 };

template <class T>
struct OverlapArgs {
    index batch, classes, spatial;  // x viewed as (batch, classes, spatial)
    const T* x;
    const T* target;               // dense target like x, or null
    const std::int64_t* labels;    // (batch, spatial) labels in [0, classes), or null
    int act;                       // OverlapAct
    int squared;                   // squared_pred: P = sum p^2, G = sum g^2
    index first;                   // the first scored channel (0 or 1)
    int batch_sum;                 // batch=True: one score per channel, summed over b too
    double k, u, a, b, nr, dr;     // the score's coefficients (see the top of this file)
    const double* weight;          // one weight per scored channel, or null
    T* loss;                       // the weighted score per entry ('none'), or null
    T* grad;                       // like x, or null
    const T* grad_output;          // upstream gradient per entry, or null: gscale
    double gscale;                 // scalar upstream gradient times the reduction's scale

    // Set by overlap_run for the units.
    index chunk, chunks;           // positions per piece; pieces per batch entry
    index group;                   // entries per unit (1 unless chunks = 1)
    int pass;                      // 1: sums, 2: gradient
    double* partials;              // sweep 1 out: [3][scored channel][b][unit of b]
    const T* coef_g;               // sweep 2 in: (batch, classes) dL/dI ...
    const T* coef_p;               // ... and dL/dP (times 2 if squared), 0 where unscored
};

// L = 1 - N/D for the sums of one entry; sets dL/dI and dL/dP.  Value and
// gradient of every option come from here.
template <class T>
inline double overlap_score(const OverlapArgs<T>& q, double I, double P, double G, double& dI,
                            double& dP) {
    const double N = q.k * I + q.nr;
    const double D = ((q.u * I + q.a * P) + q.b * G) + q.dr;
    const double r = N / D;
    dI = -(q.k - q.u * r) / D;
    dP = q.a * r / D;
    return 1.0 - r;
}

constexpr index OV_TILE = 64;  // positions per tile

// p = act(x) at the L <= OV_TILE positions x[c * S + j] of every channel c,
// into p[c * OV_TILE + j]; with DERIV (sigmoid) also p' into d (same layout).
// Not called for OV_NONE (p is x itself).
template <int ACT, bool DERIV, class T>
inline void overlap_activate(const T* __restrict x, index C, index S, index L, T* __restrict p,
                             T* __restrict d) {
    if constexpr (ACT == OV_SOFTMAX) {
        T m[OV_TILE], s[OV_TILE];
        for (index j = 0; j < L; ++j) m[j] = -std::numeric_limits<T>::infinity();
        for (index c = 0; c < C; ++c)
            for (index j = 0; j < L; ++j) {  // NaN is skipped here, and propagates via exp
                const T v = x[c * S + j];
                m[j] = m[j] < v ? v : m[j];
            }
        for (index j = 0; j < L; ++j) s[j] = T(0);
        for (index c = 0; c < C; ++c)
            for (index j = 0; j < L; ++j) {
                const T e = vexp_nonpos(x[c * S + j] - m[j]);
                p[c * OV_TILE + j] = e;
                s[j] += e;
            }
        for (index j = 0; j < L; ++j) s[j] = T(1) / s[j];
        for (index c = 0; c < C; ++c)
            for (index j = 0; j < L; ++j) p[c * OV_TILE + j] *= s[j];
    } else {
        // sigmoid(v) = 1 / (1 + e) for v >= 0, e / (1 + e) below, e = exp(-|v|) <= 1:
        // no overflow, full relative accuracy on both sides; p' = e / (1 + e)^2.
        for (index c = 0; c < C; ++c)
            for (index j = 0; j < L; ++j) {
                const T v = x[c * S + j];
                const T e = vexp_nonpos(-std::abs(v));
                const T r = T(1) / (T(1) + e);
                p[c * OV_TILE + j] = vselect(v >= T(0), r, e * r);
                if constexpr (DERIV) d[c * OV_TILE + j] = e * r * r;
            }
    }
}

// The target of channel c at position j of a tile.
template <class T>
struct DenseTarget {
    const T* t;  // the tile's channel 0
    index S;
    T operator()(index c, index j) const { return t[c * S + j]; }
};

template <class T>
struct LabelTarget {
    const std::int64_t* t;  // the tile's labels
    T operator()(index c, index j) const { return vselect(t[j] == c, T(1), T(0)); }
};

// Sweep 1 over positions [s0, s1) of entry b, piece k of it: the three sums
// of each scored channel into the partials.
template <class T, int ACT, bool SQ, class Target>
inline void overlap_sums(const OverlapArgs<T>& p, index b, index k, index s0, index s1,
                         const Target& target_of_tile, T* pbuf, double* acc) {
    const index C = p.classes, S = p.spatial, first = p.first, scored = C - first;
    const T* x = p.x + b * C * S;
    for (index s = s0; s < s1; s += OV_TILE) {
        const index L = std::min(OV_TILE, s1 - s);
        if constexpr (ACT != OV_NONE)
            overlap_activate<ACT, false>(x + s, C, S, L, pbuf, (T*)nullptr);
        const auto g = target_of_tile(b, s);
        for (index c = first; c < C; ++c) {
            const T* __restrict pc = ACT == OV_NONE ? x + c * S + s : pbuf + c * OV_TILE;
            // A lane adds at most OV_TILE / LANES = 4 terms in T, then joins the
            // channel's double accumulator: a quarter of the conversions, and
            // for float32 still far more accurate than a float32 pairwise sum.
            T tI[LANES] = {}, tP[LANES] = {}, tG[LANES] = {};
            auto add = [&](int l, T pv, T gv) {
                tI[l] += pv * gv;
                tP[l] += SQ ? pv * pv : pv;
                tG[l] += SQ ? gv * gv : gv;
            };
            index j = 0;
            for (; j + LANES <= L; j += LANES)
                for (int l = 0; l < LANES; ++l) add(l, pc[j + l], g(c, j + l));
            if (j < L) {  // the last few positions, zero-padded to LANES
                T pt[LANES] = {}, gt[LANES] = {};
                for (index l = 0; j + l < L; ++l) {
                    pt[l] = pc[j + l];
                    gt[l] = g(c, j + l);
                }
                for (int l = 0; l < LANES; ++l) add(l, pt[l], gt[l]);
            }
            double* slot = acc + 3 * (c - first) * LANES;
            if (s == s0)  // the first tile sets the slots
                for (int l = 0; l < LANES; ++l) {
                    slot[l] = double(tI[l]);
                    slot[LANES + l] = double(tP[l]);
                    slot[2 * LANES + l] = double(tG[l]);
                }
            else
                for (int l = 0; l < LANES; ++l) {
                    slot[l] += double(tI[l]);
                    slot[LANES + l] += double(tP[l]);
                    slot[2 * LANES + l] += double(tG[l]);
                }
        }
    }
    for (index q = 0; q < 3; ++q)
        for (index c = 0; c < scored; ++c)
            p.partials[((q * scored + c) * p.batch + b) * p.chunks + k] =
                lanes_total(acc + (3 * c + q) * LANES);
}

// Sweep 2 over positions [s0, s1) of entry b: the gradient w.r.t. x.
template <class T, int ACT, bool SQ, class Target>
inline void overlap_grad(const OverlapArgs<T>& p, index b, index s0, index s1,
                         const Target& target_of_tile, T* pbuf, T* dbuf) {
    const index C = p.classes, S = p.spatial, first = p.first;
    const T* x = p.x + b * C * S;
    T* out = p.grad + b * C * S;
    const T* cg = p.coef_g + b * C;
    const T* cp = p.coef_p + b * C;
    T dot[OV_TILE];
    for (index s = s0; s < s1; s += OV_TILE) {
        const index L = std::min(OV_TILE, s1 - s);
        if constexpr (ACT != OV_NONE)
            overlap_activate<ACT, ACT == OV_SIGMOID>(x + s, C, S, L, pbuf, dbuf);
        const auto g = target_of_tile(b, s);
        if constexpr (ACT == OV_SOFTMAX)
            for (index j = 0; j < L; ++j) dot[j] = T(0);
        for (index c = 0; c < C; ++c) {
            const T* __restrict pc = ACT == OV_NONE ? x + c * S + s : pbuf + c * OV_TILE;
            const T* __restrict dc = ACT == OV_SIGMOID ? dbuf + c * OV_TILE : nullptr;
            T* __restrict o = out + c * S + s;
            auto emit = [&](index j, T d) {  // d = dL/dp, through the activation
                if constexpr (ACT == OV_NONE) o[j] = d;
                if constexpr (ACT == OV_SIGMOID) o[j] = d * dc[j];
                if constexpr (ACT == OV_SOFTMAX) {
                    o[j] = d;
                    dot[j] += pc[j] * d;
                }
            };
            if (c < first) {  // unscored: d = 0 (0 * p' stays NaN at a NaN logit, as torch)
                for (index j = 0; j < L; ++j) emit(j, T(0));
                continue;
            }
            const T a = cg[c], e = cp[c];
            for (index j = 0; j < L; ++j) emit(j, a * g(c, j) + (SQ ? e * pc[j] : e));
        }
        if constexpr (ACT == OV_SOFTMAX)
            for (index c = 0; c < C; ++c) {
                const T* __restrict pc = pbuf + c * OV_TILE;
                T* __restrict o = out + c * S + s;
                for (index j = 0; j < L; ++j) o[j] = pc[j] * (o[j] - dot[j]);
            }
    }
}

// Unit u is piece u % chunks (of `chunk` positions) of entry u / chunks, or,
// when an entry is one piece (chunks = 1), the `group` entries from u * group.
template <class T, int ACT, bool SQ, class Target>
inline void overlap_pass(const OverlapArgs<T>& p, index u, const Target& target_of_tile) {
    const index k = u % p.chunks, b0 = u / p.chunks * p.group;
    const index s0 = k * p.chunk, s1 = std::min(p.spatial, s0 + p.chunk);
    const index tile = p.classes * OV_TILE;  // the activation of every channel of a tile
    std::vector<T> pbuf(ACT == OV_NONE ? 0 : tile), dbuf(ACT == OV_SIGMOID ? tile : 0);
    std::vector<double> acc(p.pass == 1 ? 3 * p.classes * LANES : 0);
    for (index b = b0; b < std::min(p.batch, b0 + p.group); ++b) {
        if (p.pass == 1)
            overlap_sums<T, ACT, SQ>(p, b, k, s0, s1, target_of_tile, pbuf.data(), acc.data());
        else
            overlap_grad<T, ACT, SQ>(p, b, s0, s1, target_of_tile, pbuf.data(), dbuf.data());
    }
}

template <class T, int ACT, bool SQ>
inline void overlap_unit_target(const OverlapArgs<T>& p, index u) {
    if (p.labels) {
        overlap_pass<T, ACT, SQ>(p, u, [&p](index b, index s) {
            return LabelTarget<T>{p.labels + b * p.spatial + s};
        });
    } else {
        overlap_pass<T, ACT, SQ>(p, u, [&p](index b, index s) {
            return DenseTarget<T>{p.target + b * p.classes * p.spatial + s, p.spatial};
        });
    }
}

// One unit of either sweep: the run-time options become template arguments.
template <class T>
double overlap_unit(const OverlapArgs<T>& p, index u) {
    switch (p.act * 2 + (p.squared ? 1 : 0)) {
        case 0: overlap_unit_target<T, OV_NONE, false>(p, u); break;
        case 1: overlap_unit_target<T, OV_NONE, true>(p, u); break;
        case 2: overlap_unit_target<T, OV_SIGMOID, false>(p, u); break;
        case 3: overlap_unit_target<T, OV_SIGMOID, true>(p, u); break;
        case 4: overlap_unit_target<T, OV_SOFTMAX, false>(p, u); break;
        default: overlap_unit_target<T, OV_SOFTMAX, true>(p, u); break;
    }
    return 0.0;
}

using overlap_f32_fn = double(const OverlapArgs<float>&, index);
using overlap_f64_fn = double(const OverlapArgs<double>&, index);
CLOSS_MULTIVERSION(overlap_f32_fn, overlap_f32, overlap_unit<float>)
CLOSS_MULTIVERSION(overlap_f64_fn, overlap_f64, overlap_unit<double>)

// The sums of entry e, then its loss and gradient coefficients (step 2 of the
// design).  Returns the sum of the weighted losses over the entries.
template <class T>
double overlap_finish(const OverlapArgs<T>& p, std::vector<T>& coef_g, std::vector<T>& coef_p) {
    const index C = p.classes, scored = C - p.first, B = p.batch;
    const index entries = p.batch_sum ? scored : B * scored;
    const index run = p.batch_sum ? B * p.chunks : p.chunks;  // partials per entry and sum
    std::vector<double> losses(entries);
    for (index e = 0; e < entries; ++e) {
        const index c = e % scored, b = p.batch_sum ? 0 : e / scored;
        double sums[3];
        for (index q = 0; q < 3; ++q)
            sums[q] = pairwise_sum(p.partials + ((q * scored + c) * B + b) * p.chunks, run);
        double dI, dP;
        const double w = p.weight ? p.weight[c] : 1.0;
        losses[e] = w * overlap_score(p, sums[0], sums[1], sums[2], dI, dP);
        if (p.loss) p.loss[e] = T(losses[e]);
        if (p.grad) {
            const double up = p.grad_output ? p.gscale * double(p.grad_output[e]) : p.gscale;
            const double scale = w * up;
            const T ci = T(scale * dI), cq = T(scale * dP * (p.squared ? 2.0 : 1.0));
            for (index bb = p.batch_sum ? 0 : b; bb < (p.batch_sum ? B : b + 1); ++bb) {
                coef_g[bb * C + p.first + c] = ci;
                coef_p[bb * C + p.first + c] = cq;
            }
        }
    }
    return pairwise_sum(losses.data(), entries);
}

// The whole computation: sweep 1, the scores, and sweep 2 when p.grad is set.
// Returns the sum of the weighted losses of all entries.
template <class T>
double overlap_run(double (*unit)(const OverlapArgs<T>&, index), const OverlapArgs<T>& args,
                   int threads) {
    OverlapArgs<T> p = args;
    const index C = p.classes;
    // Units of about ROW_CHUNK_ELEMENTS input elements (pieces of a whole
    // number of tiles, or groups of small entries): the shape alone fixes
    // them, never the thread count.
    const index unit_elements = ROW_CHUNK_ELEMENTS;
    p.chunk = std::max<index>(1, unit_elements / std::max<index>(1, C) / OV_TILE) * OV_TILE;
    p.chunks = (p.spatial + p.chunk - 1) / p.chunk;
    p.group = p.chunks > 1 ? 1 : std::max<index>(1, unit_elements / std::max<index>(1, C * p.spatial));
    const index units = p.chunks * ((p.batch + p.group - 1) / p.group);
    std::vector<double> partials(3 * (C - p.first) * p.batch * p.chunks);
    p.partials = partials.data();
    p.pass = 1;
    sum_chunks(units, threads, [&](index u) { return unit(p, u); });
    std::vector<T> coef_g(p.grad ? p.batch * C : 0, T(0)), coef_p(coef_g.size(), T(0));
    const double total = overlap_finish(p, coef_g, coef_p);
    if (p.grad) {
        p.coef_g = coef_g.data();
        p.coef_p = coef_p.data();
        p.pass = 2;
        sum_chunks(units, threads, [&](index u) { return unit(p, u); });
    }
    return total;
}

}  // namespace closs
