/* The similarity screen on AMX tiles: bfloat16 products accumulated in float32.
 *
 * available(): whether this CPU has AMX-BF16 and AVX512-BF16 and the kernel lets this process use the tiles.
 * pack_columns(stored, rows, scales, packed, residuals, lengths): columns x_j = stored[rows[j]] * scales[j]
 *     (float16 or float32 rows, multiplied in float32) rounded to bfloat16 and laid out as TDPBF16PS reads its
 *     second operand: per tile of 16 columns and 32 dimensions, 16 rows of 16 column pairs of dimensions
 *     (packed_size(n, dim) values; tiles in the order the screen reads them, see tile_at); residuals[j] =
 *     |x_j - bfloat16(x_j)| and lengths[j] = |x_j|, in float64. The screen runs fastest on a packed array that
 *     starts on a 64-byte boundary (a tile row).
 * screen(queries, packed, out, norms, residuals, maxima, norms64, largest): out (rows, n) = the float32 sums of
 *     the bfloat16 products of float32(queries) with the packed columns; norms[i] = |float32(q_i)| and
 *     residuals[i] = |float32(q_i) - bfloat16(float32(q_i))|, in float64, for the error bound; maxima[i, J] =
 *     the largest of out[i, 16 J : 16 J + 16], each tile's row maxima, taken while the tile is in cache;
 *     norms64[i] = |q_i| and largest[i] = the largest |q_ik| (NaN when q_i holds a NaN or an infinity). When out
 *     starts on a 64-byte boundary and n is a multiple of 16, whole tiles go to it with streaming stores (past the
 *     caches, which keep the columns).
 * packed_size(n, dim): the values pack_columns writes.
 *
 * Rounding to bfloat16 is to nearest, ties to even; inputs below 2^-126 become zero (the residual holds them).
 * TDPBF16PS multiplies exactly, adds in float32 rounding to nearest, and flushes results below 2^-126 to
 * zero: percept.model.screens bounds what that leaves out. The GIL is released while the tiles run.
 *
 * The tiles are built by GCC 11 or later and clang 14 or later for x86-64 Linux (the kernel must grant them to the
 * process); elsewhere the module builds without them and available() is False.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>

#include "_arrays.h"
#include "_cpu.h"

#if defined(X86_64) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define HAVE_TILES 1
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Dimensions per tile row (32 bfloat16 = 64 bytes) and columns or queries per tile. */
#define DIMS 32
#define ROWS 16
#define TILE (ROWS * DIMS)
/* Column tiles per chunk of the screen (256 columns: 512 KB of bfloat16 at 1024 dimensions, which stays in the
 * core's second-level cache beside the queries' tiles). */
#define CHUNK_TILES 16

static Py_ssize_t packed_values(Py_ssize_t n, Py_ssize_t dim)
{
    return (n + ROWS - 1) / ROWS * ((dim + DIMS - 1) / DIMS) * TILE;
}

/* Where tile (J, kb) of `tiles` tiles of 16 rows by `blocks` blocks of 32 dimensions starts: in pairs of tiles
 * (J = 2P, 2P + 1), the two tiles of each block of dimensions side by side (one tile when the last is alone). The
 * screen reads a pair a block of dimensions at a time: 2 KB in a row, the next pair's right after. */
static Py_ssize_t tile_at(Py_ssize_t J, Py_ssize_t kb, Py_ssize_t tiles, Py_ssize_t blocks)
{
    Py_ssize_t first = J - J % 2, width = first + 1 < tiles ? 2 : 1;
    return (first * blocks + kb * width + J % 2) * TILE;
}

#ifdef HAVE_TILES
#define TILE_TARGET TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

static int tiles_usable;

