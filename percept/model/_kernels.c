/* The model's inner loops over stored rows, in plain C (no dependencies).
 *
 * gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32, for float16 or float32 rows
 *     (exact conversions).
 * sums_of_squares(stored, out): out[i] = sum_k stored[i, k]^2 in float64, for float16, float32 or float64 rows.
 * unit_rows(stored, rows, norms, out): out[i] = float16 row rows[i] of stored in float64 over its norm (norms[i], or
 *     where that is NaN the row's norm, written there), as percept.model.unit_rows makes unit rows.
 * quotient_vectors(numerators, rows, divisors, out): out[i] = float16 row rows[i] of numerators over divisors[i],
 *     each element rebuilt as the selection rebuilds quotient rows (see `quotient`).
 * quotient_rows(source, rows, numerators, divisors): float16 numerators and a divisor per row that rebuild the
 *     float64 rows source[rows] exactly (quotient rows, see `quotient`), or the first row that has none.
 * select_neighbours(**tables): steps 2 to 4 of percept.model.exact_search (after the screen), a query at a time,
 *     for the arrays a SearchSpace lays out, given by keyword (see SELECT_ARGUMENTS). Every table is checked
 *     before the work starts (types, shapes, index ranges, samples per column, K against the samples), and a
 *     query whose screen values leave fewer than K samples past the cut (a NaN, or maxima that are not the
 *     values') is refused: never memory that was not written. With float16 copies of the columns (refine), each
 *     category's best candidates get float64 similarities first, and the others are taken only where they could
 *     still reach the K-th of those, re-screened from the copies in float32, and kept only where that value could
 *     (refine_and_keep; with refine_scales, refine holds the columns' quotient numerators, their products multiplied
 *     by the scales); with the screen's maxima of tiles of 16 columns (tile_maxima, and the categories each
 *     tile serves in tile_patterns), those are the groups of the first bound, and tiles below a cut are not read.
 *     Each category's neighbours are then ranked without branches. With row_divisors, the matrix holds quotient
 *     rows (float16 numerators, the float64 rows rebuilt exactly as they are read).
 * vector_extensions(enabled=None): whether the AVX2/AVX-512 builds of the loops and the F16C conversions are
 *     used; False forces the portable code (tests compare both), True restores what the CPU supports. Returns
 *     the previous setting. vector_path(name=None): which is in use ("avx512", "avx2" or "portable"); with a
 *     name, uses that build where the CPU runs it (tests run each) and returns the previous one.
 *
 * Float64 sums run over LANES partial sums added pairwise at the end, each product rounded before it is added
 * (no fused multiply-add): the same bits from the portable and the vector code, on every machine, and from
 * percept.model.pure_search. The GIL is released while the loops run, so search threads work side by side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>

#include "_arrays.h"
#include "_cpu.h"

/* Independent partial sums per dot product: enough to keep two vector units busy through their latency. */
#define LANES 32

/* The builds of the loops: the portable code and, on x86-64, the same loops compiled for AVX2 and AVX-512. */
enum { PORTABLE, AVX2, AVX512 };
static const char *PATH_NAMES[] = {"portable", "avx2", "avx512"};
#define AVX2_FEATURES "avx2,fma,f16c"
#define AVX512_FEATURES "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"

static CpuFeatures cpu;                /* what the CPU supports */
static int vector_path_in_use = PORTABLE;

/* The lanes added pairwise (a fixed order, so results do not depend on the machine's vector width). */
ALWAYS_INLINE double lane_total(double *lane)
{
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++)
            lane[l] += lane[l + width];
    return lane[0];
}

/* out[i] = the float64 dot product of the float64 query q with stored row rows[i] (float32 or float64). */
#define DOTS_FROM(name, type, prefetches)                                                                     \
    ALWAYS_INLINE void name(const double *q, const type *vectors, Py_ssize_t dim, const int64_t *rows,        \
                            Py_ssize_t count, double *out)                                                   \
    {                                                                                                         \
        for (Py_ssize_t i = 0; i < count; i++) {                                                              \
            const type *x = vectors + rows[i] * dim;                                                          \
            const char *next = (const char *)(vectors + rows[i + 1 < count ? i + 1 : i] * dim);               \
            double lane[LANES] = {0};                                                                         \
            Py_ssize_t k = 0;                                                                                 \
            for (; k + LANES <= dim; k += LANES) {                                                            \
                /* the next row, a few cache lines per step: its first loads do not wait on memory */         \
                for (int part = 0; part < prefetches; part++)                                                 \
                    PREFETCH(next + k * sizeof(type) + 64 * part);                                            \
                for (int l = 0; l < LANES; l++)                                                               \
                    lane[l] += q[k + l] * (double)x[k + l];                                                   \
            }                                                                                                 \
            double sum = lane_total(lane);                                                                    \
            for (; k < dim; k++)                                                                              \
                sum += q[k] * (double)x[k];                                                                   \
            out[i] = sum;                                                                                     \
        }                                                                                                     \
    }
DOTS_FROM(dots_from_float32, float, 2)
DOTS_FROM(dots_from_float64, double, 4)

/* out[i] = sum_k stored[i, k]^2 in float64, in the order of the dot products. */
#define SUMS_OF_SQUARES(name, type)                                                                           \
    ALWAYS_INLINE void name(const type *stored, Py_ssize_t n, Py_ssize_t dim, double *out)                   \
    {                                                                                                         \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                  \
            const type *x = stored + i * dim;                                                                 \
            double lane[LANES] = {0};                                                                         \
            Py_ssize_t k = 0;                                                                                 \
            for (; k + LANES <= dim; k += LANES)                                                              \
                for (int l = 0; l < LANES; l++)                                                               \
                    lane[l] += (double)x[k + l] * (double)x[k + l];                                           \
            double sum = lane_total(lane);                                                                    \
            for (; k < dim; k++)                                                                              \
                sum += (double)x[k] * (double)x[k];                                                           \
            out[i] = sum;                                                                                     \
        }                                                                                                     \
    }
SUMS_OF_SQUARES(squares_of_float32, float)
SUMS_OF_SQUARES(squares_of_float64, double)

/* IEEE binary16 to binary32, exact. */
static float half_to_float(uint16_t bits)
{
    uint32_t sign = (uint32_t)(bits & 0x8000u) << 16, exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
    union { uint32_t u; float f; } out;
    if (exponent == 0x1f)
        out.u = sign | 0x7f800000u | (mantissa << 13);
    else if (exponent != 0)
        out.u = sign | ((exponent + 112) << 23) | (mantissa << 13);
    else {
        out.f = (float)mantissa * 5.9604644775390625e-8f; /* subnormal: mantissa x 2^-24 */
        out.u |= sign;
    }
    return out.f;
}

static void halves_to_floats_portable(const uint16_t *x, float *y, Py_ssize_t n)
{
    for (Py_ssize_t k = 0; k < n; k++)
        y[k] = half_to_float(x[k]);
}

#ifdef X86_64
/* The same with the F16C instructions, eight at a time. */
TARGET("avx,f16c")
static void halves_to_floats_f16c(const uint16_t *x, float *y, Py_ssize_t n)
{
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(y + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k))));
    for (; k < n; k++)
        y[k] = half_to_float(x[k]);
}
#endif

static void halves_to_floats(const uint16_t *x, float *y, Py_ssize_t n, int path)
{
#ifdef X86_64
    if (path != PORTABLE) {
        halves_to_floats_f16c(x, y, n);
        return;
    }
#endif
    halves_to_floats_portable(x, y, n);
}

static void gather_from_float16(const uint16_t *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n, float *out,
                                int path)
{
    for (Py_ssize_t j = 0; j < n; j++)
        halves_to_floats(stored + rows[j] * dim, out + j * dim, dim, path);
}

static void gather_from_float32(const float *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n, float *out)
{
    for (Py_ssize_t j = 0; j < n; j++)
        memcpy(out + j * dim, stored + rows[j] * dim, (size_t)dim * sizeof(float));
}

/* Sums of squares of float16 rows, through float32 (exact) a row at a time (`row`: dim floats of scratch). */
ALWAYS_INLINE void squares_of_float16(const uint16_t *stored, Py_ssize_t n, Py_ssize_t dim, double *out, float *row,
                                      int path)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        halves_to_floats(stored + i * dim, row, dim, path);
        squares_of_float32(row, 1, dim, out + i);
    }
}


/* out[i] = the float32 dot product of the float32 query q with float16 row columns[i] of `rows` (any order of
 * summation, fused or not: the refining bound covers it, and only which candidates reach float64 depends on it). */
static void float16_dots_portable(const float *q, const uint16_t *rows, Py_ssize_t dim, const int64_t *columns,
                                  Py_ssize_t count, float *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = rows + columns[i] * dim;
        float lane[LANES] = {0};
        Py_ssize_t k = 0;
        for (; k + LANES <= dim; k += LANES)
            for (int l = 0; l < LANES; l++)
                lane[l] += q[k + l] * half_to_float(x[k + l]);
        float sum = 0;
        for (int l = 0; l < LANES; l++)
            sum += lane[l];
        for (; k < dim; k++)
            sum += q[k] * half_to_float(x[k]);
        out[i] = sum;
    }
}

#ifdef X86_64
/* The same with F16C and fused multiply-adds, 32 halves a step. */
TARGET(AVX2_FEATURES)
static void float16_dots_f16c(const float *q, const uint16_t *rows, Py_ssize_t dim, const int64_t *columns,
                              Py_ssize_t count, float *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = rows + columns[i] * dim;
        const char *next = (const char *)(rows + columns[i + 2 < count ? i + 2 : count - 1] * dim);
        __m256 lane[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        Py_ssize_t k = 0;
        for (; k + 32 <= dim; k += 32) {
            PREFETCH(next + k * sizeof(uint16_t));
            for (int part = 0; part < 4; part++)
                lane[part] = _mm256_fmadd_ps(_mm256_loadu_ps(q + k + 8 * part),
                                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k + 8 * part))),
                                             lane[part]);
        }
        float sums[32];
        for (int l = 0; l < 4; l++)
            _mm256_storeu_ps(sums + 8 * l, lane[l]);
        float sum = 0;
        for (int l = 0; l < 32; l++)
            sum += sums[l];
        for (; k < dim; k++)
            sum += q[k] * half_to_float(x[k]);
        out[i] = sum;
    }
}
#endif

static void float16_dots(const float *q, const uint16_t *rows, Py_ssize_t dim, const int64_t *columns,
                         Py_ssize_t count, float *out, int path)
{
#ifdef X86_64
    if (path != PORTABLE) {
        float16_dots_f16c(q, rows, dim, columns, count, out);
        return;
    }
#endif
    float16_dots_portable(q, rows, dim, columns, count, out);
}

/* Quotient rows: float64 rows that are float16 numerators divided by a float64 divisor, element by element (unit
 * rows normalised from float16 embeddings), kept as the numerators and the divisor: a quarter of the bytes, and the
 * same float64 elements, rebuilt as they are read. Element a / d is rebuilt from 1 / d split in two, high + low:
 * high is 1 / d rounded with its last 11 bits cleared, so a high is exact (a has 11 significant bits), and low is
 * the rest, 1 / d - high, rounded; one fused multiply-add then rounds a low + a high, which lies within about
 * 2^-95 of a / d, once. That is a / d rounded but where a / d lies closer than that to a midpoint between two
 * doubles, so no row is rebuilt this way unchecked: quotient_numerators checks every element of every row it gives,
 * and rows read from a model file are rebuilt by quotient_vectors and checked against the file's float64 rows. */
typedef struct {
    double high, low;
} Reciprocal;

ALWAYS_INLINE Reciprocal reciprocal_of(double d)
{
    double y = 1.0 / d, high;
    uint64_t bits;
    memcpy(&bits, &y, sizeof bits);
    bits &= ~(uint64_t)0x7ff;
    memcpy(&high, &bits, sizeof high);
    Reciprocal r = {high, fma(-high, d, 1.0) * y};
    return r;
}

ALWAYS_INLINE double quotient(double a, Reciprocal r)
{
    return fma(a, r.low, a * r.high);
}

/* dots_from_float64 for quotient rows: row i is the float16 numerators vectors[rows[i]] over divisors[rows[i]]. */
ALWAYS_INLINE void dots_from_quotients(const double *q, const uint16_t *vectors, const double *divisors, Py_ssize_t dim,
                                       const int64_t *rows, Py_ssize_t count, double *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = vectors + rows[i] * dim;
        Reciprocal r = reciprocal_of(divisors[rows[i]]);
        double lane[LANES] = {0};
        Py_ssize_t k = 0;
        for (; k + LANES <= dim; k += LANES)
            for (int l = 0; l < LANES; l++)
                lane[l] += q[k + l] * quotient((double)half_to_float(x[k + l]), r);
        double sum = lane_total(lane);
        for (; k < dim; k++)
            sum += q[k] * quotient((double)half_to_float(x[k]), r);
        out[i] = sum;
    }
}

