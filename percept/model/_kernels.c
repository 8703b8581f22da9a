/* The model's inner loops over stored rows, in plain C (no dependencies).
 *
 * gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32, for float16 or float32 rows
 *     (exact conversions).
 * sums_of_squares(stored, out): out[i] = sum_k stored[i, k]^2 in float64, for float16, float32 or float64 rows.
 * select_neighbours(...): steps 2 to 4 of percept.model.exact_search (after the screen), a query at a time, for
 *     the arrays a SearchSpace lays out (shapes and re-ranking rows are checked, the sample tables are trusted:
 *     they are the search space's own); with float16 copies of the columns (refine), the candidates are
 *     re-screened from them in float32 before the K-th value tightens the cut; with the screen's maxima of
 *     tiles of 16 columns (tile_maxima, and the categories each tile serves in tile_patterns), those are the
 *     groups of the first bound, and tiles below a cut are not read.
 * vector_extensions(enabled=None): whether the F16C/AVX-512 float16 paths are used; False forces the portable
 *     code (tests compare both), True restores what the CPU supports. Returns the previous setting.
 *
 * Float64 sums run over LANES partial sums added pairwise at the end: a fixed order on every machine.
 * The GIL is released while the loops run, so search threads work side by side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>

#include "_arrays.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* One build runs everywhere; machines with AVX-512, or AVX2 and FMA, take a wider clone. */
#define WIDE_WHERE_AVAILABLE __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#else
#define WIDE_WHERE_AVAILABLE
#endif

/* Independent partial sums per dot product: enough to keep two FMA units busy through their latency. */
#define LANES 32

/* The lanes added pairwise (a fixed order, so results do not depend on the machine's vector width). */
static inline double lane_total(double *lane)
{
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++)
            lane[l] += lane[l + width];
    return lane[0];
}

/* out[i] = the float64 dot product of the float64 query q with stored row rows[i] (float32 or float64). */
WIDE_WHERE_AVAILABLE
static void dots_from_float32(const double *q, const float *vectors, Py_ssize_t dim, const int64_t *rows,
                              Py_ssize_t count, double *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const float *x = vectors + rows[i] * dim;
        const char *next = (const char *)(vectors + rows[i + 1 < count ? i + 1 : i] * dim);
        double lane[LANES] = {0};
        Py_ssize_t k = 0;
        for (; k + LANES <= dim; k += LANES) {
            /* the next row, two cache lines per step: its first loads do not wait on memory */
            __builtin_prefetch(next + k * sizeof(float));
            __builtin_prefetch(next + k * sizeof(float) + 64);
            for (int l = 0; l < LANES; l++)
                lane[l] += q[k + l] * (double)x[k + l];
        }
        double sum = lane_total(lane);
        for (; k < dim; k++)
            sum += q[k] * (double)x[k];
        out[i] = sum;
    }
}

WIDE_WHERE_AVAILABLE
static void dots_from_float64(const double *q, const double *vectors, Py_ssize_t dim, const int64_t *rows,
                              Py_ssize_t count, double *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const double *x = vectors + rows[i] * dim;
        const char *next = (const char *)(vectors + rows[i + 1 < count ? i + 1 : i] * dim);
        double lane[LANES] = {0};
        Py_ssize_t k = 0;
        for (; k + LANES <= dim; k += LANES) {
            for (int part = 0; part < 4; part++)
                __builtin_prefetch(next + k * sizeof(double) + 64 * part);
            for (int l = 0; l < LANES; l++)
                lane[l] += q[k + l] * x[k + l];
        }
        double sum = lane_total(lane);
        for (; k < dim; k++)
            sum += q[k] * x[k];
        out[i] = sum;
    }
}

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

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
/* The same with the F16C instructions, eight at a time. */
__attribute__((target("avx,f16c")))
static void halves_to_floats_f16c(const uint16_t *x, float *y, Py_ssize_t n)
{
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(y + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k))));
    for (; k < n; k++)
        y[k] = half_to_float(x[k]);
}
#endif

static void (*halves_to_floats)(const uint16_t *, float *, Py_ssize_t) = halves_to_floats_portable;

static void gather_from_float16(const uint16_t *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n, float *out)
{
    for (Py_ssize_t j = 0; j < n; j++)
        halves_to_floats(stored + rows[j] * dim, out + j * dim, dim);
}