/* Whether the CPU has the tiles and the kernel grants them to this process. */
static int request_tiles(void)
{
    const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return cpu_features().amx_bf16 && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* 32 float32 values (the last `count` may be fewer: zeros after) as bfloat16; adds their squared residuals
 * (and, when `squares` is given, their squares) to the float64 sums. */
TILE_TARGET
static __m512i to_bfloat16(const float *x, Py_ssize_t count, __m512d *residual, __m512d *squares)
{
    __mmask16 low = count >= 16 ? 0xffff : (__mmask16)((1u << count) - 1);
    __mmask16 high = count >= 32 ? 0xffff : count <= 16 ? 0 : (__mmask16)((1u << (count - 16)) - 1);
    __m512 a = _mm512_maskz_loadu_ps(low, x), b = _mm512_maskz_loadu_ps(high, x + 16);
    __m512bh packed = _mm512_cvtne2ps_pbh(b, a);
    __m512i bits = (__m512i)packed;
    __m512 back_a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(bits)), 16));
    __m512 back_b = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(bits, 1)), 16));
    __m512 ra = _mm512_sub_ps(a, back_a), rb = _mm512_sub_ps(b, back_b); /* exact */
    __m512d parts[4] = {_mm512_cvtps_pd(_mm512_castps512_ps256(ra)),
                        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(ra), 1))),
                        _mm512_cvtps_pd(_mm512_castps512_ps256(rb)),
                        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(rb), 1)))};
    for (int p = 0; p < 4; p++)
        *residual = _mm512_fmadd_pd(parts[p], parts[p], *residual);
    if (squares) {
        __m512d whole[4] = {_mm512_cvtps_pd(_mm512_castps512_ps256(a)),
                            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))),
                            _mm512_cvtps_pd(_mm512_castps512_ps256(b)),
                            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1)))};
        for (int p = 0; p < 4; p++)
            *squares = _mm512_fmadd_pd(whole[p], whole[p], *squares);
    }
    return bits;
}

/* Column j = stored row rows[j] (float16 or float32, converted exactly) times scales[j] in float32, for j < n, into
 * tiles: tile (J, kb), at tile_at, holds in row kk the pair of dimensions (2kk, 2kk + 1) of its 16 columns side by
 * side (a 16 x 16 transpose of 32-bit pairs). Also each column's residual and float64 length. */
TILE_TARGET
static void pack_column_tiles(const void *stored, int half, Py_ssize_t dim, const int64_t *rows, const float *scales,
                              Py_ssize_t n, uint16_t *packed, double *residuals, double *lengths)
{
    Py_ssize_t blocks = (dim + DIMS - 1) / DIMS;
    uint32_t tile[ROWS][ROWS] __attribute__((aligned(64)));
    float values[DIMS] __attribute__((aligned(64)));
    Py_ssize_t tiles = (n + ROWS - 1) / ROWS;
    for (Py_ssize_t J = 0; J < tiles; J++) {
        Py_ssize_t width = n - J * ROWS < ROWS ? n - J * ROWS : ROWS;
        __m512d residual[ROWS], squares[ROWS];
        for (int c = 0; c < ROWS; c++)
            residual[c] = squares[c] = _mm512_setzero_pd();
        for (Py_ssize_t kb = 0; kb < blocks; kb++) {
            uint32_t *out = (uint32_t *)(packed + tile_at(J, kb, tiles, blocks));
            Py_ssize_t count = dim - kb * DIMS < DIMS ? dim - kb * DIMS : DIMS;
            __mmask16 low = count >= 16 ? 0xffff : (__mmask16)((1u << count) - 1);
            __mmask16 high = count >= 32 ? 0xffff : count <= 16 ? 0 : (__mmask16)((1u << (count - 16)) - 1);
            for (int c = 0; c < ROWS; c++) {
                if (c >= width) {
                    _mm512_store_si512(tile[c], _mm512_setzero_si512());
                    continue;
                }
                Py_ssize_t at = rows[J * ROWS + c] * dim + kb * DIMS;
                __m512 a, b, scale = _mm512_set1_ps(scales[J * ROWS + c]);
                if (half) {
                    const uint16_t *h = (const uint16_t *)stored + at;
                    a = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(low, h));
                    b = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(high, h + 16));
                } else {
                    const float *f = (const float *)stored + at;
                    a = _mm512_maskz_loadu_ps(low, f);
                    b = _mm512_maskz_loadu_ps(high, f + 16);
                }
                _mm512_store_ps(values, _mm512_mul_ps(a, scale));
                _mm512_store_ps(values + 16, _mm512_mul_ps(b, scale));
                _mm512_store_si512(tile[c], to_bfloat16(values, count, &residual[c], &squares[c]));
            }
            for (int kk = 0; kk < ROWS; kk++)
                for (int c = 0; c < ROWS; c++)
                    out[kk * ROWS + c] = tile[c][kk];
        }
        for (int c = 0; c < width; c++) {
            residuals[J * ROWS + c] = sqrt(_mm512_reduce_add_pd(residual[c]));
            lengths[J * ROWS + c] = sqrt(_mm512_reduce_add_pd(squares[c]));
        }
    }
}

