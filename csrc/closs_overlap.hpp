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
// 1 - N/D.  The gradient, from the same function (overlap_settle):
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
// 2. overlap_settle turns the sums into the losses and the two gradient
//    coefficients per (b, c): a few B*C numbers.
// 3. Sweep 2 (gradient only) reads x (or p) and g again and writes the
//    gradient once.  Each element's gradient needs the final sums of its
//    (b, c), which exist only after sweep 1 has read every element, so two
//    reads of the input is the floor.  With softmax, sweep 1 leaves p in the
//    gradient buffer and sweep 2 reads it back instead of x: one more write
//    over memory, but no second exp per element, which costs more (measured:
//    16x4x40x40 and 16x4x400x400 value+grad 20-35% faster, 1 and 2 threads).
//    Sigmoid recomputes: p' = p (1 - p) from a stored p would lose p''s
//    relative accuracy where p is near 1.
// 4. Within a unit, positions go OV_TILE at a time: the activation of every
//    channel of a tile is computed into a small buffer (softmax needs all C
//    channels of a position), so the loops run along positions and vectorise
//    whatever C is.  Entries of at most OV_TILE / 2 positions are packed
//    several to a tile.  The lane sums are written with vector types
//    (HalfLanes, closs_sum.hpp), which GCC compiles to whole registers where
//    its own vectoriser produced lane-by-lane shuffles (16x4x32x32 sweep 1:
//    1.6x faster); half the lanes per vector, since vectors of 16 doubles
//    were spilled lane by lane on AVX2 (16x4x40x40 float32 value: 151 ->
//    115 us there).
// 5. When every entry fits in one unit (and batch=False), the units settle
//    their own entries: step 2 as soon as an entry's sums are complete, and
//    step 3 right after, while the entry is in cache; an entry of one tile
//    takes its gradient from the tile's buffers (no second load, no copy of
//    p through the gradient).  Only the order of the work changes, not a bit
//    (16x4x4x4 value+grad 15-20% faster).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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
    bool settle;                   // units settle their whole entries (design, step 5)
    bool keep_p;                   // sweep 1 stores p in grad for sweep 2 (softmax)
    double* partials;              // sweep 1 out: [3][scored channel][b][unit of b]
    double* losses;                // the weighted score per entry (as loss, in double)
    T* coef_g;                     // (batch, classes) dL/dI (from overlap_settle) ...
    T* coef_p;                     // ... and dL/dP (times 2 if squared), 0 where unscored
};

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

// Channel c, positions [s, s + L) of the n entries from b of a (B, C, S)
// array, packed at buf[c * OV_TILE + e * L + j] (n L <= OV_TILE) ...
template <class T>
inline void overlap_gather(const T* a, index C, index S, index b, index n, index s, index L,
                           T* __restrict buf) {
    for (index e = 0; e < n; ++e)
        for (index c = 0; c < C; ++c) {
            const T* __restrict from = a + ((b + e) * C + c) * S + s;
            T* __restrict to = buf + c * OV_TILE + e * L;
            for (index j = 0; j < L; ++j) to[j] = from[j];
        }
}

// ... and back.
template <class T>
inline void overlap_scatter(const T* buf, index C, index S, index b, index n, index s, index L,
                            T* a) {
    for (index e = 0; e < n; ++e)
        for (index c = 0; c < C; ++c) {
            const T* __restrict from = buf + c * OV_TILE + e * L;
            T* __restrict to = a + ((b + e) * C + c) * S + s;
            for (index j = 0; j < L; ++j) to[j] = from[j];
        }
}

