/* Compilers and CPUs for the model's C extensions (_kernels and _tiles): GCC, clang and MSVC.
 *
 * X86_64: the build targets x86-64 with a compiler whose intrinsics this code uses (GCC, clang or MSVC); the
 *     vector paths exist only then, and run only where cpu_features() finds that the CPU and the operating
 *     system support them. Elsewhere (ARM, other compilers) only the portable code is built.
 * TARGET("avx2,fma"): compiles one function for more instruction sets than the build's (GCC and clang; MSVC
 *     accepts the intrinsics in any function, and needs nothing).
 * ALWAYS_INLINE: a loop body inlined into each build of it (portable, AVX2, AVX-512), so each is vectorised
 *     for its own instruction set; NOINLINE: a function kept out of line.
 * PREFETCH(address): asks for a cache line ahead of its use (nothing where the compiler has no such hint).
 * cpu_features(): the vector extensions this process may use, from cpuid and xgetbv.
 *
 * Sums must round one operation at a time in every build, so that the portable and vector paths give the same
 * bits: no multiply-add may be fused by the compiler. The build passes -ffp-contract=off (GCC, clang) or
 * /fp:precise (MSVC, setup.py); the pragmas below say the same to compilers that read them.
 */
#ifndef PERCEPT_CPU_H
#define PERCEPT_CPU_H

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(_MSC_VER)
#pragma fp_contract(off)
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define MSVC 1
#endif

#if (defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))) || \
    (defined(_M_X64) && defined(_MSC_VER) && !defined(_M_ARM64EC))
#define X86_64 1
#include <immintrin.h>
#ifdef MSVC
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

#ifdef MSVC
#define TARGET(features)
#define ALWAYS_INLINE static __forceinline
#define NOINLINE __declspec(noinline)
#else
#define TARGET(features) __attribute__((target(features)))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#elif defined(X86_64)
#define PREFETCH(address) _mm_prefetch((const char *)(address), _MM_HINT_T0)
#else
#define PREFETCH(address) ((void)0)
#endif

/* What the CPU and the operating system let this process use. */
typedef struct {
    int avx2;     /* AVX2, FMA and F16C, with the AVX registers saved by the OS */
    int avx512;   /* the above and AVX-512 F, BW, VL and DQ, with the AVX-512 registers saved by the OS */
    int amx_bf16; /* the above and AVX512-BF16, AMX-TILE and AMX-BF16 (the OS must still grant the tiles) */
} CpuFeatures;

#ifdef X86_64
static void cpuid(unsigned int leaf, unsigned int subleaf, unsigned int out[4])
{
#ifdef MSVC
    int registers[4];
    __cpuidex(registers, (int)leaf, (int)subleaf);
    for (int i = 0; i < 4; i++)
        out[i] = (unsigned int)registers[i];
#else
    __cpuid_count(leaf, subleaf, out[0], out[1], out[2], out[3]);
#endif
}

/* XCR0: the register states the operating system saves (read only where cpuid says OSXSAVE). */
static unsigned long long saved_states(void)
{
#ifdef MSVC
    return _xgetbv(0);
#else
    unsigned int low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return ((unsigned long long)high << 32) | low;
#endif
}
#endif

static CpuFeatures cpu_features(void)
{
    CpuFeatures found = {0, 0, 0};
#ifdef X86_64
    unsigned int r[4], leaf7[4], leaf7_1[4];
    cpuid(0, 0, r);
    unsigned int top = r[0];
    if (top < 7)
        return found;
    cpuid(1, 0, r);
    int fma = (r[2] >> 12) & 1, osxsave = (r[2] >> 27) & 1, avx = (r[2] >> 28) & 1, f16c = (r[2] >> 29) & 1;
    if (!osxsave || !avx)
        return found;
    unsigned long long states = saved_states();
    cpuid(7, 0, leaf7);
    if (leaf7[0] >= 1)
        cpuid(7, 1, leaf7_1);
    else
        leaf7_1[0] = 0;
    int avx2 = (leaf7[1] >> 5) & 1;
    int avx512 = ((leaf7[1] >> 16) & 1) && ((leaf7[1] >> 17) & 1) && ((leaf7[1] >> 30) & 1) && ((leaf7[1] >> 31) & 1);
    int amx = ((leaf7[3] >> 22) & 1) && ((leaf7[3] >> 24) & 1) && ((leaf7_1[0] >> 5) & 1);
    found.avx2 = avx2 && fma && f16c && (states & 0x6) == 0x6;             /* SSE and AVX states */
    found.avx512 = found.avx2 && avx512 && (states & 0xe0) == 0xe0;        /* opmask and ZMM states */
    found.amx_bf16 = found.avx512 && amx;
#endif
    return found;
}

#endif
