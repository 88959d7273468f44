// The machine's limits for `closs bench --roofline`: read bandwidth,
// read+write bandwidth and vectorised exp throughput, on a given number of
// threads.  (closs/_kernels/_roofline.pyx times these; closs/_bench.py turns
// them into a lower bound per benchmark row.)
//
// Each measurement splits its work into `threads` contiguous shares, one per
// OpenMP thread (schedule(static), as the kernels' chunk loops run), and calls
// a per-share function compiled for the selected instruction set
// (CLOSS_MULTIVERSION, closs_isa.hpp), so the loops are vectorised as closs's
// kernels are:
//   read:  the sum of a double array, in LANES independent accumulators (the
//          additions do not wait on one another, so memory is the limit);
//   scale: out = a * x, the simplest read+write stream (what a gradient
//          written into a fresh or a preallocated array costs);
//   exp:   y = vexp(x) over an in-cache buffer per thread, `reps` times, as
//          closs's kernels call it (csrc/closs_vmath.hpp).
#pragma once
#include <cstddef>

#include "closs_isa.hpp"
#include "closs_sum.hpp"
#include "closs_vmath.hpp"

namespace closs {
namespace roofline {

inline double read_share(const double* x, index n) {
    double acc[LANES] = {};
    index i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; ++j) acc[j] += x[i + j];
    for (int j = 0; i + j < n; ++j) acc[j] += x[i + j];
    return lanes_total(acc);
}

inline double scale_share(const double* __restrict x, double* __restrict out, index n, double a) {
    for (index i = 0; i < n; ++i) out[i] = a * x[i];
    return 0.0;
}

template <class T>
inline double exp_share(const T* __restrict x, T* __restrict y, index n, index reps) {
    for (index r = 0; r < reps; ++r) {
        for (index i = 0; i < n; ++i) y[i] = vexp(x[i]);
        asm volatile("" ::: "memory");  // every repetition is done
    }
    return double(y[0]);
}

using read_fn = double(const double*, index);
using scale_fn = double(const double*, double*, index, double);
using exp_f32_fn = double(const float*, float*, index, index);
using exp_f64_fn = double(const double*, double*, index, index);
CLOSS_MULTIVERSION(read_fn, read_isa, read_share)
CLOSS_MULTIVERSION(scale_fn, scale_isa, scale_share)
CLOSS_MULTIVERSION(exp_f32_fn, exp_f32_isa, exp_share<float>)
CLOSS_MULTIVERSION(exp_f64_fn, exp_f64_isa, exp_share<double>)

// share(lo, hi) on thread t of `threads` for [lo, hi) = t's contiguous share
// of [0, n); returns the sum of the shares' results.
template <class Share>
double over_threads(index n, int threads, const Share& share) {
    double total = 0.0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : total) if (threads > 1)
    for (int t = 0; t < threads; ++t) total += share(n * t / threads, n * (t + 1) / threads);
    return total;
}

inline double read(const double* x, index n, int threads, int isa) {
    read_fn* f = read_isa_for(isa);
    return over_threads(n, threads, [&](index lo, index hi) { return f(x + lo, hi - lo); });
}

inline void scale(const double* x, double* out, index n, double a, int threads, int isa) {
    scale_fn* f = scale_isa_for(isa);
    over_threads(n, threads, [&](index lo, index hi) { return f(x + lo, out + lo, hi - lo, a); });
}

// x and y hold `rows` buffers of m elements each (a row per thread when
// rows == threads: each thread's buffers stay in its own cache).
template <class T, class F>
double exp_rows(F* f, const T* x, T* y, index rows, index m, index reps, int threads) {
    return over_threads(rows, threads, [&](index lo, index hi) {
        double s = 0.0;
        for (index r = lo; r < hi; ++r) s += f(x + r * m, y + r * m, m, reps);
        return s;
    });
}

inline double exp_f32(const float* x, float* y, index rows, index m, index reps, int threads,
                      int isa) {
    return exp_rows(exp_f32_isa_for(isa), x, y, rows, m, reps, threads);
}

inline double exp_f64(const double* x, double* y, index rows, index m, index reps, int threads,
                      int isa) {
    return exp_rows(exp_f64_isa_for(isa), x, y, rows, m, reps, threads);
}

}  // namespace roofline
}  // namespace closs
