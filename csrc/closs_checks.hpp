// Input checks, run before a kernel's sweep (nothing is written when they
// fail): counted per instruction set and over threads, without the GIL.
//   first_outside_unit / first_negative: float inputs outside [0, 1] / below 0
//     (BCE's input and target, GaussianNLL's var);
//   first_out_of_range: int64 class indices outside [low, high) (the margin
//     losses' targets, the overlap losses' labels).
// Each returns the index of the first bad entry, or -1, through first_flagged.
// both_in_unit_fast is the quick test BCE's sweep tries on a block before
// count_outside (closs_pointwise.hpp's block_in_range).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "closs_isa.hpp"
#include "closs_sum.hpp"

namespace closs {

// The input checks' search: the first i in [0, n) with bad(i), or -1.
// count(lo, m) says how many of [lo, lo + m) are bad (a branch-free count, so
// it vectorises); the chunks are counted on `threads` threads, then the first
// chunk with a bad entry is searched.
template <class Count, class Bad>
index first_flagged(index n, int threads, const Count& count, const Bad& bad) {
    const index nchunks = chunk_count(n);
    std::vector<char> any(nchunks, 0);
    const double flagged = sum_chunks(nchunks, threads, [&](index k) {
        any[k] = count(k * CHUNK, std::min(CHUNK, n - k * CHUNK)) != 0;
        return double(any[k]);
    });
    if (flagged == 0.0) return -1;
    for (index k = 0;; ++k)
        if (any[k])
            for (index i = k * CHUNK;; ++i)
                if (bad(i)) return i;
}

// How many of x[0..n) (n < 2^32: a chunk) are outside [0, 1] (NaN included)
// with LOW_ONLY false, or below 0 with LOW_ONLY true.  The count is as wide as
// T (count_like: a 64-bit one made BCE's check 10% of its time).
template <class T, bool LOW_ONLY>
inline index count_outside(const T* x, index n) {
    using Count = count_like<T>;
    Count outside = 0;
    for (index i = 0; i < n; ++i)
        outside += LOW_ONLY ? Count(x[i] < T(0)) : Count(!(x[i] >= T(0) && x[i] <= T(1)));
    return index(outside);
}

// Whether every a[i] and b[i] (i < n) lies in [0, 1], from the bits as signed
// integers: 0 <= bits <= bits(1) holds exactly for +0 .. 1, and a negative
// number, a NaN or -0 falls outside (the caller counts exactly when this says
// no, so -0 is still accepted).  Two integer min / max per vector: about half
// the work of count_outside on both (BCE: 5% of its time).
template <class T>
inline bool both_in_unit_fast(const T* a, const T* b, index n) {
    using Bits = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    Bits lo = 0, hi = 0;
    for (index i = 0; i < n; ++i) {
        const Bits u = __builtin_bit_cast(Bits, a[i]), v = __builtin_bit_cast(Bits, b[i]);
        lo = std::min(lo, std::min(u, v));
        hi = std::max(hi, std::max(u, v));
    }
    return lo >= 0 && hi <= __builtin_bit_cast(Bits, T(1));
}

using count_outside_f32_fn = index(const float*, index);
using count_outside_f64_fn = index(const double*, index);
CLOSS_MULTIVERSION(count_outside_f32_fn, outside_unit_f32, (count_outside<float, false>))
CLOSS_MULTIVERSION(count_outside_f64_fn, outside_unit_f64, (count_outside<double, false>))
CLOSS_MULTIVERSION(count_outside_f32_fn, below_zero_f32, (count_outside<float, true>))
CLOSS_MULTIVERSION(count_outside_f64_fn, below_zero_f64, (count_outside<double, true>))

// The index of the first of x[0..n) outside [0, 1] (or below 0 with
// LOW_ONLY), or -1, counted per instruction set and over threads.
template <class T, bool LOW_ONLY>
index first_outside(const T* x, index n, int threads) {
    using fn = index(const T*, index);
    fn* count;
    if constexpr (std::is_same<T, float>::value)
        count = LOW_ONLY ? below_zero_f32_for(closs_isa_selected())
                         : outside_unit_f32_for(closs_isa_selected());
    else
        count = LOW_ONLY ? below_zero_f64_for(closs_isa_selected())
                         : outside_unit_f64_for(closs_isa_selected());
    return first_flagged(n, threads, [&](index lo, index m) { return count(x + lo, m); },
                         [&](index i) { return count_outside<T, LOW_ONLY>(x + i, 1) != 0; });
}

template <class T>
index first_outside_unit(const T* x, index n, int threads) {
    return first_outside<T, false>(x, n, threads);
}

template <class T>
index first_negative(const T* x, index n, int threads) {
    return first_outside<T, true>(x, n, threads);
}

// How many of t[0..n) lie outside [low, high): integer sums, so the loop
// vectorises (64-bit compares from AVX2 on).
inline index count_out_of_range(const std::int64_t* t, index n, std::int64_t low,
                                std::int64_t high) {
    index outside = 0;
    for (index i = 0; i < n; ++i) outside += index(t[i] < low) | index(t[i] >= high);
    return outside;
}

using count_range_fn = index(const std::int64_t*, index, std::int64_t, std::int64_t);
CLOSS_MULTIVERSION(count_range_fn, count_out_of_range_isa, count_out_of_range)

// Class indices' check (MultiMargin's targets, MultiLabelMargin's rows of
// them, the overlap losses' labels): the index of the first of t[0..n)
// outside [low, high), or -1.
inline index first_out_of_range(const std::int64_t* t, index n, std::int64_t low,
                                std::int64_t high, int threads) {
    count_range_fn* count = count_out_of_range_isa_for(closs_isa_selected());
    return first_flagged(n, threads, [&](index lo, index m) { return count(t + lo, m, low, high); },
                         [&](index i) { return t[i] < low || t[i] >= high; });
}

}  // namespace closs