#ifdef X86_64
/* Float64 dot products of the query q with float16 rows vectors[rows[i]], converted with F16C as they are read:
 * dots_from_float32's sums (lane l of a step of 32 halves is dimension k + l, each product rounded before it is
 * added); with divisors, of quotient rows, each element rebuilt as `quotient` rebuilds it (a fused multiply-add). */
TARGET(AVX2_FEATURES)
ALWAYS_INLINE void half_row_dots_avx2(const double *q, const uint16_t *vectors, const double *divisors, Py_ssize_t dim,
                                      const int64_t *rows, Py_ssize_t count, double *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = vectors + rows[i] * dim;
        const char *next = (const char *)(vectors + rows[i + 1 < count ? i + 1 : i] * dim);
        Reciprocal r = reciprocal_of(divisors ? divisors[rows[i]] : 1.0);
        __m256d lane[8], high = _mm256_set1_pd(r.high), low = _mm256_set1_pd(r.low);
        for (int l = 0; l < 8; l++)
            lane[l] = _mm256_setzero_pd();
        Py_ssize_t k = 0;
        for (; k + 32 <= dim; k += 32) {
            PREFETCH(next + k * sizeof(uint16_t));
            for (int part = 0; part < 4; part++) {
                __m256 wide = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k + 8 * part)));
                for (int half = 0; half < 2; half++) {
                    __m256d a = _mm256_cvtps_pd(half ? _mm256_extractf128_ps(wide, 1) : _mm256_castps256_ps128(wide));
                    if (divisors)
                        a = _mm256_fmadd_pd(a, low, _mm256_mul_pd(a, high));
                    int l = 2 * part + half;
                    lane[l] = _mm256_add_pd(lane[l], _mm256_mul_pd(_mm256_loadu_pd(q + k + 4 * l), a));
                }
            }
        }
        double sums[LANES];
        for (int l = 0; l < 8; l++)
            _mm256_storeu_pd(sums + 4 * l, lane[l]);
        double sum = lane_total(sums);
        for (; k < dim; k++)
            sum += q[k] * (divisors ? quotient((double)half_to_float(x[k]), r) : (double)half_to_float(x[k]));
        out[i] = sum;
    }
}

/* The same with AVX-512: eight halves become eight doubles in one register. */
TARGET(AVX512_FEATURES)
ALWAYS_INLINE void half_row_dots_avx512(const double *q, const uint16_t *vectors, const double *divisors,
                                        Py_ssize_t dim, const int64_t *rows, Py_ssize_t count, double *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = vectors + rows[i] * dim;
        const char *next = (const char *)(vectors + rows[i + 1 < count ? i + 1 : i] * dim);
        Reciprocal r = reciprocal_of(divisors ? divisors[rows[i]] : 1.0);
        __m512d lane[4], high = _mm512_set1_pd(r.high), low = _mm512_set1_pd(r.low);
        for (int l = 0; l < 4; l++)
            lane[l] = _mm512_setzero_pd();
        Py_ssize_t k = 0;
        for (; k + 32 <= dim; k += 32) {
            PREFETCH(next + k * sizeof(uint16_t));
            for (int part = 0; part < 4; part++) {
                __m512d a = _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k + 8 * part))));
                if (divisors)
                    a = _mm512_fmadd_pd(a, low, _mm512_mul_pd(a, high));
                lane[part] = _mm512_add_pd(lane[part], _mm512_mul_pd(_mm512_loadu_pd(q + k + 8 * part), a));
            }
        }
        double sums[LANES];
        for (int l = 0; l < 4; l++)
            _mm512_storeu_pd(sums + 8 * l, lane[l]);
        double sum = lane_total(sums);
        for (; k < dim; k++)
            sum += q[k] * (divisors ? quotient((double)half_to_float(x[k]), r) : (double)half_to_float(x[k]));
        out[i] = sum;
    }
}

/* Each as its own function: float16 rows, and quotient rows (the divisors' test leaves the loops when inlined). */
TARGET(AVX2_FEATURES)
static void dots_from_float16_f16c(const double *q, const uint16_t *vectors, Py_ssize_t dim, const int64_t *rows,
                                   Py_ssize_t count, double *out)
{
    half_row_dots_avx2(q, vectors, NULL, dim, rows, count, out);
}

TARGET(AVX2_FEATURES)
static void dots_from_quotients_f16c(const double *q, const uint16_t *vectors, const double *divisors, Py_ssize_t dim,
                                     const int64_t *rows, Py_ssize_t count, double *out)
{
    half_row_dots_avx2(q, vectors, divisors, dim, rows, count, out);
}

TARGET(AVX512_FEATURES)
static void dots_from_float16_avx512(const double *q, const uint16_t *vectors, Py_ssize_t dim, const int64_t *rows,
                                     Py_ssize_t count, double *out)
{
    half_row_dots_avx512(q, vectors, NULL, dim, rows, count, out);
}

TARGET(AVX512_FEATURES)
static void dots_from_quotients_avx512(const double *q, const uint16_t *vectors, const double *divisors,
                                       Py_ssize_t dim, const int64_t *rows, Py_ssize_t count, double *out)
{
    half_row_dots_avx512(q, vectors, divisors, dim, rows, count, out);
}
#endif

/* The nearest binary16 of v, for |v| at most 65504 (ties away from zero: the numerators are found on the binary16
 * grid, and checked after). Normal values keep the top ten bits of the float64 mantissa, rounded (a carry moves
 * into the exponent); smaller ones count units of 2^-24. */
static uint16_t half_of(double v)
{
    union { double d; uint64_t u; } bits = {v};
    uint16_t sign = (uint16_t)((bits.u >> 48) & 0x8000u);
    uint64_t magnitude = bits.u & 0x7fffffffffffffffull;
    bits.u = magnitude;
    if (bits.d < 6.103515625e-05)
        return sign | (uint16_t)lrint(bits.d * 16777216.0);
    return sign | (uint16_t)((magnitude - ((uint64_t)(1023 - 15) << 52) + ((uint64_t)1 << 41)) >> 42);
}

/* Whether every element of x is rebuilt exactly from the numerators and the divisor d. */
ALWAYS_INLINE int rebuilds(const double *x, const uint16_t *numerators, Py_ssize_t dim, double d)
{
    Reciprocal r = reciprocal_of(d);
    for (Py_ssize_t k = 0; k < dim; k++)
        if (quotient((double)half_to_float(numerators[k]), r) != x[k])
            return 0;
    return 1;
}

/* Elements of a row tested before its numerators are built: those at least 1/8 of the largest magnitude. */
#define PROBES 6
/* Ulps either side of the largest element's ratio that a divisor is looked for in. */
#define DIVISOR_STEPS 4

/* Float16 numerators and a divisor that rebuild the float64 row x exactly (see quotient); returns 0 where there are
 * none. Numerators are found up to a power of two: the largest magnitude becomes f 2^5 for the f in 1024..2047
 * that puts the probed elements on the binary16 grid (multiples of 4 from 2^12 up), which is as high as binary16
 * reaches, so no element falls below its range; the divisor is then the one within a few ulps of the largest
 * element's ratio that rebuilds every element. */
ALWAYS_INLINE int quotient_numerators(const double *x, Py_ssize_t dim, uint16_t *numerators, double *divisor)
{
    double top = 0;
    Py_ssize_t at = 0;
    for (Py_ssize_t k = 0; k < dim; k++)
        if (fabs(x[k]) > top)
            top = fabs(x[k]), at = k;
    if (top == 0) {
        for (Py_ssize_t k = 0; k < dim; k++)
            numerators[k] = 0;
        *divisor = 1.0;
        return 1;
    }
    Py_ssize_t probes[PROBES];
    int count = 0;
    for (Py_ssize_t k = 0; k < dim && count < PROBES; k++)
        if (k != at && fabs(x[k]) >= top / 8)
            probes[count++] = k;
    double unit = 32.0 / top;
    for (int f = 1024; f < 2048; f++) {
        double scale = f * unit;
        int on_grid = 1;
        for (int p = 0; p < count && on_grid; p++) {
            double units = fabs(x[probes[p]]) * scale / 4;
            on_grid = fabs(units - nearbyint(units)) <= 1e-6;
        }
        if (!on_grid)
            continue;
        for (Py_ssize_t k = 0; k < dim; k++)
            numerators[k] = half_of(x[k] * scale);
        double below = (double)half_to_float(numerators[at]) / x[at], above = below;
        for (int step = 0; step <= DIVISOR_STEPS; step++) { /* the ratio itself, then an ulp either side, two... */
            if (rebuilds(x, numerators, dim, below)) {
                *divisor = below;
                return 1;
            }
            if (step > 0 && rebuilds(x, numerators, dim, above)) {
                *divisor = above;
                return 1;
            }
            below = nextafter(below, 0.0), above = nextafter(above, INFINITY);
        }
    }
    return 0;
}

/* Float64 dot products of one float64 query with the stored rows `rows[0:count]` of float16, float32 or
 * float64 elements, or quotient rows where row_divisors are given (`row`: dim floats of scratch for the portable
 * float16 path). */
ALWAYS_INLINE void query_dots(const double *q, const void *matrix, int itemsize, const double *row_divisors,
                              Py_ssize_t dim, const int64_t *rows, Py_ssize_t count, float *row, double *out, int path)
{
    if (row_divisors) {
#ifdef X86_64
        if (path == AVX512) {
            dots_from_quotients_avx512(q, matrix, row_divisors, dim, rows, count, out);
            return;
        }
        if (path == AVX2) {
            dots_from_quotients_f16c(q, matrix, row_divisors, dim, rows, count, out);
            return;
        }
#endif
        dots_from_quotients(q, matrix, row_divisors, dim, rows, count, out);
    } else if (itemsize == 8) {
        dots_from_float64(q, matrix, dim, rows, count, out);
    } else if (itemsize == 4) {
        dots_from_float32(q, matrix, dim, rows, count, out);
    } else {
#ifdef X86_64
        if (path == AVX512) {
            dots_from_float16_avx512(q, matrix, dim, rows, count, out);
            return;
        }
        if (path == AVX2) {
            dots_from_float16_f16c(q, matrix, dim, rows, count, out);
            return;
        }
#endif
        static const int64_t first = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            halves_to_floats_portable((const uint16_t *)matrix + rows[i] * dim, row, dim);
            dots_from_float32(q, row, dim, &first, 1, out + i);
        }
    }
}

