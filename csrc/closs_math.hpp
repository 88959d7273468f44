// Scalar numerics shared by every kernel family.  Everything here is written
// so that it inlines into loops the compiler can vectorise.
#pragma once
#include <cmath>

#include "closs_vmath.hpp"  // vexp, vlog, vlog1p, softplus, log_sigmoid

namespace closs {

// sign(d) with sign(0) = sign(nan) = 0, as torch's sign() used by L1 backward.
template <class T>
inline T sign(T d) {
    return static_cast<T>((d > T(0)) - (d < T(0)));
}

// log(2 pi) / 2, the constant of the full Gaussian and Poisson likelihoods.
constexpr double HALF_LOG_2PI = 0.91893853320467274178;
constexpr double TWO_PI = 6.28318530717958647692;

}  // namespace closs
