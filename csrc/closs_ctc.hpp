// Connectionist temporal classification (CTC) loss and torch's gradient.
//
// log_probs lp is time-major, (T, N, C), C-contiguous; sample n uses its first
// T_n = input_lengths[n] steps and the S_n = target_lengths[n] labels
// l_1..l_S at targets[offset[n]...].  Over the extended sequence
// l' = (b, l_1, b, l_2, ..., l_S, b) of W = 2 S_n + 1 states (b = blank):
//
//   alpha_0(0) = lp[0, b], alpha_0(1) = lp[0, l_1], alpha_0(s >= 2) = -inf
//   alpha_t(s) = lse(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2) if skip(s))
//                + lp[t, l'_s],        skip(s) = s odd, s > 1 and l'_s != l'_{s-2}
//   beta_{T-1}(W-1) = lp[T-1, b], beta_{T-1}(W-2) = lp[T-1, l_S], others -inf
//   beta_t(s)  = lse(beta_{t+1}(s), beta_{t+1}(s+1), beta_{t+1}(s+2) if skip(s+2))
//                + lp[t, l'_s]
//   loss = -lse(alpha_{T-1}(W-1), alpha_{T-1}(W-2))      (-alpha_{T-1}(0) if S = 0;
//                                                        T = 0: 0 if S = 0, else +inf)
//   grad[t, c] = g (exp(lp[t, c]) - exp(A[t, c] + loss - lp[t, c])),   t < T_n,
//                A[t, c] = log sum_{s: l'_s = c} exp(alpha_t(s) + beta_t(s))
//   grad[t, c] = 0 for t >= T_n.
//
// That gradient is torch's convention (spec section 21.3): exp(lp) - gamma,
// which is the gradient w.r.t. the logits when lp = log_softmax(logits); the
// derivative w.r.t. lp itself is -gamma.  zero_infinity: an infinite loss
// becomes 0 with gradient 0.
//
// Exactness.  A float32 alpha is a sum of ~T terms of size ~|lp| (loss ~ 100
// to 200 at T = 50), so one rounding at that magnitude is ~1e-5, and gamma's
// relative error is of that order too: torch's float32 gradient differs from
// the float64 one by ~1e-4 of its largest entry, and any other order of
// operations would differ from torch by as much.  closs does torch's
// arithmetic (aten/src/ATen/native/LossCTC.cpp) in the input's dtype,
// operation for operation: the same maximum and -inf handling in each
// log-sum-exp, the same summation order (log(e1 + e2 + e3) + max + lp), A
// accumulated over s in descending order by the same log-add starting from
// -inf, the same final expression.  What is left is libm: a float's exp and
// log are evaluated in double and rounded once (ctc_exp / ctc_log), correctly
// rounded as glibc's expf / logf nearly always are, so a float32 result is
// bit-identical to torch's for >99.9% of entries and within ~1e-7 of the
// largest otherwise (the float vexp / vlog misround ~10% of these arguments:
// ~2x faster, but up to ~3e-5 from torch).  float64 needs no such care: its
// rounding is far below the 1e-12 it is held to, so a float64 sample runs the
// recursion in probability space when that loses nothing (2-2.5x faster,
// and more accurate than log space; see "float64: the same lattice in
// probability space" below) and in log space otherwise.  NaN and inf go where torch sends them:
// an impossible alignment gives loss +inf and a NaN gradient over t < T_n; a
// class at lp = -inf that no path uses gets a NaN gradient (exp(-inf + loss +
// inf)), as in torch.
//
// Vectorisation.  The recursions run over s for one t at a time (row t needs
// only row t -+ 1): alpha rows are padded with two -inf on the left, beta rows
// with two on the right, so every s reads the same three neighbours and the
// loop has no branches (vselect for skip).  A is accumulated vectorised over
// t, one state s at a time (descending s, so each (t, c) sees torch's order),
// from alpha + beta stored state-major (ab[s][t]), and so is exp(A + loss -
// lp) for the classes some state uses (no exp for the others, where A =
// -inf).  The gradient is written row by row, vectorised over the classes.
// Every such loop runs over whole blocks of CTC_PAD lanes (below).
//
// Work units are batch entries; chunks of entries (a fixed count that depends
// only on the shapes) run over threads through sum_chunks, which also adds
// the chunks' loss sums in index order, so the result is the same for any
// thread count.  Each chunk owns its scratch (alpha T x (W + 2), two beta rows,
// ab W x T, A (S + 1) x T, a few rows; float64 also its emissions T x W):
// nothing of size N x T x W is allocated.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

#include "closs_isa.hpp"
#include "closs_sum.hpp"
#include "closs_vmath.hpp"