// Sweep 1, one entry's L positions of a tile: p and g of channel c, position
// j at pe[c * ps + j] and ge[c * gs + j]; adds the three sums of each scored
// channel to its LANES accumulators in acc (the entry's first tile sets
// them).  An entry of one tile (whole: first and last) goes straight to
// `sums`, its three sums per scored channel, as overlap_sums_done would.
template <class T, bool SQ>
inline void overlap_sums(index first, index C, index L, const T* pe, index ps, const T* ge,
                         index gs, bool first_tile, bool whole, double* acc, double* sums) {
    // The LANES lanes as two halves (lane k holds the positions k mod LANES)
    using V = typename HalfLanes<T>::type;
    using VD = HalfLanesD;
    constexpr int H = LANES / 2;
    for (index c = first; c < C; ++c) {
        const T* pc = pe + c * ps;
        const T* gc = ge + c * gs;
        // A lane adds at most OV_TILE / LANES = 4 terms in T, then joins the
        // channel's double accumulator: a quarter of the conversions, and
        // for float32 still far more accurate than a float32 pairwise sum.
        V tI[2] = {}, tP[2] = {}, tG[2] = {};
        auto add = [&](const T* p, const T* g) {  // LANES positions
            for (int h = 0; h < 2; ++h) {
                V pv, gv;
                lanes_load(pv, p + h * H);
                lanes_load(gv, g + h * H);
                tI[h] += pv * gv;
                tP[h] += SQ ? pv * pv : pv;
                tG[h] += SQ ? gv * gv : gv;
            }
        };
        index j = 0;
        for (; j + LANES <= L; j += LANES) add(pc + j, gc + j);
        // The last L % LANES positions in double, joined after the lanes.
        // Scalar code: a zero-padded vector made through memory stalls on
        // store forwarding (16x4x3x3 kernel: 3.0 -> 2.0 us value, 3.8 -> 2.8 us
        // value+grad).
        double tail[3] = {0.0, 0.0, 0.0};
        for (; j < L; ++j) {
            const T pv = pc[j], gv = gc[j];
            tail[0] += double(pv * gv);
            tail[1] += double(SQ ? pv * pv : pv);
            tail[2] += double(SQ ? gv * gv : gv);
        }
        if (whole && L < LANES) {  // no lane was used: the sums are the tail's (same bits)
            for (int q = 0; q < 3; ++q) sums[3 * (c - first) + q] = tail[q];
            continue;
        }
        const V* t[3] = {tI, tP, tG};
        double* slot = acc + 3 * (c - first) * LANES;
        for (int q = 0; q < 3; ++q) {
            VD d[2] = {__builtin_convertvector(t[q][0], VD), __builtin_convertvector(t[q][1], VD)};
            if (whole) {
                sums[3 * (c - first) + q] = lanes_total(d[0], d[1]) + tail[q];
                continue;
            }
            for (int h = 0; h < 2; ++h) {
                double* to = slot + q * LANES + h * H;
                if (!first_tile) {
                    VD v;
                    lanes_load(v, to);
                    d[h] += v;
                }
                lanes_store(to, d[h]);
            }
            slot[q * LANES] += tail[q];
        }
    }
}

// Entry (with batch=True: channel) e's scored channel c from its three sums
// I, P, G: its weighted loss L = 1 - N/D and, for the gradient, the
// coefficients dL/dI = -(k - u N/D) / D and dL/dP = a N / D^2 of the entries
// it covers (step 2 of the design).  Value and gradient of every option come
// from here.
template <class T>
inline void overlap_settle(const OverlapArgs<T>& p, index e, index c, const double* sums) {
    const index scored = p.classes - p.first, at = e * scored + c;
    const double I = sums[0], P = sums[1], G = sums[2];
    const double N = p.k * I + p.nr;
    const double D = ((p.u * I + p.a * P) + p.b * G) + p.dr;
    const double r = N / D;
    const double w = p.weight ? p.weight[c] : 1.0;
    p.losses[at] = w * (1.0 - r);
    if (p.loss) p.loss[at] = T(p.losses[at]);
    if (!p.grad) return;
    const double up = p.grad_output ? p.gscale * double(p.grad_output[at]) : p.gscale;
    const double scale = w * up;
    const T ci = T(scale * (-(p.k - p.u * r) / D)),
            cq = T(scale * (p.a * r / D) * (p.squared ? 2.0 : 1.0));
    for (index b = p.batch_sum ? 0 : e; b < (p.batch_sum ? p.batch : e + 1); ++b) {
        p.coef_g[b * p.classes + p.first + c] = ci;
        p.coef_p[b * p.classes + p.first + c] = cq;
    }
}