/* Float64 query rows into row-major bfloat16 tiles (16 rows of 32 dimensions, zero padded, at tile_at) through
 * their float32 roundings, with per row: |float32(q)|, the bfloat16 residual, |q| and the largest |q_k| (NaN when
 * the row holds a NaN or an infinity). */
TILE_TARGET
static void pack_query_tiles(const double *q, Py_ssize_t rows, Py_ssize_t dim, uint16_t *a, double *norms,
                             double *residuals, double *norms64, double *largest)
{
    Py_ssize_t blocks = (dim + DIMS - 1) / DIMS, tiles = (rows + ROWS - 1) / ROWS;
    float row[DIMS] __attribute__((aligned(64)));
    const __m512d magnitude = _mm512_castsi512_pd(_mm512_set1_epi64(0x7fffffffffffffffLL));
    memset(a, 0, (size_t)packed_values(rows, dim) * sizeof(uint16_t));
    for (Py_ssize_t i = 0; i < rows; i++) {
        __m512d residual = _mm512_setzero_pd(), squares = _mm512_setzero_pd(), wide = _mm512_setzero_pd();
        __m512d top = _mm512_setzero_pd();
        __mmask8 nonfinite = 0;
        for (Py_ssize_t kb = 0; kb < blocks; kb++) {
            Py_ssize_t count = dim - kb * DIMS < DIMS ? dim - kb * DIMS : DIMS;
            for (Py_ssize_t k = 0; k < DIMS; k += 8) {
                __mmask8 mask = count - k >= 8 ? 0xff : count > k ? (__mmask8)((1u << (count - k)) - 1) : 0;
                __m512d x = _mm512_maskz_loadu_pd(mask, q + i * dim + kb * DIMS + k);
                wide = _mm512_fmadd_pd(x, x, wide);
                top = _mm512_max_pd(top, _mm512_and_pd(x, magnitude));
                nonfinite |= _mm512_fpclass_pd_mask(x, 0x99); /* NaN or infinity */
                _mm256_store_ps(row + k, _mm512_cvtpd_ps(x));
            }
            __m512i bits = to_bfloat16(row, count, &residual, &squares);
            _mm512_storeu_si512(a + tile_at(i / ROWS, kb, tiles, blocks) + (i % ROWS) * DIMS, bits);
        }
        norms[i] = sqrt(_mm512_reduce_add_pd(squares));
        residuals[i] = sqrt(_mm512_reduce_add_pd(residual));
        norms64[i] = sqrt(_mm512_reduce_add_pd(wide));
        largest[i] = nonfinite ? NAN : _mm512_reduce_max_pd(top);
    }
}

/* maxima[r * tiles] = the largest of the first `width` values of row r of a tile (rows `stride` apart), for
 * its first `height` rows. */
TILE_TARGET
static inline void row_maxima(const float *tile, Py_ssize_t stride, Py_ssize_t width, Py_ssize_t height,
                              float *maxima, Py_ssize_t tiles)
{
    __mmask16 mask = width >= ROWS ? 0xffff : (__mmask16)((1u << width) - 1);
    for (Py_ssize_t r = 0; r < height; r++)
        maxima[r * tiles] = _mm512_mask_reduce_max_ps(mask, _mm512_maskz_loadu_ps(mask, tile + r * stride));
}

/* Two vectors of partial maxima into one: the largest of lanes i and i + half of each run of 2 half lanes, the
 * runs of x then those of y (`first` and `second` pick the lanes of the pairs). */