namespace closs {

template <class T>
struct CtcArgs {
    index steps, batch, classes;           // log_probs (steps, batch, classes)
    index max_target;                       // max_n target_lengths[n] (scratch size)
    const T* lp;
    const std::int64_t* targets;            // labels, in [0, classes) and != blank
    const std::int64_t* offsets;            // (batch) start of sample n's labels
    const std::int64_t* input_lengths;      // (batch) in [0, steps]
    const std::int64_t* target_lengths;     // (batch) >= 0
    std::int64_t blank;
    bool zero_infinity;
    bool mean;                              // sum loss_n / max(S_n, 1) instead of loss_n
    T* loss;                                // (batch) per-sample loss, or null
    T* grad;                                // like lp, or null
    const T* grad_output;                   // (batch) upstream gradient, or null: gscale
    double gscale;                          // scalar upstream gradient (/ N for 'mean')
};

template <class T>
constexpr T ctc_ninf() { return -std::numeric_limits<T>::infinity(); }

// exp and log.  A float's are evaluated in double and rounded once, i.e.
// correctly rounded but for a vanishing fraction, as glibc's expf / logf
// (which torch calls) are to within 0.06% / 0.7% of arguments; the float
// vexp / vlog misround ~10% of them, and each such last bit can move a float
// alpha by one ulp of its magnitude (see the top of this file).
// Arguments whose exp is 0 (-inf above all: every unreachable state) give 0
// by a select, fed a harmless argument instead: underflowing through the
// polynomial would take a slow microcode path on subnormal intermediates.
template <class T> struct CtcExpZero;
template <> struct CtcExpZero<float> { static constexpr float below = -104.0f; };
template <> struct CtcExpZero<double> { static constexpr double below = -746.0; };

// NONPOS: x <= 0 or NaN (a term below the maximum of its log-sum-exp), so
// the overflow clamp is left out.
template <bool NONPOS = false, class T>
inline T ctc_exp(T x) {
    const bool zero = x < CtcExpZero<T>::below;
    const double arg = double(vselect(zero, T(0), x));
    const T e = T(NONPOS ? vexp_nonpos(arg) : vexp(arg));
    return vselect(zero, T(0), e);
}
// Every log here is of a sum of exponentials with one term exp(0) = 1 (in
// [1, 3], 0 when all terms are exp(-inf), or NaN): vlog_sum, in double.
template <class T>
inline T ctc_log(T x) {
    return T(vlog_sum(double(x)));
}

// torch's log(exp(a - m) + exp(b - m) + exp(c - m)) + m with m = max(a, b, c)
// (0 when all are -inf), comparisons in torch's order so NaN ends up alike.
// The maximum's own term is exp(0) = 1, so two exponentials suffice: with
// torch's summation order kept, the sum is (X + 1) + Y, or (X + Y) + 1 when c
// is the maximum.  `one` is exp(m - m) exactly: 1, 0 when all are -inf, NaN
// for m = +inf or NaN.
template <class T>
inline T ctc_lse3(T a, T b, T c) {
    const bool b_max = b > a;
    const T m1 = vselect(b_max, b, a);
    const bool c_max = c > m1;
    const T top = vselect(c_max, c, m1);
    const bool none = top == ctc_ninf<T>();
    const T m = vselect(none, T(0), top);
    const T one = vselect(none, T(0), (top - top) + T(1));
    const T X = ctc_exp<true>(vselect(b_max | c_max, a, b) - m);
    const T Y = ctc_exp<true>(vselect(c_max, b, c) - m);
    const T sum = vselect(c_max, (X + Y) + one, (X + one) + Y);
    return ctc_log(sum) + m;
}

// torch's gradient accumulator: acc "log+=" x, starting from -inf
// (log(exp(acc - m) + exp(x - m)) + m, m = max(acc, x); one term is exp(0)).
template <class T>
inline T ctc_log_add(T acc, T x) {
    const bool x_max = acc < x;  // std::max(acc, x)
    const T m = vselect(x_max, x, acc);
    const T r = ctc_log(ctc_exp<true>(vselect(x_max, acc, x) - m) + ((m - m) + T(1))) + m;
    return vselect(acc == ctc_ninf<T>(), x, r);
}

// Every hot loop runs over a multiple of PAD elements (states, steps or
// classes, padded in the scratch with values that keep the spare lanes
// harmless), so the vectorised body does all the work: a scalar remainder of
// up to 7 exp/log evaluations would cost as much as the vector part at the
// usual 2S + 1 ~ 21 states.
constexpr index CTC_PAD = 8;

inline index ctc_padded(index n) { return (n + CTC_PAD - 1) / CTC_PAD * CTC_PAD; }

// em[s] = e[state_class[s]]: the emissions of one step, gathered first so the
// recursion over s reads them contiguously (GCC does not vectorise a gather
// with 64-bit indices).
template <class T>
inline void ctc_emissions(const T* __restrict e, const index* __restrict state_class, index W,
                          T* __restrict em) {
    for (index s = 0; s < W; ++s) em[s] = e[state_class[s]];
}

// An array left uninitialised: every entry the code reads it writes first
// (zeroing the whole scratch took ~1 us a call for one short sample).
template <class V>
class CtcArray {
    std::unique_ptr<V[]> v_;
public:
    void resize(index n) { v_.reset(new V[std::max<index>(n, 1)]); }
    V* data() const { return v_.get(); }
};

// Scratch of one chunk, sized for the largest sample of the batch.
template <class T>
struct CtcScratch {
    CtcArray<T> alpha, beta, ab, acc, skip, emit, lp_col, lp_row, acc_row, out_row;
    CtcArray<T> prob;  // the probability-space emissions (float64 only)
    CtcArray<index> state_class, class_slot, slot_class;
    CtcArray<char> slot_started;
    explicit CtcScratch(const CtcArgs<T>& p) {
        const index Wp = ctc_padded(2 * p.max_target + 1), Tp = ctc_padded(std::max<index>(p.steps, 1));
        const index Cp = ctc_padded(p.classes);
        alpha.resize(Tp * (Wp + 2));
        beta.resize(2 * (Wp + 2));
        ab.resize(Wp * Tp);
        acc.resize((p.max_target + 1) * Tp);
        skip.resize(Wp + 2);
        emit.resize(Wp);
        lp_col.resize(Tp);
        lp_row.resize(Cp);
        acc_row.resize(Cp);
        out_row.resize(Cp);
        state_class.resize(Wp);
        class_slot.resize(p.classes);
        std::fill(class_slot.data(), class_slot.data() + p.classes, index(-1));
        slot_class.resize(p.max_target + 1);
        slot_started.resize(p.max_target + 1);
        prob.resize(std::is_same_v<T, double> ? Tp * Wp : 0);
    }
};

// One sample's shape: T_n steps, S labels, W = 2 S + 1 states (and their
// padded counts), its labels and its log-probabilities lp[t * NC + c].
template <class T>
struct CtcSample {
    index Tn, S, W, Wp, Tp, NC;
    const std::int64_t* labels;
    const T* lp;
    CtcSample(const CtcArgs<T>& p, index n)
        : Tn(p.input_lengths[n]), S(p.target_lengths[n]), W(2 * S + 1), Wp(ctc_padded(W)),
          Tp(ctc_padded(Tn)), NC(p.batch * p.classes), labels(p.targets + p.offsets[n]),
          lp(p.lp + n * p.classes) {}
};

// The extended sequence of a sample into the scratch: each state's class and
// skip mask (0 or 1); spare states (W <= s < Wp) read class 0 and never skip,
// so their beta stays -inf (0 in probability space).
template <class T>
void ctc_states(const CtcArgs<T>& p, CtcScratch<T>& w, const CtcSample<T>& q) {
    const index W = q.W, Wp = q.Wp;
    index* state_class = w.state_class.data();
    T* skip = w.skip.data();
    for (index s = 0; s < Wp; ++s) {
        state_class[s] = s >= W ? 0 : (s & 1) ? q.labels[s / 2] : p.blank;
        skip[s] = T((s & 1) && s > 1 && s < W && q.labels[s / 2] != q.labels[s / 2 - 1]);
    }
    skip[Wp] = skip[Wp + 1] = T(0);
}

// The forward pass of a sample with T_n >= 1 after ctc_states: alpha, and the
// loss (before zero_infinity).
template <class T>
T ctc_forward(const CtcArgs<T>& p, CtcScratch<T>& w, const CtcSample<T>& q) {
    constexpr T ninf = ctc_ninf<T>();
    const index W = q.W, Wp = q.Wp, NC = q.NC;
    const T* lp = q.lp;
    const index* state_class = w.state_class.data();
    const T* skip = w.skip.data();
    T* __restrict em = w.emit.data();
    for (index s = 0; s < Wp; ++s) em[s] = T(0);

    // alpha: row t at alpha[t * (Wp + 2) + 2 + s], two -inf pads on the left
    // (s - 1, s - 2 of state 0); the spare states hold values nothing reads.
    const index AW = Wp + 2;
    T* alpha = w.alpha.data();
    for (index s = 0; s < AW; ++s) alpha[s] = ninf;
    alpha[2] = lp[p.blank];
    if (q.S > 0) alpha[3] = lp[q.labels[0]];
    for (index t = 1; t < q.Tn; ++t) {
        const T* __restrict prev = alpha + (t - 1) * AW;
        T* __restrict cur = alpha + t * AW;
        ctc_emissions(lp + t * NC, state_class, W, em);
        cur[0] = cur[1] = ninf;
        for (index s0 = 0; s0 < Wp; s0 += CTC_PAD)
            for (index s = s0; s < s0 + CTC_PAD; ++s)
                cur[2 + s] = ctc_lse3(prev[2 + s], prev[1 + s],
                                      vselect(skip[s] != T(0), prev[s], ninf)) + em[s];
    }
    const T* last = alpha + (q.Tn - 1) * AW + 2;
    if (q.S == 0) return -last[0];
    const T l1 = last[W - 1], l2 = last[W - 2];
    T m = l1 < l2 ? l2 : l1;  // std::max(l1, l2)
    m = m == ninf ? T(0) : m;
    return -(ctc_log(ctc_exp<true>(l1 - m) + ctc_exp<true>(l2 - m)) + m);
}

// The slots of a sample's states: one per distinct class (blank, then the
// labels in order of appearance), class_of[k] and slot_of[class]; returns
// their count.  ctc_grad_rows resets slot_of for the next sample.
template <class T>
index ctc_slots(CtcScratch<T>& w, index W) {
    const index* state_class = w.state_class.data();
    index* slot_of = w.class_slot.data();
    index* class_of = w.slot_class.data();
    index slots = 0;
    for (index s = 0; s < W; ++s) {
        const index c = state_class[s];
        if (slot_of[c] < 0) {
            class_of[slots] = c;
            slot_of[c] = slots++;
        }
    }
    return slots;
}

// The gradient rows grad[t < T_n] = g (exp(lp) - gamma), with gamma[t, c] at
// acc[slot * Tp + t] for the classes some state uses; written row by row over
// padded copies.  For a class no state uses, gamma = exp((-inf + loss) - lp)
// is 0, or NaN where that argument is NaN (loss = +inf, or lp = -inf), as in
// torch: a select, not an exp.
template <class T>
void ctc_grad_rows(const CtcArgs<T>& p, CtcScratch<T>& w, const CtcSample<T>& q, index slots,
                   T nll, T g, T* grad) {
    const index Tn = q.Tn, Tp = q.Tp, NC = q.NC, C = p.classes, Cp = ctc_padded(C);
    const T* lp = q.lp;
    const T* acc = w.acc.data();
    index* slot_of = w.class_slot.data();
    const index* class_of = w.slot_class.data();
    const T unused = ctc_ninf<T>() + nll;
    T* __restrict x = w.lp_row.data();
    T* __restrict sub = w.acc_row.data();
    T* __restrict out = w.out_row.data();
    for (index c = 0; c < Cp; ++c) x[c] = T(0);
    for (index t = 0; t < Tn; ++t) {
        const T* e = lp + t * NC;
        for (index c = 0; c < C; ++c) x[c] = e[c];
        for (index c = 0; c < Cp; ++c) {
            const T u = unused - x[c];
            sub[c] = vselect(u != u, u, T(0));
        }
        for (index k = 0; k < slots; ++k) sub[class_of[k]] = acc[k * Tp + t];
        for (index c0 = 0; c0 < Cp; c0 += CTC_PAD)
            for (index c = c0; c < c0 + CTC_PAD; ++c) out[c] = (ctc_exp(x[c]) - sub[c]) * g;
        T* gr = grad + t * NC;
        for (index c = 0; c < C; ++c) gr[c] = out[c];
    }
    for (index k = 0; k < slots; ++k) slot_of[class_of[k]] = -1;  // for the next sample
}

// The backward pass after ctc_forward: beta, A, and the gradient rows
// grad[t < T_n] (g: the sample's upstream gradient with the reduction's scale).
template <class T>
void ctc_backward(const CtcArgs<T>& p, CtcScratch<T>& w, const CtcSample<T>& q, T nll, T g,
                  T* grad) {
    constexpr T ninf = ctc_ninf<T>();
    const index Tn = q.Tn, W = q.W, Wp = q.Wp, Tp = q.Tp, NC = q.NC, AW = Wp + 2;
    const T* lp = q.lp;
    const index* state_class = w.state_class.data();
    const T* skip = w.skip.data();
    T* __restrict em = w.emit.data();
    const T* alpha = w.alpha.data();

    // beta, rolling over two rows with two -inf pads on the right; alpha + beta
    // is stored state-major: ab[s * Tp + t] (spare steps t >= Tn - 1: -inf).
    T* __restrict next = w.beta.data();
    T* __restrict cur = next + AW;
    T* ab = w.ab.data();
    const T* e_last = lp + (Tn - 1) * NC;
    for (index s = 0; s < AW; ++s) next[s] = cur[s] = ninf;
    next[W - 1] = e_last[p.blank];
    if (q.S > 0) next[W - 2] = e_last[q.labels[q.S - 1]];
    for (index s = 0; s < W; ++s)
        for (index t = Tn - 1; t < Tp; ++t) ab[s * Tp + t] = ninf;
    for (index t = Tn - 2; t >= 0; --t) {
        const T* __restrict a = alpha + t * AW + 2;
        ctc_emissions(lp + t * NC, state_class, W, em);
        for (index s0 = 0; s0 < Wp; s0 += CTC_PAD)
            for (index s = s0; s < s0 + CTC_PAD; ++s)
                cur[s] = ctc_lse3(next[s], next[s + 1],
                                  vselect(skip[s + 2] != T(0), next[s + 2], ninf)) + em[s];
        for (index s = 0; s < W; ++s) ab[s * Tp + t] = a[s] + cur[s];
        std::swap(next, cur);
    }

    // A per slot at acc[k * Tp + t]; accumulated in torch's order: for each
    // (t < Tn - 1, class), states in descending s.
    const index slots = ctc_slots(w, W);
    const index* slot_of = w.class_slot.data();
    const index* class_of = w.slot_class.data();
    T* acc = w.acc.data();
    // A slot's first state (its highest s) finds the accumulator at -inf, where
    // the log-add returns x itself: a copy, and no exp or log for about half
    // the states.
    char* started = w.slot_started.data();
    for (index k = 0; k < slots; ++k) started[k] = 0;
    for (index s = W - 1; s >= 0; --s) {
        const index k = slot_of[state_class[s]];
        T* __restrict row = acc + k * Tp;
        const T* __restrict x = ab + s * Tp;
        if (!started[k]) {
            started[k] = 1;
            for (index t = 0; t < Tp; ++t) row[t] = x[t];
            continue;
        }
        for (index t0 = 0; t0 < Tp; t0 += CTC_PAD)
            for (index t = t0; t < t0 + CTC_PAD; ++t) row[t] = ctc_log_add(row[t], x[t]);
    }
    // ... and at t = Tn - 1 only the last two states, where beta is lp itself
    // (torch's start of beta).
    const T* last = alpha + (Tn - 1) * AW + 2;
    for (index k = 0; k < slots; ++k) acc[k * Tp + Tn - 1] = ninf;
    acc[slot_of[p.blank] * Tp + Tn - 1] = last[W - 1] + e_last[p.blank];
    if (q.S > 0) {
        const index c = q.labels[q.S - 1];
        acc[slot_of[c] * Tp + Tn - 1] = last[W - 2] + e_last[c];
    }

    // exp(A + loss - lp) of each slot's class, vectorised over t, in place
    // of A: only the classes some state uses (at most S + 1 of C) need it.
    T* __restrict col = w.lp_col.data();
    for (index k = 0; k < slots; ++k) {
        const index c = class_of[k];
        for (index t = 0; t < Tn; ++t) col[t] = lp[t * NC + c];
        for (index t = Tn; t < Tp; ++t) col[t] = T(0);
        T* __restrict row = acc + k * Tp;
        for (index t0 = 0; t0 < Tp; t0 += CTC_PAD)
            for (index t = t0; t < t0 + CTC_PAD; ++t) row[t] = ctc_exp(row[t] + nll - col[t]);
    }

    ctc_grad_rows(p, w, q, slots, nll, g, grad);
}

// ---------------------------------------------------------------------------
// float64: the same lattice in probability space
// ---------------------------------------------------------------------------
//
// A float64 sample runs the recursion on probabilities y = exp(lp) instead,
// each row rescaled by the power of two that brings its sum into [1, 2)
// (exact: Graves et al. 2006, section 4.1, without the rounding):
// alpha^_t = alpha_t 2^-(e_0 + ... + e_t), beta^ likewise with its own
// exponents, loss = -(E ln2 + log(alpha^_{T-1}(W-1) + alpha^_{T-1}(W-2))) with
// E the sum of the exponents, and
//   gamma_t(c) = sum_{s: l'_s = c} alpha^_t(s) beta^_t(s) / y_t(s) / Z_t,
//   Z_t = sum_s alpha^_t(s) beta^_t(s) / y_t(s)
// (both alpha and beta include y_t, as torch's do; Z_t is P up to the rows'
// scales, so gamma sums to 1 over c).  One exp per state and step and a few
// multiply-adds per cell, where log space takes two exps and a log per cell:
// 2-2.5x faster for value and gradient (T = 50, 21 states).  A cell rounds
// two or three times and the rescaling not at all, so gamma is right to a
// few ulp of 1: against an 80-bit recursion (T = 50, C = 20, S = 10) closs's
// gradient was within 6e-16 of its largest entry and torch's log-space one
// within 8e-14 (each exp(A + loss - lp) carries the rounding of its ~100-sized
// log-space terms), so closs and torch differ by about torch's error, ~1e-13.
//
// It is used only where it cannot lose a path: every used log-probability in
// [CTC_LP_MIN, 0] (torch's log_softmax output is <= 0), so y >= e^-150, and
// every non-zero alpha^ and beta^ at least CTC_TINY, so that no product of
// the recursion, Z_t included, comes near the subnormal range (1e-100 e^-150
// and 1e-200 are normal).  Otherwise (-inf, NaN or positive log-probabilities
// in a used class, impossible alignments, outputs so peaked over a long
// sequence that some prefix or suffix falls 1e100 behind) the sample is
// computed again in log space, which has torch's semantics for all of those.
// Both end in the same gradient rows (ctc_grad_rows), which give an unused
// class at lp = -inf torch's NaN.
constexpr double CTC_LP_MIN = -150.0;
constexpr double CTC_TINY = 1e-100;

// y[t * Wp + s] = exp(lp[t, l'_s]) (0 for the spare states) after
// ctc_states; false when a used log-probability is outside [CTC_LP_MIN, 0].
inline bool ctc_scaled_emissions(CtcScratch<double>& w, const CtcSample<double>& q) {
    const index W = q.W, Wp = q.Wp, n = q.Tn * Wp;
    const index* state_class = w.state_class.data();
    double* __restrict y = w.prob.data();
    for (index t = 0; t < q.Tn; ++t) {
        ctc_emissions(q.lp + t * q.NC, state_class, W, y + t * Wp);
        for (index s = W; s < Wp; ++s) y[t * Wp + s] = 0.0;
    }
    count_like<double> outside = 0;
    for (index i = 0; i < n; ++i) {
        const double v = y[i];
        outside += !(v >= CTC_LP_MIN && v <= 0.0);  // NaN too
        y[i] = vexp_nonpos(v);
    }
    for (index t = 0; t < q.Tn; ++t)
        for (index s = W; s < Wp; ++s) y[t * Wp + s] = 0.0;
    return outside == 0;
}

// A row of the rescaled recursions is CTC_PAD-state blocks held in vectors
// (GCC vector extensions: whole registers on every instruction set).  A step
// reads the row the previous step stored, block for block at the same
// addresses (store-to-load forwarding), and makes the neighbours s - 1, s - 2
// (s + 1, s + 2 for beta) by shuffling two adjacent blocks: loads of the row
// shifted by one or two states would straddle two stores, which the CPU
// cannot forward (a plain loop over s with such loads: the forward recursion
// ~25% slower at T = 50, 21 states).
// A block is closs_sum.hpp's half-lanes vector, loaded and stored by its
// lanes_load / lanes_store.
using CtcV = HalfLanesD;
static_assert(sizeof(CtcV) == CTC_PAD * sizeof(double), "a block is CTC_PAD doubles");

// Per lane, the count of rescaled values in (0, CTC_TINY), by integer
// arithmetic on the bits (b - 1 < bits(CTC_TINY) - 1 as unsigned numbers, for
// non-negative doubles): GCC turns a comparison of such vectors into scalar code.
using CtcU = std::uint64_t __attribute__((vector_size(CTC_PAD * sizeof(double))));

inline void ctc_count_small(CtcU& small, const CtcV& v) {
    constexpr std::uint64_t tiny = __builtin_bit_cast(std::uint64_t, CTC_TINY) - 1;
    const CtcU x = __builtin_bit_cast(CtcU, v) - 1;  // 0 wraps to the top: not counted
    small += ((x - tiny) & ~x) >> 63;
}

inline bool ctc_any_small(const CtcU& small) {
    std::uint64_t n = 0;
    for (int j = 0; j < CTC_PAD; ++j) n |= small[j];
    return n != 0;
}

// Rescales the row's `blocks` blocks by the power of two 2^-e that brings
// their sum (lanes: the blocks' lane sums) into [1, 2): exact, no rounding.
// Returns e, or INT_MIN when the row is all 0 (no state reachable); `small`
// counts the values left in (0, CTC_TINY).
inline int ctc_rescale(double* row, index blocks, const CtcV& lanes, CtcU& small) {
    using vmath_detail::bit_cast;
    const double sum = half_lanes_total(lanes);
    if (!(sum > 0.0)) return std::numeric_limits<int>::min();
    // sum is positive and normal (at most 6; see above for how small it gets)
    const int biased = int(bit_cast<std::uint64_t>(sum) >> 52);
    const double scale = bit_cast<double>(std::uint64_t(2046 - biased) << 52);
    for (index i = 0; i < blocks; ++i) {
        CtcV v;
        lanes_load(v, row + i * CTC_PAD);
        v *= scale;
        lanes_store(row + i * CTC_PAD, v);
        ctc_count_small(small, v);
    }
    return biased - 1023;
}

// The forward pass in probability space after ctc_states (S >= 1, T_n >= 1):
// alpha^ rows at alpha[t * (Wp + 2) + 2 + s], the loss into nll; false when
// the sample needs log space (see above).
inline bool ctc_scaled_forward(CtcScratch<double>& w, const CtcSample<double>& q, double& nll) {
    if (!ctc_scaled_emissions(w, q)) return false;
    const index W = q.W, Wp = q.Wp, AW = Wp + 2, blocks = Wp / CTC_PAD;
    const double* y = w.prob.data();
    const double* skip = w.skip.data();
    double* alpha = w.alpha.data();
    CtcU small = {};
    CtcV lanes = {};
    for (index s = 0; s < AW; ++s) alpha[s] = 0.0;
    alpha[2] = y[0];
    alpha[3] = y[1];
    for (index i = 0; i < blocks; ++i) {
        CtcV v;
        lanes_load(v, alpha + 2 + i * CTC_PAD);
        lanes += v;
    }
    // log P = E ln2 + log(alpha^ of the two end states), E the sum of the
    // rows' exponents (an exact integer sum)
    long E = ctc_rescale(alpha + 2, blocks, lanes, small);
    for (index t = 1; t < q.Tn; ++t) {
        const double* prev = alpha + (t - 1) * AW + 2;
        double* cur = alpha + t * AW + 2;
        const double* yt = y + t * Wp;
        CtcV before = {};  // the previous block of prev (states below 0: 0)
        lanes = CtcV{};
        for (index i = 0; i < blocks; ++i) {
            CtcV P, K, Y;
            lanes_load(P, prev + i * CTC_PAD);
            lanes_load(K, skip + i * CTC_PAD);
            lanes_load(Y, yt + i * CTC_PAD);
            const CtcV s1 = __builtin_shufflevector(before, P, 7, 8, 9, 10, 11, 12, 13, 14);
            const CtcV s2 = __builtin_shufflevector(before, P, 6, 7, 8, 9, 10, 11, 12, 13);
            const CtcV v = ((P + s1) + K * s2) * Y;
            lanes_store(cur + i * CTC_PAD, v);
            lanes += v;
            before = P;
        }
        const int e = ctc_rescale(cur, blocks, lanes, small);
        if (e == std::numeric_limits<int>::min()) return false;  // impossible alignment
        E += e;
    }
    const double* last = alpha + (q.Tn - 1) * AW + 2;
    const double end = last[W - 1] + last[W - 2];
    if (!(end >= CTC_TINY) || ctc_any_small(small)) return false;
    constexpr double ln2_hi = 6.93147180369123816490e-01;  // E ln2_hi exact for |E| < 2^20
    constexpr double ln2_lo = 1.90821492927058770002e-10;
    if (E <= -(1L << 20)) return false;  // T ~ 1e4 steps at the least allowed probabilities
    nll = -((double(E) * ln2_hi + std::log(end)) + double(E) * ln2_lo);
    return true;
}

// The backward pass in probability space after ctc_scaled_forward: beta^,
// gamma per slot into acc, and the gradient rows; false when the sample needs
// log space (then nothing it wrote counts: ctc_backward writes it all again).
inline bool ctc_scaled_backward(const CtcArgs<double>& p, CtcScratch<double>& w,
                                const CtcSample<double>& q, double nll, double g, double* grad) {
    const index Tn = q.Tn, W = q.W, Wp = q.Wp, Tp = q.Tp, AW = Wp + 2, blocks = Wp / CTC_PAD;
    const double* y = w.prob.data();
    const double* skip = w.skip.data();
    const double* alpha = w.alpha.data();
    CtcU small = {};
    // beta^ rolling over two rows.  The gradient needs alpha^ beta^ / y,
    // which is alpha^ times beta^ before its multiply by y:
    // u_t(s) = beta^_{t+1}(s) + beta^_{t+1}(s+1) (+ s+2), 1 at the two end
    // states of the last step; a common factor of a step cancels in gamma.
    // ab[s * Tp + t] = alpha^_t(s) u_t(s), state-major (spare steps: 0).
    double* next = w.beta.data();  // u_t
    double* cur = next + AW;
    double* ab = w.ab.data();
    for (index s = 0; s < Wp; ++s) next[s] = 0.0;
    next[W - 1] = next[W - 2] = 1.0;
    for (index s = 0; s < W; ++s)
        for (index t = Tn; t < Tp; ++t) ab[s * Tp + t] = 0.0;
    for (index t = Tn - 1;; --t) {
        const double* a = alpha + t * AW + 2;
        for (index s = 0; s < W; ++s) ab[s * Tp + t] = a[s] * next[s];
        if (t == 0) break;
        // beta^_t = u_t y_t, rescaled; then u_{t-1} from it
        const double* yt = y + t * Wp;
        CtcV lanes = {};
        for (index i = 0; i < blocks; ++i) {
            CtcV v, Y;
            lanes_load(v, next + i * CTC_PAD);
            lanes_load(Y, yt + i * CTC_PAD);
            v *= Y;
            lanes_store(next + i * CTC_PAD, v);
            lanes += v;
        }
        if (ctc_rescale(next, blocks, lanes, small) == std::numeric_limits<int>::min())
            return false;
        CtcV after = {};  // the next block of beta^ (states past the last: 0)
        for (index i = blocks - 1; i >= 0; --i) {
            CtcV B, K;
            lanes_load(B, next + i * CTC_PAD);
            lanes_load(K, skip + 2 + i * CTC_PAD);
            const CtcV s1 = __builtin_shufflevector(B, after, 1, 2, 3, 4, 5, 6, 7, 8);
            const CtcV s2 = __builtin_shufflevector(B, after, 2, 3, 4, 5, 6, 7, 8, 9);
            lanes_store(cur + i * CTC_PAD, (B + s1) + K * s2);
            after = B;
        }
        std::swap(next, cur);
    }
    if (ctc_any_small(small)) return false;

    // Z_t (states in ascending s, vectorised over t): at least CTC_TINY^2
    // (some state has both alpha^ and beta^ non-zero, y <= 1), checked all
    // the same, as a wrong gamma must not get out.
    double* __restrict z = w.lp_col.data();
    for (index t = 0; t < Tp; ++t) z[t] = 0.0;
    for (index s = 0; s < W; ++s)
        for (index t = 0; t < Tp; ++t) z[t] += ab[s * Tp + t];
    count_like<double> below = 0;
    for (index t = 0; t < Tn; ++t) below += !(z[t] >= CTC_TINY * CTC_TINY);
    if (below) return false;
    for (index t = 0; t < Tn; ++t) z[t] = 1.0 / z[t];

    // gamma per slot: the sum of its states' terms (ascending s), over Z_t.
    const index slots = ctc_slots(w, W);
    const index* slot_of = w.class_slot.data();
    const index* state_class = w.state_class.data();
    double* acc = w.acc.data();
    for (index k = 0; k < slots; ++k)
        for (index t = 0; t < Tp; ++t) acc[k * Tp + t] = 0.0;
    for (index s = 0; s < W; ++s) {
        const double* __restrict x = ab + s * Tp;
        double* __restrict row = acc + slot_of[state_class[s]] * Tp;
        for (index t = 0; t < Tp; ++t) row[t] += x[t];
    }
    for (index k = 0; k < slots; ++k)
        for (index t = 0; t < Tn; ++t) acc[k * Tp + t] *= z[t];
    ctc_grad_rows(p, w, q, slots, nll, g, grad);
    return true;
}

// Sample n: returns its loss (after zero_infinity) and writes its gradient
// rows grad[:, n, :] when GRAD.
template <class T, bool GRAD>
inline T ctc_sample(const CtcArgs<T>& p, CtcScratch<T>& w, index n) {
    constexpr T inf = std::numeric_limits<T>::infinity();
    const CtcSample<T> q(p, n);
    // torch: T_n = 0 gives -(S == 0 ? 0 : -inf) and no gradient at all
    T nll = q.Tn == 0 ? (q.S == 0 ? -T(0) : inf) : T(0);
    bool scaled = false;  // float64 in probability space (above)
    if (q.Tn > 0) {
        ctc_states(p, w, q);
        if constexpr (std::is_same_v<T, double>)
            scaled = q.S > 0 && ctc_scaled_forward(w, q, nll);
        if (!scaled) nll = ctc_forward(p, w, q);
    }
    const bool zeroed = p.zero_infinity && nll == inf;
    if constexpr (GRAD) {
        T* grad = p.grad + n * p.classes;  // grad[t * NC + c]
        index done = 0;
        if (q.Tn > 0 && !zeroed) {
            const double go = p.grad_output ? double(p.grad_output[n]) : 1.0;
            const T g = T(p.gscale * go / double(p.mean ? std::max<index>(q.S, 1) : 1));
            bool written = false;
            if constexpr (std::is_same_v<T, double>) {
                written = scaled && ctc_scaled_backward(p, w, q, nll, g, grad);
                // log alpha for ctc_backward; the loss stays the one a value-only
                // call gives (the two differ by ~1e-14)
                if (scaled && !written) ctc_forward(p, w, q);
            }
            if (!written) ctc_backward(p, w, q, nll, g, grad);
            done = q.Tn;
        }
        for (index t = done; t < p.steps; ++t)
            for (index c = 0; c < p.classes; ++c) grad[t * q.NC + c] = T(0);
    }
    return zeroed ? T(0) : nll;
}

// Entries [lo, hi): per-sample losses to p.loss when set; returns the sum of
// loss_n (or loss_n / max(S_n, 1) for 'mean') in index order.
template <class T, bool GRAD>
double ctc_range(const CtcArgs<T>& p, index lo, index hi) {
    CtcScratch<T> w(p);
    double total = 0.0;
    for (index n = lo; n < hi; ++n) {
        const T v = ctc_sample<T, GRAD>(p, w, n);
        if (p.loss) p.loss[n] = v;
        total += p.mean ? double(v) / double(std::max<std::int64_t>(p.target_lengths[n], 1))
                        : double(v);
    }
    return total;
}

template <class T>
double ctc_chunk(const CtcArgs<T>& p, index lo, index hi) {
    return p.grad ? ctc_range<T, true>(p, lo, hi) : ctc_range<T, false>(p, lo, hi);
}

using ctc_f32_fn = double(const CtcArgs<float>&, index, index);
using ctc_f64_fn = double(const CtcArgs<double>&, index, index);
CLOSS_MULTIVERSION(ctc_f32_fn, ctc_f32, ctc_chunk<float>)
CLOSS_MULTIVERSION(ctc_f64_fn, ctc_f64, ctc_chunk<double>)

// Lattice cells (time steps x states) per chunk, but at least CTC_MIN_CHUNKS
// chunks where the batch has that many entries (16 entries in 6 chunks of 3
// left one of two threads 9 entries: 10-15% slower).  A chunk's entries
// depend on the shapes only, so the sum's order does not depend on the thread
// count.
constexpr index CTC_CHUNK_CELLS = 4096;
constexpr index CTC_MIN_CHUNKS = 16;

template <class T>
index ctc_per_chunk(const CtcArgs<T>& p) {
    const index by_cells = CTC_CHUNK_CELLS / std::max<index>(1, p.steps * (2 * p.max_target + 1));
    const index by_count = (p.batch + CTC_MIN_CHUNKS - 1) / CTC_MIN_CHUNKS;
    return std::max<index>(1, std::min(by_cells, by_count));
}

// The whole batch, over `threads` threads.  A chunk that cannot allocate its
// scratch says so after the parallel region (an exception must not leave an
// OpenMP thread): std::bad_alloc, MemoryError in Python.
template <class T>
double ctc_sweep(double (*chunk)(const CtcArgs<T>&, index, index), const CtcArgs<T>& p,
                 int threads) {
    const index per_chunk = ctc_per_chunk(p);
    std::atomic<bool> failed{false};
    const double total = sum_unit_chunks(p.batch, per_chunk, threads, [&](index lo, index hi) {
        try {
            return chunk(p, lo, hi);
        } catch (...) {  // bad_alloc, or length_error for a size past the vector's reach
            failed = true;
            return 0.0;
        }
    });
    if (failed) throw std::bad_alloc();
    return total;
}

}  // namespace closs