/* Order keys of floats: unsigned integers that order as the values do (-0 just below +0). */
static inline uint32_t order_key(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

static inline float key_value(uint32_t key)
{
    uint32_t bits = key & 0x80000000u ? key & 0x7fffffffu : ~key;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* Splits keys[0:n] by `least`: those at or above it to the front of keys (in place), the others to the front of
 * below (both with room for 16 more); returns how many are at or above. */
ALWAYS_INLINE Py_ssize_t split_keys_portable(uint32_t *keys, Py_ssize_t n, uint32_t least, uint32_t *below)
{
    Py_ssize_t high = 0, low = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t key = keys[i];
        int up = key >= least;
        keys[high] = key, below[low] = key;
        high += up, low += !up;
    }
    return high;
}

#ifdef X86_64
/* The same with AVX-512, sixteen keys compared and packed at once (the last ones under a mask). */
TARGET(AVX512_FEATURES ",popcnt")
static NOINLINE Py_ssize_t split_keys_avx512(uint32_t *keys, Py_ssize_t n, uint32_t least, uint32_t *below)
{
    __m512i bound = _mm512_set1_epi32((int)least);
    Py_ssize_t high = 0, low = 0;
    for (Py_ssize_t i = 0; i < n; i += 16) {
        __mmask16 inside = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i v = _mm512_maskz_loadu_epi32(inside, keys + i);
        __mmask16 up = _mm512_mask_cmpge_epu32_mask(inside, v, bound), down = inside & (__mmask16)~up;
        _mm512_storeu_si512(keys + high, _mm512_maskz_compress_epi32(up, v)); /* high <= i: nothing unread */
        _mm512_storeu_si512(below + low, _mm512_maskz_compress_epi32(down, v));
        high += _mm_popcnt_u32(up), low += _mm_popcnt_u32(down);
    }
    return high;
}
#endif

/* split_keys_portable, or its AVX-512 build where `path` asks for it. */
ALWAYS_INLINE Py_ssize_t split_keys(uint32_t *keys, Py_ssize_t n, uint32_t least, uint32_t *below, int path)
{
#ifdef X86_64
    if (path == AVX512)
        return split_keys_avx512(keys, n, least, below);
#endif
    return split_keys_portable(keys, n, least, below);
}

/* A lower bound on the k-th largest of the values whose order keys are keys[0:n], exact down to key bit `floor` (0:
 * the k-th largest itself; a higher floor leaves the bits below it 0, so the value may be lower, by less than
 * 2^(floor - 23) of it for floats of one sign); -infinity when there are fewer than k. The key is decided a bit at a
 * time from the top, without the branches a quickselect mispredicts: the leading bits that all keys share are the
 * answer's, and each pass after splits the keys that can still be the answer (those whose bits above the one being
 * decided are the answer's) by the next bit, going on with the half that holds it (the keys above it counted), so
 * the passes shorten fast; once just k keys are left, the least of them is the answer. keys and spare (room for
 * n + 16 each) are overwritten. */
ALWAYS_INLINE float kth_largest_splitting(uint32_t *keys, Py_ssize_t n, int64_t k, int floor, uint32_t *spare,
                                          int path)
{
    if (k < 1 || n < k)
        return -INFINITY;
    uint32_t all = 0xffffffffu, any = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        all &= keys[i], any |= keys[i];
    int bit = 31;
    while (bit >= 0 && !(((all ^ any) >> bit) & 1))
        bit--;
    if (bit < 0)
        return key_value(all); /* every key the same */
    uint32_t found = bit == 31 ? 0 : all & ~((2u << bit) - 1); /* the shared leading bits */
    for (; bit >= floor && n > 0; bit--) {
        if (n == k) { /* what is left is the k largest: the least of them is the answer */
            uint32_t least = 0xffffffffu;
            for (Py_ssize_t i = 0; i < n; i++)
                least = keys[i] < least ? keys[i] : least;
            return key_value(least & ~((1u << floor) - 1));
        }
        uint32_t candidate = found | (1u << bit);
        Py_ssize_t high = split_keys(keys, n, candidate, spare, path);
        if (high >= k) {
            found = candidate, n = high;
        } else { /* the answer lies below: go on with the lower keys, the higher ones counted */
            k -= high, n -= high;
            uint32_t *lower = spare;
            spare = keys, keys = lower;
        }
    }
    return key_value(found);
}

/* kth_largest_splitting of the keys in runs [runs[2 r], runs[2 r + 1]) of keys, r < n_runs, copied to `chosen`.
 * A `hint` (a key near the answer, or 0 for none) splits them first: the answer is then looked for among the keys
 * on its side, most often the few above it, rather than by passes over all of them. */
ALWAYS_INLINE float kth_largest_of_runs(const uint32_t *keys, const int64_t *runs, Py_ssize_t n_runs, int64_t k,
                                        int floor, uint32_t hint, uint32_t *chosen, uint32_t *spare, int path)
{
    Py_ssize_t n = 0;
    for (Py_ssize_t r = 0; r < n_runs; r++) {
        memcpy(chosen + n, keys + runs[2 * r], (size_t)(runs[2 * r + 1] - runs[2 * r]) * sizeof(uint32_t));
        n += runs[2 * r + 1] - runs[2 * r];
    }
    if (hint == 0 || k < 1 || n < k)
        return kth_largest_splitting(chosen, n, k, floor, spare, path);
    Py_ssize_t high = split_keys(chosen, n, hint, spare, path);
    if (high >= k)
        return kth_largest_splitting(chosen, high, k, floor, spare, path);
    return kth_largest_splitting(spare, n - high, k - high, floor, chosen, path);
}

/* maxima[g] = the largest of values[g], values[g + groups], ..., values[g + (width - 1) * groups], and of
 * the left-over values[width * groups:n] (no more than `groups`), which join the first groups. */
ALWAYS_INLINE void strided_maxima(const float *values, Py_ssize_t n, Py_ssize_t width, Py_ssize_t groups,
                                  float *maxima)
{
    memcpy(maxima, values, (size_t)groups * sizeof(float));
    for (Py_ssize_t t = 1; t < width; t++) {
        const float *part = values + t * groups;
        for (Py_ssize_t g = 0; g < groups; g++)
            maxima[g] = part[g] > maxima[g] ? part[g] : maxima[g];
    }
    for (Py_ssize_t j = width * groups; j < n; j++)
        maxima[j - width * groups] = values[j] > maxima[j - width * groups] ? values[j] : maxima[j - width * groups];
}

/* The smallest float at or above x: a float v is at least it exactly when (double)v >= x. */
static inline float float_at_least(double x)
{
    float f = (float)x;
    if ((double)f < x)
        f = nextafterf(f, INFINITY);
    return f;
}

/* The largest float below x (a float v is at most it exactly when (double)v < x), or infinity for x infinite: no
 * bound. */
static inline float float_below(double x)
{
    return x == INFINITY ? INFINITY : nextafterf(float_at_least(x), -INFINITY);
}

/* Whether any of values[0:SCAN] is at least `low`. One build per instruction set, each kept out of line: inlined
 * into the selection, compilers leave these sixteen comparisons scalar. */
#define SCAN 16
#define ANY_AT_LEAST(name)                                                                                    \
    static NOINLINE int name(const float *values, float low)                                                  \
    {                                                                                                         \
        int any = 0;                                                                                          \
        for (int l = 0; l < SCAN; l++)                                                                        \
            any |= values[l] >= low;                                                                          \
        return any;                                                                                           \
    }
ANY_AT_LEAST(any_at_least_portable)
#ifdef X86_64
TARGET(AVX2_FEATURES) ANY_AT_LEAST(any_at_least_avx2)
TARGET(AVX512_FEATURES) ANY_AT_LEAST(any_at_least_avx512)
#endif

ALWAYS_INLINE int any_at_least(const float *values, float low, int path)
{
#ifdef X86_64
    if (path == AVX512)
        return any_at_least_avx512(values, low);
    if (path == AVX2)
        return any_at_least_avx2(values, low);
#endif
    return any_at_least_portable(values, low);
}

/* A neighbour found: its similarity and training sample. */
typedef struct {
    double similarity;
    int64_t sample;
} Found;

/* Whether a comes before b: most similar first; equal similarities, the earlier training sample first. */
static inline int found_before(const Found *a, const Found *b)
{
    return a->similarity > b->similarity || (a->similarity == b->similarity && a->sample < b->sample);
}

static inline void found_swap(Found *f, Py_ssize_t a, Py_ssize_t b)
{
    Found t = f[a];
    f[a] = f[b], f[b] = t;
}

/* Puts the first k of f[0:n] in order at the front (the rest in any order): quicksort on the median of three,
 * skipping the parts wholly at or after position k; runs of 16 or fewer by insertion. */
static void order_first(Found *f, Py_ssize_t n, Py_ssize_t k)
{
    while (n > 16) {
        Py_ssize_t mid = n / 2;
        if (found_before(&f[mid], &f[0]))
            found_swap(f, mid, 0);
        if (found_before(&f[n - 1], &f[0]))
            found_swap(f, n - 1, 0);
        if (found_before(&f[n - 1], &f[mid]))
            found_swap(f, n - 1, mid);
        Found pivot = f[mid]; /* f[0] <= pivot <= f[n - 1]: the scans below stop inside */
        Py_ssize_t i = 0, j = n - 1;
        for (;;) {
            while (found_before(&f[++i], &pivot)) {}
            while (found_before(&pivot, &f[--j])) {}
            if (i >= j)
                break;
            found_swap(f, i, j);
        }
        /* f[0:j+1] <= pivot <= f[j+1:n] */
        if (j + 1 < k)
            order_first(f + j + 1, n - j - 1, k - j - 1);
        n = j + 1; /* the left part, whose order is always needed while k reaches into it */
        if (k > n)
            k = n;
    }
    for (Py_ssize_t i = 1; i < n; i++)
        for (Py_ssize_t j = i; j > 0 && found_before(&f[j], &f[j - 1]); j--)
            found_swap(f, j, j - 1);
}

/* Order keys of doubles, as order_key for floats; -0 counts as +0 (they tie in the similarity order). */
static inline uint64_t order_key64(double value)
{
    uint64_t bits;
    value += 0.0; /* -0 becomes +0 */
    memcpy(&bits, &value, sizeof bits);
    return bits & 0x8000000000000000u ? ~bits : bits | 0x8000000000000000u;
}

/* Samples ordered by rank up to this many (the counting is quadratic), by order_first beyond. */
#define RANKED 256

#ifdef X86_64
/* For each of keys[0:count] (count at most RANKED), how many keys are above it and how many equal it, into
 * counted[2 i] and counted[2 i + 1]: eight keys compared at once with AVX-512. */
TARGET(AVX512_FEATURES ",popcnt")
static NOINLINE void count_ranks_avx512(const uint64_t *keys, Py_ssize_t count, Py_ssize_t *counted)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        __m512i key = _mm512_set1_epi64((long long)keys[i]);
        Py_ssize_t above = 0, equal = 0;
        for (Py_ssize_t j = 0; j < count; j += 8) {
            __mmask8 inside = count - j >= 8 ? 0xff : (__mmask8)((1u << (count - j)) - 1);
            __m512i other = _mm512_maskz_loadu_epi64(inside, keys + j);
            above += _mm_popcnt_u32(_mm512_mask_cmpgt_epu64_mask(inside, other, key));
            equal += _mm_popcnt_u32(_mm512_mask_cmpeq_epu64_mask(inside, other, key));
        }
        counted[2 * i] = above, counted[2 * i + 1] = equal;
    }
}
#endif

/* For each of keys[0:count], how many keys are above it and how many equal it, into counted[2 i] and
 * counted[2 i + 1] (without branches; AVX-512 where `path` asks for it). */
ALWAYS_INLINE void count_ranks(const uint64_t *keys, Py_ssize_t count, Py_ssize_t *counted, int path)
{
#ifdef X86_64
    if (path == AVX512) {
        count_ranks_avx512(keys, count, counted);
        return;
    }
#endif
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t above = 0, equal = 0;
        for (Py_ssize_t j = 0; j < count; j++)
            above += keys[j] > keys[i], equal += keys[j] == keys[i];
        counted[2 * i] = above, counted[2 * i + 1] = equal;
    }
}

/* The first k of count samples (similarity order keys, samples, similarities) by (similarity descending, sample
 * ascending), into index and similarity: each one's rank is how many come before it, counted without branches (a
 * sort mispredicts most of its comparisons); samples of equal similarity, rare, are then counted one by one.
 * Position breaks the ties of repeated samples, so the ranks are a permutation whatever the tables hold. */
ALWAYS_INLINE void first_by_rank(const uint64_t *keys, const int64_t *samples, const double *sims, Py_ssize_t count,
                                 int64_t k, int64_t *index, double *similarity, int path)
{
    Py_ssize_t counted[2 * RANKED];
    count_ranks(keys, count, counted, path);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t above = counted[2 * i], equal = counted[2 * i + 1];
        if (equal > 1)
            for (Py_ssize_t j = 0; j < count; j++)
                above += keys[j] == keys[i] && (samples[j] < samples[i] || (samples[j] == samples[i] && j < i));
        if (above < k)
            index[above] = samples[i], similarity[above] = sims[i];
    }
}

/* The search space as select_neighbours reads it. */
typedef struct {
    Py_ssize_t n, dim, n_blocks, n_categories;
    const int64_t *block_starts, *block_stops, *block_patterns, *ks;
    const int64_t *starts;   /* (categories, n + 1): category c's samples of column j: samples[starts[j]:starts[j+1]] */
    const int64_t *counts;   /* (categories, n) */
    const int64_t *samples;  /* all categories' samples, category c's from sample_offsets[c] */
    const int64_t *sample_offsets;
    const void *matrix;      /* re-ranking rows */
    int itemsize;
    const int64_t *matrix_rows; /* matrix row of each column, or NULL: column j is row j */
    const double *row_divisors; /* with float16 numerators in the matrix: each row's divisor (quotient rows), or NULL */
    const double *divisors;     /* each column's similarity is divided by this, or NULL */
    const int64_t *widths, *groups, *group_offsets; /* per block: the strided groups of the first bound */
    const uint16_t *refine; /* (n, dim) float16 copies of the columns that re-screen the candidates, or NULL */
    const float *refine_scales; /* (n): where refine holds the columns' quotient numerators, what their products are
                                 * multiplied by (the float32 reciprocals of the divisors), or NULL */
    Py_ssize_t tiles;              /* the screen's tiles of 16 columns, when it gave their maxima */
    const int64_t *tile_patterns;  /* (tiles): the categories whose columns hold all of the tile (0 for none) */
    const int64_t *tile_runs;      /* category c's tiles: runs [tile_runs[2 r], tile_runs[2 r + 1]) of consecutive
                                    * tiles, for r from tile_run_offsets[c] to tile_run_offsets[c + 1] */
    const int64_t *tile_run_offsets;
    const int64_t *column_samples; /* (n, record): per column, bit c set where category c has several samples on it,
                                    * then each category's sample there: that one, -1 for none or -2 for several */
    Py_ssize_t record;
    const uint64_t *several_columns; /* bit j set where some category has several samples on column j (the records
                                      * are read for those, and for the candidates whose samples are listed) */
    uint64_t searched;             /* bit c set where category c is searched (K > 0) */
} Space;

