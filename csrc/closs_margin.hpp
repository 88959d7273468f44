// Margin losses over a class axis, one sweep per row: MultiMarginLoss and
// MultiLabelMarginLoss.
//
// The input is (rows, C), C-contiguous.  Both losses are sums of hinge terms
// h(z) over pairs of a target class j and another class i, with
//
//     z = (margin - x_j) + x_i        (torch's order of operations, so that the
//                                      strict test z > 0 decides as torch does)
//     h(z) = z^p where z > 0, else 0  (strict: the gradient at the hinge is 0;
//                                      NaN is never > 0, so a NaN logit adds nothing)
//
//   MultiMargin (target t, class weight w, margin m, p in {1, 2}):
//     loss = w_t / C * sum_{i != t} h(z_i)
//     grad_i = k h'(z_i) / p for i != t,  grad_t = -k sum_{i != t} h'(z_i) / p,
//     k = p scale w_t / C   (torch's (2 g) z for p = 2: finite where 2 z overflows)
//   MultiLabelMargin (targets J: the row's entries before its first -1; margin 1, p 1):
//     loss = 1 / C * sum_{j in J} sum_{i not in J} h(z_ji)   (a repeated j counts again)
//     grad_c = k * (number of active pairs (j, c)) - k * (number of active pairs (c, i)),
//              k = scale / C  (c counts as the other class i, or as the target j)
//
// h and h' come from one inline function, `hinge`.  A multi-margin row is read
// once (x_t, then the classes before and after t in two vectorised loops) and
// its gradient written once.  A multilabel row is swept once per target; its
// pair counts go to a scratch row, and the gradient is written once at the end
// (a row of at most LANES classes in registers: multilabel_short_row).
// Sums within a row are kept in LANES accumulators of the input's type over
// blocks of BLOCK classes, then in double (vectorised for float32 too, and
// accurate for rows of any length).
//
// Rows are processed in chunks of about ROW_CHUNK_ELEMENTS elements; each chunk
// returns the pairwise sum of its rows' losses and closs_sum.hpp combines the
// chunks in index order, so the reduction does not depend on the thread count.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

#include "closs_isa.hpp"
#include "closs_sum.hpp"
#include "closs_vmath.hpp"