// Entry b's piece k: its three sums per scored channel, from its
// accumulators (acc) or already summed (sums), into the partials, or
// settled at once when the piece is the whole entry.
template <class T>
inline void overlap_sums_done(const OverlapArgs<T>& p, index b, index k, const double* acc,
                              const double* sums) {
    const index scored = p.classes - p.first;
    for (index c = 0; c < scored; ++c) {
        double s[3];
        for (index q = 0; q < 3; ++q)
            s[q] = acc ? lanes_total(acc + (3 * c + q) * LANES) : sums[3 * c + q];
        if (p.settle) {
            overlap_settle(p, b, c, s);
            continue;
        }
        for (index q = 0; q < 3; ++q)
            p.partials[((q * scored + c) * p.batch + b) * p.chunks + k] = s[q];
    }
}

// Sweep 2, one entry's L positions [s, s + L) of a tile (p, g and, for
// sigmoid, p' as in overlap_sums, p' at de[c * ps + j]): the gradient w.r.t. x.
template <class T, int ACT, bool SQ>
inline void overlap_grad(const OverlapArgs<T>& p, index b, index s, index L, const T* pe,
                         const T* de, index ps, const T* ge, index gs) {
    const index C = p.classes, S = p.spatial, first = p.first;
    T* out = p.grad + b * C * S + s;
    const T* cg = p.coef_g + b * C;
    const T* cp = p.coef_p + b * C;
    T dot[OV_TILE];
    if constexpr (ACT == OV_SOFTMAX)
        for (index j = 0; j < L; ++j) dot[j] = T(0);
    for (index c = 0; c < C; ++c) {
        const T* __restrict pc = pe + c * ps;
        const T* __restrict dc = ACT == OV_SIGMOID ? de + c * ps : nullptr;
        const T* __restrict gc = ge + c * gs;
        T* __restrict o = out + c * S;
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
        for (index j = 0; j < L; ++j) emit(j, a * gc[j] + (SQ ? e * pc[j] : e));
    }
    if constexpr (ACT == OV_SOFTMAX)
        for (index c = 0; c < C; ++c) {
            const T* __restrict pc = pe + c * ps;
            T* __restrict o = out + c * S;
            for (index j = 0; j < L; ++j) o[j] = pc[j] * (o[j] - dot[j]);
        }
}