/* One block of queries: the screen's values, its tile maxima (or NULL), the queries, their bounds, and where
 * each category's neighbours go. */
typedef struct {
    Py_ssize_t rows;
    const float *values, *tile_maxima;
    const double *queries, *eps, *refine_eps;
    int64_t *index[64];
    double *similarity[64];
} Block;

/* Scratch for one row. */
typedef struct {
    uint32_t *keys;     /* n + most: order keys of the values one selection reads (a candidate's once per sample) */
    uint32_t *spare_keys; /* n + most: the keys a selection leaves aside (kth_largest_splitting) */
    int64_t *columns;   /* n: candidate columns */
    float *values;      /* n: their float32 values */
    uint64_t *pattern;  /* n: the categories of the candidate's block */
    uint64_t *member;   /* n: those it could be a neighbour of */
    uint64_t *several;  /* n: those of its categories with several samples on its column */
    uint64_t *needed;   /* n: bit c set when category c keeps the candidate */
    int64_t *listed;    /* n: candidates (positions) of one step */
    double *sims;       /* n: float64 similarities of the listed candidates */
    double *exact;      /* n: each candidate's float64 similarity, where exact_yet */
    uint8_t *exact_yet; /* n */
    int64_t *pending;   /* n: candidates whose float64 similarity is computed next */
    int64_t *rows;      /* n: columns or re-ranking rows of the listed candidates */
    float *maxima;      /* n: group maxima */
    Found *found;       /* most samples of one category */
    uint64_t *found_keys; /* most: their similarities' order keys */
    int64_t *found_samples; /* most */
    double *found_sims; /* most */
    float *row;         /* dim: a float16 row converted */
    float *refined;     /* n: the candidates' values re-screened from the float16 copies */
    float *q32;         /* dim: the query in float32 */
    int64_t *span_first, *span_last; /* tiles + blocks: the columns of each tile (within a block) to read */
    float *span_low, *span_high; /* tiles + blocks: the bounds its values must lie between */
    int64_t *span_pattern; /* tiles + blocks: its block's categories */
    int64_t *tile_runs, *tile_run_offsets; /* each category's runs of tiles (Space) */
    uint32_t *tile_keys; /* tiles: the order keys of a row's tile maxima */
    uint32_t hints[64]; /* each category's key of the last row's K-th tile maximum, less a sixteenth (0: none) */
    int64_t *column_samples; /* n * record: each column's samples (Space) */
    uint64_t *several_columns; /* n / 64 + 1: the columns with several samples of a category (Space) */
    char *base;         /* the allocation that holds them all */
} Scratch;

/* Key bits below which the first cuts' K-th largest maxima are not decided: a lower bound by less than 2^-11 of it
 * serves as well, and takes fewer passes. */
#define CUT_FLOOR 12

/* Step 1: each category's cut, the K-th largest maximum of its groups of columns (a lower bound on it: see
 * CUT_FLOOR) minus 2 eps (K groups hold K distinct vectors, so K samples, at or above that maximum). The groups are
 * the screen's tiles of 16 columns that lie within the category's columns, when the screen gave their maxima; else
 * strided groups within each block. */
ALWAYS_INLINE void first_cuts(const Space *sp, const float *values, const float *tile_maxima, double eps, Scratch *w,
                              float *top, double *cut, int path)
{
    if (tile_maxima)
        for (Py_ssize_t t = 0; t < sp->tiles; t++)
            w->tile_keys[t] = order_key(tile_maxima[t]);
    else
        for (Py_ssize_t b = 0; b < sp->n_blocks; b++)
            strided_maxima(values + sp->block_starts[b], sp->block_stops[b] - sp->block_starts[b], sp->widths[b],
                           sp->groups[b], w->maxima + sp->group_offsets[b]);
    for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
        int64_t k = sp->ks[c];
        top[c] = INFINITY, cut[c] = INFINITY;
        if (k == 0)
            continue;
        if (tile_maxima) {
            top[c] = kth_largest_of_runs(w->tile_keys, sp->tile_runs + 2 * sp->tile_run_offsets[c],
                                         sp->tile_run_offsets[c + 1] - sp->tile_run_offsets[c], k, CUT_FLOOR,
                                         w->hints[c], w->keys, w->spare_keys, path);
            w->hints[c] = isfinite(top[c]) ? order_key(top[c] - fabsf(top[c]) / 16) : 0;
        } else {
            Py_ssize_t chunks = 0;
            for (Py_ssize_t b = 0; b < sp->n_blocks; b++)
                if ((sp->block_patterns[b] >> c) & 1) {
                    Py_ssize_t size = sp->group_offsets[b + 1] - sp->group_offsets[b];
                    for (Py_ssize_t g = 0; g < size; g++)
                        w->keys[chunks++] = order_key(w->maxima[sp->group_offsets[b] + g]);
                }
            top[c] = kth_largest_splitting(w->keys, chunks, k, CUT_FLOOR, w->spare_keys, path);
        }
        cut[c] = (double)top[c] - 2 * eps;
    }
}

/* The lowest of bound[c] over block b's categories (infinity when none of them is searched), without branches. */
ALWAYS_INLINE float block_bound(const Space *sp, Py_ssize_t b, const float *bound)
{
    float low = INFINITY;
    for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
        float v = (sp->block_patterns[b] >> c) & 1 ? bound[c] : INFINITY;
        low = v < low ? v : low;
    }
    return low;
}

/* Appends (column, value, pattern) for each column j in [first, last) with low <= values[j] <= high (without
 * branches); returns the new count. */
ALWAYS_INLINE Py_ssize_t append_between(const float *values, Py_ssize_t first, Py_ssize_t last, float low, float high,
                                        int64_t pattern, Scratch *w, Py_ssize_t kept)
{
    for (Py_ssize_t j = first; j < last; j++) {
        w->columns[kept] = j, w->values[kept] = values[j], w->pattern[kept] = (uint64_t)pattern;
        kept += (values[j] >= low) & (values[j] <= high);
    }
    return kept;
}

#ifdef X86_64
/* append_between over one tile's columns [first, last) (at most 16) with AVX-512: compared at once, the ones kept
 * packed together and stored whole (w's arrays hold 16 values to spare past n). */