TILE_TARGET
static inline __m512 fold(__m512 x, __m512 y, __m512i first, __m512i second)
{
    return _mm512_max_ps(_mm512_permutex2var_ps(x, first, y), _mm512_permutex2var_ps(x, second, y));
}

/* The largest of each of 16 rows of 16 values, in one vector: the rows folded together in four rounds, each
 * halving the values held per row (15 folds rather than 16 reductions of 4 shuffles each). */
TILE_TARGET
static inline __m512 maxima_of_rows(const __m512 *row)
{
    const __m512i halves[2] = {_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                               _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)};
    const __m512i quarters[2] = {_mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
                                 _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31)};
    const __m512i eighths[2] = {_mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29),
                                _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31)};
    const __m512i lanes[2] = {_mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
                              _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)};
    __m512 eight[8], four[4], two[2];
    for (int i = 0; i < 8; i++) /* rows 2i, 2i + 1: 8 values each */
        eight[i] = fold(row[2 * i], row[2 * i + 1], halves[0], halves[1]);
    for (int i = 0; i < 4; i++) /* rows 4i .. 4i + 3: 4 each */
        four[i] = fold(eight[2 * i], eight[2 * i + 1], quarters[0], quarters[1]);
    for (int i = 0; i < 2; i++) /* rows 8i .. 8i + 7: 2 each */
        two[i] = fold(four[2 * i], four[2 * i + 1], eighths[0], eighths[1]);
    return fold(two[0], two[1], lanes[0], lanes[1]);
}

/* A whole tile, stored to `tile` (1 KB, 64-byte aligned), into out at dst (64-byte aligned, rows n apart) with
 * streaming stores (the block of values is read again only after every tile is written: caching it would push
 * the columns out), and its rows' maxima into top (rows `tiles` apart). */
TILE_TARGET
static inline void stream_tile(const float *tile, float *dst, Py_ssize_t n, float *top, Py_ssize_t tiles)
{
    __m512 row[ROWS];
    float maxima[ROWS] __attribute__((aligned(64)));
    for (int r = 0; r < ROWS; r++) {
        row[r] = _mm512_load_ps(tile + r * ROWS);
        _mm512_stream_ps(dst + r * n, row[r]);
    }
    _mm512_store_ps(maxima, maxima_of_rows(row));
    for (int r = 0; r < ROWS; r++)
        top[r * tiles] = maxima[r];
}

/* A tile into out (rows x n) at tile row I, tile column J: streamed when whole and aligned, else straight when
 * whole, through `edge` at the borders; then its rows' maxima into maxima (rows x tiles). */
#define STORE(t, I, J)                                                                                         \
    do {                                                                                                        \
        float *dst = out + (I) * ROWS * n + (J) * ROWS, *top = maxima + (I) * ROWS * tiles + (J);               \
        if (((I) + 1) * ROWS <= rows && ((J) + 1) * ROWS <= n && aligned) {                                     \
            _tile_stored(t, edge, ROWS * sizeof(float));                                                       \
            stream_tile(edge[0], dst, n, top, tiles);                                                          \
        } else if (((I) + 1) * ROWS <= rows && ((J) + 1) * ROWS <= n) {                                         \
            _tile_stored(t, dst, n * sizeof(float));                                                           \
            row_maxima(dst, n, ROWS, ROWS, top, tiles);                                                        \
        } else {                                                                                                \
            _tile_stored(t, edge, ROWS * sizeof(float));                                                       \
            Py_ssize_t w = n - (J) * ROWS < ROWS ? n - (J) * ROWS : ROWS;                                      \
            Py_ssize_t h = rows - (I) * ROWS < ROWS ? rows - (I) * ROWS : ROWS;                                \
            for (Py_ssize_t r = 0; r < h; r++)                                                                  \
                memcpy(dst + r * n, edge[r], (size_t)w * sizeof(float));                                       \
            row_maxima(edge[0], ROWS, w, h, top, tiles);                                                       \
        }                                                                                                       \
    } while (0)

/* out = a . packed: two tile rows of queries by two tile columns of columns at a time (tiles 0-3 accumulate,
 * 4-5 hold queries, 6-7 columns), each pair read as tile_at lays it out. Columns go in chunks that stay in the
 * core's cache while every pair of query tiles passes them; the output is written a chunk of each row at a time
 * (one pass down all rows per pair of column tiles wrote to a new page at every row, and the stores then took
 * most of the time). */
