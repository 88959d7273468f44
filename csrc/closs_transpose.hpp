// Transposes between row-major rows of C < 32 values (row stride C) and a
// class-major tile (class c of row j at tile[c * TILE + j]), for the
// cross-entropy kernel's small-C layout.
//
// The AVX-512 path moves 16 x 16 floats (8 x 8 doubles) at a time through
// registers: masked loads of W rows (only the row's own classes are read), a
// register transpose, full-width stores into the tile (and the reverse, with
// masked stores of each row).  A scalar copy is several times slower because
// every element costs a load and a store at an odd stride.  Other paths use
// the scalar copy.
#pragma once
#include <cstdint>

#include "closs_isa.hpp"
#include "closs_sum.hpp"

#if CLOSS_X86
#include <immintrin.h>
#endif

namespace closs {

// Scalar copies, any instruction set.
template <class T>
inline void rows_to_tile_scalar(const T* __restrict x, index C, index L, index tile,
                                T* __restrict t) {
    for (index j = 0; j < L; ++j)
        for (index c = 0; c < C; ++c) t[c * tile + j] = x[j * C + c];
}

template <class T>
inline void tile_to_rows_scalar(const T* __restrict t, index C, index L, index tile,
                                T* __restrict x) {
    for (index j = 0; j < L; ++j)
        for (index c = 0; c < C; ++c) x[j * C + c] = t[c * tile + j];
}

#if CLOSS_X86
#define CLOSS_AVX512_TARGET target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
#define CLOSS_AVX512_FN __attribute__((CLOSS_AVX512_TARGET, always_inline)) inline

// 64-bit interleaves of float vectors.
CLOSS_AVX512_FN __m512 unpacklo64(__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
CLOSS_AVX512_FN __m512 unpackhi64(__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
// Lanes (a0, a2, b0, b2) and (a1, a3, b1, b3) of 128-bit lanes.
CLOSS_AVX512_FN __m512 even_lanes(__m512 a, __m512 b) { return _mm512_shuffle_f32x4(a, b, 0x88); }
CLOSS_AVX512_FN __m512 odd_lanes(__m512 a, __m512 b) { return _mm512_shuffle_f32x4(a, b, 0xDD); }
CLOSS_AVX512_FN __m512d even_lanes(__m512d a, __m512d b) { return _mm512_shuffle_f64x2(a, b, 0x88); }
CLOSS_AVX512_FN __m512d odd_lanes(__m512d a, __m512d b) { return _mm512_shuffle_f64x2(a, b, 0xDD); }

// The last step of both transposes: s[g][m] holds, in its 128-bit lane q, the
// entries of row group g (4 rows) in column q * M + m (M columns per lane);
// column k = q * M + m is lane q of s[0..3][m], for q = 0..3.
template <class V>
CLOSS_AVX512_FN void combine_lanes(const V s[4][4], int M, V* out) {
    for (int m = 0; m < M; ++m) {
        const V v0 = even_lanes(s[0][m], s[1][m]), w0 = even_lanes(s[2][m], s[3][m]);
        const V v1 = odd_lanes(s[0][m], s[1][m]), w1 = odd_lanes(s[2][m], s[3][m]);
        out[0 * M + m] = even_lanes(v0, w0);
        out[1 * M + m] = even_lanes(v1, w1);
        out[2 * M + m] = odd_lanes(v0, w0);
        out[3 * M + m] = odd_lanes(v1, w1);
    }
}

// r[i] = row i (16 floats) -> r[k] = column k.
CLOSS_AVX512_FN void transpose16(__m512* r) {
    __m512 s[4][4];
    for (int g = 0; g < 4; ++g) {
        const __m512 t0 = _mm512_unpacklo_ps(r[4 * g], r[4 * g + 1]);
        const __m512 t1 = _mm512_unpackhi_ps(r[4 * g], r[4 * g + 1]);
        const __m512 t2 = _mm512_unpacklo_ps(r[4 * g + 2], r[4 * g + 3]);
        const __m512 t3 = _mm512_unpackhi_ps(r[4 * g + 2], r[4 * g + 3]);
        s[g][0] = unpacklo64(t0, t2);
        s[g][1] = unpackhi64(t0, t2);
        s[g][2] = unpacklo64(t1, t3);
        s[g][3] = unpackhi64(t1, t3);
    }
    combine_lanes(s, 4, r);
}

// r[i] = row i (8 doubles) -> r[k] = column k.
CLOSS_AVX512_FN void transpose8(__m512d* r) {
    __m512d s[4][4];
    for (int g = 0; g < 4; ++g) {
        s[g][0] = _mm512_unpacklo_pd(r[2 * g], r[2 * g + 1]);
        s[g][1] = _mm512_unpackhi_pd(r[2 * g], r[2 * g + 1]);
    }
    combine_lanes(s, 2, r);
}

template <class T> struct Avx512;
template <> struct Avx512<float> {
    using V = __m512;
    static constexpr int W = 16;
    CLOSS_AVX512_FN static V load(std::uint32_t mask, const float* p) { return _mm512_maskz_loadu_ps(__mmask16(mask), p); }
    CLOSS_AVX512_FN static void store(std::uint32_t mask, float* p, V v) { _mm512_mask_storeu_ps(p, __mmask16(mask), v); }
    CLOSS_AVX512_FN static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
    CLOSS_AVX512_FN static void transpose(V* r) { transpose16(r); }
};
template <> struct Avx512<double> {
    using V = __m512d;
    static constexpr int W = 8;
    CLOSS_AVX512_FN static V load(std::uint32_t mask, const double* p) { return _mm512_maskz_loadu_pd(__mmask8(mask), p); }
    CLOSS_AVX512_FN static void store(std::uint32_t mask, double* p, V v) { _mm512_mask_storeu_pd(p, __mmask8(mask), v); }
    CLOSS_AVX512_FN static void storeu(double* p, V v) { _mm512_storeu_pd(p, v); }
    CLOSS_AVX512_FN static void transpose(V* r) { transpose8(r); }
};

// W x W blocks: rows j0..j0+W of classes c0..c0+W.  Every loop has a
// constant trip count, so the W registers stay registers; rows past L and
// classes past C are masked (a masked-off load reads nothing).  Tile rows
// c0..c0+W are all written (zeros past C; the tile has SMALL_C >= c0 + W rows).
template <class T>
__attribute__((CLOSS_AVX512_TARGET)) void rows_to_tile_avx512(const T* __restrict x, index C,
                                                              index L, index tile,
                                                              T* __restrict t) {
    using A = Avx512<T>;
    constexpr int W = A::W;
    for (index c0 = 0; c0 < C; c0 += W) {
        const std::uint32_t mask = C - c0 < W ? (1u << (C - c0)) - 1u : (1u << W) - 1u;
        for (index j0 = 0; j0 < L; j0 += W) {
            typename A::V r[W];
            for (int i = 0; i < W; ++i) r[i] = A::load(j0 + i < L ? mask : 0u, x + (j0 + i) * C + c0);
            A::transpose(r);
            for (int k = 0; k < W; ++k) A::storeu(t + (c0 + k) * tile + j0, r[k]);
        }
    }
}

template <class T>
__attribute__((CLOSS_AVX512_TARGET)) void tile_to_rows_avx512(const T* __restrict t, index C,
                                                              index L, index tile,
                                                              T* __restrict x) {
    using A = Avx512<T>;
    constexpr int W = A::W;
    constexpr std::uint32_t all = (1u << W) - 1u;
    for (index c0 = 0; c0 < C; c0 += W) {
        const std::uint32_t mask = C - c0 < W ? (1u << (C - c0)) - 1u : all;
        for (index j0 = 0; j0 < L; j0 += W) {
            typename A::V r[W];
            for (int k = 0; k < W; ++k) r[k] = A::load(c0 + k < C ? all : 0u, t + (c0 + k) * tile + j0);
            A::transpose(r);
            for (int i = 0; i < W; ++i) A::store(j0 + i < L ? mask : 0u, x + (j0 + i) * C + c0, r[i]);
        }
    }
}
#endif

// The transposes for instruction set ISA.
template <int ISA, class T>
inline void rows_to_tile(const T* x, index C, index L, index tile, T* t) {
#if CLOSS_X86
    if constexpr (ISA == CLOSS_ISA_AVX512) return rows_to_tile_avx512(x, C, L, tile, t);
#endif
    rows_to_tile_scalar(x, C, L, tile, t);
}

template <int ISA, class T>
inline void tile_to_rows(const T* t, index C, index L, index tile, T* x) {
#if CLOSS_X86
    if constexpr (ISA == CLOSS_ISA_AVX512) return tile_to_rows_avx512(t, C, L, tile, x);
#endif
    tile_to_rows_scalar(t, C, L, tile, x);
}

}  // namespace closs