TARGET(AVX512_FEATURES)
static NOINLINE Py_ssize_t append_tile_avx512(const float *values, Py_ssize_t first, Py_ssize_t last, float low,
                                              float high, int64_t pattern, Scratch *w, Py_ssize_t kept)
{
    __mmask16 inside = (__mmask16)((1u << (last - first)) - 1);
    __m512 v = _mm512_maskz_loadu_ps(inside, values + first);
    __mmask16 keep = _mm512_mask_cmp_ps_mask(inside, v, _mm512_set1_ps(low), _CMP_GE_OQ);
    keep = _mm512_mask_cmp_ps_mask(keep, v, _mm512_set1_ps(high), _CMP_LE_OQ);
    __m512i low_columns = _mm512_add_epi64(_mm512_set1_epi64(first), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
    __m512i high_columns = _mm512_add_epi64(low_columns, _mm512_set1_epi64(8));
    int low_count = 0, count = 0;
    for (int l = 0; l < 16; l++)
        low_count += l < 8 && ((keep >> l) & 1), count += (keep >> l) & 1;
    _mm512_storeu_ps(w->values + kept, _mm512_maskz_compress_ps(keep, v));
    _mm512_storeu_si512(w->columns + kept, _mm512_maskz_compress_epi64((__mmask8)keep, low_columns));
    _mm512_storeu_si512(w->columns + kept + low_count,
                        _mm512_maskz_compress_epi64((__mmask8)(keep >> 8), high_columns));
    _mm512_storeu_si512(w->pattern + kept, _mm512_set1_epi64(pattern));
    _mm512_storeu_si512(w->pattern + kept + 8, _mm512_set1_epi64(pattern));
    return kept + count;
}
#endif

/* Columns per tile of the AMX screen, whose row maxima it gives. */
#define TILE 16

#ifdef X86_64
/* Lists the tiles t of columns [start, stop) whose maximum is at least `low` as spans (their columns within the
 * range, with the bounds and pattern), asking for their values: sixteen tiles compared at once with AVX-512.
 * Returns the new number of spans. */
TARGET(AVX512_FEATURES ",bmi")
static NOINLINE Py_ssize_t list_spans_avx512(const float *values, const float *tile_maxima, Py_ssize_t start,
                                             Py_ssize_t stop, float low, float high, int64_t pattern, Scratch *w,
                                             Py_ssize_t spans)
{
    Py_ssize_t last_tile = (stop - 1) / TILE;
    for (Py_ssize_t base = start / TILE; base <= last_tile; base += 16) {
        Py_ssize_t count = last_tile - base + 1;
        __mmask16 inside = count >= 16 ? 0xffff : (__mmask16)((1u << count) - 1);
        unsigned passed = _mm512_mask_cmp_ps_mask(inside, _mm512_maskz_loadu_ps(inside, tile_maxima + base),
                                                  _mm512_set1_ps(low), _CMP_GE_OQ);
        for (; passed; passed &= passed - 1) {
            Py_ssize_t t = base + (Py_ssize_t)_tzcnt_u32(passed);
            Py_ssize_t first = t * TILE > start ? t * TILE : start;
            Py_ssize_t last = (t + 1) * TILE < stop ? (t + 1) * TILE : stop;
            PREFETCH(values + first);
            PREFETCH(values + last - 1);
            w->span_first[spans] = first, w->span_last[spans] = last, w->span_low[spans] = low;
            w->span_high[spans] = high, w->span_pattern[spans++] = pattern;
        }
    }
    return spans;
}
#endif

/* Step 2: appends to the candidates from position `kept` every value at or above the lowest bound low[c] of its
 * block's categories and below the lowest below[c] (those at or above it were taken before; infinite: no bound),
 * with its block's pattern; returns the new count. Through the screen's tiles of TILE columns, when it gave their
 * maxima: a tile whose maximum is below the block's low is passed over unread, and the tiles to read, scattered
 * over a row that is no longer in cache, are listed and asked for first, so that their loads overlap instead of
 * waiting one after another. Else runs of SCAN values all below low are skipped at once. */
ALWAYS_INLINE Py_ssize_t collect(const Space *sp, const float *values, const float *tile_maxima, const double *low,
                                 const double *below, Scratch *w, Py_ssize_t kept, int path)
{
    Py_ssize_t spans = 0;
    float lows[64], highs[64]; /* the bounds as floats, once: both roundings keep order, so a block's are the least */
    for (Py_ssize_t c = 0; c < sp->n_categories; c++)
        lows[c] = float_at_least(low[c]), highs[c] = float_below(below[c]);
    for (Py_ssize_t b = 0; b < sp->n_blocks; b++) {
        float low32 = block_bound(sp, b, lows), high32 = block_bound(sp, b, highs);
        if (low32 == INFINITY || low32 > high32)
            continue;
        Py_ssize_t start = sp->block_starts[b], stop = sp->block_stops[b];
        if (!tile_maxima) {
            Py_ssize_t j = start;
            for (; j + SCAN <= stop; j += SCAN)
                if (any_at_least(values + j, low32, path))
                    kept = append_between(values, j, j + SCAN, low32, high32, sp->block_patterns[b], w, kept);
            kept = append_between(values, j, stop, low32, high32, sp->block_patterns[b], w, kept);
            continue;
        }
#ifdef X86_64
        if (path == AVX512) {
            spans = list_spans_avx512(values, tile_maxima, start, stop, low32, high32, sp->block_patterns[b], w, spans);
            continue;
        }
#endif
        for (Py_ssize_t t = start / TILE; t * TILE < stop; t++)
            if (tile_maxima[t] >= low32) {
                Py_ssize_t first = t * TILE > start ? t * TILE : start;
                Py_ssize_t last = (t + 1) * TILE < stop ? (t + 1) * TILE : stop;
                PREFETCH(values + first);
                PREFETCH(values + last - 1);
                w->span_first[spans] = first, w->span_last[spans] = last, w->span_low[spans] = low32;
                w->span_high[spans] = high32, w->span_pattern[spans++] = sp->block_patterns[b];
            }
    }
#ifdef X86_64
    if (path == AVX512) {
        for (Py_ssize_t s = 0; s < spans; s++)
            kept = append_tile_avx512(values, w->span_first[s], w->span_last[s], w->span_low[s], w->span_high[s],
                                      w->span_pattern[s], w, kept);
        return kept;
    }
#endif
    for (Py_ssize_t s = 0; s < spans; s++)
        kept = append_between(values, w->span_first[s], w->span_last[s], w->span_low[s], w->span_high[s],
                              w->span_pattern[s], w, kept);
    return kept;
}

/* The k-th largest of ranked[i] over the candidates of category c (bit c of member[i]), each counted once per
 * sample of category c. */
ALWAYS_INLINE float kth_of_category(const Space *sp, Scratch *w, const float *ranked, Py_ssize_t kept, Py_ssize_t c,
                                    int path)
{
    const int64_t *counts = sp->counts + c * sp->n;
    Py_ssize_t mine = 0;
    for (Py_ssize_t i = 0; i < kept; i++) { /* without branches but for columns with several samples */
        uint32_t key = order_key(ranked[i]);
        uint64_t in = (w->member[i] >> c) & 1;
        w->keys[mine] = key;
        mine += (Py_ssize_t)in;
        if ((w->several[i] >> c) & in)
            for (int64_t s = 1; s < counts[w->columns[i]]; s++)
                w->keys[mine++] = key;
    }
    return kth_largest_splitting(w->keys, mine, sp->ks[c], 0, w->spare_keys, path);
}

/* The categories of `pattern` (a candidate's block) whose bound its value reaches: bit c set where bit c of
 * pattern is and value >= bound[c]. */
ALWAYS_INLINE uint64_t reached(const Space *sp, uint64_t pattern, float value, const double *bound)
{
    uint64_t bits = 0;
    for (Py_ssize_t c = 0; c < sp->n_categories; c++)
        bits |= ((pattern >> c) & (uint64_t)((double)value >= bound[c])) << c;
    return bits;
}

/* Each candidate from `first` on: the categories of its block (searched ones) whose bound it reaches, and of those,
 * the ones with several samples on its column. */
ALWAYS_INLINE void categorise(const Space *sp, Scratch *w, Py_ssize_t first, Py_ssize_t kept, const double *bound)
{
    for (Py_ssize_t i = first; i < kept; i++) {
        w->member[i] = reached(sp, w->pattern[i], w->values[i], bound) & sp->searched;
        int64_t column = w->columns[i];
        w->several[i] = (sp->several_columns[column >> 6] >> (column & 63)) & 1
                            ? (uint64_t)sp->column_samples[column * sp->record] & w->member[i]
                            : 0;
    }
}

/* The largest float at or below x. */
static inline float float_at_most(double x)
{
    float f = (float)x;
    if ((double)f > x)
        f = nextafterf(f, -INFINITY);
    return f;
}

/* Float64 similarities of candidates [first, kept) into w->exact (divided by their columns' divisors). */
ALWAYS_INLINE void exact_similarities(const Space *sp, const double *q, Scratch *w, Py_ssize_t first, Py_ssize_t kept,
                                      int path)
{
    for (Py_ssize_t i = first; i < kept; i++)
        w->rows[i - first] = sp->matrix_rows ? sp->matrix_rows[w->columns[i]] : w->columns[i];
    query_dots(q, sp->matrix, sp->itemsize, sp->row_divisors, sp->dim, w->rows, kept - first, w->row,
               w->exact + first, path);
    for (Py_ssize_t i = first; i < kept; i++) {
        if (sp->divisors)
            w->exact[i] /= sp->divisors[w->columns[i]];
        w->exact_yet[i] = 1;
    }
}

/* Steps 2 and 3 with float16 copies of the columns: the candidates, and each category's keeps; returns the number
 * of candidates. Each category's candidates at or above its K-th group maximum (`top`) come first and get float64
 * similarities at once (most of them are neighbours); their K-th, L, less eps, shows which others could still be
 * neighbours: those are taken next and re-screened from the float16 copies, and kept where their re-screened value
 * reaches L minus refine_eps.
 *
 * Why no neighbour is lost: L is at most the K-th largest similarity S (K samples have similarity L or more). A
 * column left out has screen value v < L - eps, so similarity s < L <= S; a candidate re-screened and not kept has
 * f < L - refine_eps, so s < L. The first candidates hold K samples of the category: K of its groups have a
 * maximum at or above top, each through one of its columns. */
ALWAYS_INLINE Py_ssize_t refine_and_keep(const Space *sp, const float *values, const float *tile_maxima,
                                         const double *q, const float *top, double eps, double refine_eps, Scratch *w,
                                         int path)
{
    double best[64], reach[64], least[64], none[64], low[64];
    for (Py_ssize_t c = 0; c < sp->n_categories; c++)
        best[c] = top[c], none[c] = INFINITY;
    Py_ssize_t first = collect(sp, values, tile_maxima, best, none, w, 0, path);
    categorise(sp, w, 0, first, best);
    for (Py_ssize_t i = 0; i < first; i++) /* most are neighbours: their samples are read after the products */
        PREFETCH(sp->column_samples + w->columns[i] * sp->record);
    exact_similarities(sp, q, w, 0, first, path);
    for (Py_ssize_t i = 0; i < first; i++)
        w->refined[i] = float_at_most(w->exact[i]);
    for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
        low[c] = sp->ks[c] ? (double)kth_of_category(sp, w, w->refined, first, c, path) : INFINITY;
        reach[c] = low[c] - eps;
        least[c] = reach[c] < best[c] ? reach[c] : best[c];
    }
    Py_ssize_t kept = collect(sp, values, tile_maxima, reach, best, w, first, path);
    for (Py_ssize_t i = first; i < kept; i++)
        w->exact_yet[i] = 0;
    for (Py_ssize_t k = 0; k < sp->dim; k++)
        w->q32[k] = (float)q[k];
    float16_dots(w->q32, sp->refine, sp->dim, w->columns + first, kept - first, w->refined + first, path);
    if (sp->refine_scales) /* the columns' quotient numerators: their products over the divisors */
        for (Py_ssize_t i = first; i < kept; i++)
            w->refined[i] *= sp->refine_scales[w->columns[i]];
    categorise(sp, w, 0, kept, least); /* the categories each candidate could be a neighbour of */
    for (Py_ssize_t c = 0; c < sp->n_categories; c++)
        low[c] -= refine_eps;
    for (Py_ssize_t i = 0; i < kept; i++)
        w->needed[i] = i < first ? w->member[i] : reached(sp, w->member[i], w->refined[i], low);
    return kept;
}

/* Steps 2 and 3 from the screen values alone: the candidates, every value at or above its category's cut; a
 * candidate of category c is kept when its value reaches the category's K-th screen value (over its candidates)
 * minus 2 eps. Returns the number of candidates. */
ALWAYS_INLINE Py_ssize_t keep_screened(const Space *sp, const float *values, const float *tile_maxima,
                                       const double *cut, double eps, Scratch *w, int path)
{
    double tight[64], none[64];
    for (Py_ssize_t c = 0; c < sp->n_categories; c++)
        none[c] = INFINITY;
    Py_ssize_t kept = collect(sp, values, tile_maxima, cut, none, w, 0, path);
    categorise(sp, w, 0, kept, cut);
    for (Py_ssize_t i = 0; i < kept; i++)
        w->exact_yet[i] = 0;
    for (Py_ssize_t c = 0; c < sp->n_categories; c++)
        tight[c] = sp->ks[c] ? (double)kth_of_category(sp, w, w->values, kept, c, path) - 2 * eps : INFINITY;
    for (Py_ssize_t i = 0; i < kept; i++)
        w->needed[i] = reached(sp, w->member[i], w->values[i], tight);
    return kept;
}

/* One query: each category's K nearest samples into index[c] and similarity[c] (row `r`). Returns -1, or the
 * first category for which fewer than K samples passed the cut (values that are not a screen's: a NaN, or tile
 * maxima above the values). */
ALWAYS_INLINE Py_ssize_t select_row(const Space *sp, const float *values, const float *tile_maxima, const double *q,
                                    double eps, double refine_eps, Scratch *w, int64_t *const *index,
                                    double *const *similarity, Py_ssize_t r, int path)
{
    float top[64];
    double cut[64];
    /* 1. each category's K-th group maximum, and its cut */
    first_cuts(sp, values, tile_maxima, eps, w, top, cut, path);
    /* 2, 3. the candidates, and each category's that could be among its neighbours (by the re-screened values
     *       and their bound, where the columns have float16 copies) */
    Py_ssize_t kept = sp->refine ? refine_and_keep(sp, values, tile_maxima, q, top, eps, refine_eps, w, path)
                                 : keep_screened(sp, values, tile_maxima, cut, eps, w, path);
    /* 4. float64 similarities of the candidates any category keeps (those that have none yet) */
    Py_ssize_t needed = 0, missing = 0;
    for (Py_ssize_t i = 0; i < kept; i++) {
        w->listed[needed] = i;
        needed += w->needed[i] != 0;
    }
    for (Py_ssize_t m = 0; m < needed; m++) {
        Py_ssize_t i = w->listed[m];
        w->pending[missing] = i;
        missing += !w->exact_yet[i];
    }
    for (Py_ssize_t m = 0; m < missing; m++) {
        Py_ssize_t i = w->pending[m];
        w->rows[m] = sp->matrix_rows ? sp->matrix_rows[w->columns[i]] : w->columns[i];
    }
    query_dots(q, sp->matrix, sp->itemsize, sp->row_divisors, sp->dim, w->rows, missing, w->row, w->sims, path);
    for (Py_ssize_t m = 0; m < missing; m++) {
        Py_ssize_t i = w->pending[m];
        w->exact[i] = sp->divisors ? w->sims[m] / sp->divisors[w->columns[i]] : w->sims[m];
    }
    for (Py_ssize_t m = 0; m < needed; m++)
        w->sims[m] = w->exact[w->listed[m]];
    /* 5. each category's first K samples by (similarity descending, sample ascending) */
    for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
        int64_t k = sp->ks[c];
        if (k == 0)
            continue;
        const int64_t *starts = sp->starts + c * (sp->n + 1), *samples = sp->samples + sp->sample_offsets[c];
        Py_ssize_t mine = 0, count = 0;
        for (Py_ssize_t m = 0; m < needed; m++) {
            w->rows[mine] = m;
            mine += (w->needed[w->listed[m]] >> c) & 1;
        }
        for (Py_ssize_t e = 0; e < mine; e++) {
            Py_ssize_t m = w->rows[e];
            int64_t column = w->columns[w->listed[m]];
            uint64_t key = order_key64(w->sims[m]);
            int64_t one = sp->column_samples[column * sp->record + 1 + c];
            if (one >= 0) { /* the column's one sample of the category (most columns) */
                w->found_keys[count] = key, w->found_sims[count] = w->sims[m];
                w->found_samples[count++] = one;
                continue;
            }
            for (int64_t s = starts[column]; s < starts[column + 1]; s++) {
                w->found_keys[count] = key, w->found_sims[count] = w->sims[m];
                w->found_samples[count++] = samples[s];
            }
        }
        if (count < k)
            return c;
        if (count <= RANKED) {
            first_by_rank(w->found_keys, w->found_samples, w->found_sims, count, k, index[c] + r * k,
                          similarity[c] + r * k, path);
            continue;
        }
        for (Py_ssize_t j = 0; j < count; j++)
            w->found[j].similarity = w->found_sims[j], w->found[j].sample = w->found_samples[j];
        order_first(w->found, count, k);
        for (int64_t j = 0; j < k; j++) {
            index[c][r * k + j] = w->found[j].sample;
            similarity[c][r * k + j] = w->found[j].similarity;
        }
    }
    return -1;
}

/* The queries of a block in turn; returns -1, or the first row whose selection failed (its category in *failed). */
ALWAYS_INLINE Py_ssize_t select_block(const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed, int path)
{
    for (Py_ssize_t r = 0; r < block->rows; r++) {
        Py_ssize_t category = select_row(
            sp, block->values + r * sp->n, block->tile_maxima ? block->tile_maxima + r * sp->tiles : NULL,
            block->queries + r * sp->dim, block->eps[r], block->refine_eps ? block->refine_eps[r] : 0.0, w,
            block->index, block->similarity, r, path);
        if (category >= 0) {
            *failed = category;
            return r;
        }
    }
    return -1;
}

