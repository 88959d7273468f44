// Cross-entropy over a class axis, in one sweep per row.
//
// The input is viewed as (outer, C, inner): C classes at stride `inner`
// (inner = 1 for (N, C) and (C,) inputs, d1*...*dK for K-dimensional ones), so
// no transposed copy is ever made.  A "row" is one position (n, j): the C
// values x[n, :, j].  Per row, with m = max_c x_c, z_c = x_c - m,
// s = sum_c exp(z_c), lse - m = log s:
//
//   index target t (weight w, smoothing e, W = sum_c w_c):
//     loss = (1-e) w_t (log s - z_t) + (e/C) (W log s - sum_c w_c z_c)
//     grad = scale * [ p_c ((1-e) w_t + e W / C) - (1-e) w_t [c = t] - (e/C) w_c ]
//   probability target y (y' = (1-e) y + e/C):
//     loss = sum_c w_c y'_c (log s - z_c)
//     grad = scale * [ p_c sum_c' w_c' y'_c' - w_c y'_c ]
//
// with p_c = exp(z_c) / s.  The exponentials are stored in the gradient
// buffer on the way (the input is read once) and turned into the gradient in
// place, so a row is read once and its gradient written once.  Ignored rows
// (t == ignore_index) have loss 0 and gradient 0.
//
// Rows are processed in chunks; each chunk returns the (double) sum of its
// rows' losses, combined in index order by the caller (closs_sum.hpp), so
// the reduction does not depend on the number of threads.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "closs_isa.hpp"
#include "closs_sum.hpp"
#include "closs_transpose.hpp"
#include "closs_vmath.hpp"

namespace closs {

template <class T>
struct SoftmaxArgs {
    index outer, classes, inner;  // input viewed as (outer, classes, inner)
    const T* x;
    const std::int64_t* target;   // (outer, inner) class indices, or null
    const T* prob;                // (outer, classes, inner) probabilities, or null
    const T* weight;              // (classes), or null
    std::int64_t ignore_index;
    double smoothing;             // label smoothing e in [0, 1]
    double weight_sum;            // W = sum_c w_c (classes when unweighted)
    T* loss;                      // (outer, inner) per-row loss ('none'), or null
    T* grad;                      // like x, or null
    const T* grad_output;         // (outer, inner) upstream gradient, or null: gscale
    double gscale;                // scalar upstream gradient times the reduction's scale
    bool grad_zeroed = false;     // NLL: grad holds zeros already (fresh calloc'd pages)
};

template <class T>
inline T weight_of(const SoftmaxArgs<T>& p, index c) {
    return p.weight ? p.weight[c] : T(1);
}

// The largest of v[0..n) (NaNs are skipped here and propagate through the sum
// of exponentials).  Kept in LANES independent maxima, with the loop over the
// lanes kept rolled: unrolled, GCC left them in scalar registers (0.15 ns per
// float32 element; now 0.04 on AVX-512 and AVX2), and a vector-extension type
// wider than the register is scalar code on AVX2 and SSE2 (1.5-3 ns).
template <class T>
inline T row_max(const T* __restrict v, index n) {
    T lanes[LANES];
    for (int j = 0; j < LANES; ++j) lanes[j] = -std::numeric_limits<T>::infinity();
    index i = 0;
    for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 1
        for (int j = 0; j < LANES; ++j) {  // this form becomes vmaxps
            const T x = v[i + j], l = lanes[j];
            lanes[j] = l < x ? x : l;
        }
    T m = -std::numeric_limits<T>::infinity();
    for (int j = 0; j < LANES; ++j) m = lanes[j] > m ? lanes[j] : m;
    for (; i < n; ++i) m = v[i] > m ? v[i] : m;
    return m;
}

// sum_c exp(v_c - m), storing the exponentials in e when e is not null.
template <class T, bool STORE>
inline double row_expsum(const T* __restrict v, index n, T m, T* __restrict e) {
    T lanes[LANES] = {};
    index i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; ++j) {
            const T x = vexp_nonpos(v[i + j] - m);
            if constexpr (STORE) e[i + j] = x;
            lanes[j] += x;
        }
    for (int j = 0; i + j < n; ++j) {
        const T x = vexp_nonpos(v[i + j] - m);
        if constexpr (STORE) e[i + j] = x;
        lanes[j] += x;
    }
    double s = 0.0;
    for (int j = 0; j < LANES; ++j) s += static_cast<double>(lanes[j]);
    return s;
}

