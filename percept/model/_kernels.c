/* The model's inner loops over stored rows, in plain C (no dependencies).
 *
 * gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32, for float16 or float32 rows
 *     (exact conversions).
 * sums_of_squares(stored, out): out[i] = sum_k stored[i, k]^2 in float64, for float16, float32 or float64 rows.
 * select_neighbours(**tables): steps 2 to 4 of percept.model.exact_search (after the screen), a query at a time,
 *     for the arrays a SearchSpace lays out, given by keyword (see SELECT_ARGUMENTS). Every table is checked
 *     before the work starts (types, shapes, index ranges, samples per column, K against the samples), and a
 *     query whose screen values leave fewer than K samples past the cut (a NaN, or maxima that are not the
 *     values') is refused: never memory that was not written. With float16 copies of the columns (refine), the
 *     candidates are re-screened from them in float32 before the K-th value tightens the cut; with the screen's
 *     maxima of tiles of 16 columns (tile_maxima, and the categories each tile serves in tile_patterns), those
 *     are the groups of the first bound, and tiles below a cut are not read.
 * vector_extensions(enabled=None): whether the AVX2/AVX-512 builds of the loops and the F16C conversions are
 *     used; False forces the portable code (tests compare both), True restores what the CPU supports. Returns
 *     the previous setting. vector_path(): which is in use ("avx512", "avx2" or "portable").
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

#ifdef X86_64
/* dots_from_float32 for float16 rows, converting with F16C as it goes: lane l of a step of 32 halves is
 * dimension k + l, as in the portable code, and each product is rounded before it is added. */
TARGET(AVX2_FEATURES)
static void dots_from_float16_f16c(const double *q, const uint16_t *vectors, Py_ssize_t dim, const int64_t *rows,
                                   Py_ssize_t count, double *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = vectors + rows[i] * dim;
        const char *next = (const char *)(vectors + rows[i + 1 < count ? i + 1 : i] * dim);
        __m256d lane[8];
        for (int l = 0; l < 8; l++)
            lane[l] = _mm256_setzero_pd();
        Py_ssize_t k = 0;
        for (; k + 32 <= dim; k += 32) {
            PREFETCH(next + k * sizeof(uint16_t));
            for (int part = 0; part < 4; part++) {
                __m256 wide = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k + 8 * part)));
                __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(wide));
                __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(wide, 1));
                lane[2 * part] = _mm256_add_pd(lane[2 * part], _mm256_mul_pd(_mm256_loadu_pd(q + k + 8 * part), low));
                lane[2 * part + 1] =
                    _mm256_add_pd(lane[2 * part + 1], _mm256_mul_pd(_mm256_loadu_pd(q + k + 8 * part + 4), high));
            }
        }
        double sums[LANES];
        for (int l = 0; l < 8; l++)
            _mm256_storeu_pd(sums + 4 * l, lane[l]);
        double sum = lane_total(sums);
        for (; k < dim; k++)
            sum += q[k] * (double)half_to_float(x[k]);
        out[i] = sum;
    }
}

/* The same with AVX-512: eight halves become eight doubles in one register. */
TARGET(AVX512_FEATURES)
static void dots_from_float16_avx512(const double *q, const uint16_t *vectors, Py_ssize_t dim, const int64_t *rows,
                                     Py_ssize_t count, double *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = vectors + rows[i] * dim;
        const char *next = (const char *)(vectors + rows[i + 1 < count ? i + 1 : i] * dim);
        __m512d lane[4];
        for (int l = 0; l < 4; l++)
            lane[l] = _mm512_setzero_pd();
        Py_ssize_t k = 0;
        for (; k + 32 <= dim; k += 32) {
            PREFETCH(next + k * sizeof(uint16_t));
            for (int part = 0; part < 4; part++) {
                __m512d wide = _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k + 8 * part))));
                lane[part] = _mm512_add_pd(lane[part], _mm512_mul_pd(_mm512_loadu_pd(q + k + 8 * part), wide));
            }
        }
        double sums[LANES];
        for (int l = 0; l < 4; l++)
            _mm512_storeu_pd(sums + 8 * l, lane[l]);
        double sum = lane_total(sums);
        for (; k < dim; k++)
            sum += q[k] * (double)half_to_float(x[k]);
        out[i] = sum;
    }
}
#endif

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
        const char *next = (const char *)(rows + columns[i + 1 < count ? i + 1 : i] * dim);
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