/* Sums of squares of rows of `itemsize` bytes (`row`: dim floats of scratch for float16 rows). */
ALWAYS_INLINE void squares_of_rows(const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out,
                                   float *row, int path)
{
    if (itemsize == 2)
        squares_of_float16(stored, n, dim, out, row, path);
    else if (itemsize == 4)
        squares_of_float32(stored, n, dim, out);
    else
        squares_of_float64(stored, n, dim, out);
}

/* out[i] = float16 row rows[i] of `stored` as float64 over its norm: norms[i] where that is a number, else the
 * row's float64 norm (the square root of its sum of squares, summed as sums_of_squares sums them), written there;
 * a zero norm divides by 1, so zero rows stay zero. The unit rows of percept.model.unit_rows, a row in one pass
 * (`row`: dim floats of scratch). With `quotients`, the rows are quotient rows over the divisors norms[i], each
 * element rebuilt as `quotient` rebuilds it (as the selection reads them). */
ALWAYS_INLINE void unit_rows_of_float16(const uint16_t *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n,
                                        double *norms, double *out, float *row, int quotients, int path)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        halves_to_floats(stored + rows[i] * dim, row, dim, path);
        if (quotients) {
            Reciprocal r = reciprocal_of(norms[i]);
            for (Py_ssize_t k = 0; k < dim; k++)
                out[i * dim + k] = quotient((double)row[k], r);
            continue;
        }
        if (isnan(norms[i])) {
            double sum;
            squares_of_float32(row, 1, dim, &sum);
            norms[i] = sqrt(sum);
        }
        double divisor = norms[i] == 0 ? 1.0 : norms[i], *unit = out + i * dim;
        for (Py_ssize_t k = 0; k < dim; k++)
            unit[k] = (double)row[k] / divisor;
    }
}

/* quotient_numerators for rows `rows` of x, into rows of `numerators` and `divisors` in turn; returns -1, or the
 * first position whose row has none. */
ALWAYS_INLINE Py_ssize_t find_quotient_rows(const double *x, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n,
                                            uint16_t *numerators, double *divisors)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (!quotient_numerators(x + rows[i] * dim, dim, numerators + i * dim, divisors + i))
            return i;
    return -1;
}

/* Whether every one of x[0:n] is finite: none has all its exponent bits set, looked for without branches (an
 * integer loop the vector builds run eight or four at a time). */
ALWAYS_INLINE int all_finite(const double *x, Py_ssize_t n)
{
    uint64_t infinite = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, x + i, sizeof bits);
        infinite |= (uint64_t)((bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    }
    return !infinite;
}

/* Each build of the loops: the bodies above inlined into one function per instruction set. */
static Py_ssize_t select_block_portable(const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed)
{
    return select_block(sp, block, w, failed, PORTABLE);
}

static Py_ssize_t find_quotient_rows_portable(const double *x, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n,
                                              uint16_t *numerators, double *divisors)
{
    return find_quotient_rows(x, dim, rows, n, numerators, divisors);
}

static int all_finite_portable(const double *x, Py_ssize_t n)
{
    return all_finite(x, n);
}

static void squares_portable(const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out,
                             float *row)
{
    squares_of_rows(stored, itemsize, n, dim, out, row, PORTABLE);
}

static void unit_rows_portable(const uint16_t *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n,
                               double *norms, double *out, float *row, int quotients)
{
    unit_rows_of_float16(stored, dim, rows, n, norms, out, row, quotients, PORTABLE);
}

#ifdef X86_64
TARGET(AVX2_FEATURES)
static Py_ssize_t select_block_avx2(const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed)
{
    return select_block(sp, block, w, failed, AVX2);
}

TARGET(AVX2_FEATURES)
static Py_ssize_t find_quotient_rows_avx2(const double *x, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n,
                                          uint16_t *numerators, double *divisors)
{
    return find_quotient_rows(x, dim, rows, n, numerators, divisors);
}

TARGET(AVX2_FEATURES)
static int all_finite_avx2(const double *x, Py_ssize_t n)
{
    return all_finite(x, n);
}

TARGET(AVX2_FEATURES)
static void squares_avx2(const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out, float *row)
{
    squares_of_rows(stored, itemsize, n, dim, out, row, AVX2);
}

TARGET(AVX2_FEATURES)
static void unit_rows_avx2(const uint16_t *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n, double *norms,
                           double *out, float *row, int quotients)
{
    unit_rows_of_float16(stored, dim, rows, n, norms, out, row, quotients, AVX2);
}

TARGET(AVX512_FEATURES)
static Py_ssize_t select_block_avx512(const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed)
{
    return select_block(sp, block, w, failed, AVX512);
}

TARGET(AVX512_FEATURES)
static Py_ssize_t find_quotient_rows_avx512(const double *x, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n,
                                            uint16_t *numerators, double *divisors)
{
    return find_quotient_rows(x, dim, rows, n, numerators, divisors);
}

TARGET(AVX512_FEATURES)
static int all_finite_avx512(const double *x, Py_ssize_t n)
{
    return all_finite(x, n);
}

TARGET(AVX512_FEATURES)
static void squares_avx512(const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out,
                           float *row)
{
    squares_of_rows(stored, itemsize, n, dim, out, row, AVX512);
}

TARGET(AVX512_FEATURES)
static void unit_rows_avx512(const uint16_t *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n,
                             double *norms, double *out, float *row, int quotients)
{
    unit_rows_of_float16(stored, dim, rows, n, norms, out, row, quotients, AVX512);
}
#endif

/* The build of `name` that `path` names (name_avx512, name_avx2 or name_portable, above), called with the rest. */
#ifdef X86_64
#define ON_BUILD(path, name, ...)                                                                              \
    ((path) == AVX512 ? name##_avx512(__VA_ARGS__)                                                             \
                      : (path) == AVX2 ? name##_avx2(__VA_ARGS__) : name##_portable(__VA_ARGS__))
#else
#define ON_BUILD(path, name, ...) ((void)(path), name##_portable(__VA_ARGS__))
#endif


/* Whether values[0:n] all lie in 0..limit-1 (else an IndexError, or ValueError for a table, naming them). */
static int indices_in_range(const int64_t *values, Py_ssize_t n, Py_ssize_t limit, const char *name, PyObject *error)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (values[i] < 0 || values[i] >= limit) {
            PyErr_Format(error, "%s[%zd] = %lld is outside 0..%zd", name, i, (long long)values[i], limit - 1);
            return 0;
        }
    }
    return 1;
}

static const ArraySpec GATHER_ARGUMENTS[3] = {{"stored", "ef", 2, 0}, {"rows", "lq", 1, 0}, {"out", "f", 2, 1}};

static PyObject *gather_float32(PyObject *self, PyObject *args)
{
    Py_buffer views[3];
    if (!take_arrays(args, "gather_float32", 3, GATHER_ARGUMENTS, views))
        return NULL;
    Py_buffer *stored = &views[0], *rows = &views[1], *out = &views[2];
    PyObject *result = NULL;
    Py_ssize_t dim = stored->shape[1], n = rows->shape[0];
    if (out->shape[0] != n || out->shape[1] != dim) {
        PyErr_Format(PyExc_ValueError, "out has shape (%zd, %zd), not (%zd, %zd)", out->shape[0], out->shape[1], n,
                     dim);
        goto done;
    }
    if (!indices_in_range(rows->buf, n, stored->shape[0], "rows", PyExc_IndexError))
        goto done;
    int from_half = stored->itemsize == 2, path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    if (from_half)
        gather_from_float16(stored->buf, dim, rows->buf, n, out->buf, path);
    else
        gather_from_float32(stored->buf, dim, rows->buf, n, out->buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_arrays(views, 3);
    return result;
}

static const ArraySpec UNIT_ARGUMENTS[4] = {{"stored", "e", 2, 0}, {"rows", "lq", 1, 0}, {"norms", "d", 1, 1},
                                            {"out", "d", 2, 1}};

/* unit_rows, or with `quotients` quotient_vectors: the same arguments, the rows over their norms or divisors. */
static PyObject *rows_over(PyObject *args, const char *name, int quotients)
{
    Py_buffer views[4];
    if (!take_arrays(args, name, 4, UNIT_ARGUMENTS, views))
        return NULL;
    Py_buffer *stored = &views[0], *rows = &views[1], *norms = &views[2], *out = &views[3];
    PyObject *result = NULL;
    float *row = NULL;
    Py_ssize_t dim = stored->shape[1], n = rows->shape[0];
    if (norms->shape[0] != n || out->shape[0] != n || out->shape[1] != dim) {
        PyErr_Format(PyExc_ValueError, "%s: %zd rows of %zd dimensions need %zd %s and out of that shape", name, n,
                     dim, n, quotients ? "divisors" : "norms");
        goto done;
    }
    if (!indices_in_range(rows->buf, n, stored->shape[0], "rows", PyExc_IndexError))
        goto done;
    if (!(row = malloc((size_t)(dim > 0 ? dim : 1) * sizeof(float)))) {
        PyErr_NoMemory();
        goto done;
    }
    int path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    ON_BUILD(path, unit_rows, stored->buf, dim, rows->buf, n, norms->buf, out->buf, row, quotients);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
    free(row);
done:
    release_arrays(views, 4);
    return result;
}

static PyObject *unit_rows(PyObject *self, PyObject *args)
{
    return rows_over(args, "unit_rows", 0);
}

static PyObject *quotient_vectors(PyObject *self, PyObject *args)
{
    return rows_over(args, "quotient_vectors", 1);
}

static const ArraySpec SQUARES_ARGUMENTS[2] = {{"stored", "efd", 2, 0}, {"out", "d", 1, 1}};

static PyObject *sums_of_squares(PyObject *self, PyObject *args)
{
    Py_buffer views[2];
    if (!take_arrays(args, "sums_of_squares", 2, SQUARES_ARGUMENTS, views))
        return NULL;
    Py_buffer *stored = &views[0], *out = &views[1];
    PyObject *result = NULL;
    float *row = NULL;
    Py_ssize_t n = stored->shape[0], dim = stored->shape[1], itemsize = stored->itemsize;
    if (out->shape[0] != n) {
        PyErr_Format(PyExc_ValueError, "out holds %zd values for %zd rows", out->shape[0], n);
        goto done;
    }
    if (!(row = malloc((size_t)(dim > 0 ? dim : 1) * sizeof(float)))) {
        PyErr_NoMemory();
        goto done;
    }
    int path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    ON_BUILD(path, squares, stored->buf, itemsize, n, dim, out->buf, row);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
    free(row);
done:
    release_arrays(views, 2);
    return result;
}

/* The keyword arguments of select_neighbours: name, formats, dimensions, written, may be left out (or None). The
 * outputs index and similarity are tuples of one array per category. */
typedef struct {
    const char *name, *formats;
    int dims, writable, optional;
} Argument;

enum {
    VALUES, QUERIES, EPS, MATRIX, MATRIX_ROWS, DIVISORS, BLOCK_STARTS, BLOCK_STOPS, BLOCK_PATTERNS, WIDTHS, GROUPS,
    GROUP_OFFSETS, KS, STARTS, COUNTS, SAMPLES, SAMPLE_OFFSETS, INDEX, SIMILARITY, REFINE, REFINE_EPS, TILE_MAXIMA,
    TILE_PATTERNS, ROW_DIVISORS, REFINE_SCALES, ARGUMENTS
};

static const Argument SELECT_ARGUMENTS[ARGUMENTS] = {
    {"values", "f", 2, 0, 0},        {"queries", "d", 2, 0, 0},       {"eps", "d", 1, 0, 0},
    {"matrix", "efd", 2, 0, 0},      {"matrix_rows", "lq", 1, 0, 1},  {"divisors", "d", 1, 0, 1},
    {"block_starts", "lq", 1, 0, 0}, {"block_stops", "lq", 1, 0, 0},  {"block_patterns", "lq", 1, 0, 0},
    {"widths", "lq", 1, 0, 0},       {"groups", "lq", 1, 0, 0},       {"group_offsets", "lq", 1, 0, 0},
    {"ks", "lq", 1, 0, 0},           {"starts", "lq", 2, 0, 0},       {"counts", "lq", 2, 0, 0},
    {"samples", "lq", 1, 0, 0},      {"sample_offsets", "lq", 1, 0, 0}, {"index", "lq", 2, 1, 0},
    {"similarity", "d", 2, 1, 0},    {"refine", "e", 2, 0, 1},        {"refine_eps", "d", 1, 0, 1},
    {"tile_maxima", "f", 2, 0, 1},   {"tile_patterns", "lq", 1, 0, 1}, {"row_divisors", "d", 1, 0, 1},
    {"refine_scales", "f", 1, 0, 1},
};

/* The arguments by position in SELECT_ARGUMENTS (NULL where left out or None). */
static int parse_keywords(PyObject *args, PyObject *kwargs, PyObject **given)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "select_neighbours() takes keyword arguments only");
        return 0;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (kwargs && PyDict_Next(kwargs, &position, &key, &value)) {
        const char *name = PyUnicode_AsUTF8(key);
        if (!name)
            return 0;
        int a = 0;
        while (a < ARGUMENTS && strcmp(name, SELECT_ARGUMENTS[a].name) != 0)
            a++;
        if (a == ARGUMENTS) {
            PyErr_Format(PyExc_TypeError, "select_neighbours() got an unexpected keyword argument '%s'", name);
            return 0;
        }
        given[a] = value == Py_None ? NULL : value;
    }
    for (int a = 0; a < ARGUMENTS; a++)
        if (!given[a] && !SELECT_ARGUMENTS[a].optional) {
            PyErr_Format(PyExc_TypeError, "select_neighbours() missing required argument '%s'",
                         SELECT_ARGUMENTS[a].name);
            return 0;
        }
    return 1;
}