// The loss of one index-target row (see the top of this file).
inline double index_row_loss(double log_s, double z_t, double w_t, double wz, double e, index C,
                             double W) {
    // torch's -w log_softmax: a zero loss is -0 (w > 0), and stays so without smoothing
    const double nll = -((1.0 - e) * w_t * (z_t - log_s));
    return e == 0.0 ? nll : nll + (e / C) * (W * log_s - wz);
}

// One contiguous row (inner == 1) of C values.
template <class T, bool GRAD>
inline double softmax_row(const SoftmaxArgs<T>& p, index r) {
    const index C = p.classes;
    const T* __restrict x = p.x + r * C;
    T* __restrict g = GRAD ? p.grad + r * C : nullptr;
    const double e = p.smoothing;
    const double row_scale = p.grad_output ? p.gscale * double(p.grad_output[r]) : p.gscale;
    // An ignored row has loss 0; its gradient is computed with scale 0, so it
    // is 0, or nan where the row has a nan or +inf logit, as torch.
    const bool ignored = p.target && p.target[r] == p.ignore_index;
    if (ignored && !GRAD) return 0.0;
    const std::int64_t t = p.target && !ignored ? p.target[r] : 0;
    const double scale = ignored ? 0.0 : row_scale;
    const T m = row_max(x, C);
    const double s = row_expsum<T, GRAD>(x, C, m, g);
    const double log_s = vlog_sum(s);
    double loss = 0.0;
    if (p.target) {
        const double w_t = weight_of(p, t);
        double wz = 0.0;
        if (e != 0.0)
            for (index c = 0; c < C; ++c) wz += double(weight_of(p, c)) * double(x[c] - m);
        loss = index_row_loss(log_s, double(x[t] - m), w_t, wz, e, C, p.weight_sum);
        if constexpr (GRAD) {
            const T a = T(scale * ((1.0 - e) * w_t + e * p.weight_sum / C) / s);
            const T b = e != 0.0 ? T(scale * e / C) : T(0);  // no inf * 0 for a zero 'mean' denominator
            if (p.weight)
                for (index c = 0; c < C; ++c) g[c] = g[c] * a - b * p.weight[c];
            else
                for (index c = 0; c < C; ++c) g[c] = g[c] * a - b;
            g[t] -= T(scale * (1.0 - e) * w_t);
        }
    } else {
        const T* __restrict y = p.prob + r * C;
        const T keep = T(1.0 - e), spread = T(e / C);
        double wy = 0.0;
        for (index c = 0; c < C; ++c) {
            const double yc = double(weight_of(p, c) * (keep * y[c] + spread));
            wy += yc;
            loss += yc * (log_s - double(x[c] - m));
        }
        if constexpr (GRAD) {
            const T a = T(scale * wy / s), b = T(scale);
            for (index c = 0; c < C; ++c) g[c] = g[c] * a - b * (weight_of(p, c) * (keep * y[c] + spread));
        }
    }
    return ignored ? 0.0 : loss;
}

constexpr index TILE = 64;      // positions handled together by softmax_tile
constexpr index SMALL_C = 32;   // below this many classes, rows are regrouped into tiles

