/* Buffer arguments of the model's C extensions, checked one way for both (_kernels and _tiles). */
#ifndef PERCEPT_ARRAYS_H
#define PERCEPT_ARRAYS_H

#include <Python.h>
#include <string.h>

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
    /* integers are read as int64_t: 'l' is 32 bits on Windows */
    if ((format[0] == 'l' || format[0] == 'q') && view->itemsize != 8) {
        PyErr_Format(PyExc_TypeError, "%s must hold 64-bit integers, got %zd-byte ones", name, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* One positional array argument: its name, the formats it may have, its dimensions and whether it is written. */
typedef struct {
    const char *name, *formats;
    int dims, writable;
} ArraySpec;

static void release_arrays(Py_buffer *views, int count)
{
    while (count-- > 0)
        PyBuffer_Release(&views[count]);
}

/* The `count` array arguments of `function`, as `specs` describe them, into views (released on failure). */
static int take_arrays(PyObject *args, const char *function, int count, const ArraySpec *specs, Py_buffer *views)
{
    if (PyTuple_GET_SIZE(args) != count) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %d arguments (%zd given)", function, count,
                     PyTuple_GET_SIZE(args));
        return 0;
    }
    for (int i = 0; i < count; i++)
        if (get_array(PyTuple_GET_ITEM(args, i), &views[i], specs[i].writable, specs[i].dims, specs[i].formats,
                      specs[i].name) < 0) {
            release_arrays(views, i);
            return 0;
        }
    return 1;
}

#endif