TILE_TARGET
static void screen_tiles(const uint16_t *a, Py_ssize_t rows, Py_ssize_t dim, const uint16_t *packed, Py_ssize_t n,
                         float *out, float *maxima)
{
    Py_ssize_t blocks = (dim + DIMS - 1) / DIMS, row_tiles = (rows + ROWS - 1) / ROWS, column_tiles = (n + ROWS - 1) / ROWS;
    Py_ssize_t tiles = column_tiles;
    TileConfig config = {.palette = 1};
    for (int t = 0; t < 8; t++)
        config.rows[t] = ROWS, config.colsb[t] = DIMS * sizeof(uint16_t);
    _tile_loadconfig(&config);
    float edge[ROWS][ROWS] __attribute__((aligned(64)));
    int aligned = (uintptr_t)out % 64 == 0 && n % ROWS == 0; /* every whole tile's rows start on a cache line */
    for (Py_ssize_t first = 0; first < column_tiles; first += CHUNK_TILES) {
        Py_ssize_t last = first + CHUNK_TILES < column_tiles ? first + CHUNK_TILES : column_tiles;
        for (Py_ssize_t I = 0; I < row_tiles; I += 2) {
            Py_ssize_t I1 = I + 1 < row_tiles ? I + 1 : I; /* an odd last tile is computed twice, stored once */
            const uint16_t *a0 = a + tile_at(I, 0, row_tiles, blocks), *a1 = a + tile_at(I1, 0, row_tiles, blocks);
            Py_ssize_t a_step = (I1 != I ? 2 : 1) * TILE; /* from one block of dimensions to the next */
            for (Py_ssize_t J = first; J < last; J += 2) {
                Py_ssize_t J1 = J + 1 < last ? J + 1 : J;
                const uint16_t *b0 = packed + tile_at(J, 0, column_tiles, blocks);
                const uint16_t *b1 = packed + tile_at(J1, 0, column_tiles, blocks);
                Py_ssize_t b_step = (J + 1 < column_tiles ? 2 : 1) * TILE;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (Py_ssize_t kb = 0; kb < blocks; kb++) {
                    _tile_loadd(4, a0 + kb * a_step, DIMS * sizeof(uint16_t));
                    _tile_loadd(6, b0 + kb * b_step, DIMS * sizeof(uint16_t));
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_loadd(7, b1 + kb * b_step, DIMS * sizeof(uint16_t));
                    _tile_dpbf16ps(1, 4, 7);
                    _tile_loadd(5, a1 + kb * a_step, DIMS * sizeof(uint16_t));
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
                STORE(0, I, J);
                if (J1 != J)
                    STORE(1, I, J1);
                if (I1 != I)
                    STORE(2, I1, J);
                if (I1 != I && J1 != J)
                    STORE(3, I1, J1);
            }
        }
    }
    _mm_sfence(); /* the streamed stores before any that follow */
    _tile_release();
}
#endif


static int refuse_without_tiles(void)
{
#ifdef HAVE_TILES
    if (tiles_usable)
        return 0;
#endif
    PyErr_SetString(PyExc_RuntimeError, "AMX tiles are not available on this machine");
    return 1;
}

static PyObject *available(PyObject *self, PyObject *unused)
{
#ifdef HAVE_TILES
    return PyBool_FromLong(tiles_usable);
#else
    return Py_NewRef(Py_False);
#endif
}

static PyObject *packed_size(PyObject *self, PyObject *args)
{
    Py_ssize_t n, dim;
    if (!PyArg_ParseTuple(args, "nn:packed_size", &n, &dim))
        return NULL;
    return PyLong_FromSsize_t(packed_values(n, dim));
}

static const ArraySpec PACK_ARGUMENTS[6] = {{"stored", "ef", 2, 0},   {"rows", "lq", 1, 0},     {"scales", "f", 1, 0},
                                            {"packed", "H", 1, 1},    {"residuals", "d", 1, 1}, {"lengths", "d", 1, 1}};

static PyObject *pack_columns(PyObject *self, PyObject *args)
{
    Py_buffer views[6];
    if (refuse_without_tiles() || !take_arrays(args, "pack_columns", 6, PACK_ARGUMENTS, views))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t stored = views[0].shape[0], dim = views[0].shape[1], n = views[1].shape[0];
    if (views[2].shape[0] != n || views[3].shape[0] != packed_values(n, dim) || views[4].shape[0] != n ||
        views[5].shape[0] != n) {
        PyErr_Format(PyExc_ValueError, "pack_columns: %zd columns need %zd scales, %zd packed values, %zd residuals "
                     "and %zd lengths", n, n, packed_values(n, dim), n, n);
        goto done;
    }
    const int64_t *rows = views[1].buf;
    for (Py_ssize_t j = 0; j < n; j++)
        if (rows[j] < 0 || rows[j] >= stored) {
            PyErr_Format(PyExc_IndexError, "pack_columns: row %lld is outside 0..%zd", (long long)rows[j], stored - 1);
            goto done;
        }
#ifdef HAVE_TILES
    int half = views[0].itemsize == 2; /* float16 rather than float32 */
    Py_BEGIN_ALLOW_THREADS
    pack_column_tiles(views[0].buf, half, dim, rows, views[2].buf, n, views[3].buf, views[4].buf, views[5].buf);
    Py_END_ALLOW_THREADS
#endif
    result = Py_NewRef(Py_None);
done:
    release_arrays(views, 6);
    return result;
}

static const ArraySpec SCREEN_ARGUMENTS[8] = {{"queries", "d", 2, 0}, {"packed", "H", 1, 0},    {"out", "f", 2, 1},
                                              {"norms", "d", 1, 1},   {"residuals", "d", 1, 1}, {"maxima", "f", 2, 1},
                                              {"norms64", "d", 1, 1}, {"largest", "d", 1, 1}};

static PyObject *screen(PyObject *self, PyObject *args)
{
    Py_buffer views[8];
    if (refuse_without_tiles() || !take_arrays(args, "screen", 8, SCREEN_ARGUMENTS, views))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t rows = views[0].shape[0], dim = views[0].shape[1], n = views[2].shape[1];
    if (views[1].shape[0] != packed_values(n, dim) || views[2].shape[0] != rows || views[3].shape[0] != rows ||
        views[4].shape[0] != rows || views[5].shape[0] != rows || views[5].shape[1] != (n + ROWS - 1) / ROWS ||
        views[6].shape[0] != rows || views[7].shape[0] != rows) {
        PyErr_SetString(PyExc_ValueError, "screen: queries, packed columns and the outputs do not agree");
        goto done;
    }
#ifdef HAVE_TILES
    uint16_t *a = aligned_alloc(64, ((size_t)packed_values(rows, dim) * sizeof(uint16_t) + 63) / 64 * 64 + 64);
    if (!a) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    pack_query_tiles(views[0].buf, rows, dim, a, views[3].buf, views[4].buf, views[6].buf, views[7].buf);
    if (rows > 0 && n > 0)
        screen_tiles(a, rows, dim, views[1].buf, n, views[2].buf, views[5].buf);
    Py_END_ALLOW_THREADS
    free(a);
#endif
    result = Py_NewRef(Py_None);
done:
    release_arrays(views, 8);
    return result;
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "available(): whether AMX tiles can be used here."},
    {"packed_size", packed_size, METH_VARARGS, "packed_size(n, dim): values pack_columns writes for n columns."},
    {"pack_columns", pack_columns, METH_VARARGS,
     "pack_columns(stored, rows, scales, packed, residuals, lengths): scaled stored rows as bfloat16 tiles."},
    {"screen", screen, METH_VARARGS,
     "screen(queries, packed, out, norms, residuals, maxima, norms64, largest): bfloat16 products of the "
     "queries with packed columns, each tile's row maxima, and the queries' norms."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tiles",
                                    "The similarity screen on AMX tiles (bfloat16 products accumulated in float32).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__tiles(void)
{
#ifdef HAVE_TILES
    tiles_usable = request_tiles();
#endif
    return PyModule_Create(&module);
}