/* Buffers taken from arguments, released together. */
typedef struct {
    Py_buffer views[2 * 64 + ARGUMENTS];
    int taken;
} Views;

static Py_buffer *take(Views *v, PyObject *object, int writable, int dims, const char *formats, const char *name)
{
    Py_buffer *slot = &v->views[v->taken];
    if (get_array(object, slot, writable, dims, formats, name) < 0)
        return NULL;
    v->taken++;
    return slot;
}

static void release_views(Views *v)
{
    while (v->taken > 0)
        PyBuffer_Release(&v->views[--v->taken]);
}

static int refuse(const char *message)
{
    PyErr_Format(PyExc_ValueError, "select_neighbours: %s", message);
    return 0;
}

#define LENGTH(view) ((view)->shape[0])
#define INTS(view) ((const int64_t *)(view)->buf)

/* Whether the tables describe one search space that select_row can read without leaving its arrays, and every
 * category can give K samples: every check before the work starts (a ValueError naming the first that fails). */
static int check_space(Py_buffer **a, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t dim)
{
    Py_ssize_t n_blocks = LENGTH(a[BLOCK_STARTS]), n_categories = LENGTH(a[KS]);
    if (LENGTH(a[QUERIES]) != rows || LENGTH(a[EPS]) != rows)
        return refuse("values, queries and eps need one row per query");
    if (a[MATRIX]->shape[1] != dim)
        return refuse("the matrix and the queries differ in dimensions");
    if (a[MATRIX_ROWS] ? LENGTH(a[MATRIX_ROWS]) != n : LENGTH(a[MATRIX]) < n)
        return refuse("the matrix needs a row for each column (or matrix_rows one value per column)");
    if (a[MATRIX_ROWS] &&
        !indices_in_range(INTS(a[MATRIX_ROWS]), n, LENGTH(a[MATRIX]), "select_neighbours: matrix_rows",
                          PyExc_ValueError))
        return 0;
    if (a[DIVISORS]) {
        if (LENGTH(a[DIVISORS]) != n)
            return refuse("divisors needs one value per column");
        const double *divisors = a[DIVISORS]->buf;
        for (Py_ssize_t j = 0; j < n; j++)
            if (!(divisors[j] > 0 && divisors[j] < INFINITY))
                return refuse("divisors must be positive and finite");
    }
    if (a[ROW_DIVISORS]) {
        if (a[DIVISORS] || a[MATRIX]->itemsize != 2 || LENGTH(a[ROW_DIVISORS]) != LENGTH(a[MATRIX]))
            return refuse("row_divisors go with float16 numerators, one per matrix row, and no divisors");
        const double *divisors = a[ROW_DIVISORS]->buf;
        for (Py_ssize_t j = 0; j < LENGTH(a[MATRIX]); j++)
            if (!(divisors[j] > 0 && divisors[j] < INFINITY))
                return refuse("row_divisors must be positive and finite");
    }
    if (LENGTH(a[BLOCK_STOPS]) != n_blocks || LENGTH(a[BLOCK_PATTERNS]) != n_blocks || LENGTH(a[WIDTHS]) != n_blocks ||
        LENGTH(a[GROUPS]) != n_blocks || LENGTH(a[GROUP_OFFSETS]) != n_blocks + 1)
        return refuse("block_stops, block_patterns, widths and groups need one value per block, group_offsets one more");
    if (n_categories > 63)
        return refuse("at most 63 categories");
    if (a[STARTS]->shape[0] != n_categories || a[STARTS]->shape[1] != n + 1 || a[COUNTS]->shape[0] != n_categories ||
        a[COUNTS]->shape[1] != n || LENGTH(a[SAMPLE_OFFSETS]) != n_categories + 1)
        return refuse("starts needs (categories, columns + 1) values, counts (categories, columns) and "
                      "sample_offsets categories + 1");
    /* blocks: consecutive, non-empty, covering the columns; groups: inside their block */
    const int64_t *starts = INTS(a[BLOCK_STARTS]), *stops = INTS(a[BLOCK_STOPS]), *widths = INTS(a[WIDTHS]);
    const int64_t *groups = INTS(a[GROUPS]), *offsets = INTS(a[GROUP_OFFSETS]), *patterns = INTS(a[BLOCK_PATTERNS]);
    if (offsets[0] != 0)
        return refuse("group_offsets must start at 0");
    for (Py_ssize_t b = 0; b < n_blocks; b++)
        if (starts[b] != (b ? stops[b - 1] : 0) || stops[b] <= starts[b] || stops[b] > n)
            return refuse("the blocks must be consecutive, non-empty ranges of columns from 0");
    if ((n_blocks ? stops[n_blocks - 1] : 0) != n)
        return refuse("the blocks must cover every column");
    for (Py_ssize_t b = 0; b < n_blocks; b++) {
        int64_t size = stops[b] - starts[b];
        if (widths[b] < 1 || groups[b] < 1 || widths[b] > size / groups[b] || size - widths[b] * groups[b] > groups[b] ||
            offsets[b + 1] - offsets[b] != groups[b])
            return refuse("each block's groups must lie within it (widths x groups columns, no more left over than "
                          "groups) and group_offsets must count them");
    }
    /* samples: each category's in order of its columns, counted by counts, numbered within the category */
    const int64_t *sample_offsets = INTS(a[SAMPLE_OFFSETS]), *ks = INTS(a[KS]), *samples = INTS(a[SAMPLES]);
    if (sample_offsets[0] != 0 || sample_offsets[n_categories] != LENGTH(a[SAMPLES]))
        return refuse("sample_offsets must run from 0 to the number of samples");
    for (Py_ssize_t c = 0; c < n_categories; c++) {
        int64_t held = sample_offsets[c + 1] - sample_offsets[c];
        const int64_t *first = INTS(a[STARTS]) + c * (n + 1), *counts = INTS(a[COUNTS]) + c * n;
        if (held < 0)
            return refuse("sample_offsets must not decrease");
        if (first[0] != 0 || first[n] != held)
            return refuse("each category's starts must run from 0 to its number of samples");
        for (Py_ssize_t j = 0; j < n; j++)
            if (counts[j] < 0 || first[j + 1] - first[j] != counts[j])
                return refuse("counts must be the differences of starts");
        for (int64_t s = 0; s < held; s++)
            if (samples[sample_offsets[c] + s] < 0 || samples[sample_offsets[c] + s] >= held)
                return refuse("samples must number each category's samples from 0");
        if (ks[c] < 0 || ks[c] > held)
            return refuse("K must lie between 0 and the category's number of samples");
    }
    /* each block's categories are those of each of its columns (a category's groups hold its samples) */
    for (Py_ssize_t b = 0; b < n_blocks; b++) {
        if (patterns[b] < 0 || (n_categories < 63 && patterns[b] >> n_categories))
            return refuse("block_patterns name categories that are not there");
        for (Py_ssize_t c = 0; c < n_categories; c++) {
            const int64_t *counts = INTS(a[COUNTS]) + c * n;
            int in_block = (patterns[b] >> c) & 1;
            for (int64_t j = starts[b]; j < stops[b]; j++)
                if ((counts[j] > 0) != in_block)
                    return refuse("block_patterns must name exactly the categories with samples in each of the "
                                  "block's columns");
        }
    }
    if ((a[REFINE] == NULL) != (a[REFINE_EPS] == NULL))
        return refuse("refine and refine_eps go together");
    if (a[REFINE] && (a[REFINE]->shape[0] != n || a[REFINE]->shape[1] != dim || LENGTH(a[REFINE_EPS]) != rows))
        return refuse("refine needs (columns, dim) and refine_eps (queries)");
    if (a[REFINE_SCALES] && (!a[REFINE] || LENGTH(a[REFINE_SCALES]) != n))
        return refuse("refine_scales needs refine, and one scale per column");
    if ((a[TILE_MAXIMA] == NULL) != (a[TILE_PATTERNS] == NULL))
        return refuse("tile_maxima and tile_patterns go together");
    if (a[TILE_MAXIMA]) {
        Py_ssize_t tiles = (n + TILE - 1) / TILE;
        if (LENGTH(a[TILE_PATTERNS]) != tiles || a[TILE_MAXIMA]->shape[0] != rows || a[TILE_MAXIMA]->shape[1] != tiles)
            return refuse("tile_maxima needs (queries, tiles of 16 columns) and tile_patterns (tiles)");
        const int64_t *tile_patterns = INTS(a[TILE_PATTERNS]);
        for (Py_ssize_t t = 0, b = 0; t < tiles; t++) {
            while (stops[b] <= t * TILE)
                b++;
            int64_t last = (t + 1) * TILE < n ? (t + 1) * TILE : n;
            if (tile_patterns[t] && (tile_patterns[t] < 0 || last > stops[b] || (tile_patterns[t] & ~patterns[b])))
                return refuse("tile_patterns may name only categories of the one block that holds the whole tile");
        }
    }
    /* the bounds of one screen: not negative, not NaN; queries: finite */
    const double *eps = a[EPS]->buf, *refine_eps = a[REFINE_EPS] ? a[REFINE_EPS]->buf : NULL;
    for (Py_ssize_t r = 0; r < rows; r++)
        if (!(eps[r] >= 0) || (refine_eps && !(refine_eps[r] >= 0)))
            return refuse("the bounds eps and refine_eps must not be negative or NaN");
    if (!ON_BUILD(vector_path_in_use, all_finite, a[QUERIES]->buf, rows * dim))
        return refuse("the queries must be finite");
    return 1;
}

/* Scratch for rows of n columns, dim dimensions, `most` samples of one category, `spans` tiles read, the screen's
 * `tiles` and `listed` tiles over all categories (at most 63 categories) and column records of `record` values:
 * one allocation (w->base), carved into 64-byte aligned arrays. */
static int allocate_scratch(Scratch *w, Py_ssize_t n, Py_ssize_t dim, Py_ssize_t most, Py_ssize_t spans,
                            Py_ssize_t tiles, Py_ssize_t listed, Py_ssize_t record)
{
    size_t columns = (size_t)n + 1, lines = 0;
#define PART(field, count) (lines += ((count) * sizeof(*w->field) + 63) / 64)
#define CARVE(field, count) (w->field = (void *)(start + 64 * lines), PART(field, count))
#define PARTS(EACH)                                                                                           \
    EACH(keys, columns + (size_t)most + 16), EACH(spare_keys, columns + (size_t)most + 16), EACH(columns, columns + 16), EACH(values, columns + 16);              \
    EACH(pattern, columns + 16), EACH(member, columns), EACH(several, columns), EACH(needed, columns);         \
    EACH(listed, columns), EACH(sims, columns), EACH(rows, columns), EACH(maxima, columns);                     \
    EACH(exact, columns), EACH(exact_yet, columns), EACH(pending, columns);                                    \
    EACH(found, (size_t)most), EACH(found_keys, (size_t)most), EACH(found_samples, (size_t)most);             \
    EACH(found_sims, (size_t)most), EACH(row, (size_t)dim + 1), EACH(refined, columns);                       \
    EACH(q32, (size_t)dim + 1), EACH(span_first, (size_t)spans + 1), EACH(span_last, (size_t)spans + 1);      \
    EACH(span_low, (size_t)spans + 1), EACH(span_high, (size_t)spans + 1), EACH(span_pattern, (size_t)spans + 1); \
    EACH(tile_runs, 2 * (size_t)listed + 2), EACH(tile_run_offsets, (size_t)65), EACH(tile_keys, (size_t)tiles + 1); \
    EACH(column_samples, columns * (size_t)record), EACH(several_columns, columns / 64 + 1)
    PARTS(PART);
    if (!(w->base = malloc(64 * lines + 63))) {
        PyErr_NoMemory();
        return 0;
    }
    char *start = w->base + (64 - (uintptr_t)w->base % 64) % 64;
    lines = 0;
    PARTS(CARVE);
#undef PARTS
#undef CARVE
#undef PART
    return 1;
}