// L <= TILE positions whose class c is at x[c * S + j], j < L (positions
// contiguous, classes at stride S): every loop runs over the L positions so it
// vectorises whatever C is.  y (probabilities) and g use the same layout;
// target and gout point at the first position's entries.  Writes each
// position's loss to losses[j].
// FIXED_L: a compile-time L (full tiles), for loops without remainders.
template <class T, bool GRAD, index FIXED_L = 0>
inline void softmax_tile(const SoftmaxArgs<T>& p, const T* __restrict x, const T* __restrict y,
                         T* __restrict g, index S, const std::int64_t* target, const T* gout,
                         index any_L, double* losses) {
    const index L = FIXED_L ? FIXED_L : any_L;
    const index C = p.classes;
    const double e = p.smoothing;
    // Per-position scalars live in arrays over the tile, and every loop below
    // is branch-free, so each one vectorises across the positions.
    T m[TILE], s[TILE], log_s[TILE];
    double scale[TILE];
    // An ignored position takes class 0 (with weight 0 and scale 0 below).
    index t[TILE];
    if (target)
        for (index j = 0; j < L; ++j) t[j] = target[j] == p.ignore_index ? 0 : index(target[j]);
    // The maximum, and the target's logit picked up on the way: a compare and
    // a blend per element vectorise where a gather per position does not.
    T x_t[TILE];
    for (index j = 0; j < L; ++j) {
        m[j] = -std::numeric_limits<T>::infinity();
        x_t[j] = T(0);
    }
    for (index c = 0; c < C; ++c)
        for (index j = 0; j < L; ++j) {
            const T v = x[c * S + j];
            m[j] = v > m[j] ? v : m[j];
            if (target) x_t[j] = t[j] == c ? v : x_t[j];
        }
    for (index j = 0; j < L; ++j) s[j] = T(0);
    for (index c = 0; c < C; ++c)
        for (index j = 0; j < L; ++j) {
            const T v = vexp_nonpos(x[c * S + j] - m[j]);
            if constexpr (GRAD) g[c * S + j] = v;
            s[j] += v;
        }
    for (index j = 0; j < L; ++j) log_s[j] = vlog_sum(s[j]);  // in T: accurate enough for T's loss
    if (gout)
        for (index j = 0; j < L; ++j) scale[j] = p.gscale * double(gout[j]);
    else
        for (index j = 0; j < L; ++j) scale[j] = p.gscale;
    if (target) {
        // The target's weight; an ignored position has weight 0 and scale 0,
        // so its loss term and gradient vanish (its gradient is nan for nan
        // logits, as torch).
        T z_t[TILE], w_t[TILE];
        double wz[TILE];
        if (p.weight)  // a gather; the loops below are branch-free
            for (index j = 0; j < L; ++j) w_t[j] = p.weight[t[j]];
        else
            for (index j = 0; j < L; ++j) w_t[j] = T(1);
        for (index j = 0; j < L; ++j) {
            const bool ignored = target[j] == p.ignore_index;
            w_t[j] = ignored ? T(0) : w_t[j];
            scale[j] = ignored ? 0.0 : scale[j];
            z_t[j] = x_t[j] - m[j];
        }
        if (e != 0.0) {
            for (index j = 0; j < L; ++j) wz[j] = 0.0;
            for (index c = 0; c < C; ++c) {
                const double wc = double(weight_of(p, c));
                for (index j = 0; j < L; ++j) wz[j] += wc * double(x[c * S + j] - m[j]);
            }
        }
        for (index j = 0; j < L; ++j) {
            const double v = index_row_loss(double(log_s[j]), double(z_t[j]), double(w_t[j]),
                                            e != 0.0 ? wz[j] : 0.0, e, C, p.weight_sum);
            losses[j] = target[j] == p.ignore_index ? 0.0 : v;  // 0 even where v is nan
        }
        if constexpr (GRAD) {
            T a[TILE], b[TILE], hit[TILE];
            for (index j = 0; j < L; ++j) {
                a[j] = T(scale[j] * ((1.0 - e) * double(w_t[j]) + e * p.weight_sum / C)) / s[j];
                b[j] = e != 0.0 ? T(scale[j] * e / C) : T(0);  // no inf * 0 for a zero 'mean' denominator
                hit[j] = T(scale[j] * (1.0 - e) * double(w_t[j]));
            }
            for (index c = 0; c < C; ++c) {
                const T wc = weight_of(p, c);
                for (index j = 0; j < L; ++j)
                    g[c * S + j] = g[c * S + j] * a[j] - b[j] * wc - (t[j] == c ? hit[j] : T(0));
            }
        }
    } else {
        const T keep = T(1.0 - e), spread = T(e / C);
        double wy[TILE];
        for (index j = 0; j < L; ++j) {
            wy[j] = 0.0;
            losses[j] = 0.0;
        }
        for (index c = 0; c < C; ++c) {
            const T wc = weight_of(p, c);
            for (index j = 0; j < L; ++j) {
                const double yc = double(wc * (keep * y[c * S + j] + spread));
                wy[j] += yc;
                losses[j] += yc * (log_s[j] - double(x[c * S + j] - m[j]));
            }
        }
        if constexpr (GRAD) {
            T a[TILE], b[TILE];
            for (index j = 0; j < L; ++j) {
                a[j] = T(scale[j] * wy[j] / double(s[j]));
                b[j] = T(scale[j]);
            }
            for (index c = 0; c < C; ++c) {
                const T wc = weight_of(p, c);
                for (index j = 0; j < L; ++j)
                    g[c * S + j] = g[c * S + j] * a[j] - b[j] * (wc * (keep * y[c * S + j] + spread));
            }
        }
    }
}

