// The one reduction mechanism: deterministic, accurate sums.
//
// A kernel splits its n values into chunks of CHUNK elements (the unit of
// parallel work) and each chunk into blocks of BLOCK elements.  A block is
// summed in double by LANES independent accumulators (element i goes to lane
// i % LANES, so the loop vectorises without reassociation), the lanes are then
// added as a binary tree; a chunk's block sums and finally the chunks' partial
// sums are combined by pairwise summation in index order.  The shape of this
// tree depends only on n, never on the number of threads, so 'sum' and 'mean'
// are bit-identical for any thread count.  The error bound, about
// (BLOCK/LANES + log2 n) ulp, matches NumPy's pairwise summation.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace closs {

using index = std::ptrdiff_t;

constexpr int LANES = 16;
constexpr index BLOCK = 256;
constexpr index BLOCKS_PER_CHUNK = 16;
constexpr index CHUNK = BLOCK * BLOCKS_PER_CHUNK;

inline index chunk_count(index n) { return (n + CHUNK - 1) / CHUNK; }

// An integer counter as wide as T, for branch-free counts of compares on T:
// they vectorise without widening (a 64-bit count of float compares took four
// vectors of counts per vector of input).
template <class T>
using count_like = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

// Input elements per parallel chunk of the row-wise kernels (whole rows,
// tiles or batch entries per chunk): small enough that a medium input splits
// evenly over two threads (1e5 elements: 13 chunks, not 7), large enough that
// a chunk's scheduling is noise.
constexpr index ROW_CHUNK_ELEMENTS = 8192;

// Pairwise sum of v[0..n) in index order (sequential below 8 terms).
inline double pairwise_sum(const double* v, index n) {
    if (n <= 8) {
        double s = 0.0;
        for (index i = 0; i < n; ++i) s += v[i];
        return s;
    }
    const index half = n / 2;
    return pairwise_sum(v, half) + pairwise_sum(v + half, n - half);
}

// Sum of LANES accumulators as a binary tree (lane j + width joins lane j),
// written out level by level so that it vectorises.
inline double lanes_total(const double* lanes) {
    static_assert(LANES == 16, "lanes_total is written for 16 lanes");
    double a[8], b[4];
    for (int j = 0; j < 8; ++j) a[j] = lanes[j] + lanes[j + 8];
    for (int j = 0; j < 4; ++j) b[j] = a[j] + a[j + 4];
    return (b[0] + b[2]) + (b[1] + b[3]);
}

// Half of LANES values of T as one vector (a GCC / Clang vector extension):
// lane sums written with a pair of them compile to whole-register arithmetic
// on every instruction set, each lane rounded exactly as a scalar loop would.
// Halves, not all LANES: 16 doubles are four AVX2 registers, and such vectors
// were spilled lane by lane.  For arithmetic only: a lane select (c ? a : b)
// on a vector wider than the register becomes scalar code on AVX2 and SSE2
// (measured 3-10x slower).
template <class T>
struct HalfLanes {
    typedef T type __attribute__((vector_size(LANES / 2 * sizeof(T))));
};
using HalfLanesD = HalfLanes<double>::type;

// Such vectors in and out of memory (by reference: a function compiled
// without AVX-512 may not return a 64-byte vector, GCC's "changes the ABI").
template <class V, class T>
inline void lanes_load(V& v, const T* from) {
    std::memcpy(&v, from, sizeof v);
}
template <class V, class T>
inline void lanes_store(T* to, const V& v) {
    std::memcpy(to, &v, sizeof v);
}

// The last three levels of lanes_total's tree: the sum of LANES / 2 lanes.
inline double half_lanes_total(const HalfLanesD& a) {
    static_assert(LANES == 16, "half_lanes_total is written for 8 lanes");
    using V4 = double __attribute__((vector_size(4 * sizeof(double))));
    const V4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

// lanes_total of the lanes lo (0 .. LANES/2 - 1) and hi (the rest): the same
// tree in registers.
inline double lanes_total(const HalfLanesD& lo, const HalfLanesD& hi) {
    return half_lanes_total(lo + hi);
}

// Sum of v[0..m), m <= BLOCK, accumulated in double over LANES lanes.
template <class T>
inline double block_sum(const T* v, index m) {
    double acc[LANES] = {};
    index i = 0;
    for (; i + LANES <= m; i += LANES)
        for (int j = 0; j < LANES; ++j) acc[j] += static_cast<double>(v[i + j]);
    for (int j = 0; i + j < m; ++j) acc[j] += static_cast<double>(v[i + j]);
    return lanes_total(acc);
}

// Runs chunk(k) for k in [0, nchunks) on up to `threads` threads and returns
// the pairwise sum of the chunks' results in index order: the same value for
// any number of threads.  The one parallel driver of every kernel family.
template <class Chunk>
double sum_chunks(index nchunks, int threads, const Chunk& chunk) {
    if (nchunks <= 1) return nchunks == 1 ? chunk(0) : 0.0;
    std::vector<double> partials(nchunks);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (index k = 0; k < nchunks; ++k) partials[k] = chunk(k);
    return pairwise_sum(partials.data(), nchunks);
}

// Units [0, units) (rows, tiles, batch entries) in chunks of per_chunk units,
// the last possibly shorter, summed by sum_chunks: range(lo, hi) returns the
// sum over units [lo, hi).  per_chunk must depend on the shapes only.
template <class Range>
double sum_unit_chunks(index units, index per_chunk, int threads, const Range& range) {
    return sum_chunks((units + per_chunk - 1) / per_chunk, threads, [&](index k) {
        return range(k * per_chunk, std::min(units, (k + 1) * per_chunk));
    });
}

}  // namespace closs