/* Each column's record (Space.column_samples): the categories with several samples on it, then each category's one
 * sample there, -1 where it has none or -2 where it has several (read through starts then); and the columns with
 * several samples of a category, as bits. */
static void list_column_samples(const Space *sp, int64_t *records, uint64_t *several_columns)
{
    memset(several_columns, 0, ((size_t)sp->n / 64 + 1) * sizeof(uint64_t));
    for (Py_ssize_t j = 0; j < sp->n; j++) {
        int64_t *record = records + j * sp->record;
        uint64_t several = 0;
        for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
            int64_t count = sp->counts[c * sp->n + j];
            several |= (uint64_t)(count > 1) << c;
            record[1 + c] = count == 1 ? sp->samples[sp->sample_offsets[c] + sp->starts[c * (sp->n + 1) + j]]
                                       : count == 0 ? -1 : -2;
        }
        record[0] = (int64_t)several;
        several_columns[j >> 6] |= (uint64_t)(several != 0) << (j & 63);
    }
}

/* Each category's tiles (those whose pattern names it) as runs of consecutive tiles, category after category: run r
 * is [runs[2 r], runs[2 r + 1]), and category c's runs are those from offsets[c] to offsets[c + 1]. */
static void list_tile_runs(const int64_t *patterns, Py_ssize_t tiles, Py_ssize_t categories, int64_t *runs,
                           int64_t *offsets)
{
    Py_ssize_t at = 0;
    for (Py_ssize_t c = 0; c < categories; c++) {
        offsets[c] = at;
        for (Py_ssize_t t = 0; t < tiles; t++)
            if ((patterns[t] >> c) & 1) {
                if (at == offsets[c] || runs[2 * at - 1] != t)
                    runs[2 * at] = t, at++;
                runs[2 * at - 1] = t + 1;
            }
    }
    offsets[categories] = at;
}

static PyObject *select_neighbours(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *given[ARGUMENTS] = {NULL};
    Py_buffer *a[ARGUMENTS] = {NULL};
    Views v;
    v.taken = 0;
    Space sp;
    Block block;
    Scratch w;
    w.base = NULL;
    PyObject *result = NULL;
    if (!parse_keywords(args, kwargs, given))
        return NULL;
    for (int i = 0; i < ARGUMENTS; i++) {
        const Argument *spec = &SELECT_ARGUMENTS[i];
        if (i == INDEX || i == SIMILARITY || !given[i])
            continue;
        if (!(a[i] = take(&v, given[i], spec->writable, spec->dims, spec->formats, spec->name)))
            goto done;
    }
    Py_ssize_t rows = a[VALUES]->shape[0], n = a[VALUES]->shape[1], dim = a[QUERIES]->shape[1];
    if (!check_space(a, rows, n, dim))
        goto done;
    sp.n = n, sp.dim = dim, sp.n_blocks = LENGTH(a[BLOCK_STARTS]), sp.n_categories = LENGTH(a[KS]);
    sp.block_starts = INTS(a[BLOCK_STARTS]), sp.block_stops = INTS(a[BLOCK_STOPS]);
    sp.block_patterns = INTS(a[BLOCK_PATTERNS]), sp.ks = INTS(a[KS]);
    sp.starts = INTS(a[STARTS]), sp.counts = INTS(a[COUNTS]), sp.samples = INTS(a[SAMPLES]);
    sp.sample_offsets = INTS(a[SAMPLE_OFFSETS]);
    sp.matrix = a[MATRIX]->buf, sp.itemsize = (int)a[MATRIX]->itemsize;
    sp.matrix_rows = a[MATRIX_ROWS] ? INTS(a[MATRIX_ROWS]) : NULL;
    sp.divisors = a[DIVISORS] ? a[DIVISORS]->buf : NULL;
    sp.row_divisors = a[ROW_DIVISORS] ? a[ROW_DIVISORS]->buf : NULL;
    sp.widths = INTS(a[WIDTHS]), sp.groups = INTS(a[GROUPS]), sp.group_offsets = INTS(a[GROUP_OFFSETS]);
    sp.refine = a[REFINE] ? a[REFINE]->buf : NULL;
    sp.refine_scales = a[REFINE_SCALES] ? a[REFINE_SCALES]->buf : NULL;
    sp.tiles = a[TILE_PATTERNS] ? LENGTH(a[TILE_PATTERNS]) : 0;
    sp.tile_patterns = a[TILE_PATTERNS] ? INTS(a[TILE_PATTERNS]) : NULL;
    block.rows = rows, block.values = a[VALUES]->buf, block.tile_maxima = a[TILE_MAXIMA] ? a[TILE_MAXIMA]->buf : NULL;
    block.queries = a[QUERIES]->buf, block.eps = a[EPS]->buf, block.refine_eps = a[REFINE_EPS] ? a[REFINE_EPS]->buf : NULL;
    PyObject *indexes = given[INDEX], *similarities = given[SIMILARITY];
    if (!PyTuple_Check(indexes) || !PyTuple_Check(similarities) || PyTuple_GET_SIZE(indexes) != sp.n_categories ||
        PyTuple_GET_SIZE(similarities) != sp.n_categories) {
        refuse("index and similarity must be tuples of one array per category");
        goto done;
    }
    Py_ssize_t most = 1;
    for (Py_ssize_t c = 0; c < sp.n_categories; c++) {
        Py_buffer *out_index, *out_similarity;
        if (!(out_index = take(&v, PyTuple_GET_ITEM(indexes, c), 1, 2, "lq", "index")) ||
            !(out_similarity = take(&v, PyTuple_GET_ITEM(similarities, c), 1, 2, "d", "similarity")))
            goto done;
        if (out_index->shape[0] != rows || out_index->shape[1] != sp.ks[c] || out_similarity->shape[0] != rows ||
            out_similarity->shape[1] != sp.ks[c]) {
            refuse("each category's outputs need (queries, K) values");
            goto done;
        }
        block.index[c] = out_index->buf, block.similarity[c] = out_similarity->buf;
        Py_ssize_t held = sp.sample_offsets[c + 1] - sp.sample_offsets[c];
        most = held > most ? held : most;
    }
    sp.record = (sp.n_categories + 1 + 7) / 8 * 8; /* whole cache lines: one line holds a column's samples */
    if (!allocate_scratch(&w, n, dim, most, (n + TILE - 1) / TILE + sp.n_blocks, sp.tiles,
                          sp.n_categories * sp.tiles, sp.record))
        goto done;
    sp.tile_runs = w.tile_runs, sp.tile_run_offsets = w.tile_run_offsets, sp.column_samples = w.column_samples;
    memset(w.hints, 0, sizeof w.hints);
    if (sp.tile_patterns)
        list_tile_runs(sp.tile_patterns, sp.tiles, sp.n_categories, w.tile_runs, w.tile_run_offsets);
    sp.searched = 0;
    for (Py_ssize_t c = 0; c < sp.n_categories; c++)
        sp.searched |= (uint64_t)(sp.ks[c] > 0) << c;
    sp.several_columns = w.several_columns;
    list_column_samples(&sp, w.column_samples, w.several_columns);
    Py_ssize_t failed_row, failed_category = 0;
    int path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    failed_row = ON_BUILD(path, select_block, &sp, &block, &w, &failed_category);
    Py_END_ALLOW_THREADS
    if (failed_row >= 0)
        PyErr_Format(PyExc_ValueError, "select_neighbours: fewer than K samples of category %zd passed the cut for "
                     "query %zd: its values, tile maxima or bound are not those of one screen (a NaN?)",
                     failed_category, failed_row);
    else
        result = Py_NewRef(Py_None);
done:
    free(w.base);
    release_views(&v);
    return result;
}
static const ArraySpec QUOTIENT_ARGUMENTS[4] = {{"source", "d", 2, 0}, {"rows", "lq", 1, 0},
                                                {"numerators", "e", 2, 1}, {"divisors", "d", 1, 1}};

static PyObject *quotient_rows(PyObject *self, PyObject *args)
{
    Py_buffer views[4];
    if (!take_arrays(args, "quotient_rows", 4, QUOTIENT_ARGUMENTS, views))
        return NULL;
    Py_buffer *source = &views[0], *rows = &views[1], *numerators = &views[2], *divisors = &views[3];
    PyObject *result = NULL;
    Py_ssize_t n = rows->shape[0], dim = source->shape[1];
    if (numerators->shape[0] != n || numerators->shape[1] != dim || divisors->shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "numerators need (rows, dim) values and divisors one per row");
        goto done;
    }
    if (!indices_in_range(rows->buf, n, source->shape[0], "rows", PyExc_IndexError))
        goto done;
    Py_ssize_t failed;
    int path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    failed = ON_BUILD(path, find_quotient_rows, source->buf, dim, rows->buf, n, numerators->buf, divisors->buf);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(failed);
done:
    release_arrays(views, 4);
    return result;
}

/* The fastest build the CPU runs, or the portable one. */
static void use_vector_extensions(int enabled)
{
    vector_path_in_use = !enabled ? PORTABLE : cpu.avx512 ? AVX512 : cpu.avx2 ? AVX2 : PORTABLE;
}

static PyObject *vector_extensions(PyObject *self, PyObject *args)
{
    PyObject *enabled = Py_None;
    if (!PyArg_ParseTuple(args, "|O:vector_extensions", &enabled))
        return NULL;
    PyObject *previous = PyBool_FromLong(vector_path_in_use != PORTABLE);
    if (enabled != Py_None) {
        int flag = PyObject_IsTrue(enabled);
        if (flag < 0) {
            Py_DECREF(previous);
            return NULL;
        }
        use_vector_extensions(flag);
    }
    return previous;
}

static PyObject *vector_path(PyObject *self, PyObject *args)
{
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "|z:vector_path", &name))
        return NULL;
    PyObject *previous = PyUnicode_FromString(PATH_NAMES[vector_path_in_use]);
    if (!name || !previous)
        return previous;
    int runs[] = {1, cpu.avx2, cpu.avx512};
    for (int path = PORTABLE; path <= AVX512; path++)
        if (strcmp(name, PATH_NAMES[path]) == 0 && runs[path]) {
            vector_path_in_use = path;
            return previous;
        }
    Py_DECREF(previous);
    return PyErr_Format(PyExc_ValueError, "vector_path: no build %s runs on this CPU", name);
}

static PyMethodDef methods[] = {
    {"gather_float32", gather_float32, METH_VARARGS,
     "gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32 (float16 or float32 rows)."},
    {"sums_of_squares", sums_of_squares, METH_VARARGS,
     "sums_of_squares(stored, out): out[i] = float64 sum of the squares of row i."},
    {"unit_rows", unit_rows, METH_VARARGS,
     "unit_rows(stored, rows, norms, out): out[i] = float16 row rows[i] over its float64 norm (norms[i], or where "
     "that is NaN the row's norm, written there; zero rows stay zero)."},
    {"quotient_vectors", quotient_vectors, METH_VARARGS,
     "quotient_vectors(numerators, rows, divisors, out): out[i] = the quotient row of numerators rows[i] over "
     "divisors[i], rebuilt as the selection rebuilds it."},
    {"quotient_rows", quotient_rows, METH_VARARGS,
     "quotient_rows(source, rows, numerators, divisors): float16 numerators and divisors that rebuild each float64 "
     "row source[rows[i]] exactly; returns -1, or the first i whose row has none."},
    {"select_neighbours", (PyCFunction)(void (*)(void))select_neighbours, METH_VARARGS | METH_KEYWORDS,
     "select_neighbours(*, values, queries, eps, matrix, matrix_rows=None, divisors=None, block_starts, block_stops, "
     "block_patterns, widths, groups, group_offsets, ks, starts, counts, samples, sample_offsets, index, similarity, "
     "refine=None, refine_eps=None, tile_maxima=None, tile_patterns=None, row_divisors=None, refine_scales=None)"},
    {"vector_extensions", vector_extensions, METH_VARARGS,
     "vector_extensions(enabled=None): whether the AVX2/AVX-512 builds and F16C are used; returns the previous "
     "setting."},
    {"vector_path", vector_path, METH_VARARGS,
     "vector_path(name=None): the build of the loops in use (avx512, avx2, portable); with a name, uses that build "
     "(where the CPU runs it) and returns the previous one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "The model's inner loops over stored rows.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__kernels(void)
{
    cpu = cpu_features();
    use_vector_extensions(1);
    return PyModule_Create(&module);
}
