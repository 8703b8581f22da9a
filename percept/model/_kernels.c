/* The model's inner loops over stored rows, in plain C (no dependencies).
 *
 * pair_dots(queries, vectors, rows, cols, out): out[i] = sum_k queries[rows[i], k] * vectors[cols[i], k] for
 *     float64 queries and float32 or float64 vectors, summed in float64: the exact search's re-ranking,
 *     without the gathered float64 copies numpy would make.
 * gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32, for float16 or float32 rows
 *     (exact conversions).
 * sums_of_squares(stored, out): out[i] = sum_k stored[i, k]^2 in float64, for float16, float32 or float64 rows.
 *
 * Float64 sums run over LANES partial sums added pairwise at the end: a fixed order on every machine.
 * Indices are checked; the GIL is released while the loops run, so search threads work side by side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* One build runs everywhere; machines with AVX-512, or AVX2 and FMA, take a wider clone. */
#define WIDE_WHERE_AVAILABLE __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#else
#define WIDE_WHERE_AVAILABLE
#endif

/* Independent partial sums per pair: enough to keep two FMA units busy through their latency. */
#define LANES 32

/* The lanes added pairwise (a fixed order, so results do not depend on the machine's vector width). */
static inline double lane_total(double *lane)
{
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++)
            lane[l] += lane[l + width];
    return lane[0];
}

WIDE_WHERE_AVAILABLE
static void dots_from_float32(const double *queries, const float *vectors, Py_ssize_t dim, const int64_t *rows,
                              const int64_t *cols, Py_ssize_t pairs, double *out)
{
    for (Py_ssize_t i = 0; i < pairs; i++) {
        const double *q = queries + rows[i] * dim;
        const float *x = vectors + cols[i] * dim;
        const char *next = (const char *)(vectors + cols[i + 1 < pairs ? i + 1 : i] * dim);
        double lane[LANES] = {0};
        Py_ssize_t k = 0;
        for (; k + LANES <= dim; k += LANES) {
            /* the next pair's row, two cache lines per step: its first loads do not wait on memory */
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
static void dots_from_float64(const double *queries, const double *vectors, Py_ssize_t dim, const int64_t *rows,
                              const int64_t *cols, Py_ssize_t pairs, double *out)
{
    for (Py_ssize_t i = 0; i < pairs; i++) {
        const double *q = queries + rows[i] * dim;
        const double *x = vectors + cols[i] * dim;
        const char *next = (const char *)(vectors + cols[i + 1 < pairs ? i + 1 : i] * dim);
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

/* A C-contiguous buffer of `dims` dimensions whose format is one of `formats` (single characters). */
static int get_array(PyObject *object, Py_buffer *view, int writable, int dims, const char *formats,
                     const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0)
        return -1;
    const char *format = view->format ? view->format : "B";
    if (format[0] == '=' || format[0] == '<' || format[0] == '@')
        format++;
    if (view->ndim != dims || strlen(format) != 1 || !strchr(formats, format[0])) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %d-D array of type '%s', got '%s' with %d dimensions",
                     name, dims, formats, view->format ? view->format : "B", view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
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

static PyObject *pair_dots(PyObject *self, PyObject *args)
{
    PyObject *queries_obj, *vectors_obj, *rows_obj, *cols_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO:pair_dots", &queries_obj, &vectors_obj, &rows_obj, &cols_obj, &out_obj))
        return NULL;
    Py_buffer queries, vectors, rows, cols, out;
    PyObject *result = NULL;
    if (get_array(queries_obj, &queries, 0, 2, "d", "queries") < 0)
        return NULL;
    if (get_array(vectors_obj, &vectors, 0, 2, "fd", "vectors") < 0)
        goto release_queries;
    if (get_array(rows_obj, &rows, 0, 1, "lq", "rows") < 0)
        goto release_vectors;
    if (get_array(cols_obj, &cols, 0, 1, "lq", "cols") < 0)
        goto release_rows;
    if (get_array(out_obj, &out, 1, 1, "d", "out") < 0)
        goto release_cols;
    if (rows.itemsize != 8 || cols.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "rows and cols must hold 64-bit integers");
        goto release_out;
    }
    Py_ssize_t dim = queries.shape[1], pairs = rows.shape[0];
    if (vectors.shape[1] != dim || cols.shape[0] != pairs || out.shape[0] != pairs) {
        PyErr_Format(PyExc_ValueError, "shapes do not agree: queries (%zd, %zd), vectors (%zd, %zd), "
                     "rows (%zd), cols (%zd), out (%zd)", queries.shape[0], dim, vectors.shape[0], vectors.shape[1],
                     pairs, cols.shape[0], out.shape[0]);
        goto release_out;
    }
    if (!indices_in_range(rows.buf, pairs, queries.shape[0], "rows") ||
        !indices_in_range(cols.buf, pairs, vectors.shape[0], "cols"))
        goto release_out;
    int single = vectors.itemsize == 4;
    Py_BEGIN_ALLOW_THREADS
    if (single)
        dots_from_float32(queries.buf, vectors.buf, dim, rows.buf, cols.buf, pairs, out.buf);
    else
        dots_from_float64(queries.buf, vectors.buf, dim, rows.buf, cols.buf, pairs, out.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
release_out:
    PyBuffer_Release(&out);
release_cols:
    PyBuffer_Release(&cols);
release_rows:
    PyBuffer_Release(&rows);
release_vectors:
    PyBuffer_Release(&vectors);
release_queries:
    PyBuffer_Release(&queries);
    return result;
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

static PyMethodDef methods[] = {
    {"pair_dots", pair_dots, METH_VARARGS,
     "pair_dots(queries, vectors, rows, cols, out): out[i] = float64 dot of queries[rows[i]] and vectors[cols[i]]."},
    {"gather_float32", gather_float32, METH_VARARGS,
     "gather_float32(stored, rows, out): out[j] = stored[rows[j]] as float32 (float16 or float32 rows)."},
    {"sums_of_squares", sums_of_squares, METH_VARARGS,
     "sums_of_squares(stored, out): out[i] = float64 sum of the squares of row i."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "The model's inner loops over stored rows.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__kernels(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c"))
        halves_to_floats = halves_to_floats_f16c;
#endif
    return PyModule_Create(&module);
}
