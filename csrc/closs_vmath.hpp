// Vectorisable exp / log family for float and double.
//
// Every function here is branch-free straight-line arithmetic with no libm
// call, so a loop calling it vectorises under the CLOSS_MULTIVERSION target
// attributes with no fast-math option.  Selects are bit blends (vselect, below): a
// plain ternary lets GCC specialise the code after it on a constant operand
// (e.g. a clamp bound), and floating-point operations left in such a branch
// "may trap", which stops if-conversion and so vectorisation.  Bit casts are
// __builtin_bit_cast.  Integer work stays within what SSE2/AVX2 have: 32/64-bit
// add, and, or, logical shifts; no 64-bit arithmetic right shift, no
// int64<->double conversion (the 0x1.8p52 / 0x1p52 shifter tricks do that), no
// integer compare.  No FMA is used (setup.py builds with -ffp-contract=off), so
// every instruction-set path and the scalar remainder loop give bit-identical
// results.
//
// Vectorisation (GCC 12): AVX-512 and AVX2 vectorise every function for both
// dtypes; the x86-64 baseline (SSE2, the "portable" path) vectorises the float
// loops but not the double ones (GCC has no SSE2 vector select for double
// compares), which run as straight-line scalar code there.
//
// Algorithms (fdlibm / FreeBSD msun, made branch-free):
//   vexp:  k = rint(x / ln2) by the shifter; r = (x - k ln2_hi) - k ln2_lo
//          (Cody-Waite, k ln2_hi exact); exp(r) by the rational form
//          1 - ((lo - r c / (2 - c)) - hi), c = r - r^2 P(r^2); then times 2^k
//          as two normal factors 2^k1 * 2^k2, so a subnormal result is rounded
//          once, correctly.  x is clamped to [-746, 710] (f32: [-104, 89]),
//          which turns +inf / overflow into +inf and -inf / underflow into 0
//          through the arithmetic itself; NaN propagates.
//   vexp_nonpos: vexp without the upper clamp, for x <= 0 (e.g. x - rowmax);
//          it is still correct up to x ~ 709.78 (f32: 88.72), garbage past that.
//   vlog:  subnormals pre-scaled by 2^54 (f32: 2^25); x = 2^k m, m in
//          [sqrt2/2, sqrt2) by integer ops on the bits; f = m - 1,
//          s = f / (2 + f), log = k ln2_hi + (f - (f^2/2 - s (f^2/2 + R(s^2))))
//          + k ln2_lo.  x < 0 -> NaN, +-0 -> -inf, +inf -> +inf, NaN -> NaN.
//   vlog_positive: vlog for finite x > 0 only, with no special case at all (0
//          gives a finite number below the log of the least normal number);
//   vlog_unit: vlog_positive for x in [0, 1], pre-scaled unconditionally;
//   vlog_nonneg: vlog for finite x >= 0 only, without the other special cases;
//          vlog_nonneg<T, false> also without the subnormal pre-scaling, for
//          an x that is 0 or normal (vlog_sum's).
//   vlog_sum: vlog of a sum of exponentials that has an exp(0) term
//          (x >= 1, 0 or NaN: log-sum-exps), without the cases it cannot meet.
//   vlog1p: for 1 + x in [sqrt2/2, sqrt2) the kernel on f = x directly;
//          otherwise on u = fl(1 + x) plus the exact rounding error c / u.
//          x < -1 -> NaN, -1 -> -inf, +-0 -> +-0, +inf -> +inf, NaN -> NaN.
//   softplus(x)    = max(x, 0) + log1p(exp(-|x|)) (log1p specialised to
//                    [0, 1], bit-identical to vlog1p, no subnormal
//                    intermediates for tiny exp(-|x|)); never overflows; equals x
//                    exactly once exp(-x) < ulp(x)/2 (x >~ 17 f32, >~ 37 f64),
//                    exp(x) (down to subnormals, then 0) for x -> -inf,
//                    +inf -> +inf, -inf -> 0, NaN -> NaN.  torch's threshold=20
//                    cut-off (return x for x > 20 even in float64) is the
//                    caller's business.
//   log_sigmoid(x) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|)).
//
// Measured accuracy: max |result - exact| in ULPs of the exact result (0.5
// would be correctly rounded; subnormal results in the subnormal spacing),
// identical on the portable, AVX2 and AVX-512 paths:
//   float32: all 2^32 inputs, against float64 NumPy references (proven max);
//   float64: 1e8 inputs per function (random bit patterns over the finite
//            range, dense uniform sweeps of the interesting interval, small
//            arguments, specials) against 80-bit long double references
//            (sampled max, +-0.001 from the reference's precision).
//
//                 float32   float64
//   vexp           0.92      0.92
//   vexp_nonpos    0.92      0.92     (x <= 0)
//   vlog           0.84      0.86
//   vlog1p         0.84      0.85
//   softplus       1.62      1.56
//   log_sigmoid    1.62      1.57
//
// float32 results not correctly rounded, out of all 2^32 inputs: vexp 0.42%,
// vlog 0.31%, vlog1p 0.27%, softplus and log_sigmoid 2.5%.
// (tests/test_vmath.py asserts these bounds on sweeps of every path.)
#pragma once
#include <cstdint>
#include <limits>

