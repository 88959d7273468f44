// Instruction-set selection at run time.
//
// Kernels are written once as plain loops that the compiler vectorises.  Each
// entry point is compiled three times from the same template: for AVX-512, for
// AVX2+FMA and for the architecture's baseline ("portable"), using
// __attribute__((target(...), flatten)) so that everything it calls is inlined
// and vectorised for that instruction set.  closs_isa_selected() picks the best
// path the CPU supports; CLOSS_SIMD=avx512|avx2|portable forces one (a path the
// CPU lacks falls back to the best it has), so tests can run every path on one
// machine.
#pragma once
#include <cstdlib>
#include <cstring>

enum closs_isa { CLOSS_ISA_PORTABLE = 0, CLOSS_ISA_AVX2 = 1, CLOSS_ISA_AVX512 = 2 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CLOSS_X86 1
#define CLOSS_TARGET_AVX2 __attribute__((target("avx2,fma"), flatten))
#define CLOSS_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma"), flatten))
#else
#define CLOSS_X86 0
#endif
#define CLOSS_TARGET_PORTABLE __attribute__((flatten))

static inline int closs_isa_supported(void) {
#if CLOSS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return CLOSS_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CLOSS_ISA_AVX2;
#endif
    return CLOSS_ISA_PORTABLE;
}

static inline int closs_isa_selected(void) {
    const int best = closs_isa_supported();
    const char* want = std::getenv("CLOSS_SIMD");
    if (want == nullptr || *want == '\0') return best;
    int asked = best;
    if (std::strcmp(want, "portable") == 0) asked = CLOSS_ISA_PORTABLE;
    else if (std::strcmp(want, "avx2") == 0) asked = CLOSS_ISA_AVX2;
    else if (std::strcmp(want, "avx512") == 0) asked = CLOSS_ISA_AVX512;
    return asked < best ? asked : best;
}

static inline const char* closs_isa_name(int isa) {
    return isa == CLOSS_ISA_AVX512 ? "avx512" : isa == CLOSS_ISA_AVX2 ? "avx2" : "portable";
}

// CLOSS_MULTIVERSION(fn_type, name, impl): defines name_portable / name_avx2 /
// name_avx512, each forwarding its arguments to impl compiled for that
// instruction set, and name_for(isa) returning the matching pointer.
// fn_type is the function type, e.g. double(const Args&, index, index).
// CLOSS_MULTIVERSION_ISA(fn_type, name, tmpl, T) does the same for a template
// tmpl<T, ISA> that also knows its instruction set at compile time (for code
// with intrinsics: closs_transpose.hpp).
#if CLOSS_X86
#define CLOSS_VARIANTS(fn_type, name, impl_portable, impl_avx2, impl_avx512)     \
    template <class F> struct name##_variants;                                   \
    template <class R, class... A> struct name##_variants<R(A...)> {             \
        CLOSS_TARGET_PORTABLE static R portable(A... a) { return impl_portable(a...); } \
        CLOSS_TARGET_AVX2 static R avx2(A... a) { return impl_avx2(a...); }      \
        CLOSS_TARGET_AVX512 static R avx512(A... a) { return impl_avx512(a...); } \
    };                                                                           \
    static inline fn_type* name##_for(int isa) {                                 \
        using V = name##_variants<fn_type>;                                      \
        return isa == CLOSS_ISA_AVX512 ? &V::avx512                              \
             : isa == CLOSS_ISA_AVX2   ? &V::avx2                                \
                                       : &V::portable;                           \
    }
#else
#define CLOSS_VARIANTS(fn_type, name, impl_portable, impl_avx2, impl_avx512)     \
    template <class F> struct name##_variants;                                   \
    template <class R, class... A> struct name##_variants<R(A...)> {             \
        CLOSS_TARGET_PORTABLE static R portable(A... a) { return impl_portable(a...); } \
    };                                                                           \
    static inline fn_type* name##_for(int) { return &name##_variants<fn_type>::portable; }
#endif
#define CLOSS_MULTIVERSION(fn_type, name, impl) CLOSS_VARIANTS(fn_type, name, impl, impl, impl)
#define CLOSS_MULTIVERSION_ISA(fn_type, name, tmpl, T)                          \
    CLOSS_VARIANTS(fn_type, name, (tmpl<T, CLOSS_ISA_PORTABLE>), (tmpl<T, CLOSS_ISA_AVX2>), \
                   (tmpl<T, CLOSS_ISA_AVX512>))