namespace closs {

enum MarginKind { MARGIN_P1 = 0, MARGIN_P2, MARGIN_MULTILABEL };

template <class T>
struct MarginArgs {
    index rows, classes;
    const T* x;                   // (rows, classes)
    const std::int64_t* target;   // MultiMargin: (rows) in [0, C);
                                  // MultiLabel: (rows, classes) in [-1, C)
    const T* weight;              // (classes) class weights (MultiMargin), or null
    double margin;
    int kind;                     // a MarginKind
    T* loss;                      // (rows) per-row loss ('none'), or null
    T* grad;                      // like x, or null
    const T* grad_output;         // (rows) upstream gradient, or null: gscale
    double gscale;                // scalar upstream gradient times the reduction's scale
};

// The hinge term of one pair: returns h(z) and sets dz = h'(z) / P (the
// caller's factor k carries P).
template <int P, class T>
inline T hinge(T z, T& dz) {
    const bool on = z > T(0);
    dz = on ? (P == 1 ? T(1) : z) : T(0);
    return on ? (P == 1 ? z : z * z) : T(0);
}

// Sums over i in [lo, hi) of body(i, l, s), which adds a term to l and a
// slope to s: LANES independent accumulators of type T (so the loop
// vectorises for float32 too), added into the double lanes `loss` and
// `slope` after each block of BLOCK elements, so a float32 partial sum never
// holds more than BLOCK / LANES terms.
template <class T, class Body>
inline void lane_sums(index lo, index hi, const Body& body, double* loss, double* slope) {
    for (index b = lo; b < hi; b += BLOCK) {
        const index e = std::min(hi, b + BLOCK);
        T l[LANES] = {}, s[LANES] = {};
        index i = b;
        for (; i + LANES <= e; i += LANES)
            // Kept rolled so that this loop over the lanes is what gets
            // vectorised: unrolled first, gcc vectorises the outer loop
            // instead, with strided loads (several times slower).
#pragma GCC unroll 1
            for (int j = 0; j < LANES; ++j) body(i + j, l[j], s[j]);
        for (int j = 0; i + j < e; ++j) body(i + j, l[j], s[j]);
        for (int j = 0; j < LANES; ++j) {
            loss[j] += double(l[j]);
            slope[j] += double(s[j]);
        }
    }
}

template <class T>
inline double row_scale(const MarginArgs<T>& p, index r) {
    return p.grad_output ? p.gscale * double(p.grad_output[r]) : p.gscale;
}

// One MultiMargin row (see the top of this file).
template <int P, bool GRAD, class T>
inline double multi_margin_row(const MarginArgs<T>& p, index r) {
    const index C = p.classes;
    const T* __restrict x = p.x + r * C;
    T* __restrict g = GRAD ? p.grad + r * C : nullptr;
    const index t = index(p.target[r]);
    const double w = p.weight ? double(p.weight[t]) : 1.0;
    const T a = T(p.margin) - x[t];
    // torch's order: (P scale / C) * dz, then times the weight, so that a tiny
    // weight does not underflow the factor to 0 (0 * inf would be NaN)
    const T k = GRAD ? T(P * row_scale(p, r) / double(C)) : T(0), wt = T(w);
    double loss[LANES] = {}, slope[LANES] = {};
    auto term = [&](index i, T& l, T& s) {
        T dz;
        l += hinge<P>(a + x[i], dz);
        if constexpr (GRAD) s += dz;
    };
    lane_sums<T>(0, t, term, loss, slope);
    lane_sums<T>(t + 1, C, term, loss, slope);
    if constexpr (GRAD) {
        // A loop of its own over the row (in L1 by now): stores in the loop
        // above would keep its lane sums in memory, a store-to-load round trip
        // per vector.  (g[t] gets a value here, replaced below.)
        // torch weights only the active terms: an inactive one (dz = 0) is 0
        // even for a NaN or infinite weight (0 * w would be NaN), times the
        // upstream gradient as torch's last step (-0 for a negative one)
        const T zero = T(0) * k;
        for (index i = 0; i < C; ++i) {
            T dz;
            hinge<P>(a + x[i], dz);
            g[i] = vselect(dz == T(0), zero, (k * dz) * wt);
        }
        // 0.0 - s, not -s: +0 where no term is active, as torch's sum starting at 0
        const T s = T(0.0 - pairwise_sum(slope, LANES));
        g[t] = vselect(s == T(0), zero, (k * s) * wt);
    }
    const double h = pairwise_sum(loss, LANES);
    // no active term: 0, whatever w is; 0 + w h: torch's sum starts at +0
    return (h == 0.0 ? 0.0 : 0.0 + w * h) / double(C);
}

// The pairs of a MultiLabelMargin row with n targets (targets[0..n)); `shut`
// is 0 for the other classes and -inf for the targets: z + shut is z exactly,
// or -inf / NaN (never > 0), which leaves the targets out without a branch.
// `count` is a scratch row; a non-target's count grows by one per target, so
// Count = float is exact while n <= 2^24.
template <bool GRAD, class T, class Count>
inline double multilabel_pairs(const MarginArgs<T>& p, index r, const std::int64_t* targets,
                               index n, const T* __restrict shut, Count* __restrict count) {
    const index C = p.classes;
    const T* __restrict x = p.x + r * C;
    if constexpr (GRAD)
        for (index i = 0; i < C; ++i) count[i] = Count(0);
    double loss = 0.0;
    for (index q = 0; q < n; ++q) {
        const index j = index(targets[q]);
        const T a = T(1) - x[j];
        double lanes[LANES] = {}, slopes[LANES] = {};
        lane_sums<T>(0, C, [&](index i, T& l, T& s) {
            T dz;
            l += hinge<1>((a + x[i]) + shut[i], dz);
            if constexpr (GRAD) {
                count[i] += Count(dz);
                s += dz;
            }
        }, lanes, slopes);
        loss += pairwise_sum(lanes, LANES);
        if constexpr (GRAD) count[j] = Count(double(count[j]) - pairwise_sum(slopes, LANES));
    }
    if constexpr (GRAD) {
        T* __restrict g = p.grad + r * C;
        const T k = T(row_scale(p, r) / double(C));
        for (index i = 0; i < C; ++i) g[i] = k * T(count[i]);
    }
    return loss / double(C);
}

// A row of at most LANES classes (the usual multilabel shape: a few tags of
// a few classes) as LANES lanes, so that each loop is whole vectors with no
// remainder: a row is read LANES wide (the lanes past C are the next rows',
// and shut), the last rows, where that would run past the array, through a
// padded copy.  The targets and the spare lanes are shut through a bit set.
// Each lane adds its terms in T, in target order (at most LANES of them);
// the lanes join in double in lanes_total's fixed tree.  1e6 x 10, one
// thread: value 27 -> 16 ms, value+grad 51 -> 24 ms (float32) and 27 ms
// (float64), against the per-target sweeps of multilabel_pairs.
template <bool GRAD, class T>
inline double multilabel_short_row(const MarginArgs<T>& p, index r) {
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    const index C = p.classes;
    const T* __restrict xs = p.x + r * C;
    const std::int64_t* __restrict tg = p.target + r * C;
    T x_pad[LANES];
    std::int64_t t_pad[LANES];
    if (r * C + LANES > p.rows * C) {  // LANES wide would run past the array
        for (index i = 0; i < LANES; ++i) {
            x_pad[i] = i < C ? xs[i] : T(0);
            t_pad[i] = i < C ? tg[i] : -1;
        }
        xs = x_pad;
        tg = t_pad;
    }
    // The targets (the entries before the first -1) and the spare lanes as a
    // bit set; a scalar loop (n is small, and a vectorised one costs more)
    std::uint32_t shut_bits = ~((std::uint32_t(1) << C) - 1);
    index n = 0;
    while (n < C && tg[n] >= 0) shut_bits |= std::uint32_t(1) << tg[n++];
    using U = typename vmath_detail::uint_of<T>::type;  // T's width: the loop vectorises
    const U bits = shut_bits;
    T shut[LANES];
#pragma GCC unroll 1
    for (index i = 0; i < LANES; ++i) shut[i] = vselect(((bits >> U(i)) & 1) != 0, ninf, T(0));
    T loss[LANES] = {};
    // count: the active pairs (j, i) of each class i; minus: of each target j
    // (apart: a scalar update of count in this loop would cost a store-to-load
    // round trip of the whole vector per target)
    std::int32_t count[LANES] = {}, minus[LANES] = {};
    for (index q = 0; q < n; ++q) {
        const index j = index(tg[q]);
        const T a = T(1) - xs[j];
        std::int32_t active = 0;
#pragma GCC unroll 1
        for (index i = 0; i < LANES; ++i) {
            // hinge<1> spelled out: its slope as a T, converted to the integer
            // counts, left this loop scalar (value+grad 6x slower)
            const T z = (a + xs[i]) + shut[i];
            const bool on = z > T(0);
            loss[i] += vselect(on, z, T(0));
            count[i] += on;
            active += on;
        }
        minus[j] += active;
    }
    if constexpr (GRAD) {
        T* __restrict g = p.grad + r * C;
        const T k = T(row_scale(p, r) / double(C));
        for (index i = 0; i < C; ++i) g[i] = k * T(count[i] - minus[i]);
    }
    double total[LANES];
    for (index i = 0; i < LANES; ++i) total[i] = double(loss[i]);
    return lanes_total(total) / double(C);
}

template <class T>
struct MultilabelScratch {
    std::vector<T> shut, count;
    std::vector<double> wide;  // counts of a float32 row with more than 2^24 targets
};

// One MultiLabelMargin row (see the top of this file).
template <bool GRAD, class T>
inline double multilabel_row(const MarginArgs<T>& p, index r, MultilabelScratch<T>& s) {
    const index C = p.classes;
    if (C <= LANES) return multilabel_short_row<GRAD>(p, r);
    const std::int64_t* targets = p.target + r * C;
    index n = 0;  // the row's targets: the entries before the first -1
    while (n < C && targets[n] >= 0) ++n;
    T* shut = s.shut.data();
    for (index i = 0; i < C; ++i) shut[i] = T(0);
    for (index q = 0; q < n; ++q) shut[targets[q]] = -std::numeric_limits<T>::infinity();
    constexpr index exact = std::is_same<T, float>::value ? index(1) << 24 : index(1) << 53;
    if (!GRAD || n <= exact) return multilabel_pairs<GRAD>(p, r, targets, n, shut, s.count.data());
    s.wide.resize(C);
    return multilabel_pairs<GRAD>(p, r, targets, n, shut, s.wide.data());
}


inline index margin_rows_per_chunk(index classes) {
    return std::max<index>(1, ROW_CHUNK_ELEMENTS / std::max<index>(1, classes));
}

// Rows [lo, hi) (at most ROW_CHUNK_ELEMENTS of them): writes each row's loss when
// p.loss is set and returns their pairwise sum (over blocks of BLOCK rows).
template <class T, class Row>
inline double margin_rows(const MarginArgs<T>& p, index lo, index hi, const Row& row) {
    double rows[BLOCK];
    double blocks[(ROW_CHUNK_ELEMENTS + BLOCK - 1) / BLOCK];
    index filled = 0, nblocks = 0;
    for (index r = lo; r < hi; ++r) {
        const double v = row(r);
        if (p.loss) p.loss[r] = T(v);
        rows[filled++] = v;
        if (filled == BLOCK) {
            blocks[nblocks++] = pairwise_sum(rows, filled);
            filled = 0;
        }
    }
    if (filled) blocks[nblocks++] = pairwise_sum(rows, filled);
    return pairwise_sum(blocks, nblocks);
}

template <class T, bool GRAD>
double margin_chunk_for(const MarginArgs<T>& p, index lo, index hi) {
    switch (p.kind) {
        case MARGIN_P1:
            return margin_rows(p, lo, hi, [&](index r) {
                return multi_margin_row<1, GRAD>(p, r);
            });
        case MARGIN_P2:
            return margin_rows(p, lo, hi, [&](index r) {
                return multi_margin_row<2, GRAD>(p, r);
            });
        default: {
            const index long_rows = p.classes > LANES ? p.classes : 0;  // short: no scratch
            MultilabelScratch<T> scratch{std::vector<T>(long_rows),
                                         std::vector<T>(GRAD ? long_rows : 0), {}};
            return margin_rows(p, lo, hi, [&](index r) {
                return multilabel_row<GRAD>(p, r, scratch);
            });
        }
    }
}

template <class T>
double margin_chunk(const MarginArgs<T>& p, index lo, index hi) {
    return p.grad ? margin_chunk_for<T, true>(p, lo, hi) : margin_chunk_for<T, false>(p, lo, hi);
}

using margin_f32_fn = double(const MarginArgs<float>&, index, index);
using margin_f64_fn = double(const MarginArgs<double>&, index, index);
CLOSS_MULTIVERSION(margin_f32_fn, margin_f32, margin_chunk<float>)
CLOSS_MULTIVERSION(margin_f64_fn, margin_f64, margin_chunk<double>)

// The whole sweep: chunks of rows spread over `threads` threads.  A chunk's
// scratch allocation may fail inside the parallel region, where an exception
// cannot leave; it is rethrown here (the caller turns it into MemoryError).
template <class T>
double margin_sweep(double (*chunk)(const MarginArgs<T>&, index, index), const MarginArgs<T>& p,
                    int threads) {
    const index per_chunk = margin_rows_per_chunk(p.classes);
    std::atomic<bool> out_of_memory{false};
    const double total = sum_unit_chunks(p.rows, per_chunk, threads, [&](index lo, index hi) {
        try {
            return chunk(p, lo, hi);
        } catch (const std::bad_alloc&) {
            out_of_memory = true;
            return 0.0;
        }
    });
    if (out_of_memory) throw std::bad_alloc();
    return total;
}

}  // namespace closs