// Layouts: rows of C >= SMALL_C contiguous values, one row per unit
// (ROWS); rows of fewer classes, TILE rows per unit, regrouped into a
// class-major tile on the stack (GATHER); the strided layout of K-dimensional
// inputs, TILE positions of one batch entry per unit (STRIDED).
enum SoftmaxLayout { ROWS, GATHER, STRIDED };

template <class T>
inline SoftmaxLayout layout_of(const SoftmaxArgs<T>& p) {
    return p.inner != 1 ? STRIDED : p.classes < SMALL_C ? GATHER : ROWS;  // inner 0: no units
}

template <class T>
index softmax_units(const SoftmaxArgs<T>& p) {
    switch (layout_of(p)) {
        case ROWS: return p.outer;
        case GATHER: return (p.outer + TILE - 1) / TILE;
        default: return p.outer * ((p.inner + TILE - 1) / TILE);
    }
}

// Unit u: computes the losses of its rows first, first + 1, ... into `losses`
// (returns how many).
template <class T, int ISA, bool GRAD>
inline index softmax_unit(const SoftmaxArgs<T>& p, SoftmaxLayout layout, index u,
                          double* losses, index& first) {
    const index C = p.classes;
    if (layout == ROWS) {
        first = u;
        losses[0] = softmax_row<T, GRAD>(p, u);
        return 1;
    }
    if (layout == STRIDED) {
        const index tiles = (p.inner + TILE - 1) / TILE;
        const index n = u / tiles, j0 = (u % tiles) * TILE, S = p.inner;
        const index L = std::min(TILE, S - j0), base = n * C * S + j0, r0 = n * S + j0;
        first = r0;
        softmax_tile<T, GRAD>(p, p.x + base, p.prob ? p.prob + base : nullptr,
                              GRAD ? p.grad + base : nullptr, S,
                              p.target ? p.target + r0 : nullptr,
                              p.grad_output ? p.grad_output + r0 : nullptr, L, losses);
        return L;
    }
    // GATHER: rows r0..r0+L of C < SMALL_C classes, transposed into x_t[c][j].
    const index r0 = u * TILE, L = std::min(TILE, p.outer - r0);
    first = r0;
    T x_t[SMALL_C * TILE], y_t[SMALL_C * TILE], g_t[SMALL_C * TILE];
    const T* x = p.x + r0 * C;
    rows_to_tile<ISA>(x, C, L, TILE, x_t);
    if (p.prob) rows_to_tile<ISA>(p.prob + r0 * C, C, L, TILE, y_t);
    const std::int64_t* target = p.target ? p.target + r0 : nullptr;
    const T* gout = p.grad_output ? p.grad_output + r0 : nullptr;
    if (L == TILE)
        softmax_tile<T, GRAD, TILE>(p, x_t, y_t, g_t, TILE, target, gout, L, losses);
    else
        softmax_tile<T, GRAD>(p, x_t, y_t, g_t, TILE, target, gout, L, losses);
    if constexpr (GRAD) {
        tile_to_rows<ISA>(g_t, C, L, TILE, p.grad + r0 * C);
    }
    return L;
}

// Units [lo, hi); writes per-row losses when p.loss is set and returns their
// sum (pairwise over blocks, so it depends only on the unit range).
// Per-row losses summed in blocks of BLOCK rows, pairwise (closs_sum.hpp), so
// the result depends only on the rows, not on how the caller is split.
struct RowSum {
    double rows[BLOCK];
    double blocks[64];
    double total = 0.0;
    index filled = 0, nblocks = 0;

    // Room for up to n <= BLOCK rows; then advance(m) keeps the first m written.
    double* reserve(index n) {
        if (filled + n > BLOCK) flush();
        return rows + filled;
    }
    void advance(index m) { filled += m; }
    void flush() {
        blocks[nblocks++] = pairwise_sum(rows, filled);
        filled = 0;
        if (nblocks == 64) {
            total += pairwise_sum(blocks, nblocks);
            nblocks = 0;
        }
    }
    double result() {
        if (filled) flush();
        return total + pairwise_sum(blocks, nblocks);
    }
};