// Unit u is piece u % chunks (of `chunk` positions) of entry u / chunks, or,
// when an entry is one piece (chunks = 1), the `group` entries from u * group.
// A tile is OV_TILE positions of one entry, or several whole entries of at
// most OV_TILE / 2 positions packed together, so that the loops over a
// tile's positions run as long as a large entry's.  The activation (p) and a
// label target (g_c = [label == c]) are made per tile in small buffers.
template <class T, int ACT, bool SQ>
inline void overlap_pass(const OverlapArgs<T>& p, index u) {
    const index C = p.classes, S = p.spatial, CS = C * S;
    const index k = u % p.chunks, b0 = u / p.chunks * p.group;
    const index b1 = std::min(p.batch, b0 + p.group);
    const index s0 = k * p.chunk, s1 = std::min(S, s0 + p.chunk);
    const index per_tile = S <= OV_TILE / 2 ? OV_TILE / std::max<index>(S, 1) : 1;
    const bool sums = p.pass == 1, act = ACT != OV_NONE, dense = p.labels == nullptr;
    // The gradient follows the sums in this unit (settled entries); when an
    // entry is one tile, from the tile's buffers as the sums left them.
    const bool then_grad = sums && p.settle && p.grad, reuse = then_grad && s1 - s0 <= OV_TILE;
    const index tile = C * OV_TILE;  // every channel of a tile
    std::vector<T> xbuf(act && per_tile > 1 ? tile : 0), pbuf(act ? tile : 0),
        dbuf(ACT == OV_SIGMOID ? tile : 0), gbuf(dense ? 0 : tile);
    std::vector<double> acc(sums ? 3 * C * LANES : 0), totals(sums ? 3 * C : 0);
    // p (with `deriv` also p') and g of the n entries from b, positions
    // [s, s + L) of each, for the sums (for_sums) or the gradient.
    auto load = [&](index b, index n, index s, index L, bool for_sums, bool deriv) {
        if (act && !for_sums && p.keep_p) {  // sweep 1 left p in the gradient
            overlap_gather(p.grad, C, S, b, n, s, L, pbuf.data());
        } else if (act) {
            const T* src = p.x + b * CS + s;
            index stride = S;
            if (n > 1) {
                overlap_gather(p.x, C, S, b, n, s, L, xbuf.data());
                src = xbuf.data();
                stride = OV_TILE;
            }
            if (deriv)
                overlap_activate<ACT, ACT == OV_SIGMOID>(src, C, stride, n * L, pbuf.data(),
                                                         dbuf.data());
            else
                overlap_activate<ACT, false>(src, C, stride, n * L, pbuf.data(), (T*)nullptr);
            if (for_sums && p.keep_p && !reuse)
                overlap_scatter(pbuf.data(), C, S, b, n, s, L, p.grad);
        }
        if (!dense) {
            const std::int64_t* __restrict lab = p.labels + b * S + s;  // n L in a row
            for (index c = 0; c < C; ++c)
                for (index j = 0; j < n * L; ++j)
                    gbuf[c * OV_TILE + j] = vselect(lab[j] == c, T(1), T(0));
        }
    };
    // Entry e (of n from b) of the loaded tile: p, p' and g of channel c,
    // position j at pe[c * ps + j], de[c * ps + j] and ge[c * gs + j]; g is
    // a dense target itself (read in place: a packed copy saves nothing, as
    // sums and gradient run per entry; 16x4x4x4 softmax value+grad 8% faster),
    // or the labels' one-hot in the tile buffer.
    const index ps = act ? OV_TILE : S;
    auto run = [&](index b, index n, index s, index L, bool grad) {
        const index gs = dense ? S : OV_TILE;
        for (index e = 0; e < n; ++e) {
            const T* pe = act ? pbuf.data() + e * L : p.x + (b + e) * CS + s;
            const T* ge = dense ? p.target + (b + e) * CS + s : gbuf.data() + e * L;
            if (grad) {
                const T* de = ACT == OV_SIGMOID ? dbuf.data() + e * L : nullptr;
                overlap_grad<T, ACT, SQ>(p, b + e, s, L, pe, de, ps, ge, gs);
                continue;
            }
            const bool whole = s == s0 && s + OV_TILE >= s1;
            overlap_sums<T, SQ>(p.first, C, L, pe, ps, ge, gs, s == s0, whole, acc.data(),
                                totals.data());
            if (s + OV_TILE >= s1)
                overlap_sums_done(p, b + e, k, whole ? nullptr : acc.data(), totals.data());
        }
    };
    for (index b = b0; b < b1; b += per_tile) {
        const index n = std::min(per_tile, b1 - b);
        for (index s = s0; s < s1; s += OV_TILE) {
            const index L = std::min(OV_TILE, s1 - s);  // per entry
            load(b, n, s, L, sums, !sums || reuse);
            run(b, n, s, L, !sums);
        }
        if (then_grad)
            for (index s = s0; s < s1; s += OV_TILE) {
                const index L = std::min(OV_TILE, s1 - s);
                if (!reuse) load(b, n, s, L, false, true);
                run(b, n, s, L, true);
            }
    }
}