static void gather_from_float32(const float *stored, Py_ssize_t dim, const int64_t *rows, Py_ssize_t n, float *out)
{
    for (Py_ssize_t j = 0; j < n; j++)
        memcpy(out + j * dim, stored + rows[j] * dim, (size_t)dim * sizeof(float));
}

#define SUMS_OF_SQUARES(name, type)                                                                       \
    WIDE_WHERE_AVAILABLE                                                                                  \
    static void name(const type *stored, Py_ssize_t n, Py_ssize_t dim, double *out)                      \
    {                                                                                                     \
        for (Py_ssize_t i = 0; i < n; i++) {                                                              \
            const type *x = stored + i * dim;                                                             \
            double lane[LANES] = {0};                                                                     \
            Py_ssize_t k = 0;                                                                             \
            for (; k + LANES <= dim; k += LANES)                                                          \
                for (int l = 0; l < LANES; l++)                                                           \
                    lane[l] += (double)x[k + l] * (double)x[k + l];                                       \
            double sum = lane_total(lane);                                                                \
            for (; k < dim; k++)                                                                          \
                sum += (double)x[k] * (double)x[k];                                                       \
            out[i] = sum;                                                                                 \
        }                                                                                                 \
    }
SUMS_OF_SQUARES(squares_of_float32, float)
SUMS_OF_SQUARES(squares_of_float64, double)

/* Float16 rows go through float32 (exact) a row at a time; -1 when out of memory. */
static int squares_of_float16(const uint16_t *stored, Py_ssize_t n, Py_ssize_t dim, double *out)
{
    float *row = malloc((size_t)(dim > 0 ? dim : 1) * sizeof(float));
    if (!row)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        halves_to_floats(stored + i * dim, row, dim);
        squares_of_float32(row, 1, dim, out + i);
    }
    free(row);
    return 0;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* dots_from_float32 for float16 rows, converting with F16C as it goes (LANES = 32 halves a step). */
__attribute__((target("avx2,fma,f16c")))
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
            __builtin_prefetch(next + k * sizeof(uint16_t));
            for (int part = 0; part < 4; part++) {
                __m256 wide = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k + 8 * part)));
                __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(wide));
                __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(wide, 1));
                lane[2 * part] = _mm256_fmadd_pd(_mm256_loadu_pd(q + k + 8 * part), low, lane[2 * part]);
                lane[2 * part + 1] = _mm256_fmadd_pd(_mm256_loadu_pd(q + k + 8 * part + 4), high, lane[2 * part + 1]);
            }
        }
        double sums[32];
        for (int l = 0; l < 8; l++)
            _mm256_storeu_pd(sums + 4 * l, lane[l]);
        double sum = lane_total(sums);
        for (; k < dim; k++)
            sum += q[k] * (double)half_to_float(x[k]);
        out[i] = sum;
    }
}

/* The same with AVX-512: eight halves become eight doubles in one register. */
__attribute__((target("avx512f,f16c")))
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
            __builtin_prefetch(next + k * sizeof(uint16_t));
            for (int part = 0; part < 4; part++) {
                __m512d wide = _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k + 8 * part))));
                lane[part] = _mm512_fmadd_pd(_mm512_loadu_pd(q + k + 8 * part), wide, lane[part]);
            }
        }
        double sums[32];
        for (int l = 0; l < 4; l++)
            _mm512_storeu_pd(sums + 8 * l, lane[l]);
        double sum = lane_total(sums);
        for (; k < dim; k++)
            sum += q[k] * (double)half_to_float(x[k]);
        out[i] = sum;
    }
}
#endif

static int f16c_available, avx512_available;

/* out[i] = the float32 dot product of the float32 query q with float16 row columns[i] of `rows` (any order of
 * summation: the refining bound covers it). */
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

#if defined(__GNUC__) && defined(__x86_64__)
/* The same with F16C and FMA, 32 halves a step. */
__attribute__((target("avx2,fma,f16c")))
static void float16_dots_f16c(const float *q, const uint16_t *rows, Py_ssize_t dim, const int64_t *columns,
                              Py_ssize_t count, float *out)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint16_t *x = rows + columns[i] * dim;
        const char *next = (const char *)(rows + columns[i + 1 < count ? i + 1 : i] * dim);
        __m256 lane[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        Py_ssize_t k = 0;
        for (; k + 32 <= dim; k += 32) {
            __builtin_prefetch(next + k * sizeof(uint16_t));
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
                         Py_ssize_t count, float *out)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (f16c_available) {
        float16_dots_f16c(q, rows, dim, columns, count, out);
        return;
    }
#endif
    float16_dots_portable(q, rows, dim, columns, count, out);
}