// Units [lo, hi); writes per-row losses when p.loss is set and returns their sum.
template <class T, int ISA, bool GRAD>
double softmax_range(const SoftmaxArgs<T>& p, index lo, index hi) {
    const SoftmaxLayout layout = layout_of(p);
    RowSum sum;
    for (index u = lo; u < hi; ++u) {
        double* losses = sum.reserve(TILE);
        index first;
        const index L = softmax_unit<T, ISA, GRAD>(p, layout, u, losses, first);
        if (p.loss)
            for (index j = 0; j < L; ++j) p.loss[first + j] = T(losses[j]);
        sum.advance(L);
    }
    return sum.result();
}

template <class T, int ISA>
double softmax_chunk(const SoftmaxArgs<T>& p, index lo, index hi) {
    return p.grad ? softmax_range<T, ISA, true>(p, lo, hi) : softmax_range<T, ISA, false>(p, lo, hi);
}

using softmax_f32_fn = double(const SoftmaxArgs<float>&, index, index);
using softmax_f64_fn = double(const SoftmaxArgs<double>&, index, index);
CLOSS_MULTIVERSION_ISA(softmax_f32_fn, softmax_f32, softmax_chunk, float)
CLOSS_MULTIVERSION_ISA(softmax_f64_fn, softmax_f64, softmax_chunk, double)

// The whole sweep: units grouped into chunks of about ROW_CHUNK_ELEMENTS
// input elements, spread over `threads` threads.
template <class T>
double softmax_sweep(double (*chunk)(const SoftmaxArgs<T>&, index, index),
                     const SoftmaxArgs<T>& p, int threads) {
    const index units = softmax_units(p);
    const index unit_size = std::max<index>(1, p.classes * (layout_of(p) == ROWS ? 1 : TILE));
    const index per_chunk = std::max<index>(1, ROW_CHUNK_ELEMENTS / unit_size);
    return sum_unit_chunks(units, per_chunk, threads,
                           [&](index lo, index hi) { return chunk(p, lo, hi); });
}

// NLL over the same (outer, classes, inner) view: loss = -w_t x[t] per
// position (0 where ignored); the gradient is -scale w_t at the target and 0
// elsewhere.  Batch entries [lo, hi): their gradient block is zeroed (unless
// it is known to be zero), then the targets written.  The (N, C) gather is
// a scalar loop (it is bound by memory: one scattered load per row).
constexpr index NLL_PREFETCH = 32;

template <class T>
double nll_range(const SoftmaxArgs<T>& p, index lo, index hi) {
    const index C = p.classes, S = p.inner;
    if (p.grad && !p.grad_zeroed) std::fill(p.grad + lo * C * S, p.grad + hi * C * S, T(0));
    RowSum sum;
    if (S == 1) {  // (N, C): a branch-free gather (and scatter), BLOCK rows at a time
        for (index r0 = lo; r0 < hi; r0 += BLOCK) {
            const index L = std::min(BLOCK, hi - r0);
            double* losses = sum.reserve(L);
            for (index k = 0; k < L; ++k) {
                // the target entry NLL_PREFETCH rows ahead, prefetched: one scattered
                // load per row leaves the memory system mostly idle otherwise
                const index ahead = std::min(r0 + k + NLL_PREFETCH, hi - 1);
                const std::int64_t ta = p.target[ahead];
                __builtin_prefetch(p.x + ahead * C + (ta != p.ignore_index ? index(ta) : 0));
                const std::int64_t t = p.target[r0 + k];
                const bool keep = t != p.ignore_index;
                const index c = keep ? index(t) : 0;  // a safe address for an ignored row
                const double v = -double(weight_of(p, c)) * double(p.x[(r0 + k) * C + c]);
                losses[k] = vselect(keep, v, 0.0);
            }
            if (p.grad)  // an ignored row writes its 0 over the 0 at class 0
                for (index k = 0; k < L; ++k) {
                    const std::int64_t t = p.target[r0 + k];
                    const bool keep = t != p.ignore_index;
                    const index c = keep ? index(t) : 0;
                    const double g = p.grad_output ? p.gscale * double(p.grad_output[r0 + k])
                                                   : p.gscale;
                    p.grad[(r0 + k) * C + c] = T(vselect(keep, -double(weight_of(p, c)) * g, 0.0));
                }
            if (p.loss)
                for (index k = 0; k < L; ++k) p.loss[r0 + k] = T(losses[k]);
            sum.advance(L);
        }
        return sum.result();
    }
    for (index n = lo; n < hi; ++n)
        for (index j0 = 0; j0 < S; j0 += BLOCK) {
            const index L = std::min(BLOCK, S - j0);
            double* losses = sum.reserve(L);
            for (index j = j0; j < j0 + L; ++j) {
                const index r = n * S + j;
                const std::int64_t t = p.target[r];
                double v = 0.0;
                if (t != p.ignore_index) {
                    const double w_t = double(weight_of(p, t));
                    const index at = (n * C + t) * S + j;
                    v = -w_t * double(p.x[at]);
                    if (p.grad)
                        p.grad[at] = T(-w_t * (p.grad_output ? p.gscale * double(p.grad_output[r])
                                                             : p.gscale));
                }
                if (p.loss) p.loss[r] = T(v);
                losses[j - j0] = v;
            }
            sum.advance(L);
        }
    return sum.result();
}