// One unit of either sweep: the run-time options become template arguments.
template <class T>
double overlap_unit(const OverlapArgs<T>& p, index u) {
    switch (p.act * 2 + (p.squared ? 1 : 0)) {
        case 0: overlap_pass<T, OV_NONE, false>(p, u); break;
        case 1: overlap_pass<T, OV_NONE, true>(p, u); break;
        case 2: overlap_pass<T, OV_SIGMOID, false>(p, u); break;
        case 3: overlap_pass<T, OV_SIGMOID, true>(p, u); break;
        case 4: overlap_pass<T, OV_SOFTMAX, false>(p, u); break;
        default: overlap_pass<T, OV_SOFTMAX, true>(p, u); break;
    }
    return 0.0;
}

using overlap_f32_fn = double(const OverlapArgs<float>&, index);
using overlap_f64_fn = double(const OverlapArgs<double>&, index);
CLOSS_MULTIVERSION(overlap_f32_fn, overlap_f32, overlap_unit<float>)
CLOSS_MULTIVERSION(overlap_f64_fn, overlap_f64, overlap_unit<double>)

// The sums of each entry (b, c) from the partials, settled (step 2 of the design).
template <class T>
void overlap_finish(const OverlapArgs<T>& p) {
    const index scored = p.classes - p.first, B = p.batch;
    const index run = p.batch_sum ? B * p.chunks : p.chunks;  // partials per entry and sum
    for (index e = 0; e < (p.batch_sum ? 1 : B); ++e)
        for (index c = 0; c < scored; ++c) {
            double sums[3];
            for (index q = 0; q < 3; ++q) {
                const double* v = p.partials + ((q * scored + c) * B + e) * p.chunks;
                sums[q] = run == 1 ? v[0] : pairwise_sum(v, run);
            }
            overlap_settle(p, e, c, sums);
        }
}

// The whole computation: sweep 1, the scores, and sweep 2 when p.grad is set.
// Returns the sum of the weighted losses of all entries.
template <class T>
double overlap_run(double (*unit)(const OverlapArgs<T>&, index), const OverlapArgs<T>& args,
                   int threads) {
    OverlapArgs<T> p = args;
    const index C = p.classes, scored = C - p.first;
    // Units of about ROW_CHUNK_ELEMENTS input elements (pieces of a whole
    // number of tiles, or groups of small entries): the shape alone fixes
    // them, never the thread count.
    const index unit_elements = ROW_CHUNK_ELEMENTS;
    p.chunk = std::max<index>(1, unit_elements / std::max<index>(1, C) / OV_TILE) * OV_TILE;
    p.chunks = (p.spatial + p.chunk - 1) / p.chunk;
    p.group = p.chunks > 1 ? 1 : std::max<index>(1, unit_elements / std::max<index>(1, C * p.spatial));
    const index units = p.chunks * ((p.batch + p.group - 1) / p.group);
    p.settle = p.chunks == 1 && !p.batch_sum;
    std::vector<double> partials(p.settle ? 0 : 3 * scored * p.batch * p.chunks),
        losses((p.batch_sum ? 1 : p.batch) * scored);
    std::vector<T> coef_g(p.grad ? p.batch * C : 0, T(0)), coef_p(coef_g.size(), T(0));
    p.partials = partials.data();
    p.losses = losses.data();
    p.coef_g = coef_g.data();
    p.coef_p = coef_p.data();
    p.keep_p = p.grad && p.act == OV_SOFTMAX;
    p.pass = 1;
    sum_chunks(units, threads, [&](index u) { return unit(p, u); });
    if (!p.settle) {
        overlap_finish(p);
        if (p.grad) {
            p.pass = 2;
            sum_chunks(units, threads, [&](index u) { return unit(p, u); });
        }
    }
    return pairwise_sum(losses.data(), index(losses.size()));
}

}  // namespace closs