/* Float64 dot products of one float64 query with the stored rows `rows[0:count]` of float16, float32 or
 * float64 elements (`row`: dim floats of scratch for the portable float16 path). */
static void query_dots(const double *q, const void *matrix, int itemsize, Py_ssize_t dim, const int64_t *rows,
                       Py_ssize_t count, float *row, double *out)
{
    if (itemsize == 8) {
        dots_from_float64(q, matrix, dim, rows, count, out);
    } else if (itemsize == 4) {
        dots_from_float32(q, matrix, dim, rows, count, out);
    } else {
#if defined(__GNUC__) && defined(__x86_64__)
        if (avx512_available) {
            dots_from_float16_avx512(q, matrix, dim, rows, count, out);
            return;
        }
        if (f16c_available) {
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
WIDE_WHERE_AVAILABLE
static int64_t weight_at_least(const uint32_t *keys, const int64_t *weights, Py_ssize_t n, uint32_t least)
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
static float kth_largest_key(const uint32_t *keys, const int64_t *weights, Py_ssize_t n, int64_t k)
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
 * the left-over values[width * groups:n] (fewer than `groups`), which join the first groups. */
WIDE_WHERE_AVAILABLE
static void strided_maxima(const float *values, Py_ssize_t n, Py_ssize_t width, Py_ssize_t groups, float *maxima)
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

/* Whether any of values[0:SCAN] is at least `low`. */
#define SCAN 16
WIDE_WHERE_AVAILABLE
static int any_at_least(const float *values, float low)
{
    int any = 0;
    for (int l = 0; l < SCAN; l++)
        any |= values[l] >= low;
    return any;
}

/* Appends (column, value) for each column j in [first, last) with values[j] >= low to columns and kept_values
 * from position `kept` (without branches); returns the new count. */
static inline Py_ssize_t append_at_least(const float *values, Py_ssize_t first, Py_ssize_t last, double low,
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
static Py_ssize_t collect_at_least(const float *values, Py_ssize_t start, Py_ssize_t stop, double low,
                                   int64_t *columns, float *kept_values, Py_ssize_t kept)
{
    float low32 = (float)low;
    if ((double)low32 > low)
        low32 = nextafterf(low32, -INFINITY);
    Py_ssize_t j = start;
    for (; j + SCAN <= stop; j += SCAN)
        if (any_at_least(values + j, low32))
            kept = append_at_least(values, j, j + SCAN, low, columns, kept_values, kept);
    return append_at_least(values, j, stop, low, columns, kept_values, kept);
}

/* append_at_least over [start, stop) through the screen's tiles of TILE columns: a tile whose maximum is below
 * `low` is skipped. */
#define TILE 16
static Py_ssize_t collect_in_tiles(const float *values, const float *tile_maxima, Py_ssize_t start, Py_ssize_t stop,
                                   double low, int64_t *columns, float *kept_values, Py_ssize_t kept)
{
    /* the tiles to read are scattered over a row that is no longer in cache: ask for all of them first, so
     * their loads overlap instead of waiting one after another */
    for (Py_ssize_t t = start / TILE; t * TILE < stop; t++)
        if ((double)tile_maxima[t] >= low)
            __builtin_prefetch(values + t * TILE);
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

/* One query: each category's K nearest samples into index[c] and similarity[c] (row `r`). */
static void select_row(const Space *sp, const float *values, const float *tile_maxima, const double *q, double eps,
                       double refine_eps, Scratch *w, int64_t **index, double **similarity, Py_ssize_t r)
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
            if ((sp->block_patterns[b] >> c) & 1 && cut[c] < low)
                low = cut[c];
        if (low == INFINITY)
            continue;
        if (tile_maxima)
            kept = collect_in_tiles(values, tile_maxima, sp->block_starts[b], sp->block_stops[b], low, w->columns,
                                    w->values, kept);
        else
            kept = collect_at_least(values, sp->block_starts[b], sp->block_stops[b], low, w->columns, w->values, kept);
    }
    /* 3. Each category's candidates are those at or above its cut; their exact K-th value tightens the cut (by
     *    the re-screened values and their bound, where the columns have float16 copies). */
    const float *ranked = w->values;
    if (sp->refine) {
        for (Py_ssize_t k = 0; k < sp->dim; k++)
            w->q32[k] = (float)q[k];
        float16_dots(w->q32, sp->refine, sp->dim, w->columns, kept, w->refined);
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
    query_dots(q, sp->matrix, sp->itemsize, sp->dim, w->rows, needed, w->row, w->sims);
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
            for (int64_t s = starts[w->columns[i]]; s < starts[w->columns[i] + 1]; s++)
                w->found[count++] = (Found){w->sims[i], samples[s]};
        }
        order_first(w->found, count, k);
        for (int64_t j = 0; j < k; j++) {
            index[c][r * k + j] = w->found[j].sample;
            similarity[c][r * k + j] = w->found[j].similarity;
        }
    }
}


static int indices_in_range(const int64_t *values, Py_ssize_t n, Py_ssize_t limit, const char *name)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (values[i] < 0 || values[i] >= limit) {
            PyErr_Format(PyExc_IndexError, "%s[%zd] = %lld is outside 0..%zd", name, i, (long long)values[i], limit - 1);
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
    if (rows.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "rows must hold 64-bit integers");
        goto release_out;
    }
    Py_ssize_t dim = stored.shape[1], n = rows.shape[0];
    if (out.shape[0] != n || out.shape[1] != dim) {
        PyErr_Format(PyExc_ValueError, "out has shape (%zd, %zd), not (%zd, %zd)", out.shape[0], out.shape[1], n, dim);
        goto release_out;
    }
    if (!indices_in_range(rows.buf, n, stored.shape[0], "rows"))
        goto release_out;
    int from_half = stored.itemsize == 2;
    Py_BEGIN_ALLOW_THREADS
    if (from_half)
        gather_from_float16(stored.buf, dim, rows.buf, n, out.buf);
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
    if (get_array(stored_obj, &stored, 0, 2, "efd", "stored") < 0)
        return NULL;
    if (get_array(out_obj, &out, 1, 1, "d", "out") < 0)
        goto release_stored;
    Py_ssize_t n = stored.shape[0], dim = stored.shape[1];
    if (out.shape[0] != n) {
        PyErr_Format(PyExc_ValueError, "out holds %zd values for %zd rows", out.shape[0], n);
        goto release_out;
    }
    Py_ssize_t itemsize = stored.itemsize;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    if (itemsize == 2)
        failed = squares_of_float16(stored.buf, n, dim, out.buf);
    else if (itemsize == 4)
        squares_of_float32(stored.buf, n, dim, out.buf);
    else
        squares_of_float64(stored.buf, n, dim, out.buf);
    Py_END_ALLOW_THREADS
    if (failed)
        PyErr_NoMemory();
    else
        result = Py_NewRef(Py_None);
release_out:
    PyBuffer_Release(&out);
release_stored:
    PyBuffer_Release(&stored);
    return result;
}

/* Buffers taken from arguments, released together. */
typedef struct {
    Py_buffer views[64];
    int taken;
} Views;

static void *take(Views *v, PyObject *object, int writable, int dims, const char *formats, const char *name,
                  Py_buffer **view)
{
    if (v->taken == 64) {
        PyErr_SetString(PyExc_ValueError, "too many arrays");
        return NULL;
    }
    Py_buffer *slot = &v->views[v->taken];
    if (get_array(object, slot, writable, dims, formats, name) < 0)
        return NULL;
    v->taken++;
    if (view)
        *view = slot;
    return slot->buf;
}

static void release_views(Views *v)
{
    while (v->taken > 0)
        PyBuffer_Release(&v->views[--v->taken]);
}

static PyObject *select_neighbours(PyObject *self, PyObject *args)
{
    PyObject *o[23];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOOOOOOOOO:select_neighbours", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                          &o[6], &o[7], &o[8], &o[9], &o[10], &o[11], &o[12], &o[13], &o[14], &o[15], &o[16], &o[17],
                          &o[18], &o[19], &o[20], &o[21], &o[22]))
        return NULL;
    Views v = {.taken = 0};
    Py_buffer *values, *queries, *eps, *matrix, *blocks, *ks, *starts, *refine = NULL, *refine_eps = NULL;
    Py_buffer *tile_maxima = NULL, *tile_patterns = NULL;
    Space sp;
    Scratch w = {0};
    int64_t *index[64];
    double *similarity[64];
    PyObject *result = NULL;
    if (!take(&v, o[0], 0, 2, "f", "values", &values) || !take(&v, o[1], 0, 2, "d", "queries", &queries) ||
        !take(&v, o[2], 0, 1, "d", "eps", &eps) || !take(&v, o[3], 0, 2, "efd", "matrix", &matrix))
        goto done;
    sp.n = values->shape[1], sp.dim = queries->shape[1];
    sp.matrix = matrix->buf, sp.itemsize = (int)matrix->itemsize;
    sp.matrix_rows = o[4] == Py_None ? NULL : take(&v, o[4], 0, 1, "lq", "matrix_rows", NULL);
    sp.divisors = o[5] == Py_None ? NULL : take(&v, o[5], 0, 1, "d", "divisors", NULL);
    if ((o[4] != Py_None && !sp.matrix_rows) || (o[5] != Py_None && !sp.divisors))
        goto done;
    if (!(sp.block_starts = take(&v, o[6], 0, 1, "lq", "block_starts", &blocks)) ||
        !(sp.block_stops = take(&v, o[7], 0, 1, "lq", "block_stops", NULL)) ||
        !(sp.block_patterns = take(&v, o[8], 0, 1, "lq", "block_patterns", NULL)) ||
        !(sp.widths = take(&v, o[9], 0, 1, "lq", "widths", NULL)) ||
        !(sp.groups = take(&v, o[10], 0, 1, "lq", "groups", NULL)) ||
        !(sp.group_offsets = take(&v, o[11], 0, 1, "lq", "group_offsets", NULL)) ||
        !(sp.ks = take(&v, o[12], 0, 1, "lq", "ks", &ks)) ||
        !(sp.starts = take(&v, o[13], 0, 2, "lq", "starts", &starts)) ||
        !(sp.counts = take(&v, o[14], 0, 2, "lq", "counts", NULL)) ||
        !(sp.samples = take(&v, o[15], 0, 1, "lq", "samples", NULL)) ||
        !(sp.sample_offsets = take(&v, o[16], 0, 1, "lq", "sample_offsets", NULL)))
        goto done;
    sp.n_blocks = blocks->shape[0], sp.n_categories = ks->shape[0];
    Py_ssize_t rows = values->shape[0];
    sp.refine = NULL, sp.tiles = 0, sp.tile_patterns = NULL;
    if ((o[21] == Py_None) != (o[22] == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "select_neighbours: tile_maxima and tile_patterns go together");
        goto done;
    }
    if (o[21] != Py_None) {
        if (!take(&v, o[21], 0, 2, "f", "tile_maxima", &tile_maxima) ||
            !(sp.tile_patterns = take(&v, o[22], 0, 1, "lq", "tile_patterns", &tile_patterns)))
            goto done;
        sp.tiles = tile_patterns->shape[0];
        if (sp.tiles != (sp.n + TILE - 1) / TILE || tile_maxima->shape[0] != rows || tile_maxima->shape[1] != sp.tiles) {
            PyErr_SetString(PyExc_ValueError, "select_neighbours: tile_maxima needs (queries, tiles of 16 columns) "
                                              "and tile_patterns (tiles)");
            goto done;
        }
    }
    if ((o[19] == Py_None) != (o[20] == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "select_neighbours: refine and refine_eps go together");
        goto done;
    }
    if (o[19] != Py_None) {
        if (!(sp.refine = take(&v, o[19], 0, 2, "e", "refine", &refine)) ||
            !take(&v, o[20], 0, 1, "d", "refine_eps", &refine_eps))
            goto done;
        if (refine->shape[0] != sp.n || refine->shape[1] != sp.dim || refine_eps->shape[0] != rows) {
            PyErr_SetString(PyExc_ValueError, "select_neighbours: refine needs (columns, dim) and refine_eps (queries)");
            goto done;
        }
    }
    if (queries->shape[0] != rows || eps->shape[0] != rows || matrix->shape[1] != sp.dim ||
        starts->shape[0] != sp.n_categories || starts->shape[1] != sp.n + 1 || sp.n_categories > 63 ||
        !PyTuple_Check(o[17]) || !PyTuple_Check(o[18]) || PyTuple_GET_SIZE(o[17]) != sp.n_categories ||
        PyTuple_GET_SIZE(o[18]) != sp.n_categories) {
        PyErr_SetString(PyExc_ValueError, "select_neighbours: the arrays do not describe one search space");
        goto done;
    }
    Py_ssize_t most = 1;
    for (Py_ssize_t c = 0; c < sp.n_categories; c++) {
        Py_buffer *out_index, *out_similarity;
        if (!(index[c] = take(&v, PyTuple_GET_ITEM(o[17], c), 1, 2, "lq", "index", &out_index)) ||
            !(similarity[c] = take(&v, PyTuple_GET_ITEM(o[18], c), 1, 2, "d", "similarity", &out_similarity)))
            goto done;
        if (out_index->shape[0] != rows || out_index->shape[1] != sp.ks[c] || out_similarity->shape[0] != rows ||
            out_similarity->shape[1] != sp.ks[c]) {
            PyErr_SetString(PyExc_ValueError, "select_neighbours: each category's outputs need (queries, K) values");
            goto done;
        }
        Py_ssize_t held = sp.sample_offsets[c + 1] - sp.sample_offsets[c];
        most = held > most ? held : most;
    }
    if (sp.matrix_rows ? !indices_in_range(sp.matrix_rows, sp.n, matrix->shape[0], "matrix_rows")
                       : matrix->shape[0] < sp.n) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_IndexError, "select_neighbours: the matrix has fewer rows than columns");
        goto done;
    }
    size_t n = (size_t)sp.n + 1;
    w.keys = malloc(n * sizeof(uint32_t)), w.weights = malloc(n * sizeof(int64_t)), w.columns = malloc(n * sizeof(int64_t)), w.values = malloc(n * sizeof(float));
    w.needed = malloc(n * sizeof(uint64_t)), w.sims = malloc(n * sizeof(double)), w.rows = malloc(n * sizeof(int64_t));
    w.maxima = malloc(n * sizeof(float));
    w.found = malloc((size_t)most * sizeof(Found)), w.row = malloc((size_t)(sp.dim + 1) * sizeof(float));
    w.refined = malloc(n * sizeof(float)), w.q32 = malloc((size_t)(sp.dim + 1) * sizeof(float));
    if (!w.keys || !w.weights || !w.columns || !w.values || !w.needed || !w.sims || !w.rows || !w.maxima ||
        !w.found || !w.row || !w.refined || !w.q32) {
        PyErr_NoMemory();
        goto done;
    }
    const float *value_rows = values->buf;
    const double *query_rows = queries->buf, *bounds = eps->buf, *refine_bounds = refine_eps ? refine_eps->buf : NULL;
    const float *maxima_rows = tile_maxima ? tile_maxima->buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++)
        select_row(&sp, value_rows + r * sp.n, maxima_rows ? maxima_rows + r * sp.tiles : NULL, query_rows + r * sp.dim,
                   bounds[r], refine_bounds ? refine_bounds[r] : 0.0, &w, index, similarity, r);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    free(w.keys), free(w.weights), free(w.columns), free(w.values), free(w.needed), free(w.sims), free(w.rows);
    free(w.maxima), free(w.found), free(w.row), free(w.refined), free(w.q32);
    release_views(&v);
    return result;
}