using nll_f32_fn = double(const SoftmaxArgs<float>&, index, index);
using nll_f64_fn = double(const SoftmaxArgs<double>&, index, index);
CLOSS_MULTIVERSION(nll_f32_fn, nll_f32, nll_range<float>)
CLOSS_MULTIVERSION(nll_f64_fn, nll_f64, nll_range<double>)

// The whole NLL sweep: batch entries grouped into chunks of about
// ROW_CHUNK_ELEMENTS input elements, spread over `threads` threads.
template <class T>
double nll_sweep(const SoftmaxArgs<T>& p, int threads) {
    using fn = double(const SoftmaxArgs<T>&, index, index);
    fn* range;
    if constexpr (std::is_same<T, float>::value)
        range = nll_f32_for(closs_isa_selected());
    else
        range = nll_f64_for(closs_isa_selected());
    const index row_elements = std::max<index>(1, p.classes * p.inner);
    const index per_chunk = std::max<index>(1, ROW_CHUNK_ELEMENTS / row_elements);
    return sum_unit_chunks(p.outer, per_chunk, threads,
                           [&](index lo, index hi) { return range(p, lo, hi); });
}

// The targets t[0..n) that are not `ignore`: their count, and in *out whether
// one is outside [0, classes).  Branch-free, compiled per instruction set
// (64-bit compares vectorise from AVX2 on).
inline index count_kept_targets(const std::int64_t* t, index n, std::int64_t ignore,
                                index classes, bool* out) {
    index outside = 0, count = 0;  // integer sums: they vectorise (a bool |= does not)
    for (index i = 0; i < n; ++i) {
        const index kept = t[i] != ignore;  // negative t: a huge unsigned value
        outside += kept & index(std::uint64_t(t[i]) >= std::uint64_t(classes));
        count += kept;
    }
    *out = outside != 0;
    return count;
}

using count_kept_fn = index(const std::int64_t*, index, std::int64_t, index, bool*);
CLOSS_MULTIVERSION(count_kept_fn, count_kept_isa, count_kept_targets)

// The targets' check and the 'mean' denominator of CE and NLL: the sum of
// weight[t] over the targets t != ignore (their count when weight is null).
// Returns -1 with *bad set to the position of the first target outside
// [0, classes) that is not `ignore`.  Chunks of CHUNK targets over threads.
template <class T>
double target_weight_sum(const std::int64_t* t, index n, index classes, std::int64_t ignore,
                         const T* weight, int threads, index* bad) {
    const index nchunks = chunk_count(n);
    std::vector<char> invalid(nchunks, 0);
    count_kept_fn* count_kept = count_kept_isa_for(closs_isa_selected());
    const double total = sum_chunks(nchunks, threads, [&](index k) {
        const index lo = k * CHUNK, hi = std::min(n, lo + CHUNK);
        bool out;  // the whole chunk is tested first
        const index count = count_kept(t + lo, hi - lo, ignore, classes, &out);
        if (out) {
            invalid[k] = 1;
            return 0.0;
        }
        if (!weight) return double(count);
        double sum = 0.0;
        for (index i = lo; i < hi; ++i)
            if (t[i] != ignore) sum += double(weight[t[i]]);
        return sum;
    });
    for (index k = 0; k < nchunks; ++k)
        if (invalid[k])
            for (index i = k * CHUNK;; ++i)
                if (t[i] != ignore && (t[i] < 0 || t[i] >= classes)) {
                    *bad = i;
                    return -1.0;
                }
    return total;
}

}  // namespace closs