/* Float64 dot products of one float64 query with the stored rows `rows[0:count]` of float16, float32 or
 * float64 elements (`row`: dim floats of scratch for the portable float16 path). */
ALWAYS_INLINE void query_dots(const double *q, const void *matrix, int itemsize, Py_ssize_t dim, const int64_t *rows,
                              Py_ssize_t count, float *row, double *out, int path)
{
    if (itemsize == 8) {
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

/* How many of keys[0:n] are at least `least`, each counted weights[i] times (once each without weights). */
ALWAYS_INLINE int64_t weight_at_least(const uint32_t *keys, const int64_t *weights, Py_ssize_t n, uint32_t least)
{
    int64_t total = 0;
    if (weights)
        for (Py_ssize_t i = 0; i < n; i++)
            total += keys[i] >= least ? weights[i] : 0;
    else
        for (Py_ssize_t i = 0; i < n; i++)
            total += keys[i] >= least;
    return total;
}

/* The k-th largest of the values whose order keys are keys[0:n], value i counted weights[i] times (once each
 * without weights); -infinity when they count fewer than k. The key is decided a bit at a time, from the top:
 * 32 counting passes, without the branches a quickselect mispredicts. */
ALWAYS_INLINE float kth_largest_key(const uint32_t *keys, const int64_t *weights, Py_ssize_t n, int64_t k)
{
    if (k < 1 || weight_at_least(keys, weights, n, 0) < k)
        return -INFINITY;
    uint32_t found = 0;
    for (int bit = 31; bit >= 0; bit--) {
        uint32_t candidate = found | (1u << bit);
        if (weight_at_least(keys, weights, n, candidate) >= k)
            found = candidate;
    }
    return key_value(found);
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

/* Appends (column, value) for each column j in [first, last) with values[j] >= low to columns and kept_values
 * from position `kept` (without branches); returns the new count. */
ALWAYS_INLINE Py_ssize_t append_at_least(const float *values, Py_ssize_t first, Py_ssize_t last, double low,
                                         int64_t *columns, float *kept_values, Py_ssize_t kept)
{
    for (Py_ssize_t j = first; j < last; j++) {
        columns[kept] = j, kept_values[kept] = values[j];
        kept += (double)values[j] >= low;
    }
    return kept;
}

/* append_at_least over [start, stop), skipping at once runs of SCAN values all below the float32 rounding of
 * `low` (rounded down). */
ALWAYS_INLINE Py_ssize_t collect_at_least(const float *values, Py_ssize_t start, Py_ssize_t stop, double low,
                                          int64_t *columns, float *kept_values, Py_ssize_t kept, int path)
{
    float low32 = (float)low;
    if ((double)low32 > low)
        low32 = nextafterf(low32, -INFINITY);
    Py_ssize_t j = start;
    for (; j + SCAN <= stop; j += SCAN)
        if (any_at_least(values + j, low32, path))
            kept = append_at_least(values, j, j + SCAN, low, columns, kept_values, kept);
    return append_at_least(values, j, stop, low, columns, kept_values, kept);
}

/* append_at_least over [start, stop) through the screen's tiles of TILE columns: a tile whose maximum is below
 * `low` is skipped. */
#define TILE 16
ALWAYS_INLINE Py_ssize_t collect_in_tiles(const float *values, const float *tile_maxima, Py_ssize_t start,
                                          Py_ssize_t stop, double low, int64_t *columns, float *kept_values,
                                          Py_ssize_t kept)
{
    /* the tiles to read are scattered over a row that is no longer in cache: ask for all of them first, so
     * their loads overlap instead of waiting one after another */
    for (Py_ssize_t t = start / TILE; t * TILE < stop; t++)
        if ((double)tile_maxima[t] >= low)
            PREFETCH(values + t * TILE);
    for (Py_ssize_t t = start / TILE; t * TILE < stop; t++) {
        if ((double)tile_maxima[t] < low)
            continue;
        Py_ssize_t first = t * TILE > start ? t * TILE : start, last = (t + 1) * TILE < stop ? (t + 1) * TILE : stop;
        kept = append_at_least(values, first, last, low, columns, kept_values, kept);
    }
    return kept;
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
    const double *divisors;     /* each column's similarity is divided by this, or NULL */
    const int64_t *widths, *groups, *group_offsets; /* per block: the strided groups of the first bound */
    const uint16_t *refine; /* (n, dim) float16 copies of the columns that re-screen the candidates, or NULL */
    Py_ssize_t tiles;              /* the screen's tiles of 16 columns, when it gave their maxima */
    const int64_t *tile_patterns;  /* (tiles): the categories whose columns hold all of the tile (0 for none) */
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
    uint32_t *keys;   /* n + 1: order keys of the values one selection reads */
    int64_t *weights; /* n + 1: samples of each candidate */
    int64_t *columns; /* n: candidate columns */
    float *values;    /* n: their float32 values */
    uint64_t *needed; /* n: bit c set when category c keeps the candidate */
    double *sims;     /* n */
    int64_t *rows;    /* n: re-ranking rows of the kept candidates */
    float *maxima;    /* n: group maxima */
    Found *found;     /* most samples of one category */
    float *row;       /* dim: a float16 row converted */
    float *refined;   /* n: the candidates' values re-screened from the float16 copies */
    float *q32;       /* dim: the query in float32 */
} Scratch;

/* One query: each category's K nearest samples into index[c] and similarity[c] (row `r`). Returns -1, or the
 * first category for which fewer than K samples passed the cut (values that are not a screen's: a NaN, or tile
 * maxima above the values). */
ALWAYS_INLINE Py_ssize_t select_row(const Space *sp, const float *values, const float *tile_maxima, const double *q,
                                    double eps, double refine_eps, Scratch *w, int64_t *const *index,
                                    double *const *similarity, Py_ssize_t r, int path)
{
    double cut[64];
    /* 1. A lower bound on each category's K-th largest value: the K-th largest maximum of its groups of
     *    columns (K groups hold K distinct vectors, so K samples, at or above it). The groups are the screen's
     *    tiles of 16 columns that lie within the category's columns, when the screen gave their maxima; else
     *    strided groups within each block of columns. */
    if (!tile_maxima)
        for (Py_ssize_t b = 0; b < sp->n_blocks; b++)
            strided_maxima(values + sp->block_starts[b], sp->block_stops[b] - sp->block_starts[b], sp->widths[b],
                           sp->groups[b], w->maxima + sp->group_offsets[b]);
    for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
        int64_t k = sp->ks[c];
        Py_ssize_t chunks = 0;
        cut[c] = INFINITY;
        if (k == 0)
            continue;
        if (tile_maxima) {
            for (Py_ssize_t t = 0; t < sp->tiles; t++)
                if ((sp->tile_patterns[t] >> c) & 1)
                    w->keys[chunks++] = order_key(tile_maxima[t]);
        } else {
            for (Py_ssize_t b = 0; b < sp->n_blocks; b++)
                if ((sp->block_patterns[b] >> c) & 1) {
                    Py_ssize_t size = sp->group_offsets[b + 1] - sp->group_offsets[b];
                    for (Py_ssize_t g = 0; g < size; g++)
                        w->keys[chunks++] = order_key(w->maxima[sp->group_offsets[b] + g]);
                }
        }
        cut[c] = (double)kth_largest_key(w->keys, NULL, chunks, k) - 2 * eps;
    }
    /* 2. Candidates: every value at or above the lowest cut of its block's categories (tiles whose maximum is
     *    below it are passed over unread). */
    Py_ssize_t kept = 0;
    for (Py_ssize_t b = 0; b < sp->n_blocks; b++) {
        double low = INFINITY;
        for (Py_ssize_t c = 0; c < sp->n_categories; c++)
            if (((sp->block_patterns[b] >> c) & 1) && cut[c] < low)
                low = cut[c];
        if (low == INFINITY)
            continue;
        if (tile_maxima)
            kept = collect_in_tiles(values, tile_maxima, sp->block_starts[b], sp->block_stops[b], low, w->columns,
                                    w->values, kept);
        else
            kept = collect_at_least(values, sp->block_starts[b], sp->block_stops[b], low, w->columns, w->values, kept,
                                    path);
    }
    /* 3. Each category's candidates are those at or above its cut; their exact K-th value tightens the cut (by
     *    the re-screened values and their bound, where the columns have float16 copies). */
    const float *ranked = w->values;
    if (sp->refine) {
        for (Py_ssize_t k = 0; k < sp->dim; k++)
            w->q32[k] = (float)q[k];
        float16_dots(w->q32, sp->refine, sp->dim, w->columns, kept, w->refined, path);
        ranked = w->refined, eps = refine_eps;
    }
    for (Py_ssize_t i = 0; i < kept; i++)
        w->needed[i] = 0;
    for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
        if (sp->ks[c] == 0)
            continue;
        const int64_t *counts = sp->counts + c * sp->n;
        Py_ssize_t mine = 0;
        for (Py_ssize_t i = 0; i < kept; i++)
            if (counts[w->columns[i]] > 0 && (double)w->values[i] >= cut[c])
                w->keys[mine] = order_key(ranked[i]), w->weights[mine++] = counts[w->columns[i]];
        double tight = (double)kth_largest_key(w->keys, w->weights, mine, sp->ks[c]) - 2 * eps;
        for (Py_ssize_t i = 0; i < kept; i++)
            if (counts[w->columns[i]] > 0 && (double)w->values[i] >= cut[c] && (double)ranked[i] >= tight)
                w->needed[i] |= (uint64_t)1 << c;
    }
    /* 4. Float64 similarities of the candidates any category keeps. */
    Py_ssize_t needed = 0;
    for (Py_ssize_t i = 0; i < kept; i++)
        if (w->needed[i])
            w->rows[needed++] = sp->matrix_rows ? sp->matrix_rows[w->columns[i]] : w->columns[i];
    query_dots(q, sp->matrix, sp->itemsize, sp->dim, w->rows, needed, w->row, w->sims, path);
    for (Py_ssize_t i = kept - 1, at = needed - 1; i >= 0; i--) /* spread back to the candidates' places */
        if (w->needed[i]) {
            double sim = w->sims[at--];
            w->sims[i] = sp->divisors ? sim / sp->divisors[w->columns[i]] : sim;
        }
    /* 5. Each category's first K samples by (similarity descending, sample ascending). */
    for (Py_ssize_t c = 0; c < sp->n_categories; c++) {
        int64_t k = sp->ks[c];
        if (k == 0)
            continue;
        const int64_t *starts = sp->starts + c * (sp->n + 1), *samples = sp->samples + sp->sample_offsets[c];
        Py_ssize_t count = 0;
        for (Py_ssize_t i = 0; i < kept; i++) {
            if (!((w->needed[i] >> c) & 1))
                continue;
            for (int64_t s = starts[w->columns[i]]; s < starts[w->columns[i] + 1]; s++) {
                w->found[count].similarity = w->sims[i];
                w->found[count++].sample = samples[s];
            }
        }
        if (count < k)
            return c;
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

/* Each build of the loops: the bodies above inlined into one function per instruction set. */
static Py_ssize_t select_block_portable(const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed)
{
    return select_block(sp, block, w, failed, PORTABLE);
}

static void squares_portable(const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out,
                             float *row)
{
    squares_of_rows(stored, itemsize, n, dim, out, row, PORTABLE);
}

#ifdef X86_64
TARGET(AVX2_FEATURES)
static Py_ssize_t select_block_avx2(const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed)
{
    return select_block(sp, block, w, failed, AVX2);
}

TARGET(AVX2_FEATURES)
static void squares_avx2(const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out, float *row)
{
    squares_of_rows(stored, itemsize, n, dim, out, row, AVX2);
}

TARGET(AVX512_FEATURES)
static Py_ssize_t select_block_avx512(const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed)
{
    return select_block(sp, block, w, failed, AVX512);
}

TARGET(AVX512_FEATURES)
static void squares_avx512(const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out,
                           float *row)
{
    squares_of_rows(stored, itemsize, n, dim, out, row, AVX512);
}
#endif

static Py_ssize_t select_block_on(int path, const Space *sp, const Block *block, Scratch *w, Py_ssize_t *failed)
{
#ifdef X86_64
    if (path == AVX512)
        return select_block_avx512(sp, block, w, failed);
    if (path == AVX2)
        return select_block_avx2(sp, block, w, failed);
#endif
    return select_block_portable(sp, block, w, failed);
}

static void squares_on(int path, const void *stored, Py_ssize_t itemsize, Py_ssize_t n, Py_ssize_t dim, double *out,
                       float *row)
{
#ifdef X86_64
    if (path == AVX512) {
        squares_avx512(stored, itemsize, n, dim, out, row);
        return;
    }
    if (path == AVX2) {
        squares_avx2(stored, itemsize, n, dim, out, row);
        return;
    }
#endif
    squares_portable(stored, itemsize, n, dim, out, row);
}


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

static PyObject *gather_float32(PyObject *self, PyObject *args)
{
    PyObject *stored_obj, *rows_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO:gather_float32", &stored_obj, &rows_obj, &out_obj))
        return NULL;
    Py_buffer stored, rows, out;
    PyObject *result = NULL;
    if (get_array(stored_obj, &stored, 0, 2, "ef", "stored") < 0)
        return NULL;
    if (get_array(rows_obj, &rows, 0, 1, "lq", "rows") < 0)
        goto release_stored;
    if (get_array(out_obj, &out, 1, 2, "f", "out") < 0)
        goto release_rows;
    Py_ssize_t dim = stored.shape[1], n = rows.shape[0];
    if (out.shape[0] != n || out.shape[1] != dim) {
        PyErr_Format(PyExc_ValueError, "out has shape (%zd, %zd), not (%zd, %zd)", out.shape[0], out.shape[1], n, dim);
        goto release_out;
    }
    if (!indices_in_range(rows.buf, n, stored.shape[0], "rows", PyExc_IndexError))
        goto release_out;
    int from_half = stored.itemsize == 2, path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    if (from_half)
        gather_from_float16(stored.buf, dim, rows.buf, n, out.buf, path);
    else
        gather_from_float32(stored.buf, dim, rows.buf, n, out.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
release_out:
    PyBuffer_Release(&out);
release_rows:
    PyBuffer_Release(&rows);
release_stored:
    PyBuffer_Release(&stored);
    return result;
}

static PyObject *sums_of_squares(PyObject *self, PyObject *args)
{
    PyObject *stored_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO:sums_of_squares", &stored_obj, &out_obj))
        return NULL;
    Py_buffer stored, out;
    PyObject *result = NULL;
    float *row = NULL;
    if (get_array(stored_obj, &stored, 0, 2, "efd", "stored") < 0)
        return NULL;
    if (get_array(out_obj, &out, 1, 1, "d", "out") < 0)
        goto release_stored;
    Py_ssize_t n = stored.shape[0], dim = stored.shape[1], itemsize = stored.itemsize;
    if (out.shape[0] != n) {
        PyErr_Format(PyExc_ValueError, "out holds %zd values for %zd rows", out.shape[0], n);
        goto release_out;
    }
    if (!(row = malloc((size_t)(dim > 0 ? dim : 1) * sizeof(float)))) {
        PyErr_NoMemory();
        goto release_out;
    }
    int path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    squares_on(path, stored.buf, itemsize, n, dim, out.buf, row);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
    free(row);
release_out:
    PyBuffer_Release(&out);
release_stored:
    PyBuffer_Release(&stored);
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
    TILE_PATTERNS, ARGUMENTS
};

static const Argument SELECT_ARGUMENTS[ARGUMENTS] = {
    {"values", "f", 2, 0, 0},        {"queries", "d", 2, 0, 0},       {"eps", "d", 1, 0, 0},
    {"matrix", "efd", 2, 0, 0},      {"matrix_rows", "lq", 1, 0, 1},  {"divisors", "d", 1, 0, 1},
    {"block_starts", "lq", 1, 0, 0}, {"block_stops", "lq", 1, 0, 0},  {"block_patterns", "lq", 1, 0, 0},
    {"widths", "lq", 1, 0, 0},       {"groups", "lq", 1, 0, 0},       {"group_offsets", "lq", 1, 0, 0},
    {"ks", "lq", 1, 0, 0},           {"starts", "lq", 2, 0, 0},       {"counts", "lq", 2, 0, 0},
    {"samples", "lq", 1, 0, 0},      {"sample_offsets", "lq", 1, 0, 0}, {"index", "lq", 2, 1, 0},
    {"similarity", "d", 2, 1, 0},    {"refine", "e", 2, 0, 1},        {"refine_eps", "d", 1, 0, 1},
    {"tile_maxima", "f", 2, 0, 1},   {"tile_patterns", "lq", 1, 0, 1},
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
    const double *queries = a[QUERIES]->buf;
    for (Py_ssize_t i = 0; i < rows * dim; i++)
        if (!isfinite(queries[i]))
            return refuse("the queries must be finite");
    return 1;
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
    memset(&w, 0, sizeof w);
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
    sp.widths = INTS(a[WIDTHS]), sp.groups = INTS(a[GROUPS]), sp.group_offsets = INTS(a[GROUP_OFFSETS]);
    sp.refine = a[REFINE] ? a[REFINE]->buf : NULL;
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
    size_t columns = (size_t)n + 1;
    w.keys = malloc(columns * sizeof(uint32_t)), w.weights = malloc(columns * sizeof(int64_t));
    w.columns = malloc(columns * sizeof(int64_t)), w.values = malloc(columns * sizeof(float));
    w.needed = malloc(columns * sizeof(uint64_t)), w.sims = malloc(columns * sizeof(double));
    w.rows = malloc(columns * sizeof(int64_t)), w.maxima = malloc(columns * sizeof(float));
    w.found = malloc((size_t)most * sizeof(Found)), w.row = malloc((size_t)(dim + 1) * sizeof(float));
    w.refined = malloc(columns * sizeof(float)), w.q32 = malloc((size_t)(dim + 1) * sizeof(float));
    if (!w.keys || !w.weights || !w.columns || !w.values || !w.needed || !w.sims || !w.rows || !w.maxima ||
        !w.found || !w.row || !w.refined || !w.q32) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t failed_row, failed_category = 0;
    int path = vector_path_in_use;
    Py_BEGIN_ALLOW_THREADS
    failed_row = select_block_on(path, &sp, &block, &w, &failed_category);
    Py_END_ALLOW_THREADS
    if (failed_row >= 0)
        PyErr_Format(PyExc_ValueError, "select_neighbours: fewer than K samples of category %zd passed the cut for "
                     "query %zd: its values, tile maxima or bound are not those of one screen (a NaN?)",
                     failed_category, failed_row);
    else
        result = Py_NewRef(Py_None);
done:
    free(w.keys), free(w.weights), free(w.columns), free(w.values), free(w.needed), free(w.sims), free(w.rows);
    free(w.maxima), free(w.found), free(w.row), free(w.refined), free(w.q32);
    release_views(&v);
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

static PyObject *vector_path(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(PATH_NAMES[vector_path_in_use]);
}

static PyMethodDef methods[] = {
    {"gather_float32", gather_float32, METH_VARARGS,
     "gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32 (float16 or float32 rows)."},
    {"sums_of_squares", sums_of_squares, METH_VARARGS,
     "sums_of_squares(stored, out): out[i] = float64 sum of the squares of row i."},
    {"select_neighbours", (PyCFunction)(void (*)(void))select_neighbours, METH_VARARGS | METH_KEYWORDS,
     "select_neighbours(*, values, queries, eps, matrix, matrix_rows=None, divisors=None, block_starts, block_stops, "
     "block_patterns, widths, groups, group_offsets, ks, starts, counts, samples, sample_offsets, index, similarity, "
     "refine=None, refine_eps=None, tile_maxima=None, tile_patterns=None)"},
    {"vector_extensions", vector_extensions, METH_VARARGS,
     "vector_extensions(enabled=None): whether the AVX2/AVX-512 builds and F16C are used; returns the previous "
     "setting."},
    {"vector_path", vector_path, METH_NOARGS, "vector_path(): the build of the loops in use (avx512, avx2, portable)."},
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