static int cpu_f16c, cpu_avx512; /* what the CPU supports */

static void use_vector_extensions(int enabled)
{
#if defined(__GNUC__) && defined(__x86_64__)
    halves_to_floats = enabled && cpu_f16c ? halves_to_floats_f16c : halves_to_floats_portable;
#endif
    f16c_available = enabled && cpu_f16c;
    avx512_available = enabled && cpu_avx512;
}

static PyObject *vector_extensions(PyObject *self, PyObject *args)
{
    PyObject *enabled = Py_None;
    if (!PyArg_ParseTuple(args, "|O:vector_extensions", &enabled))
        return NULL;
    PyObject *previous = PyBool_FromLong(f16c_available);
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

static PyMethodDef methods[] = {
    {"gather_float32", gather_float32, METH_VARARGS,
     "gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32 (float16 or float32 rows)."},
    {"sums_of_squares", sums_of_squares, METH_VARARGS,
     "sums_of_squares(stored, out): out[i] = float64 sum of the squares of row i."},
    {"select_neighbours", select_neighbours, METH_VARARGS,
     "select_neighbours(values, queries, eps, matrix, matrix_rows, divisors, block_starts, block_stops, "
     "block_patterns, widths, groups, group_offsets, ks, starts, counts, samples, sample_offsets, index, similarity, "
     "refine, refine_eps, tile_maxima, tile_patterns)"},
    {"vector_extensions", vector_extensions, METH_VARARGS,
     "vector_extensions(enabled=None): whether float16 rows use F16C/AVX-512; returns the previous setting."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "The model's inner loops over stored rows.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__kernels(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    cpu_f16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    cpu_avx512 = cpu_f16c && __builtin_cpu_supports("avx512f");
#endif
    use_vector_extensions(1);
    return PyModule_Create(&module);
}