namespace closs {
namespace vmath_detail {

template <class To, class From>
static inline To bit_cast(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast: size mismatch");
    return __builtin_bit_cast(To, v);
}

template <class T> struct uint_of;
template <> struct uint_of<float> { using type = uint32_t; };
template <> struct uint_of<double> { using type = uint64_t; };

}  // namespace vmath_detail

// c ? a : b as a bit blend; both a and b are always evaluated.  Any kernel
// that needs a select in a loop meant to vectorise can use it (see the top of
// this file for why a plain ternary may not vectorise).
template <class T>
static inline T vselect(bool c, T a, T b) {
    using vmath_detail::bit_cast;
    using U = typename vmath_detail::uint_of<T>::type;
    const U m = U(0) - U(c);
    return bit_cast<T>((bit_cast<U>(a) & m) | (bit_cast<U>(b) & ~m));
}

namespace vmath_detail {

// ---------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------

// exp(x) for x in [-746, 710] (NaN propagates).
static inline double exp_core(double x) {
    constexpr double shifter = 0x1.8p52;
    constexpr double inv_ln2 = 1.44269504088896338700e+00;
    constexpr double ln2_hi = 6.93147180369123816490e-01;  // 0x3fe62e42fee00000: k ln2_hi exact
    constexpr double ln2_lo = 1.90821492927058770002e-10;
    constexpr double P1 = 1.66666666666666019037e-01;
    constexpr double P2 = -2.77777777770155933842e-03;
    constexpr double P3 = 6.61375632143793436117e-05;
    constexpr double P4 = -1.65339022054652515390e-06;
    constexpr double P5 = 4.13813679705723846039e-08;

    const double t = x * inv_ln2 + shifter;  // low bits of t: k = rint(x / ln2)
    const double k = t - shifter;
    const double hi = x - k * ln2_hi;
    const double lo = k * ln2_lo;
    const double r = hi - lo;
    const double z = r * r;
    const double c = r - z * (P1 + z * (P2 + z * (P3 + z * (P4 + z * P5))));
    const double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    // 2^k = 2^k1 * 2^k2, k1 = floor(k / 2), both normal for k in [-1076, 1024].
    const uint64_t b = bit_cast<uint64_t>(t) - 0x4338000000000000ULL + 2046;  // k + 2046 > 0
    const uint64_t b1 = b >> 1;                                                // k1 + 1023
    const double s1 = bit_cast<double>(b1 << 52);
    const double s2 = bit_cast<double>((b - b1) << 52);  // k2 + 1023
    return (y * s1) * s2;
}

// exp(x) for x in [-104, 89] (NaN propagates).
static inline float exp_core(float x) {
    constexpr float shifter = 0x1.8p23f;
    constexpr float inv_ln2 = 1.4426950216e+00f;
    constexpr float ln2_hi = 6.9314575195e-01f;  // 0x3f317200: k ln2_hi exact
    constexpr float ln2_lo = 1.4286067653e-06f;
    constexpr float P1 = 1.6666625440e-1f;
    constexpr float P2 = -2.7667332906e-3f;

    const float t = x * inv_ln2 + shifter;
    const float k = t - shifter;
    const float hi = x - k * ln2_hi;
    const float lo = k * ln2_lo;
    const float r = hi - lo;
    const float z = r * r;
    const float c = r - z * (P1 + z * P2);
    const float y = 1.0f - ((lo - (r * c) / (2.0f - c)) - hi);
    const uint32_t b = bit_cast<uint32_t>(t) - 0x4B400000u + 254u;  // k + 254 > 0
    const uint32_t b1 = b >> 1;
    const float s1 = bit_cast<float>(b1 << 23);
    const float s2 = bit_cast<float>((b - b1) << 23);
    return (y * s1) * s2;
}

template <class T> struct exp_limits;
template <> struct exp_limits<double> { static constexpr double lo = -746.0, hi = 710.0; };
template <> struct exp_limits<float> { static constexpr float lo = -104.0f, hi = 89.0f; };

// ---------------------------------------------------------------------------
// log
// ---------------------------------------------------------------------------

// log(1 + f) + dk ln2 (+ c with WITH_C) for f in [sqrt2/2 - 1, sqrt2 - 1), c a
// small correction (log1p's).  Without it (vlog) no add of a zero is left in:
// the compiler keeps x + 0.0, which is not x for x = -0.
template <bool WITH_C>
static inline double log_kernel(double f, double dk, double c = 0.0) {
    constexpr double ln2_hi = 6.93147180369123816490e-01;
    constexpr double ln2_lo = 1.90821492927058770002e-10;
    constexpr double Lg1 = 6.666666666666735130e-01;
    constexpr double Lg2 = 3.999999999940941908e-01;
    constexpr double Lg3 = 2.857142874366239149e-01;
    constexpr double Lg4 = 2.222219843214978396e-01;
    constexpr double Lg5 = 1.818357216161805012e-01;
    constexpr double Lg6 = 1.531383769920937332e-01;
    constexpr double Lg7 = 1.479819860511658591e-01;
    const double hfsq = 0.5 * f * f;
    const double s = f / (2.0 + f);
    const double z = s * s;
    const double w = z * z;
    const double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    const double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    const double R = t2 + t1;
    const auto lo = dk * ln2_lo;
    return s * (hfsq + R) + (WITH_C ? lo + c : lo) - hfsq + f + dk * ln2_hi;
}

template <bool WITH_C>
static inline float log_kernel(float f, float dk, float c = 0.0f) {
    constexpr float ln2_hi = 6.9313812256e-01f;  // 0x3f317180
    constexpr float ln2_lo = 9.0580006145e-06f;
    constexpr float Lg1 = 0xaaaaaa.0p-24f;
    constexpr float Lg2 = 0xccce13.0p-25f;
    constexpr float Lg3 = 0x91e9ee.0p-25f;
    constexpr float Lg4 = 0xf89e26.0p-26f;
    const float hfsq = 0.5f * f * f;
    const float s = f / (2.0f + f);
    const float z = s * s;
    const float w = z * z;
    const float t1 = w * (Lg2 + w * Lg4);
    const float t2 = z * (Lg1 + w * Lg3);
    const float R = t2 + t1;
    const auto lo = dk * ln2_lo;
    return s * (hfsq + R) + (WITH_C ? lo + c : lo) - hfsq + f + dk * ln2_hi;
}

// u > 0 normal (or garbage in, garbage out): u = 2^k (1 + f), 1 + f in
// [sqrt2/2, sqrt2).  Returns f; dk = k - bias_extra.
static inline double log_split(double u, double& dk, double bias) {
    const uint64_t iu = bit_cast<uint64_t>(u) + (0x00095F62ULL << 32);  // 0x3ff00000 - 0x3fe6a09e
    const uint64_t e = iu >> 52;                                        // k + 1023
    dk = bit_cast<double>(e | 0x4330000000000000ULL) - bias;            // bias = 2^52 + 1023 (+ ...)
    return bit_cast<double>((iu & 0x000FFFFFFFFFFFFFULL) + 0x3FE6A09E00000000ULL) - 1.0;
}

static inline float log_split(float u, float& dk, float bias) {
    const uint32_t iu = bit_cast<uint32_t>(u) + (0x3F800000u - 0x3F3504F3u);
    const uint32_t e = iu >> 23;                          // k + 127
    dk = bit_cast<float>(e | 0x4B000000u) - bias;        // bias = 2^23 + 127 (+ ...)
    return bit_cast<float>((iu & 0x007FFFFFu) + 0x3F3504F3u) - 1.0f;
}

// log(u) for u > 0 normal, given log_split's bias (vlog's, or the pre-scaled one).
template <class T>
static inline T log_of_normal(T u, T bias) {
    T dk;
    const T f = log_split(u, dk, bias);
    return log_kernel<false>(f, dk);
}

template <class T> struct log_consts;
template <> struct log_consts<double> {
    static constexpr double tiny = 0x1p-1022, prescale = 0x1p54;
    static constexpr double bias = 0x1p52 + 1023.0, bias_scaled = 0x1p52 + 1023.0 + 54.0;
};
template <> struct log_consts<float> {
    static constexpr float tiny = 0x1p-126f, prescale = 0x1p25f;
    static constexpr float bias = 0x1p23f + 127.0f, bias_scaled = 0x1p23f + 127.0f + 25.0f;
};

}  // namespace vmath_detail

// ---------------------------------------------------------------------------
// Public functions.
// ---------------------------------------------------------------------------

template <class T>
static inline T vexp(T x) {
    using L = vmath_detail::exp_limits<T>;
    T xc = vselect(x < L::lo, L::lo, x);  // NaN stays NaN
    xc = vselect(xc > L::hi, L::hi, xc);
    return vmath_detail::exp_core(xc);
}

// exp(x) for x <= 0 (correct up to the overflow threshold, undefined above).
template <class T>
static inline T vexp_nonpos(T x) {
    using L = vmath_detail::exp_limits<T>;
    return vmath_detail::exp_core(vselect(x < L::lo, L::lo, x));
}

// vlog for a finite x > 0 only, without any select for the other cases; for
// x = 0 it returns a finite number below the log of the least normal number
// (SUBNORMAL: about -746 / -105 for f64 / f32, else -709 / -88), which a
// caller that clamps its logs (BCE's -100) can take as it is.  SUBNORMAL =
// false: x is also known to be 0 or normal, and the pre-scaling is left out
// (a subnormal x then gives a number within 1 of that of 0).
template <class T, bool SUBNORMAL = true>
static inline T vlog_positive(T x) {
    using C = vmath_detail::log_consts<T>;
    T xs = x, bias = C::bias;
    if constexpr (SUBNORMAL) {
        const bool sub = x < C::tiny;
        const T scaled = x * C::prescale;  // computed unconditionally: selects, not branches
        xs = vselect(sub, scaled, x);
        bias = vselect(sub, C::bias_scaled, C::bias);
    }
    return vmath_detail::log_of_normal(xs, bias);
}

// vlog_positive for x in [0, 1]: x is pre-scaled unconditionally (x 2^54 /
// x 2^25 is exact there, subnormals included), one multiply where the
// pre-scaling select takes four operations; 0 gives about -746 / -105.
template <class T>
static inline T vlog_unit(T x) {
    using C = vmath_detail::log_consts<T>;
    return vmath_detail::log_of_normal(x * C::prescale, T(C::bias_scaled));
}

// vlog for a finite x >= 0 only (the caller has checked its inputs, e.g.
// GaussianNLL's variance): the same result there, without the selects for
// x < 0, +inf and NaN.  SUBNORMAL = false: x is also known to be 0 or normal,
// and the pre-scaling is left out.
template <class T, bool SUBNORMAL = true>
static inline T vlog_nonneg(T x) {
    return vselect(x == T(0), -std::numeric_limits<T>::infinity(), vlog_positive<T, SUBNORMAL>(x));
}

// log of a sum of exponentials one of whose terms is exp(0) = 1 (a
// log-sum-exp after its maximum is taken out): x is >= 1, 0 (every term
// exp(-inf)) or NaN, never negative, infinite or subnormal, so vlog's other
// cases are left out.
template <class T>
static inline T vlog_sum(T x) {
    return vselect(x != x, x, vlog_nonneg<T, false>(x));
}

template <class T>
static inline T vlog(T x) {
    T r = vlog_nonneg(x);
    r = vselect(x == std::numeric_limits<T>::infinity(), x, r);
    r = vselect(x < T(0), std::numeric_limits<T>::quiet_NaN(), r);
    return vselect(x != x, x, r);
}

template <class T>
static inline T vlog1p(T x) {
    using C = vmath_detail::log_consts<T>;
    constexpr T inf = std::numeric_limits<T>::infinity();
    // 1 + x in [sqrt2/2, sqrt2): the kernel on f = x itself (k = 0, exact).
    const bool near = (x > T(-0.2928932188134524)) & (x < T(0.41421356237309503));
    const T u = T(1) + x;
    // The rounding error of 1 + x, exactly: for x >= 1 u - x is exact, for
    // x < 1 u - 1 is (Sterbenz / exact sums).
    const T c_big = T(1) - (u - x), c_small = x - (u - T(1));
    const T c = vselect(x >= T(1), c_big, c_small);
    const T cu_all = c / u;
    T dk;
    const T fu = vmath_detail::log_split(u, dk, C::bias);
    const T f = vselect(near, x, fu);
    const T cu = vselect(near, T(0), cu_all);
    dk = vselect(near, T(0), dk);
    T r = vmath_detail::log_kernel<true>(f, dk, cu);
    r = vselect((x == inf) | (x == T(0)), x, r);  // log1p(-0) = -0
    r = vselect(x == T(-1), -inf, r);
    r = vselect(x < T(-1), std::numeric_limits<T>::quiet_NaN(), r);
    return vselect(x != x, x, r);
}

namespace vmath_detail {

// log1p(y) for y in [0, 1] (or NaN): vlog1p without the special cases and the
// exponent split (1 + y is in [1, 2]); bit-identical to vlog1p there.
template <class T>
static inline T log1p_unit(T y0) {
    // log1p(y) rounds to y below 2^-26 (f32) / 2^-54 (f64): return y there and
    // keep the kernel's y^2 terms from going subnormal (slow on many CPUs).
    const bool tiny = y0 < T(sizeof(T) == 4 ? 0x1p-26 : 0x1p-54);
    const T y = vselect(tiny, T(0), y0);
    const bool near = y < T(0.41421356237309503);  // as in vlog1p
    const T u = T(1) + y;                           // in [sqrt2, 2] when !near
    const T cu_all = (y - (u - T(1))) / u;          // rounding error of 1 + y, over u
    const T f = vselect(near, y, u * T(0.5) - T(1));  // exact
    const T cu = vselect(near, T(0), cu_all);
    const T dk = vselect(near, T(0), T(1));
    return vselect(tiny, y0, log_kernel<true>(f, dk, cu));
}

// -|x|, NaN stays NaN.
template <class T>
static inline T neg_abs(T x) {
    using U = typename uint_of<T>::type;
    constexpr U sign = U(1) << (8 * sizeof(U) - 1);
    return bit_cast<T>(bit_cast<U>(x) | sign);
}

}  // namespace vmath_detail

// log(1 + exp(x)), stable: never overflows.
template <class T>
static inline T softplus(T x) {
    const T pos = vselect(x > T(0), x, T(0));
    return pos + vmath_detail::log1p_unit(vexp_nonpos(vmath_detail::neg_abs(x)));
}

// log(sigmoid(x)) = -softplus(-x), stable.
template <class T>
static inline T log_sigmoid(T x) {
    const T neg = vselect(x < T(0), x, T(0));
    return neg - vmath_detail::log1p_unit(vexp_nonpos(vmath_detail::neg_abs(x)));
}

}  // namespace closs
